//! `tenantctl exec`'s audit records (registry V7): one `tenant_exec_runs` row per run and
//! one `tenant_exec_results` row per tenant.

use anyhow::Result;
use deadpool_postgres::GenericClient;

use crate::pg::connect::PgContext;

/// Records the start of a run; returns its id.
pub async fn start(
    client: &impl GenericClient,
    source: &str,
    sha256: &str,
    sql: &str,
    dry_run: bool,
) -> Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO public.tenant_exec_runs (source, sha256, sql_text, dry_run) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&source, &sha256, &sql, &dry_run],
        )
        .await
        .pg_context("cannot record the exec run in the registry")?
        .get(0))
}

/// Records the end of a run.
pub async fn finish(client: &impl GenericClient, run_id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenant_exec_runs SET finished_at = pg_catalog.now() WHERE id = $1",
            &[&run_id],
        )
        .await
        .pg_context("cannot record the end of the exec run in the registry")?;
    Ok(())
}

/// The statement recording one tenant's outcome (`$1` run, `$2` slug, `$3` outcome, `$4`
/// rows affected, `$5` error); run inside the tenant's transaction for `done`.
pub const RECORD_RESULT: &str = "INSERT INTO public.tenant_exec_results \
        (run_id, slug, outcome, rows_affected, error) VALUES ($1, $2, $3, $4, $5)";

/// Records one tenant's outcome on its own (after its transaction ended).
pub async fn record(
    client: &impl GenericClient,
    run_id: i64,
    slug: &str,
    outcome: &str,
    rows_affected: Option<i64>,
    error: Option<&str>,
) -> Result<()> {
    client
        .execute(
            RECORD_RESULT,
            &[&run_id, &slug, &outcome, &rows_affected, &error],
        )
        .await
        .pg_context("cannot record a tenant's exec outcome in the registry")?;
    Ok(())
}
