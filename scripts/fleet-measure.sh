#!/bin/bash
# Fleet-view measurements (docs/rollout-and-operations.md): a registry of N tenants filled
# by SQL (a schema with one small table each), then /usr/bin/time -v figures for the
# release binary. Run against a throwaway server:
#   cargo build --release && N=10000 scripts/with-postgres.sh measure scripts/fleet-measure.sh
#   N=100000 TABLES=0 scripts/with-postgres.sh measure scripts/fleet-measure.sh
# BINS="old/tenantctl new/tenantctl" measures each binary in turn on the same fleet.
set -euo pipefail
BINS=${BINS:-$PWD/target/release/tenantctl}
B=${BINS%% *}
N=${N:-10000}
db=fleet_$N
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
URL=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p._replace(path='/$db').geturl())" "$DATABASE_URL")
cd "$(mktemp -d)"
cp -r "$OLDPWD/migrations" .
export DATABASE_URL=$URL
$B create seed0 >/dev/null
psql -q "$URL" <<SQL
INSERT INTO public.tenants (slug, schema_name, state, version, migrations_digest, labels)
SELECT 'f' || i, 'tenant_f' || i,
       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'active' END,
       CASE WHEN i % 10 = 0 THEN 6 ELSE 7 END,
       (SELECT migrations_digest FROM public.tenants WHERE slug = 'seed0'),
       CASE WHEN i % 2 = 0 THEN '{"ring":"beta"}'::jsonb ELSE '{}'::jsonb END
  FROM generate_series(1, $N) i;
UPDATE public.tenants SET last_error = 'relation "x" already exists' WHERE state = 'failed';
SQL
for ((s = 1; s <= N; s += 500)); do
  e=$((s + 499 < N ? s + 499 : N))
  # TABLES=0: schemas only (enough for status, list and migrate; usage then sees 0 bytes).
  if [ "${TABLES:-1}" = 1 ]; then ddl="CREATE SCHEMA %I; CREATE TABLE %I.t (id int primary key, v text)"; else ddl="CREATE SCHEMA %I"; fi
  psql -q "$URL" -c "DO \$\$ BEGIN FOR i IN $s..$e LOOP EXECUTE format('$ddl', 'tenant_f' || i, 'tenant_f' || i); END LOOP; END \$\$"
done
m() {
  /usr/bin/time -f "$N tenants: %e s elapsed, %M KiB max RSS: tenantctl $*" "$B" "$@" \
    >/dev/null 2>"$PWD/time.err" || true
  tail -1 "$PWD/time.err"
}
fill_state() {
  psql -q "$URL" <<SQL
UPDATE public.tenants SET state = CASE WHEN slug LIKE 'f%' AND substr(slug, 2)::int % 100 = 0 THEN 'failed' ELSE 'active' END,
       version = CASE WHEN slug LIKE 'f%' AND substr(slug, 2)::int % 10 = 0 THEN 6 ELSE 7 END,
       last_error = CASE WHEN slug LIKE 'f%' AND substr(slug, 2)::int % 100 = 0 THEN 'relation "x" already exists' END;
SQL
}
for B in $BINS; do
  echo "== $B"
  fill_state
  "$B" status | tail -1
  "$B" status --all | wc -l
  m status
  m status --all
  m status -l ring=beta
  m list
  m list --format json
  m usage --top 10
  m status --format json
  # Every tenant current, so that migrate has nothing to do.
  psql -q "$URL" -c "UPDATE public.tenants SET state = 'active', version = 7, last_error = NULL"
  m migrate
  m migrate --format json
  m status --format json
  "$B" migrate | tail -1
done
