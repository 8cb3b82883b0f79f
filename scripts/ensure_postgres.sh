#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries the tests need (initdb, pg_ctl, postgres) are installed.
# Idempotent: does nothing when initdb is on PATH or under /usr/lib/postgresql/*/bin. Otherwise installs the
# distribution's `postgresql` package with apt-get (as root, or through sudo when available). The tests start
# their own throwaway cluster (tests/postgres.py); the package's default cluster is not needed and is not used.
set -euo pipefail

find_initdb() {
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    local candidate
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
            echo "$candidate/initdb"
            return 0
        fi
    done
    return 1
}

if found=$(find_initdb); then
    echo "ensure_postgres: PostgreSQL server binaries already present ($found); nothing to do"
else
    echo "ensure_postgres: initdb not found"
    source "$(dirname "$0")/apt_install.sh"
    apt_install ensure_postgres postgresql
    found=$(find_initdb) || { echo "ensure_postgres: installed postgresql but still no initdb" >&2; exit 1; }
    echo "ensure_postgres: installed PostgreSQL server binaries ($found)"
fi

# As root the tests run the server as the `postgres` system user (initdb refuses root); the package creates it.
if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    echo "ensure_postgres: created the postgres system user (the tests run the server as it when root)"
fi
