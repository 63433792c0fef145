//! One module per command; `run` dispatches.

mod adopt;
pub(crate) mod backup;
mod create;
mod drop;
mod grant;
mod init;
mod list;
mod migrate;
mod report;
mod restore;
mod route;
pub mod session;
mod status;
mod verify;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::commands::session::Session;

pub async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Init => init::run(&Session::new(g, None)?).await,
        Command::Create(a) => create::run(&Session::new(g, a.concurrency)?, a).await,
        Command::Migrate(a) => migrate::run(&Session::new(g, a.concurrency)?, a).await,
        Command::Status(a) => status::run(&Session::new(g, None)?, a).await,
        Command::Drop(a) => drop::run(&Session::new(g, None)?, a).await,
        Command::List => list::run(&Session::new(g, None)?).await,
        Command::Backup(a) => backup::run(&Session::new(g, None)?, a).await,
        Command::Restore(a) => restore::run(&Session::new(g, None)?, a).await,
        Command::Verify(a) => verify::run(&Session::new(g, None)?, a).await,
        Command::Route(a) => route::run(&Session::new(g, None)?, a).await,
        Command::Adopt(a) => adopt::run(&Session::new(g, None)?, a).await,
        Command::Grant(a) => grant::run(&Session::new(g, None)?, a).await,
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
