//! tenantctl: schema-per-tenant PostgreSQL. See README.md for the tour and
//! ../shared/CONTRACT.md for the interface users rely on.

pub mod apply;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod connect;
pub mod conninfo;
pub mod dump;
pub mod exit;
pub mod fleet;
pub mod grants;
pub mod locks;
pub mod migration_set;
pub mod names;
pub mod no_transaction;
pub mod outage;
pub mod outcome;
pub mod output;
pub mod pgpass;
pub mod pipeline;
pub mod progress;
pub mod refinery_tx;
pub mod registry;
pub mod session;
pub mod settings;
pub mod sql_split;
pub mod tls;
pub mod txn;
