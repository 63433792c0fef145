#!/usr/bin/env bash
# with-postgres.sh NAME COMMAND...
#
# Runs COMMAND against a throwaway PostgreSQL cluster under .tmp/pg-NAME (in /dev/shm when
# it has room: see below), then stops the cluster and deletes it, whatever COMMAND's
# outcome. COMMAND sees:
#   DATABASE_URL       postgres://postgres:<password>@127.0.0.1:<port>/postgres
#   TENANTCTL_TEST_PG_BIN, TENANTCTL_TEST_PG_DATA   for tests that restart the server
#   TENANTCTL_TEST_PG_SOCKET, TENANTCTL_TEST_PG_PORT   its Unix socket folder (local logins
#                      are trusted there) and port
#   TENANTCTL_TEST_CA  the CA of its TLS certificate (for the name "localhost")
#   TENANTCTL_TEST_SECOND_URL   postgres://postgres:<password>@127.0.0.1:<port2>/postgres:
#                      a second cluster (roles are per cluster), for tenants placed on
#                      another server (docs/placements.md); started unless PG_SECOND=0,
#                      stopped and deleted with the first
#
# PostgreSQL refuses to run as root, so when we are root the server runs as the
# unprivileged `postgres` user (created by Debian's package). The binaries come from
# Debian's `postgresql` package, installed here when missing.
set -euo pipefail

name=${1:?usage: with-postgres.sh NAME COMMAND...}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
base="$root/.tmp/pg-$name"
# Memory-backed storage when the machine has it (and PG_ON_DISK is not set): the cluster is
# thrown away anyway, and on a VM disk the timings of `make bench` otherwise depend on the
# disk (file creation stalls for seconds while ext4's online discard trims what the last
# DROP DATABASE freed). Named after the checkout, so a killed run's folder is reused.
shm_free_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -z "${PG_ON_DISK:-}" ] && [ -w /dev/shm ] && [ "${shm_free_kib:-0}" -gt $((6 * 1024 * 1024)) ]; then
  base="/dev/shm/tenantctl-pg-$name-$(printf '%s' "$root" | cksum | cut -d ' ' -f 1)"
fi

find_pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
  return 1
}

if ! pg_bin=$(find_pg_bin); then
  echo "with-postgres: initdb not found; installing Debian's postgresql package" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "with-postgres: run as root once, or install it: sudo apt-get install -y postgresql" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql postgresql-client >&2
  pg_bin=$(find_pg_bin)
fi
command -v psql >/dev/null 2>&1 || export PATH="$pg_bin:$PATH"

# shellcheck source=scripts/cluster-lib.sh
. "$root/scripts/cluster-lib.sh"

stop_cluster() {
  stop_data_dirs "$base/data" "$base/second"
  rm -rf "$base"
}

stop_cluster
base=$(owned_base "$base" "$root" "tenantctl-pg-$name")
trap stop_cluster EXIT INT TERM
password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
printf '%s\n' "$password" >"$base/pwfile"
[ "$(id -u)" -eq 0 ] && chown postgres: "$base/pwfile"

as_server_user "$pg_bin/initdb" -D "$base/data" -U postgres --pwfile="$base/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 ||
  { cat "$base/initdb.log" >&2; exit 1; }

# TLS: a CA made for this cluster and a server certificate for the name "localhost" only,
# so tests can check that verify-full refuses 127.0.0.1 and accepts localhost.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tenantctl test CA" \
  -keyout "$base/ca.key" -out "$base/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$base/data/server.key" -out "$base/server.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$base/server.ext"
openssl x509 -req -in "$base/server.csr" -CA "$base/ca.crt" -CAkey "$base/ca.key" -CAcreateserial \
  -days 2 -extfile "$base/server.ext" -out "$base/data/server.crt" >/dev/null 2>&1
chmod 600 "$base/data/server.key"
[ "$(id -u)" -eq 0 ] && chown postgres: "$base/data/server.key" "$base/data/server.crt" "$base/ca.crt"
# One database accepts only encrypted connections, to prove TLS is really used.
sed -i '1i hostnossl tls_only all 127.0.0.1/32 reject' "$base/data/pg_hba.conf"

port=$(free_port)
# A throwaway cluster: durability off (fsync), enough connections for parallel tests.
cat >>"$base/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$base'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = ${PG_MAX_CONNECTIONS:-100}
shared_buffers = 256MB
log_min_messages = warning
ssl = on
EOF

as_server_user "$pg_bin/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 start >/dev/null ||
  { cat "$base/server.log" >&2; exit 1; }

# The second cluster: same superuser password, TCP only, no TLS, smaller.
if [ "${PG_SECOND:-1}" != 0 ]; then
  as_server_user "$pg_bin/initdb" -D "$base/second" -U postgres --pwfile="$base/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$base/initdb2.log" 2>&1 ||
    { cat "$base/initdb2.log" >&2; exit 1; }
  port2=$(free_port)
  cat >>"$base/second/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port2
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = ${PG_MAX_CONNECTIONS:-100}
shared_buffers = 64MB
log_min_messages = warning
EOF
  as_server_user "$pg_bin/pg_ctl" -D "$base/second" -l "$base/server2.log" -w -t 60 start >/dev/null ||
    { cat "$base/server2.log" >&2; exit 1; }
  export TENANTCTL_TEST_SECOND_URL="postgres://postgres:$password@127.0.0.1:$port2/postgres"
fi

export DATABASE_URL="postgres://postgres:$password@127.0.0.1:$port/postgres"
export TENANTCTL_TEST_PG_BIN="$pg_bin"
export TENANTCTL_TEST_PG_DATA="$base/data"
export TENANTCTL_TEST_PG_SOCKET="$base"
export TENANTCTL_TEST_PG_PORT="$port"
export TENANTCTL_TEST_CA="$base/ca.crt"
# Pass through the password to psql only through this variable, never on a command line.
export PGPASSWORD="$password"

set +e
"$@"
status=$?
set -e
exit $status
