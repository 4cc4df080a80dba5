"""delivery.py - benchmarks of issue 11's delivery API (loadtest/README.md).

  wakeup    publish -> held-fetch wake-up latency, p50/p99, with 1,000 other
            fetches held, next to the same probe with none held
  batch     messages per second end to end with batch publish (100 x 100 B
            per request) and batch fetch (max 1,000), plain and acked,
            gophermqd on one CPU; the ceiling gets the same requests
  held      RSS per held fetch (10,000 held), next to an idle connection
  inflight  RSS per in-flight message, next to a pending copy
Each part starts a fresh daemon.  run_delivery() runs the parts asked for
(all skipped, with a note, when the daemon has no /api/publish/batch);
judge() adds their lines to the Targets block.
"""

import json
import time
import uuid

import benchhttp as net
from benchkit import (MIB, BenchError, cpus_for, measure, median, median_ratio, percentile,
                      pinned_thread, print_table, progress, raise_open_files, settle_rss,
                      start_ceiling, start_daemon, supports_delivery)
from scenarios import warm_up_connections

PARTS = ["wakeup", "batch", "held", "inflight"]
PART_HELP = {
    "wakeup": "publish -> held-fetch wake-up latency with --wakeup-others fetches held",
    "batch": "msg/s with batch publish + batch fetch, plain and acked, one server CPU",
    "held": "RSS per held fetch (--held-fetches held at once)",
    "inflight": "RSS per in-flight message vs a pending copy (--inflight-messages)",
}
LONG_WAIT_MS = 600000      # a held fetch that must outlast the measurement


def fetch_request(subject, subscriber, **fields):
    body = {"subject": subject, "id": subscriber}
    body.update(fields)
    return net.post_request(b"/api/fetch", json.dumps(body, separators=(",", ":")).encode())


def wait_parked(daemon, count, timeout=30):
    """Waits until gophermq_parked_fetches reaches count; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        parked = daemon.metric("gophermq_parked_fetches")
        if parked is None:
            time.sleep(1)   # no gauge: give the daemon a second
            return None
        if parked >= count or time.monotonic() > deadline:
            return parked
        time.sleep(0.05)


def hold_fetches(daemon, subjects_ids):
    """One connection per (subject, id), each holding a fetch that waits
    LONG_WAIT_MS; returns the connections."""
    progress("  opening %d connections" % len(subjects_ids))
    held = net.open_connections(daemon.port, len(subjects_ids))
    net.request_on_all(held, lambda i: fetch_request(*subjects_ids[i], wait_ms=LONG_WAIT_MS),
                       wait=False)
    return held


def answered_early(connections):
    """How many of the held fetches have been answered (they should not)."""
    count = 0
    for conn in connections:
        try:
            count += conn.receive() > 0
        except BenchError:
            count += 1
    return count


def close_all(connections):
    for conn in connections:
        conn.close()


# ---------------------------------------------------------------------------
# wake-up latency
# ---------------------------------------------------------------------------
class WakeupProbe:
    """Times wake-ups on one daemon: holds a fetch of the probe subscriber
    on one keep-alive connection, publishes one message on a second, and
    records, from the publish's send, the arrival of the held fetch's
    answer and of the publish's own."""

    def __init__(self, daemon, subject, subscriber):
        self.fetcher = net.Connection(daemon.port)
        self.publisher = net.Connection(daemon.port)
        self.fetch = fetch_request(subject, subscriber, wait_ms=10000)
        self.publish = net.post_request(b"/api/publish",
                                        b'{"subject":"%s","data":"wake"}' % subject.encode())
        self.wakes, self.answers, self.dropped = [], [], 0

    def run(self, samples, keep=True):
        for _ in range(samples):
            self.fetcher.send(self.fetch)
            time.sleep(0.001)               # the fetch is parked by now
            if self.fetcher.receive():      # it was not: drop the sample
                self.fetcher.answers.clear()
                self.dropped += 1
                continue
            sent = time.monotonic_ns()
            self.publisher.send(self.publish)
            (fetch_status, body, woke), (publish_status, _, answered) = \
                net.wait_answers([self.fetcher, self.publisher], timeout=10)
            if fetch_status != 200 or publish_status != 200 or b"wake" not in body:
                raise BenchError("wake-up probe: fetch %d %r, publish %d"
                                 % (fetch_status, body[:200], publish_status))
            if keep:
                self.wakes.append(woke - sent)
                self.answers.append(answered - sent)
            time.sleep(0.0005)

    def close(self):
        self.fetcher.close()
        self.publisher.close()


def run_wakeup(options, workdir, report):
    """Two daemons alike, each with the probe subscriber and --wakeup-others
    idle subscribers; on the second a fetch is held on each idle subscriber.
    The probe alternates between them in blocks of 100 samples (A B A B, as
    the main table alternates servers), so that drift hits both cases."""
    others = options.wakeup_others
    raise_open_files(others + 500)
    cases = []
    held = []
    try:
        for tag, hold in (("wakeup0", 0), ("wakeup%d" % others, others)):
            daemon = start_daemon(options.daemon_binary, workdir, tag, options.daemon_option,
                                  options={"fetch_max_wait_ms": LONG_WAIT_MS,
                                           "max_parked_fetches": others + 100,
                                           "max_connections": others + 100},
                                  open_files=others + 500)
            cases.append({"daemon": daemon, "hold": hold})
            probe_id = net.subscribe_many(daemon.port, ["wake.probe"])[0]
            idle = ["wake.idle.%d" % i for i in range(others)]
            idle_ids = net.subscribe_many(daemon.port, idle)
            cases[-1]["threads_before"] = daemon.threads()
            if hold:
                held = hold_fetches(daemon, list(zip(idle, idle_ids)))
                cases[-1]["parked"] = wait_parked(daemon, hold)
            else:
                cases[-1]["parked"] = daemon.metric("gophermq_parked_fetches")
            cases[-1]["probe"] = WakeupProbe(daemon, "wake.probe", probe_id)
        progress("wakeup: %d samples on each daemon, alternating, %d other fetches held on "
                 "the second" % (options.wakeup_samples, others))
        with pinned_thread("client"):
            for case in cases:
                case["probe"].run(50, keep=False)           # warm-up
            done = 0
            while done < options.wakeup_samples:
                block = min(100, options.wakeup_samples - done)
                for case in cases:
                    case["probe"].run(block)
                done += block
        rows = []
        for case in cases:
            probe, daemon = case["probe"], case["daemon"]
            rows.append({
                "case": "%d other fetches held" % case["hold"], "others": case["hold"],
                "parked": case["parked"], "samples": len(probe.wakes),
                "dropped": probe.dropped, "early": answered_early(held) if case["hold"] else 0,
                "threads": daemon.threads(), "threads_before": case["threads_before"],
                "wake_p50_ms": percentile(probe.wakes, 0.50) / 1e6,
                "wake_p90_ms": percentile(probe.wakes, 0.90) / 1e6,
                "wake_p99_ms": percentile(probe.wakes, 0.99) / 1e6,
                "wake_max_ms": max(probe.wakes) / 1e6 if probe.wakes else float("nan"),
                "answer_p50_ms": percentile(probe.answers, 0.50) / 1e6,
                "answer_p99_ms": percentile(probe.answers, 0.99) / 1e6,
            })
    finally:
        close_all(held)
        for case in cases:
            if "probe" in case:
                case["probe"].close()
            case["daemon"].stop()
    report["wakeup"] = rows
    return rows


def print_wakeup(rows):
    print()
    print("Wake-up latency: a fetch with wait_ms held on one connection, a publish sent on "
          "another; times from sending the publish (client on its own CPU);")
    print("  two daemons alike but for the fetches held, probed alternately in blocks of 100")
    header = ("case", "samples", "parked gauge", "wake-up p50 ms", "wake-up p90 ms",
              "wake-up p99 ms", "wake-up max ms", "publish answer p50 ms",
              "publish answer p99 ms", "held answered early", "threads")
    lines = [(row["case"], row["samples"], "-" if row["parked"] is None else row["parked"],
              "%.3f" % row["wake_p50_ms"], "%.3f" % row["wake_p90_ms"],
              "%.3f" % row["wake_p99_ms"],
              "%.3f" % row["wake_max_ms"], "%.3f" % row["answer_p50_ms"],
              "%.3f" % row["answer_p99_ms"], row["early"],
              "%d (%d before)" % (row["threads"], row["threads_before"])) for row in rows]
    print_table(header, lines)
    print("  parked gauge = gophermq_parked_fetches before the probe (the probe's own fetch not "
          "counted); 'publish answer' is the baseline:")
    print("  the round trip of the publish itself, in the same samples")
    for row in rows:
        if row["dropped"]:
            print("  %s: %d samples dropped (the probe's fetch was answered before the "
                  "publish)" % (row["case"], row["dropped"]))


# ---------------------------------------------------------------------------
# batch throughput
# ---------------------------------------------------------------------------
def batch_args(options, mode, subject, subscriber):
    return {"subject": subject, "id": subscriber, "mode": mode, "batch": options.batch_messages,
            "size": options.batch_payload, "max": options.batch_max,
            "ratio": options.batch_ratio}


def run_batch(options, workdir, report):
    daemon = start_daemon(options.daemon_binary, workdir, "batch", options.daemon_option,
                          cpus="one-core")
    ceiling = start_ceiling(options.ceiling_binary, workdir, cpus="one-core")
    rows = []
    try:
        for mode in ("plain", "ack"):
            results = {"gophermqd": [], "ceiling": []}
            for round_number in range(options.batch_rounds):
                subject = "batch.%s.%d" % (mode, round_number)
                subscribe = {"subject": subject}
                if mode == "ack":
                    subscribe.update(ack=True, ack_wait_ms=LONG_WAIT_MS)
                subscriber = net.api_call(daemon.port, "/api/subscribe", subscribe)["id"]
                progress("batch %s: round %d/%d, gophermqd" % (mode, round_number + 1,
                                                               options.batch_rounds))
                before = daemon.metrics()
                result = measure(options, "batch.lua", daemon,
                                 batch_args(options, mode, subject, subscriber),
                                 options.duration, connections=options.batch_connections)
                after = daemon.metrics()
                seconds = result["duration_us"] / 1e6

                def delta(name):
                    return after.get(name, 0) - before.get(name, 0)
                result["published"] = delta("gophermq_messages_published_total")
                result["delivered"] = delta("gophermq_messages_delivered_total")
                result["acked"] = delta("gophermq_acked_total")
                done = result["acked"] if mode == "ack" else result["delivered"]
                result["messages"] = done
                result["msg_rate"] = done / seconds
                result["published_rate"] = result["published"] / seconds
                result["cpu_per_message"] = result["cpu_us"] / done if done else float("nan")
                result["backlog"] = daemon.pending() or 0
                result["inflight_after"] = daemon.metric("gophermq_inflight_messages") or 0
                net.api_call(daemon.port, "/api/unsubscribe", {"subject": subject,
                                                               "id": subscriber})
                results["gophermqd"].append(result)
                progress("batch %s: round %d/%d, ceiling" % (mode, round_number + 1,
                                                             options.batch_rounds))
                results["ceiling"].append(measure(
                    options, "batch.lua", ceiling,
                    batch_args(options, mode, subject, str(uuid.uuid4())), options.duration,
                    connections=options.batch_connections))
            rows.append(summarize_batch(mode, results))
    finally:
        daemon.stop()
        ceiling.stop()
    report["batch"] = rows
    return rows


def summarize_batch(mode, results):
    runs, base = results["gophermqd"], results["ceiling"]
    # What the bare HTTP server could carry: its requests per second for
    # the same request mix, times the messages gophermqd moved per request.
    bounds = [b["rps"] * r["messages"] / r["requests"] for r, b in zip(runs, base)
              if r["requests"]]
    return {
        "mode": mode,
        "msg_rate": median([r["msg_rate"] for r in runs]),
        "published_rate": median([r["published_rate"] for r in runs]),
        "rps": median([r["rps"] for r in runs]),
        "cpu_per_message_ns": median([r["cpu_per_message"] for r in runs]) * 1000,
        "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
        "ceiling_rps": median([b["rps"] for b in base]),
        "ceiling_cpu_per_request": median([b["cpu_per_request"] for b in base]),
        "cpu_ratio": median_ratio(runs, base, "cpu_per_request"),
        "ceiling_bound": median(bounds),
        "backlog": max(r["backlog"] for r in runs),
        # every message delivered was acknowledged or is still in flight
        "ack_mismatches": sum(r["acked"] + r["inflight_after"] != r["delivered"]
                              for r in runs) if mode == "ack" else 0,
        "other_cores": median([r["other_cores"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "statuses": ",".join(sorted({r["statuses"] for r in runs})),
        "server_cores": median([r["cpu_us"] / r["duration_us"] for r in runs]),
        "client_cores": median([r["client_cpu_s"] * 1e6 / r["duration_us"] for r in runs]),
        "rounds": runs, "ceiling_rounds": base,
    }


def print_batch(rows, options):
    print()
    one = cpus_for["one-core"]
    print("Batch throughput: batch publish of %d x %d B, fetch max %d (%d publishes per fetch), "
          "acks batched (one /api/ack per fetch);"
          % (options.batch_messages, options.batch_payload, options.batch_max, options.batch_ratio))
    print("  gophermqd %s, wrk -c%d, medians over %d rounds of %d s; the ceiling gets the same "
          "requests" % ("on CPU %s alone" % ",".join(map(str, one)) if one else "unpinned",
                        options.batch_connections, options.batch_rounds, options.duration))
    header = ("mode", "msg/s end to end", "published msg/s", "req/s", "CPU ns/msg",
              "CPU us/req", "ceiling req/s", "ceiling CPU us/req", "CPU/req ratio",
              "ceiling bound msg/s", "server cores", "wrk cores", "other cores", "backlog",
              "errors")
    lines = [(row["mode"], "%.0f" % row["msg_rate"], "%.0f" % row["published_rate"],
              "%.0f" % row["rps"], "%.0f" % row["cpu_per_message_ns"],
              "%.1f" % row["cpu_per_request"], "%.0f" % row["ceiling_rps"],
              "%.1f" % row["ceiling_cpu_per_request"], "%.2f" % row["cpu_ratio"],
              "%.0f" % row["ceiling_bound"], "%.2f" % row["server_cores"],
              "%.2f" % row["client_cores"], "%.2f" % row["other_cores"], row["backlog"],
              row["errors"]) for row in rows]
    print_table(header, lines)
    print("  end to end = messages fetched (plain; gophermq_messages_delivered_total) or "
          "acknowledged (ack; gophermq_acked_total) per second;")
    print("  ceiling bound = the ceiling's req/s for the same requests x gophermqd's messages "
          "per request; backlog = most messages pending after a run")
    for row in rows:
        if row["errors"]:
            print("  errors (%s): status counts %s" % (row["mode"], row["statuses"]))
        if row["mode"] == "ack":
            print("  check: in each run, messages acknowledged + still in flight = messages "
                  "delivered: %s" % ("ok" if not row["ack_mismatches"]
                                     else "MISMATCH in %d runs" % row["ack_mismatches"]))


# ---------------------------------------------------------------------------
# memory per held fetch
# ---------------------------------------------------------------------------
def run_held(options, workdir, report):
    count = options.held_fetches
    limit = raise_open_files(count + 500)
    if limit < count + 100:
        progress("held: RLIMIT_NOFILE %d: %d held fetches instead of %d"
                 % (limit, limit - 100, count))
        count = limit - 100
    daemon = start_daemon(options.daemon_binary, workdir, "held", options.daemon_option,
                          options={"fetch_max_wait_ms": LONG_WAIT_MS,
                                   "max_parked_fetches": count + 100,
                                   "max_connections": count + 100},
                          open_files=count + 500)
    connections = []
    try:
        subjects = ["held.%d" % i for i in range(count)]
        ids = net.subscribe_many(daemon.port, subjects, deadline=time.monotonic() + 120)
        warm_up_connections(daemon)
        threads_before = daemon.threads()
        before = settle_rss(daemon)
        progress("held: %d connections, one plain fetch each" % count)
        connections = net.open_connections(daemon.port, count)
        statuses = net.request_on_all(connections, lambda i: fetch_request(subjects[i], ids[i]))
        if statuses != {200: count}:
            raise BenchError("held: plain fetches answered %s" % statuses)
        idle = settle_rss(daemon)
        progress("held: %d fetches with wait_ms on them" % count)
        net.request_on_all(connections,
                           lambda i: fetch_request(subjects[i], ids[i], wait_ms=LONG_WAIT_MS),
                           wait=False)
        parked = wait_parked(daemon, count)
        after = settle_rss(daemon)
        row = {
            "fetches": count, "before": before, "idle": idle, "after": after,
            "parked": parked, "early": answered_early(connections),
            "threads_before": threads_before, "threads": daemon.threads(),
            "per_fetch": (after - before) / count,
            "per_connection": (idle - before) / count,
            "beyond_connection": (after - idle) / count,
        }
    finally:
        close_all(connections)
        daemon.stop()
    report["held"] = row
    return row


def print_held(row):
    print()
    print("Memory per held fetch: %d subscribers, one keep-alive connection each; RSS before "
          "the connections, with each connection idle after one plain fetch, and with a "
          "fetch held on each" % row["fetches"])
    header = ("held fetches", "parked gauge", "answered early", "RSS before MiB",
              "RSS idle MiB", "RSS held MiB", "KiB per held fetch", "of which connection KiB",
              "beyond idle connection KiB", "threads")
    print_table(header, [(row["fetches"], "-" if row["parked"] is None else row["parked"],
                          row["early"], "%.1f" % (row["before"] / MIB),
                          "%.1f" % (row["idle"] / MIB), "%.1f" % (row["after"] / MIB),
                          "%.2f" % (row["per_fetch"] / 1024),
                          "%.2f" % (row["per_connection"] / 1024),
                          "%.2f" % (row["beyond_connection"] / 1024),
                          "%d (%d before)" % (row["threads"], row["threads_before"]))])
    print("  KiB per held fetch = (RSS held - RSS before) / fetches: the connection and the "
          "parked fetch together")


# ---------------------------------------------------------------------------
# memory per in-flight message
# ---------------------------------------------------------------------------
def publish_batches(daemon, subject, payload, count, batch=1000, expect=200):
    message = b'{"subject":"%s","data":"%s"}' % (subject.encode(), payload.encode())
    requests = (count + batch - 1) // batch

    def make(number):
        size = min(batch, count - number * batch)
        return net.post_request(b"/api/publish/batch",
                                b'{"messages":[%s]}' % b",".join([message] * size))
    statuses, _ = net.bulk_requests(daemon.port, make, requests, window=16,
                                    deadline=time.monotonic() + 120 + count / 20000,
                                    what="batch publishes")
    if statuses != {expect: requests}:
        raise BenchError("batch publishes to %s answered %s" % (subject, statuses))


def fetch_all(daemon, subject, subscriber, count, batch=1000):
    """Fetches count messages with max=batch; returns how many came."""
    got = [0]

    def count_messages(number, status, body):
        if status != 200:
            raise BenchError("fetch answered %d %r" % (status, body[:200]))
        got[0] += body.count(b'"seq":')
    request = fetch_request(subject, subscriber, max=batch)
    net.bulk_requests(daemon.port, lambda i: request, (count + batch - 1) // batch + 1,
                      connections=1, window=8, on_body=count_messages,
                      deadline=time.monotonic() + 120 + count / 20000, what="fetches")
    return got[0]


def run_inflight(options, workdir, report):
    count, size = options.inflight_messages, options.inflight_payload
    payload = net.payload_of(size)
    daemon = start_daemon(options.daemon_binary, workdir, "inflight", options.daemon_option)
    try:
        net.api_call(daemon.port, "/api/subscribe", {"subject": "mem.plain"})
        acked = net.api_call(daemon.port, "/api/subscribe",
                             {"subject": "mem.ack", "ack": True,
                              "ack_wait_ms": 3600000})["id"]
        warm_up_connections(daemon)
        # the batch path's buffers too: batches to a subject without
        # subscribers are read whole and answered 404, storing nothing
        publish_batches(daemon, "mem.nobody", payload, 200 * 1000, expect=404)
        rss0 = settle_rss(daemon)
        progress("inflight: %d messages to a plain subscriber" % count)
        publish_batches(daemon, "mem.plain", payload, count)
        rss1 = settle_rss(daemon)
        progress("inflight: %d messages to an ack subscriber, then fetched" % count)
        publish_batches(daemon, "mem.ack", payload, count)
        rss2 = settle_rss(daemon)
        fetched = fetch_all(daemon, "mem.ack", acked, count)
        rss3 = settle_rss(daemon)
        metrics = daemon.metrics()
        row = {
            "messages": count, "payload": size, "fetched": fetched,
            "rss": [rss0, rss1, rss2, rss3],
            "pending_gauge": int(metrics.get("gophermq_pending_messages", -1)),
            "inflight_gauge": int(metrics.get("gophermq_inflight_messages", -1)),
            "plain_copy": (rss1 - rss0 - count * size) / count,
            "ack_pending": (rss2 - rss1 - count * size) / count,
            "inflight": (rss3 - rss1 - count * size) / count,
        }
        row["beyond_pending"] = row["inflight"] - row["plain_copy"]
    finally:
        daemon.stop()
    report["inflight"] = row
    return row


def print_inflight(row):
    print()
    print("Memory per in-flight message: one daemon, %d messages of %d B to a plain "
          "subscriber, %d to an ack subscriber (ack_wait_ms 1 h), then all of those fetched"
          % (row["messages"], row["payload"], row["messages"]))
    header = ("state", "B/message beyond payload", "RSS after MiB")
    rss = row["rss"]
    print_table(header, [
        ("pending copy, plain subscriber", "%.1f" % row["plain_copy"], "%.1f" % (rss[1] / MIB)),
        ("pending copy, ack subscriber", "%.1f" % row["ack_pending"], "%.1f" % (rss[2] / MIB)),
        ("in flight (fetched, not acked)", "%.1f" % row["inflight"], "%.1f" % (rss[3] / MIB)),
        ("in flight beyond a plain pending copy", "%.1f" % row["beyond_pending"], ""),
    ])
    print("  fetched %d of %d; gauges after: gophermq_pending_messages %d, "
          "gophermq_inflight_messages %d" % (row["fetched"], row["messages"],
                                             row["pending_gauge"], row["inflight_gauge"]))
    print("  B/message beyond payload = RSS growth over the step / messages - payload; "
          "'before' follows a warm-up of single and batch publishes that store nothing")


# ---------------------------------------------------------------------------
def run_delivery(options, workdir, report):
    """Runs and prints the parts in options.delivery; returns False when the
    daemon does not serve issue 11's API (nothing run)."""
    probe = start_daemon(options.daemon_binary, workdir, "probe", options.daemon_option)
    try:
        supported = supports_delivery(probe)
    finally:
        probe.stop()
    if not supported:
        report["delivery"] = "not supported"
        print()
        print("Delivery benchmarks (%s): skipped, this gophermqd has no /api/publish/batch "
              "(issue 11)" % ", ".join(options.delivery))
        return False
    for part in options.delivery:
        if part == "wakeup":
            print_wakeup(run_wakeup(options, workdir, report))
        elif part == "batch":
            print_batch(run_batch(options, workdir, report), options)
        elif part == "held":
            print_held(run_held(options, workdir, report))
        elif part == "inflight":
            print_inflight(run_inflight(options, workdir, report))
    return True


def judge(report, targets):
    for row in report.get("wakeup", [])[1:]:
        base = report["wakeup"][0]
        targets.judge("wake-up p99 (ms), %s" % row["case"], row["wake_p99_ms"], 1.0,
                      fmt="%.3f")
        targets.note("    (p50 %.3f; same samples' publish answer p99 %.3f; none held: wake-up "
                     "p99 %.3f, p50 %.3f)" % (row["wake_p50_ms"], row["answer_p99_ms"],
                                             base["wake_p99_ms"], base["wake_p50_ms"]))
    for row in report.get("batch", []):
        goal = 500000 if row["mode"] == "plain" else 250000
        targets.judge("batch msg/s end to end, %s, one server CPU (ceiling bound %.0f)"
                      % (row["mode"], row["ceiling_bound"]), row["msg_rate"], goal, fmt="%.0f",
                      lower_is_better=False)
    held = report.get("held")
    if held:
        targets.judge("RSS per held fetch (KiB), %d held (idle connection: %.1f)"
                      % (held["fetches"], held["per_connection"] / 1024),
                      held["per_fetch"] / 1024, 16.0, fmt="%.2f")
    inflight = report.get("inflight")
    if inflight:
        targets.judge("in-flight message beyond a pending copy (B; copy: %.1f)"
                      % inflight["plain_copy"], inflight["beyond_pending"], 64.0, fmt="%.1f")
