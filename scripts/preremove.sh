#!/bin/sh
# Run before removing parachute by any means that has no maintainer scripts of its own. It
# only calls `parachute preremove`, which holds the logic: stop and remove the hub unit
# (not with --upgrade); with --purge also delete the migrate cutover's journal and lock
# (never services.json, tokens or module data).
#
#   scripts/preremove.sh [--upgrade | --purge] [--home DIR] [--scope user|system] [--json]
#
# PARACHUTE is the installed binary (default /usr/bin/parachute, else `parachute` on PATH).
# Exit status: that of `parachute preremove` (non-zero only when the unit could not be
# removed); 0 with a message when no parachute binary is found.
set -e
PARACHUTE=${PARACHUTE:-/usr/bin/parachute}
if [ ! -x "$PARACHUTE" ]; then
    if ! PARACHUTE=$(command -v parachute); then
        echo "preremove.sh: no parachute binary found (set PARACHUTE=/path/to/parachute); nothing to do."
        exit 0
    fi
fi
exec "$PARACHUTE" preremove "$@"
