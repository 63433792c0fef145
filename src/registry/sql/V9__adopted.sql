-- tenantctl registry, version 9: tenants taken over by `tenantctl adopt`.
--
-- An adopted schema's migrations were run by another tool, or by nobody: with --baseline V
-- tenantctl writes the history rows of V1..V itself. The status table records each of those
-- migrations once, as 'adopted' (read from the schema's own history, run by someone else)
-- or 'baselined' (declared by the operator, never run): never as 'applied', which would
-- claim tenantctl ran it.
ALTER TABLE public.tenant_migrations DROP CONSTRAINT tenant_migrations_outcome_check;
ALTER TABLE public.tenant_migrations ADD CONSTRAINT tenant_migrations_outcome_check
    CHECK (outcome IN ('applied', 'failed', 'adopted', 'baselined'));
