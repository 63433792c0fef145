-- tenantctl registry, version 7: `tenantctl exec` records every run and its outcome in
-- each tenant, so "which tenants got this fix?" has an answer (docs/fleet-operations.md).
-- (Version 6 belongs to another change; the registry's versions need not be contiguous.)
CREATE TABLE public.tenant_exec_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The file as given on the command line, or '-c' for SQL given with -c.
    source      text NOT NULL,
    sha256      text NOT NULL,
    sql_text    text NOT NULL,
    dry_run     boolean NOT NULL,
    run_by      text NOT NULL DEFAULT current_user,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);

CREATE INDEX tenant_exec_runs_sha256_idx ON public.tenant_exec_runs (sha256);

-- One row per tenant per run. `done` is written in the tenant's own transaction, so it is
-- there exactly when the change was committed; `failed`, `rolled_back` (dry run) and
-- `skipped` are written after the transaction ended.
CREATE TABLE public.tenant_exec_results (
    run_id        bigint NOT NULL REFERENCES public.tenant_exec_runs (id) ON DELETE CASCADE,
    slug          text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('done', 'rolled_back', 'failed', 'skipped')),
    rows_affected bigint,
    error         text,
    finished_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (run_id, slug)
);

CREATE INDEX tenant_exec_results_slug_idx ON public.tenant_exec_results (slug);
