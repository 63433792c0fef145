//! `tenantctl psql SLUG [-- ARGS]`: an interactive (or scripted, with -c / -f) psql inside
//! one tenant: its schema as search_path, its role with per-tenant roles. psql's exit code
//! is tenantctl's.

use anyhow::{Context, Result};

use crate::cli::PsqlArgs;
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, FAILED, INTERRUPTED};
use crate::pg::psql;
use crate::registry;

pub async fn run(s: &Session, args: &PsqlArgs) -> Result<u8> {
    // Before connecting: without psql there is nothing to do (exit 2).
    let tool = psql::find()?;
    let route = {
        let (_pool, conn) = s.connect(1).await?;
        registry::route(&conn, &args.slug).await?
    };
    let Some(route) = route else {
        return Err(bad_input(format!(
            "unknown tenant {}; see tenantctl list",
            args.slug
        )));
    };
    if !crate::commands::route::routable(&route.state) {
        crate::errln!(
            "note: tenant {} is {}; applications are not routed to it",
            route.slug,
            route.state
        );
    }
    // The tenant's own server (and database) when it lives elsewhere (docs/placements.md).
    let target = s.servers.target_db(&route.server, &route.database)?;
    let cmd = psql::command(
        &tool,
        &target,
        &route.database,
        &route.schema,
        route.role.as_deref(),
        &args.args,
    );
    // Ctrl-C belongs to psql (it cancels the running query); tenantctl waits on.
    let ignore = tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let status = tokio::process::Command::from(cmd)
        .status()
        .await
        .with_context(|| format!("cannot run {}", tool.path.display()));
    ignore.abort();
    let status = status?;
    Ok(match status.code() {
        Some(code) => u8::try_from(code).unwrap_or(FAILED),
        // Killed by a signal (SIGINT when it was not handled): 130, as for Ctrl-C.
        None => INTERRUPTED,
    })
}
