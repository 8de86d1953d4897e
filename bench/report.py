#!/usr/bin/env python3
"""The tables and JSON of a benchmark run (`make bench`), from its raw measurements.

Usage: report.py RUN_DIR --json OUT.json [--machine TEXT] [--envoy TEXT] [--oha TEXT]
                 [--loadavg TEXT] [--module-sha256 HEX] [--module-bytes N] [--git TEXT]
                 [--strict-targets 1]

RUN_DIR holds arms.json (the arms' names and labels, in the tables' order) and, per round, arm
and mode, <round>-<arm>-<mode>.json (what the driver, integration/src/bin/bench, measured),
.oha.json (oha's output), .stats0 and .stats1 (Envoy's counters before and after). Exit status:
2 when a measurement did not take its arm's path (the numbers would be meaningless), 1 when
--strict-targets 1 and a goal is missed, else 0.

Every arm is compared, round by round, with the floors: A0 (no filter), A1-min (an empty wasm
filter exporting only loopback-guard's callbacks), A1 (the SDK's empty filter, every export) and
A2 (native RBAC). The goals table (issue 11) is filled in from this one run.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

# Filled from RUN_DIR/arms.json: the driver's arms are the one list of them.
ARM_ORDER = []
ARM_LABEL = {}
MODES = ["rate", "max", "newconn", "cpu", "cpu-newconn"]
# What every arm is compared with, within each round.
REFS = ("A0", "A1-min", "A1", "A2")


def read_stats(path):
    stats = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                stats[parts[0]] = int(parts[1])
    return stats


def load(run_dir):
    """One record per measurement, with derived numbers and the path check."""
    records = []
    for meta_path in sorted(glob.glob(os.path.join(run_dir, "*.json"))):
        name = os.path.basename(meta_path)
        if (name.endswith(".oha.json") or name.startswith("rss-") or name in ("arms.json", "memory-arms.json", "pushes.json")):
            continue
        base = meta_path[: -len(".json")]
        with open(meta_path) as f:
            meta = json.load(f)
        with open(base + ".oha.json") as f:
            oha = json.load(f)
        s0, s1 = read_stats(base + ".stats0"), read_stats(base + ".stats1")

        def delta(name):
            return s1.get(name, 0) - s0.get(name, 0)

        served = delta("http.loopback_strict.downstream_rq_total")
        ticks = meta["cpu1"][0] - meta["cpu0"][0]
        sched_ns = meta["cpu1"][1] - meta["cpu0"][1]
        ok_2xx, got_4xx, got_5xx = (delta(f"http.loopback_strict.downstream_rq_{c}") for c in ("2xx", "4xx", "5xx"))
        connections = delta(next((k for k in s1 if k.endswith(".downstream_cx_total") and k.startswith("listener.")), "-"))
        problems = []
        if served != meta["requests"]:
            problems.append(f"Envoy served {served} requests, {meta['requests']} sent")
        if meta["expect"] == "2xx" and ok_2xx != served:
            problems.append(f"{ok_2xx} of {served} answered 2xx")
        if meta["expect"] == "403" and got_4xx != served:
            problems.append(f"{got_4xx} of {served} answered 4xx")
        codes = oha.get("statusCodeDistribution", {})
        want_code = "200" if meta["expect"] == "2xx" else "403"
        if codes.get(want_code, 0) != meta["requests"]:
            problems.append(f"oha saw status codes {codes}, errors {oha.get('errorDistribution')}")
        if meta["counter"] != "none" and delta(meta["counter"]) != served:
            problems.append(f"{meta['counter']} counted {delta(meta['counter'])} of {served}")
        if meta["mode"] == "newconn" and connections < served:
            problems.append(f"{connections} connections for {served} requests in new-connection mode")
        served = max(served, 1)
        records.append(
            {
                "round": meta["round"],
                "arm": meta["arm"],
                "mode": meta["mode"],
                "requests": served,
                "connections": connections,
                "rps": oha["summary"]["requestsPerSec"],
                "p50_us": oha["latencyPercentiles"]["p50"] * 1e6,
                "p99_us": oha["latencyPercentiles"]["p99"] * 1e6,
                # Per burst, ns from schedstat (clock ticks are 10 ms: too coarse for one burst);
                # utime+stime in ticks is kept to total over the arm.
                "cpu_us": sched_ns / served / 1e3 if sched_ns > 0 else ticks / meta["clk_tck"] / served * 1e6,
                "cpu_ticks": ticks,
                "clk_tck": meta["clk_tck"],
                "envoy_busy": sched_ns / meta["wall_ns"] if sched_ns > 0 else None,
                "rss_mb": meta["rss_kb"] / 1024,
                "status_2xx": ok_2xx,
                "status_4xx": got_4xx,
                "status_5xx": got_5xx,
                "problems": problems,
            }
        )
    return records


def arm_key(arm):
    if arm in ARM_ORDER:
        return (ARM_ORDER.index(arm), arm)
    return (len(ARM_ORDER), arm)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records):
    by = {}
    for r in records:
        by.setdefault((r["arm"], r["mode"]), {})[r["round"]] = r
    arms = sorted({r["arm"] for r in records}, key=arm_key)
    summary = {}
    for mode in MODES:
        for arm in arms:
            rounds = by.get((arm, mode))
            if not rounds:
                continue
            row = {
                k: median([r[k] for r in rounds.values()])
                for k in ("rps", "p50_us", "p99_us", "cpu_us", "envoy_busy", "rss_mb")
            }
            row["rounds"] = len(rounds)
            # The issue's definition, over the whole arm: utime+stime / requests served.
            row["cpu_us_utime_stime"] = (
                sum(r["cpu_ticks"] / r["clk_tck"] for r in rounds.values())
                / sum(r["requests"] for r in rounds.values()) * 1e6
            )
            # Per round against the same round's floors: the interleaving makes these pairs.
            # (A host-call probe is priced against A1, the same module doing nothing; an -alt arm,
            # another build of the module, against the same arm with the shipped build.)
            for ref in REFS + ((arm[: -len("-alt")],) if arm.endswith("-alt") else ()):
                refs = by.get((ref, mode), {})
                paired = [(rounds[n], refs[n]) for n in sorted(rounds) if n in refs]
                row[f"per_round_vs_{ref}"] = [
                    {
                        "round": a["round"],
                        "rps_ratio": a["rps"] / b["rps"],
                        "cpu_us_delta": a["cpu_us"] - b["cpu_us"],
                        "rss_mb_delta": a["rss_mb"] - b["rss_mb"],
                    }
                    for a, b in paired
                ]
                for k in ("rps_ratio", "cpu_us_delta", "rss_mb_delta"):
                    row[f"{k}_vs_{ref}"] = median([p[k] for p in row[f"per_round_vs_{ref}"]])
            summary.setdefault(mode, {})[arm] = row
    return summary


def probes(summary):
    """Per-call cost of host calls, from the A1+<call>*N arms."""
    out = {}
    for mode, rows in summary.items():
        for arm, row in rows.items():
            m = re.fullmatch(r"A1\+(.+)", arm)
            if not m or "A1" not in rows:
                continue
            items = [i for i in re.split(r"[,\s]+", m.group(1)) if i]
            calls = sum(int(i.rsplit("*", 1)[1]) if re.search(r"\*\d+$", i) else 1 for i in items)
            extra = row["cpu_us_delta_vs_A1"]
            out.setdefault(mode, {})[m.group(1)] = {
                "calls_per_request": calls,
                "us_above_A1": extra,
                "us_per_call": extra / calls,
            }
    return out


MEMORY_FIELDS = ("rss_kb", "allocated", "heap_size", "pageheap_free", "pageheap_unmapped", "total_thread_cache")


def mb(sample, field):
    """A /memory field (bytes) or VmRSS (KiB) in MB (MiB)."""
    if sample is None or field not in sample:
        return None
    return sample[field] / 1024 if field == "rss_kb" else sample[field] / 1048576


def memory_phase(run_dir):
    """The memory phase: {release: {workers: {arm: {"warm": sample, "end": sample}}}}."""
    out = {}
    for path in glob.glob(os.path.join(run_dir, "rss-*.json")):
        with open(path) as f:
            r = json.load(f)
        switch = "on" if r.get("release") else "off"
        out.setdefault(switch, {}).setdefault(r["workers"], {})[r["arm"]] = {"warm": r.get("warm"), "end": r.get("end")}
    return out


def rss_scaling(run_dir):
    """RSS by arm and worker count (the shipped memory release on), and what each extra worker
    costs above A0 and above A1."""
    phase = memory_phase(run_dir)
    by_workers = phase.get("on") or phase.get("off") or {}
    rss = {}
    for workers, arms in by_workers.items():
        for arm, samples in arms.items():
            if samples["warm"]:
                rss.setdefault(arm, {})[workers] = samples["warm"]["rss_kb"] / 1024
    if "A0" not in rss or len(rss["A0"]) < 2:
        return None
    lo, hi = min(rss["A0"]), max(rss["A0"])
    out = {"workers": [lo, hi], "rss_mb": rss, "above_A0": {}, "release": "on" if phase.get("on") else "off"}
    for arm, by in rss.items():
        if arm == "A0" or lo not in by or hi not in by:
            continue
        d_lo = by[lo] - rss["A0"][lo]
        d_hi = by[hi] - rss["A0"][hi]
        out["above_A0"][arm] = {
            f"at_{lo}_workers_mb": d_lo,
            f"at_{hi}_workers_mb": d_hi,
            f"per_worker_at_{hi}_workers_mb": d_hi / hi,
            "per_extra_worker_mb": (d_hi - d_lo) / (hi - lo),
        }
    return out


def pushes(run_dir):
    """Config pushes, {kind: {arm: row}} (kind cold: the module's first compile in that Envoy;
    warm: a new VM of a module compiled before): medians of ready_ms and first_request_ms, and of
    the differences to A0 and A1 within each round."""
    path = os.path.join(run_dir, "pushes.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = json.load(f)
    by = {}
    for r in records:
        by.setdefault(r.get("kind", "cold"), {}).setdefault(r["arm"], {})[r.get("round", r["push"])] = r
    out = {}
    for kind, arms in by.items():
        for arm, runs in arms.items():
            row = {"pushes": len(runs),
                   "ready_ms": median([r["ready_ms"] for r in runs.values()]),
                   "first_request_ms": median([r["first_request_ms"] for r in runs.values()])}
            for ref in ("A0", "A1"):
                if ref in arms:
                    for key in ("ready_ms", "first_request_ms"):
                        row[f"{key}_vs_{ref}"] = median(
                            [r[key] - arms[ref][n][key] for n, r in runs.items() if n in arms[ref]])
            out.setdefault(kind, {})[arm] = row
    return out


def module_sizes(path):
    if not path or not os.path.exists(path):
        return None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wasm_sizes

    with open(path, "rb") as f:
        result = wasm_sizes.analyse(f.read())
    result["top"] = result["top"][:20]
    return result


def targets(summary, rss=None, module_bytes=None):
    """Issue 11's goals, each with the measured figure and met or missed (None: not measured)."""
    ka, mx, nc = summary.get("rate", {}), summary.get("max", {}), summary.get("newconn", {})
    found = []

    def add(name, value, limit, unit, arms, bound="<="):
        ok = None if value is None else (value <= limit if bound == "<=" else value >= limit)
        found.append({"target": name, "value": value, "limit": limit, "unit": unit, "bound": bound,
                      "arms": arms, "pass": ok})

    def delta(rows, arm, ref, key="cpu_us_delta"):
        return rows.get(arm, {}).get(f"{key}_vs_{ref}")

    add("warm keep-alive allowed request, Envoy CPU per request above A1", delta(ka, "A3", "A1"), 0.0,
        "us", "rate: A3 - A1")
    add("throughput as fast as it goes, relative to A1", delta(mx, "A3", "A1", "rps_ratio"), 1.0, "ratio",
        "max: A3 / A1", ">=")
    add("denied request (rogue, keep-alive), Envoy CPU per request above A1", delta(ka, "A3-deny", "A1"),
        5.0, "us", "rate: A3-deny - A1")
    add("new TLS connection per request (certificate cached), above A1", delta(nc, "A3", "A1"), 10.0, "us",
        "newconn: A3 - A1")
    # A3 and A4 reuse a connection's verdict, so keep-alive traffic hardly ever parses. The
    # -full arms decide every request in full, as a connection's first (bench/build-full.sh);
    # A4-full has the certificate cache off, so it parses and checks the certificate every time.
    first = None
    a4, a3 = ka.get("A4-full", {}).get("per_round_vs_A0"), ka.get("A3-full", {}).get("per_round_vs_A0")
    if a4 and a3:
        a3_by_round = {p["round"]: p["cpu_us_delta"] for p in a3}
        first = median([p["cpu_us_delta"] - a3_by_round[p["round"]] for p in a4 if p["round"] in a3_by_round])
    add("first sight of a certificate (parse and check), above a cached one", first, 15.0, "us",
        "rate: A4-full - A3-full")
    rss_delta = None
    if rss and "A3" in rss["rss_mb"] and "A1" in rss["rss_mb"]:
        lo = rss["workers"][0]
        if lo == 1 and 1 in rss["rss_mb"]["A3"] and 1 in rss["rss_mb"]["A1"]:
            rss_delta = rss["rss_mb"]["A3"][1] - rss["rss_mb"]["A1"][1]
    if rss_delta is None:
        rss_delta = delta(ka, "A3", "A1", "rss_mb_delta")
    add("Envoy RSS above A1, one worker", rss_delta, 2.0, "MB", "A3 - A1")
    add("module size", None if module_bytes is None else module_bytes / 1000, 200.0, "KB",
        "dist/loopback_guard.wasm")
    return found


def memory_targets(phase, push, module_bytes):
    """Issue 19's goals, from this run: memory with the shipped release on, 1 and 2 workers."""
    found = []

    def add(name, value, limit, unit, arms):
        found.append({"target": name, "value": value, "limit": limit, "unit": unit, "bound": "<=",
                      "arms": arms, "pass": None if value is None else value <= limit})

    def diff(switch, workers, field, when="warm"):
        arms = phase.get(switch, {}).get(workers, {})
        if "A3" not in arms or "A1" not in arms:
            return None
        a3, a1 = mb(arms["A3"][when], field), mb(arms["A1"][when], field)
        return None if a3 is None or a1 is None else a3 - a1

    add("RSS above A1 after warm-up, one worker (memory release on, as shipped)", diff("on", 1, "rss_kb"),
        2.0, "MB", "VmRSS: A3 - A1")
    add("live memory (tcmalloc allocated) above A1, one worker", diff("on", 1, "allocated"), 1.0, "MB",
        "/memory allocated: A3 - A1")
    workers = sorted(phase.get("on", {}))
    per_worker = None
    if len(workers) >= 2:
        lo, hi = workers[0], workers[-1]
        d_lo, d_hi = diff("on", lo, "rss_kb"), diff("on", hi, "rss_kb")
        if d_lo is not None and d_hi is not None:
            per_worker = (d_hi - d_lo) / (hi - lo)
    add("RSS growth per extra worker above A1's", per_worker, 0.3, "MB",
        "VmRSS: (A3 - A1) at 2 workers - at 1")
    add("module size", None if module_bytes is None else module_bytes / 1000, 200.0, "KB",
        "dist/loopback_guard.wasm")
    cold = (push or {}).get("cold", {})
    first = cold["A3"].get("ready_ms_vs_A1") if "A3" in cold else None
    add("config push to the first answered request (compile + first decision) above A1", first, 5.0, "ms",
        "cold push: A3 - A1")
    return found


def print_memory(phase, arms_memory, push, sizes):
    fields = ("rss_kb", "allocated", "heap_size", "pageheap_free", "pageheap_unmapped", "total_thread_cache")
    head = "| VmRSS | allocated | heap_size | pageheap_free | pageheap_unmapped | thread caches "
    if arms_memory:
        print("\n## memory of every measured arm (MB; one worker, memory release as the run sets it), "
              "right after the warm-up / at the end of the rounds (minutes later)\n")
        print("| arm " + head + "|")
        print("|---" + "|--:" * len(fields) + "|")
        for arm in sorted(arms_memory, key=arm_key):
            m = arms_memory[arm]
            print(f"| {arm} " + "".join(
                f"| {fmt(mb(m.get('warm'), f), '.1f')} / {fmt(mb(m.get('end'), f), '.1f')} " for f in fields) + "|")
    for switch in ("off", "on"):
        for workers in sorted(phase.get(switch, {})):
            arms = phase[switch][workers]
            print(f"\n## memory, {workers} worker(s), memory release {switch} "
                  f"({'bootstrap memory_allocator_manager, as shipped' if switch == 'on' else 'Envoy default'}): "
                  "MB after a warm-up and a pause / after as many requests more and the same pause\n")
            print("| arm " + head + "| VmRSS above A1 |")
            print("|---" + "|--:" * (len(fields) + 1) + "|")
            for arm in sorted(arms, key=arm_key):
                m = arms[arm]
                above = None
                if "A1" in arms and m.get("warm") and arms["A1"].get("warm"):
                    above = mb(m["warm"], "rss_kb") - mb(arms["A1"]["warm"], "rss_kb")
                print(f"| {arm} " + "".join(
                    f"| {fmt(mb(m.get('warm'), f), '.1f')} / {fmt(mb(m.get('end'), f), '.1f')} " for f in fields)
                    + f"| {fmt(above, '+.1f')} |")
    for kind, rows in (push or {}).items():
        what = ("the module's first compile in that Envoy, as a new module version"
                if kind == "cold" else "a new VM of a module compiled before, as a changed plugin config")
        print(f"\n## config push, {kind} ({what}): a listener with the arm's filter pushed through a watched "
              "LDS file, to the first answered request (ms, medians)\n")
        print("| arm | pushes | push to first answer | of which the first request | above A1 | first request above A1 |")
        print("|---|--:|--:|--:|--:|--:|")
        for arm in sorted(rows, key=arm_key):
            r = rows[arm]
            print(f"| {arm} | {r['pushes']} | {fmt(r['ready_ms'], '.1f')} | {fmt(r['first_request_ms'], '.1f')} "
                  f"| {fmt(r.get('ready_ms_vs_A1'), '+.1f')} | {fmt(r.get('first_request_ms_vs_A1'), '+.1f')} |")
    if sizes:
        print(f"\n## the module's 20 biggest functions (of {sizes['functions']}; code {sizes['code_bytes']} bytes, "
              f"data {sizes['sections'].get('data', 0)} bytes)\n")
        print("| bytes | function |")
        print("|--:|---|")
        for f in sizes["top"]:
            print(f"| {f['bytes']} | `{f['name'][:140]}` |")


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_tables(summary, found, probe_costs, rss):
    for mode, rows in summary.items():
        title = {
            "cpu": "cpu: keep-alive, all arms at once at a fixed rate (Envoy CPU per request)",
            "cpu-newconn": "cpu-newconn: a new TLS connection per request, all arms at once at a fixed rate",
            "max": "max: keep-alive, each arm alone, as fast as it goes (throughput)",
            "newconn": "newconn: a new TLS connection per request, each arm alone, as fast as it goes",
            "rate": "rate: keep-alive, each arm alone, at a fixed rate (Envoy CPU per request)",
        }.get(mode, mode)
        print(f"\n## {title}: medians over rounds\n")
        print("| arm | what | req/s | p50 us | p99 us | CPU us/req (utime+stime) | CPU us/req | RSS MB "
              + "".join(f"| CPU vs {ref} us | req/s vs {ref} " for ref in REFS) + "|")
        print("|---|---|--:|--:|--:|--:|--:|--:" + "|--:|--:" * len(REFS) + "|")
        for arm, r in rows.items():
            print(f"| {arm} | {ARM_LABEL.get(arm, 'A1 + host calls')} | {fmt(r['rps'], '.0f')} "
                  f"| {fmt(r['p50_us'], '.0f')} | {fmt(r['p99_us'], '.0f')} "
                  f"| {fmt(r['cpu_us_utime_stime'], '.1f')} | {fmt(r['cpu_us'], '.2f')} "
                  f"| {fmt(r['rss_mb'], '.1f')} "
                  + "".join(f"| {fmt(r.get(f'cpu_us_delta_vs_{ref}'), '+.2f')} "
                            f"| {fmt(r.get(f'rps_ratio_vs_{ref}'), '.3f')} " for ref in REFS) + "|")
        print(f"\n{title}, per round (round: req/s ratio, CPU delta us):\n")
        for arm, r in rows.items():
            for ref in REFS + ((arm[: -len("-alt")],) if arm.endswith("-alt") else ()):
                pairs = r.get(f"per_round_vs_{ref}", [])
                if arm == ref or not pairs:
                    continue
                cells = "  ".join(f"{p['rps_ratio']:.3f} {p['cpu_us_delta']:+.2f}" for p in pairs)
                print(f"  {arm:<8} vs {ref}: {cells}")
    if probe_costs:
        print("\n## host calls, cost per call (A1 variants minus A1)\n")
        print("| mode | calls | calls per request | CPU us/req above A1 | us per call |")
        print("|---|---|--:|--:|--:|")
        for mode, rows in probe_costs.items():
            for spec, p in rows.items():
                print(f"| {mode} | `{spec}` | {p['calls_per_request']} | {p['us_above_A1']:+.2f} "
                      f"| {p['us_per_call']:.3f} |")
    if rss:
        lo, hi = rss["workers"]
        print(f"\n## Envoy RSS by worker count (MB, after a warm-up)\n")
        print(f"| arm | {lo} worker(s) | {hi} workers | above A0 at {lo} | above A0 at {hi} | each extra worker |")
        print("|---|--:|--:|--:|--:|--:|")
        for arm in sorted(rss["rss_mb"], key=arm_key):
            by = rss["rss_mb"][arm]
            a = rss["above_A0"].get(arm, {})
            print(f"| {arm} | {fmt(by.get(lo), '.1f')} | {fmt(by.get(hi), '.1f')} "
                  f"| {fmt(a.get(f'at_{lo}_workers_mb'), '+.1f')} | {fmt(a.get(f'at_{hi}_workers_mb'), '+.1f')} "
                  f"| {fmt(a.get('per_extra_worker_mb'), '+.1f')} |")
    alts = [(mode, arm, r) for mode, rows in summary.items() for arm, r in rows.items() if arm.endswith("-alt")]
    if alts:
        print("\n## the other build (BENCH_GUARD_ALT_WASM) against the shipped one\n")
        print("| mode | arm | CPU us/req above the shipped build (median of rounds) | req/s ratio |")
        print("|---|---|--:|--:|")
        for mode, arm, r in alts:
            base = arm[: -len("-alt")]
            print(f"| {mode} | {arm} vs {base} | {fmt(r.get(f'cpu_us_delta_vs_{base}'), '+.2f')} "
                  f"| {fmt(r.get(f'rps_ratio_vs_{base}'), '.3f')} |")
    print_goals("issue 11", found)


def print_goals(issue, found):
    print(f"\n## goals ({issue}), from this run\n")
    print("| figure | arms | goal | measured | result |")
    print("|---|---|--:|--:|---|")
    for t in found:
        result = {True: "met", False: "MISSED", None: "not measured"}[t["pass"]]
        spec = {"ratio": ".3f", "KB": ".1f", "ms": "+.1f"}.get(t["unit"], "+.2f")
        print(f"| {t['target']} | {t['arms']} | {t['bound']} {t['limit']:g} {t['unit']} "
              f"| {fmt(t['value'], spec)} {t['unit']} | {result} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--json", required=True)
    parser.add_argument("--machine", default="")
    parser.add_argument("--envoy", default="")
    parser.add_argument("--oha", default="")
    parser.add_argument("--loadavg", default="")
    parser.add_argument("--module-sha256", default="")
    parser.add_argument("--module-bytes", type=int, default=None)
    parser.add_argument("--git", default="")
    parser.add_argument("--strict-targets", default="0")
    parser.add_argument("--module-names", default="")
    parser.add_argument("--module-path", default="")
    parser.add_argument("--memory-release", default="")
    args = parser.parse_args()

    with open(os.path.join(args.run_dir, "arms.json")) as f:
        for arm in json.load(f):
            ARM_ORDER.append(arm["name"])
            ARM_LABEL[arm["name"]] = arm["label"]
    records = load(args.run_dir)
    if not records:
        print(f"no measurements in {args.run_dir}", file=sys.stderr)
        return 2
    summary = summarize(records)
    probe_costs = probes(summary)
    rss = rss_scaling(args.run_dir)
    found = targets(summary, rss, args.module_bytes)
    print_tables(summary, found, probe_costs, rss)
    phase = memory_phase(args.run_dir)
    arms_memory = None
    if os.path.exists(os.path.join(args.run_dir, "memory-arms.json")):
        with open(os.path.join(args.run_dir, "memory-arms.json")) as f:
            arms_memory = json.load(f)
    push = pushes(args.run_dir)
    sizes = module_sizes(args.module_names)
    shipped = module_sizes(args.module_path)
    if sizes and shipped and sizes["code_bytes"] != shipped["code_bytes"]:
        print(f"warning: the named build's code ({sizes['code_bytes']} bytes) is not the shipped module's "
              f"({shipped['code_bytes']}): its table does not describe it", file=sys.stderr)
        sizes["differs_from_shipped"] = True
    print_memory(phase, arms_memory, push, sizes)
    memory_found = memory_targets(phase, push, args.module_bytes)
    print_goals(f"issue 19, memory release {args.memory_release} bytes/s", memory_found)

    bad = [r for r in records if r["problems"]]
    with open(args.json, "w") as f:
        json.dump({"machine": args.machine, "envoy": args.envoy, "oha": args.oha, "git": args.git,
                   "loopback_guard_wasm_sha256": args.module_sha256,
                   "loopback_guard_wasm_bytes": args.module_bytes,
                   "loadavg_after": args.loadavg, "summary": summary, "host_call_costs": probe_costs, "rss_scaling": rss,
                   "targets": found, "memory_targets": memory_found, "memory_phase": phase,
                   "memory_arms": arms_memory, "config_pushes": push, "module_sizes": sizes,
                   "measurements": records}, f, indent=2)
    if bad:
        print("\nmeasurements that did not take their arm's path:", file=sys.stderr)
        for r in bad:
            print(f"  round {r['round']} {r['arm']} {r['mode']}: {'; '.join(r['problems'])}", file=sys.stderr)
        return 2
    if args.strict_targets == "1" and any(t["pass"] is False for t in found + memory_found):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
