#!/usr/bin/env bash
# Side-by-side benchmark of `parachute serve`, a floor (scripts/bench/floor.c: a minimal
# poll-based supervisor, compiled here) and the peers that install from the registries:
# supervisord (PyPI), pm2 (npm), horust (crates.io). Every figure is printed as a ratio to the
# floor measured in the same run. Not run by CI. See scripts/bench/bench.py for what is measured.
#   scripts/bench.sh [--runs 2] [--kills 20] [--children 50] [--chatty-mb 256] [--idle-secs 5]
#                    [--tools floor,parachute,supervisord,pm2,horust] [--write docs/benchmarks.md]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
mkdir -p target/bench
cc -O2 -Wall -o target/bench/floor scripts/bench/floor.c
venv="${BENCH_VENV:-target/bench-venv}"
if [ ! -x "$venv/bin/supervisord" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet supervisor
fi
command -v pm2 >/dev/null || npm install -g pm2 >/dev/null 2>&1 || echo "pm2 unavailable; benchmarking without it" >&2
command -v horust >/dev/null || cargo install --quiet horust >/dev/null 2>&1 || echo "horust unavailable; benchmarking without it" >&2
PATH="$PWD/$venv/bin:$HOME/.cargo/bin:$PATH" exec "$venv/bin/python" scripts/bench/bench.py "$@"
