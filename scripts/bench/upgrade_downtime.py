#!/usr/bin/env python3
"""Module downtime during a hub upgrade. A client asks one module for an answer every
millisecond across the upgrade (connect, then read the fixture's `HTTP/1.0 200` line: a
module that is frozen or gone does not answer, even where the kernel would still accept the
connection); the downtime is the gap between the last answer before the first unanswered
probe and the first answer after. Also reported: the longest interval between two answers
in the round (the probe's own resolution when nothing failed), and the module pid before
and after. Release build; not run by CI.

    cargo build --release --bins && scripts/bench/upgrade_downtime.py [--rounds 5] [--listen-delay-ms 0] [--tool pm2] [--in-place | --idle]

Default: today's restart (SIGTERM, then a new `parachute serve`), which stops and restarts
every module.

--in-place (issue 17): the hub runs from a copy of the release binary; each round renames
a rebuilt copy over it (one byte of its GNU build id changed, so every round is a new build)
and runs `parachute upgrade --in-place`; the module keeps its process.

--idle does no upgrade at all (each round only waits --idle-ms): the probe's own floor for
"the longest interval between answers" on this machine at this load.

--tool pm2 runs the same module under pm2 (its own PM2_HOME in a temporary directory) and
upgrades with `pm2 update` (pm2's own daemon upgrade: save, kill the daemon, resurrect).

--listen-delay-ms plays a module that warms up before it listens (issue 17's "a module that
takes 20 s to warm up is down for 20 s").
"""
import argparse, json, os, shutil, socket, subprocess, tempfile, threading, time, urllib.request

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--listen-delay-ms", type=int, default=0)
ap.add_argument("--tool", choices=["parachute", "pm2"], default="parachute")
ap.add_argument("--in-place", action="store_true")
ap.add_argument("--idle", action="store_true")
ap.add_argument("--idle-ms", type=int, default=500)
a = ap.parse_args()
if (a.in_place or a.idle) and a.tool != "parachute" or (a.in_place and a.idle):
    raise SystemExit("--in-place and --idle are parachute's, and one at a time")
label = ("parachute in-place" if a.in_place else "no upgrade (idle)" if a.idle else
         "pm2 update" if a.tool == "pm2" else "parachute restart")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

d = tempfile.mkdtemp(prefix="parachute-upgrade-bench-")
os.makedirs(f"{d}/home"); os.makedirs(f"{d}/m/.parachute"); os.makedirs(f"{d}/bin")
mp, hp = free_port(), free_port()
cmd = [f"{root}/target/release/parachute-fixture", "--port", str(mp), "--listen-delay-ms", str(a.listen_delay_ms)]
json.dump({"name": "m", "startCmd": cmd}, open(f"{d}/m/.parachute/module.json", "w"))
json.dump({"services": [{"name": "m", "port": mp, "paths": ["/m"], "health": "/health", "version": "1",
                         "installDir": f"{d}/m"}]}, open(f"{d}/home/services.json", "w"))
release = f"{root}/target/release/parachute"
# The in-place upgrade execs the path the hub was started from: a copy we may replace.
hub_bin = f"{d}/bin/parachute" if a.in_place else release
if a.in_place:
    shutil.copy2(release, hub_bin)
hub_env = {"PATH": "/usr/bin:/bin", "HOME": d}

def start_hub():
    return subprocess.Popen([hub_bin, "serve", "--home", f"{d}/home", "--port", str(hp)],
                            env=hub_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def build_id_at(b):
    """Offset and length of the GNU build id: the note named GNU of type 3 (NT_GNU_BUILD_ID)."""
    i = 0
    while True:
        i = b.index(b"\x03\x00\x00\x00GNU\x00", i + 1)
        if b[i - 8:i - 4] == b"\x04\x00\x00\x00":
            return i + 8, int.from_bytes(b[i - 4:i], "little")

def health():
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{hp}/health", timeout=5).read())

class InPlaceHub:
    """Each `terminate` is one in-place upgrade onto a new build; the hub process stays."""
    def __init__(self):
        self.p = start_hub()
    def prepare(self):
        """The next build, staged beside the binary before the round's probe starts (13 MB of
        Python byte work would stall the probe thread, not the module)."""
        b = bytearray(open(hub_bin, "rb").read())
        at, n = build_id_at(b)
        b[at] ^= 0xff
        open(f"{d}/bin/.parachute.new", "wb").write(b); os.chmod(f"{d}/bin/.parachute.new", 0o755)
        self.want = b[at:at + n].hex()
    def terminate(self):
        os.rename(f"{d}/bin/.parachute.new", hub_bin)
        want = self.want
        r = subprocess.run([release, "upgrade", "--in-place", "--json", "--home", f"{d}/home"], env=hub_env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"upgrade --in-place failed ({r.returncode}): {r.stdout}{r.stderr}")
        h = health()
        if h.get("buildId") != want or h.get("pid") != self.p.pid:
            raise SystemExit(f"the hub is not the new build with the same pid: {h}")
    def wait(self, timeout=None):
        pass
    def stop(self):
        self.p.terminate(); self.p.wait(timeout=30)

class IdleHub:
    """No upgrade: each round only waits, so the probe's floor shows."""
    def __init__(self):
        self.p = start_hub()
    def terminate(self):
        time.sleep(a.idle_ms / 1000)
    def wait(self, timeout=None):
        pass
    def stop(self):
        self.p.terminate(); self.p.wait(timeout=30)

pm2_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": d, "PM2_HOME": f"{d}/pm2"}

def pm2(*args):
    return subprocess.run(["pm2", *args], env=pm2_env, capture_output=True, text=True, timeout=120).stdout

if a.tool == "pm2":
    class Pm2Hub:
        def __init__(self):
            pm2("start", cmd[0], "--name", "m", "--", *cmd[1:])
        def terminate(self):
            pm2("update")
        def wait(self, timeout=None):
            pass
    start_hub = Pm2Hub

def module_pid():
    if a.tool == "pm2":
        return next(p["pid"] for p in json.loads(pm2("jlist")) if p["name"] == "m")
    tok = open(f"{d}/home/operator.token").read().strip()
    r = urllib.request.Request(f"http://127.0.0.1:{hp}/api/modules/m", headers={"Authorization": "Bearer " + tok})
    j = json.loads(urllib.request.urlopen(r, timeout=2).read())
    return j.get("pid", j.get("state", {}).get("pid"))

def up():
    """The module answered: its `HTTP/1.0 200` line arrived (a frozen process sends none)."""
    try:
        with socket.create_connection(("127.0.0.1", mp), timeout=0.5) as s:
            return s.recv(16).startswith(b"HTTP/1.0 200")
    except OSError:
        return False

def wait_up(deadline=60):
    end = time.time() + deadline
    while not up():
        if time.time() > end: raise SystemExit("the module never listened")
        time.sleep(0.005)

hub = InPlaceHub() if a.in_place else IdleHub() if a.idle else start_hub()
gaps, spans = [], []
try:
    wait_up()
    for _ in range(a.rounds):
        before = module_pid()
        if a.in_place:
            hub.prepare()
        stop = threading.Event(); seen = []
        def poll():
            while not stop.is_set():
                seen.append((time.perf_counter(), up())); time.sleep(0.001)
        t = threading.Thread(target=poll); t.start()
        time.sleep(0.05)
        hub.terminate(); hub.wait(timeout=30)
        if a.tool == "parachute" and not (a.in_place or a.idle):
            hub = start_hub()
        wait_up(); time.sleep(0.05)
        stop.set(); t.join()
        fails = [ts for ts, ok in seen if not ok]
        if fails:
            last_ok = max(ts for ts, ok in seen if ok and ts < fails[0])
            first_back = min(ts for ts, ok in seen if ok and ts > last_ok and any(last_ok < f < ts for f in fails))
            gaps.append(first_back - last_ok)
        else:
            gaps.append(0.0)
        oks = [ts for ts, ok in seen if ok]
        spans.append(max(b - a_ for a_, b in zip(oks, oks[1:])))
        after = None
        for _ in range(100):
            try: after = module_pid(); break
            except OSError: time.sleep(0.05)
        print(f"{label}: module down {gaps[-1]*1000:7.1f} ms ({len(fails)} unanswered probes), "
              f"longest interval between answers {spans[-1]*1000:6.1f} ms, pid {before} -> {after}")
    gaps.sort(); spans.sort()
    print(f"{label}, {a.rounds} rounds, listen delay {a.listen_delay_ms} ms: downtime median "
          f"{gaps[len(gaps)//2]*1000:.1f} ms, max {gaps[-1]*1000:.1f} ms; longest interval between answers "
          f"median {spans[len(spans)//2]*1000:.1f} ms, max {spans[-1]*1000:.1f} ms")
finally:
    if a.tool == "pm2":
        pm2("kill")
    elif a.in_place or a.idle:
        hub.stop()
    else:
        hub.terminate(); hub.wait(timeout=30)
