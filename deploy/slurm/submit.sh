#!/usr/bin/env bash
# Submit a study to Slurm in three jobs (deploy/slurm/README.md) and print their ids:
#   create   create.sbatch: the study, once (hpo.run --create-only)
#   workers  worker.sbatch (GPU) or worker-cpu.sbatch (--cpu): an array of TASKS workers,
#            PARALLEL at a time, started once the create job succeeded (afterok)
#   final    the worker script once more, after every task ended (afterany): the final step
#
#   STUDY=sparse_mnist N_TRIALS=100 TASKS=8 bash deploy/slurm/submit.sh           # GPU workers
#   STUDY=sparse_mnist N_TRIALS=100 TASKS=8 bash deploy/slurm/submit.sh --cpu     # CPU workers
#   bash deploy/slurm/submit.sh [--cpu] [SBATCH_OPTION...]   # e.g. --account=P: for all three
#
# STUDY, N_TRIALS: what to run (required). TASKS: array tasks (default 4). PARALLEL: at most
# this many running at once (default TASKS). WORKERS_PER_TASK: hpo.run --workers in each task
# (default 1). HPO_RUN_ARGS: other hpo.run options, e.g. "--epochs 3 --train-size 10000".
# HPO_ENV_FILE: the file holding HPO_STORAGE, mode 600 (default
# ~/.config/sparse-cnn-hpo/slurm.env), read by the jobs on their nodes. HPO_PYTHON: the Python
# that has the project installed (default: `python` on the jobs' PATH, which is yours).
# The jobs start in the current folder and write their logs there: slurm-hpo-*.out.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
worker="$here/worker.sbatch"
if [ "${1:-}" = --cpu ]; then
  worker="$here/worker-cpu.sbatch"
  shift
fi
error() { echo "error: $*" >&2; exit 2; }

[ -n "${STUDY:-}" ] && [ -n "${N_TRIALS:-}" ] || error "set STUDY and N_TRIALS, e.g. STUDY=sparse_mnist N_TRIALS=100 bash $0"
tasks="${TASKS:-4}"
parallel="${PARALLEL:-$tasks}"
[[ "$tasks" =~ ^[1-9][0-9]*$ && "$parallel" =~ ^[1-9][0-9]*$ ]] || error "TASKS and PARALLEL must be integers >= 1"

export HPO_ENV_FILE="${HPO_ENV_FILE:-$HOME/.config/sparse-cnn-hpo/slurm.env}"
[ -r "$HPO_ENV_FILE" ] || error "$HPO_ENV_FILE does not exist: write HPO_STORAGE='postgresql+psycopg://...' into it, chmod 600 (README.md, \"Storage\")"
[ -z "$(find -L "$HPO_ENV_FILE" -perm /077)" ] || error "$HPO_ENV_FILE is readable by others: chmod 600 $HPO_ENV_FILE"
if [ -n "${HPO_STORAGE:-}" ]; then
  echo "note: HPO_STORAGE from this shell is not passed to the jobs; they read $HPO_ENV_FILE" >&2
fi
export STUDY N_TRIALS

# The jobs get this shell's environment (--export=ALL: PATH, HPO_DATA_DIR, HPO_ARTIFACT_DIR,
# HPO_RUN_ARGS, ...) except HPO_STORAGE: slurmctld stores a job's environment.
submit() { env -u HPO_STORAGE sbatch --parsable --export=ALL "$@" | cut -d';' -f1; }

create="$(submit "$@" "$here/create.sbatch")"
workers="$(submit "$@" --array="0-$((tasks - 1))%$parallel" \
  --dependency="afterok:$create" --kill-on-invalid-dep=yes "$worker")"
# afterok on the create job too: if it failed, the final job is removed instead of running the
# study as a lone worker.
final="$(submit "$@" --job-name=hpo-final --output=slurm-%x-%j.out \
  --dependency="afterok:$create,afterany:$workers" --kill-on-invalid-dep=yes "$worker")"

echo "create $create"
echo "workers $workers"
echo "final $final"
echo "stop them all: scancel $create $workers $final" >&2
