//! Pure rules, no I/O to a server: tenant names and quoting, settings, the migrations
//! folder and what a migration file may hold, exit codes.

pub mod budget;
pub mod citus_rules;
pub mod dump_policy;
pub mod exit;
pub mod migration_set;
pub mod names;
pub mod selector;
pub mod settings;
pub mod sql_split;
pub mod structure;
