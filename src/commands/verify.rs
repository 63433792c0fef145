//! `tenantctl verify`: an isolation and drift audit. Exit 1 on any finding.

use anyhow::Result;
use serde_json::json;

use crate::apply::read_histories;
use crate::audit::{self, Finding};
use crate::cli::VerifyArgs;
use crate::exit::{FAILED, OK};
use crate::migration_set::{MigrationSet, Plan};
use crate::output::{count, print_json, table};
use crate::registry::{self, Tenant};
use crate::session::{select_tenants, Session};

pub async fn run(s: &Session, args: &VerifyArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let (_pool, mut conn) = s.connect(1).await?;
    let tenants = select_tenants(&conn, &args.slugs, "nothing was audited").await?;
    let mut findings = Vec::new();
    if args.slugs.is_empty() {
        findings.extend(unregistered_schemas(s, &conn, &tenants).await?);
    }
    findings.extend(app_role_inheritance(s, &conn).await?);
    findings.extend(ownership_and_privileges(s, &conn, &tenants).await?);
    findings.extend(history_drift(&mut conn, &tenants, &set).await?);
    findings.sort_by(|a, b| (&a.schema, a.kind).cmp(&(&b.schema, b.kind)));
    print(s, tenants.len(), &findings);
    Ok(if findings.is_empty() { OK } else { FAILED })
}

fn finding(t: &Tenant, kind: &'static str, detail: String) -> Finding {
    Finding {
        slug: Some(t.slug.clone()),
        schema: t.schema.clone(),
        kind,
        detail,
    }
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
    tenants: &[Tenant],
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let owner = audit::registry_owner(conn).await?;
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
        if actual != &owner {
            out.push(finding(
                t,
                "wrong_owner",
                format!("owned by '{actual}', expected '{owner}' (the registry's owner)"),
            ));
        }
        // The tenant's own role when it has one; otherwise the application role.
        let data_role =
            t.role
                .as_deref()
                .or(s.settings.app_role.as_deref().filter(|_| t.role.is_none()));
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
