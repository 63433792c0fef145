-- tenantctl registry, version 5: tenantctl_enter resolves names in pg_catalog only.
--
-- Version 4's function ran with the caller's search_path. Its calls were qualified, but its
-- operators (=, <>) were looked up through that path, and where other roles may create
-- objects in `public` (PostgreSQL 14 and older, or databases upgraded from them) a better
-- matching operator or function planted there would run with the owner's rights. A
-- function pins its search_path with a SET clause; but that clause also undoes, on exit,
-- the transaction-local search_path the function used to set for the tenant. So the
-- tenant's search_path is now set by the calling statement, beside the call
-- (`registry::enter_unchanged`), and the function only locks and checks.
DROP FUNCTION public.tenantctl_enter(integer, text, text, bigint, text, text);

CREATE FUNCTION public.tenantctl_enter(p_lock_class integer, p_slug text, p_schema text,
                                       p_version bigint, p_digest text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(p_lock_class, pg_catalog.hashtext(p_schema));
    PERFORM 1 FROM public.tenants t
      WHERE t.slug = p_slug AND t.version = p_version AND t.migrations_digest = p_digest
        AND t.state <> 'dropping';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % changed since this run read the registry', p_slug
            USING ERRCODE = 'TC001';
    END IF;
    PERFORM 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = p_schema;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schema % does not exist', p_schema USING ERRCODE = 'TC001';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION public.tenantctl_enter(integer, text, text, bigint, text) FROM PUBLIC;
