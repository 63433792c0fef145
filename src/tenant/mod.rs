//! One tenant's work, inside a transaction the caller opens: applying its pending
//! migrations (or a `-- no-transaction` file alone), its grants, and reading its catalog.

pub mod adopt;
pub mod apply;
pub mod audit;
pub mod citus;
pub mod citus_schema;
pub mod citus_usage;
pub mod copy_check;
pub mod exec;
pub mod grants;
pub mod no_transaction;
pub mod placement;
pub mod rebalance;
pub mod relocate;
pub mod seed;
pub mod shared;
pub mod structure;
