//! Applications reaching tenants: `tenantctl route`, and the pattern of
//! docs/application-routing.md (examples/route_tenant.rs, compiled into this test) proven
//! behind a real PgBouncer in transaction pooling mode, against the session-level SET whose
//! leak it documents.

mod common;

#[allow(dead_code)]
#[path = "../examples/route_tenant.rs"]
mod route_tenant;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::pgbouncer::{Pgbouncer, Pool};
use common::*;
use route_tenant::{count_employees, load_routes, registry_version, tenant_transaction, Route};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Server connections behind the pooler's `app` database: far fewer than the clients, so
/// every server connection serves many clients' transactions.
const POOL_SIZE: u32 = 4;

/// A table whose every row says which tenant it belongs to.
const PROBE: &str = "CREATE TABLE probe (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                     tenant text NOT NULL);";

/// Tenants t000, t001, ... with 3 probe rows each, and PgBouncer in front of their database
/// with two entries: `app` (POOL_SIZE server connections) and `one` (a single one, which
/// makes the order of statements on it certain).
struct Fleet {
    // Declared first so it stops before the database is dropped.
    bouncer: Pgbouncer,
    db: TestDb,
    prefix: String,
    slugs: Vec<String>,
    app: String,
    password: String,
    config: std::path::PathBuf,
}

fn fleet(label: &str, tenants: usize, per_tenant_roles: bool) -> Fleet {
    let db = TestDb::new(label);
    let (app, app_url) = db.role("app");
    let password = app_url
        .split("//")
        .nth(1)
        .and_then(|s| s.split('@').next())
        .and_then(|s| s.split_once(':'))
        .map(|(_, pw)| pw.to_string())
        .unwrap();
    // Roles are shared by the whole cluster: a prefix of this test's own keeps them apart.
    let prefix = format!("{}_", db.name);
    let mut cfg = format!("[tenants]\nschema_prefix = \"{prefix}\"\napp_role = \"{app}\"\n");
    if per_tenant_roles {
        query(&admin_url(), &format!("ALTER ROLE \"{app}\" NOINHERIT"));
        cfg.push_str("per_tenant_roles = true\n");
    }
    let config = db.config(&cfg);
    let migrations = db.migrations_with("probe", &[("V8__probe.sql", PROBE)]);
    let slugs: Vec<String> = (0..tenants).map(|i| format!("t{i:03}")).collect();
    let mut args = vec![
        "--config",
        path_str(&config),
        "--migrations",
        path_str(&migrations),
        "create",
        "--concurrency",
        "4",
    ];
    args.extend(slugs.iter().map(String::as_str));
    db.run(&args).expect(0);
    let mut rows = String::new();
    for s in &slugs {
        rows.push_str(&format!(
            "INSERT INTO {}.probe (tenant) VALUES ('{s}'), ('{s}'), ('{s}');\n",
            q(&format!("{prefix}{s}"))
        ));
    }
    db.query(&rows);
    let bouncer = Pgbouncer::start(
        &db,
        &[&app],
        &[
            Pool {
                alias: "app",
                pool_size: POOL_SIZE,
            },
            Pool {
                alias: "one",
                pool_size: 1,
            },
        ],
    );
    Fleet {
        bouncer,
        db,
        prefix,
        slugs,
        app,
        password,
        config,
    }
}

impl Fleet {
    fn url(&self, alias: &str) -> String {
        self.bouncer.url(alias, &self.app, &self.password)
    }

    fn schema(&self, slug: &str) -> String {
        format!("{}{slug}", self.prefix)
    }
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}"));
    tokio::spawn(connection);
    client
}

/// The rows of a simple-protocol query (no prepared statement: nothing left on the server
/// connection), as text.
async fn rows(c: &Client, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Runs `sql(i)` inside a transaction on each server connection of the `app` pool and
/// commits: POOL_SIZE clients hold a transaction each, so each has a server connection of
/// its own. Each `sql(i)` ends with a SELECT whose first column is pg_backend_pid(); returns
/// those rows. A SET without LOCAL that commits stays on the connection after COMMIT.
async fn on_every_server_connection(f: &Fleet, sql: impl Fn(usize) -> String) -> Vec<Vec<String>> {
    let mut holders = Vec::new();
    let mut found = Vec::new();
    for i in 0..POOL_SIZE as usize {
        let c = connect(&f.url("app")).await;
        let mut r = rows(&c, &format!("BEGIN; {}", sql(i))).await.unwrap();
        found.push(r.remove(0));
        holders.push(c);
    }
    for c in &holders {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let pids: HashSet<&String> = found.iter().map(|r| &r[0]).collect();
    assert_eq!(pids.len(), POOL_SIZE as usize, "one server connection each");
    found
}

/// Leaves a session-level search_path (and role) of ANOTHER tenant on every server
/// connection, the way a careless client would; returns their backend pids.
async fn pollute_every_server_connection(f: &Fleet, with_role: bool) -> HashSet<i32> {
    let found = on_every_server_connection(f, |i| {
        let other = q(&f.schema(&f.slugs[f.slugs.len() - 1 - i]));
        let role = if with_role {
            format!("SET ROLE {other}; ")
        } else {
            String::new()
        };
        format!("SET search_path = {other}; {role}SELECT pg_backend_pid()")
    })
    .await;
    found.iter().map(|r| r[0].parse().unwrap()).collect()
}

/// Puts every server connection back to its defaults.
async fn clean_every_server_connection(f: &Fleet) {
    on_every_server_connection(f, |_| {
        "RESET search_path; RESET ROLE; SELECT pg_backend_pid()".into()
    })
    .await;
}

/// Each server connection's session search_path and current_user, sorted.
async fn session_state(f: &Fleet) -> Vec<(String, String)> {
    let mut state: Vec<_> = on_every_server_connection(f, |_| {
        "SELECT pg_backend_pid(), current_setting('search_path'), current_user".into()
    })
    .await
    .into_iter()
    .map(|r| (r[1].clone(), r[2].clone()))
    .collect();
    state.sort();
    state
}

/// What one client of the documented pattern saw.
#[derive(Default)]
struct Seen {
    transactions: usize,
    own_rows: usize,
    foreign_rows: Vec<String>,
    pids: HashSet<i32>,
}

/// `n` transactions in the documented pattern for `slug`, each reading the probe rows.
async fn documented_client(url: String, slug: String, route: Route, n: usize) -> Seen {
    let mut c = connect(&url).await;
    let mut seen = Seen::default();
    for _ in 0..n {
        let tx = tenant_transaction(&mut c, &route).await.unwrap();
        let found = tx
            .query_typed("SELECT tenant, pg_backend_pid() FROM probe", &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for r in &found {
            let tenant: String = r.get(0);
            if tenant == slug {
                seen.own_rows += 1;
            } else {
                seen.foreign_rows.push(format!("{slug} saw {tenant}'s row"));
            }
            seen.pids.insert(r.get(1));
        }
        seen.transactions += 1;
    }
    seen
}

#[test]
fn set_local_never_serves_another_tenants_rows_through_pgbouncer() {
    const CLIENTS: usize = 24;
    const PER_CLIENT: usize = 125;
    let f = fleet("pool_local", CLIENTS, false);
    let employees = format!(
        "INSERT INTO {}.employees (email, full_name) VALUES ('a@x.example', 'A'), ('b@x.example', 'B')",
        q(&f.schema("t003"))
    );
    f.db.query(&employees);
    let url = f.url("app");
    runtime().block_on(async {
        let routes = load_routes(&connect(&url).await).await.unwrap();
        assert_eq!(routes.len(), CLIENTS);
        assert_eq!(
            routes["t003"],
            Route {
                schema: f.schema("t003"),
                role: None,
                state: "active".into()
            }
        );
        let polluted = pollute_every_server_connection(&f, false).await;

        // Clients that keep leaving session-level search_paths behind while the others work.
        let stop = Arc::new(AtomicBool::new(false));
        let polluters: Vec<_> = (0..4)
            .map(|i| {
                let (url, stop) = (url.clone(), stop.clone());
                let schemas: Vec<String> = f.slugs.iter().map(|s| f.schema(s)).collect();
                tokio::spawn(async move {
                    let c = connect(&url).await;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 20_000 {
                        let schema = &schemas[(i * 7 + n) % schemas.len()];
                        c.batch_execute(&format!("SET search_path = {}", q(schema)))
                            .await
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let clients: Vec<_> = f
            .slugs
            .iter()
            .map(|slug| {
                let route = routes[slug].clone();
                tokio::spawn(documented_client(
                    url.clone(),
                    slug.clone(),
                    route,
                    PER_CLIENT,
                ))
            })
            .collect();
        let mut all = Seen::default();
        for c in clients {
            let seen = c.await.unwrap();
            all.transactions += seen.transactions;
            all.own_rows += seen.own_rows;
            all.foreign_rows.extend(seen.foreign_rows);
            all.pids.extend(seen.pids);
        }
        stop.store(true, Ordering::Relaxed);
        let mut pollutions = 0;
        for p in polluters {
            pollutions += p.await.unwrap();
        }

        assert!(
            all.foreign_rows.is_empty(),
            "{} rows of other tenants, e.g. {:?}",
            all.foreign_rows.len(),
            &all.foreign_rows[..all.foreign_rows.len().min(5)]
        );
        assert_eq!(all.transactions, CLIENTS * PER_CLIENT);
        assert_eq!(all.own_rows, 3 * CLIENTS * PER_CLIENT);
        // Every transaction ran on one of the POOL_SIZE server connections, each of which
        // carried another tenant's session search_path: the pooler really multiplexed.
        assert!(
            all.pids.is_subset(&polluted),
            "{:?} vs {polluted:?}",
            all.pids
        );
        assert!(pollutions > 0);
        // And the connections still carry session search_paths now: a client that reads
        // without the pattern lands in whichever tenant the connection was left in.
        let c = connect(&url).await;
        let path = rows(&c, "SHOW search_path").await.unwrap()[0][0].clone();
        assert!(path.contains(&f.prefix), "{path}");

        // What SET LOCAL guarantees: the pattern leaves nothing on the pooled connections.
        clean_every_server_connection(&f).await;
        let clean = session_state(&f).await;
        let clients: Vec<_> = f
            .slugs
            .iter()
            .map(|slug| {
                let route = routes[slug].clone();
                tokio::spawn(documented_client(url.clone(), slug.clone(), route, 25))
            })
            .collect();
        for c in clients {
            assert!(c.await.unwrap().foreign_rows.is_empty());
        }
        assert_eq!(session_state(&f).await, clean);

        // The guide's example, run as the application through the pooler.
        let mut app = connect(&url).await;
        assert_eq!(count_employees(&mut app, &routes, "t003").await.unwrap(), 2);
        let err = count_employees(&mut app, &routes, "nobody")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown tenant nobody");

        // The routing cache notices a tenant that fails and one that is dropped.
        let v0 = registry_version(&app).await.unwrap();
        // As record_failure does (straight to the server: the test runs inside a runtime).
        connect(&f.db.url)
            .await
            .batch_execute(
                "UPDATE public.tenants SET state = 'failed', updated_at = now() WHERE slug = 't005'",
            )
            .await
            .unwrap();
        let v1 = registry_version(&app).await.unwrap();
        assert_ne!(v0, v1);
        let routes = load_routes(&app).await.unwrap();
        assert!(!routes["t005"].servable());
        let err = count_employees(&mut app, &routes, "t005")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "tenant t005 is failed");
    });
    f.db.run(&["--config", path_str(&f.config), "drop", "t023", "--yes"])
        .expect(0);
    runtime().block_on(async {
        let app = connect(&url).await;
        assert_eq!(registry_version(&app).await.unwrap().0, CLIENTS as i64 - 1);
        assert!(!load_routes(&app).await.unwrap().contains_key("t023"));
    });
}

#[test]
fn session_level_set_search_path_serves_another_tenants_rows_through_pgbouncer() {
    const CLIENTS: usize = 24;
    const MAX_TRIES: usize = 100;
    let f = fleet("pool_leak", CLIENTS, false);
    runtime().block_on(async {
        // Certain: two clients share the `one` pool's single server connection.
        let a = connect(&f.url("one")).await;
        let b = connect(&f.url("one")).await;
        let set = |slug: &str| format!("SET search_path = {}", q(&f.schema(slug)));
        a.batch_execute(&set("t000")).await.unwrap();
        b.batch_execute(&set("t001")).await.unwrap();
        let seen = rows(&a, "SELECT DISTINCT tenant FROM probe").await.unwrap();
        assert_eq!(seen, [["t001"]], "client a, set to t000, reads t001's rows");

        // Under load: each client sets its own tenant, then reads, until it sees another's.
        let clients: Vec<_> = f
            .slugs
            .iter()
            .map(|slug| {
                let (url, slug, schema) = (f.url("app"), slug.clone(), f.schema(slug));
                tokio::spawn(async move {
                    let c = connect(&url).await;
                    let (mut foreign, mut lost) = (0, 0);
                    for _ in 0..MAX_TRIES {
                        c.batch_execute(&format!("SET search_path = {}", q(&schema)))
                            .await
                            .unwrap();
                        match rows(&c, "SELECT tenant FROM probe").await {
                            Ok(found) => foreign += found.iter().filter(|r| r[0] != slug).count(),
                            // A fresh server connection: the default search_path has no probe.
                            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => lost += 1,
                            Err(e) => panic!("{e}"),
                        }
                        if foreign > 0 {
                            break;
                        }
                    }
                    (foreign, lost)
                })
            })
            .collect();
        let mut leaking_clients = 0;
        for c in clients {
            let (foreign, _lost) = c.await.unwrap();
            leaking_clients += usize::from(foreign > 0);
        }
        assert!(
            leaking_clients > 0,
            "no client saw another tenant's rows; pgbouncer log:\n{}",
            f.bouncer.log()
        );
    });
}

#[test]
fn per_tenant_roles_refuse_another_tenant_through_pgbouncer() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 40;
    let f = fleet("pool_roles", CLIENTS, true);
    let app = f.app.clone();

    // tenantctl route names the role and the statements the example runs.
    let r = f.db.run(&[
        "--config",
        path_str(&f.config),
        "route",
        "t000",
        "--format",
        "json",
    ]);
    let doc = r.expect(0).json();
    let t000 = f.schema("t000");
    assert_eq!(doc["role"], t000.as_str());
    assert_eq!(
        doc["enter"],
        serde_json::json!([
            format!("SET LOCAL search_path = {}", q(&t000)),
            format!("SET LOCAL ROLE {}", q(&t000))
        ])
    );

    runtime().block_on(async {
        // Session-level SET ROLE leaks too: b gets a's tenant role, and a's tenant's rows.
        let a = connect(&f.url("one")).await;
        let b = connect(&f.url("one")).await;
        a.batch_execute(&format!("SET ROLE {}", q(&t000)))
            .await
            .unwrap();
        assert_eq!(
            rows(&b, "SELECT current_user").await.unwrap(),
            [[t000.as_str()]]
        );
        let stolen = format!("SELECT DISTINCT tenant FROM {}.probe", q(&t000));
        assert_eq!(rows(&b, &stolen).await.unwrap(), [["t000"]]);
        b.batch_execute("RESET ROLE").await.unwrap();
        // SET LOCAL ROLE ends with the transaction: b is the application role again,
        // which holds no tenant's privileges.
        a.batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE {}; SELECT 1 FROM {}.probe; COMMIT",
            q(&t000),
            q(&t000)
        ))
        .await
        .unwrap();
        assert_eq!(
            rows(&b, "SELECT current_user").await.unwrap(),
            [[app.as_str()]]
        );
        let err = rows(&b, &stolen).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");

        let routes = load_routes(&connect(&f.url("app")).await).await.unwrap();
        assert_eq!(routes["t000"].role.as_deref(), Some(t000.as_str()));
        let polluted = pollute_every_server_connection(&f, true).await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let url = f.url("app");
                let slug = f.slugs[i].clone();
                let own = routes[&slug].clone();
                let neighbour = routes[&f.slugs[(i + 1) % CLIENTS]].clone();
                tokio::spawn(role_client(url, slug, own, neighbour, PER_CLIENT))
            })
            .collect();
        let (mut refused, mut breaches, mut pids) = (0, Vec::new(), HashSet::new());
        for c in clients {
            let (r, b, p) = c.await.unwrap();
            refused += r;
            breaches.extend(b);
            pids.extend(p);
        }
        assert!(breaches.is_empty(), "{breaches:?}");
        assert_eq!(refused, 2 * CLIENTS * PER_CLIENT);
        assert!(pids.is_subset(&polluted), "{pids:?} vs {polluted:?}");

        // SET LOCAL ROLE leaves no tenant role on the pooled connections.
        clean_every_server_connection(&f).await;
        let clean = session_state(&f).await;
        assert!(clean.iter().all(|(_, user)| *user == app), "{clean:?}");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let slug = f.slugs[i].clone();
                let own = routes[&slug].clone();
                let neighbour = routes[&f.slugs[(i + 1) % CLIENTS]].clone();
                tokio::spawn(role_client(f.url("app"), slug, own, neighbour, 5))
            })
            .collect();
        for c in clients {
            assert!(c.await.unwrap().1.is_empty());
        }
        assert_eq!(session_state(&f).await, clean);

        let mut c = connect(&f.url("app")).await;
        assert_eq!(count_employees(&mut c, &routes, "t007").await.unwrap(), 0);
    });
}

/// Per transaction pair: its own tenant's rows only; then the neighbour's table, by name and
/// by search_path, refused by the database. Returns (refusals, breaches, backend pids).
async fn role_client(
    url: String,
    slug: String,
    own: Route,
    neighbour: Route,
    n: usize,
) -> (usize, Vec<String>, HashSet<i32>) {
    let mut c = connect(&url).await;
    let (mut refused, mut breaches, mut pids) = (0, Vec::new(), HashSet::new());
    let by_name = format!("SELECT tenant FROM {}.probe", q(&neighbour.schema));
    // The wrong tenant's schema with this tenant's role: what a routing bug would do.
    let misrouted = Route {
        schema: neighbour.schema.clone(),
        ..own.clone()
    };
    for _ in 0..n {
        let tx = tenant_transaction(&mut c, &own).await.unwrap();
        for r in tx
            .query_typed("SELECT tenant, pg_backend_pid() FROM probe", &[])
            .await
            .unwrap()
        {
            let tenant: String = r.get(0);
            if tenant != slug {
                breaches.push(format!("{slug} read {tenant}'s row"));
            }
            pids.insert(r.get::<_, i32>(1));
        }
        tx.commit().await.unwrap();

        for (route, sql, code) in [
            (&own, by_name.as_str(), SqlState::INSUFFICIENT_PRIVILEGE),
            // A schema without USAGE is skipped by search_path: the table is not found.
            (
                &misrouted,
                "SELECT tenant FROM probe",
                SqlState::UNDEFINED_TABLE,
            ),
        ] {
            let tx = tenant_transaction(&mut c, route).await.unwrap();
            match tx.query_typed(sql, &[]).await {
                Err(e) if e.code() == Some(&code) => refused += 1,
                Err(e) => breaches.push(format!("{slug}: {sql}: unexpected error {e}")),
                Ok(found) => breaches.push(format!("{slug}: {sql} returned {} rows", found.len())),
            }
            tx.rollback().await.unwrap();
        }
    }
    (refused, breaches, pids)
}

#[test]
fn the_guide_shows_the_example_that_the_tests_run() {
    let guide = std::fs::read_to_string(repo().join("docs/application-routing.md")).unwrap();
    let example = std::fs::read_to_string(repo().join("examples/route_tenant.rs")).unwrap();
    let marker = "<!-- examples/route_tenant.rs -->";
    let after = guide
        .split_once(marker)
        .unwrap_or_else(|| panic!("the guide lacks {marker}"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```rust\n")
        .expect("a ```rust block right after the marker");
    let block = &block[..block.find("\n```\n").expect("the block's end") + 1];
    assert!(
        block == example,
        "docs/application-routing.md's Rust block differs from examples/route_tenant.rs: copy the file into the guide"
    );
    // The README links the guide.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("docs/application-routing.md"));
}

#[test]
fn route_prints_where_an_application_reaches_a_tenant() {
    let db = TestDb::new("route");
    db.run(&["create", "acme", "globex", "initech"]).expect(0);

    let r = db.run(&["route", "acme"]);
    r.expect(0)
        .mentions("tenant_acme")
        .mentions(&format!("database {}", db.name))
        .mentions("server   home")
        .mentions("BEGIN; SET LOCAL search_path = \"tenant_acme\"; ... COMMIT;");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let doc = db
        .run(&["route", "acme", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(
        doc,
        serde_json::json!({
            "slug": "acme", "state": "active", "routable": true, "server": "home",
            "database": db.name, "schema": "tenant_acme", "role": null,
            "enter": ["SET LOCAL search_path = \"tenant_acme\""]
        })
    );

    // Unknown, never registered: exit 2, nothing changed.
    let before = db.snapshot();
    db.run(&["route", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody (see tenantctl list)");
    let doc = db
        .run(&["route", "nobody", "--format", "json"])
        .expect(2)
        .json();
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("unknown tenant nobody"));
    db.run(&["route", "Bad;slug"])
        .expect(2)
        .mentions("a-z, 0-9");
    assert_eq!(db.snapshot(), before);

    // Dropped: unknown too, saying when it went.
    db.run(&["drop", "initech", "--yes"]).expect(0);
    let before = db.snapshot();
    db.run(&["route", "initech"])
        .expect(2)
        .mentions("unknown tenant initech: it was dropped at 20");
    assert_eq!(db.snapshot(), before);

    // Registered but not to be served: the route and state printed, exit 1.
    for (state, why) in [
        ("failed", "tenantctl migrate globex"),
        ("provisioning", "not complete yet"),
        ("dropping", "tenantctl drop globex again"),
    ] {
        db.query(&format!(
            "UPDATE public.tenants SET state = '{state}' WHERE slug = 'globex'"
        ));
        let before = db.snapshot();
        let r = db.run(&["route", "globex"]);
        r.expect(1)
            .mentions(&format!("state    {state}"))
            .mentions("schema   tenant_globex")
            .mentions(&format!("tenant globex is {state}: "))
            .mentions(why)
            .mentions("applications must not route requests to it");
        let doc = db
            .run(&["route", "globex", "--format", "json"])
            .expect(1)
            .json();
        assert_eq!(
            (&doc["state"], &doc["routable"], &doc["schema"]),
            (
                &serde_json::json!(state),
                &serde_json::json!(false),
                &serde_json::json!("tenant_globex")
            )
        );
        assert_eq!(db.snapshot(), before);
    }

    // Migrating is served: each tenant's migration is one transaction.
    db.query("UPDATE public.tenants SET state = 'migrating' WHERE slug = 'globex'");
    db.run(&["route", "globex"])
        .expect(0)
        .mentions("note: tenant globex is migrating; it is still served");
    let doc = db
        .run(&["route", "globex", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(doc["routable"], true);
}
