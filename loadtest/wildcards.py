"""wildcards.py - the publish cost with many wildcard subscriptions
(loadtest/README.md, "Wildcard benchmark").

One daemon per number of wildcard subscriptions (10, 10^4 and 10^5 by
default), made with pipelined subscribes to the patterns w.N.* (even N)
and w.N.> (odd N).  None of them matches what is published: wrk
(publish.lua) publishes to a subject with one plain subscriber, in two
cases:

  disjoint  wildcard.publish: no pattern has its first token, so matching
            stops at the trie's root
  shared    w.publish.x: its first token is every pattern's, so matching
            also looks "publish" up among the 10^5 children of "w" (a miss)

The daemons take turns, round by round (as the scale benchmark's do), so
that drift hits every size alike; the table gives req/s, p99 and CPU per
publish, and their ratios to the smallest number of subscriptions (the
median of the per-round ratios).  run_and_print() runs and prints it (a
note instead when the daemon refuses wildcards); judge() adds its lines to
the Targets block.
"""

import json
import time

import benchhttp as net
from benchkit import (MIB, BenchError, measure, median, median_ratio, print_table, progress,
                      run_wrk, settle_rss, start_daemon)
from scenarios import warm_up_connections

# The published subjects: (case, subject, what it shares with the patterns).
CASES = [
    ("disjoint", "wildcard.publish", "no token"),
    ("shared", "w.publish.x", "the first token"),
]


class Unsupported(BenchError):
    pass


def pattern(number):
    return "w.%d.%s" % (number, "*" if number % 2 == 0 else ">")


def supports_wildcards(daemon):
    """Whether gophermqd takes a subscription with a wildcard (an older one
    answers 400 invalid subject); the probe subscription is removed."""
    subject = "probe.*"
    status, body = net.http_call(daemon.port, "POST", "/api/subscribe", {"subject": subject})
    if status != 200:
        return False
    net.api_call(daemon.port, "/api/unsubscribe",
                 {"subject": subject, "id": json.loads(body)["id"]})
    return True


def subscribe_plain(daemon):
    """One plain subscriber of each case's subject: {case: id}."""
    return {case: net.api_call(daemon.port, "/api/subscribe", {"subject": subject})["id"]
            for case, subject, _ in CASES}


def start_sized(options, workdir, count):
    """A daemon with count wildcard subscriptions and the plain subscribers;
    returns a dict describing it."""
    progress("wildcards: starting a daemon with %d wildcard subscriptions" % count)
    daemon = start_daemon(options.daemon_binary, workdir, "wildcards%d" % count,
                          options.daemon_option)
    entry = {"count": count, "daemon": daemon}
    try:
        if not supports_wildcards(daemon):
            raise Unsupported("this gophermqd refuses a wildcard subscription")
        started_at = time.monotonic()
        net.subscribe_many(daemon.port, (pattern, count), collect=False,
                           deadline=time.monotonic() + 60 + count / 2000)
        entry["setup_seconds"] = time.monotonic() - started_at
        entry["gauge"] = daemon.metric("gophermq_wildcard_subscriptions")
        entry["ids"] = subscribe_plain(daemon)
        warm_up_connections(daemon)
        entry["rss"] = settle_rss(daemon)
    except BaseException:
        daemon.stop()
        raise
    return entry


def empty_plain(entry, case, subject, result, connections):
    """After a run: the pending gauge must hold wrk's 2xx publishes (plus at
    most one in flight per connection when wrk stopped, and none from a
    wildcard); the subscriber is then replaced by a fresh one, which frees
    its copies at once.  Returns the stored count beyond wrk's 2xx."""
    daemon = entry["daemon"]
    stored = daemon.pending()
    net.api_call(daemon.port, "/api/unsubscribe", {"subject": subject,
                                                   "id": entry["ids"][case]})
    entry["ids"][case] = net.api_call(daemon.port, "/api/subscribe",
                                      {"subject": subject})["id"]
    extra = stored - result["ok"]
    if not 0 <= extra <= connections:
        raise BenchError("wildcards: %d subscriptions, %s: %d copies pending after %d "
                         "publishes answered 2xx" % (entry["count"], case, stored,
                                                     result["ok"]))
    return extra


def run_wildcards(options, workdir, report):
    entries = []
    rows = []
    try:
        for count in options.wildcard_counts:
            entries.append(start_sized(options, workdir, count))
        for entry in entries:                      # warm-up, discarded
            for case, subject, _ in CASES:
                result = run_wrk(options, "publish.lua", entry["daemon"],
                                 {"subject": subject, "size": options.size}, options.warmup)
                empty_plain(entry, case, subject, result, options.connections)
        results = {(entry["count"], case): [] for entry in entries for case, _, _ in CASES}
        for round_number in range(options.wildcard_rounds):
            for case, subject, _ in CASES:
                for entry in entries:
                    progress("wildcards: round %d/%d, %s subject, %d wildcard subscriptions"
                             % (round_number + 1, options.wildcard_rounds, case,
                                entry["count"]))
                    result = measure(options, "publish.lua", entry["daemon"],
                                     {"subject": subject, "size": options.size},
                                     options.duration)
                    result["extra"] = empty_plain(entry, case, subject, result,
                                                  options.connections)
                    results[(entry["count"], case)].append(result)
        base_count = entries[0]["count"]
        base_rss = entries[0]["rss"]
        for case, subject, shares in CASES:
            base_runs = results[(base_count, case)]
            for entry in entries:
                runs = results[(entry["count"], case)]
                count = entry["count"]
                rows.append({
                    "case": case, "subject": subject, "shares": shares,
                    "subscriptions": count, "gauge": entry["gauge"],
                    "setup_seconds": entry["setup_seconds"], "rss": entry["rss"],
                    "bytes_per_subscription": ((entry["rss"] - base_rss) / (count - base_count)
                                               if count != base_count else float("nan")),
                    "rps": median([r["rps"] for r in runs]),
                    "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                    "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
                    "cpu_ratio": median_ratio(runs, base_runs, "cpu_per_request"),
                    "rps_ratio": median_ratio(runs, base_runs, "rps"),
                    "server_cores": median([r["cpu_us"] / r["duration_us"] for r in runs]),
                    "client_cores": median([r["client_cpu_s"] * 1e6 / r["duration_us"]
                                            for r in runs]),
                    "other_cores": median([r["other_cores"] for r in runs]),
                    "errors": sum(r["errors"] for r in runs),
                    "statuses": ",".join(sorted({r["statuses"] for r in runs})),
                    "extra": max(r["extra"] for r in runs),
                    "rounds": runs,
                })
    finally:
        for entry in entries:
            entry["daemon"].stop()
    report["wildcards"] = rows
    return rows


def print_wildcards(rows, options):
    print()
    print("Wildcard subscriptions: publish (wrk -c%d, %d B) to a subject with one plain "
          "subscriber, beside N subscriptions w.N.* / w.N.> that never match it;"
          % (options.connections, options.size))
    print("  one daemon per N, taking turns; medians over %d rounds of %d s (ratios: medians "
          "of the per-round ratios to N = %d)"
          % (options.wildcard_rounds, options.duration, rows[0]["subscriptions"]))
    base = rows[0]["subscriptions"]
    header = ("published subject", "wildcard subs", "gauge", "setup s", "RSS MiB",
              "B/wildcard sub", "req/s", "p99 ms", "CPU us/req", "CPU/req vs %d" % base,
              "req/s vs %d" % base, "server cores", "wrk cores", "other cores", "errors")
    lines = []
    for row in rows:
        lines.append(("%s (%s)" % (row["subject"], row["case"]), row["subscriptions"],
                      "-" if row["gauge"] is None else row["gauge"],
                      "%.1f" % row["setup_seconds"], "%.1f" % (row["rss"] / MIB),
                      "-" if row["bytes_per_subscription"] != row["bytes_per_subscription"]
                      else "%.0f" % row["bytes_per_subscription"],
                      "%.0f" % row["rps"], "%.3f" % row["p99_ms"],
                      "%.2f" % row["cpu_per_request"], "%.2f" % row["cpu_ratio"],
                      "%.2f" % row["rps_ratio"], "%.2f" % row["server_cores"],
                      "%.2f" % row["client_cores"], "%.2f" % row["other_cores"],
                      row["errors"]))
    print_table(header, lines)
    print("  gauge = gophermq_wildcard_subscriptions; B/wildcard sub = RSS growth over the "
          "smallest daemon per added subscription (subscriber and trie);")
    print("  checks: after every run the pending gauge held the run's 2xx publishes "
          "(plus at most %d in flight): no wildcard matched" % options.connections)
    for row in rows:
        if row["errors"]:
            print("  errors (%s, %d): status counts %s" % (row["case"], row["subscriptions"],
                                                         row["statuses"]))


def run_and_print(options, workdir, report):
    """Runs and prints the benchmark; returns False when the daemon has no
    wildcard subscriptions (nothing run)."""
    try:
        rows = run_wildcards(options, workdir, report)
    except Unsupported as error:
        report["wildcards"] = None
        print()
        print("Wildcard benchmark: skipped, %s" % error)
        return False
    print_wildcards(rows, options)
    return True


def judge(report, targets):
    rows = report.get("wildcards")
    if not rows:
        return
    for case, subject, _ in CASES:
        mine = [row for row in rows if row["case"] == case]
        if len(mine) > 1:
            targets.judge("publish CPU/request, %d vs %d wildcards (%s)"
                          % (mine[-1]["subscriptions"], mine[0]["subscriptions"], case),
                          mine[-1]["cpu_ratio"], 1.2)
