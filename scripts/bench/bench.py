#!/usr/bin/env python3
"""Side-by-side benchmark: `parachute serve` against supervisord (and pm2 when present).

Every tool supervises the same program (`parachute-fixture`, built in release mode) on the
same ports, and every figure is measured the same way, from outside, in one run:

  crash->ready   SIGKILL the module's port holder, time until the port accepts again from a
                 new process (median and p95 over --kills kills; restart delay 0 where the
                 tool allows it)
  log MB/s       one chatty child writes --chatty-mb MB of 100-byte lines; time until the
                 tool's sink (file) holds the child's final line
  RSS 50 idle    resident memory of the supervisor process (pm2: its daemon) with 50 idle
                 children
  start 50       launch the tool, time until all 50 ports accept
  stop 50        SIGTERM/stop, time until every child is gone and the ports are closed

Floors (no supervisor): raw pipe throughput of the same child into a file, and
fork+exec+bind of the fixture.

Usage: scripts/bench.sh [--kills N] [--children N] [--chatty-mb N] [--write docs/benchmarks.md]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")
PARACHUTE = os.path.join(REL, "parachute")
FIXTURE = os.path.join(REL, "parachute-fixture")


# --- measurement helpers -------------------------------------------------------------

def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def accepts(port):
    s = socket.socket()
    s.settimeout(0.05)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(cond, timeout, what, step=0.0005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def listen_inodes(port):
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        out.add(inode)
        except FileNotFoundError:
            pass
    return out


def holders(port):
    """Pids holding a LISTEN socket on `port`, read from /proc (no lsof)."""
    inodes = listen_inodes(port)
    if not inodes:
        return set()
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(pid))
        except OSError:
            continue
    return pids


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


# --- tools ---------------------------------------------------------------------------

class Parachute:
    name = "parachute"

    def __init__(self, work):
        self.work = work
        self.proc = None

    def configure(self, modules):
        home = os.path.join(self.work, "home")
        os.makedirs(home, exist_ok=True)
        rows = []
        for short, argv, port in modules:
            d = os.path.join(home, "modules", short)
            os.makedirs(os.path.join(d, ".parachute"), exist_ok=True)
            with open(os.path.join(d, ".parachute", "module.json"), "w") as f:
                json.dump({"startCmd": argv}, f)
            rows.append({"name": short, "port": port, "paths": [f"/{short}"], "health": "/health",
                         "version": "0.0.0", "installDir": d})
        with open(os.path.join(home, "services.json"), "w") as f:
            json.dump({"services": rows}, f, indent=2)
        self.home = home

    def start(self, sink):
        hub_port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [PARACHUTE, "serve", "--home", self.home, "--port", str(hub_port),
             "--restart-delay-ms", "0", "--max-crashes", "100000"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc.pid

    def supervisor_pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class Supervisord:
    name = "supervisord"

    def __init__(self, work):
        self.work = work
        self.exe = shutil.which("supervisord") or os.path.join(os.path.dirname(sys.executable), "supervisord")

    def configure(self, modules):
        conf = os.path.join(self.work, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(f"[supervisord]\nnodaemon=true\nlogfile={self.work}/supervisord.log\n"
                    f"pidfile={self.work}/supervisord.pid\nchildlogdir={self.work}\n"
                    "logfile_maxbytes=0\n\n"
                    f"[unix_http_server]\nfile={self.work}/supervisor.sock\n\n"
                    "[rpcinterface:supervisor]\n"
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n")
            for short, argv, port in modules:
                f.write(f"[program:{short}]\ncommand={' '.join(argv)}\nenvironment=PORT=\"{port}\"\n"
                        "autorestart=true\nstartsecs=0\nstartretries=100000\nstopasgroup=true\n"
                        "killasgroup=true\nredirect_stderr=true\n"
                        f"stdout_logfile={self.work}/sink.log\nstdout_logfile_maxbytes=0\n\n")
        self.conf = conf

    def start(self, sink):
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=sink, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self.proc.pid

    def sink_path(self):
        return os.path.join(self.work, "sink.log")

    def supervisor_pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class Pm2:
    name = "pm2"

    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ, PM2_HOME=os.path.join(work, "pm2home"))

    def configure(self, modules):
        apps = []
        for short, argv, port in modules:
            apps.append({"name": short, "script": argv[0], "args": argv[1:], "interpreter": "none",
                         "env": {"PORT": str(port)}, "autorestart": True, "restart_delay": 0,
                         "min_uptime": 0, "max_restarts": 100000,
                         "out_file": os.path.join(self.work, "sink.log"),
                         "error_file": os.path.join(self.work, "sink.log"), "merge_logs": True})
        self.eco = os.path.join(self.work, "ecosystem.json")
        with open(self.eco, "w") as f:
            json.dump({"apps": apps}, f)

    def start(self, sink):
        subprocess.run(["pm2", "start", self.eco], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        return self.supervisor_pid()

    def sink_path(self):
        return os.path.join(self.work, "sink.log")

    def supervisor_pid(self):
        with open(os.path.join(self.work, "pm2home", "pm2.pid")) as f:
            return int(f.read().strip())

    def stop(self):
        subprocess.run(["pm2", "kill"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- workloads -----------------------------------------------------------------------

def run_tool(cls, args):
    res = {}
    # 1. crash -> port ready
    with tempfile.TemporaryDirectory() as work:
        t = cls(work)
        (port,) = free_ports(1)
        t.configure([("crashy", [FIXTURE], port)])
        sink = open(os.path.join(work, "out.log"), "wb")
        t.start(sink)
        wait_until(lambda: accepts(port), 20, "first bind")
        lat = []
        for _ in range(args.kills):
            old = wait_until(lambda: holders(port), 10, "holder")
            t0 = time.monotonic()
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: (h := holders(port)) and not (h & old) and accepts(port), 30, "rebind")
            lat.append((time.monotonic() - t0) * 1000)
        res["crash_ms"] = (statistics.median(lat), pct(lat, 95))
        t.stop()
    # 2. log throughput
    with tempfile.TemporaryDirectory() as work:
        t = cls(work)
        nbytes = args.chatty_mb * 1024 * 1024
        t.configure([("chatty", [FIXTURE, "--no-listen", "--chatty-bytes", str(nbytes)], free_ports(1)[0])])
        out = os.path.join(work, "out.log")
        sink = open(out, "wb")
        path = t.sink_path() if hasattr(t, "sink_path") else out
        t0 = time.monotonic()
        t.start(sink)
        # Done when the child's final line arrives; if the sink stops growing for 10 s first
        # (the tool lost that line), report the time of the last growth and the shortfall.
        last = [0, time.monotonic()]

        def done():
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size != last[0]:
                last[:] = [size, time.monotonic()]
            return (size and tail_has(path, b"chatty done")) or time.monotonic() - last[1] > 10

        wait_until(done, 900, "chatty output", 0.01)
        end = time.monotonic() if tail_has(path, b"chatty done") else last[1]
        res["log_mbs"] = args.chatty_mb / (end - t0)
        t.stop()
        res["log_delivered"] = count_lines(path, b"chatty y") / (nbytes // 100)
    # 3-5. 50 children: start, RSS, stop
    with tempfile.TemporaryDirectory() as work:
        t = cls(work)
        ports = free_ports(args.children)
        t.configure([(f"m{i}", [FIXTURE], p) for i, p in enumerate(ports)])
        sink = open(os.path.join(work, "out.log"), "wb")
        t0 = time.monotonic()
        t.start(sink)
        wait_until(lambda: all(accepts(p) for p in ports), 120, "all children bound", 0.005)
        res["start_ms"] = (time.monotonic() - t0) * 1000
        time.sleep(1.0)  # let the tool settle to its idle footprint
        res["rss_mib"] = rss_kib(t.supervisor_pid()) / 1024
        pids = set().union(*(holders(p) for p in ports))
        t0 = time.monotonic()
        t.stop()
        wait_until(lambda: not any(alive(p) for p in pids) and not any(accepts(p) for p in ports),
                   120, "children gone", 0.005)
        res["stop_ms"] = (time.monotonic() - t0) * 1000
    return res


def count_lines(path, needle):
    """Lines of the sink that carry `needle` (drops show up as < 100 % delivered)."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if needle in line:
                n += 1
    return n


def tail_has(path, needle):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        return needle in f.read()


def floors(args):
    res = {}
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "raw.log")
        nbytes = args.chatty_mb * 1024 * 1024
        t0 = time.monotonic()
        with open(out, "wb") as f:
            p = subprocess.Popen([FIXTURE, "--no-listen", "--chatty-bytes", str(nbytes)], stdout=subprocess.PIPE)
            # a reader on the pipe, like a supervisor, copying to a file
            while True:
                chunk = p.stdout.read1(1 << 16)
                f.write(chunk)
                if b"chatty done" in chunk[-64:]:
                    break
            p.kill()
            p.wait()
        res["log_mbs"] = args.chatty_mb / (time.monotonic() - t0)
    lat = []
    for _ in range(args.kills):
        (port,) = free_ports(1)
        t0 = time.monotonic()
        p = subprocess.Popen([FIXTURE, "--port", str(port)], stdout=subprocess.DEVNULL)
        wait_until(lambda: accepts(port), 10, "fixture bind")
        lat.append((time.monotonic() - t0) * 1000)
        p.kill()
        p.wait()
    res["spawn_bind_ms"] = (statistics.median(lat), pct(lat, 95))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--children", type=int, default=50)
    ap.add_argument("--chatty-mb", type=int, default=256)
    ap.add_argument("--tools", default="parachute,supervisord,pm2")
    ap.add_argument("--write", help="also write the table to this markdown file")
    args = ap.parse_args()
    tools = {"parachute": Parachute, "supervisord": Supervisord, "pm2": Pm2}
    rows = []
    for name in args.tools.split(","):
        if name == "pm2" and not shutil.which("pm2"):
            print("pm2 not installed; skipping it", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr)
        rows.append((name, run_tool(tools[name], args)))
    fl = floors(args)
    lines = [
        f"| tool | crash→ready median / p95 (ms) | log MB/s (lines delivered) | RSS with {args.children} idle (MiB) "
        f"| start {args.children} (ms) | stop {args.children} (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['crash_ms'][0]:.1f} / {r['crash_ms'][1]:.1f} | {r['log_mbs']:.0f} ({100 * r['log_delivered']:.1f} %) "
                     f"| {r['rss_mib']:.1f} | {r['start_ms']:.0f} | {r['stop_ms']:.0f} |")
    lines.append(f"| floor (no supervisor) | fork+exec+bind {fl['spawn_bind_ms'][0]:.1f} / "
                 f"{fl['spawn_bind_ms'][1]:.1f} | pipe→file {fl['log_mbs']:.0f} | – | – | – |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        cmd = "scripts/bench.sh " + " ".join(sys.argv[1:])
        with open(os.path.join(ROOT, args.write), "w") as f:
            f.write("# Benchmarks\n\nProduced by:\n\n```\n" + cmd + "\n```\n\n"
                    f"Machine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, one run, all tools "
                    "supervising the same release-built `parachute-fixture`.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
