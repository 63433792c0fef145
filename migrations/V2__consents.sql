-- V2: consents, the legal basis for processing an employee's health data.
-- One row per grant; revoking sets revoked_at. At most one active consent per purpose.
CREATE TABLE consents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    employee_id bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
    purpose     text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT consents_purpose_known
        CHECK (purpose IN ('wellness_tracking', 'mood_checkins', 'research_aggregate')),
    CONSTRAINT consents_revoked_after_granted
        CHECK (revoked_at IS NULL OR revoked_at >= granted_at)
);

CREATE INDEX consents_employee_id_idx ON consents (employee_id);

CREATE UNIQUE INDEX consents_one_active_per_purpose
    ON consents (employee_id, purpose)
    WHERE revoked_at IS NULL;
