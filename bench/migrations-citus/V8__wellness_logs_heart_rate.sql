-- V8 for the Citus lines of make bench: bench/migrations-extra's V8 with its CHECK constraint
-- added in a statement of its own and named. Citus refuses ADD COLUMN with an inline
-- constraint on a distributed table ("all constraints in Citus must have explicit names"),
-- so both sides of the Citus comparison (Citus and plain PostgreSQL) run this one.
ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;

ALTER TABLE wellness_logs ADD CONSTRAINT wellness_logs_resting_heart_rate_check
    CHECK (resting_heart_rate BETWEEN 20 AND 250);

CREATE INDEX wellness_logs_heart_rate_idx ON wellness_logs (resting_heart_rate);
