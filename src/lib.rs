//! tenantctl: schema-per-tenant PostgreSQL. See README.md for the tour and
//! ../shared/CONTRACT.md for the interface users rely on.

pub mod apply;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod connect;
pub mod dump;
pub mod dump_load;
pub mod dump_policy;
pub mod exit;
pub mod fleet;
pub mod grants;
pub mod migration_set;
pub mod names;
pub mod outcome;
pub mod outfile;
pub mod pipeline;
pub mod progress;
pub mod refinery_tx;
pub mod registry;
pub mod session;
pub mod settings;
pub mod signals;
pub mod tls;
pub mod txn;
