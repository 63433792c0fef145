#!/usr/bin/env bash
# with-citus.sh NAME COMMAND...
#
# Runs COMMAND with a throwaway Citus cluster (a coordinator and two workers, three PostgreSQL
# 15 clusters with the citus extension preloaded) under .tmp/citus-NAME (or /dev/shm, like
# with-postgres.sh), then stops and deletes it, whatever COMMAND's outcome. COMMAND sees:
#   TENANTCTL_TEST_CITUS_URL      postgres://postgres@127.0.0.1:<port>/postgres: the coordinator
#   TENANTCTL_TEST_CITUS_WORKERS  the workers' ports, comma-separated (host 127.0.0.1)
# Logins on 127.0.0.1 are trusted (the nodes connect to each other as the current user; a
# password would need a .pgpass on every node). Nothing is set up in the clusters' databases:
# each test makes its own database on all three nodes (tests/common `CitusDb`).
#
# Citus itself must be installed: scripts/need-citus.sh (make test runs it first). Chained
# after with-postgres.sh by `make test`:
#   scripts/with-postgres.sh test scripts/with-citus.sh test cargo test
# CITUS=0 skips the cluster and runs COMMAND alone (tests/citus.rs then fails: nothing is
# skipped silently).
set -euo pipefail

name=${1:?usage: with-citus.sh NAME COMMAND...}
shift
if [ "${CITUS:-1}" = 0 ]; then
  exec "$@"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
base="$root/.tmp/citus-$name"
shm_free_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -z "${PG_ON_DISK:-}" ] && [ -w /dev/shm ] && [ "${shm_free_kib:-0}" -gt $((4 * 1024 * 1024)) ]; then
  base="/dev/shm/tenantctl-citus-$name-$(printf '%s' "$root" | cksum | cut -d ' ' -f 1)"
fi
pg_bin=/usr/lib/postgresql/15/bin
if [ ! -f /usr/lib/postgresql/15/lib/citus.so ]; then
  echo "with-citus: Citus is not installed into PostgreSQL 15: run scripts/need-citus.sh (as root) first" >&2
  exit 1
fi
nodes=(coordinator worker1 worker2)
# shellcheck source=scripts/cluster-lib.sh
. "$root/scripts/cluster-lib.sh"

stop_citus() {
  stop_data_dirs "${nodes[@]/#/$base/}"
  rm -rf "$base"
}

stop_citus
base=$(owned_base "$base" "$root" "tenantctl-citus-$name")
trap stop_citus EXIT INT TERM

ports=()
for n in "${nodes[@]}"; do
  as_server_user "$pg_bin/initdb" -D "$base/$n" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$base/initdb-$n.log" 2>&1 || { cat "$base/initdb-$n.log" >&2; exit 1; }
  port=$(free_port)
  ports+=("$port")
  # Throwaway and small. wal_level=logical: citus_schema_move's default mode replicates.
  # Each database with the extension runs a Citus maintenance daemon (a background worker),
  # and tests make a database each: room for them. The nodes talk without TLS on loopback.
  cat >>"$base/$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
shared_preload_libraries = 'citus'
wal_level = logical
max_worker_processes = 64
max_connections = 200
max_prepared_transactions = 200
shared_buffers = 48MB
fsync = off
# on, unlike the plain cluster: Citus's logical-replication moves (move --node --online)
# lose commits that return before their WAL is written (docs/citus.md).
synchronous_commit = on
full_page_writes = off
log_min_messages = warning
citus.node_conninfo = 'sslmode=disable'
citus.enable_statistics_collection = off
CONF
  as_server_user "$pg_bin/pg_ctl" -D "$base/$n" -l "$base/$n.log" -w -t 60 start >/dev/null ||
    { cat "$base/$n.log" >&2; exit 1; }
done

export TENANTCTL_TEST_CITUS_URL="postgres://postgres@127.0.0.1:${ports[0]}/postgres"
export TENANTCTL_TEST_CITUS_WORKERS="${ports[1]},${ports[2]}"

set +e
"$@"
status=$?
set -e
exit $status
