#!/usr/bin/env bash
# bench/structure-scale.sh: fills a fleet with plain SQL (no tenantctl create) and times
# `verify --structure` and `adopt` over it. Run under a throwaway server:
#   cargo build --release && scripts/with-postgres.sh w-adopt bench/structure-scale.sh 1000 10000
# Each size N adds tenants up to N (schema built by the example migrations' SQL, refinery
# history and registry row copied from a seed tenant made by tenantctl), then prints
# wall time and peak memory of tenantctl for each command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=$root/target/release/tenantctl
export TENANTCTL_MIGRATIONS=$root/migrations
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
$B create seed >/dev/null
digest=$(psql -Atc "SELECT migrations_digest FROM public.tenants WHERE slug = 'seed'")
body=$(cat "$root"/migrations/V*.sql)
have=1
timed() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e s wall, %M KiB peak RSS" -o /tmp/w-adopt-time "$@" >/tmp/w-adopt-out 2>&1 || true
  printf '%-40s %s | %s\n' "$label" "$(cat /tmp/w-adopt-time | tail -1)" "$(tail -1 /tmp/w-adopt-out)"
}
for n in "$@"; do
  start=$(date +%s)
  for ((i = have; i < n; i += 100)); do
    {
      for ((j = i; j < i + 100 && j < n; j++)); do
        s="tenant_f$j"
        echo "CREATE SCHEMA $s; SET search_path = $s, pg_temp;"
        echo "$body"
        echo ";RESET search_path;"
        echo "CREATE TABLE $s.refinery_schema_history AS SELECT * FROM tenant_seed.refinery_schema_history;"
        echo "ALTER TABLE $s.refinery_schema_history ADD PRIMARY KEY (version);"
        echo "INSERT INTO public.tenants (slug, schema_name, state, version, migrations_digest) VALUES ('f$j', '$s', 'active', 7, '$digest');"
      done
    } | psql >/dev/null
  done
  have=$n
  echo "== $n tenants (filled in $(( $(date +%s) - start )) s; $(psql -Atc "SELECT count(*) FROM pg_class") rows in pg_class)"
  timed "verify" $B verify
  timed "verify --structure" $B verify --structure
  psql -c "CREATE INDEX incident ON tenant_f7.employees (hired_on); ALTER TABLE tenant_f8.employees DROP COLUMN hired_on"
  timed "verify --structure (2 drifted)" $B verify --structure
  psql -c "DROP INDEX tenant_f7.incident; ALTER TABLE tenant_f8.employees ADD COLUMN hired_on date"
  # The same fleet unregistered: what adopt sees when switching.
  psql -c "CREATE TABLE public.saved AS SELECT * FROM public.tenants WHERE slug <> 'seed'; DELETE FROM public.tenants WHERE slug <> 'seed'"
  timed "adopt --all --dry-run" $B adopt --all --dry-run
  timed "adopt --all" $B adopt --all
  timed "adopt --all (again: no-op)" $B adopt --all
  timed "migrate (no-op)" $B migrate
  psql -c "DROP TABLE public.saved"
done
