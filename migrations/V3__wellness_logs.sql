-- V3: wellness_logs, one self-reported or device-synced summary per employee per day.
-- Rows go with the employee (ON DELETE CASCADE) so erasure requests remove them.
CREATE TABLE wellness_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    employee_id   bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
    logged_on     date NOT NULL,
    steps         integer CHECK (steps >= 0),
    sleep_minutes integer CHECK (sleep_minutes BETWEEN 0 AND 1440),
    water_ml      integer CHECK (water_ml BETWEEN 0 AND 20000),
    notes         text CHECK (char_length(notes) <= 2000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wellness_logs_employee_day_key UNIQUE (employee_id, logged_on)
);

-- Tenant-wide daily aggregates scan by date.
CREATE INDEX wellness_logs_logged_on_idx ON wellness_logs (logged_on);
