#!/usr/bin/env bash
# Prepares, on this machine, what bench/gpu_check.py needs on a lent GPU machine that has
# python3 with torch and torchvision but no network: the wheels of the packages it lacks
# (.whl/) and MNIST (.data/MNIST/raw). Both folders are git-ignored and travel with `carry`.
# Usage: bash bench/gpu_device_files.sh [MNIST_RAW_FOLDER]   (default: ../shared/data/MNIST/raw)
# Then, in one device call (docs/performance.md, "Issue 30"), carry .whl and .data and run:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD HPO_DATA_DIR=.data python3 bench/gpu_check.py --out /tmp/gc --json
set -euo pipefail
cd "$(dirname "$0")/.."
raw="${1:-../shared/data/MNIST/raw}"
pip=(python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12
     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
     --platform manylinux2014_x86_64 -d .whl)
"${pip[@]}" optuna==5.1.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 \
    greenlet==3.5.6
mkdir -p .data/MNIST/raw
cp "$raw"/*-ubyte.gz .data/MNIST/raw/
du -sh .whl .data
