#!/usr/bin/env bash
# systemd-nspawn-sandbox.sh — a throw-away *system-mode* systemd (PID 1 of a container) for
# tests of the system scope, sudo and the package hooks, on a host whose PID 1 is not systemd.
#
# Why it has this shape (docs: ../docs/testing.md, findings: systemd-sandbox.md §5):
#   * The container boots a copy-on-write view of this machine's own root: `/` is bind-mounted
#     (non-recursively) onto DIR/root in a private mount namespace and systemd-nspawn
#     --volatile=overlay puts a tmpfs over it. Every write inside — /etc/passwd, units in
#     /etc/systemd/system, homes — lands in that tmpfs and is gone when the container halts.
#     No debootstrap, no download; the host's real units and users are never touched.
#   * nspawn wants /run/systemd on a tmpfs and a scope on the host's system bus; this host has
#     neither, so /run/systemd gets a tmpfs in the private mount namespace and nspawn runs with
#     --register=no --keep-unit.
#   * --private-network: the container's ports and loopback are its own.
#   * basic.target instead of multi-user.target: ~0.7 s instead of ~3 s, and none of the
#     host's enabled daemons (databases, getty) start inside.
#   * The directories given with --bind-ro (the built binaries, the repository) are bound at
#     the same path, because overlayfs must not see its lower layer change while mounted.
#   * SANDBOX_OWNER_PID is a dead-man switch: a detached watcher runs `stop` once that pid
#     dies, so a test binary that shares one container across its tests (or crashes) leaves
#     no container behind.
#
# Usage:
#   systemd-nspawn-sandbox.sh start DIR [--bind-ro PATH]...   boot; print K=V lines
#   systemd-nspawn-sandbox.sh env DIR                         print the same lines again
#   systemd-nspawn-sandbox.sh status DIR                      running? (exit 0 yes, 3 no)
#   systemd-nspawn-sandbox.sh adduser DIR NAME UID            create a user INSIDE the container
#   systemd-nspawn-sandbox.sh exec DIR [--as USER] -- CMD...  run CMD inside, as root or USER,
#                                                             with a clean login environment
#   systemd-nspawn-sandbox.sh stop DIR                        halt, remove DIR (idempotent)
#   systemd-nspawn-sandbox.sh selfcheck                       end-to-end check
#
# Environment knobs: SANDBOX_OWNER_PID, SANDBOX_START_TIMEOUT (s, default 30),
# SANDBOX_STOP_TIMEOUT (s, default 15), SANDBOX_UNIT (default basic.target).
#
# Requires root and the systemd-container package (systemd-nspawn).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
MARKER=.systemd-nspawn-sandbox
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
    echo "systemd-nspawn-sandbox: $*" >&2
    exit 1
}

abs_dir() { realpath -m -- "$1"; }

machine_of() { # DIR -> machine name, unique per absolute DIR
    echo "sysbox-$(printf '%s' "$1" | sha256sum | cut -c1-16)"
}

pid_alive() { # a pid that exists and is not a zombie
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $state != Z ]]
}

# The container's PID 1: the descendant of nspawn whose innermost pid is 1.
find_leader() {
    local nspawn=$1 queue=("$1") p c
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        if [[ $p != "$nspawn" ]] && grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then
            echo "$p"
            return 0
        fi
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do queue+=("$c"); done
    done
    return 1
}

leader_of() { # DIR -> leader pid, or fail
    local dir=$1 leader
    [[ -f $dir/leader.pid ]] || return 1
    leader=$(<"$dir/leader.pid")
    pid_alive "$leader" || return 1
    [[ -f $dir/nspawn.pid ]] && pid_alive "$(<"$dir/nspawn.pid")" || return 1
    echo "$leader"
}

print_env() {
    local dir=$1
    echo "SYSTEM_BOX_DIR=$dir"
    echo "SYSTEM_BOX_MACHINE=$(<"$dir/machine")"
    echo "SYSTEM_BOX_LEADER=$(<"$dir/leader.pid")"
    echo "SYSTEM_BOX_NSPAWN=$(<"$dir/nspawn.pid")"
    # Host-side view of the container's system bus and unit directory.
    echo "SYSTEM_BOX_BUS=unix:path=/proc/$(<"$dir/leader.pid")/root/run/dbus/system_bus_socket"
}

# Run CMD inside the container's namespaces (all of them: mount, pid, net, ipc, uts, cgroup).
in_box() {
    local leader=$1
    shift
    nsenter -t "$leader" -a -- "$@"
}

cmd_start() {
    local dir="" binds=()
    while (($#)); do
        case $1 in
        --bind-ro)
            [[ $# -ge 2 ]] || die "--bind-ro needs a path"
            binds+=("--bind-ro=$(abs_dir "$2")")
            shift 2
            ;;
        --bind-ro=*)
            binds+=("--bind-ro=$(abs_dir "${1#--bind-ro=}")")
            shift
            ;;
        -*) die "start: unknown option $1" ;;
        *)
            [[ -z $dir ]] || die "start: more than one DIR"
            dir=$1
            shift
            ;;
        esac
    done
    [[ -n $dir ]] || dir=$(mktemp -d /tmp/systemd-nspawn-sandbox.XXXXXX)
    dir=$(abs_dir "$dir")
    [[ $(id -u) == 0 ]] || die "needs root (mount namespaces, systemd-nspawn)"
    command -v systemd-nspawn >/dev/null || die "systemd-nspawn not found: apt-get install systemd-container"
    [[ -e $dir/$MARKER ]] && leader_of "$dir" >/dev/null && die "a sandbox already runs in $dir"
    mkdir -p "$dir/root"
    touch "$dir/$MARKER"
    local machine
    machine=$(machine_of "$dir")
    echo "$machine" >"$dir/machine"
    # The repository (scripts, packaging) is always visible, read-only, at its own path.
    binds+=("--bind-ro=$REPO")

    # In a private mount namespace: bind / (non-recursive, so no host mounts leak in), a
    # tmpfs on /run/systemd, then nspawn. nspawn's exit ends the namespace and its mounts.
    setsid unshare --mount --propagation private -- bash -c '
        set -e
        mount --bind / "$1/root"
        mount -t tmpfs -o mode=0755 tmpfs /run/systemd
        dir=$1 machine=$2 unit=$3
        shift 3
        exec systemd-nspawn --quiet -D "$dir/root" --volatile=overlay --register=no --keep-unit \
            --private-network --machine="$machine" --console=pipe "$@" \
            -b -- systemd.unit="$unit" systemd.show_status=0
    ' nspawn-sandbox "$dir" "$machine" "${SANDBOX_UNIT:-basic.target}" "${binds[@]}" \
        </dev/null >"$dir/console.log" 2>&1 &
    local nspawn=$!
    echo "$nspawn" >"$dir/nspawn.pid"

    local timeout=${SANDBOX_START_TIMEOUT:-30} start=$SECONDS leader="" state=""
    while ((SECONDS - start < timeout)); do
        pid_alive "$nspawn" || {
            tail -n 30 "$dir/console.log" >&2 || true
            die "systemd-nspawn exited during boot (log above, $dir/console.log)"
        }
        if [[ -z $leader ]]; then
            leader=$(find_leader "$nspawn" || true)
            [[ -n $leader ]] && echo "$leader" >"$dir/leader.pid"
        fi
        if [[ -n $leader ]]; then
            state=$(in_box "$leader" systemctl is-system-running 2>/dev/null || true)
            # "running" can come before the manager has registered on the (socket-activated)
            # system bus; clients need org.freedesktop.systemd1 there.
            if [[ $state == running || $state == degraded ]] && in_box "$leader" busctl --system call \
                org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s \
                org.freedesktop.systemd1 2>/dev/null | grep -q true; then
                break
            fi
        fi
        sleep 0.05
    done
    if ((SECONDS - start >= timeout)); then
        tail -n 30 "$dir/console.log" >&2 || true
        cmd_stop "$dir"
        die "the container did not finish booting within ${timeout}s (state '${state:-none}')"
    fi

    if [[ -n ${SANDBOX_OWNER_PID:-} ]]; then
        # Dead-man switch, detached from the caller's session and output.
        setsid bash -c '
            while kill -0 "$1" 2>/dev/null && [[ -e "$2/'"$MARKER"'" ]]; do sleep 0.5; done
            exec bash "$3" stop "$2"
        ' watcher "$SANDBOX_OWNER_PID" "$dir" "$SELF" </dev/null >/dev/null 2>&1 &
    fi
    print_env "$dir"
}

cmd_stop() {
    local dir
    dir=$(abs_dir "$1")
    [[ -d $dir ]] || return 0
    [[ -e $dir/$MARKER ]] || die "$dir is not a sandbox directory (no $MARKER)"
    if [[ -f $dir/nspawn.pid ]]; then
        local nspawn timeout=${SANDBOX_STOP_TIMEOUT:-15} start=$SECONDS
        nspawn=$(<"$dir/nspawn.pid")
        # Only our nspawn: the pid must still be systemd-nspawn on this directory.
        if pid_alive "$nspawn" && tr '\0' ' ' <"/proc/$nspawn/cmdline" 2>/dev/null | grep -qF -- "$dir/root"; then
            # SIGTERM: nspawn asks the container's PID 1 to halt (every unit stopped).
            kill -TERM "$nspawn" 2>/dev/null || true
            while pid_alive "$nspawn" && ((SECONDS - start < timeout)); do sleep 0.05; done
            if pid_alive "$nspawn"; then
                echo "systemd-nspawn-sandbox: container did not halt in ${timeout}s; killing it" >&2
                local leader
                leader=$(cat "$dir/leader.pid" 2>/dev/null || true)
                # Killing the container's PID 1 kills its whole pid namespace.
                [[ -n $leader ]] && pid_alive "$leader" && kill -KILL "$leader" 2>/dev/null || true
                kill -KILL "$nspawn" 2>/dev/null || true
                while pid_alive "$nspawn"; do sleep 0.05; done
            fi
        fi
    fi
    # The overlay's upper layer was a tmpfs in the namespace that just ended; DIR/root is an
    # empty mount point again on the host.
    mountpoint -q "$dir/root" 2>/dev/null && die "$dir/root is still mounted; refusing to remove it"
    rm -rf --one-file-system -- "$dir"
}

cmd_exec() {
    local dir=$1 user=""
    shift
    if [[ ${1:-} == --as ]]; then
        user=$2
        shift 2
    fi
    [[ ${1:-} == -- ]] && shift
    (($#)) || die "exec: no command"
    local leader
    leader=$(leader_of "$(abs_dir "$dir")") || die "no sandbox running in $dir"
    if [[ -z $user || $user == root ]]; then
        in_box "$leader" env -i PATH="$CLEAN_PATH" HOME=/root USER=root LOGNAME=root "$@"
    else
        local entry uid gid home
        entry=$(in_box "$leader" getent passwd "$user") || die "no user $user inside the container"
        IFS=: read -r _ _ uid gid _ home _ <<<"$entry"
        in_box "$leader" setpriv --reuid "$uid" --regid "$gid" --init-groups -- \
            env -i PATH="$CLEAN_PATH" HOME="$home" USER="$user" LOGNAME="$user" \
            XDG_RUNTIME_DIR="/run/user/$uid" "$@"
    fi
}

cmd_adduser() {
    local dir=$1 name=$2 uid=$3 leader
    leader=$(leader_of "$(abs_dir "$dir")") || die "no sandbox running in $dir"
    # useradd runs inside the container: /etc/passwd, /etc/shadow and /home/NAME are the
    # overlay's, never the host's.
    in_box "$leader" useradd --create-home --uid "$uid" --user-group --shell /bin/bash "$name"
}

cmd_selfcheck() {
    local dir
    dir=$(mktemp -d /tmp/systemd-nspawn-sandbox-check.XXXXXX)
    rmdir "$dir"
    local t0=$SECONDS
    trap 'cmd_stop "$dir" || true' EXIT
    cmd_start "$dir" >/dev/null
    local leader
    leader=$(<"$dir/leader.pid")
    local pid1
    pid1=$(cmd_exec "$dir" -- cat /proc/1/comm)
    [[ $pid1 == systemd ]] || die "selfcheck: PID 1 inside is '$pid1', not systemd"
    # A system unit, started by the container's manager.
    cmd_exec "$dir" -- sh -c 'printf "[Service]\nExecStart=/bin/sleep 600\n" >/etc/systemd/system/sbx-check.service'
    cmd_exec "$dir" -- systemctl daemon-reload
    cmd_exec "$dir" -- systemctl start sbx-check.service
    [[ $(cmd_exec "$dir" -- systemctl is-active sbx-check.service) == active ]] || die "selfcheck: unit not active"
    [[ ! -e /etc/systemd/system/sbx-check.service ]] || die "selfcheck: the unit leaked onto the host"
    # A real unprivileged user, inside only.
    local user=sbxcheck$$ uid=59999
    cmd_adduser "$dir" "$user" "$uid"
    getent passwd "$user" >/dev/null && die "selfcheck: the user leaked onto the host"
    [[ $(cmd_exec "$dir" --as "$user" -- id -u) == "$uid" ]] || die "selfcheck: exec --as did not drop to $uid"
    [[ $(cmd_exec "$dir" --as "$user" -- sh -c 'echo $HOME') == "/home/$user" ]] || die "selfcheck: wrong HOME"
    # The container's network is private: no host interface but lo.
    cmd_exec "$dir" -- ls /sys/class/net | grep -qvx lo && die "selfcheck: the network is not private"
    local nspawn
    nspawn=$(<"$dir/nspawn.pid")
    cmd_stop "$dir"
    trap - EXIT
    pid_alive "$nspawn" && die "selfcheck: nspawn still running after stop"
    pid_alive "$leader" && die "selfcheck: the container's PID 1 survived stop"
    [[ -e $dir ]] && die "selfcheck: $dir left behind"
    echo "systemd-nspawn-sandbox selfcheck: ok ($((SECONDS - t0))s)"
}

case ${1:-} in
start)
    shift
    cmd_start "$@"
    ;;
env)
    d=$(abs_dir "$2")
    leader_of "$d" >/dev/null || die "no sandbox running in $2"
    print_env "$d"
    ;;
status)
    leader_of "$(abs_dir "$2")" >/dev/null || exit 3
    ;;
adduser)
    [[ $# -eq 4 ]] || die "usage: adduser DIR NAME UID"
    cmd_adduser "$2" "$3" "$4"
    ;;
exec)
    shift
    cmd_exec "$@"
    ;;
stop)
    [[ $# -eq 2 ]] || die "usage: stop DIR"
    cmd_stop "$2"
    ;;
selfcheck) cmd_selfcheck ;;
*)
    sed -n '2,/^set -euo/p' "$SELF" | sed '$d'
    exit 2
    ;;
esac
