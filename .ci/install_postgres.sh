#!/usr/bin/env bash
# PostgreSQL for tests/test_tracking_server_postgres.py (an `mlflow server` with a PostgreSQL
# backend). Idempotent: installs Debian's postgresql package only when initdb/pg_ctl/postgres are
# missing. Runs as root on a fresh CI machine; the test starts its own throw-away cluster.
set -euo pipefail
found() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if found; then
  echo "install_postgres: PostgreSQL binaries present"
else
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q postgresql
fi
# the package creates the `postgres` user the test runs the server as when it runs as root
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
ls -d /usr/lib/postgresql/*/bin | head -1
