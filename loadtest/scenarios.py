"""scenarios.py - the benchmarks of the original API (loadtest/README.md).

  main    each wrk scenario against gophermqd and the ceiling, alternating
          A B A B ... for --rounds rounds (run_main, print_main)
  memory  RSS of an idle daemon and bytes per pending copy (run_memory)
  scale   publish cost with 10 .. 10^6 subjects (run_scale)
Each part has run_X(options, workdir, report) and print_X(...);
judge(report, targets) adds their lines to the Targets block.
"""

import os
import time
import uuid

import benchhttp as net
from benchkit import (MIB, BenchError, measure, median, median_ratio, print_table, progress,
                      run_wrk, settle_rss, start_ceiling, start_daemon, supports_delivery,
                      wait_for_quiet)

SCENARIOS = ["publish", "pubfetch", "fanout", "fanout1000", "async", "batchfetch"]
SCENARIO_HELP = {
    "publish": "sync publish, 1 subscriber",
    "pubfetch": "original k6 scenario: publish, fetch, ... one shared subscriber",
    "fanout": "sync publish to a subject with --fanout subscribers",
    "fanout1000": "sync publish to a subject with --fanout-large subscribers (1000)",
    "async": "async publish, 1 subscriber",
    "batchfetch": "publish to --batch subscribers / fetch ~--batch messages, 1:1",
}
PUBLISHING = ("publish", "async", "fanout", "fanout1000")
# Seconds per run at most: a run of fanout1000 stores ~10^7 copies a second.
DURATION_CAP = {"fanout1000": 2}


# ---------------------------------------------------------------------------
# Main table
# ---------------------------------------------------------------------------
def prepare_scenario(name, options, daemon, workdir):
    """Subscribes what the scenario needs on gophermqd.  Returns
    (script, args for gophermqd, args for the ceiling, subject, ids)."""
    size = str(options.size)
    threads = str(options.threads)
    if name in PUBLISHING:
        subject = "bench." + name
        count = {"fanout": options.fanout, "fanout1000": options.fanout_large}.get(name, 1)
        ids = net.subscribe_many(daemon.port, [subject] * count)
        args = {"subject": subject, "size": size}
        script = "async.lua" if name == "async" else (
            "fanout.lua" if name.startswith("fanout") else "publish.lua")
        return script, args, args, subject, ids
    if name == "pubfetch":
        subject = "load.test"
        ids = net.subscribe_many(daemon.port, [subject])
        args = {"subject": subject, "id": ids[0]}
        fake = {"subject": subject, "id": str(uuid.uuid4())}
        return "pubfetch.lua", args, fake, subject, ids
    if name == "batchfetch":
        subject = "bench.batch"
        ids = net.subscribe_many(daemon.port, [subject] * options.batch)
        real_path = os.path.join(workdir, "batch-ids.txt")
        fake_path = os.path.join(workdir, "batch-fake-ids.txt")
        with open(real_path, "w") as real:
            real.write("\n".join(ids) + "\n")
        with open(fake_path, "w") as fake:
            fake.write("\n".join(str(uuid.uuid4()) for _ in ids) + "\n")
        common = {"subject": subject, "size": size, "threads": threads}
        return ("batchfetch.lua", dict(common, ids=real_path), dict(common, ids=fake_path),
                subject, ids)
    raise BenchError("unknown scenario %s" % name)


def empty_subscribers(daemon, subject, ids, delivery):
    """Empties the scenario's subscribers after a run; returns (how many
    messages they held, the ids to use from now on).  Large fan-outs are
    unsubscribed and subscribed again when the daemon can (issue 11's
    /api/unsubscribe frees 10^7 copies at once); the rest are fetched."""
    if len(ids) >= 1000 and delivery:
        held = daemon.pending()
        for subscriber in ids:
            net.api_call(daemon.port, "/api/unsubscribe", {"subject": subject, "id": subscriber})
        return held, net.subscribe_many(daemon.port, [subject] * len(ids))
    return net.drain(daemon.port, subject, ids, batch=10000 if delivery else None), ids


def run_main(options, workdir, report):
    daemon = start_daemon(options.daemon_binary, workdir, "main", options.daemon_option)
    ceiling = start_ceiling(options.ceiling_binary, workdir)
    progress("gophermqd pid %d on port %d (metrics %d), ceiling pid %d on port %d"
             % (daemon.pid, daemon.port, daemon.metrics_port, ceiling.pid, ceiling.port))
    try:
        return main_table(options, daemon, ceiling, workdir, report)
    finally:
        daemon.stop()
        ceiling.stop()


def main_table(options, daemon, ceiling, workdir, report):
    rows = []
    checks = []
    delivery = supports_delivery(daemon)
    if options.warmup > 0:
        progress("warm-up: %d s against each server" % options.warmup)
        ids = net.subscribe_many(daemon.port, ["bench.warmup"])
        for server in (daemon, ceiling):
            run_wrk(options, "publish.lua", server, {"subject": "bench.warmup"}, options.warmup)
        net.drain(daemon.port, "bench.warmup", ids)
    for name in options.scenarios:
        script, daemon_args, ceiling_args, subject, ids = prepare_scenario(
            name, options, daemon, workdir)
        duration = min(options.duration, DURATION_CAP.get(name, options.duration))
        results = {"gophermqd": [], "ceiling": []}
        copies_expected = copies_found = gauge_mismatches = 0
        for round_number in range(options.rounds):
            for server, args in ((daemon, daemon_args), (ceiling, ceiling_args)):
                progress("%s: round %d/%d, %s" % (name, round_number + 1, options.rounds,
                                                  server.name))
                # gophermqd may still be finishing requests wrk gave up on
                # (and async publishes): wait until its pending gauge holds
                # still, counting that work's CPU time too.
                settle = (lambda: wait_for_quiet(daemon)) if server is daemon else None
                result = measure(options, script, server, args, duration, settle)
                results[server.name].append(result)
                if server is daemon:
                    gauge = daemon.pending()
                    drained, ids = empty_subscribers(daemon, subject, ids, delivery)
                    if gauge is not None and gauge != drained:
                        gauge_mismatches += 1
                    if name in PUBLISHING:
                        copies_expected += result["ok"] * len(ids)
                        copies_found += drained
                    leftover = daemon.pending()
                    if leftover:
                        checks.append("%s: %s messages still pending after draining"
                                      % (name, leftover))
        if name in PUBLISHING:
            slack = options.connections * options.rounds * len(ids)
            verdict = ("ok" if copies_expected <= copies_found <= copies_expected + slack
                       else "MISMATCH")
            checks.append("%s: %d copies expected from wrk's 2xx answers, %d %s (requests "
                          "in flight when wrk stops may add up to %d): %s"
                          % (name, copies_expected, copies_found,
                             "pending after the runs (gauge)" if len(ids) >= 1000 and delivery
                             else "fetched back", slack, verdict))
        checks.append("%s: pending gauge equal to the messages fetched after each run: %s"
                      % (name, "ok" if gauge_mismatches == 0
                         else "MISMATCH in %d runs" % gauge_mismatches))
        rows += summarize(name, results, len(ids))
    report["main"] = rows
    report["checks"] = checks
    return rows, checks


def summarize(name, results, subscribers):
    rows = []
    for server_name in ("gophermqd", "ceiling"):
        runs = results[server_name]
        row = {
            "scenario": name,
            "server": server_name,
            "subscribers": subscribers,
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_us"] for r in runs]) / 1000,
            "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
            "p999_ms": median([r["p999_us"] for r in runs]) / 1000,
            "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
            "rss_mib": median([r["rss"] for r in runs]) / MIB,
            "errors": sum(r["errors"] for r in runs),
            "statuses": ",".join(sorted({r["statuses"] for r in runs})),
            "client_cores": median([r["client_cpu_s"] * 1e6 / r["duration_us"] for r in runs]),
            "other_cores": median([r["other_cores"] for r in runs]),
            "rounds": runs,
        }
        if server_name == "gophermqd":
            for key, ratio in (("cpu_per_request", "cpu_ratio"), ("rps", "rps_ratio"),
                               ("p99_us", "p99_ratio")):
                row[ratio] = median_ratio(runs, results["ceiling"], key)
            row["p99_lower_rounds"] = sum(a["p99_us"] <= b["p99_us"]
                                          for a, b in zip(runs, results["ceiling"]))
        rows.append(row)
    return rows


def print_main(rows, checks, options):
    print()
    print("Main table: medians over %d rounds of %d s, wrk -t%d -c%d, loopback; "
          "ratio = gophermqd/ceiling (median of the per-round ratios)"
          % (options.rounds, options.duration, options.threads, options.connections))
    header = ("scenario", "server", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU us/req",
              "RSS MiB", "errors", "CPU/req ratio", "req/s ratio", "p99 ratio",
              "wrk cores", "other cores")
    lines = []
    for row in rows:
        lines.append((row["scenario"], row["server"], "%.0f" % row["rps"],
                      "%.3f" % row["p50_ms"], "%.3f" % row["p99_ms"], "%.3f" % row["p999_ms"],
                      "%.2f" % row["cpu_per_request"], "%.1f" % row["rss_mib"],
                      str(row["errors"]),
                      "%.2f" % row["cpu_ratio"] if "cpu_ratio" in row else "",
                      "%.2f" % row["rps_ratio"] if "rps_ratio" in row else "",
                      "%.2f" % row["p99_ratio"] if "p99_ratio" in row else "",
                      "%.2f" % row["client_cores"], "%.2f" % row["other_cores"]))
    print_table(header, lines, left=2)
    for row in rows:
        if row["errors"]:
            print("  errors %s/%s: status counts %s" % (row["scenario"], row["server"],
                                                      row["statuses"]))
    capped = [name for name in options.scenarios
              if DURATION_CAP.get(name, options.duration) < options.duration]
    for name in capped:
        print("  %s: runs of %d s (it stores about 10^7 copies a second)"
              % (name, DURATION_CAP[name]))
    print("Checks:")
    for check in checks:
        print("  " + check)


# ---------------------------------------------------------------------------
# Memory benchmark
# ---------------------------------------------------------------------------
def warm_up_connections(daemon):
    """Exercises the request path without storing anything (publishes to a
    subject without subscribers get 404), so per-connection and per-thread
    buffers exist before the 'before' reading."""
    body = b'{"subject":"memory.warmup","data":"%s"}' % net.payload_of(1024).encode()
    request = net.post_request(b"/api/publish", body)
    net.bulk_requests(daemon.port, lambda i: request, 4000, what="warm-up publishes")


def run_memory(options, workdir, report):
    rows = []
    idle = None
    ceiling_idle = None
    if options.ceiling_binary:
        ceiling = start_ceiling(options.ceiling_binary, workdir)
        ceiling_idle = settle_rss(ceiling)
        ceiling.stop()
    cases = [("1 subscriber", 1, count, size) for count in options.memory_counts
             for size in options.memory_sizes]
    cases += [("fan-out %d subscribers" % options.memory_fanout, options.memory_fanout,
               options.memory_fanout_publishes, size) for size in options.memory_sizes]
    for index, (label, subscribers, publishes, size) in enumerate(cases):
        progress("memory: %s, %d publishes of %d bytes" % (label, publishes, size))
        daemon = start_daemon(options.daemon_binary, workdir, "memory%d" % index,
                              options.daemon_option)
        try:
            fresh = settle_rss(daemon)
            if idle is None:
                idle = fresh
            subject = "memory.%d" % index
            net.subscribe_many(daemon.port, [subject] * subscribers, collect=False,
                               deadline=time.monotonic() + 60 + subscribers / 1000)
            warm_up_connections(daemon)
            before = settle_rss(daemon)
            copies = publishes * subscribers
            started_at = time.monotonic()
            statuses = net.publish_many(daemon.port, subject, net.payload_of(size), publishes,
                                        deadline=time.monotonic() + 120 + publishes / 2000)
            seconds = time.monotonic() - started_at
            after = settle_rss(daemon)
            gauge = daemon.pending()
            ok = statuses.get(200, 0)
            rows.append({
                "case": label, "subscribers": subscribers, "publishes": publishes,
                "copies": copies, "payload": size, "fresh_rss": fresh, "before": before,
                "after": after, "gauge": gauge, "ok": ok, "statuses": statuses,
                "seconds": seconds,
                # beyond the bytes published (one payload per publish)
                "overhead": (after - before - publishes * size) / copies,
                # beyond one payload per copy (what a broker that copies pays)
                "overhead_copied": (after - before - copies * size) / copies,
            })
        finally:
            daemon.stop()
    report["memory"] = {"idle_rss": idle, "ceiling_idle_rss": ceiling_idle, "rows": rows}
    return idle, ceiling_idle, rows


def print_memory(idle, ceiling_idle, rows):
    print()
    print("Memory: a fresh gophermqd for each line; RSS = VmRSS from /proc/PID/status")
    print("  idle RSS of a fresh gophermqd: %.2f MiB" % (idle / MIB)
          + ("   (ceiling server idle: %.2f MiB)" % (ceiling_idle / MIB)
             if ceiling_idle is not None else ""))
    header = ("case", "publishes", "copies", "payload B", "RSS before MiB", "RSS after MiB",
              "gauge", "gauge ok", "publish/s", "overhead B/copy", "dRSS/copy")
    lines = []
    for row in rows:
        gauge_ok = ("yes" if row["gauge"] == row["copies"] and row["ok"] == row["publishes"]
                    else "NO (2xx=%d, %s)" % (row["ok"], row["statuses"]))
        lines.append((row["case"], row["publishes"], row["copies"], row["payload"],
                      "%.1f" % (row["before"] / MIB), "%.1f" % (row["after"] / MIB),
                      row["gauge"], gauge_ok, "%.0f" % (row["publishes"] / row["seconds"]),
                      "%.1f" % row["overhead"],
                      "%.1f" % ((row["after"] - row["before"]) / row["copies"])))
    print_table(header, lines)
    print("  overhead B/copy = (RSS after - RSS before - publishes x payload) / copies, i.e. "
          "beyond the bytes published;")
    print("  'before' is after subscribing and a warm-up of 4000 requests that store nothing")
    for row in rows:
        if row["subscribers"] > 1:
            print("  %s, payload %d B: beyond one payload per copy (publishes x subscribers x "
                  "payload) = %.1f B/copy%s"
                  % (row["case"], row["payload"], row["overhead_copied"],
                     " (below zero: the copies share the payload)"
                     if row["overhead_copied"] < 0 else ""))


# ---------------------------------------------------------------------------
# Scale benchmark
# ---------------------------------------------------------------------------
def run_scale(options, workdir, report):
    daemons = []
    rows = []
    try:
        for count in options.scale_counts:
            progress("scale: starting a daemon with %d subjects" % count)
            daemon = start_daemon(options.daemon_binary, workdir, "scale%d" % count,
                                  options.daemon_option)
            started_at = time.monotonic()
            net.subscribe_many(daemon.port, (lambda i: "scale.%d" % i, count), collect=False,
                               deadline=time.monotonic() + 60 + count / 2000)
            setup_seconds = time.monotonic() - started_at
            daemons.append((count, daemon, setup_seconds, daemon.rss()))
        results = {count: [] for count in options.scale_counts}
        for round_number in range(options.scale_rounds):
            for count, daemon, _, _ in daemons:
                progress("scale: round %d/%d, %d subjects" % (round_number + 1,
                                                              options.scale_rounds, count))
                results[count].append(measure(
                    options, "scale.lua", daemon,
                    {"prefix": "scale", "count": count, "threads": options.threads,
                     "size": options.size}, options.duration))
        base_runs = results[options.scale_counts[0]]
        for count, daemon, setup_seconds, setup_rss in daemons:
            runs = results[count]
            rows.append({
                "subjects": count, "setup_seconds": setup_seconds,
                "setup_rss_mib": setup_rss / MIB,
                "rps": median([r["rps"] for r in runs]),
                "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
                "cpu_ratio": median_ratio(runs, base_runs, "cpu_per_request"),
                "rps_ratio": median_ratio(runs, base_runs, "rps"),
                "errors": sum(r["errors"] for r in runs),
                "statuses": ",".join(sorted({r["statuses"] for r in runs})),
                "rounds": runs,
            })
    finally:
        for _, daemon, _, _ in daemons:
            daemon.stop()
    report["scale"] = rows
    return rows


def print_scale(rows, options):
    print()
    print("Scale: publish round-robin over N subjects, each with one subscriber; medians "
          "over %d rounds of %d s (daemons alternate; ratios are medians of the per-round "
          "ratios)" % (options.scale_rounds, options.duration))
    base = rows[0]
    header = ("subjects", "setup s", "subscribe/s", "RSS after setup MiB", "req/s", "p99 ms",
              "CPU us/req", "errors", "CPU/req vs %d" % base["subjects"],
              "req/s vs %d" % base["subjects"])
    lines = []
    for row in rows:
        lines.append((row["subjects"], "%.1f" % row["setup_seconds"],
                      "%.0f" % (row["subjects"] / max(row["setup_seconds"], 1e-3)),
                      "%.1f" % row["setup_rss_mib"], "%.0f" % row["rps"],
                      "%.3f" % row["p99_ms"], "%.2f" % row["cpu_per_request"], row["errors"],
                      "%.2f" % row["cpu_ratio"], "%.2f" % row["rps_ratio"]))
    print_table(header, lines)
    for row in rows:
        if row["errors"]:
            print("  errors with %d subjects: status counts %s" % (row["subjects"],
                                                                 row["statuses"]))


# ---------------------------------------------------------------------------
# Targets (issue 5's, and issue 11's "no regression")
# ---------------------------------------------------------------------------
def judge(report, targets):
    main = {(row["scenario"], row["server"]): row for row in report.get("main", [])}
    if ("publish", "gophermqd") in main:
        row = main[("publish", "gophermqd")]
        targets.judge("sync publish: CPU/request, gophermqd/ceiling", row["cpu_ratio"], 1.2)
        targets.judge("sync publish: req/s, gophermqd/ceiling", row["rps_ratio"], 0.9,
                      lower_is_better=False)
        targets.judge("sync publish: p99 latency (ms; the ceiling's: %.2f)"
                      % main[("publish", "ceiling")]["p99_ms"], row["p99_ms"], 2.0)
        ceiling_rounds = main[("publish", "ceiling")]["rounds"]
        targets.note("    (p99 within 2 ms in %d of %d rounds, the ceiling's in %d of %d; "
                     "gophermqd's at or below the ceiling's in %d)"
                     % (sum(x["p99_us"] <= 2000 for x in row["rounds"]), len(row["rounds"]),
                        sum(x["p99_us"] <= 2000 for x in ceiling_rounds), len(ceiling_rounds),
                        row["p99_lower_rounds"]))
        targets.judge("sync publish: errors", row["errors"], 0, fmt="%d")
    if ("pubfetch", "gophermqd") in main:
        targets.judge("publish+fetch: CPU/request, gophermqd/ceiling",
                      main[("pubfetch", "gophermqd")]["cpu_ratio"], 1.3)
    if ("fanout1000", "gophermqd") in main:
        row = main[("fanout1000", "gophermqd")]
        base = main[("fanout1000", "ceiling")]
        targets.note("  %-58s %.2f  (no goal: compare before and after; %.1f ns per copy "
                     "beyond the ceiling's request)"
                     % ("publish to %d subscribers: CPU us/request" % row["subscribers"],
                        row["cpu_per_request"],
                        (row["cpu_per_request"] - base["cpu_per_request"]) * 1000
                        / row["subscribers"]))
    memory = report.get("memory")
    if memory:
        targets.judge("idle RSS (MiB)", memory["idle_rss"] / MIB, 8.0)
        for row in memory["rows"]:
            targets.judge("overhead per copy (B), %s, %d x %d B"
                          % (row["case"], row["publishes"], row["payload"]),
                          row["overhead"], 64.0, fmt="%.1f")
        # issue 11: the new delivery model keeps a plain copy within 48 B
        for row in memory["rows"]:
            if row["subscribers"] == 1:
                targets.judge("issue 11: pending copy (B), 1 subscriber, %d x %d B"
                              % (row["publishes"], row["payload"]), row["overhead"], 48.0,
                              fmt="%.1f")
    scale = report.get("scale")
    if scale and len(scale) > 1:
        targets.judge("publish CPU/request, %d vs %d subjects" % (scale[-1]["subjects"],
                                                                 scale[0]["subjects"]),
                      scale[-1]["cpu_ratio"], 1.2)
