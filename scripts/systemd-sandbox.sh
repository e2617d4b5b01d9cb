#!/usr/bin/env bash
# systemd-sandbox.sh — a private, throw-away `systemd --user` for tests, on a host whose
# PID 1 is not systemd.
#
# Why it has this shape (each point comes from a failure seen on such hosts):
#   * Each sandbox gets its own cgroup (/systemd-sandbox-<hash>.slice/user-0.slice/
#     user@0.service, in the name=systemd and the cgroup2 trees) and the manager is moved
#     there before exec: a manager started in a shared cgroup takes "/" as its root, so two
#     sandboxes' units collide and an exiting manager trims every empty cgroup on the box.
#   * The manager needs the sd_booted() marker /run/systemd/system. It lives on a tmpfs in a
#     private mount namespace (setsid unshare --mount --propagation slave); a global marker
#     makes dpkg scripts and libsystemd users believe systemd is PID 1.
#   * A private journald runs in that namespace, with DIR/journal bind-mounted over the
#     journal directory: without it unit output is lost and the manager logs to the console.
#   * dbus-daemon is NOT started here: the manager's own dbus.socket (dbus-user-session)
#     socket-activates it; a daemon started by hand is silently replaced.
#   * SANDBOX_OWNER_PID is a dead-man switch: a detached watcher runs `stop` once that pid
#     dies, so a crashed test leaves no manager, unit process or cgroup behind.
#
# Usage:
#   systemd-sandbox.sh start [--plain] [DIR]   start; print `export K=V` (or `K=V`) lines
#   systemd-sandbox.sh env DIR [--plain]       print the same lines again
#   systemd-sandbox.sh status DIR              is it running? (exit 0 yes, 3 no)
#   systemd-sandbox.sh exec DIR -- CMD...      run CMD in the sandbox's namespace and env
#   systemd-sandbox.sh stop DIR                stop and remove everything (idempotent)
#   systemd-sandbox.sh run -- CMD...           start, run CMD inside, stop; CMD's exit code
#   systemd-sandbox.sh selfcheck               end-to-end check that sandboxes work here
#
# Environment knobs: SANDBOX_OWNER_PID, SANDBOX_START_TIMEOUT (s, default 30),
# SANDBOX_STOP_TIMEOUT (s, default 20), SANDBOX_OWN_DBUS_UNITS=1 (write our own
# dbus.socket/dbus.service even if the OS ships them), SANDBOX_JOURNAL_NO_RATE_LIMIT=1
# (journald's RateLimitIntervalSec=0: for throughput benchmarks).
#
# Requires root (creating cgroups in the name=systemd tree and mounting need it); the
# manager runs as root, i.e. as user@0.service.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
MARKER=.systemd-sandbox
CGROOT=/sys/fs/cgroup

die() {
    echo "systemd-sandbox: $*" >&2
    exit 1
}

find_bin() {
    local c
    for c in "$@"; do
        [[ -x $c ]] && { echo "$c"; return 0; }
    done
    return 1
}

# The cgroup hierarchies a sandbox lives in, as mount points: name=systemd (v1) and the
# cgroup2 tree, whichever this host has.
hierarchies() {
    if [[ -e $CGROOT/cgroup.controllers ]]; then
        echo "$CGROOT" # pure cgroup2
        return
    fi
    [[ -d $CGROOT/systemd ]] && echo "$CGROOT/systemd"
    [[ -e $CGROOT/unified/cgroup.controllers ]] && echo "$CGROOT/unified"
    return 0
}

unified_root() {
    if [[ -e $CGROOT/cgroup.controllers ]]; then
        echo "$CGROOT"
    elif [[ -e $CGROOT/unified/cgroup.controllers ]]; then
        echo "$CGROOT/unified"
    fi
}

slice_of() { # DIR -> slice name (unique per absolute DIR)
    local h
    h=$(printf '%s' "$1" | sha256sum | cut -c1-16)
    echo "systemd-sandbox-$h.slice"
}

abs_dir() { realpath -m -- "$1"; }

# Process state letter from /proc/PID/stat ("" when gone). Orphans of a non-systemd PID 1
# stay zombies for a while, so "is it alive" means "exists and is not Z".
proc_state() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    echo "${s%% *}"
}

alive() {
    local st
    st=$(proc_state "$1")
    [[ -n $st && $st != Z && $st != X ]]
}

# Field 22 of /proc/PID/stat: start time, to tell a pid from a later reuse of its number.
start_time() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    # after "pid (comm) " the fields start at 3; starttime is field 22 => index 19 here
    read -r -a f <<<"$s"
    echo "${f[19]}"
}

in_our_cgroup() { # PID SLICE
    grep -q "/$2/" "/proc/$1/cgroup" 2>/dev/null
}

env_lines() { # DIR PLAIN
    local d=$1 plain=$2 pid k v
    pid=$(cat "$d/manager.pid" 2>/dev/null || echo "")
    local -a kv=(
        "XDG_RUNTIME_DIR=$d/runtime"
        "DBUS_SESSION_BUS_ADDRESS=unix:path=$d/runtime/bus"
        "HOME=$d/home"
        "XDG_CONFIG_HOME=$d/config"
        "XDG_DATA_HOME=$d/data"
        "XDG_STATE_HOME=$d/state"
        "XDG_CACHE_HOME=$d/cache"
        "SYSTEMD_SANDBOX_DIR=$d"
        "SYSTEMD_SANDBOX_UNIT_DIR=$d/config/systemd/user"
        "SYSTEMD_SANDBOX_JOURNAL_DIR=$d/journal"
        "SYSTEMD_SANDBOX_PID=$pid"
    )
    for k in "${kv[@]}"; do
        if [[ $plain == 1 ]]; then
            echo "$k"
        else
            v=${k#*=}
            printf 'export %s=%q\n' "${k%%=*}" "$v"
        fi
    done
}

# ---------------------------------------------------------------------------------------
# start

write_dbus_units() { # UNITDIR — only when the OS lacks dbus-user-session's units
    local u=$1 daemon
    daemon=$(find_bin /usr/bin/dbus-daemon /bin/dbus-daemon) || die "dbus-daemon is not installed (apt-get install dbus dbus-user-session)."
    mkdir -p "$u/sockets.target.wants"
    cat >"$u/dbus.socket" <<'EOF'
[Unit]
Description=D-Bus User Message Bus Socket (systemd-sandbox)

[Socket]
ListenStream=%t/bus
ExecStartPost=-/bin/systemctl --user set-environment DBUS_SESSION_BUS_ADDRESS=unix:path=%t/bus

[Install]
WantedBy=sockets.target
EOF
    cat >"$u/dbus.service" <<EOF
[Unit]
Description=D-Bus User Message Bus (systemd-sandbox)
Requires=dbus.socket

[Service]
ExecStart=$daemon --session --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
ExecReload=$daemon --session --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
EOF
    ln -sf ../dbus.socket "$u/sockets.target.wants/dbus.socket"
}

# Runs inside the new mount namespace (as `bash -c` with the sandbox dir as $1): mounts,
# journald, cgroup move, exec of the manager. Written as a here-string so the whole script
# stays one file.
read -r -d '' INNER <<'INNER_EOF' || true
set -euo pipefail
d=$1 mcg=$2 jcg=$3 systemd_bin=$4 journald_bin=$5 persistent=$6 nolimit=$7
shift 7
# On a real host /run is a mount of its own. Where it is not (a microVM whose root holds
# /run), systemd 252 mounts a fresh tmpfs over it for units with API file-system options
# (ProtectControlGroups=, ProtectProc=, ...), and the journal's sockets vanish from their
# view: make it one, in this namespace only.
mountpoint -q /run || mount --bind /run /run
# Private /run/systemd (sd_booted() marker + journald sockets) and /run/log.
mount -t tmpfs -o mode=0755 sandbox-run-systemd /run/systemd
mkdir -p /run/systemd/system /run/systemd/journal /run/systemd/journald.conf.d
mkdir -p /run/log
mount -t tmpfs -o mode=0755 sandbox-run-log /run/log
if [[ $persistent == 1 ]]; then
    mount --bind "$d/journal" /var/log/journal
    storage=persistent
    # journald writes to /var only after a flush request; nothing else here sends one.
    touch /run/systemd/journal/flushed
else
    mkdir -p /run/log/journal
    mount --bind "$d/journal" /run/log/journal
    storage=volatile
fi
cat >/run/systemd/journald.conf.d/zz-systemd-sandbox.conf <<EOF
[Journal]
Storage=$storage
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
EOF
# journald applies a unit's LogRateLimitIntervalSec= only for system units (it reads it
# from /run/systemd/units/, which a user manager does not write): under this sandbox's
# user manager every unit gets journald's default limit. A throughput benchmark turns it
# off here (SANDBOX_JOURNAL_NO_RATE_LIMIT=1); docs/benchmarks.md says why.
if [[ $nolimit == 1 ]]; then
    printf 'RateLimitIntervalSec=0\n' >>/run/systemd/journald.conf.d/zz-systemd-sandbox.conf
fi
# journald in a sibling cgroup (the manager's root stays free of foreign processes).
(
    for p in "${@}"; do echo "$BASHPID" >"$p$jcg/cgroup.procs"; done
    export SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=warning
    exec "$journald_bin" </dev/null >>"$d/journald.log" 2>&1
) &
echo $! >"$d/journald.pid"
for _ in $(seq 1 500); do
    [[ -S /run/systemd/journal/socket && -S /run/systemd/journal/stdout ]] && break
    sleep 0.01
done
[[ -S /run/systemd/journal/socket ]] || { echo "journald did not create its socket" >&2; exit 1; }
# Move ourselves (and so the manager we become) into the sandbox cgroup, then exec.
for p in "${@}"; do echo "$$" >"$p$mcg/cgroup.procs"; done
echo "$$" >"$d/manager.pid"
exec env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 USER=root LOGNAME=root SHELL=/bin/sh \
    HOME="$d/home" XDG_CONFIG_HOME="$d/config" XDG_DATA_HOME="$d/data" \
    XDG_STATE_HOME="$d/state" XDG_CACHE_HOME="$d/cache" XDG_RUNTIME_DIR="$d/runtime" \
    "$systemd_bin" --user --log-target=journal
INNER_EOF

cmd_start() {
    local plain=0 dir=""
    while (($#)); do
        case $1 in
            --plain) plain=1 ;;
            -*) die "start: unknown option $1" ;;
            *) [[ -z $dir ]] || die "start: one DIR only"; dir=$1 ;;
        esac
        shift
    done
    [[ $(id -u) == 0 ]] || die "start needs root (cgroups in the name=systemd tree and mounts); run as root."
    local systemd_bin journald_bin
    systemd_bin=$(find_bin /lib/systemd/systemd /usr/lib/systemd/systemd) || die "systemd is not installed (apt-get install systemd)."
    journald_bin=$(find_bin /lib/systemd/systemd-journald /usr/lib/systemd/systemd-journald) || die "systemd-journald is not installed."
    command -v busctl >/dev/null || die "busctl is missing (part of the systemd package)."
    command -v unshare >/dev/null && command -v nsenter >/dev/null || die "unshare/nsenter are missing (apt-get install util-linux)."

    if [[ -z $dir ]]; then
        dir=$(mktemp -d /tmp/systemd-sandbox.XXXXXXXX)
    else
        mkdir -p -- "$dir"
    fi
    dir=$(abs_dir "$dir")
    [[ $dir != *[[:space:]]* && $dir != *[[:cntrl:]]* ]] || die "start: DIR must not contain whitespace or control characters: $dir"
    if [[ -e $dir/manager.pid ]] && alive "$(cat "$dir/manager.pid")"; then
        die "start: a sandbox is already running in $dir (stop it first)."
    fi
    if [[ ! -e $dir/$MARKER ]] && [[ -n $(ls -A -- "$dir") ]]; then
        die "start: $dir is not empty and not a sandbox dir; refusing (stop would delete it)."
    fi
    touch "$dir/$MARKER"
    mkdir -p "$dir"/{home,config/systemd/user,data,state,cache,journal}
    install -d -m 0700 "$dir/runtime"
    rm -f "$dir/manager.pid" "$dir/journald.pid"
    cat >"$dir/config/systemd/user.conf" <<'EOF'
[Manager]
DefaultTimeoutStartSec=10s
DefaultTimeoutStopSec=10s
EOF
    if [[ ${SANDBOX_OWN_DBUS_UNITS:-0} == 1 ]] || ! [[ -e /usr/lib/systemd/user/dbus.socket || -e /lib/systemd/user/dbus.socket ]]; then
        write_dbus_units "$dir/config/systemd/user"
    fi

    local slice mcg jcg h
    slice=$(slice_of "$dir")
    mcg="/$slice/user-0.slice/user@0.service"
    jcg="/$slice/journald.scope"
    local -a hs
    mapfile -t hs < <(hierarchies)
    ((${#hs[@]})) || die "no name=systemd or cgroup2 hierarchy under $CGROOT."
    for h in "${hs[@]}"; do
        mkdir -p "$h$mcg" "$h$jcg"
    done
    local persistent=0
    [[ -d /var/log/journal ]] && persistent=1

    # The watcher (dead-man switch) first, so even a failed start is cleaned up.
    if [[ -n ${SANDBOX_OWNER_PID:-} ]]; then
        local owner=$SANDBOX_OWNER_PID ost
        ost=$(start_time "$owner")
        [[ -n $ost ]] || die "SANDBOX_OWNER_PID=$owner is not a running process."
        setsid bash "$SELF" __watch "$dir" "$owner" "$ost" </dev/null >/dev/null 2>&1 &
        echo $! >"$dir/watcher.pid"
    fi

    # stdio to files: a caller reading our stdout must see EOF when we exit.
    setsid unshare --mount --propagation slave -- bash -c "$INNER" inner \
        "$dir" "$mcg" "$jcg" "$systemd_bin" "$journald_bin" "$persistent" "${SANDBOX_JOURNAL_NO_RATE_LIMIT:-0}" "${hs[@]}" \
        </dev/null >>"$dir/manager.log" 2>&1 &

    local timeout=${SANDBOX_START_TIMEOUT:-30} t0=$SECONDS pid="" state="" owner_ok
    fail_start() {
        echo "systemd-sandbox: start failed: $1" >&2
        echo "--- $dir/manager.log (tail) ---" >&2
        tail -n 20 "$dir/manager.log" >&2 2>/dev/null || true
        "$SELF" stop "$dir" >&2 || true
        exit 1
    }
    # (a) the manager's private socket
    while :; do
        [[ -z $pid && -s $dir/manager.pid ]] && pid=$(cat "$dir/manager.pid")
        [[ -n $pid && -S $dir/runtime/systemd/private ]] && break
        if [[ -n $pid ]] && ! alive "$pid"; then fail_start "the manager (pid $pid) exited"; fi
        ((SECONDS - t0 < timeout)) || fail_start "no private socket after ${timeout}s"
        sleep 0.01
    done
    # (b) SystemState running/degraded (jobs queued while "starting" are fine, but the
    # bus socket only exists once sockets.target is reached)
    while :; do
        state=$(XDG_RUNTIME_DIR=$dir/runtime systemctl --user show -p SystemState --value 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        alive "$pid" || fail_start "the manager (pid $pid) exited"
        ((SECONDS - t0 < timeout)) || fail_start "SystemState is '$state' after ${timeout}s"
        sleep 0.01
    done
    # (c) org.freedesktop.systemd1 owned on the session bus (this also starts dbus-daemon)
    while :; do
        if [[ -S $dir/runtime/bus ]] &&
            [[ $(busctl --address="unix:path=$dir/runtime/bus" call org.freedesktop.DBus /org/freedesktop/DBus \
                org.freedesktop.DBus NameHasOwner s org.freedesktop.systemd1 2>/dev/null) == "b true" ]]; then
            break
        fi
        alive "$pid" || fail_start "the manager (pid $pid) exited"
        ((SECONDS - t0 < timeout)) || fail_start "org.freedesktop.systemd1 not on the session bus after ${timeout}s"
        sleep 0.01
    done
    env_lines "$dir" "$plain"
}

# ---------------------------------------------------------------------------------------
# stop

cmd_stop() {
    [[ $# -ge 1 ]] || die "usage: stop DIR"
    local dir rc=0
    dir=$(abs_dir "$1")
    local slice timeout=${SANDBOX_STOP_TIMEOUT:-20}
    slice=$(slice_of "$dir")
    if [[ -e $dir && ! -e $dir/$MARKER ]]; then
        die "stop: $dir has no $MARKER marker; not touching it."
    fi

    # The watcher, unless we are it.
    if [[ -s $dir/watcher.pid ]]; then
        local w
        w=$(cat "$dir/watcher.pid")
        if [[ $w != "$$" ]] && alive "$w" && grep -qa -- "__watch" "/proc/$w/cmdline" 2>/dev/null; then
            kill -TERM "$w" 2>/dev/null || true
        fi
    fi

    # 1. SIGTERM the manager: it stops every unit (ExecStop runs), then exits.
    local pid
    pid=$(cat "$dir/manager.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && alive "$pid" && in_our_cgroup "$pid" "$slice"; then
        kill -TERM "$pid" 2>/dev/null || true
        local t0=$SECONDS
        while alive "$pid" && ((SECONDS - t0 < timeout)); do sleep 0.02; done
        if alive "$pid"; then
            echo "systemd-sandbox: manager $pid did not exit within ${timeout}s; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # 2. journald
    local j
    j=$(cat "$dir/journald.pid" 2>/dev/null || true)
    if [[ -n $j ]] && alive "$j" && in_our_cgroup "$j" "$slice"; then
        kill -TERM "$j" 2>/dev/null || true
        local t1=$SECONDS
        while alive "$j" && ((SECONDS - t1 < 5)); do sleep 0.02; done
    fi

    # 3. sweep whatever is left in our cgroup (orphans, a killed manager's units), then
    # 4. rmdir depth first, retrying while zombies drain.
    local -a hs
    mapfile -t hs < <(hierarchies)
    local u h t2=$SECONDS left
    u=$(unified_root)
    while :; do
        left=0
        if [[ -n $u && -e $u/$slice/cgroup.kill ]]; then
            echo 1 >"$u/$slice/cgroup.kill" 2>/dev/null || true
        fi
        for h in "${hs[@]}"; do
            [[ -d $h/$slice ]] || continue
            while IFS= read -r -d '' f; do
                while read -r p; do
                    [[ -n $p ]] || continue
                    kill -KILL "$p" 2>/dev/null || true
                    left=1
                done <"$f"
            done < <(find "$h/$slice" -name cgroup.procs -print0 2>/dev/null)
            find "$h/$slice" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [[ -d $h/$slice ]] && left=1
        done
        ((left == 0)) && break
        if ((SECONDS - t2 >= 10)); then
            echo "systemd-sandbox: could not remove cgroup $slice (processes left?)" >&2
            rc=1
            break
        fi
        sleep 0.05
    done

    # 5. the directory, only if it is ours and nothing is left in the cgroup
    if ((rc == 0)) && [[ -e $dir/$MARKER ]]; then
        rm -rf --one-file-system -- "$dir"
    fi
    return $rc
}

cmd_watch() { # DIR OWNER OWNER_START_TIME (internal)
    local dir=$1 owner=$2 ost=$3
    while [[ -e $dir/$MARKER ]]; do
        if ! alive "$owner" || [[ $(start_time "$owner") != "$ost" ]]; then
            exec bash "$SELF" stop "$dir"
        fi
        sleep 0.25
    done
}

# ---------------------------------------------------------------------------------------
# status / env / exec / run

cmd_status() {
    [[ $# -ge 1 ]] || die "usage: status DIR"
    local dir pid state slice
    dir=$(abs_dir "$1")
    slice=$(slice_of "$dir")
    pid=$(cat "$dir/manager.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && alive "$pid" && in_our_cgroup "$pid" "$slice"; then
        state=$(XDG_RUNTIME_DIR=$dir/runtime systemctl --user show -p SystemState --value 2>/dev/null || echo unknown)
        echo "running: dir=$dir pid=$pid state=$state cgroup=/$slice"
        return 0
    fi
    echo "stopped: dir=$dir"
    return 3
}

cmd_env() {
    [[ $# -ge 1 ]] || die "usage: env DIR [--plain]"
    local dir plain=0
    dir=$(abs_dir "$1")
    [[ ${2:-} == --plain ]] && plain=1
    [[ -e $dir/$MARKER ]] || die "env: $dir is not a sandbox dir."
    env_lines "$dir" "$plain"
}

cmd_exec() {
    [[ $# -ge 1 ]] || die "usage: exec DIR -- CMD..."
    local dir pid
    dir=$(abs_dir "$1")
    shift
    [[ ${1:-} == -- ]] && shift
    (($#)) || die "exec: no command given"
    pid=$(cat "$dir/manager.pid" 2>/dev/null || true)
    [[ -n $pid ]] && alive "$pid" || die "exec: no sandbox running in $dir."
    local -a vars
    mapfile -t vars < <(env_lines "$dir" 1)
    exec nsenter --target "$pid" --mount -- env "${vars[@]}" "$@"
}

cmd_run() {
    [[ ${1:-} == -- ]] && shift
    (($#)) || die "usage: run -- CMD..."
    local rc=0
    # global: the EXIT trap runs after this function has returned
    RUN_DIR=$(SANDBOX_OWNER_PID=$$ "$SELF" start --plain | sed -n 's/^SYSTEMD_SANDBOX_DIR=//p')
    [[ -n $RUN_DIR ]] || die "run: start failed"
    trap '"$SELF" stop "$RUN_DIR" >&2 || true' EXIT
    trap 'exit 130' INT TERM
    "$SELF" exec "$RUN_DIR" -- "$@" || rc=$?
    return $rc
}

# ---------------------------------------------------------------------------------------
# selfcheck: what CI runs once before the tests

cmd_selfcheck() {
    local dir out pid main slice hadmarker=0 bus
    [[ -e /run/systemd/system ]] && hadmarker=1
    echo "selfcheck: starting a sandbox"
    out=$(SANDBOX_OWNER_PID=$$ "$SELF" start --plain) || die "selfcheck FAILED: the sandbox did not start (see messages above)."
    dir=$(sed -n 's/^SYSTEMD_SANDBOX_DIR=//p' <<<"$out")
    pid=$(sed -n 's/^SYSTEMD_SANDBOX_PID=//p' <<<"$out")
    slice=$(slice_of "$dir")
    bus="unix:path=$dir/runtime/bus"
    fail() {
        echo "selfcheck FAILED: $*" >&2
        tail -n 20 "$dir/manager.log" >&2 2>/dev/null || true
        "$SELF" stop "$dir" >&2 || true
        exit 1
    }
    local m=(org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager)
    cat >"$dir/config/systemd/user/selfcheck.service" <<'EOF'
[Service]
ExecStart=/bin/sleep 300
EOF
    busctl --address="$bus" call "${m[@]}" Reload >/dev/null || fail "Reload over busctl failed."
    busctl --address="$bus" call "${m[@]}" StartUnit ss selfcheck.service replace >/dev/null ||
        fail "StartUnit selfcheck.service over busctl failed."
    local t0=$SECONDS active=""
    while ((SECONDS - t0 < 10)); do
        active=$(busctl --address="$bus" get-property org.freedesktop.systemd1 \
            /org/freedesktop/systemd1/unit/selfcheck_2eservice org.freedesktop.systemd1.Unit ActiveState 2>/dev/null || true)
        [[ $active == 's "active"' ]] && break
        sleep 0.02
    done
    [[ $active == 's "active"' ]] || fail "selfcheck.service did not become active (ActiveState: $active)."
    main=$(busctl --address="$bus" get-property org.freedesktop.systemd1 \
        /org/freedesktop/systemd1/unit/selfcheck_2eservice org.freedesktop.systemd1.Service MainPID | cut -d' ' -f2)
    [[ $main -gt 0 ]] && alive "$main" || fail "selfcheck.service has no running main process (MainPID=$main)."
    grep -q "/$slice/user-0.slice/user@0.service/app.slice/selfcheck.service" "/proc/$main/cgroup" ||
        fail "the unit's process is not in the sandbox's own cgroup: $(cat "/proc/$main/cgroup")"
    if ((hadmarker == 0)) && [[ -e /run/systemd/system ]]; then
        fail "a global /run/systemd/system marker appeared outside the sandbox namespace."
    fi
    echo "selfcheck: unit ran as pid $main in /$slice; stopping"
    "$SELF" stop "$dir" || fail "stop failed."
    alive "$main" && fail "the unit's process $main survived stop."
    alive "$pid" && fail "the manager $pid survived stop."
    local h
    for h in $(hierarchies); do
        [[ -d $h/$slice ]] && fail "cgroup $h/$slice is left over after stop."
    done
    [[ -e $dir ]] && fail "$dir is left over after stop."
    echo "selfcheck: OK (systemd --user sandboxes work on this machine)"
}

usage() {
    sed -n '/^# Usage:/,/^# Requires root/p' "$SELF" | sed 's/^# \{0,1\}//'
}

main() {
    local sub=${1:-}
    (($#)) && shift
    case $sub in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        env) cmd_env "$@" ;;
        exec) cmd_exec "$@" ;;
        run) cmd_run "$@" ;;
        selfcheck) cmd_selfcheck "$@" ;;
        __watch) cmd_watch "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
