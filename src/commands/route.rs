//! `tenantctl route SLUG`: what an application needs to reach one tenant (server, database,
//! schema, role) and the statements that enter it per transaction, so scripts and deploy
//! tooling do not query the registry by hand. Reads only; see docs/application-routing.md.

use anyhow::Result;
use serde::Serialize;

use crate::cli::RouteArgs;
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::domain::names::quote_ident;
use crate::output::{escape_line, print_json};
use crate::registry::{self, Route};

pub async fn run(s: &Session, args: &RouteArgs) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let Some(route) = registry::route(&conn, &args.slug).await? else {
        let dropped = registry::last_dropped_at(&conn, &args.slug).await?;
        return Err(bad_input(unknown(&args.slug, dropped.as_deref())));
    };
    let routable = routable(&route.state);
    let enter = enter_statements(&route);
    if s.json() {
        print_json(&Document {
            slug: &route.slug,
            state: &route.state,
            routable,
            server: &route.server,
            database: &route.database,
            schema: &route.schema,
            role: route.role.as_deref(),
            enter: &enter,
        });
    } else {
        print_text(&route, &enter);
    }
    if routable {
        if route.state != "active" {
            crate::errln!("note: {}", served_anyway(&route));
        }
        return Ok(OK);
    }
    crate::errln!(
        "error: tenant {} is {}: {}; applications must not route requests to it",
        route.slug,
        route.state,
        why_not_served(&route.slug, &route.state)
    );
    Ok(FAILED)
}

/// Whether an application may send a tenant's requests to its schema. An allowlist: a state
/// this build does not know (say a later `suspended`) is refused like every other one.
/// `migrating` is served: each tenant's migration is one transaction, so its schema is at
/// the old or the new version at every moment, and a fleet migration marks every tenant
/// it will visit `migrating` at once.
pub fn routable(state: &str) -> bool {
    matches!(state, "active" | "migrating")
}

/// Why a tenant in `state` is not served, and what the operator can do about it.
fn why_not_served(slug: &str, state: &str) -> String {
    match state {
        "failed" => format!(
            "its last migration failed and was rolled back, so it is complete but at its previous \
             version; see tenantctl status {slug}, fix the cause and run tenantctl migrate {slug}"
        ),
        "provisioning" => "it is being created and is not complete yet".to_string(),
        "suspended" => format!(
            "it is suspended: the application's access to its schema was taken away on purpose \
             (the reason is in public.tenant_suspensions); tenantctl resume {slug} gives it back"
        ),
        "dropping" => format!(
            "it is being dropped (an interrupted drop is finished by running tenantctl drop {slug} again)"
        ),
        other => format!("its state '{other}' is not one applications are routed to (only active and migrating are)"),
    }
}

/// The note for a tenant that is served although not `active`.
fn served_anyway(route: &Route) -> String {
    format!(
        "tenant {} is {}; it is still served: its migration is one transaction, so it is at \
         its old or its new version, never in between",
        route.slug, route.state
    )
}

fn unknown(slug: &str, dropped_at: Option<&str>) -> String {
    match dropped_at {
        Some(at) => format!(
            "unknown tenant {slug}: it was dropped at {at} (public.tenant_drops keeps the record)"
        ),
        None => format!("unknown tenant {slug} (see tenantctl list)"),
    }
}

/// What an application runs right after BEGIN to work inside the tenant: every setting is
/// LOCAL, so it ends with the transaction and never stays on a pooled connection.
pub fn enter_statements(route: &Route) -> Vec<String> {
    let mut sql = vec![format!(
        "SET LOCAL search_path = {}",
        quote_ident(&route.schema)
    )];
    if let Some(role) = &route.role {
        sql.push(format!("SET LOCAL ROLE {}", quote_ident(role)));
    }
    sql
}

fn print_text(route: &Route, enter: &[String]) {
    let role = route
        .role
        .clone()
        .unwrap_or_else(|| "- (no per-tenant role: the application role itself)".to_string());
    let fields = [
        ("slug", route.slug.clone()),
        ("state", route.state.clone()),
        ("server", route.server.clone()),
        ("database", route.database.clone()),
        ("schema", route.schema.clone()),
        ("role", role),
        ("enter", format!("BEGIN; {}; ... COMMIT;", enter.join("; "))),
    ];
    for (key, value) in fields {
        crate::outln!("{key:<9}{}", escape_line(&value));
    }
}

/// `route --format json`: one document.
#[derive(Serialize)]
struct Document<'a> {
    slug: &'a str,
    state: &'a str,
    routable: bool,
    server: &'a str,
    database: &'a str,
    schema: &'a str,
    role: Option<&'a str>,
    enter: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(schema: &str, role: Option<&str>) -> Route {
        Route {
            slug: "a-b".into(),
            state: "active".into(),
            server: "home".into(),
            database: "db".into(),
            schema: schema.into(),
            role: role.map(str::to_string),
        }
    }

    #[test]
    fn only_active_and_migrating_tenants_are_routed_to() {
        assert!(routable("active") && routable("migrating"));
        for state in [
            "provisioning",
            "failed",
            "dropping",
            "suspended",
            "",
            "ACTIVE",
        ] {
            assert!(!routable(state), "{state}");
        }
        // A state added later gets a message too, not a panic.
        assert!(why_not_served("a", "retired").contains("'retired'"));
        assert!(why_not_served("a", "suspended").contains("tenantctl resume a"));
    }

    #[test]
    fn enter_statements_are_local_and_quoted() {
        assert_eq!(
            enter_statements(&route("tenant_a-b", None)),
            ["SET LOCAL search_path = \"tenant_a-b\""]
        );
        assert_eq!(
            enter_statements(&route("tenant_a-b", Some("tenant_a-b"))),
            [
                "SET LOCAL search_path = \"tenant_a-b\"",
                "SET LOCAL ROLE \"tenant_a-b\""
            ]
        );
    }
}
