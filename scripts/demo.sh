#!/usr/bin/env bash
# demo.sh — the whole Parachute story in a few seconds, inside one temp dir:
#
#   a legacy box (a hub and three modules run as detached daemons with pidfiles)
#   → `parachute start` notices and offers the migration
#   → `parachute migrate --to-supervised` puts one hub under systemd; it supervises the modules
#   → `parachute status`, a module is SIGKILLed and comes back, `parachute logs`
#   → a package upgrade replaces the unit's binary; `parachute postinstall --upgrade` has
#     the hub exec the new build in place: same pid, systemd sees no restart, no module restarts
#   → `parachute migrate --teardown` removes the unit; nothing is left listening.
#
# Nothing outside the temp dir is touched: the service manager is the project's private,
# throw-away `systemd --user` (scripts/systemd-sandbox.sh, its own cgroup, mount namespace,
# D-Bus and journal), every `parachute` command runs inside that sandbox with the system bus
# pointed at nothing, and an EXIT trap stops the sandbox, kills whatever this demo started
# and removes the temp dir (if the demo itself is killed, the sandbox's dead-man switch
# still stops the manager).
#
# Usage: scripts/demo.sh
# Needs: Linux, root (the sandbox creates cgroups and a mount namespace), systemd and
#        dbus-user-session installed (PID 1 need not be systemd), python3, setsid.
# Knobs: PARACHUTE_DEMO_BIN_DIR=DIR   use DIR/parachute and DIR/parachute-fixture; skip the build
#        PARACHUTE_DEMO_FREE_PORTS=1  do not use the canonical ports 1939-1943 even when free
# Exit:  0 when every step did what it says it did; 1 (naming the step) otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SANDBOX="$REPO/scripts/systemd-sandbox.sh"
T0=$SECONDS
STEP=0
TMP=""
SBX=""

# --------------------------------------------------------------------------- output

if [[ -t 1 ]]; then
    B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
    B="" D="" G="" R="" N=""
fi

step() { # TITLE
    STEP=$((STEP + 1))
    printf '\n%s%d. %s%s\n' "$B" "$STEP" "$1" "$N"
}

say() { printf '   %s\n' "$@"; }

ok() { printf '   %s✓ %s%s\n' "$G" "$1" "$N"; }

fail() { # WHY...
    printf '\n%s✗ FAILED at step %d: %s%s\n' "$R" "$STEP" "$1" "$N" >&2
    shift
    local l
    for l in "$@"; do printf '   %s\n' "$l" >&2; done
    exit 1
}

# Prints `$ cmd args` the way a person would type it (the binaries are on PATH).
show() {
    local out="\$" a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
    done
    printf '   %s%s%s\n' "$B" "$out" "$N"
}

indent() { sed -e 's/^/     /'; }

# --------------------------------------------------------------------------- helpers

# Whether anything listens on TCP PORT (read from /proc/net/tcp{,6}; no connection made).
listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Field 22 of /proc/PID/stat (start time), to tell a process from a later reuse of its pid.
start_ticks() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    read -r -a f <<<"$s"
    echo "${f[19]}"
}

# Whether PID is still the very process that had start time TICKS, and has not exited (an
# orphan may stay a zombie for a while when PID 1 does not reap promptly).
same_process() { # PID TICKS
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s%% *} != [ZX] && -n $2 && $(start_ticks "$1") == "$2" ]]
}

# Polls CMD... every 50 ms until it succeeds; false after SECS.
wait_until() { # SECS CMD...
    local secs=$1 t0=$SECONDS
    shift
    until "$@"; do
        ((SECONDS - t0 < secs)) || return 1
        sleep 0.05
    done
}

# Runs `parachute …` (or any command) inside the sandbox: its mount namespace (where
# /run/systemd/system exists) and environment (its session bus, XDG dirs, HOME), with the
# system bus pointed at nothing so the host's managers are out of reach.
in_sandbox() {
    env -i PATH="$BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 \
        bash "$SANDBOX" exec "$SBX" -- \
        env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/system_bus_socket "$@"
}

# A JSON field from a file: json FILE PYTHON-EXPRESSION-OVER-v
json() {
    python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); r = eval(sys.argv[2]); print("" if r is None else r)' "$1" "$2"
}

cleanup() {
    local rc=$? p cmd
    set +e
    trap - EXIT INT TERM
    if [[ -n $SBX && -e $SBX/.systemd-sandbox ]]; then
        bash "$SANDBOX" stop "$SBX" >/dev/null 2>&1 || echo "demo: warning: stopping the sandbox in $SBX failed" >&2
    fi
    if [[ -n $TMP ]]; then
        # Whatever is left of what this demo started: every such process names the temp dir
        # (a symlink under it, or --home under it) in its command line.
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            [[ $p == "$$" ]] && continue
            cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
            [[ $cmd == *"$TMP/"* ]] && kill -KILL "$p" 2>/dev/null
        done
        rm -rf --one-file-system -- "$TMP"
    fi
    if ((rc == 0)); then
        printf '\n%sDone in %ds; the temp dir, the sandbox and every process of the demo are gone.%s\n' \
            "$G" $((SECONDS - T0)) "$N"
    fi
    exit "$rc"
}

# --------------------------------------------------------------------------- 0. checks

[[ $(uname -s) == Linux ]] || fail "this demo needs Linux (it runs a private systemd)."
[[ $(id -u) == 0 ]] || fail "this demo needs root: its private systemd needs cgroups and a mount namespace. Run it as root (sudo scripts/demo.sh)."
command -v python3 >/dev/null || fail "python3 is needed to read the JSON answers (apt-get install python3)."
command -v setsid >/dev/null || fail "setsid is needed to start the legacy daemons (apt-get install util-linux)."

trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- 1. build

step "Build the binaries"
if [[ -n ${PARACHUTE_DEMO_BIN_DIR:-} ]]; then
    BIN=$(cd "$PARACHUTE_DEMO_BIN_DIR" && pwd)
    say "Using the binaries in $BIN (PARACHUTE_DEMO_BIN_DIR)."
else
    show cargo build --bins --quiet
    (cd "$REPO" && cargo build --bins --quiet) || fail "cargo build failed (see above)."
    BIN=$(cd "$REPO" && cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)
fi
for b in parachute parachute-fixture; do
    [[ -x $BIN/$b ]] || fail "$BIN/$b is missing or not executable."
done
export PATH="$BIN:$PATH"
say "parachute         the CLI and the hub (\`parachute serve\`)"
say "parachute-fixture a small real module: it listens on its port and prints \`ready pid=… port=…\`"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/parachute-demo.XXXXXX")
H="$TMP/home"
SBX="$TMP/systemd"
mkdir -p "$H" "$TMP/bin" "$TMP/modules"

# --------------------------------------------------------------------------- 2. systemd

step "Start a private systemd (the service manager the hub will live under)"
show scripts/systemd-sandbox.sh start "$SBX"
SANDBOX_OWNER_PID=$$ bash "$SANDBOX" start --plain "$SBX" >"$TMP/sandbox.env" 2>"$TMP/sandbox.err" ||
    fail "the systemd sandbox did not start." "$(cat "$TMP/sandbox.err")"
UNIT_DIR=$(sed -n 's/^SYSTEMD_SANDBOX_UNIT_DIR=//p' "$TMP/sandbox.env")
UNIT_FILE="$UNIT_DIR/parachute-hub.service"
ok "systemd --user runs as pid $(sed -n 's/^SYSTEMD_SANDBOX_PID=//p' "$TMP/sandbox.env"), in its own cgroup and mount namespace."
say "Every \`parachute\` command below runs inside it (\`systemd-sandbox.sh exec $SBX -- …\`),"
say "so \`--scope user\` means this private manager, never the host's."

# --------------------------------------------------------------------------- 3. legacy box

step "A legacy box: a hub and three modules as detached daemons with pidfiles"
canonical=1
if [[ ${PARACHUTE_DEMO_FREE_PORTS:-0} == 1 ]]; then
    canonical=0
else
    for p in 1939 1940 1942 1943; do
        if listening "$p"; then canonical=0; fi
    done
fi
if ((canonical)); then
    HUB_PORT=1939
    NAMES=(parachute-vault parachute-notes parachute-scribe)
    SHORTS=(vault notes scribe)
    PORTS=(1940 1942 1943)
else
    HUB_PORT=$(free_port)
    NAMES=(demo-vault demo-notes demo-scribe)
    SHORTS=("${NAMES[@]}")
    PORTS=()
    while ((${#PORTS[@]} < 3)); do
        p=$(free_port)
        [[ $p != "$HUB_PORT" && " ${PORTS[*]} " != *" $p "* ]] && PORTS+=("$p")
    done
    say "(The canonical ports 1939-1943 are in use here or PARACHUTE_DEMO_FREE_PORTS=1: using"
    say " third-party module names on free ports instead.)"
fi

# services.json rows and module.json startCmds, as upstream's installer writes them. Every
# program is the fixture behind a symlink named like the real one, so its command line
# carries the marker the cutover verifies (`parachute-vault`, `parachute-hub`).
rows=""
for i in 0 1 2; do
    name=${NAMES[$i]} port=${PORTS[$i]}
    ln -s "$BIN/parachute-fixture" "$TMP/bin/$name"
    mkdir -p "$TMP/modules/$name/.parachute"
    printf '{"name": "%s", "startCmd": ["%s", "--port", "%s"]}\n' "$name" "$TMP/bin/$name" "$port" \
        >"$TMP/modules/$name/.parachute/module.json"
    rows+=$(printf '%s\n    {"name": "%s", "port": %s, "paths": ["/%s"], "health": "/health", "version": "1.0.0", "installDir": "%s"}' \
        "${rows:+,}" "$name" "$port" "${SHORTS[$i]}" "$TMP/modules/$name")
done
printf '{\n  "services": [%s\n  ]\n}\n' "$rows" >"$H/services.json"
ln -s "$BIN/parachute-fixture" "$TMP/bin/parachute-hub"

LEGACY_PIDS=() LEGACY_TICKS=()
daemon() { # NAME PROGRAM PORT PIDFILE
    local name=$1 prog=$2 port=$3 pidfile=$4 pid
    mkdir -p "$(dirname "$pidfile")"
    setsid --fork "$prog" --port "$port" --pidfile "$pidfile" </dev/null >/dev/null 2>&1
    wait_until 10 test -s "$pidfile" || fail "$name did not write its pidfile $pidfile."
    pid=$(cat "$pidfile")
    wait_until 10 listening "$port" || fail "$name (pid $pid) did not listen on port $port."
    LEGACY_PIDS+=("$pid")
    LEGACY_TICKS+=("$(start_ticks "$pid")")
    printf '   %-18s pid %-7s port %-5s %s\n' "$name" "$pid" "$port" "${pidfile#"$H"/}"
}
mkdir -p "$H/hub/run"
echo "$HUB_PORT" >"$H/hub/run/hub.port"
daemon hub "$TMP/bin/parachute-hub" "$HUB_PORT" "$H/hub/run/hub.pid"
for i in 0 1 2; do
    daemon "${NAMES[$i]}" "$TMP/bin/${NAMES[$i]}" "${PORTS[$i]}" "$H/${SHORTS[$i]}/run/${SHORTS[$i]}.pid"
done
say "" "This is the old model: each program detached, tracked only by a pidfile. Nothing restarts"
say "a module that crashes, and nothing starts them again after a reboot."

# --------------------------------------------------------------------------- 4. the offer

step "The new CLI notices the legacy box and offers the migration"
show parachute start "${SHORTS[0]}" --home "$H"
rc=0
in_sandbox parachute start "${SHORTS[0]}" --home "$H" >"$TMP/offer.out" 2>&1 </dev/null || rc=$?
indent <"$TMP/offer.out"
if listening 1939 && [[ $HUB_PORT != 1939 ]]; then
    say "(Port 1939 is held by another program here, so the offer is not checked.)"
else
    ((rc != 0)) || fail "\`parachute start\` succeeded without a supervised hub."
    grep -q "parachute migrate --to-supervised --home" "$TMP/offer.out" ||
        fail "\`parachute start\` did not name the migration command."
    ok "exit $rc and a one-line hint (on a terminal it asks \`Migrate to the supervised model now? [y/N]\`)."
fi

# --------------------------------------------------------------------------- 5. migrate

step "Migrate: one hub under systemd, supervising every module"
# The unit runs its own copy of the binary, as an installed package's would be: step 9
# replaces it the way a package upgrade does.
cp "$BIN/parachute" "$TMP/bin/parachute"
show parachute migrate --to-supervised --scope user --home "$H" --exec "$TMP/bin/parachute" --json
rc=0
in_sandbox parachute migrate --to-supervised --scope user --home "$H" --exec "$TMP/bin/parachute" --json \
    >"$TMP/migrate.json" 2>"$TMP/migrate.err" </dev/null || rc=$?
python3 - "$TMP/migrate.json" <<'PY' || true
import json, sys
v = json.load(open(sys.argv[1]))
for s in v.get("steps_done", []):
    print(f"     [{s['number']}/9] {s['step']:<14} {s['summary'][:150]}")
print()
for m in v.get("messages", []):
    print("     " + m)
PY
if grep -q "warning:" "$TMP/migrate.err"; then
    say "${D}(migrate warned that the unit runs a binary from a build or temp directory: fine for a"
    say " demo; a real install passes --exec /usr/local/bin/parachute.)${N}"
fi
outcome=$(json "$TMP/migrate.json" 'v["outcome"]' 2>/dev/null || true)
[[ $rc == 0 && $outcome == migrated ]] ||
    fail "migrate ended with exit $rc and outcome '${outcome:-?}', not migrated." "$(cat "$TMP/migrate.err" "$TMP/migrate.json")"
for i in "${!LEGACY_PIDS[@]}"; do
    ! same_process "${LEGACY_PIDS[$i]}" "${LEGACY_TICKS[$i]}" ||
        fail "legacy daemon pid ${LEGACY_PIDS[$i]} still runs after the migration."
done
[[ ! -e $H/hub/run/hub.pid ]] || fail "the legacy hub pidfile is still there."
[[ -f $UNIT_FILE ]] || fail "no unit file at $UNIT_FILE."
ok "outcome migrated: the legacy daemons are stopped, the unit is written, enabled and running."
echo
show parachute unit status --scope user
in_sandbox parachute unit status --scope user --home "$H" 2>&1 | indent || fail "parachute unit status failed."
echo
say "Running it again changes nothing:"
show parachute migrate --to-supervised --scope user --home "$H"
rc=0
in_sandbox parachute migrate --to-supervised --scope user --home "$H" >"$TMP/again.out" 2>/dev/null </dev/null || rc=$?
indent <"$TMP/again.out"
[[ $rc == 0 ]] && grep -q "Already migrated" "$TMP/again.out" || fail "the second migrate did not report already-migrated (exit $rc)."

# --------------------------------------------------------------------------- 6. status

step "Status: the hub answers and every module runs as its child"
show parachute status --home "$H"
in_sandbox parachute status --home "$H" 2>&1 | indent || fail "parachute status failed."
all_running() {
    in_sandbox parachute status --home "$H" --json >"$TMP/status.json" 2>/dev/null || return 1
    [[ $(json "$TMP/status.json" 'sum(1 for m in v["modules"] if m["status"] == "running" and m.get("pid") and not m.get("startError"))') == 3 ]]
}
wait_until 15 all_running || fail "not every module is running." "$(cat "$TMP/status.json")"
HUB_PID=$(json "$TMP/status.json" 'v["hub"]["pid"]') || fail "parachute status --json has no hub pid."
MAIN_PID=$(in_sandbox parachute unit status --scope user --home "$H" --json 2>/dev/null >"$TMP/unit.json" &&
    json "$TMP/unit.json" 'v["status"]["main_pid"]') || true
[[ $HUB_PID == "$MAIN_PID" ]] || fail "the hub answering (pid $HUB_PID) is not the unit's main process (${MAIN_PID:-none})."
for pid in $(json "$TMP/status.json" '" ".join(str(m["pid"]) for m in v["modules"])'); do
    ppid=$(awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$pid/stat" 2>/dev/null || true)
    [[ $ppid == "$HUB_PID" ]] || fail "module pid $pid is not a child of the hub (its parent is ${ppid:-gone})."
done
ok "3 of 3 modules running, each a child of the hub, which is the unit's main process (pid $HUB_PID)."

# --------------------------------------------------------------------------- 7. crash

VICTIM=${SHORTS[0]}
OLD_PID=$(json "$TMP/status.json" "[m['pid'] for m in v['modules'] if m['short'] == '$VICTIM'][0]") ||
    fail "no pid for $VICTIM in parachute status --json." "$(cat "$TMP/status.json")"
step "A module crashes: the hub restarts it"
show kill -KILL "$OLD_PID" || fail "could not SIGKILL pid $OLD_PID."
kill -KILL "$OLD_PID"
NEW_PID=""
restarted() {
    in_sandbox parachute status --home "$H" --json >"$TMP/status.json" 2>/dev/null || return 1
    NEW_PID=$(json "$TMP/status.json" "([m.get('pid') for m in v['modules'] if m['short'] == '$VICTIM' and m['status'] == 'running'] or [None])[0]")
    [[ -n $NEW_PID && $NEW_PID != "$OLD_PID" ]] && listening "${PORTS[0]}"
}
wait_until 20 restarted || fail "$VICTIM did not come back with a new pid after SIGKILL." "$(cat "$TMP/status.json")"
show parachute status --home "$H"
in_sandbox parachute status --home "$H" 2>&1 | indent || fail "parachute status failed."
ok "$VICTIM was pid $OLD_PID, now pid $NEW_PID (the RESTARTS column counts the crash)."

# --------------------------------------------------------------------------- 8. logs

step "Logs: the module's output, kept by the hub across the crash"
show parachute logs "$VICTIM" --home "$H"
in_sandbox parachute logs "$VICTIM" --home "$H" >"$TMP/logs.out" 2>&1 || fail "parachute logs failed." "$(cat "$TMP/logs.out")"
indent <"$TMP/logs.out"
grep -q "ready pid=$NEW_PID" "$TMP/logs.out" || fail "the log does not show the new process (ready pid=$NEW_PID)."
grep -q "ready pid=$OLD_PID" "$TMP/logs.out" || fail "the log lost the first process's lines (ready pid=$OLD_PID)."
ok "both lives of $VICTIM are in one buffer (\`parachute logs -f\` follows it)."

# --------------------------------------------------------------------------- 9. upgrade

step "A package upgrade: the hub replaces its own image, no module restarts"
in_sandbox parachute unit status --scope user --home "$H" --json >"$TMP/unit.json" 2>/dev/null ||
    fail "parachute unit status failed."
RESTARTS=$(json "$TMP/unit.json" 'v["status"].get("restarts")') || true
in_sandbox parachute status --home "$H" --json >"$TMP/before.json" 2>/dev/null || fail "parachute status failed."
MODULE_PIDS=$(json "$TMP/before.json" '" ".join(m["short"] + "=" + str(m["pid"]) for m in v["modules"])')
# A "rebuilt" binary: this one with a different GNU build id, renamed over the unit's
# binary as dpkg or rpm does (the running hub keeps the old file open).
python3 - "$TMP/bin/parachute" "$TMP/bin/.parachute.new" <<'PY' || fail "could not make a rebuilt binary."
import sys
b = bytearray(open(sys.argv[1], "rb").read())
at = b.find(b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00")
assert at >= 0, "no GNU build id note"
b[at + 16] ^= 0xFF
open(sys.argv[2], "wb").write(b)
PY
chmod 0755 "$TMP/bin/.parachute.new"
mv -f "$TMP/bin/.parachute.new" "$TMP/bin/parachute"
say "The unit's binary was replaced (a new build id); now the package's postinstall hook runs:"
show parachute postinstall --upgrade --exec "$TMP/bin/parachute"
rc=0
in_sandbox parachute postinstall --upgrade --exec "$TMP/bin/parachute" >"$TMP/upgrade.out" 2>&1 </dev/null || rc=$?
indent <"$TMP/upgrade.out"
[[ $rc == 0 ]] && grep -q "upgraded in place (pid $HUB_PID kept, 3 modules kept running)" "$TMP/upgrade.out" ||
    fail "postinstall --upgrade did not upgrade the hub in place (exit $rc)."
in_sandbox parachute unit status --scope user --home "$H" --json >"$TMP/unit.json" 2>/dev/null ||
    fail "parachute unit status failed."
[[ $(json "$TMP/unit.json" 'v["status"]["main_pid"]') == "$HUB_PID" ]] || fail "the unit has a new main process."
[[ $(json "$TMP/unit.json" 'v["status"].get("restarts")') == "$RESTARTS" ]] || fail "systemd counted a restart."
in_sandbox parachute status --home "$H" --json >"$TMP/after.json" 2>/dev/null || fail "parachute status failed."
[[ $(json "$TMP/after.json" '" ".join(m["short"] + "=" + str(m["pid"]) for m in v["modules"])') == "$MODULE_PIDS" ]] ||
    fail "a module was restarted by the upgrade." "before: $MODULE_PIDS" "after: $(cat "$TMP/after.json")"
[[ $(readlink "/proc/$HUB_PID/exe") == "$TMP/bin/parachute" ]] || fail "the hub does not run the new file."
ok "same hub pid $HUB_PID (systemd saw no restart), now the new build; modules kept: $MODULE_PIDS."

# --------------------------------------------------------------------------- 10. teardown

step "Teardown: remove the hub unit"
show parachute migrate --teardown --scope user --home "$H"
rc=0
in_sandbox parachute migrate --teardown --scope user --home "$H" >"$TMP/teardown.out" 2>&1 </dev/null || rc=$?
indent <"$TMP/teardown.out"
[[ $rc == 0 ]] && grep -q "Removed the hub unit" "$TMP/teardown.out" || fail "teardown exited $rc without removing the unit."
[[ ! -e $UNIT_FILE ]] || fail "the unit file $UNIT_FILE is still there."
nothing_listens() {
    local p
    for p in "$HUB_PORT" "${PORTS[@]}"; do
        ! listening "$p" || return 1
    done
}
wait_until 15 nothing_listens || fail "something still listens on one of the ports $HUB_PORT ${PORTS[*]}."
ok "the unit is gone and nothing listens on ports $HUB_PORT ${PORTS[*]}."
