-- tenantctl registry, version 10: `tenantctl move` records every move of a tenant
-- (docs/placements.md): who moved it, when, from where to where, how many rows were
-- copied, how long the application's writes were stopped and how long the move took.
-- The row is written in the transaction that switches the tenant's placement, so it is
-- there exactly when the move happened.
CREATE TABLE public.tenant_moves (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug              text NOT NULL,
    schema_name       text NOT NULL,
    moved_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    moved_by          text NOT NULL DEFAULT session_user,
    from_server       text NOT NULL,
    from_database     text NOT NULL,
    to_server         text NOT NULL,
    to_database       text NOT NULL,
    tables            integer NOT NULL,
    rows              bigint NOT NULL,
    writes_stopped_ms bigint NOT NULL,
    duration_ms       bigint NOT NULL
);

CREATE INDEX tenant_moves_slug_idx ON public.tenant_moves (slug);
