#!/usr/bin/env bash
# bench.sh: tenantctl create / migrate / status over N tenants, against a raw-SQL floor.
#
# Usage (normally through make, which builds the release binary and starts a throwaway
# PostgreSQL server first):
#   make bench                          # N = 100 and 1000
#   make bench BENCH_N=10000            # any list of N, e.g. BENCH_N="100 1000 10000"
#   BENCH_CONCURRENCY=8 make bench      # parallel sessions, for tenantctl and the floor
#   BENCH_ROUNDS=3 make bench           # each time is the fastest of 3 rounds, each round
#                                       # from fresh databases (for a machine doing other work)
# Directly, against a server you own (it creates and drops databases bench_tool_<N> and
# bench_floor_<N>, so DATABASE_URL's role needs CREATEDB):
#   DATABASE_URL=postgres://user:pw@host/postgres BENCH_N=100 scripts/bench.sh
#
# For each N and round, each side (tenantctl, then the floor; the floor first in even
# rounds) runs these steps in a fresh database of its own, dropped before the other side
# starts, so that both start from the same server state:
#   create           tenantctl create --concurrency C t00001 ... (migrations/ = V1..V7)
#                    floor: C psql sessions, one transaction per tenant:
#                    BEGIN; CREATE SCHEMA; SET LOCAL search_path; V1..V7; COMMIT;
#   migrate          tenantctl migrate with migrations/ + bench/migrations-extra/ (V8)
#                    floor: the same, BEGIN; SET LOCAL search_path; V8; COMMIT; per tenant
#   migrate (no-op)  tenantctl migrate again (nothing to do; no floor)
#   status           tenantctl status --format json; floor: one SELECT of the schema names
#   migrate, 2 servers vs 1   (when TENANTCTL_TEST_SECOND_URL names a second server, as
#                    scripts/with-postgres.sh exports it) tenantctl migrate (V8) of N tenants,
#                    N/2 at home and N/2 on the second server ([servers.eu]), against the
#                    same N tenants all at home: the "floor s" column of this line is that
#                    one-server run, the ratio split/one (below 1: the split is faster)
# The floor is "the same DDL with nothing else in the way": no registry, no history, no
# locks. Its SQL files are written before its timer starts. Each run is checked afterwards
# (exit code, registry versions, the DDL really present in every schema) and a failed check
# prints FAIL and exits 1, so no number is reported for work that did not happen.
#
# Prints one table (also written to bench/last-run.txt): wall-clock seconds for tenantctl
# and the floor, their ratio, tenantctl's tenants per second and its peak RSS.
# Then one line for `move` of a tenant holding 100,000 rows to the second server (see
# bench_move: total time, writes stopped, rows per second).
# Then the Citus lines (see bench_citus; make bench starts a coordinator and two workers):
# create and migrate of BENCH_CITUS_N tenants (default 50) on Citus against plain PostgreSQL
# with the ratio, tenants per node after create (one worker), and rebalance onto a second.
# Needs bash, psql, python3 and /usr/bin/time (GNU time). bench/trace-statements.sh
# counts the statements and CPU per tenant behind the numbers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/target/release/tenantctl"
out_file="$root/bench/last-run.txt"

die() { echo "bench: $*" >&2; exit 1; }
fail() { echo "bench: FAIL: $*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin is missing; run make bench (it builds the release binary first)"
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set; run make bench (it starts a throwaway server)"
command -v psql >/dev/null || die "psql not found"
command -v python3 >/dev/null || die "python3 not found"
if [ ! -x /usr/bin/time ] && [ "$(id -u)" -eq 0 ]; then
  echo "bench: /usr/bin/time not found; installing Debian's time package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2 || true
fi
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time, for peak RSS) not found; apt-get install time"

bench_n=${BENCH_N:-100 1000}
conc=${BENCH_CONCURRENCY:-4}
rounds=${BENCH_ROUNDS:-1}
[[ "$conc" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONCURRENCY must be a positive integer, not '$conc'"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, not '$rounds'"
[ -n "${bench_n// /}" ] || die "BENCH_N is empty"
for n in $bench_n; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "BENCH_N must be positive integers, not '$n'"
done

admin_url=$DATABASE_URL
work=$(mktemp -d)
dbs_to_drop=()

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$admin_url" "$@"; }
drop_db() { psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; }
cleanup() {
  local db
  for db in "${dbs_to_drop[@]}"; do drop_db "$db" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The connection string for another database on the same server.
db_url() {
  python3 - "$admin_url" "$1" <<'EOF'
import sys, urllib.parse as u
url, db = sys.argv[1], sys.argv[2]
if "://" in url:
    p = u.urlsplit(url)
    print(u.urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment)))
else:  # key=value form: a later dbname wins
    print(f"{url} dbname={db}")
EOF
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# tenantctl sees only what the benchmark sets: an empty config file (so a tenants.toml in
# the current folder, with its app_role or prefix, does not change the measurement).
: >"$work/tenants.toml"
export TENANTCTL_CONFIG="$work/tenants.toml"
unset TENANTCTL_MIGRATIONS
prefix=tenant_ # tenantctl's default schema_prefix; the floor uses the same schema names

# The migration sets: V1..V7 for create, plus bench/migrations-extra for migrate.
ls migrations/V*.sql >/dev/null 2>&1 || die "no migrations in migrations/"
ls bench/migrations-extra/V*.sql >/dev/null 2>&1 || die "no migrations in bench/migrations-extra/"
mkdir -p "$work/m-create" "$work/m-migrate"
cp migrations/V*.sql "$work/m-create/"
cp migrations/V*.sql bench/migrations-extra/V*.sql "$work/m-migrate/"

checkpoint() { psql_admin -c CHECKPOINT >/dev/null; }

# run_tool URL LABEL ARGS...: times tenantctl; sets tool_s and tool_rss_kib.
run_tool() {
  local url=$1 label=$2 rc=0 t0 t1
  shift 2
  checkpoint
  t0=$(now)
  DATABASE_URL=$url /usr/bin/time -o "$work/rss" -f %M "$bin" "$@" \
    </dev/null >"$work/tool.out" 2>"$work/tool.err" || rc=$?
  t1=$(now)
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$work/tool.err" >&2
    fail "tenantctl $label exited with status $rc; no numbers reported"
  fi
  tool_s=$(elapsed "$t0" "$t1")
  tool_rss_kib=$(tail -n 1 "$work/rss")
}

# run_floor URL FILES...: runs one psql per file in parallel; sets floor_s.
run_floor() {
  local url=$1 f pid rc=0 t0 t1
  shift
  local pids=()
  checkpoint
  t0=$(now)
  for f in "$@"; do
    psql -q -X -v ON_ERROR_STOP=1 "$url" -f "$f" </dev/null >/dev/null 2>"$f.err" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  t1=$(now)
  if [ "$rc" -ne 0 ]; then
    for f in "$@"; do tail -n 5 "$f.err" >&2; done
    fail "a floor psql session exited with status $rc"
  fi
  floor_s=$(elapsed "$t0" "$t1")
}

# gen_floor KIND N: writes $work/floor-KIND-<i>.sql, i = 1..C, tenants round-robin.
gen_floor() {
  python3 - "$1" "$2" "$conc" "$prefix" "$work" "$work/m-create" bench/migrations-extra <<'EOF'
import glob, os, re, sys
kind, n, conc, prefix, work, create_dir, extra_dir = sys.argv[1:]
n, conc = int(n), int(conc)
def migrations(d):
    files = glob.glob(os.path.join(d, "V*.sql"))
    files.sort(key=lambda f: int(re.match(r"V(\d+)__", os.path.basename(f)).group(1)))
    return "".join(open(f).read().rstrip("\n") + "\n" for f in files)
width = max(5, len(str(n)))
body = migrations(create_dir if kind == "create" else extra_dir)
outs = [open(os.path.join(work, f"floor-{kind}-{i + 1}.sql"), "w") for i in range(conc)]
for t in range(n):
    schema = '"' + prefix + "t" + str(t + 1).zfill(width) + '"'
    head = f"CREATE SCHEMA {schema};\n" if kind == "create" else ""
    outs[t % conc].write(f"BEGIN;\n{head}SET LOCAL search_path TO {schema};\n{body}COMMIT;\n")
for o in outs:
    o.close()
EOF
}

count() { psql -X -q -At -v ON_ERROR_STOP=1 "$1" -c "$2"; }
check_eq() { # WHAT GOT WANT
  [ "$2" = "$3" ] || fail "$1: got $2, want $3; the numbers above this line are not valid"
}

declare -A best_tool best_floor peak_rss
# keep KEY tool SECONDS RSS_KIB | keep KEY floor SECONDS: the fastest round, the highest RSS.
keep() {
  local key=$1 side=$2 s=$3
  echo "bench:   ${key%,*} $side: $s s" >&2
  if [ "$side" = tool ]; then
    if [ -z "${best_tool[$key]:-}" ] || awk -v a="$s" -v b="${best_tool[$key]}" 'BEGIN { exit !(a < b) }'; then
      best_tool[$key]=$s
    fi
    if [ -z "${peak_rss[$key]:-}" ] || [ "$4" -gt "${peak_rss[$key]}" ]; then peak_rss[$key]=$4; fi
  elif [ -z "${best_floor[$key]:-}" ] || awk -v a="$s" -v b="${best_floor[$key]}" 'BEGIN { exit !(a < b) }'; then
    best_floor[$key]=$s
  fi
}
# tenantctl runs fewer tenants at once when the server lacks connections; say so, since
# the floor would then have had more sessions than tenantctl.
: >"$work/notes"
check_concurrency() {
  local why
  why=$(grep -m 1 "at a time instead of" "$work/tool.err" || true)
  [ -z "$why" ] || echo "warning: N=$1 $2: ${why#note: }" >>"$work/notes"
}

# The timed steps of one round; they use n, r, slugs, tool_url, floor_url and the checks.
tool_create() {
  echo "bench: $r create: tenantctl" >&2
  run_tool "$tool_url" create --format json --migrations "$work/m-create" \
    create --concurrency "$conc" "${slugs[@]}"
  check_concurrency "$n" create
  check_eq "tenantctl create: active tenants at version 7" "$(count "$tool_url" "$at_version 7")" "$n"
  check_eq "tenantctl create: tenant schemas" "$(count "$tool_url" "$schemas")" "$n"
  keep "create,$n" tool "$tool_s" "$tool_rss_kib"
}
floor_create() {
  echo "bench: $r create: floor" >&2
  run_floor "$floor_url" "${floor_create[@]}"
  check_eq "floor create: tenant schemas" "$(count "$floor_url" "$schemas")" "$n"
  keep "create,$n" floor "$floor_s"
}
tool_migrate() {
  echo "bench: $r migrate: tenantctl" >&2
  run_tool "$tool_url" migrate --format json --migrations "$work/m-migrate" \
    migrate --concurrency "$conc"
  check_concurrency "$n" migrate
  check_eq "tenantctl migrate: active tenants at version 8" "$(count "$tool_url" "$at_version 8")" "$n"
  check_eq "tenantctl migrate: tenants with the V8 column" "$(count "$tool_url" "$v8_column")" "$n"
  keep "migrate,$n" tool "$tool_s" "$tool_rss_kib"
}
floor_migrate() {
  echo "bench: $r migrate: floor" >&2
  run_floor "$floor_url" "${floor_migrate[@]}"
  check_eq "floor migrate: tenants with the V8 column" "$(count "$floor_url" "$v8_column")" "$n"
  keep "migrate,$n" floor "$floor_s"
}

tool_after() {
  echo "bench: $r migrate (no-op): tenantctl" >&2
  run_tool "$tool_url" "migrate (no-op)" --format json --migrations "$work/m-migrate" \
    migrate --concurrency "$conc"
  check_eq "tenantctl migrate (no-op): active tenants at version 8" \
    "$(count "$tool_url" "$at_version 8")" "$n"
  keep "migrate (no-op),$n" tool "$tool_s" "$tool_rss_kib"

  echo "bench: $r status: tenantctl" >&2
  run_tool "$tool_url" status --format json --migrations "$work/m-migrate" status
  python3 - "$work/tool.out" "$n" <<'EOF' || fail "tenantctl status did not list $n tenants active at version 8"
import json, sys
doc = json.load(open(sys.argv[1]))
ok = [t for t in doc["tenants"] if t["version"] == 8 and t["state"] == "active"]
sys.exit(0 if len(ok) == int(sys.argv[2]) else 1)
EOF
  keep "status,$n" tool "$tool_s" "$tool_rss_kib"
}
floor_after() {
  echo "bench: $r status: floor" >&2
  local t0 t1
  checkpoint
  t0=$(now)
  psql -X -q -At "$floor_url" -c "select nspname from pg_namespace where nspname like '${prefix}%'" >/dev/null
  t1=$(now)
  keep "status,$n" floor "$(elapsed "$t0" "$t1")"
}

# migrate of N tenants split over two servers (home and TENANTCTL_TEST_SECOND_URL) against
# the same N on home alone; both sides created untimed, then one timed migrate (V8) each.
# Sets split_s and one_s, and keeps the row "migrate, 2 servers vs 1".
second_url=${TENANTCTL_TEST_SECOND_URL:-}
two_servers() {
  local n=$1 half=$(($1 / 2)) home_db=bench_split_home_$1 far_db=bench_split_far_$1
  local one_db=bench_split_one_$1 home_url far_url one_url far_admin
  home_url=$(db_url "$home_db")
  one_url=$(db_url "$one_db")
  far_admin=$second_url
  far_url=$(admin_url=$far_admin db_url "$far_db")
  far_psql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$far_admin" "$@"; }
  for db in "$home_db" "$one_db"; do drop_db "$db"; psql_admin -c "CREATE DATABASE $db" >/dev/null; done
  far_psql -c "DROP DATABASE IF EXISTS $far_db WITH (FORCE)" -c "CREATE DATABASE $far_db" >/dev/null
  dbs_to_drop=("$home_db" "$one_db")
  # tenants.toml: the second server without its password, which comes from a variable.
  python3 - "$far_url" >"$work/split.toml" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
netloc = p.netloc.split("@")[-1]
user = p.username or "postgres"
print('[servers.eu]')
print(f'url = "{u.urlunsplit((p.scheme, f"{user}@{netloc}", p.path, p.query, p.fragment))}"')
print('password_env = "BENCH_SECOND_PASSWORD"')
PY
  export BENCH_SECOND_PASSWORD
  BENCH_SECOND_PASSWORD=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).password or "")' "$far_url")
  local cfg="$work/split.toml"
  echo "bench: N=$n migrate, 2 servers vs 1: creating (untimed)" >&2
  TENANTCTL_CONFIG=$cfg run_tool "$home_url" "split create (home)" --migrations "$work/m-create" \
    create --concurrency "$conc" "${slugs[@]:0:$half}"
  TENANTCTL_CONFIG=$cfg run_tool "$home_url" "split create (eu)" --migrations "$work/m-create" \
    create --concurrency "$conc" --server eu "${slugs[@]:$half}"
  run_tool "$one_url" "one create" --migrations "$work/m-create" \
    create --concurrency "$conc" "${slugs[@]}"
  echo "bench: N=$n migrate, 2 servers: tenantctl" >&2
  TENANTCTL_CONFIG=$cfg run_tool "$home_url" "migrate (2 servers)" --format json \
    --migrations "$work/m-migrate" migrate --concurrency "$conc"
  local split_s=$tool_s split_rss=$tool_rss_kib
  check_eq "migrate (2 servers): active tenants at version 8" "$(count "$home_url" "$at_version 8")" "$n"
  check_eq "migrate (2 servers): home tenants with the V8 column" "$(count "$home_url" "$v8_column")" "$half"
  check_eq "migrate (2 servers): far tenants with the V8 column" "$(count "$far_url" "$v8_column")" "$((n - half))"
  echo "bench: N=$n migrate, 1 server: tenantctl" >&2
  run_tool "$one_url" "migrate (1 server)" --format json --migrations "$work/m-migrate" \
    migrate --concurrency "$conc"
  check_eq "migrate (1 server): tenants with the V8 column" "$(count "$one_url" "$v8_column")" "$n"
  keep "migrate, 2 servers vs 1,$n" tool "$split_s" "$split_rss"
  keep "migrate, 2 servers vs 1,$n" floor "$tool_s"
  drop_db "$home_db"
  drop_db "$one_db"
  far_psql -c "DROP DATABASE IF EXISTS $far_db WITH (FORCE)" >/dev/null
  dbs_to_drop=()
}

# move: one tenant holding 100,000 rows moved from home to the second server
# (TENANTCTL_TEST_SECOND_URL, which with-postgres.sh exports; skipped without it): the
# wall-clock time of `tenantctl move`, how long the application's writes were stopped (as
# tenantctl reports it and records it in public.tenant_moves), and rows copied per second.
# Checked afterwards: the registry places the tenant on the second server, every row is
# there and its schema is gone from home; a failed check prints FAIL and reports nothing.
bench_move() {
  local second=${TENANTCTL_TEST_SECOND_URL:-} db=bench_move rows=100000 rc=0 t0 t1
  if [ -z "$second" ]; then
    echo "move: skipped (no second server: TENANTCTL_TEST_SECOND_URL is not set)"
    return
  fi
  local home_url second_url second_db_url second_pw cfg="$work/move.toml"
  home_url=$(db_url "$db")
  # The second server's url for tenants.toml (no password: it goes in password_env), the
  # url of its bench database for the checks, and the password.
  read -r second_url second_db_url second_pw < <(python3 - "$second" "$db" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
host = p.netloc.rsplit("@", 1)[-1]
user = u.quote(u.unquote(p.username or "postgres"))
print(u.urlunsplit((p.scheme, f"{user}@{host}", "/" + sys.argv[2], "", "")),
      u.urlunsplit((p.scheme, p.netloc, "/" + sys.argv[2], p.query, "")),
      u.unquote(p.password or "-"))
PY
)
  local second_psql=(env PGOPTIONS="-c client_min_messages=warning"
    psql -X -q -At -v ON_ERROR_STOP=1 "$second")
  "${second_psql[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  "${second_psql[@]}" -c "CREATE DATABASE $db" >/dev/null
  drop_db "$db"
  psql_admin -c "CREATE DATABASE $db" >/dev/null
  dbs_to_drop=("$db")
  printf '[servers.second]\nurl = "%s"\npassword_env = "BENCH_SECOND_PASSWORD"\n' \
    "$second_url" >"$cfg"
  local tc=(env TENANTCTL_CONFIG="$cfg" BENCH_SECOND_PASSWORD="$second_pw"
    DATABASE_URL="$home_url" "$bin" --migrations "$work/m-create")
  "${tc[@]}" create mover >/dev/null 2>"$work/move.err" ||
    { cat "$work/move.err" >&2; fail "tenantctl create of the tenant to move failed"; }
  count "$home_url" "INSERT INTO tenant_mover.departments (name, cost_center) \
    SELECT 'department ' || i, 'cc-' || (i % 97) FROM generate_series(1, $rows) i" >/dev/null
  count "$home_url" "VACUUM ANALYZE tenant_mover.departments" >/dev/null
  checkpoint
  t0=$(now)
  "${tc[@]}" move mover --to second --format json \
    </dev/null >"$work/move.json" 2>"$work/move.err" || rc=$?
  t1=$(now)
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$work/move.err" >&2
    fail "tenantctl move exited with status $rc; no numbers reported"
  fi
  check_eq "move: registry placement" \
    "$(count "$home_url" "select server_name from public.tenants where slug = 'mover'")" second
  check_eq "move: rows on the second server" \
    "$(count "$second_db_url" "select count(*) from tenant_mover.departments")" "$rows"
  check_eq "move: schema left at home" \
    "$(count "$home_url" "select count(*) from pg_namespace where nspname = 'tenant_mover'")" 0
  python3 - "$work/move.json" "$(elapsed "$t0" "$t1")" <<'PY'
import json, sys
m, wall = json.load(open(sys.argv[1])), float(sys.argv[2])
took = max(m["duration_ms"] / 1000, 1e-9)
print(f"move: one tenant, {m['rows']} rows in {m['tables']} tables, home -> second server: "
      f"{wall:.3f} s wall clock ({took:.3f} s inside tenantctl), "
      f"writes stopped {m['writes_stopped_ms'] / 1000:.3f} s, {m['rows'] / took:.0f} rows/s")
PY
  drop_db "$db"
  "${second_psql[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  dbs_to_drop=()
}

# Citus: create and migrate (V8) of BENCH_CITUS_N tenants (default 50) on a Citus
# coordinator (TENANTCTL_TEST_CITUS_URL and TENANTCTL_TEST_CITUS_WORKERS, which
# scripts/with-citus.sh exports; skipped without them) against the same work on plain
# PostgreSQL (DATABASE_URL) in the same run (V8 is bench/migrations-citus's, which Citus can
# run), and the tenants per node: the bench database
# starts with the first worker only, so every tenant is created there; then the second
# worker is added and `tenantctl rebalance` spreads them (timed too). Checked afterwards:
# every tenant active at the version, the V8 column in every schema, every schema
# distributed; a failed check prints FAIL and reports nothing.
bench_citus() {
  local coord=${TENANTCTL_TEST_CITUS_URL:-} ports=${TENANTCTL_TEST_CITUS_WORKERS:-}
  local n=${BENCH_CITUS_N:-50} db=bench_citus plain_db=bench_citus_plain
  if [ -z "$coord" ] || [ -z "$ports" ]; then
    echo "citus: skipped (no Citus cluster: TENANTCTL_TEST_CITUS_URL is not set; make bench starts one)"
    return
  fi
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CITUS_N must be a positive integer, not '$n'"
  local w1 w2 citus_url plain_url node_url url host
  IFS=, read -r w1 w2 <<<"$ports"
  [ -n "$w2" ] || die "TENANTCTL_TEST_CITUS_WORKERS must name two worker ports, not '$ports'"
  citus_url=$(admin_url=$coord db_url "$db")
  plain_url=$(db_url "$plain_db")
  host=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).hostname)' "$coord")
  # The coordinator's url with another port (the workers run beside it, same user).
  node_url() { python3 - "$1" "$2" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
netloc = p.netloc.rsplit(":", 1)[0] + ":" + sys.argv[2]
print(u.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment)))
PY
  }
  cpsql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
  local coord_port
  coord_port=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).port)' "$coord")
  local nodes=("$coord" "$(node_url "$coord" "$w1")" "$(node_url "$coord" "$w2")")
  for url in "${nodes[@]}"; do
    cpsql "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
    cpsql "$(admin_url=$url db_url "$db")" -c "CREATE EXTENSION citus" >/dev/null
  done
  cpsql "$citus_url" -c "SELECT citus_set_coordinator_host('$host', $coord_port)" \
    -c "SELECT citus_add_node('$host', $w1)" >/dev/null
  drop_db "$plain_db"
  psql_admin -c "CREATE DATABASE $plain_db" >/dev/null
  dbs_to_drop=("$plain_db")
  drop_citus_db() {
    for url in "${nodes[@]}"; do
      cpsql "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
  }
  trap 'drop_citus_db; cleanup' EXIT
  local width=$((${#n} > 5 ? ${#n} : 5)) cslugs
  mapfile -t cslugs < <(seq -f "c%0${width}.0f" 1 "$n")
  local per_node="select count(*) from pg_catalog.pg_dist_schema"
  # Tenants per node (host:port N, ...), from tenantctl list's node field.
  tenants_per_node() {
    DATABASE_URL=$citus_url "$bin" list --format json | python3 -c '
import collections, json, sys
c = collections.Counter(t.get("node") or "coordinator (not distributed)" for t in json.load(sys.stdin)["tenants"])
print(", ".join(f"{k} {v}" for k, v in sorted(c.items())))'
  }
  # V8 as Citus can run it (bench/migrations-citus: the CHECK constraint in a statement of
  # its own), on both sides.
  mkdir -p "$work/m-citus-migrate"
  cp migrations/V*.sql bench/migrations-citus/V*.sql "$work/m-citus-migrate/"
  local op citus_s plain_s dir
  for op in create migrate; do
    dir=$work/m-create
    [ "$op" = create ] || dir=$work/m-citus-migrate
    local args=(--format json --migrations "$dir" "$op" --concurrency "$conc")
    [ "$op" = migrate ] || args+=("${cslugs[@]}")
    echo "bench: citus N=$n $op: tenantctl on Citus" >&2
    run_tool "$citus_url" "$op (Citus)" "${args[@]}"
    citus_s=$tool_s
    echo "bench: citus N=$n $op: tenantctl on plain PostgreSQL" >&2
    run_tool "$plain_url" "$op (plain)" "${args[@]}"
    plain_s=$tool_s
    local v=7
    [ "$op" = create ] || v=8
    check_eq "citus $op: active tenants at version $v" "$(count "$citus_url" "$at_version $v")" "$n"
    check_eq "plain $op: active tenants at version $v" "$(count "$plain_url" "$at_version $v")" "$n"
    check_eq "citus $op: distributed schemas" "$(count "$citus_url" "$per_node")" "$n"
    if [ "$op" = migrate ]; then
      check_eq "citus migrate: tenants with the V8 column" "$(count "$citus_url" "$v8_column")" "$n"
      check_eq "plain migrate: tenants with the V8 column" "$(count "$plain_url" "$v8_column")" "$n"
    fi
    awk -v op="$op" -v n="$n" -v c="$citus_s" -v p="$plain_s" 'BEGIN {
      printf "citus: %s of %d tenants: Citus %.3f s, plain PostgreSQL %.3f s, ratio %.2f (%.1f ms per tenant on Citus)\n",
        op, n, c, p, c / (p > 0 ? p : 1e-9), 1000 * c / n }'
    if [ "$op" = create ]; then
      echo "citus: tenants per node after create (one worker): $(tenants_per_node)"
    fi
  done
  cpsql "$citus_url" -c "SELECT citus_add_node('$host', $w2)" >/dev/null
  echo "bench: citus N=$n rebalance onto a second worker" >&2
  run_tool "$citus_url" rebalance --format json rebalance
  python3 - "$work/tool.out" "$tool_s" "$n" <<'PY' || fail "citus rebalance did not finish with every tenant placed"
import json, sys
r, took, n = json.load(open(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3])
nodes = r["nodes"]
if r["state"] != "finished" or sum(nodes.values()) != n:
    sys.exit(1)
print(f"citus: rebalance after adding a second worker: {r['moves']} moves in {took:.3f} s; "
      f"tenants per node: " + ", ".join(f"{k} {v}" for k, v in sorted(nodes.items())))
PY
  check_eq "citus rebalance: distributed schemas" "$(count "$citus_url" "$per_node")" "$n"
  echo "citus: tenants per node after rebalance (tenantctl list): $(tenants_per_node)"
  drop_citus_db
  drop_db "$plain_db"
  dbs_to_drop=()
  trap cleanup EXIT
}

pg_version=$(psql_admin -c "SHOW server_version")
tool_version=$("$bin" --version)
ncpu=$(nproc)
rows="$work/rows.tsv"
: >"$rows"
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$rows"; } # op N tool_s floor_s rss_kib

echo "bench: $tool_version, PostgreSQL $pg_version, concurrency $conc, nproc $ncpu," \
  "N = $bench_n, rounds $rounds" >&2
for n in $bench_n; do
  width=$((${#n} > 5 ? ${#n} : 5))
  mapfile -t slugs < <(seq -f "t%0${width}.0f" 1 "$n")
  at_version="select count(*) from public.tenants where state = 'active' and version ="
  schemas="select count(*) from pg_namespace where nspname like '${prefix}%'"
  v8_column="select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid \
    join pg_namespace s on s.oid = c.relnamespace \
    where s.nspname like '${prefix}%' and c.relname = 'wellness_logs' \
      and a.attname = 'resting_heart_rate' and not a.attisdropped"

  # The floor's SQL files, written before any timer starts.
  gen_floor create "$n"
  gen_floor migrate "$n"
  floor_create=() floor_migrate=()
  for i in $(seq 1 "$conc"); do
    floor_create+=("$work/floor-create-$i.sql")
    floor_migrate+=("$work/floor-migrate-$i.sql")
  done

  for round in $(seq 1 "$rounds"); do
    r="N=$n"
    [ "$rounds" -eq 1 ] || r="$r round $round/$rounds"
    tool_db=bench_tool_$n
    floor_db=bench_floor_$n
    tool_url=$(db_url "$tool_db")
    floor_url=$(db_url "$floor_db")

    # Each side runs its whole sequence in a database of its own, created before and dropped
    # after, so that neither side's objects crowd the other's out of shared_buffers (a
    # thousand tenants' catalogs and empty indexes are larger than the cache). Odd rounds
    # run tenantctl first, even rounds the floor, so that neither side always pays for what
    # the server or the disk is still doing after the other.
    if [ $((round % 2)) -eq 1 ]; then sides="tool floor"; else sides="floor tool"; fi
    for side in $sides; do
      db=${side}_db
      db=${!db}
      dbs_to_drop=("$db")
      drop_db "$db"
      psql_admin -c "CREATE DATABASE $db" >/dev/null
      "${side}_create"
      "${side}_migrate"
      "${side}_after"
      drop_db "$db"
      dbs_to_drop=()
    done
  done
  ops=(create migrate "migrate (no-op)" status)
  if [ -n "$second_url" ]; then
    for round in $(seq 1 "$rounds"); do two_servers "$n"; done
    ops+=("migrate, 2 servers vs 1")
  else
    echo "note: no second server (TENANTCTL_TEST_SECOND_URL), so no 2-servers line" >>"$work/notes"
  fi
  for op in "${ops[@]}"; do
    row "$op" "$n" "${best_tool[$op,$n]}" "${best_floor[$op,$n]:--}" "${peak_rss[$op,$n]}"
  done
  rm -f "$work"/floor-*.sql "$work"/floor-*.sql.err
done

python3 - "$rows" "$conc" "$ncpu" "$pg_version" "$tool_version" "$rounds" "$work/notes" <<'EOF' | tee "$out_file"
import sys
rows_file, conc, ncpu, pg, tool, rounds, notes = sys.argv[1:]
head = ["operation", "N", "tenantctl s", "floor s", "ratio", "tenants/s", "peak RSS MiB"]
table = [head]
for line in open(rows_file):
    op, n, t, f, rss = line.rstrip("\n").split("\t")
    t_s = float(t)
    ratio = "-" if f == "-" else f"{t_s / max(float(f), 1e-9):.2f}"
    floor = "-" if f == "-" else f"{float(f):.3f}"
    rate = f"{int(n) / max(t_s, 1e-9):.1f}"
    table.append([op, n, f"{t_s:.3f}", floor, ratio, rate, f"{int(rss) / 1024:.1f}"])
print(f"{tool}, PostgreSQL {pg}")
print(f"concurrency {conc} (tenantctl and floor), nproc {ncpu}"
      + ("" if rounds == "1" else f", fastest of {rounds} rounds (peak RSS: the highest)"))
for note in open(notes).read().splitlines():
    print(note)
print()
widths = [max(len(r[i]) for r in table) for i in range(len(head))]
for r in table:
    cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
    print("  ".join(cells).rstrip())
EOF

# The move measurement, printed after the table and kept with it in bench/last-run.txt.
bench_move | tee -a "$out_file"

# The Citus lines (see bench_citus), after the move line.
bench_citus | tee -a "$out_file"
