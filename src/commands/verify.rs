//! `tenantctl verify`: an isolation and drift audit. Exit 1 on any finding.

use anyhow::Result;
use deadpool_postgres::Object;
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::commands::session::{pick_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::{MigrationSet, Plan};
use crate::domain::names::quote_ident;
use crate::domain::structure::diff;
use crate::output::{count, print_json, table};
use crate::registry::{self, Tenant};
use crate::tenant::apply::{read_histories, HISTORY_TABLE};
use crate::tenant::audit::{self, Finding};
use crate::tenant::citus::Backend;
use crate::tenant::structure;

pub async fn run(s: &Session, args: &VerifyArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let (_pool, mut conn) = s.connect(1).await?;
    let selector = args.select.selector.as_ref();
    let all = pick_tenants(&conn, &args.slugs, selector, "nothing was audited").await?;
    let checked = all.len();
    let home_db = s.home_database().to_string();
    let (tenants, far): (Vec<Tenant>, Vec<Tenant>) =
        all.into_iter().partition(|t| t.is_home(&home_db));
    let mut findings = Vec::new();
    if args.slugs.is_empty() && selector.is_none() {
        findings.extend(unregistered_schemas(s, &conn, &tenants).await?);
    }
    let owner = audit::registry_owner(&conn).await?;
    findings.extend(app_role_inheritance(s, &conn).await?);
    findings.extend(public_create(&conn).await?);
    findings.extend(registry_access(s, &conn).await?);
    findings.extend(ownership_and_privileges(s, &conn, &owner, &tenants).await?);
    findings.extend(column_and_default_privileges(s, &conn, &owner, &tenants).await?);
    findings.extend(objects(&conn, &owner, &tenants).await?);
    findings.extend(tenant_role_memberships(s, &conn, &tenants).await?);
    findings.extend(missing_grants(s, &conn, &owner, &tenants).await?);
    findings.extend(history_drift(&mut conn, &tenants, &set).await?);
    findings.extend(not_distributed(s.backend(), &conn, &tenants).await?);
    for (server, database) in places_elsewhere(s, &far, args.slugs.is_empty() && selector.is_none())
    {
        let here: Vec<Tenant> = far
            .iter()
            .filter(|t| t.server == server && t.database == database)
            .cloned()
            .collect();
        let found = match audit_place(
            s,
            &server,
            &database,
            here,
            args.slugs.is_empty(),
            &set,
            args.structure,
        )
        .await
        {
            Ok(found) => found,
            Err(e) => vec![global(
                "",
                "server_not_audited",
                format!("{e:#}; its tenants were not audited"),
            )],
        };
        findings.extend(found.into_iter().map(|mut f| {
            f.detail = format!("{} (server {server}, database {database})", f.detail);
            f
        }));
    }
    if args.structure {
        findings.extend(structure_drift(&mut conn, &tenants, &set).await?);
        // Tenants elsewhere are compared where they live, by `audit_place`.
    }
    findings.sort_by(|a, b| (&a.schema, a.kind).cmp(&(&b.schema, b.kind)));
    if s.format == crate::cli::Format::Junit {
        let everyone: Vec<Tenant> = tenants.iter().chain(&far).cloned().collect();
        print_junit(&everyone, &findings);
    } else {
        print(s, checked, &findings);
    }
    Ok(if findings.is_empty() { OK } else { FAILED })
}

/// Every other server and database to audit: where the tenants elsewhere live, and with
/// the whole fleet audited, each configured server's own database (for unregistered
/// schemas there).
fn places_elsewhere(s: &Session, far: &[Tenant], whole_fleet: bool) -> Vec<(String, String)> {
    let mut places: Vec<(String, String)> = far
        .iter()
        .map(|t| (t.server.clone(), t.database.clone()))
        .collect();
    if whole_fleet {
        for name in s.servers.names().into_iter().skip(1) {
            if let Ok(target) = s.servers.target(&name) {
                let db = target.config.get_dbname().unwrap_or_default().to_string();
                places.push((name, db));
            }
        }
    }
    places.sort();
    places.dedup();
    places
}

/// The audit of one database elsewhere, with the role tenantctl connects as there standing
/// in for the registry's owner (it made every tenant object there). The registry's own
/// access is audited at home only.
async fn audit_place(
    s: &Session,
    server: &str,
    database: &str,
    mut tenants: Vec<Tenant>,
    whole_fleet: bool,
    set: &MigrationSet,
    structure: bool,
) -> Result<Vec<Finding>> {
    let target = s.servers.target_db(server, database)?;
    let pool = crate::pg::connect::pool(&target, 1)?;
    let mut conn = crate::pg::connect::first_connection(&pool, &target)
        .await
        .map_err(|e| {
            anyhow::anyhow!("server {server} (database {database}) cannot be reached: {e:#}")
        })?;
    s.detect_place(server, database, &conn).await?;
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema.clone()).collect();
    let present = registry::existing_schemas(&conn, &schemas).await?;
    for t in &mut tenants {
        t.schema_exists = present.contains(&t.schema);
    }
    let owner = audit::connected_role(&conn).await?;
    let mut findings = Vec::new();
    if whole_fleet {
        findings.extend(unregistered_schemas(s, &conn, &tenants).await?);
    }
    // Not `public_create`, which guards the registry's schema: there is none here.
    findings.extend(app_role_inheritance(s, &conn).await?);
    findings.extend(ownership_and_privileges(s, &conn, &owner, &tenants).await?);
    findings.extend(column_and_default_privileges(s, &conn, &owner, &tenants).await?);
    findings.extend(objects(&conn, &owner, &tenants).await?);
    findings.extend(tenant_role_memberships(s, &conn, &tenants).await?);
    findings.extend(missing_grants(s, &conn, &owner, &tenants).await?);
    findings.extend(history_drift(&mut conn, &tenants, set).await?);
    let backend = s.backend_at(server, database);
    findings.extend(not_distributed(&backend, &conn, &tenants).await?);
    if structure {
        // One catalog read for the tenants of this place, references built here too.
        findings.extend(structure_drift(&mut conn, &tenants, set).await?);
    }
    Ok(findings)
}

/// On a Citus coordinator that distributes tenants (`[citus] distribute`, the default;
/// `backend` is the database's, home's or another place's): each tenant whose schema is a
/// plain local schema on the coordinator (created before Citus, or with distribute off), so
/// not spread over the workers.
async fn not_distributed(
    backend: &Backend,
    conn: &Object,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    if !backend.distributes() {
        return Ok(Vec::new());
    }
    let schemas: Vec<String> = tenants
        .iter()
        .filter(|t| t.schema_exists)
        .map(|t| t.schema.clone())
        .collect();
    let distributed = backend.distributed(conn, &schemas).await?;
    Ok(tenants
        .iter()
        .filter(|t| t.schema_exists && !distributed.contains(&t.schema))
        .map(|t| {
            finding(
                t,
                "not_distributed",
                format!(
                    "its schema is a local schema on the Citus coordinator, not a distributed \
                     schema on a worker (created before Citus or with [citus] distribute = \
                     false); convert it with tenantctl distribute {} (docs/citus.md)",
                    t.slug
                ),
            )
        })
        .collect())
}

fn finding(t: &Tenant, kind: &'static str, detail: String) -> Finding {
    Finding {
        slug: Some(t.slug.clone()),
        schema: t.schema.clone(),
        kind,
        detail,
    }
}

/// A finding about the database as a whole (`schema` is "" or the registry's).
fn global(schema: &str, kind: &'static str, detail: String) -> Finding {
    Finding {
        slug: None,
        schema: schema.to_string(),
        kind,
        detail,
    }
}

/// The registered tenant a schema belongs to.
fn tenant_of<'a>(tenants: &'a [Tenant], schema: &str) -> Option<&'a Tenant> {
    tenants.iter().find(|t| t.schema == schema)
}

/// Up to five names, then how many more.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Schemas carrying the tenant prefix that no registry row accounts for.
async fn unregistered_schemas(
    s: &Session,
    conn: &deadpool_postgres::Object,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let prefix = &s.settings.schema_prefix;
    if prefix.is_empty() {
        return Ok(Vec::new()); // every schema would match; nothing to say
    }
    Ok(audit::schemas_with_prefix(conn, prefix)
        .await?
        .into_iter()
        .filter(|n| !tenants.iter().any(|t| &t.schema == n))
        .map(|schema| Finding {
            slug: None,
            schema,
            kind: "unregistered_schema",
            detail: format!("schema has the tenant prefix '{prefix}' but no registry row"),
        })
        .collect())
}

/// With per-tenant roles on PostgreSQL 15, an INHERIT application role holds every tenant's
/// privileges without SET ROLE.
async fn app_role_inheritance(
    s: &Session,
    conn: &deadpool_postgres::Object,
) -> Result<Vec<Finding>> {
    let (true, Some(app)) = (s.settings.per_tenant_roles, s.settings.app_role.as_deref()) else {
        return Ok(Vec::new());
    };
    if registry::server_major(conn).await? >= 16 || !registry::role_exists(conn, app).await? {
        return Ok(Vec::new());
    }
    if !registry::role_inherits(conn, app).await? {
        return Ok(Vec::new());
    }
    Ok(vec![Finding {
        slug: None,
        schema: String::new(),
        kind: "app_role_inherits",
        detail: format!("application role '{app}' is INHERIT: it holds every tenant role's privileges without SET ROLE"),
    }])
}

/// Missing schemas, schemas owned by someone else, and privileges beyond the configured ones.
async fn ownership_and_privileges(
    s: &Session,
    conn: &deadpool_postgres::Object,
    owner: &str,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema.clone()).collect();
    let owners = audit::owners(conn, &schemas).await?;
    let grants = audit::grants(conn, &schemas).await?;
    for t in tenants {
        let Some((_, actual)) = owners.iter().find(|(n, _)| n == &t.schema) else {
            out.push(finding(
                t,
                "schema_missing",
                "the registry lists it but the schema does not exist".into(),
            ));
            continue;
        };
        if actual != owner {
            out.push(finding(
                t,
                "wrong_owner",
                format!("owned by '{actual}', expected '{owner}' (the registry's owner)"),
            ));
        }
        if t.state == "suspended" {
            // Suspend revoked every privilege on the schema; any there now reaches the data.
            for g in grants
                .iter()
                .filter(|g| g.schema == t.schema && g.kind == "schema")
            {
                out.push(finding(
                    t,
                    "suspended_reachable",
                    format!(
                        "the tenant is suspended but {} holds {} on its schema; run tenantctl \
                         resume {} to give its access back on purpose, or REVOKE it",
                        g.grantee, g.privilege, t.slug
                    ),
                ));
            }
        }
        let data_role = s.data_role(t);
        for g in grants
            .iter()
            .filter(|g| g.schema == t.schema && !audit::is_expected(g, data_role))
        {
            let what = if g.kind == "schema" {
                "the schema".to_string()
            } else {
                g.object.clone()
            };
            out.push(finding(
                t,
                "unexpected_privilege",
                format!("{} holds {} on {what}", g.grantee, g.privilege),
            ));
        }
    }
    Ok(out)
}

/// Roles other than the owners that may CREATE in `public`, where the registry lives.
async fn public_create(conn: &Object) -> Result<Vec<Finding>> {
    Ok(audit::public_creators(conn)
        .await?
        .into_iter()
        .map(|(schema, grantee)| {
            let revoke_from = if grantee == "PUBLIC" {
                grantee.clone()
            } else {
                quote_ident(&grantee)
            };
            global(
                &schema,
                "public_create",
                format!(
                    "{grantee} holds CREATE on schema {schema}, where the registry lives: it can \
                     plant functions and tables there that other roles' unqualified SQL would run \
                     (REVOKE CREATE ON SCHEMA {schema} FROM {revoke_from})"
                ),
            )
        })
        .collect())
}

/// Privileges on the registry beyond the application role's read of the routing columns,
/// and that read, when it is missing.
async fn registry_access(s: &Session, conn: &Object) -> Result<Vec<Finding>> {
    let app = s.settings.app_role.as_deref();
    let grants = audit::registry_grants(conn).await?;
    let mut out: Vec<Finding> = grants
        .iter()
        .filter(|g| !audit::is_expected_registry(g, app))
        .map(|g| {
            let object = if g.object.contains('(') {
                g.object.clone()
            } else {
                format!("public.{}", g.object)
            };
            let on = match &g.column {
                Some(c) => format!("column {c} of {object}"),
                None => object,
            };
            global(
                "public",
                "registry_privilege",
                format!(
                    "{} holds {} on {on}; only tenantctl's role may change the registry, and the \
                     application role may read the routing columns of public.tenants",
                    g.grantee, g.privilege
                ),
            )
        })
        .collect();
    let Some(app) = app else {
        return Ok(out);
    };
    let readable = |c: &&str| {
        grants.iter().any(|g| {
            g.grantee == app
                && g.object == "tenants"
                && g.privilege == "SELECT"
                && g.column.as_deref().is_none_or(|col| col == *c)
        })
    };
    let unreadable: Vec<String> = registry::ROUTING_COLUMNS
        .iter()
        .filter(|c| !readable(c))
        .map(|c| c.to_string())
        .collect();
    if !unreadable.is_empty() {
        out.push(global(
            "public",
            "missing_grant",
            format!(
                "application role '{app}' cannot read {} of public.tenants to route requests; \
                 run tenantctl grant",
                unreadable.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// Column privileges (tenantctl grants none beyond what table privileges give the data
/// role), and default privileges other than the ones tenantctl sets.
async fn column_and_default_privileges(
    s: &Session,
    conn: &Object,
    owner: &str,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema.clone()).collect();
    let mut out = Vec::new();
    for g in audit::column_grants(conn, &schemas).await? {
        let Some(t) = tenant_of(tenants, &g.schema) else {
            continue;
        };
        let expected = s.data_role(t) == Some(g.grantee.as_str())
            && g.table != HISTORY_TABLE
            && matches!(g.privilege.as_str(), "SELECT" | "INSERT" | "UPDATE");
        if !expected {
            out.push(finding(
                t,
                "unexpected_column_privilege",
                format!(
                    "{} holds {} on column {}.{}",
                    g.grantee, g.privilege, g.table, g.column
                ),
            ));
        }
    }
    for g in audit::default_grants(conn, &schemas, owner).await? {
        let what = match g.objtype.as_str() {
            "r" => "tables",
            "S" => "sequences",
            "f" => "functions",
            "T" => "types",
            "n" => "schemas",
            _ => "objects",
        };
        if g.schema.is_empty() {
            out.push(global(
                "",
                "unexpected_default_privilege",
                format!(
                    "default privileges give {} {} on {what} that {} creates in every schema, \
                     tenant schemas included",
                    g.grantee, g.privilege, g.creator
                ),
            ));
            continue;
        }
        let Some(t) = tenant_of(tenants, &g.schema) else {
            continue;
        };
        if !audit::is_expected_default(&g, owner, s.data_role(t)) {
            out.push(finding(
                t,
                "unexpected_default_privilege",
                format!(
                    "default privileges give {} {} on {what} that {} creates in this schema",
                    g.grantee, g.privilege, g.creator
                ),
            ));
        }
    }
    Ok(out)
}

/// Objects owned by another role, SECURITY DEFINER functions, and views that read other
/// schemas.
async fn objects(conn: &Object, owner: &str, tenants: &[Tenant]) -> Result<Vec<Finding>> {
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema.clone()).collect();
    let mut out = Vec::new();
    for o in audit::foreign_owned(conn, &schemas, owner).await? {
        if let Some(t) = tenant_of(tenants, &o.schema) {
            out.push(finding(
                t,
                "wrong_object_owner",
                format!(
                    "{} {} is owned by '{}', not '{owner}' (the registry's owner): that role can \
                     alter, drop or re-grant it, and a migration that changes it will fail",
                    o.kind, o.name, o.owner
                ),
            ));
        }
    }
    for (schema, function, fowner) in audit::security_definers(conn, &schemas).await? {
        if let Some(t) = tenant_of(tenants, &schema) {
            out.push(finding(
                t,
                "security_definer",
                format!(
                    "function {function} is SECURITY DEFINER: it runs with the rights of its \
                     owner '{fowner}' whoever calls it"
                ),
            ));
        }
    }
    for (schema, view, reads) in audit::cross_schema_views(conn, &schemas).await? {
        if let Some(t) = tenant_of(tenants, &schema) {
            out.push(finding(
                t,
                "cross_schema_view",
                format!(
                    "view {view} reads {reads}, outside this schema: a view runs with its owner's \
                     rights, so whoever can read it reads that too"
                ),
            ));
        }
    }
    Ok(out)
}

/// A tenant's own role must be held by the application role alone (SET ROLE only, no
/// ADMIN), and hold no other role itself.
async fn tenant_role_memberships(
    s: &Session,
    conn: &Object,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let roles: Vec<String> = tenants.iter().filter_map(|t| t.role.clone()).collect();
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let major = registry::server_major(conn).await?;
    let app = s.settings.app_role.as_deref();
    let mut out = Vec::new();
    for m in audit::memberships(conn, &roles, major).await? {
        let Some(t) = tenants
            .iter()
            .find(|t| t.role.as_deref() == Some(m.tenant_role.as_str()))
        else {
            continue;
        };
        let (r, o) = (&m.tenant_role, &m.other);
        let detail = if !m.other_is_member {
            let whose = match tenants.iter().find(|x| x.role.as_deref() == Some(o)) {
                Some(x) => format!(" (tenant {}'s role)", x.slug),
                None => String::new(),
            };
            format!("tenant role '{r}' is a member of role '{o}'{whose}: it holds that role's privileges")
        } else if app != Some(o.as_str()) {
            format!("role '{o}' is a member of tenant role '{r}': it holds this tenant's data privileges")
        } else if m.admin {
            format!("application role '{o}' holds ADMIN OPTION on tenant role '{r}': it can grant this tenant's data to any role")
        } else if m.inherit {
            format!("application role '{o}' inherits tenant role '{r}': it reaches this tenant without SET ROLE")
        } else {
            continue;
        };
        out.push(finding(t, "unexpected_membership", detail));
    }
    Ok(out)
}

/// Grants tenantctl gives that a tenant lacks: typically a tenant created before `app_role`
/// was set, which the application cannot reach. `tenantctl grant` applies them.
async fn missing_grants(
    s: &Session,
    conn: &Object,
    owner: &str,
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let audited: Vec<(&Tenant, &str)> = tenants
        .iter()
        .filter(|t| t.schema_exists && t.state != "dropping")
        .filter_map(|t| s.data_role(t).map(|r| (t, r)))
        .collect();
    if audited.is_empty() {
        return Ok(Vec::new());
    }
    let schemas: Vec<String> = audited.iter().map(|(t, _)| t.schema.clone()).collect();
    let pairs: Vec<(String, String)> = audited
        .iter()
        .map(|(t, r)| (t.schema.clone(), r.to_string()))
        .collect();
    let grants = audit::grants(conn, &schemas).await?;
    let defaults = audit::default_grants(conn, &schemas, owner).await?;
    let ungranted = audit::ungranted(conn, &pairs).await?;
    let roles: Vec<String> = audited.iter().filter_map(|(t, _)| t.role.clone()).collect();
    let members = if roles.is_empty() {
        Vec::new()
    } else {
        audit::memberships(conn, &roles, registry::server_major(conn).await?).await?
    };
    let app = s.settings.app_role.as_deref();
    let mut out = Vec::new();
    for ((t, role), missing) in audited.iter().zip(ungranted) {
        let mut gaps = Vec::new();
        let usage = grants.iter().any(|g| {
            g.schema == t.schema
                && g.kind == "schema"
                && g.grantee == *role
                && g.privilege == "USAGE"
        });
        // A suspended tenant lacks USAGE on purpose (suspended_reachable is its finding).
        if !usage && t.state != "suspended" {
            gaps.push("USAGE on the schema".to_string());
        }
        if !missing.tables.is_empty() {
            gaps.push(format!(
                "any privilege on {} tables ({})",
                missing.tables.len(),
                some_names(&missing.tables)
            ));
        }
        if !missing.sequences.is_empty() {
            gaps.push(format!(
                "any privilege on {} sequences ({})",
                missing.sequences.len(),
                some_names(&missing.sequences)
            ));
        }
        let defaults = audit::missing_defaults(&defaults, &t.schema, owner, role);
        if !defaults.is_empty() {
            gaps.push(format!(
                "default privileges ({}) for what later migrations create",
                defaults.join(", ")
            ));
        }
        if let (Some(tr), Some(app)) = (&t.role, app) {
            if !members
                .iter()
                .any(|m| &m.tenant_role == tr && m.other_is_member && m.other == app)
            {
                gaps.push(format!(
                    "the application role '{app}' is not a member of it, so cannot SET ROLE to it"
                ));
            }
        }
        if !gaps.is_empty() {
            out.push(finding(
                t,
                "missing_grant",
                format!(
                    "data role '{role}' lacks {}: the application cannot fully reach this tenant \
                     (was it created before app_role was set?); run tenantctl grant {} to apply \
                     the configured grants",
                    gaps.join("; "),
                    t.slug
                ),
            ));
        }
    }
    Ok(out)
}

/// Registry version against each schema's history, and the history against the files.
async fn history_drift(
    conn: &mut deadpool_postgres::Object,
    tenants: &[Tenant],
    set: &MigrationSet,
) -> Result<Vec<Finding>> {
    let present: Vec<&Tenant> = tenants.iter().filter(|t| t.schema_exists).collect();
    let schemas: Vec<&str> = present.iter().map(|t| t.schema.as_str()).collect();
    let histories = read_histories(conn, &schemas).await?;
    let mut out = Vec::new();
    for (t, history) in present.into_iter().zip(histories) {
        let actual = history.iter().map(|h| h.version).max().unwrap_or(0);
        if actual != t.version {
            out.push(finding(
                t,
                "version_mismatch",
                format!(
                    "registry says version {}, the schema's history {actual}",
                    t.version
                ),
            ));
        }
        if let Plan::Diverged(why) = set.plan(&history, set.latest()) {
            out.push(finding(t, "diverged", why));
        }
    }
    Ok(out)
}

/// `--format junit`: a testcase per tenant audited, failing with its findings, and one for
/// the database as a whole (registry access, unregistered schemas, roles), so a finding
/// that belongs to no tenant fails the report too.
fn print_junit(tenants: &[Tenant], findings: &[Finding]) {
    use crate::output::junit::{self, Case};
    let describe = |fs: Vec<&Finding>| {
        (!fs.is_empty()).then(|| {
            fs.iter()
                .map(|f| format!("{}: {} ({})", f.kind, f.detail, f.schema))
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let mut cases: Vec<Case> = tenants
        .iter()
        .map(|t| Case {
            name: t.slug.clone(),
            classname: "tenantctl.verify".into(),
            seconds: 0.0,
            failure: describe(
                findings
                    .iter()
                    .filter(|f| f.slug.as_deref() == Some(t.slug.as_str()))
                    .collect(),
            ),
            skipped: None,
        })
        .collect();
    cases.push(Case {
        name: "(database)".into(),
        classname: "tenantctl.verify".into(),
        seconds: 0.0,
        failure: describe(findings.iter().filter(|f| f.slug.is_none()).collect()),
        skipped: None,
    });
    if junit::on_github_actions() {
        for f in findings {
            crate::errln!(
                "{}",
                junit::github_error(
                    &format!("tenantctl verify: {}", f.kind),
                    &format!("{}: {}", f.slug.as_deref().unwrap_or(&f.schema), f.detail)
                )
            );
        }
    }
    crate::outln!("{}", junit::document("tenantctl verify", &cases));
}

/// Each tenant's structure against what the files build at its registry version: one
/// catalog read for all tenants, one reference per distinct version.
async fn structure_drift(
    conn: &mut deadpool_postgres::Object,
    tenants: &[Tenant],
    set: &MigrationSet,
) -> Result<Vec<Finding>> {
    let present: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.schema_exists && t.state != "dropping")
        .collect();
    let versions = present.iter().map(|t| t.version).collect();
    let schemas: Vec<String> = present.iter().map(|t| t.schema.clone()).collect();
    let compared = structure::compare_with_files(conn, set, &versions, &schemas).await?;
    let mut out = Vec::new();
    for t in present {
        let (Some(reference), Some(actual)) = (
            compared.references.get(&t.version),
            compared.schemas.get(&t.schema),
        ) else {
            continue;
        };
        for d in diff(reference, actual) {
            out.push(finding(t, d.kind, format!("{}: {}", d.object, d.detail)));
        }
    }
    Ok(out)
}

fn print(s: &Session, checked: usize, findings: &[Finding]) {
    if s.json() {
        print_json(&json!({ "tenants_checked": checked, "findings": findings }));
        return;
    }
    if !findings.is_empty() {
        let mut t = table(vec!["finding", "tenant", "schema", "detail"]);
        for f in findings {
            t.add_row(vec![
                f.kind.to_string(),
                f.slug.clone().unwrap_or_default(),
                f.schema.clone(),
                f.detail.clone(),
            ]);
        }
        crate::outln!("{t}");
    }
    crate::outln!(
        "verify: {} checked, {}",
        count(checked, "tenant"),
        count(findings.len(), "finding")
    );
}
