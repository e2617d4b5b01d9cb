#!/usr/bin/env python3
"""Log throughput of `parachute serve` per output sink, side by side, in one run.

One chatty module (parachute-fixture --chatty-bytes: 100-byte lines as fast as it can
write) under the hub, with the hub's output going to:

  floor           no hub: a plain reader copies the module's pipe to a file
  stdout → file   `parachute serve > file` (a container runtime's or a shell's redirect)
  --log-file      `parachute serve --log-file F` (the hub writes and rotates F itself: what
                  launchd's plist uses; default 10 MiB × 5 files, so it rotates ~25 times)
  journald        the hub as a systemd user unit in a private sandbox
                  (scripts/systemd-sandbox.sh: its own systemd --user and journald); each
                  module on journald stream connections of its own (SYSLOG_IDENTIFIER)

MB/s is time from starting the hub (or the fixture, for the floor) until the module's last
line is in the sink; "delivered" counts the module's lines the sink holds (for --log-file,
only the kept files hold lines, so it is checked by the numbered lines having no gap
instead). Each sink runs --rounds times, interleaved, and the median is shown; the ratio
to the floor of the same round is what to compare across machines. The load average is
printed with the figures: the machine may be shared.

  journald-floor  no hub: the fixture as a unit of its own in the same kind of sandbox, its
                  stdout a journald stream connected by the manager (what `systemd-cat`
                  does): what journald itself costs for these lines on this machine

Needs root (the systemd sandbox). Not run by CI. The sandbox's start/stop time is outside
the measured span (the clock starts at `systemctl start`).
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
SANDBOX = os.path.join(ROOT, "scripts", "systemd-sandbox.sh")
LINE = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, what, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise SystemExit(f"timed out waiting for {what}")


def tail_has(path, needle, n=4096):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return needle in f.read()
    except FileNotFoundError:
        return False


def count_lines(path, needle):
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if needle in line:
                n += 1
    return n


def home_with_chatty(home, nbytes, seq=False):
    port = free_port()
    d = os.path.join(home, "modules", "chatty")
    os.makedirs(os.path.join(d, ".parachute"), exist_ok=True)
    argv = [FIXTURE, "--port", str(port), "--chatty-bytes", str(nbytes)] + (["--chatty-seq"] if seq else [])
    with open(os.path.join(d, ".parachute", "module.json"), "w") as f:
        json.dump({"startCmd": argv}, f)
    row = {"name": "chatty", "port": port, "paths": ["/chatty"], "health": "/health", "version": "0.0.0",
           "installDir": d}
    with open(os.path.join(home, "services.json"), "w") as f:
        json.dump({"services": [row]}, f)


def floor(nbytes):
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "raw.log")
        t0 = time.monotonic()
        with open(out, "wb") as f:
            p = subprocess.Popen([FIXTURE, "--no-listen", "--chatty-bytes", str(nbytes)], stdout=subprocess.PIPE)
            while True:
                chunk = p.stdout.read1(1 << 16)
                f.write(chunk)
                if b"chatty done" in chunk[-64:] or not chunk:
                    break
            took = time.monotonic() - t0
            p.kill()
            p.wait()
        return took, count_lines(out, b"chatty y") / (nbytes // LINE)


def serve(work, extra, stdout):
    home = os.path.join(work, "home")
    return subprocess.Popen([PARACHUTE, "serve", "--home", home, "--port", str(free_port())] + extra,
                            stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def stdout_file(nbytes):
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "home"))
        home_with_chatty(os.path.join(work, "home"), nbytes)
        out = os.path.join(work, "out.log")
        with open(out, "wb") as sink:
            t0 = time.monotonic()
            p = serve(work, [], sink)
            wait_until(lambda: tail_has(out, b"chatty done"), 900, "the last line (stdout)")
            took = time.monotonic() - t0
            stop(p)
        return took, count_lines(out, b"chatty y") / (nbytes // LINE)


def log_file(nbytes):
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "home"))
        home_with_chatty(os.path.join(work, "home"), nbytes, seq=True)
        log = os.path.join(work, "logs", "hub.log")
        t0 = time.monotonic()
        p = serve(work, ["--log-file", log], subprocess.DEVNULL)
        wait_until(lambda: tail_has(log, b"chatty done") or tail_has(log + ".1", b"chatty done"), 900,
                   "the last line (--log-file)")
        took = time.monotonic() - t0
        stop(p)
        # The kept files, oldest first, must hold consecutive line numbers ending with the last.
        files = sorted((f for f in os.listdir(os.path.dirname(log)) if f.startswith("hub.log.")),
                       key=lambda f: -int(f.rsplit(".", 1)[1])) + ["hub.log"]
        want, ok, kept = None, True, 0
        for name in files:
            with open(os.path.join(os.path.dirname(log), name), "rb") as f:
                for line in f:
                    if not line.startswith(b"[chatty] chatty ") or line.startswith(b"[chatty] chatty done"):
                        continue
                    n = int(line[16:28])
                    ok = ok and (want is None or n == want)
                    want, kept = n + 1, kept + 1
        ok = ok and want == -(-nbytes // LINE)
        size = sum(os.path.getsize(os.path.join(os.path.dirname(log), f)) for f in files)
        return took, (1.0 if ok else 0.0), f"{kept} lines in {len(files)} files, {size / 2**20:.1f} MiB kept"


class Sandbox:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bench-journal-")
        # No journald rate limit: under a user manager journald ignores the unit's
        # LogRateLimitIntervalSec=0 and would drop lines past its default burst (and with them
        # the "chatty done" this waits for). See docs/benchmarks.md.
        env = dict(os.environ, SANDBOX_OWNER_PID=str(os.getpid()), SANDBOX_JOURNAL_NO_RATE_LIMIT="1")
        # To files, not pipes: the sandbox's detached dead-man watcher keeps inherited pipes open.
        with open(self.dir + ".env", "w+") as o, open(self.dir + ".err", "w+") as e:
            rc = subprocess.run(["bash", SANDBOX, "start", "--plain", self.dir], env=env, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL).returncode
            o.seek(0)
            e.seek(0)
            if rc != 0:
                raise SystemExit(f"the systemd sandbox did not start: {e.read()}")
            self.env = dict(line.strip().split("=", 1) for line in o if "=" in line)

    def run(self, *cmd, check=True):
        full = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "bash", SANDBOX, "exec", self.dir, "--",
                "env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/system_bus_socket", *cmd]
        out = subprocess.run(full, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise SystemExit(f"{cmd} failed: {out.stdout}{out.stderr}")
        return out

    def journal(self, *args):
        # The journal directory is a plain directory outside the sandbox too.
        return ["journalctl", "-D", self.env["SYSTEMD_SANDBOX_JOURNAL_DIR"], "--no-pager", *args]

    def close(self):
        subprocess.run(["bash", SANDBOX, "stop", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)
        for ext in (".env", ".err"):
            try:
                os.unlink(self.dir + ext)
            except FileNotFoundError:
                pass


def journald(nbytes):
    sb = Sandbox()
    try:
        home = os.path.join(sb.env["HOME"], ".parachute")
        os.makedirs(home, exist_ok=True)
        home_with_chatty(home, nbytes)
        sb.run(PARACHUTE, "unit", "install", "--scope", "user", "--no-start", "--home", home,
               "--port", str(free_port()), "--exec", PARACHUTE)
        t0 = time.monotonic()
        sb.run("systemctl", "--user", "start", "--no-block", "parachute-hub.service")

        seen = {"n": -1, "at": t0}

        def last_line():
            # Not `-n 1`: the fixture prints `ready pid=… port=…` once it listens, after its
            # chatty lines, so the newest entry is that and a `-n 1` check never matched (the
            # step then waited out its 900 s: the "hang"). The last few entries hold both.
            out = subprocess.run(sb.journal("-t", "chatty", "-n", "16", "-o", "cat"), capture_output=True)
            if b"chatty done" in out.stdout:
                seen["at"] = time.monotonic()
                return True
            # The hub drops lines (and says so) when its sink stalls past its limit: then
            # "chatty done" may never come; the step ends once the journal stops growing.
            hub = subprocess.run(sb.journal("-t", "parachute", "-o", "cat"), capture_output=True).stdout
            if b"dropped" not in hub:
                return False
            c = subprocess.run(sb.journal("-t", "chatty", "-o", "cat"), capture_output=True).stdout.count(b"\n")
            if c != seen["n"]:
                seen["n"], seen["at"] = c, time.monotonic()
                return False
            return time.monotonic() - seen["at"] > 3

        wait_until(last_line, 900, "the last line (journald)", 0.05)
        took = seen["at"] - t0
        sb.run("systemctl", "--user", "stop", "parachute-hub.service", check=False)
        p = subprocess.Popen(sb.journal("-t", "chatty", "-o", "cat"), stdout=subprocess.PIPE)
        n = sum(1 for line in p.stdout if line.startswith(b"chatty y"))
        p.wait()
        return took, n / (nbytes // LINE)
    finally:
        sb.close()


def journald_floor(nbytes):
    """No hub: the fixture as a unit of its own (`systemd-run --user`), its stdout connected
    by the manager to a journald stream, as `systemd-cat` does. What journald itself takes
    for these lines on this machine, the floor for the journald row."""
    sb = Sandbox()
    try:
        t0 = time.monotonic()
        sb.run("systemd-run", "--user", "--no-block", "--unit", "chatty-floor", "-p", "SyslogIdentifier=chatty",
               "-p", "StandardOutput=journal",
               # As the hub's unit does (journald ignores it for user units: the sandbox
               # turns its limit off instead).
               "-p", "LogRateLimitIntervalSec=0", FIXTURE, "--no-listen", "--chatty-bytes", str(nbytes))

        def last_line():
            out = subprocess.run(sb.journal("-t", "chatty", "-n", "16", "-o", "cat"), capture_output=True)
            return b"chatty done" in out.stdout

        wait_until(last_line, 900, "the last line (journald floor)", 0.05)
        took = time.monotonic() - t0
        p = subprocess.Popen(sb.journal("-t", "chatty", "-o", "cat"), stdout=subprocess.PIPE)
        n = sum(1 for line in p.stdout if line.startswith(b"chatty y"))
        p.wait()
        return took, n / (nbytes // LINE)
    finally:
        sb.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chatty-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sinks", default="floor,stdout,log-file,journald-floor,journald")
    args = ap.parse_args()
    nbytes = args.chatty_mb * 1024 * 1024
    runs = {"floor": floor, "stdout": stdout_file, "log-file": log_file, "journald-floor": journald_floor,
            "journald": journald}
    names = args.sinks.split(",")
    res = {n: [] for n in names}
    loads = []
    for r in range(args.rounds):
        for n in names:
            load = os.getloadavg()[0]
            out = runs[n](nbytes)
            took, delivered = out[0], out[1]
            note = out[2] if len(out) > 2 else ""
            loads.append(load)
            res[n].append((args.chatty_mb / took, delivered, note, r))
            print(f"round {r + 1} {n}: {args.chatty_mb / took:.0f} MB/s, delivered {100 * delivered:.1f} %, "
                  f"load {load:.2f} {note}", file=sys.stderr)
    floor_by_round = {r: mbs for (mbs, _, _, r) in res.get("floor", [])}
    label = {"floor": "floor: fixture → pipe → file (no hub)", "stdout": "`serve > file` (stdout)",
             "log-file": "`serve --log-file` (rotating)", "journald-floor": "journald floor: fixture's own unit → journal stream (no hub)",
             "journald": "journald (hub user unit, per-module streams)"}
    lines = ["| sink | MB/s (median of %d) | each round | lines delivered | × floor (same round) |" % args.rounds,
             "|---|---|---|---|---|"]
    for n in names:
        xs = res[n]
        med = statistics.median(x[0] for x in xs)
        ratios = [x[0] / floor_by_round[x[3]] for x in xs if x[3] in floor_by_round]
        ratio = f"{statistics.median(ratios):.2f}" if ratios and n != "floor" else "1"
        deliv = min(x[1] for x in xs)
        deliv = ("no gap in the kept files" if deliv == 1.0 else "GAP") if n == "log-file" else f"{100 * deliv:.1f} %"
        lines.append(f"| {label[n]} | {med:.0f} | {' / '.join(f'{x[0]:.0f}' for x in xs)} | {deliv} | {ratio} |")
    print("\n".join(lines))
    print(f"\nload average (1 min) during the runs: {min(loads):.1f}–{max(loads):.1f}; "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
