-- V8 (benchmark's "one new migration"): optional resting heart rate on daily wellness logs,
-- indexed for range queries.
ALTER TABLE wellness_logs
    ADD COLUMN resting_heart_rate smallint CHECK (resting_heart_rate BETWEEN 20 AND 250);

CREATE INDEX wellness_logs_heart_rate_idx ON wellness_logs (resting_heart_rate);
