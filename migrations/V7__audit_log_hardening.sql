-- V7: the audit trail from V5, made safe. (V5 is applied history and stays as it was:
-- editing an applied migration would change its checksum.)
--
-- 1. V5's function pinned `SET search_path FROM CURRENT`, which captured the tenant schema
--    alone. With pg_temp not listed, PostgreSQL searches the session's temporary schema
--    first, so an application session that created a temporary table named audit_log
--    silently received the audit rows instead of the tenant's table. The function now
--    resolves every name in pg_catalog only (pg_temp last, where it never shadows a
--    function or operator) and names its table through the schema of the table that fired
--    the trigger: no search_path of any caller decides where the rows go, and a tenant
--    restored under another schema name needs no re-pinning.
CREATE OR REPLACE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_row jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    old_row jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
    changed jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_agg(n.key ORDER BY n.key), '[]'::jsonb)
          INTO changed
          FROM jsonb_each(new_row) AS n
         WHERE n.value IS DISTINCT FROM (old_row -> n.key);
    END IF;

    EXECUTE format(
        'INSERT INTO %I.audit_log (actor, action, entity, entity_id, detail) VALUES ($1, $2, $3, $4, $5)',
        TG_TABLE_SCHEMA)
    USING
        coalesce(nullif(current_setting('app.actor', true), ''), session_user::text),
        lower(TG_OP),
        TG_TABLE_NAME::text,
        (coalesce(new_row, old_row) ->> 'id')::bigint,
        jsonb_strip_nulls(jsonb_build_object('changed_columns', changed));

    RETURN NULL;  -- AFTER trigger: return value is ignored
END;
$$;

-- 2. The data role (tenantctl's app_role, or the tenant's own role) got SELECT, INSERT,
--    UPDATE and DELETE on audit_log like on every table, so the application could read the
--    trail and erase or rewrite it. The trigger runs as the writing role and needs INSERT
--    only. A migration does not know the role's name, so every role but the owner that
--    holds privileges on audit_log keeps INSERT and loses the rest. (`tenantctl grant` only
--    fills in tables a role holds nothing on, so it does not undo this.)
DO $$
DECLARE
    holder oid;
BEGIN
    FOR holder IN
        SELECT DISTINCT a.grantee
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) AS a
         WHERE c.oid = 'audit_log'::regclass AND a.grantee <> c.relowner
    LOOP
        IF holder = 0 THEN  -- PUBLIC
            EXECUTE 'REVOKE ALL ON audit_log FROM PUBLIC';
        ELSE
            EXECUTE pg_catalog.format('REVOKE ALL ON audit_log FROM %I', pg_catalog.pg_get_userbyid(holder));
            EXECUTE pg_catalog.format('GRANT INSERT ON audit_log TO %I', pg_catalog.pg_get_userbyid(holder));
        END IF;
    END LOOP;
END
$$;

-- 3. Privileges can be handed back later: a restore re-applies the data privileges to
--    every table of the tenant, and so does `tenantctl grant` for a tenant created before
--    app_role was set (its audit_log had no grant to narrow here). Row-level security keeps
--    the trail append-only for every role but the owner whatever the privileges say: the
--    only policy admits new rows, so other roles see no rows to select, update or delete.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_append_only ON audit_log FOR INSERT WITH CHECK (true);
