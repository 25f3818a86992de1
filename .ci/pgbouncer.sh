#!/usr/bin/env bash
# Throwaway PgBouncer in front of the throwaway PostgreSQL of .ci/postgres.sh, in transaction
# pooling mode, for the pooler test and the scaling bench.
#
#   eval "$(bash .ci/postgres.sh start)"    # first: HPO_TEST_POSTGRES_URL
#   eval "$(bash .ci/pgbouncer.sh start)"   # prints: export HPO_TEST_PGBOUNCER_URL=postgresql+psycopg://...
#   bash .ci/pgbouncer.sh stop              # stops every PgBouncer this checkout started (by PID)
#
# The configuration is the deployments' (deploy/pgbouncer/entrypoint.sh), except that every
# database of that server is reachable through it under its own name (`* =`), each (database,
# user) with a pool of HPO_PGBOUNCER_POOL_SIZE server connections (default 20); up to
# HPO_PGBOUNCER_MAX_CLIENTS clients (default 1000). It listens on 127.0.0.1 only, on a free
# port; its configuration (with the password, mode 600), log and pid file live in a fresh
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
  [ "$(id -u)" -eq 0 ] && chown postgres: "$base"
  echo "$base" >>"$STATE_FILE"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  # The deployments' configuration (deploy/pgbouncer/entrypoint.sh), pointed at this server;
  # the credentials from its URL, through the environment (a password is never printed).
  local settings
  settings="$(python3 - "$server_url" <<'SETTINGS'
import shlex, sys
from urllib.parse import unquote, urlsplit

parts = urlsplit(sys.argv[1])
for name, value in [("POSTGRES_USER", unquote(parts.username or "")),
                    ("POSTGRES_PASSWORD", unquote(parts.password or "")),
                    ("POSTGRES_DB", parts.path.lstrip("/")),
                    ("PGBOUNCER_SERVER_HOST", parts.hostname),
                    ("PGBOUNCER_SERVER_PORT", str(parts.port or 5432))]:
    print(f"export {name}={shlex.quote(value)}")
SETTINGS
)"
  (
    eval "$settings"
    export PGBOUNCER_DATABASE='*' PGBOUNCER_POOL_SIZE="$pool_size" PGBOUNCER_MAX_CLIENTS="$max_clients" \
      PGBOUNCER_LISTEN_ADDR=127.0.0.1 PGBOUNCER_PORT="$port" PGBOUNCER_DIR="$base" \
      PGBOUNCER_LOGFILE="$base/pgbouncer.log"
    # runuser resets PATH, which for an ordinary user lacks /usr/sbin.
    as_owner env PATH="$(dirname "$bin"):/usr/bin:/bin" sh "$REPO_ROOT/deploy/pgbouncer/entrypoint.sh" -d >&2
  )
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
