//! Reaching a PostgreSQL server, knowing nothing of tenants: connection strings resolved as
//! libpq does, the password file, TLS, pooled connections, pipelined transactions,
//! refinery's driver traits over them, and pg_dump / pg_restore.

pub mod connect;
pub mod conninfo;
pub mod dump;
pub mod dump_load;
pub mod outfile;
pub mod pgpass;
pub mod pipeline;
pub mod psql;
pub mod refinery_tx;
pub mod servers;
pub mod tls;
pub mod txn;
