#!/usr/bin/env bash
# Crash-loop soak of `parachute serve`: 5 healthy modules and 5 crash-looping ones
# (`--max-crashes 1000000 --restart-delay-ms 0`), sampled every 10 s for threads, RSS,
# descriptors, zombie children and restarts, and a verdict against issue 16: threads and RSS at the
# end within 10 % of their value after the first minute, no descriptor or zombie growth.
#   scripts/soak.sh [--duration SECS]   (default 600; e.g. --duration 120 for a quick look)
# Needs Linux (/proc). Leaves nothing running: the hub is stopped with SIGTERM at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=600
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        *) echo "usage: scripts/soak.sh [--duration SECS]" >&2; exit 2 ;;
    esac
done
cargo build --release --bins --quiet
exec python3 - "$duration" "$PWD/target/release" <<'PY'
import json, os, signal, subprocess, sys, tempfile, time, socket

duration, bins = int(sys.argv[1]), sys.argv[2]
fixture, parachute = f"{bins}/parachute-fixture", f"{bins}/parachute"

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

home = tempfile.mkdtemp(prefix="parachute-soak-")
rows = []
def module(name, args):
    port = free_port()
    inst = os.path.join(home, "_inst", name)
    os.makedirs(os.path.join(inst, ".parachute"))
    with open(os.path.join(inst, ".parachute", "module.json"), "w") as f:
        json.dump({"name": name, "startCmd": [fixture, "--port", str(port)] + args}, f)
    rows.append({"name": name, "port": port, "paths": [f"/{name}"], "health": "/health",
                 "version": "1.0.0", "installDir": inst})
for i in range(5):
    module(f"soak-ok{i}", ["--stderr-lines", "5"])
for i, ms in enumerate([50, 87, 125, 162, 200]):
    module(f"soak-crash{i}", ["--exit-after-ms", str(ms), "--exit-code", "1", "--lines", "3"])
with open(os.path.join(home, "services.json"), "w") as f:
    json.dump({"services": rows}, f)

env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home}
log = open(os.path.join(home, "hub.log"), "wb")
hub = subprocess.Popen([parachute, "serve", "--home", home, "--port", str(free_port()),
                        "--max-crashes", "1000000", "--restart-delay-ms", "0"],
                       stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

def sample():
    pid = hub.pid
    st = open(f"/proc/{pid}/status").read()
    val = lambda k: int(next(l.split()[1] for l in st.splitlines() if l.startswith(k + ":")))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    zombies = children = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = open(f"/proc/{pid}/task/{task}/children").read().split()
        except OSError:
            continue
        for c in kids:
            try:
                state = open(f"/proc/{c}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            children += 1
            zombies += state == "Z"
    with open(os.path.join(home, "hub.log"), "rb") as f:
        restarts = f.read().count(b"); restart ")
    return val("Threads"), val("VmRSS"), fds, zombies, children, restarts

print(f"home {home}; hub pid {hub.pid}; {duration} s")
print(f"{'t(s)':>6} {'threads':>8} {'RSS KiB':>9} {'fds':>5} {'zombies':>8} {'children':>9} {'restarts':>9}")
rows_out, times = [], []
start = time.monotonic()
try:
    while True:
        t = time.monotonic() - start
        s = sample()
        rows_out.append(s)
        times.append(t)
        print(f"{t:6.0f} {s[0]:8} {s[1]:9} {s[2]:5} {s[3]:8} {s[4]:9} {s[5]:9}", flush=True)
        if t >= duration or hub.poll() is not None:
            break
        time.sleep(min(10, max(0.1, duration - t)))
finally:
    hub.send_signal(signal.SIGTERM)
    try:
        rc = hub.wait(30)
    except subprocess.TimeoutExpired:
        hub.kill(); rc = hub.wait()
# Issue 16's criterion: threads and RSS at the end within 10 % of their value after the first
# minute (the first sample at or after 60 s; for a shorter run, after the first 10 s, and the
# verdict says so), descriptors no higher, no zombie left between samples.
base_i = next((i for i, t in enumerate(times) if t >= 60), min(1, len(rows_out) - 1))
first, last = rows_out[base_i], rows_out[-1]
print(f"hub exit {rc}; baseline at {times[base_i]:.0f} s: threads {first[0]} -> {last[0]} "
      f"(max {max(r[0] for r in rows_out)}), "
      f"RSS {first[1]} -> {last[1]} KiB (max {max(r[1] for r in rows_out)}), "
      f"fds {first[2]} -> {last[2]}, zombies max {max(r[3] for r in rows_out)}, "
      f"restarts {last[5]} ({last[5] / max(1, time.monotonic() - start):.1f}/s)")
# Descriptors and zombies move with the crash timing (a spawn's pipes, a child not reaped yet
# at the instant of the sample): a leak raises even the lowest of the last three samples.
tail3 = rows_out[-3:]
flat = (last[0] <= first[0] * 1.1 and last[1] <= first[1] * 1.1
        and min(r[2] for r in tail3) <= first[2] and min(r[3] for r in tail3) == 0)
print(("FLAT" if flat else "NOT FLAT") + " (threads/RSS within 10 % of the baseline, lowest fd count of the last 3 samples no higher, a zombie-free sample among them)"
      + ("" if times[base_i] >= 60 else "; run shorter than the issue's 10 minutes"))
PY
