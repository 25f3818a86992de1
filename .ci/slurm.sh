#!/usr/bin/env bash
# Throwaway one-node Slurm cluster on this machine, for the tests marked `slurm`.
#
#   eval "$(bash .ci/slurm.sh start)"   # prints: export SLURM_CONF=/tmp/hpo-slurm.XXXXXX/slurm.conf
#   bash .ci/slurm.sh stop              # cancels its jobs, stops the daemons it started, by PID
#
# Debian's slurm-wlm (slurmctld, slurmd, the client commands) and munge, installed when missing
# (needs root). One munged, one slurmctld and one slurmd, all as root, with everything in a fresh
# state folder under /tmp: the munge key and socket, slurm.conf, the spool and state
# folders, the logs, the daemons' PIDs. Nothing under /etc is read or written: the commands find
# the cluster through SLURM_CONF, which `start` prints. The daemons talk over 127.0.0.1 on free
# ports and accept only messages signed with this folder's munge key.
# Everything except the final `export` line goes to stderr, so `eval` sees only that line.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_FILE="${TMPDIR:-/tmp}/hpo-ci-slurm-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1).state"

# Oversubscription, on purpose: the node declares at least this many CPUs (and MiB of memory),
# whatever the machine has, so the CPU job script's own requests (a few CPUs and GiB per task)
# fit and a 3-task array runs all at once on a 2-core CI machine. slurmd takes the declared
# figures as given (SlurmdParameters=config_overrides) instead of draining the node; with
# CR_CPU, memory is checked against the node, never reserved.
NODE_CPUS=16
NODE_MEMORY_MIB=16384

log() { echo "slurm.sh: $*" >&2; }

install_slurm() {
  if [ "$(id -u)" -ne 0 ]; then
    log "Slurm is not installed and this is not root: install the 'slurm-wlm' and 'munge' Debian packages."
    exit 1
  fi
  log "installing slurm-wlm and munge from the Debian packages"
  # The packages' scripts must not start system-wide daemons: only `start` starts daemons, and
  # only private ones. A policy-rc.d answering 101 forbids it (Debian's container images have one).
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >&2
  [ -z "$added" ] || rm -f "$policy"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Wait until FILE exists and holds a PID; print it.
pid_from() {
  local file=$1 name=$2
  for _ in $(seq 100); do
    if [ -s "$file" ]; then cat "$file"; return 0; fi
    sleep 0.1
  done
  log "$name wrote no PID file ($file); its log follows"
  cat "${file%.pid}.log" >&2 2>/dev/null || true
  return 1
}

start() {
  if [ "$(id -u)" -ne 0 ]; then
    log "run as root: the daemons run as root (SlurmUser=root), as in CI"
    exit 1
  fi
  command -v slurmctld >/dev/null && command -v munged >/dev/null || install_slurm

  local base host cpus memory ctld_port slurmd_port
  base="$(mktemp -d "${TMPDIR:-/tmp}/hpo-slurm.XXXXXX")"
  # munged wants the folders above its socket searchable by all (711: nobody else may list them).
  chmod 711 "$base"
  echo "$base" >>"$STATE_FILE"
  mkdir -m 711 "$base/munge"
  mkdir -m 700 "$base/state" "$base/spool"
  : >"$base/pids"

  # munge: a fresh key (readable by root only) and a private socket (AuthInfo below).
  dd if=/dev/urandom of="$base/munge.key" bs=1024 count=1 status=none
  chmod 400 "$base/munge.key"
  munged --key-file="$base/munge.key" --socket="$base/munge/munge.socket" \
    --pid-file="$base/munged.pid" --log-file="$base/munged.log" --seed-file="$base/munge/seed"
  echo "munged $(pid_from "$base/munged.pid" munged)" >>"$base/pids"

  host="$(hostname -s)"
  # The machine's own figures (slurmd -C), raised to the declared minimum above.
  cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
  memory="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  [ "$cpus" -ge "$NODE_CPUS" ] || cpus=$NODE_CPUS
  [ "$memory" -ge "$NODE_MEMORY_MIB" ] || memory=$NODE_MEMORY_MIB
  ctld_port="$(free_port)"
  slurmd_port="$(free_port)"
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done

  cat >"$base/slurm.conf" <<CONF
# Written by .ci/slurm.sh: a one-node test cluster, everything under $base.
ClusterName=hpo-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$base/munge/munge.socket
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/slurmctld.pid
SlurmdPidFile=$base/slurmd.pid
SlurmctldLogFile=$base/slurmctld.log
SlurmdLogFile=$base/slurmd.log
# No cgroups in a container: processes tracked by their parent, tasks not bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait s (a worker records its trial within a second).
KillWait=10
# A finished job stays visible to scontrol (state, exit code) this long: no slurmdbd here.
MinJobAge=600
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$base/slurm.conf"

  slurmctld -f "$SLURM_CONF"
  echo "slurmctld $(pid_from "$base/slurmctld.pid" slurmctld)" >>"$base/pids"
  slurmd -f "$SLURM_CONF"
  echo "slurmd $(pid_from "$base/slurmd.pid" slurmd)" >>"$base/pids"

  local state=""
  for _ in $(seq 60); do
    state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    log "the node is '${state:-unknown}', not idle, after 30 s; the logs are in $base"
    exit 1
  fi
  log "Slurm $(sinfo -V | awk '{print $2}') on $host: $cpus CPUs declared, partition cpu (state: $base)"
  echo "export SLURM_CONF=$SLURM_CONF"
}

# Send SIGTERM to PID if it still runs NAME, wait up to 10 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
    sleep 0.1
  done
  log "$name ($pid) did not stop on SIGTERM: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  [ -f "$STATE_FILE" ] || { log "nothing to stop"; return 0; }
  local base name pid
  while read -r base; do
    [ -n "$base" ] && [ -d "$base" ] || continue
    if [ -f "$base/slurm.conf" ] && [ -f "$base/slurmctld.pid" ]; then
      # This cluster's jobs first, so their processes (slurmstepd and below) end with them.
      export SLURM_CONF="$base/slurm.conf"
      if [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
        squeue -h -o %A | sort -u | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 60); do
          [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
          sleep 0.5
        done
      fi
    fi
    # The daemons, by the PIDs `start` recorded: slurmd, slurmctld, then munged.
    if [ -f "$base/pids" ]; then
      for name in slurmd slurmctld munged; do
        pid="$(awk -v n="$name" '$1 == n {print $2}' "$base/pids")"
        [ -z "$pid" ] || stop_pid "$name" "$pid"
      done
    fi
    rm -rf "$base"
    log "stopped and removed $base"
  done <"$STATE_FILE"
  rm -f "$STATE_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash .ci/slurm.sh start|stop" >&2; exit 2 ;;
esac
