#!/usr/bin/env bash
# trace-statements.sh: what tenantctl sends to the server per tenant, next to the floor.
#
#   scripts/with-postgres.sh trace bench/trace-statements.sh
#
# A diagnostic for scripts/bench.sh, not part of `make bench`. It runs create and migrate
# for TRACE_LOW and TRACE_HIGH tenants (default 20 and 100) with tenantctl and with the
# floor's psql scripts, twice: once with log_min_duration_statement=0 (every simple query,
# parse, bind and execute is logged, to count them), once without logging, reading the CPU
# time of the server sessions (they exit at the end of each phase, so their CPU lands in
# the postmaster's cutime/cstime) and of the client (GNU time). It reports the difference
# divided by TRACE_HIGH - TRACE_LOW, i.e. per tenant without the fixed per-run cost
# (connecting, the registry install). CPU times, unlike wall-clock times, hold up on a
# machine that is busy with other work. Autovacuum is off during the trace.
# "requests" counts what the server received (simple queries, and execute messages of
# prepared statements). For psql every request is a round trip; tenantctl pipelines a
# tenant's requests into one flight (see src/txn.rs): migrate and create wait for the
# server once per tenant (migrate twice when a tenant's history must be read first),
# whatever the request count.
# Needs with-postgres.sh's server log and data folder (TENANTCTL_TEST_PG_DATA).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/target/release/tenantctl"
[ -x "$bin" ] || { echo "trace: $bin is missing; run make release" >&2; exit 1; }
log="${TENANTCTL_TEST_PG_DATA:?run under scripts/with-postgres.sh}/../server.log"
low=${TRACE_LOW:-20} high=${TRACE_HIGH:-100} conc=${BENCH_CONCURRENCY:-4}
[ "$high" -gt "$low" ] || { echo "trace: TRACE_HIGH must exceed TRACE_LOW" >&2; exit 1; }
work=$(mktemp -d)
trap '[ -n "${TRACE_KEEP:-}" ] && echo "trace: kept $work" >&2 || rm -rf "$work"' EXIT
admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
url_for() {
  python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit((p.scheme,p.netloc,"/"+sys.argv[2],p.query,"")))' \
    "$DATABASE_URL" "$1"
}

postmaster=$(head -n 1 "$TENANTCTL_TEST_PG_DATA/postmaster.pid")
# CPU seconds of the server's exited sessions so far (fields 16, 17 of /proc/PID/stat).
reaped_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($14 + $15) / hz }' "/proc/$postmaster/stat"; }
logging() { # on|off
  if [ "$1" = on ]; then
    admin -c "ALTER SYSTEM SET log_min_duration_statement = 0" \
      -c "ALTER SYSTEM SET log_line_prefix = 'db=%d pid=%p '" -c "SELECT pg_reload_conf()" >/dev/null
  else
    admin -c "ALTER SYSTEM RESET log_min_duration_statement" -c "ALTER SYSTEM RESET log_line_prefix" \
      -c "SELECT pg_reload_conf()" >/dev/null
  fi
  sleep 0.5
}
admin -c "ALTER SYSTEM SET autovacuum = off" -c "SELECT pg_reload_conf()" >/dev/null
: >"$work/tenants.toml"
export TENANTCTL_CONFIG="$work/tenants.toml"
mkdir -p "$work/m-create" "$work/m-migrate"
cp migrations/V*.sql "$work/m-create/"
cp migrations/V*.sql bench/migrations-extra/V*.sql "$work/m-migrate/"

# Pass "count": the log written between mark and slice goes to $work/NAME.log.
# Pass "cpu": the server sessions' CPU between mark and slice goes to $work/NAME.server.
mark() {
  sleep 0.3
  if [ "$pass" = count ]; then stat -c %s "$log"; else reaped_cpu; fi
}
slice() {
  sleep 0.3
  if [ "$pass" = count ]; then
    tail -c +"$(($1 + 1))" "$log" >"$work/$2.log"
  else
    awk -v a="$1" -v b="$(reaped_cpu)" 'BEGIN { print b - a }' >"$work/$2.server"
  fi
}
# Client CPU seconds (user+sys) of a command, added to $work/NAME.client (pass "cpu").
timed() {
  local name=$1
  shift
  /usr/bin/time -o "$work/t.$BASHPID" -f "%U %S" "$@"
  [ "$pass" = count ] || awk '{ print $1 + $2 }' "$work/t.$BASHPID" >>"$work/$name.client"
}

floor_files() { # KIND N
  python3 - "$1" "$2" "$conc" "$work" <<'EOF'
import glob, os, re, sys
kind, n, conc, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = os.path.join(work, "m-create") if kind == "create" else "bench/migrations-extra"
fs = sorted(glob.glob(os.path.join(d, "V*.sql")),
            key=lambda f: int(re.match(r"V(\d+)", os.path.basename(f)).group(1)))
body = "".join(open(f).read().rstrip("\n") + "\n" for f in fs)
outs = [open(os.path.join(work, f"floor-{kind}-{i}.sql"), "w") for i in range(conc)]
for t in range(n):
    s = '"tenant_t%05d"' % (t + 1)
    outs[t % conc].write("BEGIN;\n" + (f"CREATE SCHEMA {s};\n" if kind == "create" else "")
                         + f"SET LOCAL search_path TO {s};\n{body}COMMIT;\n")
EOF
}
floor_run() { # KIND URL N
  local pids=() f rc=0
  for f in "$work"/floor-"$1"-*.sql; do
    timed "floor-$1-$3" psql -q -X -v ON_ERROR_STOP=1 "$2" -f "$f" >/dev/null &
    pids+=($!)
  done
  for f in "${pids[@]}"; do wait "$f" || rc=1; done
  [ "$rc" -eq 0 ] || { echo "trace: a floor session failed" >&2; exit 1; }
}

for pass in count cpu; do
logging "$([ "$pass" = count ] && echo on || echo off)"
for n in "$low" "$high"; do
  echo "trace: $pass N=$n" >&2
  mapfile -t slugs < <(seq -f 't%05.0f' 1 "$n")
  for side in tool floor; do
    admin -c "DROP DATABASE IF EXISTS trace_${side}_$n WITH (FORCE)" -c "CREATE DATABASE trace_${side}_$n"
  done
  tu=$(url_for "trace_tool_$n") fu=$(url_for "trace_floor_$n")
  floor_files create "$n"
  floor_files migrate "$n"
  m=$(mark)
  DATABASE_URL=$tu timed "tool-create-$n" "$bin" --migrations "$work/m-create" --format json \
    create --concurrency "$conc" "${slugs[@]}" </dev/null >/dev/null
  slice "$m" "tool-create-$n"
  m=$(mark)
  DATABASE_URL=$tu timed "tool-migrate-$n" "$bin" --migrations "$work/m-migrate" --format json \
    migrate --concurrency "$conc" </dev/null >/dev/null
  slice "$m" "tool-migrate-$n"
  m=$(mark); floor_run create "$fu" "$n"; slice "$m" "floor-create-$n"
  m=$(mark); floor_run migrate "$fu" "$n"; slice "$m" "floor-migrate-$n"
  for side in tool floor; do admin -c "DROP DATABASE trace_${side}_$n WITH (FORCE)"; done
done
done
admin -c "ALTER SYSTEM RESET autovacuum" -c "SELECT pg_reload_conf()" >/dev/null

python3 - "$work" "$low" "$high" <<'EOF'
import collections, re, sys
work, low, high = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prefix_re = re.compile(r"^db=(\S*) pid=(\d+) ")
dur_re = re.compile(r"LOG:  duration: [\d.]+ ms  (statement|parse|bind|execute)( [^:]*)?: ?(.*)$")
def load(name, n):
    kinds, shapes, db = collections.Counter(), collections.Counter(), ""
    for line in open(f"{work}/{name}-{n}.log", errors="replace"):
        p = prefix_re.match(line)
        if p:
            db = p.group(1)
            m = dur_re.search(line)
            if m and db.startswith("trace_"):
                kinds[m.group(1)] += 1
                shapes[(m.group(1), re.sub(r"tenant_t\d+", "T", m.group(3))[:64])] += 1
    cpu = float(open(f"{work}/{name}-{n}.server").read())
    client = sum(float(x) for x in open(f"{work}/{name}-{n}.client"))
    return kinds, shapes, cpu, client
span = high - low
print(f"per tenant, from N={low} to N={high}, concurrency as in the bench")
print(f"{'':14} {'simple':>6} {'parse':>5} {'bind':>5} {'exec':>5} {'requests':>8} "
      f"{'server CPU ms':>13} {'client CPU ms':>13}")
for name in ["tool-create", "floor-create", "tool-migrate", "floor-migrate"]:
    (k1, s1, c1, u1), (k2, s2, c2, u2) = load(name, low), load(name, high)
    d = {k: (k2[k] - k1[k]) / span for k in ["statement", "parse", "bind", "execute"]}
    print(f"{name:14} {d['statement']:6.1f} {d['parse']:5.1f} {d['bind']:5.1f} {d['execute']:5.1f} "
          f"{d['statement'] + d['parse'] + d['execute']:8.1f} {(c2 - c1) / span * 1000:13.2f} "
          f"{(u2 - u1) / span * 1000:13.2f}")
    if name.startswith("tool"):
        for key, c in sorted(s2.items(), key=lambda x: (x[0][1], x[0][0])):
            per = (c - s1.get(key, 0)) / span
            if per >= 0.5:
                print(f"    {per:4.1f}x {key[0]:9} {key[1]}")
EOF
