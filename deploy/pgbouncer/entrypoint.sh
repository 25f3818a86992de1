#!/bin/sh
# PgBouncer in front of the study storage's PostgreSQL, configured from the environment: the
# image `--target pgbouncer` of the Dockerfile runs it (docker-compose.pgbouncer.yml,
# deploy/kubernetes/pgbouncer/), and .ci/pgbouncer.sh runs it here for the tests and benches.
#
# Transaction pooling: a client holds a server connection for one transaction at a time, so
# hundreds of worker processes (2 client connections each) share PGBOUNCER_POOL_SIZE server
# connections. The workers make no prepared statements and take the storage's lock per
# transaction (docs/decisions.md, "PgBouncer"), which is what transaction pooling needs.
#
#   POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB   the server's credentials (as its image's)
#   PGBOUNCER_SERVER_HOST, PGBOUNCER_SERVER_PORT     the server (postgres, 5432)
#   PGBOUNCER_DATABASE      the database clients may name (POSTGRES_DB; * for any, by its name)
#   PGBOUNCER_POOL_SIZE     server connections per database and user (40); keep it, plus
#                           whatever connects directly, below the server's max_connections - 3
#   PGBOUNCER_MAX_CLIENTS   client connections (1000: 2 per worker process, and readers)
#   PGBOUNCER_LISTEN_ADDR, PGBOUNCER_PORT   where it listens (*, 6432)
#   PGBOUNCER_DIR           where the configuration (mode 600: it holds the password) and the
#                           pid file go (/tmp/pgbouncer); PGBOUNCER_LOGFILE: a log file instead
#                           of stderr (for -d)
# Arguments are passed on to pgbouncer (-d: run in the background). PgBouncer refuses to run
# as root: run it as an ordinary user (the image's `postgres`).
set -eu

: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
server_host="${PGBOUNCER_SERVER_HOST:-postgres}"
server_port="${PGBOUNCER_SERVER_PORT:-5432}"
database="${PGBOUNCER_DATABASE:-$POSTGRES_DB}"
pool_size="${PGBOUNCER_POOL_SIZE:-40}"
max_clients="${PGBOUNCER_MAX_CLIENTS:-1000}"
dir="${PGBOUNCER_DIR:-/tmp/pgbouncer}"
for number in "$server_port" "$pool_size" "$max_clients" "${PGBOUNCER_PORT:-6432}"; do
  case "$number" in
    '' | *[!0-9]*) echo "pgbouncer: not a whole number: '$number'" >&2; exit 2 ;;
  esac
done
if [ "$database" = "*" ]; then
  route="* = host=$server_host port=$server_port"
else
  route="$database = host=$server_host port=$server_port dbname=$database"
fi

umask 077
mkdir -p "$dir"
quoted() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }  # auth_file's quoting
printf '%s %s\n' "$(quoted "$POSTGRES_USER")" "$(quoted "$POSTGRES_PASSWORD")" >"$dir/userlist.txt"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
$route

[pgbouncer]
listen_addr = ${PGBOUNCER_LISTEN_ADDR:-*}
listen_port = ${PGBOUNCER_PORT:-6432}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = $max_clients
pidfile = $dir/pgbouncer.pid
${PGBOUNCER_LOGFILE:+logfile = $PGBOUNCER_LOGFILE}
INI
exec pgbouncer "$@" "$dir/pgbouncer.ini"
