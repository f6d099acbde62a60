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
    "route": "example_app through the route",
    "direct": "the same instance directly",
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
# The local platform's.
TARGET_PLATFORM_STEP_S = 2.0
TARGET_ROUTE_ADDED_P99_MS = 1.0
PLATFORM_SECTION = "## The local platform"
# The seeded app's own compilation units: all a warm release may rebuild after the bump.
APP_UNITS = {"example_app", "service", "e2e"}


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
    if rec["mode"] in ("pinned", "platform", "platform-rate", "platform-burst"):
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
    for mode in modes:
        for load in ("get", "post"):
            servers = [s for s in ("nginx", "falcon", "example_app", "route") if (mode, load, s) in cells]
            if not servers:
                continue
            where = {
                "pinned": f"server pinned to CPU {machine['settings']['server_cpu']}, "
                          f"wrk to CPU {machine['settings']['client_cpu']}",
                "unpinned": "nothing pinned",
            }[mode]
            lines.append(f"### {LOAD_NAMES[load]}, {where}")
            lines.append("")
            lines.extend(table_head())
            falcon = cells.get((mode, load, "falcon"))
            falcon_rps = median_of(falcon, "rps") if falcon else None
            for s in servers:
                lines.append(table_row(SERVER_NAMES[s], cells[(mode, load, s)], falcon_rps))
            lines.append("")
    return lines


def table_head():
    return ["| server | requests/s | × Falcon | mean ms | failed % | p50 ms | p75 ms | p95 ms "
            "| p99 ms | max ms | server CPU µs/req | RSS MB after (peak) | server core busy % | wrk CPU % |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]


def table_row(label, runs, falcon_rps):
    rps = median_of(runs, "rps")
    ratio = f"{rps / falcon_rps:.1f}×" if falcon_rps else "–"
    rss = median_of(runs, "rss")
    hwm = max((r["hwm"] for r in runs if r.get("hwm") is not None), default=None)
    rss_cell = f"{rss:.1f} ({hwm:.1f})" if rss is not None else "–"
    flag = " ⚠" if any(r["compilers"] for r in runs) else ""
    return (f"| {label}{flag} | {cell(runs, 'rps', 0)} | {ratio} | {cell(runs, 'mean', 2)} "
            f"| {cell(runs, 'failed', 2)} | {cell(runs, 'p50', 2)} | {cell(runs, 'p75', 2)} "
            f"| {cell(runs, 'p95', 2)} | {cell(runs, 'p99', 2)} | {cell(runs, 'max', 1)} "
            f"| {cell(runs, 'cpu_us', 1)} | {rss_cell} | {cell(runs, 'server_core', 0)} "
            f"| {cell(runs, 'client_cpu', 0)} |")


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


def hyperfine_platform_rows(out):
    rows = []
    for name, label in (
        ("push", "`cdflow push --to staging` (built already: cargo finds nothing to do, same artifact)"),
        ("promote", "`cdflow promote --from staging --to production --force`"),
        ("rollback", "`cdflow rollback --env production` (0.1.1 back to 0.1.0)"),
    ):
        path = os.path.join(out, "raw", f"hyperfine-platform-{name}.json")
        if not os.path.exists(path):
            rows.append(f"| {label} | not measured | | | | |")
            continue
        r = json.load(open(path))["results"][0]
        ms = {k: r[k] * 1000 for k in ("mean", "stddev", "median", "min", "max")}
        ok = max(r["times"]) < TARGET_PLATFORM_STEP_S
        rows.append(f"| {label} | {ms['median']:.0f} | {ms['mean']:.0f} ± {ms['stddev']:.0f} "
                    f"| {ms['min']:.0f}–{ms['max']:.0f} | {len(r['times'])} | every run < {TARGET_PLATFORM_STEP_S:g} s: "
                    f"{verdict(ok)} |")
    return ["| command | median ms | mean ± σ ms | min–max ms | runs | target |",
            "| --- | ---: | ---: | ---: | ---: | --- |", *rows, ""]


def route_rows(cells):
    """The route against the instance directly, per mode: the tables and the difference."""
    lines = []
    diffs = []
    for mode, where in (("platform", "at saturation (64 connections, no pause)"),
                        ("platform-rate", "at a moderate rate (64 connections, each waiting a random time "
                                          "between requests)"),
                        ("platform-burst", "in bursts (64 connections, each waiting a fixed time between "
                                           "requests)")):
        route, direct = cells.get((mode, "get", "route")), cells.get((mode, "get", "direct"))
        if not route or not direct:
            continue
        lines.append(f"#### `GET /` {where}")
        lines.append("")
        lines.extend(table_head())
        lines.append(table_row(SERVER_NAMES["route"], route, None))
        lines.append(table_row(SERVER_NAMES["direct"], direct, None))
        lines.append("")
        diffs.append((where, route, direct))
    if not diffs:
        return ["Not measured.", ""]
    lines.append("#### What the route adds")
    lines.append("")
    lines.append("Medians of the route's runs minus medians of the direct runs; in brackets the range over the "
                 "runs paired in the order they ran (route run i, then direct run i).")
    lines.append("")
    lines.append(f"| load | requests/s route / direct | p50 added ms | p99 added ms | CPU µs/req added "
                 f"| p99 added < {TARGET_ROUTE_ADDED_P99_MS:g} ms |")
    lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for where, route, direct in diffs:
        def added(key, digits=2):
            a, b = median_of(route, key), median_of(direct, key)
            if a is None or b is None:
                return "–", None
            pairs = [r[key] - d[key] for r, d in zip(route, direct)
                     if r.get(key) is not None and d.get(key) is not None]
            text = f"{a - b:+.{digits}f}"
            if len(pairs) > 1:
                text += f" ({min(pairs):+.{digits}f} to {max(pairs):+.{digits}f})"
            return text, a - b
        p50, _ = added("p50")
        p99, p99v = added("p99")
        cpu, _ = added("cpu_us", 1)
        rr, rd = median_of(route, "rps"), median_of(direct, "rps")
        if rr / rd < 0.9:
            # Both saturated at different rates: their latencies say how long a queue each had,
            # not what the route adds to a request.
            judged = "no verdict: the route served far fewer requests, so the latencies do not compare"
        else:
            judged = verdict(p99v is not None and p99v < TARGET_ROUTE_ADDED_P99_MS)
        lines.append(f"| {where} | {thousands(rr)} / {thousands(rd)} = {rr / rd:.2f}× | {p50} | {p99} | {cpu} "
                     f"| {judged} |")
    lines.append("")
    return lines


def release_rows(out):
    recs = {}
    for n in ("cold", "warm"):
        path = os.path.join(out, "raw", f"release-{n}.json")
        if os.path.exists(path):
            recs[n] = json.load(open(path))
    if not recs:
        return ["Not measured.", ""]
    names = []
    for r in recs.values():
        for st in (r.get("run") or {}).get("stages", []):
            if st["name"] not in names:
                names.append(st["name"])
    cols = list(recs)
    lines = ["| stage | " + " | ".join(f"{n} s" for n in cols) + " |",
             "| --- |" + " ---: |" * len(cols)]

    def stage(r, name):
        for st in (r.get("run") or {}).get("stages", []):
            if st["name"] == name:
                mark = "" if st.get("status") == "succeeded" else f" ({st.get('status')})"
                return f"{st['seconds']:.1f}{mark}"
        return "–"
    for name in names:
        lines.append(f"| {name} | " + " | ".join(stage(recs[n], name) for n in cols) + " |")
    lines.append("| **all stages** | " + " | ".join(
        f"**{sum(st['seconds'] for st in (recs[n].get('run') or {}).get('stages', [])):.1f}**" for n in cols) + " |")
    lines.append("| wall time of the command | " + " | ".join(f"{recs[n]['wall_s']:.1f}" for n in cols) + " |")
    lines.append("| outcome | " + " | ".join(
        f"{(recs[n].get('run') or {}).get('status', '?')}, exit {recs[n]['rc']}, version "
        f"{(recs[n].get('run') or {}).get('version', '?')}" for n in cols) + " |")
    lines.append("")
    for n in cols:
        built = recs[n].get("built", {})
        units = sorted({u for v in built.values() for u in v})
        count = sum(len(v) for v in built.values())
        what = ", ".join(f"{p}: {', '.join(v) if len(v) <= 12 else f'{len(v)} units'}" for p, v in built.items())
        lines.append(f"- {n}: cargo wrote {count} of the {recs[n].get('artifacts_total', '?')} compiled units "
                     f"(crates and test binaries, per profile) in CARGO_TARGET_DIR/{{release,debug}}/deps "
                     f"({what or 'none'}).")
        if n == "warm":
            ok = recs[n]["rc"] == 0 and set(units) <= APP_UNITS
            lines.append(f"- The warm release rebuilds only the app's own crate and test binaries (its version "
                         f"changed with the bump), no dependency: {verdict(ok)}.")
    lines.append("")
    return lines


def platform_section(out, machine, cells):
    L = [PLATFORM_SECTION, ""]
    plat = os.path.join(out, "raw", "platform.json")
    state = json.load(open(plat)) if os.path.exists(plat) else {"skipped": "not run"}
    if state.get("skipped"):
        L.append(f"Not measured in this run: {state['skipped']}. `bench/run` measures it unless "
                 "`BENCH_PLATFORM=0`; `BENCH_ONLY=platform bench/run` measures only this part.")
        L.append("")
        return L
    if machine.get("only") == "platform":
        L.append(f"Measured alone by `BENCH_ONLY=platform bench/run` (started {machine['started']}, commit "
                 f"{machine['commit']}, load average at the start {' '.join(machine.get('loadavg_start', []))}, "
                 f"state: {machine.get('quiet', '')}); the rest of this file comes from the full run described "
                 "above.")
        L.append("")
    L.append("The seeded example app (`scripts/seed-example`) in a throwaway state folder (`CDFLOW_STATE_DIR`), "
             "staging and production on free ports. For the first two parts its manifest says "
             "`instances: 1` (it ships 2), so that the route and \"directly\" are the same process. "
             "The local platform's builds go to the state folder's cargo cache.")
    L.append("")
    L.append("### push, promote, rollback")
    L.append("")
    L.append("hyperfine, no shell, 1 warm-up run. Each command returns once the route serves the new "
             "deployment (instances healthy, route switched) and the old instance is drained and stopped. "
             "The first push, which builds, is not timed. `promote` uses `--force` (no e2e record on "
             "staging is needed). For `rollback` production needs a second version: the seeded repository "
             "is bumped with `cdflow bump patch --no-tag` and pushed to staging (not timed); each timed "
             "rollback takes production from 0.1.1 back to 0.1.0, after a `--prepare` that promotes 0.1.1 again.")
    L.append("")
    L.extend(hyperfine_platform_rows(out))
    L.append("### The route's added latency and CPU")
    L.append("")
    L.append(f"`GET /` with wrk as above (1 thread, {machine['settings']['connections']} connections, "
             f"{machine['settings']['seconds']} s per run, {machine['settings']['runs']} runs, interleaved, after a "
             f"discarded warm-up), against the route and against its one instance's own port (from `cdflow "
             f"status`). The environment was started under `taskset -c {machine['settings']['server_cpu']}`: the "
             f"route's server (`cdflow serve-env`, the proxy) and the instance share CPU "
             f"{machine['settings']['server_cpu']}; wrk runs on CPU {machine['settings']['client_cpu']}. Server "
             "CPU µs/req and RSS are over the environment's whole session (proxy and instance); loaded directly, "
             "the proxy sits idle, so the difference is the proxy's cost. At the moderate rate each connection "
             "waits a random time before its next request (wrk's `delay()`: exponentially distributed with "
             "mean `BENCH_DELAY_MS`, as independent users' think times are), so the requests arrive spread "
             "out in time. In bursts each connection waits exactly `BENCH_DELAY_MS` "
             "(`BENCH_DELAY_KIND=fixed`): connections answered in the same millisecond wake in the same "
             "millisecond, fall into step, and the requests arrive in bursts of tens; since the proxy and "
             "the instance share one core, each request of a burst waits for the proxy's work on the ones "
             "before it, so the route's added latency grows with the burst. wrk2's fixed-rate mode is not in "
             "Debian.")
    L.append("")
    L.extend(route_rows(cells))
    L.append("### A full release, cold and warm")
    L.append("")
    L.append("`cdflow --json release --repo TMP/release-seed.git` of the example app as it ships (2 instances), from a "
             "bare clone of the seeded repository: clone, test (unit and service tiers), bump, push to "
             "staging, e2e, promote. Cold: an empty state folder and an empty `CARGO_TARGET_DIR` (a fresh "
             "temporary folder), so every dependency is compiled, for the tests and for the release build. "
             "Warm: the same command right after; its bump (0.1.1 to 0.1.2) changes the app's version, so "
             "cargo rebuilds the app's own crate and nothing else. Seconds per stage from the run record "
             "(`$CDFLOW_STATE_DIR/runs/*.json`).")
    L.append("")
    L.extend(release_rows(out))
    cmds = os.path.join(out, "platform-commands.txt")
    if os.path.exists(cmds):
        L.append("The commands of this part (TMP is the run's temporary folder; SPORT, PPORT and IPORT are "
                 "free ports: staging's route, production's route and the instance's own):")
        L.append("")
        L.extend(command_block(cmds))
    return L


def command_block(path):
    """The commands a run noted in `path`, each once, in order, as a shell code block."""
    lines, seen = ["```sh"], set()
    for line in open(path):
        line = line.rstrip("\n")
        if line and line not in seen:
            seen.add(line)
            lines.append(line)
    return lines + ["```", ""]


def splice_platform(dest, section):
    """BENCH_ONLY=platform: replace only the platform's section of an existing report."""
    old = open(dest, encoding="utf-8").read()
    for heading in (PLATFORM_SECTION + "\n", "## TODO: with the local platform\n"):
        i = old.find(heading)
        if i >= 0:
            j = old.find("\n## ", i + len(heading))
            j = len(old) if j < 0 else j + 1
            return old[:i] + section + old[j:]
    marker = old.find("## The exact commands")
    if marker >= 0:
        return old[:marker] + section + old[marker:]
    return old + "\n" + section


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
    L.extend(platform_section(out, machine, cells))
    L.append("## The exact commands")
    L.append("")
    L.extend(command_block(os.path.join(out, "commands.txt")))
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
    machine = json.load(open(os.path.join(out, "machine.json")))
    if machine.get("only") == "platform":
        if not os.path.exists(dest):
            print(f"summarize: {dest} must exist: BENCH_ONLY=platform rewrites only its platform section",
                  file=sys.stderr)
            return 2
        _, cells, _ = load_records(out)
        text = splice_platform(dest, "\n".join(platform_section(out, machine, cells)) + "\n")
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
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
