# cluster-lib.sh: what the scripts that start throwaway PostgreSQL clusters share
# (with-postgres.sh, with-citus.sh, citus-auto-move-repro.sh). Sourced, not run; the
# caller sets `pg_bin` (the PostgreSQL binaries) before calling these.

# As root, run the server as `postgres` (PostgreSQL refuses to run as root); otherwise as
# ourselves. From /, so the server user is never left in a folder it cannot read.
as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# A TCP port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# stop_data_dirs DIR...: stops the cluster of each data folder that has a running server
# (immediately: the clusters are thrown away).
stop_data_dirs() {
  local d
  for d in "$@"; do
    if [ -f "$d/postmaster.pid" ]; then
      as_server_user "$pg_bin/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
}

# owned_base BASE ROOT LABEL: makes folder BASE for the clusters and prints the folder to
# use. As root it must belong to `postgres`, which must reach it through the project's
# path ROOT; when a parent folder is closed to it (a checkout under /root, say), a private
# folder in /tmp named after LABEL is used instead.
owned_base() {
  local base=$1 root=$2 label=$3
  mkdir -p "$base"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$base"
    chmod o+x "$root" "$root/.tmp" 2>/dev/null || true
    if ! runuser -u postgres -- test -w "$base"; then
      rm -rf "$base"
      base=$(mktemp -d "${TMPDIR:-/tmp}/$label.XXXXXX")
      chown postgres: "$base"
    fi
  fi
  printf '%s\n' "$base"
}
