#!/usr/bin/env bash
# need-report-checkers.sh
#
# Makes sure the parsers tests/rollout.rs checks tenantctl's CI reports with are installed:
# Python's prometheus_client (its text_string_to_metric_families reads the Prometheus text
# format as Prometheus does) and lxml (validates JUnit XML against tests/fixtures/junit.xsd).
# Installs Debian's python3-prometheus-client and python3-lxml when missing (as root, like
# need-pgbouncer.sh).
set -euo pipefail

# Debian's own interpreter: the packages install there, whatever python3 is first on PATH.
PY=/usr/bin/python3
have() { $PY -c 'import prometheus_client, lxml.etree' >/dev/null 2>&1; }

if have; then
  exit 0
fi
echo "need-report-checkers: installing Debian's python3-prometheus-client and python3-lxml" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "need-report-checkers: run as root once, or: sudo apt-get install -y python3-prometheus-client python3-lxml" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq python3-prometheus-client python3-lxml >&2
have
