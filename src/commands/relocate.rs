//! `tenantctl move SLUG --to NAME [--own-database] [--dry-run]`: relocates one tenant to
//! another server or database (docs/placements.md). The checks and the plan are here; the
//! steps are `tenant::relocate`'s. (`move` is a Rust keyword, hence the module's name.)

use std::time::Instant;

use anyhow::{Context, Result};
use deadpool_postgres::Object;
use serde_json::json;

use crate::cli::MoveArgs;
use crate::commands::session::{check_app_role_noinherit, Session};
use crate::domain::exit::bad_input;
use crate::domain::settings::HOME_SERVER;
use crate::fleet::signals::{self, Signals};
use crate::output::{count, escape};
use crate::pg::connect;
use crate::pg::dump;
use crate::registry::{self, locks, Tenant};
use crate::tenant::citus::Backend;
use crate::tenant::copy_check;
use crate::tenant::relocate::{self, HomeIs, Made, Moved, NewRole, Place, Plan};

pub async fn run(s: &Session, args: &MoveArgs) -> Result<u8> {
    s.schemas_for(std::slice::from_ref(&args.slug))?;
    let (_pool, mut home) = s.connect(1).await?;
    let t = registry::some(&home, std::slice::from_ref(&args.slug))
        .await?
        .pop()
        .ok_or_else(|| {
            bad_input(format!(
                "unknown tenant {}; nothing was changed (see tenantctl list)",
                args.slug
            ))
        })?;
    check_state(&t)?;
    let plan = plan(s, &t, args).await?;
    if args.dry_run {
        return dry_run(s, &plan).await;
    }
    execute(s, &mut home, &plan).await
}

/// Only an `active` tenant moves. `provisioning`, `migrating`, `failed`, `dropping`: another
/// command is at work on it, or it must be repaired first. `suspended`: suspend revoked
/// its privileges and recorded them where it lives, which a move would not carry along.
pub(crate) fn check_state(t: &Tenant) -> Result<()> {
    if t.state == "active" {
        return Ok(());
    }
    let what = match t.state.as_str() {
        "suspended" => format!(
            "resume it first (tenantctl resume {}), move it, then suspend it again",
            t.slug
        ),
        "failed" => format!("run tenantctl migrate {} to repair it first", t.slug),
        _ => "wait for the command working on it to finish".to_string(),
    };
    Err(bad_input(format!(
        "tenant {} is {}, and only an active tenant can be moved; nothing was changed ({what})",
        t.slug, t.state
    )))
}

/// Where the tenant is and where it goes, checked at both ends before anything changes.
async fn plan(s: &Session, t: &Tenant, args: &MoveArgs) -> Result<Plan> {
    // clap requires --to when --node is not given.
    let to_name = args.to.as_deref().unwrap_or_default();
    if !s.servers.knows(to_name) {
        return Err(bad_input(format!(
            "unknown server '{}' (configured: {}); nothing was changed",
            to_name.escape_debug(),
            s.servers.names().join(", ")
        )));
    }
    let from = Place {
        server: t.server.clone(),
        database: t.database.clone(),
        target: s.servers.target_db(&t.server, &t.database)?,
        server_target: s.servers.target(&t.server)?,
    };
    let to = destination(s, t, to_name, args.own_database)?;
    refuse_same_place(t, &from, &to, args.own_database)?;
    let home_place = (HOME_SERVER, s.home_database());
    let is_home = |p: &Place| (p.server.as_str(), p.database.as_str()) == home_place;
    let source = connect_to(&from.target, &from).await?;
    place_backend(s, &from, &source, false).await?;
    let admin = connect_to(&to.server_target, &to).await?;
    let to_backend = place_backend(s, &to, &admin, args.own_database).await?;
    to_backend.check_moved_role(&t.slug, t.role.as_deref(), &to.describe())?;
    let pg_dump = dump::find_tool("pg_dump")?;
    relocate::check_pg_dump(&pg_dump, registry::server_major(&source).await?)?;
    let same_cluster = relocate::same_cluster(&source, &admin).await?;
    let own_role = t.role.clone().filter(|_| !same_cluster);
    let create_role = match &own_role {
        Some(role) => Some(new_role(s, &admin, role).await?),
        None => None,
    };
    let plan = Plan {
        slug: t.slug.clone(),
        schema: t.schema.clone(),
        // The registry's own database is never a tenant's own, whatever its name.
        from_own_database: t.database == t.schema && !is_home(&from),
        to_own_database: args.own_database,
        home: match (is_home(&from), is_home(&to)) {
            (true, _) => HomeIs::Source,
            (_, true) => HomeIs::Target,
            _ => HomeIs::Apart,
        },
        data_role: s.data_role(t).map(str::to_string),
        create_role,
        drop_source_role: own_role,
        deadline: s.lock_deadline(),
        pg_dump,
        from,
        to,
        to_backend,
    };
    relocate::check_target(&plan, &admin, s.settings.app_role.as_deref()).await?;
    Ok(plan)
}

/// `--to NAME`: its url's database, or with --own-database one named like the schema.
fn destination(s: &Session, t: &Tenant, to_name: &str, own_database: bool) -> Result<Place> {
    let server_target = s.servers.target(to_name)?;
    let (database, target) = if own_database {
        (t.schema.clone(), server_target.with_dbname(&t.schema))
    } else {
        let db = server_target.config.get_dbname().unwrap_or_default();
        (db.to_string(), server_target.clone())
    };
    Ok(Place {
        server: to_name.to_string(),
        database,
        target,
        server_target,
    })
}

fn refuse_same_place(t: &Tenant, from: &Place, to: &Place, own_database: bool) -> Result<()> {
    if from.server != to.server || from.database != to.database {
        return Ok(());
    }
    let already = match own_database {
        true => format!(
            "already has its own database ({}) on server {}",
            to.database, to.server
        ),
        false => format!("already lives on {}", to.describe()),
    };
    Err(bad_input(format!(
        "tenant {} {already}; nothing was changed",
        t.slug
    )))
}

/// The backend of `place` (plain PostgreSQL, or a Citus coordinator: a copy into one
/// becomes a distributed schema). A Citus worker is refused (exit 2, nothing changed,
/// naming its coordinator). `conn` is a connection to `place`'s server; `own_database`:
/// the tenant goes into a database of its own there, which the move creates without the
/// citus extension: plain PostgreSQL, whatever the server's own database is.
async fn place_backend(
    s: &Session,
    place: &Place,
    conn: &Object,
    own_database: bool,
) -> Result<Backend> {
    let database = match own_database {
        true => place.server_target.config.get_dbname().unwrap_or_default(),
        false => place.database.as_str(),
    };
    s.detect_place(&place.server, database, conn).await?;
    if own_database {
        return Ok(Backend::Plain);
    }
    Ok(s.backend_at(&place.server, database))
}

/// The tenant's own role, created at the target (another cluster). The application role
/// must not inherit it there (PostgreSQL 15).
async fn new_role(s: &Session, admin: &Object, role: &str) -> Result<NewRole> {
    let app_role = s.settings.app_role.clone();
    let server_major = match &app_role {
        Some(app) if registry::role_exists(admin, app).await? => {
            check_app_role_noinherit(admin, app).await?
        }
        _ => registry::server_major(admin).await?,
    };
    Ok(NewRole {
        role: role.to_string(),
        app_role,
        server_major,
    })
}

async fn connect_to(target: &connect::Target, place: &Place) -> Result<Object> {
    let pool = connect::pool(target, 1)?;
    connect::first_connection(&pool, target)
        .await
        .with_context(|| format!("cannot reach {}; nothing was changed", place.describe()))
}

fn place_json(p: &Place) -> serde_json::Value {
    json!({"server": p.server, "database": p.database})
}

async fn dry_run(s: &Session, p: &Plan) -> Result<u8> {
    let source = connect_to(&p.from.target, &p.from).await?;
    let tables = copy_check::estimates(&source, &p.schema).await?;
    let rows: i64 = tables.iter().map(|t| t.estimated_rows).sum();
    let bytes: i64 = tables.iter().map(|t| t.bytes).sum();
    if s.json() {
        crate::output::print_json(&json!({
            "dry_run": true, "slug": p.slug, "schema": p.schema,
            "from": place_json(&p.from), "to": place_json(&p.to),
            "own_database": p.to_own_database, "tables": tables,
            "estimated_rows": rows, "bytes": bytes,
        }));
        return Ok(0);
    }
    let created = if p.to_own_database {
        ", created by the move"
    } else {
        ""
    };
    crate::outln!(
        "would move tenant {} (schema {}) from {} to server {} (database {}{created}): {}, \
         about {rows} rows, {} kB; nothing was changed",
        p.slug,
        escape(&p.schema),
        p.from.describe(),
        p.to.server,
        p.to.database,
        count(tables.len(), "table"),
        bytes / 1024
    );
    for t in &tables {
        crate::outln!(
            "  {}: about {} rows, {} kB",
            escape(&t.table),
            t.estimated_rows,
            t.bytes / 1024
        );
    }
    Ok(0)
}

/// Why a move stopped before its switch.
enum Stop {
    Failed(anyhow::Error),
    Signal(&'static str),
}

async fn execute(s: &Session, home: &mut Object, p: &Plan) -> Result<u8> {
    let started = Instant::now();
    // When neither end is the registry's database, the tenant's lock on home is a session
    // lock held throughout; otherwise that end's transaction holds it.
    if p.home == HomeIs::Apart {
        locks::hold_tenant_within(&*home, &p.slug, &p.schema, p.deadline)
            .await
            .with_context(|| format!("cannot move tenant {}; nothing was changed", p.slug))?;
        // Marked as tenantctl's, as the transactions at either end are: a migrate meeting
        // the lock waits for the move instead of failing the tenant at its --lock-timeout.
        let _ = locks::mark_session(&*home).await;
    }
    let mut signals = Signals::listen()?;
    let made = Made::default();
    let result = steps(p, home, &made, &mut signals, started).await;
    if p.home == HomeIs::Apart {
        let _ = locks::release_tenant(&*home, &p.schema).await;
        let _ = locks::unmark_session(&*home).await;
    }
    let stop = match result {
        Ok(moved) => return Ok(report(s, p, &moved)),
        Err(stop) => stop,
    };
    let left = relocate::undo(p, &made).await;
    let stays = format!(
        "tenant {} stays at {}, unchanged and writable",
        p.slug,
        p.from.describe()
    );
    let mut tail = String::from(", and nothing was left at the target");
    if !left.is_empty() {
        tail = format!("; but: {}", left.join("; "));
    }
    match stop {
        Stop::Signal(sig) => {
            let msg = format!("interrupted by {sig}: the move was stopped; {stays}{tail}");
            Ok(signals::interrupted(s.json(), &msg))
        }
        Stop::Failed(e) => Err(e.context(format!("the move failed; {stays}{tail}"))),
    }
}

async fn steps(
    p: &Plan,
    home: &mut Object,
    made: &Made,
    signals: &mut Signals,
    started: Instant,
) -> Result<Moved, Stop> {
    let opened = tokio::select! {
        r = relocate::open(p, made) => r,
        sig = signals.recv() => return Err(Stop::Signal(sig)),
    };
    let (mut source, mut target) = opened.map_err(Stop::Failed)?;
    let staged = tokio::select! {
        r = relocate::stage(p, &mut source, &mut target) => r,
        sig = signals.recv() => return Err(Stop::Signal(sig)),
    };
    let staged = staged.map_err(Stop::Failed)?;
    if let Some(sig) = signals.received() {
        return Err(Stop::Signal(sig));
    }
    // From here on the move is not interrupted: the switch is quick, and a signal waits.
    match relocate::finish(p, home, staged, made, started).await {
        Ok(moved) => Ok(moved),
        Err(e) if made.switched() => Ok(Moved {
            tables: 0,
            rows: 0,
            writes_stopped: started.elapsed(),
            duration: started.elapsed(),
            warnings: vec![format!("{e:#}")],
        }),
        Err(e) => Err(Stop::Failed(e)),
    }
}

fn report(s: &Session, p: &Plan, m: &Moved) -> u8 {
    for w in &m.warnings {
        crate::errln!("warning: {w}");
    }
    let (stopped_ms, took_ms) = (m.writes_stopped.as_millis(), m.duration.as_millis());
    if s.json() {
        crate::output::print_json(&json!({
            "slug": p.slug, "schema": p.schema,
            "from": place_json(&p.from), "to": place_json(&p.to),
            "tables": m.tables, "rows": m.rows,
            "writes_stopped_ms": stopped_ms, "duration_ms": took_ms,
            "warnings": m.warnings,
        }));
    } else {
        crate::outln!(
            "moved tenant {} (schema {}) from {} to {}: {}, {} rows copied and verified; \
             writes stopped for {stopped_ms} ms; took {took_ms} ms",
            p.slug,
            escape(&p.schema),
            p.from.describe(),
            p.to.describe(),
            count(m.tables, "table"),
            m.rows
        );
    }
    match m.warnings.is_empty() {
        true => 0,
        false => crate::domain::exit::FAILED,
    }
}
