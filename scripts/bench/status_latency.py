#!/usr/bin/env python3
"""What `parachute status` costs the hub: latency of GET /api/modules (every module's tree
measured: one /proc scan, one listen-table dump, memory and CPU of each member) and of
GET /api/modules/<one>, against GET /health (no measurement), with N fixture modules that
each have a child. Release build; not run by CI.

    cargo build --release --bins && scripts/bench/status_latency.py [--modules 20] [--requests 60]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, urllib.request

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--modules", type=int, default=20)
ap.add_argument("--requests", type=int, default=60)
a = ap.parse_args()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

d = tempfile.mkdtemp(prefix="parachute-status-bench-")
os.makedirs(f"{d}/home")
rows = []
for i in range(a.modules):
    p, m = free_port(), f"{d}/m{i}"
    os.makedirs(f"{m}/.parachute")
    cmd = [f"{root}/target/release/parachute-fixture", "--port", str(p), "--spawn-sleeper"]
    json.dump({"name": f"m{i}", "startCmd": cmd}, open(f"{m}/.parachute/module.json", "w"))
    rows.append({"name": f"m{i}", "port": p, "paths": [f"/m{i}"], "health": "/health", "version": "1", "installDir": m})
json.dump({"services": rows}, open(f"{d}/home/services.json", "w"))
hp = free_port()
hub = subprocess.Popen([f"{root}/target/release/parachute", "serve", "--home", f"{d}/home", "--port", str(hp)],
                       env={"PATH": "/usr/bin:/bin", "HOME": d}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.time() + 30
    while not os.path.exists(f"{d}/home/operator.token") and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3)
    tok = open(f"{d}/home/operator.token").read().strip()
    def get(path):
        r = urllib.request.Request(f"http://127.0.0.1:{hp}{path}", headers={"Authorization": "Bearer " + tok})
        return urllib.request.urlopen(r).read()
    procs = sum(1 for x in os.listdir("/proc") if x.isdigit())
    print(f"{a.modules} modules (2 processes each), {procs} processes on the host, {a.requests} requests each")
    for path in ["/health", "/api/modules/m0", "/api/modules"]:
        get(path)
        ts = []
        for _ in range(a.requests):
            t = time.perf_counter(); get(path); ts.append(time.perf_counter() - t)
        ts.sort()
        print(f"{path:18} median {ts[len(ts)//2]*1000:6.2f} ms   p90 {ts[int(len(ts)*0.9)]*1000:6.2f} ms")
finally:
    hub.terminate(); hub.wait(timeout=30)
