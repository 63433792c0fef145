#!/usr/bin/env bash
# citus-auto-move-repro.sh: do committed INSERTs survive citus_schema_move(..., 'auto')?
#
# Self-contained: starts a throwaway Citus cluster (a coordinator and two workers, PostgreSQL
# 15 with citus preloaded, wal_level = logical, trust logins on 127.0.0.1, free ports, a temp
# folder), makes a distributed schema `t` with one table, and then RUNS times:
#   1. starts a writer: a non-superuser role `app` inserting into t.audit_log through the
#      coordinator, logging the id of every INSERT ... RETURNING that committed;
#   2. after WARMUP seconds, runs citus_schema_move('t', <the other worker>, MODE) on the
#      coordinator (so the schema goes back and forth between the workers);
#   3. lets the writer go on for AFTER seconds, stops it, and compares the ids it saw committed
#      with the rows the coordinator returns. A lost id is looked up on the OLD shard on the
#      source worker (deferred cleanup is off, so it is still there), and its times (inserted:
#      the row's occurred_at; committed by: when psql returned) are printed against the end of
#      the move and the time Citus logged its final catch-up.
# Prints one line per run and a summary; exits 1 when a committed row was lost. Everything it
# started is stopped and its folder deleted on exit (trap), whatever happens.
#
# What it shows (docs/citus-auto-move-report.md): with synchronous_commit = off on the workers
# (server, database or role setting), `auto` loses the inserts committed in the last
# wal_writer_delay or so before Citus blocks writes for the final catch-up: Citus reads the
# source's position with pg_current_wal_lsn(), the WAL *write* position, which does not yet
# cover asynchronously committed transactions.
#
# Environment (defaults in brackets):
#   RUNS [10]            moves to make (each one direction)
#   MODE [auto]          auto | block_writes | force_logical
#   WRITER [per-connection]  per-connection (one psql, so one connection, per insert: our
#                        test's writer) | persistent (one session inserting in a loop)
#   SYNC_COMMIT [off]    synchronous_commit on all three nodes (our test clusters,
#                        scripts/with-citus.sh, run with off); SYNC_COMMIT_COORDINATOR and
#                        SYNC_COMMIT_WORKERS override it on the coordinator or the workers
#   ROLE_SYNC_COMMIT     ALTER ROLE app SET synchronous_commit = this (Citus propagates it to
#                        the workers, where its connections log in as app)
#   WRITER_OPTIONS       PGOPTIONS for the writer's sessions on the coordinator, e.g.
#                        '-c synchronous_commit=off' (does a session setting reach the workers?)
#   WAL_WRITER_DELAY [200ms]  wal_writer_delay on all nodes
#   TRIGGER [0]          1: the writer inserts into t.employees, whose AFTER INSERT trigger
#                        writes t.audit_log (the example's audit trail); ids of employees compared
#   PAUSE [0.01]         seconds the writer sleeps between inserts
#   WARMUP [1.5], AFTER [1]  seconds of writing before and after each move
#   ROWS [0]             rows loaded into the table before the first move (bigger copies)
#   KEEP_LOGS            a folder to copy the servers' logs to before cleanup
#
# Example: RUNS=20 MODE=auto WRITER=per-connection scripts/citus-auto-move-repro.sh
set -euo pipefail

RUNS=${RUNS:-10}
MODE=${MODE:-auto}
WRITER=${WRITER:-per-connection}
SYNC_COMMIT=${SYNC_COMMIT:-off}
SYNC_COMMIT_COORDINATOR=${SYNC_COMMIT_COORDINATOR:-$SYNC_COMMIT}
SYNC_COMMIT_WORKERS=${SYNC_COMMIT_WORKERS:-$SYNC_COMMIT}
WRITER_OPTIONS=${WRITER_OPTIONS:-}
ROLE_SYNC_COMMIT=${ROLE_SYNC_COMMIT:-}
WAL_WRITER_DELAY=${WAL_WRITER_DELAY:-200ms}
TRIGGER=${TRIGGER:-0}
PAUSE=${PAUSE:-0.01}
WARMUP=${WARMUP:-1.5}
AFTER=${AFTER:-1}
ROWS=${ROWS:-0}
case "$MODE" in auto | block_writes | force_logical) ;; *) echo "MODE: auto, block_writes or force_logical" >&2; exit 2 ;; esac
case "$WRITER" in per-connection | persistent) ;; *) echo "WRITER: per-connection or persistent" >&2; exit 2 ;; esac

pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -f "$("$pg_bin/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)/citus.so" ]; then
  echo "citus.so is not installed for $pg_bin" >&2
  exit 1
fi
PSQL="$pg_bin/psql"

base=$(mktemp -d "${TMPDIR:-/tmp}/citus-auto-move-repro.XXXXXX")
# shellcheck source=scripts/cluster-lib.sh
. "$(dirname "$0")/cluster-lib.sh"
[ "$(id -u)" -eq 0 ] && chown postgres: "$base"
nodes=(coordinator worker1 worker2)
writer_pid=

cleanup() {
  if [ -n "$writer_pid" ]; then
    touch "$base/stop"
    kill "$writer_pid" 2>/dev/null || true
    wait "$writer_pid" 2>/dev/null || true
  fi
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$base"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
  fi
  stop_data_dirs "${nodes[@]/#/$base/}"
  rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=()
for n in "${nodes[@]}"; do
  as_server_user "$pg_bin/initdb" -D "$base/$n" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$base/initdb-$n.log" 2>&1 || { cat "$base/initdb-$n.log" >&2; exit 1; }
  port=$(free_port)
  ports+=("$port")
  sync_commit=$SYNC_COMMIT_WORKERS
  [ "$n" = coordinator ] && sync_commit=$SYNC_COMMIT_COORDINATOR
  cat >>"$base/$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
shared_preload_libraries = 'citus'
wal_level = logical
max_connections = 200
max_prepared_transactions = 200
shared_buffers = 48MB
fsync = off
synchronous_commit = $sync_commit
wal_writer_delay = '$WAL_WRITER_DELAY'
full_page_writes = off
log_line_prefix = '%m [%p] '
citus.node_conninfo = 'sslmode=disable'
citus.enable_statistics_collection = off
CONF
  as_server_user "$pg_bin/pg_ctl" -D "$base/$n" -l "$base/$n.log" -w -t 60 start >/dev/null ||
    { cat "$base/$n.log" >&2; exit 1; }
done
cport=${ports[0]}

# sql PORT [USER] SQL: one statement through a new connection, unaligned, no headers.
sql() {
  local port=$1 user=postgres
  shift
  if [ $# -gt 1 ]; then user=$1; shift; fi
  "$PSQL" -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$user" -d postgres -c "$1"
}

for p in "${ports[@]}"; do sql "$p" "CREATE EXTENSION citus"; done
sql "$cport" "SELECT citus_set_coordinator_host('127.0.0.1', $cport)" >/dev/null
sql "$cport" "SELECT citus_add_node('127.0.0.1', ${ports[1]})" >/dev/null
sql "$cport" "SELECT citus_add_node('127.0.0.1', ${ports[2]})" >/dev/null
# Old shards stay until we clean them up ourselves, so a lost row can be found on them.
sql "$cport" "ALTER SYSTEM SET citus.defer_shard_delete_interval = -1"
sql "$cport" "SELECT pg_reload_conf()" >/dev/null

# The application role (created on the coordinator, Citus creates it on the workers) and the
# tenant's schema, as tenantctl makes them: a distributed schema, identity keys, grants.
sql "$cport" "CREATE ROLE app LOGIN"
if [ -n "$ROLE_SYNC_COMMIT" ]; then
  sql "$cport" "ALTER ROLE app SET synchronous_commit = '$ROLE_SYNC_COMMIT'"
fi
"$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$cport" -U postgres -d postgres <<SQL
SET citus.enable_schema_based_sharding = on;
CREATE SCHEMA t;
CREATE TABLE t.audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL,
    entity      text,
    entity_id   bigint,
    detail      jsonb
);
CREATE TABLE t.employees (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION t.audit_row_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS \$\$
BEGIN
    EXECUTE format('INSERT INTO %I.audit_log (actor, action, entity, entity_id) VALUES (\$1, \$2, \$3, \$4)',
                   TG_TABLE_SCHEMA)
    USING session_user::text, lower(TG_OP), TG_TABLE_NAME::text, NEW.id;
    RETURN NULL;
END
\$\$;
SET citus.enable_unsafe_triggers = on;
CREATE TRIGGER audit AFTER INSERT ON t.employees FOR EACH ROW EXECUTE FUNCTION t.audit_row_change();
GRANT USAGE ON SCHEMA t TO app;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA t TO app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA t TO app;
INSERT INTO t.audit_log (actor, action, entity, entity_id)
SELECT 'load', 'insert', 'filler', -g FROM generate_series(1, $ROWS) g;
SQL
if [ "$TRIGGER" = 1 ]; then
  table=t.employees
  insert="INSERT INTO t.employees (name) VALUES ('probe %s') RETURNING id, at"
else
  table=t.audit_log
  insert="INSERT INTO t.audit_log (actor, action, entity, entity_id) VALUES ('writer', 'insert', 'probe', %s) RETURNING id, occurred_at"
fi
where_clause=$([ "$TRIGGER" = 1 ] && echo "name LIKE 'probe %'" || echo "entity = 'probe'")

# The writer: appends "id<TAB>commit-time" to $1 for every insert that returned (committed:
# autocommit), until $base/stop exists.
run_writer() {
  local log=$1 i=0
  export PGOPTIONS=$WRITER_OPTIONS
  if [ "$WRITER" = per-connection ]; then
    while [ ! -e "$base/stop" ]; do
      i=$((i + 1))
      # shellcheck disable=SC2059
      if out=$("$PSQL" -X -qAt -F $'\t' -h 127.0.0.1 -p "$cport" -U app -d postgres \
        -c "$(printf "$insert" "$i")" 2>>"$base/writer-errors.log"); then
        # id, the row's occurred_at (set on the coordinator before the insert is sent) and
        # when psql returned (the commit had happened): the commit lies in between.
        printf '%s\t%s\n' "$out" "$EPOCHREALTIME" >>"$log"
      else
        sleep 0.02
      fi
      sleep "$PAUSE"
    done
  else
    # One session: psql reads the inserts from the loop and prints each RETURNING row
    # when its statement has committed; the log is complete when psql exits.
    while [ ! -e "$base/stop" ]; do
      i=$((i + 1))
      # shellcheck disable=SC2059
      printf "$insert;\n" "$i"
      sleep "$PAUSE"
    done | "$PSQL" -X -qAt -F $'\t' -h 127.0.0.1 -p "$cport" -U app -d postgres \
      >>"$log" 2>>"$base/writer-errors.log"
  fi
}

shard_node() {
  sql "$cport" "SELECT nodeport FROM citus_shards WHERE table_name = '$table'::regclass"
}
shard_id() {
  sql "$cport" "SELECT shardid FROM pg_dist_shard WHERE logicalrelid = '$table'::regclass"
}

echo "citus $(sql "$cport" "SELECT extversion FROM pg_extension WHERE extname = 'citus'"), $(sql "$cport" "SHOW server_version")"
echo "MODE=$MODE WRITER=$WRITER synchronous_commit: coordinator $SYNC_COMMIT_COORDINATOR, workers $SYNC_COMMIT_WORKERS, role app '${ROLE_SYNC_COMMIT:-(default)}' (on worker 1: $(sql "${ports[1]}" app "SHOW synchronous_commit")), writer options '$WRITER_OPTIONS'; WAL_WRITER_DELAY=$WAL_WRITER_DELAY TRIGGER=$TRIGGER PAUSE=$PAUSE ROWS=$ROWS; load: $(cut -d ' ' -f 1-3 /proc/loadavg)"
total_lost=0
runs_losing=0
for run in $(seq 1 "$RUNS"); do
  from=$(shard_node)
  to=${ports[1]}
  [ "$from" = "${ports[1]}" ] && to=${ports[2]}
  old_shard=$(shard_id)
  log="$base/committed-$run"
  : >"$log"
  rm -f "$base/stop"
  run_writer "$log" &
  writer_pid=$!
  sleep "$WARMUP"
  log_size=$(stat -c %s "$base/coordinator.log")
  started=$(date +%s.%N)
  move_err=$(sql "$cport" "SELECT citus_schema_move('t', '127.0.0.1', $to, '$MODE')" 2>&1 >/dev/null) || true
  move_end=$(sql "$cport" "SELECT clock_timestamp()")
  # Citus logs each wait for the subscriptions; the last one of the move is the final
  # catch-up, after BlockWritesToShardList (multi_logical_replication.c).
  caught_up=$(tail -c +$((log_size + 1)) "$base/coordinator.log" | { grep 'have caught up' || true; } | tail -1 | cut -c 1-27)
  took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
  sleep "$AFTER"
  touch "$base/stop"
  wait "$writer_pid" || true
  writer_pid=
  now=$(shard_node)
  committed=$(wc -l <"$log")
  present=$(sql "$cport" "SELECT id FROM $table WHERE $where_clause ORDER BY id")
  # comm wants the same (text) order on both sides; then back to numeric order.
  lost=$(cut -f 1 "$log" | sort | comm -23 - <(printf '%s\n' "$present" | sort) | sort -n | tr '\n' ' ')
  nlost=$(printf '%s' "$lost" | wc -w)
  line="run $run: $from -> $to took ${took}s, now on $now; committed $committed, lost $nlost"
  [ -n "$move_err" ] && line="$line; MOVE FAILED: $move_err"
  if [ "$nlost" -gt 0 ]; then
    runs_losing=$((runs_losing + 1))
    total_lost=$((total_lost + nlost))
    ids=$(printf '%s' "$lost" | sed 's/ *$//; s/ /,/g')
    # On the old shard on the source worker?
    on_old=$(sql "$from" "SELECT count(*) FROM ${table}_${old_shard} WHERE id IN ($ids)" 2>/dev/null || echo "?")
    line="$line (ids $ids; $on_old of them on the old shard ${table}_${old_shard} on $from)"
    [ -n "$caught_up" ] && line="$line
    final catch-up logged at $caught_up, $(sql "$cport" "SELECT round(extract(epoch FROM '$caught_up'::timestamptz - '$move_end'::timestamptz) * 1000)") ms relative to the move's end"
    for id in $(printf '%s' "$lost"); do
      at=$(awk -F '\t' -v id="$id" '$1 == id { print $2 }' "$log")
      back=$(awk -F '\t' -v id="$id" '$1 == id { print $3 }' "$log")
      timing=$(sql "$cport" "SELECT format('inserted at %s ms, committed by %s ms', \
          round(extract(epoch FROM '$at'::timestamptz - '$move_end'::timestamptz) * 1000), \
          CASE WHEN '$back' = '' THEN '?' ELSE round((extract(epoch FROM to_timestamp(nullif('$back', '')::float8) - '$move_end'::timestamptz)) * 1000)::text END)")
      line="$line
    id $id: $timing (relative to the move's end)"
    done
  fi
  echo "$line"
  sql "$cport" "CALL citus_cleanup_orphaned_resources()" >/dev/null 2>&1 || true
done
echo "summary: MODE=$MODE WRITER=$WRITER SYNC_COMMIT=$SYNC_COMMIT_COORDINATOR/$SYNC_COMMIT_WORKERS ROLE_SYNC_COMMIT='$ROLE_SYNC_COMMIT' WRITER_OPTIONS='$WRITER_OPTIONS' WAL_WRITER_DELAY=$WAL_WRITER_DELAY TRIGGER=$TRIGGER: $runs_losing of $RUNS runs lost committed rows ($total_lost rows); load: $(cut -d ' ' -f 1-3 /proc/loadavg)"
if [ -s "$base/writer-errors.log" ]; then
  echo "writer errors (first 5):"
  sort "$base/writer-errors.log" | uniq -c | sort -rn | head -5
fi
[ "$runs_losing" -eq 0 ]
