-- tenantctl registry, version 4: what lets `migrate` send a tenant's whole transaction in
-- one round trip.
--
-- A tenant whose registry row says it is at version V with the fingerprint of the files up
-- to V is migrated without reading its history table first: its history is those files.
-- This function opens such a tenant's transaction: it takes the tenant's advisory lock,
-- re-checks that belief under it, and fails the transaction (SQLSTATE TC001) when another
-- process moved the tenant in the meantime, it is being dropped, or its schema is gone;
-- tenantctl then reads the history and decides again. Last, it points the transaction's
-- search_path at the tenant schema (given already quoted). One statement instead of three,
-- and its queries are planned before the search_path changes, so their cached plans stay
-- valid from one tenant to the next.
CREATE FUNCTION public.tenantctl_enter(p_lock_class integer, p_slug text, p_schema text,
                                       p_version bigint, p_digest text, p_search_path text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(p_lock_class, pg_catalog.hashtext(p_schema));
    PERFORM 1 FROM public.tenants
      WHERE slug = p_slug AND version = p_version AND migrations_digest = p_digest
        AND state <> 'dropping';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % changed since this run read the registry', p_slug
            USING ERRCODE = 'TC001';
    END IF;
    PERFORM 1 FROM pg_catalog.pg_namespace WHERE nspname = p_schema;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schema % does not exist', p_schema USING ERRCODE = 'TC001';
    END IF;
    PERFORM pg_catalog.set_config('search_path', p_search_path, true);
END
$$;
REVOKE ALL ON FUNCTION public.tenantctl_enter(integer, text, text, bigint, text, text) FROM PUBLIC;

-- Every run updates each migrated tenant's row twice (marked `migrating`, then recorded).
-- Free room on each page keeps those updates HOT (no new index entries) instead of letting
-- every other one move the row to a new page and update all three indexes.
ALTER TABLE public.tenants SET (fillfactor = 50);
