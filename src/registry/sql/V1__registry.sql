-- tenantctl registry, version 1: the tenant list, the per-attempt migration status table,
-- and the record left by each drop. Installed by `tenantctl init` (or implicitly).
CREATE TABLE public.tenants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
    schema_name   text NOT NULL UNIQUE CHECK (octet_length(schema_name) BETWEEN 1 AND 63),
    display_name  text,
    state         text NOT NULL DEFAULT 'provisioning'
                  CHECK (state IN ('provisioning', 'active', 'migrating', 'failed', 'dropping')),
    version       bigint NOT NULL DEFAULT 0,
    -- fingerprint of the applied migration files up to `version`: lets a no-op migrate
    -- skip a tenant without visiting its schema
    migrations_digest text,
    last_error    text,
    migrated_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.tenant_migrations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug         text NOT NULL,
    version      bigint NOT NULL,
    name         text NOT NULL,
    checksum     text,
    outcome      text NOT NULL CHECK (outcome IN ('applied', 'failed')),
    error        text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    db_role      text NOT NULL DEFAULT current_user
);
CREATE INDEX tenant_migrations_slug_idx ON public.tenant_migrations (slug, version);

CREATE TABLE public.tenant_drops (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text NOT NULL,
    schema_name   text NOT NULL,
    display_name  text,
    version       bigint,
    schema_existed boolean NOT NULL,
    dropped_at    timestamptz NOT NULL DEFAULT now(),
    dropped_by    text NOT NULL DEFAULT current_user,
    session_role  text NOT NULL DEFAULT session_user,
    client_addr   inet DEFAULT inet_client_addr()
);
CREATE INDEX tenant_drops_slug_idx ON public.tenant_drops (slug);
