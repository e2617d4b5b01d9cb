#!/usr/bin/env python3
"""Module downtime during a hub upgrade, today's way: the hub is restarted (SIGTERM, then a
new `parachute serve`), which stops and restarts every module. A client connects to one
module's port every millisecond across the restart; the downtime is the gap between the last
connection accepted before and the first accepted after. Also reported: the module pid
(it changes on a restart; the in-place upgrade of issue 17 keeps it, which is its whole
point). Release build; not run by CI.

    cargo build --release --bins && scripts/bench/upgrade_downtime.py [--rounds 5] [--listen-delay-ms 0] [--tool pm2]

--tool pm2 runs the same module under pm2 (its own PM2_HOME in a temporary directory) and
upgrades with `pm2 update` (pm2's own daemon upgrade: save, kill the daemon, resurrect).

--listen-delay-ms plays a module that warms up before it listens (issue 17's "a module that
takes 20 s to warm up is down for 20 s").
"""
import argparse, json, os, socket, subprocess, tempfile, threading, time, urllib.request

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--listen-delay-ms", type=int, default=0)
ap.add_argument("--tool", choices=["parachute", "pm2"], default="parachute")
a = ap.parse_args()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

d = tempfile.mkdtemp(prefix="parachute-upgrade-bench-")
os.makedirs(f"{d}/home"); os.makedirs(f"{d}/m/.parachute")
mp, hp = free_port(), free_port()
cmd = [f"{root}/target/release/parachute-fixture", "--port", str(mp), "--listen-delay-ms", str(a.listen_delay_ms)]
json.dump({"name": "m", "startCmd": cmd}, open(f"{d}/m/.parachute/module.json", "w"))
json.dump({"services": [{"name": "m", "port": mp, "paths": ["/m"], "health": "/health", "version": "1",
                         "installDir": f"{d}/m"}]}, open(f"{d}/home/services.json", "w"))

def start_hub():
    return subprocess.Popen([f"{root}/target/release/parachute", "serve", "--home", f"{d}/home", "--port", str(hp)],
                            env={"PATH": "/usr/bin:/bin", "HOME": d}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

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
    try:
        socket.create_connection(("127.0.0.1", mp), timeout=0.5).close(); return True
    except OSError:
        return False

def wait_up(deadline=60):
    end = time.time() + deadline
    while not up():
        if time.time() > end: raise SystemExit("the module never listened")
        time.sleep(0.005)

hub = start_hub()
gaps = []
try:
    wait_up()
    for _ in range(a.rounds):
        before = module_pid()
        stop = threading.Event(); seen = []
        def poll():
            while not stop.is_set():
                seen.append((time.perf_counter(), up())); time.sleep(0.001)
        t = threading.Thread(target=poll); t.start()
        time.sleep(0.05)
        hub.terminate(); hub.wait(timeout=30)
        if a.tool == "parachute":
            hub = start_hub()
        wait_up(); time.sleep(0.05)
        stop.set(); t.join()
        last_ok = max(ts for ts, ok in seen if ok and ts < min(ts2 for ts2, ok2 in seen if not ok2))
        first_back = min(ts for ts, ok in seen if ok and ts > last_ok and any(not o for t2, o in seen if last_ok < t2 < ts))
        gaps.append(first_back - last_ok)
        after = None
        for _ in range(100):
            try: after = module_pid(); break
            except OSError: time.sleep(0.05)
        print(f"{a.tool}: module down {gaps[-1]*1000:7.1f} ms, pid {before} -> {after}")
    gaps.sort()
    print(f"{a.tool}, {a.rounds} rounds, listen delay {a.listen_delay_ms} ms: median {gaps[len(gaps)//2]*1000:.1f} ms, "
          f"max {gaps[-1]*1000:.1f} ms")
finally:
    if a.tool == "pm2":
        pm2("kill")
    else:
        hub.terminate(); hub.wait(timeout=30)
