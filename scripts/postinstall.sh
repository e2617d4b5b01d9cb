#!/bin/sh
# Run after installing or upgrading parachute by any means that has no maintainer scripts
# of its own (a tarball, a copy). It only calls `parachute postinstall`, which holds the
# logic: with --upgrade it refreshes an installed hub unit for the new binary; without it,
# it changes nothing that runs and says how to migrate a legacy box.
#
#   scripts/postinstall.sh [--upgrade] [--home DIR] [--scope user|system] [--json]
#   PARACHUTE=/opt/parachute/bin/parachute scripts/postinstall.sh --upgrade
#
# PARACHUTE is the stable installed path the hub unit should run (default /usr/bin/parachute,
# else `parachute` on PATH); it is passed as --exec unless you pass --exec yourself.
# Exit status: that of `parachute postinstall` (0 unless a healthy hub was taken down and
# could not be brought back); 0 with a message when no parachute binary is found.
set -e
PARACHUTE=${PARACHUTE:-/usr/bin/parachute}
if [ ! -x "$PARACHUTE" ]; then
    if ! PARACHUTE=$(command -v parachute); then
        echo "postinstall.sh: no parachute binary found (set PARACHUTE=/path/to/parachute); nothing to do."
        exit 0
    fi
fi
for arg in "$@"; do
    case "$arg" in
        --exec | --exec=*) exec "$PARACHUTE" postinstall "$@" ;;
    esac
done
exec "$PARACHUTE" postinstall --exec "$PARACHUTE" "$@"
