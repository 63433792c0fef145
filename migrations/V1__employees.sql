-- V1: departments and employees, the root of every tenant's data.
-- Emails are unique case-insensitively (no citext: a unique index on lower(email)).
CREATE TABLE departments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    cost_center text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT departments_name_not_blank CHECK (btrim(name) <> '')
);

CREATE UNIQUE INDEX departments_name_lower_key ON departments (lower(name));

CREATE TABLE employees (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_ref  text UNIQUE,
    email         text NOT NULL,
    full_name     text NOT NULL,
    department_id bigint REFERENCES departments (id) ON DELETE SET NULL,
    hired_on      date,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT employees_email_format CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT employees_full_name_not_blank CHECK (btrim(full_name) <> '')
);

CREATE UNIQUE INDEX employees_email_lower_key ON employees (lower(email));
CREATE INDEX employees_department_id_idx ON employees (department_id);
