-- V5: audit_log plus a row-change trigger on employees and consents (who changed what).
-- Only column names are logged for updates, never values, to keep health data out of the log.
-- The function pins the tenant schema with SET search_path FROM CURRENT (captured while
-- this migration runs), so it writes to this tenant's audit_log whatever the caller's search_path.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    entity      text,
    entity_id   bigint,
    detail      jsonb
);

CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id, occurred_at DESC);
CREATE INDEX audit_log_occurred_at_idx ON audit_log (occurred_at);

CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
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

    INSERT INTO audit_log (actor, action, entity, entity_id, detail)
    VALUES (
        coalesce(nullif(current_setting('app.actor', true), ''), session_user::text),
        lower(TG_OP),
        TG_TABLE_NAME,
        (coalesce(new_row, old_row) ->> 'id')::bigint,
        jsonb_strip_nulls(jsonb_build_object('changed_columns', changed))
    );

    RETURN NULL;  -- AFTER trigger: return value is ignored
END;
$$;

CREATE TRIGGER employees_audit
    AFTER INSERT OR UPDATE OR DELETE ON employees
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

CREATE TRIGGER consents_audit
    AFTER INSERT OR UPDATE OR DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
