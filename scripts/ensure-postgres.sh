#!/usr/bin/env bash
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for the tests' throwaway cluster:
# installs Debian's `postgresql` package when they are missing and we are root with apt-get.
# Otherwise it only says so: the PostgreSQL tests then skip with that reason.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "PostgreSQL server binaries missing: installing Debian's postgresql" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
else
  echo "warning: PostgreSQL server binaries (initdb, pg_ctl) not found and not root on Debian:" \
    "install the postgresql package, or the PostgreSQL tests will be skipped" >&2
fi
