-- tenantctl registry, version 2: the per-tenant role (when [tenants] per_tenant_roles is on),
-- so drop and verify use the role that was actually created, whatever the config says now.
ALTER TABLE public.tenants ADD COLUMN role_name text;
ALTER TABLE public.tenant_drops ADD COLUMN role_name text;
