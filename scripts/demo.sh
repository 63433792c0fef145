#!/usr/bin/env bash
# The demo: install the registry, create a few tenants with tenants.example.toml, list them,
# show status, then ship one more migration (bench/migrations-extra) to the whole fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TENANTCTL_BIN:-target/release/tenantctl}
export TENANTCTL_CONFIG=tenants.example.toml
run() { printf '\n$ tenantctl %s\n' "$*"; "$bin" "$@"; }

# The example config grants to an application role; create it when it is missing.
psql "$DATABASE_URL" -qAt -v ON_ERROR_STOP=1 -c \
  "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellness_app') THEN CREATE ROLE wellness_app LOGIN; END IF; END \$\$" >/dev/null

run init
run create acme st-marys-clinic northwind_health --if-not-exists
run list
run status

next=$(mktemp -d)
trap 'rm -rf "$next"' EXIT
cp migrations/*.sql bench/migrations-extra/*.sql "$next"/
run migrate --migrations "$next"
run status --migrations "$next" --check
run migrate --migrations "$next"
