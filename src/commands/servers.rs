//! `tenantctl servers`: each server tenants may live on, whether it answers, its version,
//! the tenants the registry places on it and its free connections (docs/placements.md).

use anyhow::Result;
use serde::Serialize;

use crate::commands::session::Session;
use crate::domain::exit::{FAILED, OK};
use crate::output::{escape_line, print_json, table};
use crate::pg::connect;
use crate::registry;

/// One server's answer.
#[derive(Serialize)]
struct Row {
    name: String,
    /// Whether it is a configured server (`home`, or a `[servers.NAME]`); false for a name
    /// only the registry knows (its table was removed from tenants.toml).
    configured: bool,
    reachable: bool,
    version: Option<String>,
    tenants: i64,
    free_connections: Option<i64>,
    error: Option<String>,
}

pub async fn run(s: &Session) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let counts = registry::tenants_per_server(&conn).await?;
    drop(conn);
    let held = |name: &str| {
        counts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    };
    let mut rows = Vec::new();
    for name in s.servers.names() {
        let mut row = probe(s, &name).await;
        row.tenants = held(&name);
        rows.push(row);
    }
    for (name, n) in counts.iter().filter(|(n, _)| !s.servers.knows(n)) {
        rows.push(Row {
            name: name.clone(),
            configured: false,
            reachable: false,
            version: None,
            tenants: *n,
            free_connections: None,
            error: Some(format!(
                "not configured: the registry places {n} tenants on it, but {} has no \
                 [servers.{name}] table",
                s.settings.describe_config()
            )),
        });
    }
    if s.json() {
        print_json(&Document { servers: &rows });
    } else {
        print_table(&rows);
    }
    Ok(if rows.iter().all(|r| r.reachable) {
        OK
    } else {
        FAILED
    })
}

/// Connects to `name` and asks for its version and free connections.
async fn probe(s: &Session, name: &str) -> Row {
    let mut row = Row {
        name: name.to_string(),
        configured: true,
        reachable: false,
        version: None,
        tenants: 0,
        free_connections: None,
        error: None,
    };
    let answer = async {
        let target = s.servers.target(name)?;
        let pool = connect::pool(&target, 1)?;
        let conn = connect::first_connection(&pool, &target).await?;
        let version = connect::server_version(&conn).await?;
        let free = connect::free_connection_slots(&conn).await?;
        anyhow::Ok((version, free))
    }
    .await;
    match answer {
        Ok((version, free)) => {
            row.reachable = true;
            row.version = Some(version);
            row.free_connections = Some(free);
        }
        Err(e) => row.error = Some(format!("{e:#}")),
    }
    row
}

fn print_table(rows: &[Row]) {
    let mut t = table(vec![
        "server",
        "answers",
        "version",
        "tenants",
        "free connections",
        "error",
    ]);
    for r in rows {
        t.add_row(vec![
            escape_line(&r.name).into_owned(),
            if r.reachable { "yes" } else { "no" }.to_string(),
            r.version.clone().unwrap_or_default(),
            r.tenants.to_string(),
            r.free_connections
                .map(|n| n.to_string())
                .unwrap_or_default(),
            escape_line(r.error.as_deref().unwrap_or_default()).into_owned(),
        ]);
    }
    crate::outln!("{t}");
    for r in rows.iter().filter(|r| !r.reachable) {
        crate::errln!(
            "error: server {} does not answer: {}",
            r.name,
            r.error.as_deref().unwrap_or("")
        );
    }
}

#[derive(Serialize)]
struct Document<'a> {
    servers: &'a [Row],
}
