-- tenantctl registry, version 3: `drop --archive` records the archive it wrote before
-- destroying the tenant, so the record of destruction says where the last copy went.
ALTER TABLE public.tenant_drops ADD COLUMN archive_file text;
ALTER TABLE public.tenant_drops ADD COLUMN archive_sha256 text;
