-- tenantctl registry, version 6: where each tenant lives (docs/placements.md).
--
-- `server_name` names a server of tenants.toml (`home` is the server holding this
-- registry); `database_name` the database on it holding the tenant's schema. Existing
-- tenants, and every tenant a row is written for without them (restore), live here: on
-- `home`, in this database. The application routes with one read of this table
-- (slug -> server, database, schema); see docs/application-routing.md.
ALTER TABLE public.tenants
    ADD COLUMN server_name text NOT NULL DEFAULT 'home'
        CHECK (server_name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    ADD COLUMN database_name text NOT NULL DEFAULT pg_catalog.current_database()
        CHECK (octet_length(database_name) BETWEEN 1 AND 63);
