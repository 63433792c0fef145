#!/usr/bin/env bash
# need-citus.sh
#
# Makes sure the Citus extension is installed into the machine's PostgreSQL 15: tests/citus.rs
# runs a coordinator and two workers (scripts/with-citus.sh). Builds it, when missing, from the
# source tarball kept in third_party/citus/ (Citus 13.2.2, AGPL-3.0, a test-only dependency,
# never linked into tenantctl; see third_party/citus/README.md).
#
# Run it BEFORE any test cluster starts: installing postgresql-server-dev-15 can upgrade
# postgresql-15 itself, and a server still running from the old binaries then fails to load
# plpgsql.so. Needs root when something is missing (apt-get, make install into PostgreSQL's
# folders), like with-postgres.sh for postgresql itself.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tarball="$root/third_party/citus/citus-13.2.2-pg15.tar.xz"
pg_lib=/usr/lib/postgresql/15/lib

if [ -f "$pg_lib/citus.so" ]; then
  exit 0
fi

echo "need-citus: $pg_lib/citus.so not found; building Citus 13.2.2 from $tarball (about a minute)" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "need-citus: run as root once (make test does it), or build it yourself: see third_party/citus/README.md" >&2
  exit 1
fi

# Build packages: the server headers and the libraries Citus's configure looks for.
missing=()
for p in postgresql-server-dev-15 libkrb5-dev liblz4-dev libzstd-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "need-citus: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tenantctl-citus-build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
tar -xJf "$tarball" -C "$work"
cd "$work/citus-13.2.2"
# libcurl only serves Citus's anonymous statistics collection; LLVM bitcode is not needed (and
# its clang is not installed).
{
  PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config ./configure --without-libcurl &&
    make -j2 with_llvm=no &&
    make install with_llvm=no
} >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; echo "need-citus: the build failed (log above)" >&2; exit 1; }
test -f "$pg_lib/citus.so" || { echo "need-citus: built, but $pg_lib/citus.so is still missing" >&2; exit 1; }
echo "need-citus: installed $pg_lib/citus.so" >&2
