#!/usr/bin/env bash
# docker-compose, run for real: PostgreSQL + 2 CPU workers + the dashboard on a tiny budget.
#
#   bash .ci/compose-smoke.sh           # install what is missing, run, check, clean up
#   bash .ci/compose-smoke.sh install   # only install the engine, compose and debootstrap
#   HPO_SKIP_COMPOSE_SMOKE=1 bash .ci/run   # skip it in a local loop
#   HPO_SMOKE_WORK=/tmp/smoke bash .ci/compose-smoke.sh   # keep the engine's folder and reuse
#                                       # its images next time (iterating on the checks)
#
# No image registry is reachable here, so the base images the project's Dockerfile and
# docker-compose.yml name (python:3.11-slim-bookworm, postgres:16.14-bookworm) are built as
# stand-ins from Debian packages (debootstrap + docker import), only inside this harness; the
# project's own files are used unchanged. Python packages come from a wheelhouse the host
# prepares with pip and serves on 127.0.0.1 (passed in as the PIP_INDEX_URL build argument).
# No certificate, key or credential of the host goes into an image.
#
# Everything runs under a private dockerd (own socket, data root and pid file in a temporary
# folder) and one compose project name; at the end -- whatever happens -- the project's
# containers, networks and volumes are removed, the daemon and the wheel server are stopped by
# PID and the folder is deleted. It prints one line per phase with its wall time.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
N_TRIALS=6
BUDGET="--epochs 3 --train-size 1024 --val-size 200 --pruner none"  # every trial completes

log() { echo "compose-smoke: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
started=$SECONDS
phase_start=$SECONDS
phase_done() {
  echo "compose-smoke phase: $1 took $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

install() {
  local missing=()
  [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || fail "needs root to install ${missing[*]} (apt-get)"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if [ "${1:-}" = install ]; then
  install
  exit 0
fi
if [ "${HPO_SKIP_COMPOSE_SMOKE:-}" = 1 ]; then
  echo "compose-smoke: skipped (HPO_SKIP_COMPOSE_SMOKE=1)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "runs a Docker engine of its own: needs root"

KEEP="${HPO_SMOKE_WORK:-}"
WORK="${KEEP:-$(mktemp -d /tmp/hpo-compose-smoke.XXXXXX)}"
mkdir -p "$WORK"
rm -f "$WORK/dockerd.pid"  # a kept folder: its last engine has stopped
PROJECT="hposmoke$$"
DOCKER=/usr/bin/docker  # the client of the engine started below (Debian's docker.io)
export DOCKER_HOST="unix://$WORK/docker.sock"
COMPOSE=(docker-compose -p "$PROJECT" --env-file "$WORK/smoke.env" -f "$REPO/docker-compose.yml")
DOCKERD_PID=""
SERVER_PID=""
BRIDGE_EXISTED=0
ip link show docker0 >/dev/null 2>&1 && BRIDGE_EXISTED=1

cleanup() {
  local status=$?
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    if [ "$status" -ne 0 ] && [ -f "$WORK/smoke.env" ]; then
      "${COMPOSE[@]}" logs --no-color --tail 60 >&2 2>/dev/null
    fi
    "${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
  fi
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  [ "$BRIDGE_EXISTED" = 0 ] && ip link delete docker0 2>/dev/null  # the daemon's default bridge
  # dockerd unmounts its layers when it stops; anything left mounted is not deleted across.
  grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ -z "$KEEP" ] && rm -rf --one-file-system "$WORK"
  echo "compose-smoke total: $((SECONDS - started)) s (status $status)"
  exit "$status"
}
trap cleanup EXIT
trap "exit 143" INT TERM  # through the EXIT trap: clean up when stopped as well

install
phase_done "install (docker.io, docker-compose, debootstrap)"

# --- the engine -------------------------------------------------------------------------
/usr/sbin/dockerd --host "$DOCKER_HOST" --data-root "$WORK/docker" --exec-root "$WORK/run" \
  --pidfile "$WORK/dockerd.pid" --storage-driver overlay2 >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 120); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
$DOCKER info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; fail "dockerd did not start"; }
phase_done "dockerd (start)"

# --- stand-in base images from Debian packages ----------------------------------------------
mirror="$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
  grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}') \
  | grep -E '/debian/?$' | head -1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs() {  # rootfs NAME PACKAGES: a minimal bookworm with PACKAGES, in $WORK/NAME
  debootstrap --variant=minbase --include="$2" bookworm "$WORK/$1" "$mirror" >"$WORK/$1.log" 2>&1 \
    || { tail -20 "$WORK/$1.log" >&2; fail "debootstrap $1"; }
  rm -rf "$WORK/$1/var/lib/apt/lists/"* "$WORK/$1/var/cache/apt/"*.bin
  # debootstrap copies the host's resolver and name; Docker provides its own in a container.
  rm -f "$WORK/$1/etc/resolv.conf" "$WORK/$1/etc/hostname"
}

have() { $DOCKER image inspect "$1" >/dev/null 2>&1; }
if ! have python:3.11-slim-bookworm || ! have postgres:16.14-bookworm; then
rootfs python python3,python3-pip,python3-venv,ca-certificates
# As python:3.11-slim: `python` and `pip` on PATH, pip allowed to install into the system.
rm -f "$WORK"/python/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$WORK/python/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$WORK/python/usr/local/bin/pip"
tar -C "$WORK/python" -c . | $DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - python:3.11-slim-bookworm >/dev/null

rootfs postgres postgresql,util-linux
# What the compose file relies on from the official image: POSTGRES_USER / _PASSWORD / _DB and
# PGDATA, initialization on first start (by a temporary server on the socket only), then the
# server on TCP for the compose network.
cat >"$WORK/postgres/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
bin="$(ls -d /usr/lib/postgresql/*/bin | tail -1)"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    "$bin/psql" -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" >/dev/null
  fi
  "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA"
ENTRYPOINT
chmod 755 "$WORK/postgres/usr/local/bin/docker-entrypoint.sh"
# The server's own tools on PATH (Debian's /usr/bin wrappers expect a pg_createcluster cluster).
pgbin="$(cd "$WORK/postgres" && ls -d usr/lib/postgresql/*/bin | tail -1)"
for tool in pg_isready psql; do ln -sf "/$pgbin/$tool" "$WORK/postgres/usr/local/bin/$tool"; done
tar -C "$WORK/postgres" -c . | $DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' - postgres:16.14-bookworm >/dev/null
rm -rf --one-file-system "$WORK/python" "$WORK/postgres"
fi
phase_done "stand-in base images (debootstrap + docker import)"

# --- the wheelhouse, served on 127.0.0.1 ------------------------------------------------------
PIP="$REPO/.venv/bin/pip"
[ -x "$PIP" ] || PIP="pip3"
[ -d "$WORK/index" ] || "$PIP" download -q -d "$WORK/wheels" "$REPO" setuptools wheel >"$WORK/pip.log" 2>&1 \
  || { tail -20 "$WORK/pip.log" >&2; fail "pip download"; }
[ -d "$WORK/index" ] || python3 - "$WORK/wheels" "$WORK/index" <<'INDEX'
import os, re, sys
from pathlib import Path
wheels, index = Path(sys.argv[1]), Path(sys.argv[2])
for f in sorted(wheels.iterdir()):
    name = re.sub(r"[-_.]+", "-", re.split(r"-\d", f.name, maxsplit=1)[0]).lower()
    page = index / "simple" / name
    page.mkdir(parents=True, exist_ok=True)
    os.link(f, page / f.name)
    with (page / "index.html").open("a") as html:
        html.write(f'<a href="{f.name}">{f.name}</a><br>\n')
INDEX
port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WHEEL_PORT="$(port_of)"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$WHEEL_PORT" >"$WORK/http.log" 2>&1 &
SERVER_PID=$!
phase_done "wheelhouse ($(du -sh "$WORK/wheels" | cut -f1), $(ls "$WORK/wheels" | wc -l) files)"

# --- the project's images, from its Dockerfile -------------------------------------------------
for target in worker dashboard; do
  image="sparse-cnn-hpo:local"
  [ "$target" = dashboard ] && image="sparse-cnn-hpo-dashboard:local"
  [ -n "$KEEP" ] && have "$image" && continue
  $DOCKER build -q --network host --target "$target" -t "$image" \
    --build-arg PIP_INDEX_URL="http://127.0.0.1:$WHEEL_PORT/simple" "$REPO" >"$WORK/build-$target.log" 2>&1 \
    || { tail -30 "$WORK/build-$target.log" >&2; fail "docker build --target $target"; }
done
$DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort | sed 's/^/compose-smoke image: /'
phase_done "project images (docker build --target worker / dashboard)"

# --- the stack: PostgreSQL + 2 CPU workers + the dashboard --------------------------------------
rm -rf "$WORK/data" && mkdir -p "$WORK/data"
PYTHONPATH="$REPO/tests" python3 -c "import sys; from synthetic import write_mnist; write_mnist(sys.argv[1], n_train=7000, n_test=400)" "$WORK/data" \
  2>/dev/null || PYTHONPATH="$REPO/tests" "$REPO/.venv/bin/python" -c "import sys; from synthetic import write_mnist; write_mnist(sys.argv[1], n_train=7000, n_test=400)" "$WORK/data"
chmod -R a+rX "$WORK/data"
DASHBOARD_PORT="$(port_of)"
cat >"$WORK/smoke.env" <<ENV
POSTGRES_USER=hpo
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
POSTGRES_DB=hpo
STUDY=sparse_mnist
N_TRIALS=$N_TRIALS
WORKERS_PER_CONTAINER=1
HPO_RUN_ARGS=$BUDGET
HPO_HOST_DATA_DIR=$WORK/data
DASHBOARD_PORT=$DASHBOARD_PORT
HPO_HEARTBEAT_INTERVAL=2
HPO_HEARTBEAT_GRACE=8
ENV
"${COMPOSE[@]}" up -d --no-build --scale worker=2 >"$WORK/up.log" 2>&1 \
  || { cat "$WORK/up.log" >&2; fail "docker-compose up"; }
phase_done "up (PostgreSQL healthy, 2 workers, dashboard)"

psql() { "${COMPOSE[@]}" exec -T postgres psql -U hpo -d hpo -tAc "$1" 2>/dev/null || true; }
for _ in $(seq 240); do
  curl -fsS "http://127.0.0.1:$DASHBOARD_PORT/api/studies" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$DASHBOARD_PORT/api/studies" >/dev/null || fail "the dashboard does not answer on 127.0.0.1"
# Stop the stack in the middle of a trial, once at least one trial has finished.
for _ in $(seq 600); do
  running="$(psql "SELECT count(*) FROM trials WHERE state = 'RUNNING'")"
  finished="$(psql "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')")"
  [ "${running:-0}" -ge 1 ] && [ "${finished:-0}" -ge 1 ] && break
  sleep 0.5
done
[ "${running:-0}" -ge 1 ] || fail "no trial was running"
log "down in the middle of a trial: $running running, $finished finished"
"${COMPOSE[@]}" down --timeout 20 >/dev/null 2>&1
phase_done "run until a trial is running, then down"

"${COMPOSE[@]}" up -d --no-build --scale worker=2 >"$WORK/up2.log" 2>&1 \
  || { cat "$WORK/up2.log" >&2; fail "docker-compose up (again)"; }
for _ in $(seq 1200); do
  states="$("${COMPOSE[@]}" ps -q worker | xargs -r $DOCKER inspect -f '{{.State.Status}}' | sort -u | tr '\n' ' ')"
  [ "$states" = "exited " ] && break
  sleep 1
done
[ "$states" = "exited " ] || fail "the workers did not finish (states: $states)"
phase_done "up again, until both workers finished"

# --- checks ---------------------------------------------------------------------------------
"${COMPOSE[@]}" ps -q worker | xargs -r $DOCKER inspect -f '{{.State.ExitCode}}' | grep -qv '^0$' \
  && fail "a worker exited with an error"
"${COMPOSE[@]}" run --rm --no-deps -T worker python - "$N_TRIALS" <<'CHECK' || fail "the study is not as it should be"
import sys
import optuna
from optuna.trial import TrialState
from hpo.runtime.storage import open_storage
from hpo import records as keys
import os

n = int(sys.argv[1])
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="sparse_mnist", storage=open_storage(os.environ["HPO_STORAGE"]))
trials = study.get_trials()
finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
running = [t for t in trials if t.state == TrialState.RUNNING]
failed = [t for t in trials if t.state == TrialState.FAIL]
workers = {t.user_attrs.get(keys.WORKER, "").split(":")[0] for t in finished}
seeds = {t.user_attrs.get(keys.WORKER_SEED) for t in finished}
covered = {t.user_attrs.get(keys.GRID_ID) for t in trials if t.state != TrialState.FAIL}
lost = [t.number for t in failed if t.user_attrs.get(keys.GRID_ID) not in covered]
print(f"compose-smoke study: {len(finished)} finished, {len(running)} running, {len(failed)} failed "
      f"(re-queued: {len(failed) - len(lost)}), {len(workers)} worker containers, {len(seeds)} seeds")
# Optuna's MaxTrialsCallback: N, or up to N + 1 when the two workers finish together.
assert n <= len(finished) <= n + 1, f"{len(finished)} finished, expected {n} or {n + 1}"
assert not running, f"trials left RUNNING: {[t.number for t in running]}"
assert failed, "down in the middle of a trial must have failed that trial"
assert not lost, f"grid points lost with failed trials {lost}"
assert len(workers) >= 2, f"trials of one worker container only: {workers}"
assert len(seeds) >= 2, f"the replicas shared a seed: {seeds}"
assert keys.TEST_METRICS in study.user_attrs, "the final step did not score the best trial"
CHECK
logs="$("${COMPOSE[@]}" logs --no-color worker 2>/dev/null)"
scored="$(grep -c 'best trial [0-9]* \[' <<<"$logs" || true)"
skipped="$(grep -cE 'final step; skipped|final step already ran' <<<"$logs" || true)"
log "final step: run by $scored worker(s), skipped by $skipped"
# Once per study at a time: the other worker skips it, or runs it again after its own last
# trial changed the study.
[ "$scored" -ge 1 ] || fail "the final step never ran"
[ $((scored + skipped)) -ge 2 ] || fail "a worker neither ran nor skipped the final step"
published="$($DOCKER ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}} {{.Ports}}')"
grep -E '0\.0\.0\.0|:::' <<<"$published" && fail "something is published beyond 127.0.0.1"
grep -q "dashboard.*127.0.0.1:$DASHBOARD_PORT->8080/tcp" <<<"$published" \
  || fail "the dashboard is not published on 127.0.0.1:$DASHBOARD_PORT"
grep -E 'postgres.*->' <<<"$published" && fail "PostgreSQL is published"
phase_done "checks"
echo "compose-smoke: passed"
