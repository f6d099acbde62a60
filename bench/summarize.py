#!/usr/bin/env python3
"""Turns a bench/run output folder into the Markdown report (bench/RESULTS.md).

    summarize.py OUT_DIR RESULTS.md

Reads OUT_DIR/machine.json, OUT_DIR/commands.txt, OUT_DIR/nginx.conf and OUT_DIR/raw/*.json.
Rewrites RESULTS.md down to the line HAND_WRITTEN_MARKER; whatever follows that line in the
existing file (notes, before/after numbers) is kept as it is. Python 3 standard library only.
"""
import glob
import json
import os
import statistics
import sys

HAND_WRITTEN_MARKER = "<!-- Everything below this line is written by hand; bench/summarize.py keeps it. -->"

SERVER_NAMES = {
    "nginx": "nginx `return 200`",
    "falcon": "Falcon + uWSGI (2 processes)",
    "example_app": "example_app",
    "route": "example_app via a local route",
}
LOAD_NAMES = {"get": "`GET /`", "post": "`POST /`"}

# The targets for example_app, pinned, 64 connections.
TARGET_GET_VS_NGINX = 0.75
TARGET_GET_VS_FALCON = 5.0
TARGET_POST_VS_FALCON = 6.0
TARGET_P99_MS = 2.0
TARGET_RSS_MB = 20.0
TARGET_HELP_MS = 50.0
TARGET_DRY_RUN_MS = 200.0


def busy(before, after, cpu):
    """Share of the time CPU `cpu` (a /proc/stat row name) was busy between two samples."""
    b, a = before["cpus"][cpu], after["cpus"][cpu]
    d = [y - x for x, y in zip(b, a)]
    total = sum(d)
    idle = d[3] + d[4]  # idle + iowait
    return 100.0 * (total - idle) / total if total else 0.0


def metrics(rec, machine):
    w = rec["wrk"]
    e = w["errors"]
    sock = e["connect"] + e["read"] + e["write"] + e["timeout"]
    requests = w["requests"]
    secs = w["duration_us"] / 1e6
    lat = w["latency_us"]
    m = {
        "rps": requests / secs,
        "mean": lat["mean"] / 1000,
        "failed": 100.0 * (e["status"] + sock) / (requests + sock) if requests + sock else 100.0,
        "failed_n": e["status"] + sock,
        "p50": lat["p50"] / 1000,
        "p75": lat["p75"] / 1000,
        "p95": lat["p95"] / 1000,
        "p99": lat["p99"] / 1000,
        "max": lat["max"] / 1000,
        "client_cpu": 100.0 * (rec["client"]["user_s"] + rec["client"]["sys_s"]) / rec["client"]["wall_s"],
        "requests": requests,
        "compilers": bool(rec["before"]["compilers"] or rec["after"]["compilers"]),
        "errors": e,
    }
    srv_b = rec["before"]["servers"].get(rec["sid"])
    srv_a = rec["after"]["servers"].get(rec["sid"])
    if rec["sid"] and srv_a and srv_a["pids"]:
        ticks = srv_a["ticks"] - srv_b["ticks"]
        m["cpu_us"] = ticks * 1e6 / rec["after"]["clk_tck"] / requests if requests else None
        m["rss"] = srv_a["rss_kb"] / 1024
        m["hwm"] = srv_a["hwm_kb"] / 1024
        m["procs"] = len(srv_a["pids"])
    if rec["mode"] == "pinned":
        m["server_core"] = busy(rec["before"], rec["after"], "cpu" + machine["settings"]["server_cpu"])
    else:
        m["server_core"] = None
    m["machine_busy"] = busy(rec["before"], rec["after"], "cpu")
    return m


def load_records(out):
    machine = json.load(open(os.path.join(out, "machine.json")))
    cells = {}
    warm = {}
    for path in sorted(glob.glob(os.path.join(out, "raw", "*.json"))):
        name = os.path.basename(path)[:-5]
        rec = json.load(open(path))
        if "wrk" not in rec:
            continue
        key = (rec["mode"], rec["load"], rec["server"])
        target = warm if name.startswith("warmup-") else cells
        target.setdefault(key, []).append(metrics(rec, machine))
    return machine, cells, warm


def med(values):
    return statistics.median(values)


def thousands(n):
    """12 345 678: thin groups, no commas, so numbers never look like lists."""
    return f"{n:,.0f}".replace(",", "\u202f")


def fmt_num(v, digits):
    if v is None:
        return "–"
    if digits == 0:
        return thousands(v)
    return f"{v:.{digits}f}"


def cell(runs, key, digits):
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "–"
    m = med(values)
    if len(values) == 1:
        return fmt_num(m, digits)
    return f"{fmt_num(m, digits)} ({fmt_num(min(values), digits)}–{fmt_num(max(values), digits)})"


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return med(values) if values else None


def results_tables(machine, cells):
    lines = []
    modes = [m for m in machine["settings"]["modes"] if any(k[0] == m for k in cells)]
    if any(k[0] == "platform" for k in cells):
        modes.append("platform")
    for mode in modes:
        for load in ("get", "post"):
            servers = [s for s in ("nginx", "falcon", "example_app", "route") if (mode, load, s) in cells]
            if not servers:
                continue
            where = {
                "pinned": f"server pinned to CPU {machine['settings']['server_cpu']}, "
                          f"wrk to CPU {machine['settings']['client_cpu']}",
                "unpinned": "nothing pinned",
                "platform": "nothing pinned, through the local platform's route",
            }[mode]
            lines.append(f"### {LOAD_NAMES[load]}, {where}")
            lines.append("")
            lines.append("| server | requests/s | × Falcon | mean ms | failed % | p50 ms | p75 ms | p95 ms "
                         "| p99 ms | max ms | server CPU µs/req | RSS MB after (peak) | server core busy % "
                         "| wrk CPU % |")
            lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                         "| ---: | ---: |")
            falcon = cells.get((mode, load, "falcon"))
            falcon_rps = median_of(falcon, "rps") if falcon else None
            for s in servers:
                runs = cells[(mode, load, s)]
                rps = median_of(runs, "rps")
                ratio = f"{rps / falcon_rps:.1f}×" if falcon_rps else "–"
                rss = median_of(runs, "rss")
                hwm = max((r["hwm"] for r in runs if r.get("hwm") is not None), default=None)
                rss_cell = f"{rss:.1f} ({hwm:.1f})" if rss is not None else "–"
                flag = " ⚠" if any(r["compilers"] for r in runs) else ""
                lines.append(
                    f"| {SERVER_NAMES[s]}{flag} | {cell(runs, 'rps', 0)} | {ratio} | {cell(runs, 'mean', 2)} "
                    f"| {cell(runs, 'failed', 2)} | {cell(runs, 'p50', 2)} | {cell(runs, 'p75', 2)} "
                    f"| {cell(runs, 'p95', 2)} | {cell(runs, 'p99', 2)} | {cell(runs, 'max', 1)} "
                    f"| {cell(runs, 'cpu_us', 1)} | {rss_cell} | {cell(runs, 'server_core', 0)} "
                    f"| {cell(runs, 'client_cpu', 0)} |")
            lines.append("")
    return lines


def verdict(ok):
    return "**met**" if ok else "**NOT met**"


def targets(cells):
    lines = []
    get = cells.get(("pinned", "get", "example_app"))
    post = cells.get(("pinned", "post", "example_app"))
    nginx = cells.get(("pinned", "get", "nginx"))
    fget = cells.get(("pinned", "get", "falcon"))
    fpost = cells.get(("pinned", "post", "falcon"))
    if not get:
        return ["example_app was not measured pinned: no verdict on the targets.", ""]
    lines.append("| target (pinned, 64 connections, as shipped) | measured | |")
    lines.append("| --- | --- | --- |")

    def ratio_row(label, mine, theirs, want, theirs_name):
        if not mine or not theirs:
            lines.append(f"| {label} | not measured | |")
            return
        a, b = median_of(mine, "rps"), median_of(theirs, "rps")
        # The verdict on medians holds only if no pairing of runs says otherwise.
        worst = min(r["rps"] for r in mine) / max(r["rps"] for r in theirs)
        best = max(r["rps"] for r in mine) / min(r["rps"] for r in theirs)
        text = f"{thousands(a)} / {thousands(b)} req/s = {a / b:.3g}× {theirs_name}"
        if worst < want <= best:
            text += f" (runs paired: {worst:.3g}× to {best:.3g}×)"
            lines.append(f"| {label} | {text} | **unsure**: the runs disagree |")
        else:
            lines.append(f"| {label} | {text} | {verdict(a / b >= want)} |")

    ratio_row(f"`GET /` ≥ {TARGET_GET_VS_NGINX:.0%} of nginx", get, nginx, TARGET_GET_VS_NGINX, "nginx")
    ratio_row(f"`GET /` ≥ {TARGET_GET_VS_FALCON:.0f}× Falcon + uWSGI", get, fget, TARGET_GET_VS_FALCON, "Falcon")
    ratio_row(f"`POST /` ≥ {TARGET_POST_VS_FALCON:.0f}× Falcon + uWSGI", post, fpost, TARGET_POST_VS_FALCON,
              "Falcon")
    for load, runs in (("GET", get), ("POST", post)):
        if not runs:
            continue
        p99 = median_of(runs, "p99")
        worst = max(r["p99"] for r in runs)
        lines.append(f"| `{load} /` p99 ≤ {TARGET_P99_MS:g} ms | median {p99:.2f} ms, worst run {worst:.2f} ms "
                     f"| {verdict(worst <= TARGET_P99_MS)} |")
    all_runs = [r for k, runs in cells.items() if k[2] == "example_app" for r in runs]
    failed = sum(r["failed_n"] for r in all_runs)
    total = sum(r["requests"] for r in all_runs)
    lines.append(f"| no failed request (every run, pinned and not) | {failed} failed of {thousands(total)} "
                 f"| {verdict(failed == 0)} |")
    pinned = (get or []) + (post or [])
    hwm = max((r["hwm"] for r in pinned if r.get("hwm") is not None), default=None)
    if hwm is not None:
        lines.append(f"| RSS ≤ {TARGET_RSS_MB:g} MB under load | peak (VmHWM) {hwm:.1f} MB "
                     f"| {verdict(hwm <= TARGET_RSS_MB)} |")
    lines.append("")
    return lines


def hyperfine_rows(out):
    rows = []
    for name, label, target in (
        ("help", "`cdflow --help`", TARGET_HELP_MS),
        ("dry-run", "`cdflow release --repo SEED --dry-run` (fresh state folder each time)", TARGET_DRY_RUN_MS),
    ):
        path = os.path.join(out, "raw", f"hyperfine-{name}.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))["results"][0]
        ms = {k: r[k] * 1000 for k in ("mean", "stddev", "median", "min", "max")}
        rows.append(f"| {label} | {ms['median']:.1f} | {ms['mean']:.1f} ± {ms['stddev']:.1f} "
                    f"| {ms['min']:.1f}–{ms['max']:.1f} | {len(r['times'])} | < {target:g} ms: "
                    f"{verdict(ms['median'] < target)} |")
    if not rows:
        skipped = os.path.join(out, "raw", "cdflow.json")
        why = json.load(open(skipped)).get("skipped", "?") if os.path.exists(skipped) else "not run"
        return [f"Not measured: {why}.", ""]
    return ["| command | median ms | mean ± σ ms | min–max ms | runs | target |",
            "| --- | ---: | ---: | ---: | ---: | --- |", *rows, ""]


def log_check(out, cells, warm):
    lines = []
    for mode in ("pinned", "unpinned"):
        path = os.path.join(out, "raw", f"{mode}-example_app.loglines")
        if not os.path.exists(path):
            continue
        parts = open(path).read().split()
        if len(parts) < 2:
            continue
        n_lines, n_bytes = int(parts[0]), int(parts[1])
        responses = sum(r["requests"] for k, runs in list(cells.items()) + list(warm.items())
                        if k[0] == mode and k[2] == "example_app" for r in runs)
        lines.append(f"- {mode}: the reader got {thousands(n_lines)} log lines ({n_bytes / 1e6:.0f} MB); wrk "
                     f"counted {thousands(responses)} responses (the difference: startup and shutdown lines, "
                     f"the checks before the load, and requests still in flight when wrk stopped).")
    return lines


def report(out):
    machine, cells, warm = load_records(out)
    s = machine["settings"]
    v = machine["versions"]
    L = []
    L.append("# Benchmark results")
    L.append("")
    L.append("Written by `bench/summarize.py` from the raw output of one `bench/run` "
             f"(started {machine['started']}, commit {machine['commit']}). "
             "Rerun it with `bench/run`; see the README's Benchmarks section.")
    L.append("")
    quiet = machine.get("quiet", "")
    load0 = " ".join(machine.get("loadavg_start", []))
    disturbed = any(r["compilers"] for runs in cells.values() for r in runs)
    if "NEVER" in quiet or disturbed or float(machine.get("loadavg_start", ["0"])[0]) >= 0.5:
        L.append(f"> **Warning: the machine was not quiet.** {quiet}. Load average when measuring began: "
                 f"{load0}. " + ("Rows marked ⚠ had a compiler running during at least one run. "
                                 if disturbed else "") +
                 "Other work on the machine lowers every number; ratios taken in the same run suffer less.")
        L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: {machine['cpu']}, {machine['cores']} cores"
             + (f" ({machine['virt']})" if machine.get("virt") and machine["virt"] != "none" else "")
             + f"; memory {machine['mem']}; CPU frequency governor: {machine['governor']}")
    L.append(f"- {machine['os']}, Linux {machine['kernel']}")
    L.append(f"- {v['wrk']}, {v['nginx'].replace('nginx version: ', '')}, {v['hyperfine']}, "
             f"{v['python']}, Falcon {v['falcon']}, uWSGI {v['uwsgi']}, {v['rustc']}")
    L.append(f"- State of the machine: {quiet}; load average at the start {load0}, "
             f"at the end {' '.join(machine.get('loadavg_end', []))} (the end includes this run's own load).")
    L.append("")
    L.append("## How it was measured")
    L.append("")
    L.append(f"- Load: wrk, 1 thread, {s['connections']} connections, {s['seconds']} s per run, "
             f"{s['runs']} runs per cell, after a discarded {s['warmup']} s warm-up per server and load. "
             "Runs are interleaved (run 1 of every server and load, then run 2, ...). Every number is "
             "the median of the runs with (min–max) beside it.")
    L.append("- `GET /`; `POST /` with `bench/post.json` sent compactly (1 019 bytes, 20 keys, nested "
             "objects and arrays, 10 keys kept), `Content-Type: application/json`. Before the load every "
             "server's answers are checked: `Hello world`, and the filtered object with the right keys in order.")
    L.append(f"- Pinned: each server (all its processes and threads) on CPU {s['server_cpu']} with `taskset`, "
             f"wrk on CPU {s['client_cpu']}. Unpinned: no affinity at all; example_app then runs one "
             "worker thread per core (2), pinned it has one.")
    L.append("- Servers on 127.0.0.1 on free ports; all three are up during a mode, idle when not loaded.")
    L.append("- Columns: requests/s is responses / wrk's duration; mean ms is wrk's mean latency (ApacheBench's "
             "\"time per request\" in the talk's table is concurrency × time / requests, the same quantity "
             "under a closed loop); failed % is (non-2xx responses + connect, read, write and timeout "
             "errors) / (responses + socket errors); percentiles and max from wrk's latency histogram; "
             "server CPU µs/req is utime+stime from `/proc/PID/stat` over all the server's processes "
             "(uWSGI master and workers; nginx master and worker) before and after the run, divided by the "
             "responses; RSS is `VmRSS` summed over those processes right after the run, and in brackets "
             "the highest `VmHWM` (peak) of the cell; server core busy % is that CPU's busy share from "
             "`/proc/stat` (pinned only); wrk CPU % is wrk's user+system time over its wall time (near 100 % "
             "means the load generator, not the server, was the limit).")
    L.append("- × Falcon: the median requests/s divided by Falcon + uWSGI's median, same run, same load, same pinning.")
    L.append("")
    L.append("### The servers")
    L.append("")
    L.append("- **nginx**: `worker_processes 1`, `access_log off`, `keepalive_requests 1000000`, "
             "`return 200 \"Hello world\\n\"` with `default_type text/plain`: the ceiling for `GET /` "
             "(it has no `POST /` filter).")
    L.append("- **Falcon + uWSGI**: `bench/falcon_app.py`, the talk's app on Falcon 4 (`falcon.App()`, "
             "`resp.text`, the body read from `req.bounded_stream`; the same `json.loads`, comprehension and "
             "`json.dumps`). uWSGI with 2 worker processes as in the talk, plus `--master` (supervises and "
             "stops the workers; how uWSGI runs in production), `--http-socket` (the workers speak HTTP "
             "themselves: no router process in front), `--disable-logging` (no request log), `--need-app`. "
             "Connection close: uWSGI's http-socket closes the connection after every response but says "
             "`HTTP/1.1` without `Connection: close`, so wrk sends the next request on a dead socket and counts "
             "a read error for nearly every request (12 654 read errors for 12 662 responses in a trial). "
             "`--add-header 'Connection: close'` makes it say so, wrk then reconnects cleanly and counts no "
             "error: every Falcon request pays for a new TCP connection, as every request did under "
             "ApacheBench without `-k` in the talk. Keep-alive (`--http11-socket`) is no fix with 2 "
             "synchronous workers: each worker keeps one connection, so only 2 of the 64 are ever served.")
    L.append("- **example_app**: the release build, exactly as it ships, with its manifest's `LOG_LEVEL` "
             "and `VERSION`; one JSON request line per request on stdout, into a pipe drained by a reader "
             "(`wc -lc`, which counts and keeps nothing, on wrk's core when pinned), as a platform's log "
             "agent would; `/metrics` counts every request. Its log lines, checked:")
    L.extend("  " + line for line in log_check(out, cells, warm))
    L.append("")
    L.append("## Results")
    L.append("")
    L.extend(results_tables(machine, cells))
    L.append("## example_app's targets")
    L.append("")
    L.extend(targets(cells))
    L.append("## The cost of cdflow's own steps")
    L.append("")
    L.append("hyperfine, no shell (`-N`), unpinned. The dry run clones the seeded repository into a fresh "
             "state folder each time (`--prepare 'rm -rf STATE'`), as a first release would; it builds nothing.")
    L.append("")
    L.extend(hyperfine_rows(out))
    L.append("## TODO: with the local platform")
    L.append("")
    plat = os.path.join(out, "raw", "platform.json")
    state = json.load(open(plat)) if os.path.exists(plat) else {"skipped": "not run"}
    L.append(f"These come with cdflow's local platform (this run: {state.get('skipped') or state.get('measured')}). "
             "`bench/run` has the hook for them (`measure_platform`, enabled by `BENCH_PLATFORM=1`).")
    L.append("")
    L.append("- TODO: example_app through an environment's route against the same instance directly: "
             "requests/s, latency percentiles, and the route's added latency.")
    L.append("- TODO: wall time of `cdflow push`, `cdflow promote` and `cdflow rollback`.")
    L.append("- TODO: a full `cdflow release`, cold (empty build cache) and warm.")
    L.append("")
    L.append("## The exact commands")
    L.append("")
    L.append("```sh")
    seen = set()
    for line in open(os.path.join(out, "commands.txt")):
        line = line.rstrip("\n")
        if line and line not in seen:
            seen.add(line)
            L.append(line)
    L.append("```")
    L.append("")
    conf = os.path.join(out, "nginx.conf")
    if os.path.exists(conf):
        L.append("The generated nginx.conf (DIR is its temporary folder, TMP/nginx-MODE above):")
        L.append("")
        L.append("```nginx")
        text = open(conf).read()
        d = None
        for line in text.splitlines():
            if line.strip().startswith("pid "):
                d = os.path.dirname(line.split()[1].rstrip(";"))
        if d:
            text = text.replace(d, "DIR")
        L.append(text.rstrip())
        L.append("```")
        L.append("")
    L.append(f"Raw output of this run: `bench/out/{os.path.basename(os.path.abspath(out))}/` (not in git).")
    L.append("")
    return "\n".join(L)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, dest = argv[1], argv[2]
    text = report(out)
    kept = ""
    if os.path.exists(dest):
        old = open(dest, encoding="utf-8").read()
        if HAND_WRITTEN_MARKER in old:
            kept = old.split(HAND_WRITTEN_MARKER, 1)[1]
    with open(dest, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n" + HAND_WRITTEN_MARKER)
        f.write(kept if kept else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
