#!/usr/bin/env bash
# Log throughput of `parachute serve` per output sink (pipe→file floor, stdout to a file,
# --log-file with rotation, journald in a private systemd sandbox), side by side in one run.
# Needs root (the sandbox). Not run by CI. See scripts/bench/sinks.py.
#   scripts/bench-sinks.sh [--chatty-mb 256] [--rounds 3] [--sinks floor,stdout,log-file,journald]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
exec python3 scripts/bench/sinks.py "$@"
