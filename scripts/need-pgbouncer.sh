#!/usr/bin/env bash
# need-pgbouncer.sh
#
# Makes sure Debian's pgbouncer binary is installed: tests/routing.rs runs it, on loopback
# and as an unprivileged user, in front of the test server to prove the application routing
# pattern of docs/application-routing.md. Installs the package when missing (as root, like
# with-postgres.sh does for postgresql). The tests only need the binary, so when this script
# installed the package it stops and disables the system service the package may start.
# Prints the binary's path.
set -euo pipefail

find_pgbouncer() {
  if [ -n "${TENANTCTL_TEST_PGBOUNCER:-}" ] && [ -x "$TENANTCTL_TEST_PGBOUNCER" ]; then
    echo "$TENANTCTL_TEST_PGBOUNCER"; return 0
  fi
  command -v pgbouncer 2>/dev/null && return 0
  [ -x /usr/sbin/pgbouncer ] && { echo /usr/sbin/pgbouncer; return 0; }
  return 1
}

if find_pgbouncer; then
  exit 0
fi

echo "need-pgbouncer: pgbouncer not found; installing Debian's pgbouncer package" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "need-pgbouncer: run as root once, or install it: sudo apt-get install -y pgbouncer" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq pgbouncer >&2
# The packaged service (port 6432) is of no use to the tests; leave nothing running.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now pgbouncer >/dev/null 2>&1 || true
elif [ -x /etc/init.d/pgbouncer ]; then
  /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
fi
find_pgbouncer
