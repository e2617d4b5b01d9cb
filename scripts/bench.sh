#!/usr/bin/env bash
# Side-by-side benchmark of `parachute serve` and its peers (supervisord from PyPI, pm2
# from npm when installed). Not run by CI. See scripts/bench/bench.py for what is measured.
#   scripts/bench.sh [--kills 20] [--children 50] [--chatty-mb 256] [--write docs/benchmarks.md]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
venv="${BENCH_VENV:-target/bench-venv}"
if [ ! -x "$venv/bin/supervisord" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet supervisor
fi
command -v pm2 >/dev/null || npm install -g pm2 >/dev/null 2>&1 || echo "pm2 unavailable; benchmarking without it" >&2
PATH="$PWD/$venv/bin:$PATH" exec "$venv/bin/python" scripts/bench/bench.py "$@"
