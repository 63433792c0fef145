//! One module per command; `run` dispatches.

mod adopt;
pub(crate) mod backup;
mod create;
mod distribute;
mod drop;
mod exec;
mod grant;
mod init;
mod label;
mod list;
mod migrate;
mod migrate_far;
mod migrate_noop;
mod move_node;
mod nodes;
mod psql;
mod rebalance;
mod relocate;
mod report;
mod restore;
pub(crate) mod route;
mod servers;
pub mod session;
mod status;
mod suspend;
mod usage;
mod verify;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command, Format};
use crate::commands::session::Session;

pub async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    check_format(&cli)?;
    match &cli.command {
        Command::Init => init::run(&Session::new(g, None)?).await,
        Command::Create(a) => create::run(&Session::new(g, a.concurrency)?, a).await,
        Command::Migrate(a) => migrate::run(&Session::new(g, a.concurrency)?, a).await,
        Command::Status(a) => status::run(&Session::new(g, None)?, a).await,
        Command::Drop(a) => drop::run(&Session::new(g, None)?, a).await,
        Command::List(a) => list::run(&Session::new(g, None)?, a).await,
        Command::Usage(a) => usage::run(&Session::new(g, None)?, a).await,
        Command::Label(a) => label::run(&Session::new(g, None)?, a).await,
        Command::Suspend(a) => suspend::suspend(&Session::new(g, None)?, a).await,
        Command::Resume(a) => suspend::resume(&Session::new(g, None)?, a).await,
        Command::Backup(a) => backup::run(&Session::new(g, None)?, a).await,
        Command::Restore(a) => restore::run(&Session::new(g, None)?, a).await,
        Command::Verify(a) => verify::run(&Session::new(g, None)?, a).await,
        Command::Route(a) => route::run(&Session::new(g, None)?, a).await,
        // --node: between the worker nodes of a Citus coordinator; --to: between servers.
        Command::Move(a) => match &a.node {
            Some(node) => move_node::run(&Session::new(g, None)?, a, node).await,
            None => relocate::run(&Session::new(g, None)?, a).await,
        },
        Command::Servers => servers::run(&Session::new(g, None)?).await,
        Command::Rebalance(a) => rebalance::run(&Session::new(g, None)?, a).await,
        Command::Distribute(a) => distribute::run(&Session::new(g, None)?, a).await,
        Command::Adopt(a) => adopt::run(&Session::new(g, None)?, a).await,
        Command::Grant(a) => grant::run(&Session::new(g, None)?, a).await,
        Command::Exec(a) => exec::run(&Session::new(g, a.concurrency)?, a).await,
        Command::Psql(a) => psql::run(&Session::new(g, None)?, a).await,
        Command::Completions { shell } => {
            let mut out = crate::output::Stdout;
            clap_complete::generate(*shell, &mut Cli::command(), "tenantctl", &mut out);
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut crate::output::Stdout)?;
            Ok(0)
        }
    }
}

/// Refuses (exit 2, before anything is read or changed) a --format the command does not
/// write, naming the ones it does.
fn check_format(cli: &Cli) -> Result<()> {
    let f = cli.global.format;
    let extra = cli.command.extra_formats();
    if matches!(f, Format::Text | Format::Json) || extra.contains(&f) {
        return Ok(());
    }
    let mut ok = vec!["text", "json"];
    ok.extend(extra.iter().map(|x| x.name()));
    let writers = match f {
        Format::Junit => "create, migrate, exec and verify",
        Format::Csv => "exec",
        _ => "status and usage",
    };
    Err(crate::domain::exit::bad_input(format!(
        "--format {} is written by {writers}, not by {}, which writes {}; nothing was done",
        f.name(),
        cli.command.name(),
        ok.join(" or ")
    )))
}
