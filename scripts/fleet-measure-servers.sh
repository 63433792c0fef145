#!/bin/bash
# status and a no-op migrate over N tenants (default 10,000), all current, registry rows and
# empty schemas made by SQL: with SERVERS=2 (the default) every other tenant is placed on
# [servers.eu], a database on the second server; with SERVERS=1 all are at home. Prints each
# command's time and peak RSS, and how many statements naming public.tenants it sent to home
# (log_statement = all on the measured database). docs/performance.md has the numbers.
#   cargo build --release && scripts/with-postgres.sh measure scripts/fleet-measure-servers.sh
#   SERVERS=1 scripts/with-postgres.sh measure scripts/fleet-measure-servers.sh
set -euo pipefail
B=$PWD/target/release/tenantctl
REPO=$PWD
N=${N:-10000}
db=fleet_$N
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -q "$TENANTCTL_TEST_SECOND_URL" -c "DROP DATABASE IF EXISTS far_$N" -c "CREATE DATABASE far_$N"
URL=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p._replace(path='/$db').geturl())" "$DATABASE_URL")
FAR=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p._replace(path='/far_$N').geturl())" "$TENANTCTL_TEST_SECOND_URL")
FAR_NOPW=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p._replace(netloc=p.netloc.replace(':'+p.password+'@','@')).geturl())" "$FAR")
export FAR_PW=$(python3 -c "import sys,urllib.parse as u; print(u.urlsplit(sys.argv[1]).password)" "$FAR")
cd "$(mktemp -d)"
cp -r "$REPO/migrations" .
export DATABASE_URL=$URL
SERVERS=${SERVERS:-2}
if [ "$SERVERS" -gt 1 ]; then
  printf '[servers.eu]\nurl = "%s"\npassword_env = "FAR_PW"\n' "$FAR_NOPW" > tenants.toml
fi
$B create seed0 >/dev/null
psql -q "$URL" <<SQL
INSERT INTO public.tenants (slug, schema_name, state, version, migrations_digest, server_name, database_name)
SELECT 'f' || i, 'tenant_f' || i, 'active', 7,
       (SELECT migrations_digest FROM public.tenants WHERE slug = 'seed0'),
       CASE WHEN $SERVERS > 1 AND i % 2 = 0 THEN 'eu' ELSE 'home' END,
       CASE WHEN $SERVERS > 1 AND i % 2 = 0 THEN 'far_$N' ELSE current_database() END
  FROM generate_series(1, $N) i;
SQL
for ((s = 1; s <= N; s += 500)); do
  e=$((s + 499 < N ? s + 499 : N))
  psql -q "$URL" -c "DO \$\$ BEGIN FOR i IN $s..$e LOOP IF $SERVERS = 1 OR i % 2 = 1 THEN EXECUTE format('CREATE SCHEMA %I', 'tenant_f' || i); END IF; END LOOP; END \$\$"
  psql -q "$FAR" -c "DO \$\$ BEGIN FOR i IN $s..$e LOOP IF $SERVERS > 1 AND i % 2 = 0 THEN EXECUTE format('CREATE SCHEMA %I', 'tenant_f' || i); END IF; END LOOP; END \$\$"
done
log=$(dirname "$TENANTCTL_TEST_PG_DATA")/server.log
psql -q "$URL" -c "ALTER DATABASE $db SET log_statement = 'all'"
m() {
  local before
  before=$(wc -l <"$log")
  /usr/bin/time -f "%e s elapsed, %M KiB max RSS" "$B" "$@" >/dev/null 2>time.err || true
  local q
  q=$(tail -n +$((before + 1)) "$log" | grep -c "public.tenants" || true)
  echo "$N tenants, $SERVERS server(s): tenantctl $*: $(tail -1 time.err); home statements naming public.tenants: $q"
}
m status --format json
m status
m migrate
"$B" migrate | tail -1
