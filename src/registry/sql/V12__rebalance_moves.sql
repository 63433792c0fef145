-- tenantctl registry, version 12: `tenantctl rebalance` records each tenant Citus's
-- rebalancer moved between worker nodes in public.tenant_moves, as `move --node` does
-- (docs/citus.md); this column says which rebalance job (Citus's job id) made the move,
-- NULL for moves made by `tenantctl move`.
ALTER TABLE public.tenant_moves ADD COLUMN rebalance_job bigint;
