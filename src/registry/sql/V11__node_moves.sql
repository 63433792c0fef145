-- tenantctl registry, version 11: `tenantctl move SLUG --node HOST:PORT` moves a tenant
-- between the worker nodes of a Citus coordinator (docs/citus.md). Its server and database
-- stay the same, so the record says which nodes (host:port) and in which mode
-- citus_schema_move ran; NULL for moves between servers (--to).
ALTER TABLE public.tenant_moves
    ADD COLUMN from_node text,
    ADD COLUMN to_node text,
    ADD COLUMN transfer_mode text;
