#!/usr/bin/env bash
# Throwaway PgBouncer in front of the throwaway PostgreSQL of .ci/postgres.sh, in transaction
# pooling mode, for the pooler test and the scaling bench.
#
#   eval "$(bash .ci/postgres.sh start)"    # first: HPO_TEST_POSTGRES_URL
#   eval "$(bash .ci/pgbouncer.sh start)"   # prints: export HPO_TEST_PGBOUNCER_URL=postgresql+psycopg://...
#   bash .ci/pgbouncer.sh stop              # stops every PgBouncer this checkout started (by PID)
#
# Every database of that server is reachable through it under its own name (`* =`), each
# (database, user) with a pool of HPO_PGBOUNCER_POOL_SIZE server connections (default 20);
# up to HPO_PGBOUNCER_MAX_CLIENTS clients (default 1000). It listens on 127.0.0.1 only, on a
# free port; its configuration (with the password, mode 600), log and pid file live in a fresh
# folder under /tmp that `stop` removes. PgBouncer is installed from the Debian packages when
# missing (needs root); it refuses to run as root, so as root it runs as the `postgres` user.
# Everything except the final `export` line goes to stderr, so `eval` sees only that line.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_FILE="${TMPDIR:-/tmp}/hpo-ci-pgbouncer-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1).state"

log() { echo "pgbouncer.sh: $*" >&2; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

whole_number() {  # whole_number NAME VALUE
  case "$2" in
    '' | *[!0-9]*) log "$1 must be a whole number, got '$2'"; exit 2 ;;
  esac
}

start() {
  local server_url="${HPO_TEST_POSTGRES_URL:-}"
  [ -n "$server_url" ] || { log "HPO_TEST_POSTGRES_URL is unset: start .ci/postgres.sh first"; exit 2; }
  local pool_size="${HPO_PGBOUNCER_POOL_SIZE:-20}" max_clients="${HPO_PGBOUNCER_MAX_CLIENTS:-1000}"
  whole_number HPO_PGBOUNCER_POOL_SIZE "$pool_size"
  whole_number HPO_PGBOUNCER_MAX_CLIENTS "$max_clients"
  if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    [ "$(id -u)" -eq 0 ] || { log "PgBouncer is not installed and this is not root: install the 'pgbouncer' Debian package."; exit 1; }
    log "installing PgBouncer from the Debian packages"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >&2
  fi
  local bin
  bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

  local base port
  base="$(mktemp -d "${TMPDIR:-/tmp}/hpo-pgbouncer.XXXXXX")"
  chmod 700 "$base"
  echo "$base" >>"$STATE_FILE"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  # The server's address and the credentials, from its URL (a password is never printed).
  # PgBouncer's passwords are double-quoted, with any " doubled (config.rst, auth_file).
  python3 - "$server_url" "$port" "$base" "$pool_size" "$max_clients" <<'CONFIG'
import os, sys
from urllib.parse import unquote, urlsplit

url, port, base, pool_size, max_clients = sys.argv[1:]
parts = urlsplit(url)
user, password = unquote(parts.username or ""), unquote(parts.password or "")
quote = lambda s: '"' + s.replace('"', '""') + '"'
opener = lambda path, flags: os.open(path, flags, 0o600)
with open(f"{base}/userlist.txt", "w", opener=opener) as f:
    f.write(f"{quote(user)} {quote(password)}\n")
with open(f"{base}/pgbouncer.ini", "w", opener=opener) as f:
    f.write(f"""[databases]
* = host={parts.hostname} port={parts.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {base}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_clients}
pidfile = {base}/pgbouncer.pid
logfile = {base}/pgbouncer.log
""")
CONFIG
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$base"
  as_owner "$bin" -d "$base/pgbouncer.ini" >&2
  for _ in $(seq 50); do [ -s "$base/pgbouncer.pid" ] && break; sleep 0.1; done
  [ -s "$base/pgbouncer.pid" ] || { cat "$base/pgbouncer.log" >&2 || true; log "PgBouncer did not start"; exit 1; }
  log "$("$bin" --version | head -1) on 127.0.0.1:$port (pid $(cat "$base/pgbouncer.pid"), transaction pooling, $pool_size server connections per database and user; folder: $base)"
  python3 - "$server_url" "$port" <<'URL'
import sys
from urllib.parse import urlsplit, urlunsplit

parts = urlsplit(sys.argv[1])
userinfo = parts.netloc.rpartition("@")[0]
print(f"export HPO_TEST_PGBOUNCER_URL={urlunsplit(parts._replace(netloc=f'{userinfo}@127.0.0.1:{sys.argv[2]}'))}")
URL
}

stop() {
  [ -f "$STATE_FILE" ] || { log "nothing to stop"; return 0; }
  local base pid
  while read -r base; do
    [ -n "$base" ] && [ -d "$base" ] || continue
    pid="$(cat "$base/pgbouncer.pid" 2>/dev/null || true)"
    # Only that PID, and only while it is still a pgbouncer (not a reused PID).
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgbouncer ]; then
      kill -TERM "$pid" || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -rf "$base"
    log "stopped and removed $base"
  done <"$STATE_FILE"
  rm -f "$STATE_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash .ci/pgbouncer.sh start|stop" >&2; exit 2 ;;
esac
