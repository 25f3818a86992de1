#!/usr/bin/env bash
# Throwaway PostgreSQL server for the integration tests and benchmarks.
#
#   eval "$(bash .ci/postgres.sh start)"   # prints: export HPO_TEST_POSTGRES_URL=postgresql+psycopg://...
#   bash .ci/postgres.sh stop              # stops every server this checkout started, deletes data
#   HPO_PG_MAX_CONNECTIONS=100 bash .ci/postgres.sh start   # another max_connections (default 200)
#
# The server listens on 127.0.0.1 only, on a free port, with a fresh data directory under /tmp
# and a random password: nothing outlives `stop`, nothing is reachable from outside the machine.
# PostgreSQL is installed from the Debian packages when missing (needs root). initdb refuses to
# run as root, so as root the server runs as the `postgres` user.
# Everything except the final `export` line goes to stderr, so `eval` sees only that line.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_FILE="${TMPDIR:-/tmp}/hpo-ci-postgres-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1).state"

log() { echo "postgres.sh: $*" >&2; }

find_bin_dir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

install_postgres() {
  if [ "$(id -u)" -ne 0 ]; then
    log "PostgreSQL is not installed and this is not root: install the 'postgresql' Debian package."
    exit 1
  fi
  log "installing PostgreSQL from the Debian packages"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
}

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local bin_dir
  bin_dir="$(find_bin_dir)" || { install_postgres; bin_dir="$(find_bin_dir)"; }

  local base port password max_connections
  max_connections="${HPO_PG_MAX_CONNECTIONS:-200}"
  case "$max_connections" in
    '' | *[!0-9]*) log "HPO_PG_MAX_CONNECTIONS must be a whole number, got '$max_connections'"; exit 2 ;;
  esac
  base="$(mktemp -d "${TMPDIR:-/tmp}/hpo-pg.XXXXXX")"
  chmod 700 "$base"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$base"
  port="$(free_port)"
  password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  echo "$base" >>"$STATE_FILE"

  printf '%s\n' "$password" >"$base/pwfile"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$base/pwfile"
  as_owner "$bin_dir/initdb" -D "$base/data" -U postgres --pwfile="$base/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >&2
  rm -f "$base/pwfile"
  as_owner "$bin_dir/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c max_connections=$max_connections" \
    start >&2

  # The test role (CREATEDB: the pooler test makes a database of its own) and database, created
  # over the private Unix socket (trust auth).
  as_owner "$bin_dir/psql" -h "$base" -p "$port" -U postgres -v ON_ERROR_STOP=1 -q >&2 <<SQL
CREATE ROLE hpo LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE hpo OWNER hpo;
SQL
  log "PostgreSQL $("$bin_dir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, max_connections $max_connections (data: $base)"
  echo "export HPO_TEST_POSTGRES_URL=postgresql+psycopg://hpo:${password}@127.0.0.1:${port}/hpo"
}

stop() {
  [ -f "$STATE_FILE" ] || { log "nothing to stop"; return 0; }
  local bin_dir base
  bin_dir="$(find_bin_dir)" || true
  while read -r base; do
    [ -n "$base" ] && [ -d "$base" ] || continue
    if [ -n "$bin_dir" ] && [ -f "$base/data/postmaster.pid" ]; then
      as_owner "$bin_dir/pg_ctl" -D "$base/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$base"
    log "stopped and removed $base"
  done <"$STATE_FILE"
  rm -f "$STATE_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash .ci/postgres.sh start|stop" >&2; exit 2 ;;
esac
