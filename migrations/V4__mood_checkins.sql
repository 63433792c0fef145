-- V4: mood_checkins, short mood/energy check-ins (1-5 scales) with an optional comment.
-- Read mostly as "latest check-ins of one employee", hence the descending index.
CREATE TABLE mood_checkins (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    employee_id   bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
    checked_in_at timestamptz NOT NULL DEFAULT now(),
    mood          smallint NOT NULL CHECK (mood BETWEEN 1 AND 5),
    energy        smallint CHECK (energy BETWEEN 1 AND 5),
    comment       text CHECK (char_length(comment) <= 1000)
);

CREATE INDEX mood_checkins_employee_time_idx
    ON mood_checkins (employee_id, checked_in_at DESC);
