//! tenantctl: schema-per-tenant PostgreSQL. See README.md for the tour and docs/ for the
//! reference.
//!
//! The folders are layers; imports point down, never up:
//!
//! ```text
//! cli          the whole command-line surface (clap), with every flag documented
//! commands/    one module per command: arguments in, work done, report out
//! fleet/       running one job over many tenants: concurrency, Ctrl-C, the server going away
//! tenant/      one tenant's work: its migrations, grants, catalog inspection
//! registry/    public.tenants and its sibling tables, and the tenant lock protocol: all their SQL
//! pg/          reaching a server: connection strings, TLS, pools, pipelined transactions, pg_dump
//! domain/      pure rules every layer may use: names, settings, migration files, exit codes
//! output/      what reaches the terminal: the stdout/stderr writer, tables, progress
//! ```

pub mod cli;
pub mod commands;
pub mod domain;
pub mod fleet;
pub mod output;
pub mod pg;
pub mod registry;
pub mod tenant;
