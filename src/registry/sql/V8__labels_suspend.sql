-- tenantctl registry, version 8: labels on tenants (for selectors and rollout rings), and
-- suspension (the application's access taken away, the data left alone).
--
-- Labels are one jsonb object of string values: a selector is one query over it, and the
-- GIN index serves its equality tests (@>) at any fleet size. Keys and values are validated
-- by tenantctl (Kubernetes' rules, domain/selector.rs); the CHECK keeps the shape.
ALTER TABLE public.tenants
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (pg_catalog.jsonb_typeof(labels) = 'object');
CREATE INDEX tenants_labels_idx ON public.tenants USING gin (labels jsonb_path_ops);

-- `suspended`: registered and kept current by migrate, but not served.
ALTER TABLE public.tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE public.tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'migrating', 'failed', 'dropping', 'suspended'));

-- One row per suspension: who, when, why, and the schema privileges it revoked (so resume
-- grants back exactly those); resumed_at is set when it ends. At most one open per tenant.
CREATE TABLE public.tenant_suspensions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text NOT NULL,
    reason        text,
    -- [{"grantee": role, "privilege": "USAGE"|"CREATE", "grantable": bool}, ...]
    revoked       jsonb NOT NULL,
    suspended_at  timestamptz NOT NULL DEFAULT now(),
    suspended_by  text NOT NULL DEFAULT current_user,
    resumed_at    timestamptz,
    resumed_by    text
);
CREATE UNIQUE INDEX tenant_suspensions_open_idx ON public.tenant_suspensions (slug)
    WHERE resumed_at IS NULL;
