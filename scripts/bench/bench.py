#!/usr/bin/env python3
"""Side-by-side benchmark: `parachute serve` against a floor and its peers.

Every tool supervises the same program (`parachute-fixture`, built in release mode) on the
same ports, every figure is measured the same way, from outside (sockets, /proc), in one
run, and every figure is printed as a ratio to the floor measured in the same run:

  floor          scripts/bench/floor.c: a minimal single-threaded poll(2) supervisor written
                 for this benchmark (spawn, prefix and copy output lines, respawn, stop all;
                 no features), so a ratio says how far a tool is from what the machine allows
  crash->ready   SIGKILL the module's port holder, time until a new listening socket on the
                 port accepts (median and p95 over --kills kills; restart delay 0 where the
                 tool allows it)
  log MB/s       one chatty child writes --chatty-mb MiB of 100-byte lines; time until the
                 tool's sink (a file) holds the child's final line
  RSS 50 idle    resident memory of the supervisor process (pm2: its daemon) with 50 idle
                 children, after they all answer and 1 s of settling
  idle CPU       CPU time of the supervisor's threads (schedstat) over --idle-secs seconds
                 with 50 idle children, as a percentage of one core
  start 50       launch the tool, time until all 50 ports accept
  stop 50        SIGTERM (pm2: `pm2 kill`), time until every child is dead and every port
                 closed / until the supervisor process itself is gone

Peers: supervisord (PyPI), pm2 (npm), horust (crates.io) when installed; their versions
are printed with the table. The machine's load (`uptime`) is recorded before and after
each run: the machine is shared, so only same-run ratios are compared across runs.

Usage: scripts/bench.sh [--runs 2] [--kills N] [--children N] [--chatty-mb N]
                        [--tools floor,parachute,...] [--write docs/benchmarks.md]
"""

import argparse
import json
import select
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
# BENCH_PARACHUTE: another build of the hub (e.g. a saved copy of the code before a change).
PARACHUTE = os.environ.get("BENCH_PARACHUTE") or os.path.join(REL, "parachute")
FIXTURE = os.path.join(REL, "parachute-fixture")
FLOOR = os.path.join(ROOT, "target", "bench", "floor")


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


def wait_until(cond, timeout, what, step=0.0002):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def listen_inodes(port):
    """Inodes of the LISTEN sockets on `port` (cheap: no walk over every process)."""
    out = set()
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and parts[1].endswith(hexport):
                        out.add(parts[9])
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


def cpu_ns(pid):
    """On-CPU nanoseconds of every thread of `pid` (schedstat: finer than utime/stime)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone (ENOENT, or ESRCH while it was being reaped)
        return False


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- tools ---------------------------------------------------------------------------
#
# Each tool: configure(modules) with (short, argv, port) rows (the child also gets PORT),
# start(sink) launches it with its own output to `sink`, supervisor_pid(), begin_stop()
# asks it to stop without waiting, gone() says whether the supervisor process has exited.
# A tool whose module output goes through its own process writes it to `sink`; one with a
# sink file of its own names it in sink_path().

class Popened:
    """A tool run as one foreground process."""
    proc = None

    def supervisor_pid(self):
        return self.proc.pid

    def begin_stop(self):
        self.proc.send_signal(signal.SIGTERM)

    def gone(self):
        return self.proc.poll() is not None

    def stop(self):
        self.begin_stop()
        self.proc.wait(timeout=60)


class Floor(Popened):
    name = "floor"
    passes_output = True

    def __init__(self, work):
        self.work = work

    @staticmethod
    def version():
        return "floor.c, " + version(["cc", "--version"])

    def configure(self, modules):
        self.conf = os.path.join(self.work, "floor.conf")
        with open(self.conf, "w") as f:
            for short, argv, port in modules:
                f.write(f"{short} {port} {' '.join(argv)}\n")

    def start(self, sink):
        self.proc = subprocess.Popen([FLOOR, self.conf], stdout=sink, stderr=subprocess.STDOUT,
                                     start_new_session=True)


class Parachute(Popened):
    name = "parachute"
    passes_output = True

    def __init__(self, work):
        self.work = work

    @staticmethod
    def version():
        return version([PARACHUTE, "--version"])

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


class Supervisord(Popened):
    name = "supervisord"
    passes_output = True

    def __init__(self, work):
        self.work = work

    @staticmethod
    def exe():
        return shutil.which("supervisord") or os.path.join(os.path.dirname(sys.executable), "supervisord")

    @classmethod
    def version(cls):
        return "supervisord " + version([cls.exe(), "--version"])

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
        self.proc = subprocess.Popen([self.exe(), "-c", self.conf], stdout=sink, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def sink_path(self):
        return os.path.join(self.work, "sink.log")


class Horust(Popened):
    """horust runs each service with its stdout opened on the file directly: its output does
    not pass through the supervisor (and gets no prefix)."""
    name = "horust"
    passes_output = False

    def __init__(self, work):
        self.work = work

    @staticmethod
    def version():
        # horust has no --version; cargo knows what it installed.
        out = version(["sh", "-c", "cargo install --list | grep -m1 '^horust '"])
        return out.rstrip(":")

    def configure(self, modules):
        self.dir = os.path.join(self.work, "services")
        os.makedirs(self.dir, exist_ok=True)
        for short, argv, port in modules:
            with open(os.path.join(self.dir, f"{short}.toml"), "w") as f:
                f.write(f"command = {json.dumps(' '.join(argv))}\n"
                        f"stdout = {json.dumps(self.sink_path())}\n"
                        f"stderr = {json.dumps(self.sink_path())}\n"
                        "[restart]\nstrategy = \"always\"\nbackoff = \"0s\"\nattempts = 0\n"
                        "[failure]\nstrategy = \"ignore\"\n"
                        "[termination]\nwait = \"10s\"\n"
                        f"[environment]\nkeep-env = true\nadditional = {{ PORT = \"{port}\" }}\n")

    def start(self, sink):
        self.proc = subprocess.Popen(["horust", "--services-path", self.dir,
                                      "--uds-folder-path", self.work], stdout=sink,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def sink_path(self):
        return os.path.join(self.work, "sink.log")


class Pm2:
    name = "pm2"
    passes_output = True

    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ, PM2_HOME=os.path.join(work, "pm2home"))

    @staticmethod
    def version():
        return "pm2 " + version(["pm2", "--version"])

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
        self.pid = self.supervisor_pid()

    def sink_path(self):
        return os.path.join(self.work, "sink.log")

    def supervisor_pid(self):
        with open(os.path.join(self.work, "pm2home", "pm2.pid")) as f:
            return int(f.read().strip())

    def begin_stop(self):
        self.killer = subprocess.Popen(["pm2", "kill"], env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    def gone(self):
        return not alive(self.pid)

    def stop(self):
        self.begin_stop()
        self.killer.wait(timeout=60)


TOOLS = {c.name: c for c in (Floor, Parachute, Supervisord, Pm2, Horust)}
INSTALLED = {
    "floor": lambda: os.access(FLOOR, os.X_OK),
    "parachute": lambda: os.access(PARACHUTE, os.X_OK),
    "supervisord": lambda: os.access(Supervisord.exe(), os.X_OK),
    "pm2": lambda: shutil.which("pm2") is not None,
    "horust": lambda: shutil.which("horust") is not None,
}


# --- workloads -----------------------------------------------------------------------

def crash_ready(cls, args):
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
            fds = [os.pidfd_open(pid) for pid in old]
            t0 = time.monotonic()
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            # The killed holder has exited (its pidfd polls readable) and so closed its socket:
            # from then on, a connection that is accepted is a new process's. (Reading
            # /proc/net/tcp to tell sockets apart costs 15-40 ms on a busy host: too coarse.)
            for fd in fds:
                select.select([fd], [], [], 10)
                os.close(fd)
            wait_until(lambda: accepts(port), 30, "rebind")
            lat.append((time.monotonic() - t0) * 1000)
            time.sleep(0.02)
        t.stop()
    return statistics.median(lat), pct(lat, 95)


def throughput(cls, args):
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

        wait_until(done, 900, "chatty output", 0.002)
        end = time.monotonic() if tail_has(path, b"chatty done") else last[1]
        mbs = args.chatty_mb / (end - t0)
        t.stop()
        delivered = count_lines(path, b"chatty y") / (nbytes // 100)
    return mbs, delivered


def fleet(cls, args):
    res = {}
    with tempfile.TemporaryDirectory() as work:
        t = cls(work)
        ports = free_ports(args.children)
        t.configure([(f"m{i}", [FIXTURE], p) for i, p in enumerate(ports)])
        sink = open(os.path.join(work, "out.log"), "wb")
        t0 = time.monotonic()
        t.start(sink)
        pending = list(ports)

        def all_bound():
            pending[:] = [p for p in pending if not accepts(p)]
            return not pending

        wait_until(all_bound, 120, "all children bound", 0.001)
        res["start_ms"] = (time.monotonic() - t0) * 1000
        time.sleep(1.0)  # let the tool settle to its idle footprint
        pid = t.supervisor_pid()
        res["rss_mib"] = rss_kib(pid) / 1024
        c0, w0 = cpu_ns(pid), time.monotonic()
        time.sleep(args.idle_secs)
        res["idle_cpu"] = 100 * (cpu_ns(pid) - c0) / 1e9 / (time.monotonic() - w0)
        pids = set().union(*(holders(p) for p in ports))
        t0 = time.monotonic()
        t.begin_stop()
        marks = {}

        def stopped():
            if "dead" not in marks and not any(alive(p) for p in pids) and not any(accepts(p) for p in ports):
                marks["dead"] = time.monotonic()
            if "gone" not in marks and t.gone():
                marks["gone"] = time.monotonic()
            return len(marks) == 2

        wait_until(stopped, 120, "children and supervisor gone", 0.0005)
        res["dead_ms"] = (marks["dead"] - t0) * 1000
        res["gone_ms"] = (marks["gone"] - t0) * 1000
        if hasattr(t, "killer"):
            t.killer.wait(timeout=60)
    return res


def run_tool(cls, args):
    res = {}
    res["crash_ms"] = crash_ready(cls, args)
    res["log_mbs"], res["log_delivered"] = throughput(cls, args)
    res.update(fleet(cls, args))
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


# --- the table -----------------------------------------------------------------------

def ratio(v, floor):
    if floor is None or floor <= 0 or v is None:
        return ""
    return f" ({v / floor:.2f}×)"


def table(rows, args):
    n = args.children
    fl = dict(rows).get("floor")
    g = (lambda k, i=None: None if fl is None else (fl[k] if i is None else fl[k][i]))
    head = [
        f"| tool | crash→ready median (ms) | crash→ready p95 (ms) | log MB/s, prefixed (delivered) "
        f"| RSS, {n} idle (MiB) | idle CPU, {n} children | stop {n}: children dead (ms) "
        f"| stop {n}: supervisor gone (ms) | start {n} (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        log = f"{r['log_mbs']:.0f}{ratio(r['log_mbs'], g('log_mbs'))} ({100 * r['log_delivered']:.1f} %)"
        if not TOOLS[name].passes_output:
            log += " — child writes the file itself, no prefix"
        head.append(
            f"| {name} | {r['crash_ms'][0]:.1f}{ratio(r['crash_ms'][0], g('crash_ms', 0))} "
            f"| {r['crash_ms'][1]:.1f}{ratio(r['crash_ms'][1], g('crash_ms', 1))} | {log} "
            f"| {r['rss_mib']:.1f}{ratio(r['rss_mib'], g('rss_mib'))} | {r['idle_cpu']:.3f} % "
            f"| {r['dead_ms']:.0f}{ratio(r['dead_ms'], g('dead_ms'))} "
            f"| {r['gone_ms']:.0f}{ratio(r['gone_ms'], g('gone_ms'))} "
            f"| {r['start_ms']:.0f}{ratio(r['start_ms'], g('start_ms'))} |")
    return "\n".join(head)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--children", type=int, default=50)
    ap.add_argument("--chatty-mb", type=int, default=256)
    ap.add_argument("--idle-secs", type=float, default=5.0)
    ap.add_argument("--tools", default="floor,parachute,supervisord,pm2,horust")
    ap.add_argument("--write", help="also put the tables into this markdown file, between the "
                                    "<!-- bench:begin --> and <!-- bench:end --> markers")
    args = ap.parse_args()
    names = []
    for name in args.tools.split(","):
        if name not in TOOLS:
            sys.exit(f"unknown tool {name}; known: {', '.join(TOOLS)}")
        if not INSTALLED[name]():
            print(f"{name} not installed; skipping it", file=sys.stderr)
            continue
        names.append(name)
    versions = [f"{n}: {TOOLS[n].version()}" for n in names]
    out = [f"Versions: {'; '.join(versions)}. Machine: {os.cpu_count()} cores, "
           f"{time.strftime('%Y-%m-%d')}. Ratios in brackets are to the floor in the same run "
           "(throughput: higher is better; everything else: lower is better)."]
    for run in range(1, args.runs + 1):
        before = load()
        rows = []
        for name in names:
            print(f"run {run}: {name} ...", file=sys.stderr)
            rows.append((name, run_tool(TOOLS[name], args)))
        out.append(f"Run {run} of {args.runs} (load average before: {before}; after: {load()}):\n\n"
                   + table(rows, args))
        print(out[-1], flush=True)
    text = "\n\n".join(out)
    if args.write:
        cmd = "scripts/bench.sh " + " ".join(sys.argv[1:])
        block = "<!-- bench:begin -->\nProduced by:\n\n```\n" + cmd + "\n```\n\n" + text + "\n<!-- bench:end -->"
        path = os.path.join(ROOT, args.write)
        doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
        a, b = doc.find("<!-- bench:begin -->"), doc.find("<!-- bench:end -->")
        if a < 0 or b < 0:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
        else:
            doc = doc[:a] + block + doc[b + len("<!-- bench:end -->"):]
        with open(path, "w") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
