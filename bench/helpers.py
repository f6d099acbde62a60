#!/usr/bin/env python3
"""Small helpers for bench/run (Python 3 standard library only).

  helpers.py free-port                 a free TCP port on 127.0.0.1 (bound to :0, then released)
  helpers.py wait URL SECONDS          wait until GET URL answers anything, or fail
  helpers.py check URL [POST_BODY]     GET / says "Hello world"; POST / filters POST_BODY right
  helpers.py compact IN OUT            JSON file IN written compactly to OUT, key order kept
  helpers.py sample [SID...]           JSON on stdout: per session id, the CPU ticks (utime+stime),
                                       VmRSS and VmHWM summed over its processes; /proc/stat per
                                       CPU; the load average; compilers running (rustc, cargo, cc1...)
"""
import os
import json
import socket
import sys
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait(url, seconds):
    deadline = time.monotonic() + float(seconds)
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                return 0
        except urllib.error.HTTPError:
            return 0  # it answered
        except OSError as e:
            last = e
            time.sleep(0.05)
    print(f"helpers: {url} did not answer within {seconds}s: {last}", file=sys.stderr)
    return 1


def check(url, body_file=None):
    """Both loads must get the answer the talk's app gives, or the numbers mean nothing."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
        if r.status != 200 or text.strip() != "Hello world":
            print(f"helpers: GET {url} answered {r.status} {text!r}", file=sys.stderr)
            return 1
    if body_file is None:
        return 0
    with open(body_file, "rb") as f:
        body = f.read()
    source = json.loads(body)
    want = {k: v for k, v in source.items() if k.lower().startswith("a")}
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        got = json.loads(r.read())
        if r.status != 200 or got != want or list(got) != list(want):
            print(f"helpers: POST {url} answered {r.status} {got!r}, wanted {want!r}",
                  file=sys.stderr)
            return 1
    return 0


def compact(src, dst):
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"), ensure_ascii=False)


COMPILERS = {"rustc", "cargo", "cc1", "cc1plus", "ld", "ld.lld", "gcc", "clang"}


def sample(sids):
    """What bench/run records right before and right after each load run."""
    ticks = {sid: 0 for sid in sids}
    rss = {sid: 0 for sid in sids}
    hwm = {sid: 0 for sid in sids}
    pids = {sid: [] for sid in sids}
    compilers = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ... utime (14), stime (15)
        session = fields[3]
        if comm in COMPILERS:
            compilers.append(comm)
        if session not in ticks:
            continue
        ticks[session] += int(fields[11]) + int(fields[12])
        pids[session].append(int(name))
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss[session] += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm[session] += int(line.split()[1])
        except OSError:
            pass
    cpus = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu"):
                name, *values = line.split()
                cpus[name] = [int(v) for v in values[:8]]
    with open("/proc/loadavg") as f:
        load = [float(v) for v in f.read().split()[:3]]
    json.dump({
        "time": time.time(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "servers": {sid: {"pids": sorted(pids[sid]), "ticks": ticks[sid],
                          "rss_kb": rss[sid], "hwm_kb": hwm[sid]} for sid in sids},
        "cpus": cpus,
        "loadavg": load,
        "compilers": sorted(compilers),
    }, sys.stdout)
    print()


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "free-port":
        free_port()
        return 0
    if cmd == "wait":
        return wait(*args)
    if cmd == "check":
        return check(*args)
    if cmd == "sample":
        sample(args)
        return 0
    if cmd == "compact":
        compact(*args)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
