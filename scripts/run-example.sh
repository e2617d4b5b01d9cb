#!/usr/bin/env bash
# Build parachute and run `parachute serve` in the foreground on a throw-away copy of
# examples/home (see examples/README.md). Ctrl-C stops the hub and every module.
#   scripts/run-example.sh            # hub on 127.0.0.1:19400
#   HUB_PORT=2939 scripts/run-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins --quiet
bin="$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/parachute-example.XXXXXX")"
home="$tmp/home"
cp -R examples/home "$home"
# module.json needs absolute paths: fill in the template's placeholders.
find "$home" -name '*.json' -exec sed -i.orig -e "s|@FIXTURE@|$bin/parachute-fixture|g" -e "s|@HOME@|$home|g" {} +
find "$home" -name '*.orig' -delete
port="${HUB_PORT:-19400}"
cat <<MSG
Example home: $home
In another terminal:
  curl -s http://127.0.0.1:$port/health
  $bin/parachute status --home $home
  $bin/parachute logs echo --home $home
  $bin/parachute logs flaky --follow --home $home
  $bin/parachute restart flaky --home $home
  $bin/parachute stop wrapped --home $home
  curl -s -H "Authorization: Bearer \$(cat $home/operator.token)" http://127.0.0.1:$port/api/modules
Ctrl-C here stops the hub (a second Ctrl-C kills the modules at once).

MSG
exec "$bin/parachute" serve --home "$home" --port "$port"
