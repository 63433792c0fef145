//! `tenantctl adopt (SLUG... | --all) [--baseline V] [--accept-drift] [--dry-run]`: takes
//! over schemas another tool made. Nothing is adopted silently: each schema is named (or
//! matched by the prefix with --all), its version comes from its own refinery history
//! (which must agree with the files) or from --baseline, and its structure must match what
//! the files build at that version unless --accept-drift. Then, one transaction per schema
//! under its lock: the baseline history (if any), the registry row, the configured grants.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use deadpool_postgres::Object;
use serde::Serialize;

use crate::cli::AdoptArgs;
use crate::commands::session::{check_app_role_noinherit, dedup, Session};
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::domain::migration_set::{AppliedMigration, MigrationSet, Plan};
use crate::domain::names;
use crate::domain::structure::{diff, Drift};
use crate::output::{count, escape_line, listed, print_json};
use crate::pg::connect::PgContext;
use crate::registry::{self, Adoption};
use crate::tenant::apply::{self, read_history, HISTORY_TABLE};
use crate::tenant::{adopt, audit, grants, structure};

#[derive(Serialize)]
struct Candidate {
    /// The tenant's slug (with --all, the schema name minus the prefix, valid or not).
    slug: String,
    schema: String,
    /// "adopted", "would_adopt", "unchanged" (already registered), "refused" or "failed".
    outcome: &'static str,
    /// The version it is (or would be) adopted at.
    version: Option<i64>,
    /// "history" (its own refinery history) or "baseline" (--baseline).
    source: Option<&'static str>,
    /// How its structure differs from what the migration files build at `version`.
    drift: Vec<Drift>,
    /// Why it was refused, or what failed.
    error: Option<String>,
    /// The history it is adopted with (read, or the baseline's).
    #[serde(skip)]
    history: Vec<AppliedMigration>,
}

impl Candidate {
    fn new(slug: &str, schema: &str) -> Candidate {
        Candidate {
            slug: slug.to_string(),
            schema: schema.to_string(),
            outcome: "pending",
            version: None,
            source: None,
            drift: Vec::new(),
            error: None,
            history: Vec::new(),
        }
    }

    fn refuse(&mut self, why: String) {
        self.outcome = "refused";
        self.error = Some(why);
    }

    fn pending(&self) -> bool {
        self.outcome == "pending"
    }
}

pub async fn run(s: &Session, args: &AdoptArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    check_baseline(&set, args.baseline)?;
    let (_pool, mut conn) = s.connect(1).await?;
    let app = s.check_app_role(&conn).await?;
    let major = match (&app, s.settings.per_tenant_roles) {
        (Some(app), true) => check_app_role_noinherit(&conn, app).await?,
        _ => registry::server_major(&conn).await?,
    };
    let mut candidates = if args.all {
        by_prefix(s, &conn).await?
    } else {
        by_slug(s, &conn, &args.slugs).await?
    };
    skip_registered(&conn, &mut candidates).await?;
    decide_versions(&mut conn, &set, args.baseline, &mut candidates).await?;
    check_owners(&conn, &mut candidates).await?;
    check_structure(&mut conn, &set, args.accept_drift, &mut candidates).await?;
    if let Some(app) = &app {
        if !args.dry_run && candidates.iter().any(Candidate::pending) {
            registry::grant_read(&conn, app).await?;
        }
    }
    for c in candidates.iter_mut().filter(|c| c.pending()) {
        if args.dry_run {
            c.outcome = "would_adopt";
            continue;
        }
        match adopt_one(s, &mut conn, c, &set, app.as_deref(), major).await {
            Ok(()) => c.outcome = "adopted",
            Err(e) => {
                c.outcome = "failed";
                c.error = Some(format!("{e:#}; nothing was changed in it"));
            }
        }
    }
    print(s, args.dry_run, &candidates);
    let bad = candidates
        .iter()
        .any(|c| matches!(c.outcome, "refused" | "failed"));
    Ok(if bad { FAILED } else { OK })
}

/// --baseline must name a migration of the folder (or 0: nothing applied).
fn check_baseline(set: &MigrationSet, baseline: Option<i64>) -> Result<()> {
    match baseline {
        None | Some(0) => Ok(()),
        Some(v) if set.find(v).is_some() => Ok(()),
        Some(v) => Err(bad_input(format!(
            "--baseline {v} is not a migration in {} (latest is {}); nothing was adopted",
            set.dir.display(),
            set.latest()
        ))),
    }
}

/// The named slugs' schemas; every one must exist (exit 2, nothing changed, otherwise).
async fn by_slug(s: &Session, conn: &Object, slugs: &[String]) -> Result<Vec<Candidate>> {
    let slugs = dedup(slugs);
    let schemas = s.schemas_for(&slugs)?;
    let existing = registry::existing_schemas(conn, &schemas).await?;
    let missing: Vec<&String> = schemas.iter().filter(|x| !existing.contains(x)).collect();
    if !missing.is_empty() {
        return Err(bad_input(format!(
            "{}{} not exist; nothing was adopted (the schema of a slug is schema_prefix '{}' + \
             the slug: check [tenants] schema_prefix in {})",
            listed("schema", &missing),
            does(missing.len()),
            s.settings.schema_prefix,
            s.settings.describe_config()
        )));
    }
    Ok(slugs
        .iter()
        .zip(&schemas)
        .map(|(slug, schema)| Candidate::new(slug, schema))
        .collect())
}

fn does(n: usize) -> &'static str {
    if n == 1 {
        " does"
    } else {
        " do"
    }
}

/// Every schema with the prefix; a name whose rest is not a valid slug is refused with the
/// reason.
async fn by_prefix(s: &Session, conn: &Object) -> Result<Vec<Candidate>> {
    let prefix = &s.settings.schema_prefix;
    if prefix.is_empty() {
        return Err(bad_input(format!(
            "--all adopts the schemas whose name starts with [tenants] schema_prefix, and it is \
             empty in {} (every schema would match); name the tenants to adopt instead; \
             nothing was adopted",
            s.settings.describe_config()
        )));
    }
    let mut out = Vec::new();
    for schema in audit::schemas_with_prefix(conn, prefix).await? {
        let slug = schema[prefix.len()..].to_string();
        let mut c = Candidate::new(&slug, &schema);
        let valid = names::validate_slug(&slug)
            .and_then(|slug| names::schema_name(prefix, slug).map(|_| ()));
        if let Err(e) = valid {
            c.refuse(format!("its name gives no valid tenant slug: {e}"));
        }
        out.push(c);
    }
    Ok(out)
}

/// A schema registered already is left alone (adopting twice changes nothing); a slug or
/// schema registered with another partner is refused.
async fn skip_registered(conn: &Object, candidates: &mut [Candidate]) -> Result<()> {
    let tenants = registry::all(conn).await?;
    for c in candidates.iter_mut().filter(|c| c.pending()) {
        let by_slug = tenants.iter().find(|t| t.slug == c.slug);
        let by_schema = tenants.iter().find(|t| t.schema == c.schema);
        match (by_slug, by_schema) {
            (Some(t), _) if t.schema == c.schema => {
                c.outcome = "unchanged";
                c.version = Some(t.version);
                c.error = Some("already registered".into());
            }
            (Some(t), _) => c.refuse(format!(
                "tenant {} is registered already, with schema {}",
                c.slug, t.schema
            )),
            (None, Some(t)) => c.refuse(format!(
                "the schema is registered already, as tenant {}",
                t.slug
            )),
            (None, None) => {}
        }
    }
    Ok(())
}

/// Each schema's version: its refinery history when it has one (which must agree with the
/// files), else --baseline.
async fn decide_versions(
    conn: &mut Object,
    set: &MigrationSet,
    baseline: Option<i64>,
    candidates: &mut [Candidate],
) -> Result<()> {
    // Each read on its own, not in one transaction: that would hold a lock on every
    // history table until its end, and overflow the server's lock table at thousands of
    // schemas. `adopt_one` reads the history again under the tenant's lock.
    for c in candidates.iter_mut().filter(|c| c.pending()) {
        let history = read_history(&*conn, &c.schema)
            .await
            .with_pg_context(|| format!("cannot read the migration history of {}", c.schema))?;
        match (history.filter(|h| !h.is_empty()), baseline) {
            (Some(h), _) => from_history(c, set, h, baseline),
            (None, Some(v)) => {
                c.version = Some(v);
                c.source = Some("baseline");
                c.history = set.history_up_to(v);
            }
            (None, None) => c.refuse(format!(
                "it has no migration history ({HISTORY_TABLE}), so its version is unknown; if \
                 its structure is what the migration files build at version V, adopt it with \
                 --baseline V"
            )),
        }
    }
    Ok(())
}

fn from_history(
    c: &mut Candidate,
    set: &MigrationSet,
    history: Vec<AppliedMigration>,
    baseline: Option<i64>,
) {
    let version = history.iter().map(|m| m.version).max().unwrap_or(0);
    if let Plan::Diverged(why) = set.plan(&history, set.latest()) {
        return c.refuse(format!(
            "its migration history disagrees with the files: {why}"
        ));
    }
    if let Some(b) = baseline.filter(|b| *b != version) {
        return c.refuse(format!(
            "its migration history says version {version}, not --baseline {b}; --baseline is \
             for schemas without a history"
        ));
    }
    c.version = Some(version);
    c.source = Some("history");
    c.history = history;
}

/// Tenant schemas belong to the registry's owner, the role migrations run as.
async fn check_owners(conn: &Object, candidates: &mut [Candidate]) -> Result<()> {
    let owner = audit::registry_owner(conn).await?;
    let schemas: Vec<String> = candidates
        .iter()
        .filter(|c| c.pending())
        .map(|c| c.schema.clone())
        .collect();
    let owners = audit::owners(conn, &schemas).await?;
    for c in candidates.iter_mut().filter(|c| c.pending()) {
        if let Some((_, o)) = owners.iter().find(|(n, o)| n == &c.schema && o != &owner) {
            c.refuse(format!(
                "it is owned by '{o}', and tenant schemas belong to '{owner}' (the registry's \
                 owner, which runs the migrations); give it and its objects to '{owner}' first \
                 (REASSIGN OWNED BY, or ALTER SCHEMA ... OWNER TO)"
            ));
        }
    }
    Ok(())
}

/// Compares each schema with the files at its version; one that differs is refused unless
/// `accept`.
async fn check_structure(
    conn: &mut Object,
    set: &MigrationSet,
    accept: bool,
    candidates: &mut [Candidate],
) -> Result<()> {
    let pending: Vec<&mut Candidate> = candidates.iter_mut().filter(|c| c.pending()).collect();
    if pending.is_empty() {
        return Ok(());
    }
    let versions: BTreeSet<i64> = pending.iter().filter_map(|c| c.version).collect();
    let schemas: Vec<String> = pending.iter().map(|c| c.schema.clone()).collect();
    let compared = structure::compare_with_files(conn, set, &versions, &schemas).await?;
    for c in pending {
        let version = c.version.unwrap_or(0);
        let (Some(reference), Some(actual)) = (
            compared.references.get(&version),
            compared.schemas.get(&c.schema),
        ) else {
            continue;
        };
        c.drift = diff(reference, actual);
        if !c.drift.is_empty() && !accept {
            let n = c.drift.len();
            c.refuse(format!(
                "its structure differs from what the migration files build at version {version} \
                 ({}); fix the schema, or adopt it as it is with --accept-drift",
                count(n, "difference")
            ));
        }
    }
    Ok(())
}

/// One schema, in one transaction under its lock: the baseline history, the registry row
/// and its status rows, the grants.
async fn adopt_one(
    s: &Session,
    conn: &mut Object,
    c: &Candidate,
    set: &MigrationSet,
    app: Option<&str>,
    major: i32,
) -> Result<()> {
    let (tx, exists) =
        apply::locked_transaction(conn, &c.slug, &c.schema, s.lock_deadline()).await?;
    if !exists {
        bail!("its schema {} was dropped meanwhile", c.schema);
    }
    let version = c.version.unwrap_or(0);
    let baselined = c.source == Some("baseline");
    // What was read before the lock must still hold under it.
    let now = read_history(&tx, &c.schema)
        .await
        .pg_context("cannot read the migration history again")?
        .unwrap_or_default();
    let unchanged = if baselined {
        now.is_empty()
    } else {
        now == c.history
    };
    if !unchanged {
        bail!("its migration history changed while adopt ran; run adopt again");
    }
    if baselined && !c.history.is_empty() {
        adopt::write_baseline(&tx, &c.schema, &c.history).await?;
    }
    let role = match (app, s.settings.per_tenant_roles) {
        (Some(_), true) => Some(c.schema.as_str()),
        _ => None,
    };
    let adoption = Adoption {
        slug: &c.slug,
        schema: &c.schema,
        version,
        digest: set.digest_at(version),
        role,
        history: &c.history,
        outcome: if baselined { "baselined" } else { "adopted" },
    };
    registry::record_adoption(&tx, &adoption).await?;
    match app {
        Some(app) => {
            let data_role = role.unwrap_or(app);
            adopt::apply_grants(&tx, &c.schema, role, app, data_role, major).await?;
        }
        None => tx
            .batch_execute(&grants::before_migrations(&c.schema, None))
            .await
            .pg_context("cannot revoke PUBLIC's privileges on the schema")?,
    }
    tx.commit().await.pg_context("cannot commit the adoption")?;
    Ok(())
}

#[derive(Serialize)]
struct Document<'a> {
    dry_run: bool,
    tenants: &'a [Candidate],
}

fn print(s: &Session, dry_run: bool, candidates: &[Candidate]) {
    if s.json() {
        print_json(&Document {
            dry_run,
            tenants: candidates,
        });
        return;
    }
    for c in candidates {
        let at = match (c.version, c.source) {
            (Some(v), Some("baseline")) => format!(
                "at version {v} (--baseline: history written for V1..V{v}, recorded as baselined, not run)"
            ),
            (Some(v), _) => format!("at version {v} (from its refinery history)"),
            _ => String::new(),
        };
        let head = format!("{} ({})", c.slug, c.schema);
        let line = match c.outcome {
            "adopted" => format!("{head}: adopted {at}"),
            "would_adopt" => format!("{head}: would adopt {at}"),
            "unchanged" => format!("{head}: already registered; nothing to do"),
            outcome => format!(
                "{head}: {outcome}: {}",
                c.error.as_deref().unwrap_or_default()
            ),
        };
        crate::outln!("{}", escape_line(&line));
        for d in &c.drift {
            crate::outln!(
                "    {} {}: {}",
                d.kind,
                escape_line(&d.object),
                escape_line(&d.detail)
            );
        }
    }
    let n = |o: &str| candidates.iter().filter(|c| c.outcome == o).count();
    let done = if dry_run {
        format!("{} would be adopted", n("would_adopt"))
    } else {
        format!("{} adopted", n("adopted"))
    };
    crate::outln!(
        "adopt: {}: {done}, {} unchanged, {} refused, {} failed",
        count(candidates.len(), "schema"),
        n("unchanged"),
        n("refused"),
        n("failed")
    );
}
