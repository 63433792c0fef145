-- V6: wellness programs (challenges, coaching tracks) and employee enrollments in them.
CREATE TABLE programs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    description text,
    starts_on   date,
    ends_on     date,
    capacity    integer CHECK (capacity > 0),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT programs_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT programs_dates_ordered CHECK (ends_on IS NULL OR starts_on IS NULL OR ends_on >= starts_on)
);

CREATE UNIQUE INDEX programs_name_lower_key ON programs (lower(name));

CREATE TABLE program_enrollments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   bigint NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    employee_id  bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
    enrolled_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT program_enrollments_once UNIQUE (program_id, employee_id),
    CONSTRAINT program_enrollments_completed_after_enrolled
        CHECK (completed_at IS NULL OR completed_at >= enrolled_at)
);

CREATE INDEX program_enrollments_employee_id_idx ON program_enrollments (employee_id);
