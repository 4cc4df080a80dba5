"""streams.py - benchmarks of Server-Sent Event streams, GET /api/stream
(loadtest/README.md, "Stream benchmarks").

One daemon with --streams (1,000) subscribers stream.0, stream.1, ... and
one keep-alive connection each, all read by the runner in one epoll loop
(benchhttp.EventStreams) on the client's CPU; the daemon has the others.

  memory      RSS with the subscribers only, with each connection idle
              after one plain fetch, with a stream open on each, and after
              one event on each: KiB per open stream
  latency     publish -> event: a paced publisher process (this file run
              as `streams.py publish`, also on the client's CPU) publishes
              round robin over the subjects at each of --stream-rates per
              second, one request at a time, each message's data its send
              time (CLOCK_MONOTONIC, the same clock in every process); the
              receiver subtracts it from the time just before the read that
              brought the event
  throughput  events per second across all streams, closed loop: the
              runner publishes round robin, in batches of one message per
              stream ("batch") or single publishes pipelined ("single"),
              whenever fewer than --stream-window messages are published
              and not yet received

run_and_print() runs and prints them (a note instead when the daemon has
no streams); judge() adds their lines to the Targets block.
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchhttp as net  # noqa: E402
from benchkit import (MIB, BenchError, confined_to, median, percentile, pinned_thread,  # noqa: E402
                      print_table, progress, raise_open_files, settle_rss, start_daemon,
                      started, stop_process, system_busy_microseconds)
from delivery import fetch_request  # noqa: E402
from scenarios import warm_up_connections  # noqa: E402

MODES = ["batch", "single"]
MODE_HELP = {
    "batch": "POST /api/publish/batch, one message per stream per request",
    "single": "POST /api/publish pipelined, 4 connections x 64",
}
SUBJECT = "stream.%d"
BATCH_CONNECTIONS, BATCH_PIPELINE = 2, 4
SINGLE_CONNECTIONS, SINGLE_PIPELINE = 4, 64
WARMUP_SECONDS = 0.5        # of each latency run, not sampled
MAX_BATCH = 1000            # the daemon's default max_batch_messages


# ---------------------------------------------------------------------------
# the paced publisher (a process of its own)
# ---------------------------------------------------------------------------
def stamped_publish(subject, stamp, size):
    """A publish whose data is stamp and the time now, padded to size."""
    data = b"%s%d" % (stamp, time.monotonic_ns())
    data += b"x" * (size - len(data))
    return net.post_request(b"/api/publish", b'{"subject":"%s","data":"%s"}'
                            % (subject, data))


def publisher_main(argv):
    """`streams.py publish --port P --rate R --seconds S --streams N`:
    publishes round robin over stream.0 .. stream.N-1, R a second, one
    request at a time on one keep-alive connection, first WARMUP_SECONDS
    unstamped ("w..."), then S seconds stamped ("t<ns>..."); prints one
    JSON line: publishes, 2xx answers, status counts, the stamped part's
    rate and the publish round trip's p50 and p99."""
    parser = argparse.ArgumentParser(prog="streams.py publish")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--size", type=int, default=16)
    options = parser.parse_args(argv)
    subjects = [(SUBJECT % i).encode() for i in range(options.streams)]
    sock = socket.create_connection(("127.0.0.1", options.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming = bytearray()
    interval = 1e9 / options.rate
    start = time.monotonic_ns()
    stamped_from = start + WARMUP_SECONDS * 1e9
    end = stamped_from + options.seconds * 1e9
    due = start
    statuses, round_trips = {}, []
    sent = stamped = 0
    while True:
        now = time.monotonic_ns()
        if now >= end:
            break
        if due > now:
            time.sleep((due - now) / 1e9)
            now = due
        stamp = b"t" if now >= stamped_from else b"w"
        sent_at = time.monotonic_ns()
        sock.sendall(stamped_publish(subjects[sent % len(subjects)], stamp, options.size))
        while True:
            response = net.parse_response(incoming)
            if response:
                break
            data = net.read_some(sock)
            if not data:
                raise BenchError("the daemon closed the publisher's connection")
            incoming += data
        status, _, body_end = response
        del incoming[:body_end]
        statuses[status] = statuses.get(status, 0) + 1
        if stamp == b"t":
            round_trips.append(time.monotonic_ns() - sent_at)
            stamped += 1
        sent += 1
        due += interval
    sock.close()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    print(json.dumps({
        "publishes": sent, "ok": ok, "statuses": statuses, "stamped": stamped,
        "rate": stamped / options.seconds,
        "rtt_p50_ms": percentile(round_trips, 0.50) / 1e6,
        "rtt_p99_ms": percentile(round_trips, 0.99) / 1e6,
    }))
    return 0


# ---------------------------------------------------------------------------
# setup and memory
# ---------------------------------------------------------------------------
def stream_path(subject, subscriber):
    return b"/api/stream?subject=%s&id=%s" % (subject.encode(), subscriber.encode())


def batch_requests(streams, payload):
    """Batch publishes that together give every stream one message, each at
    most MAX_BATCH: [(request, messages)]."""
    requests = []
    for first in range(0, streams, MAX_BATCH):
        last = min(streams, first + MAX_BATCH)
        requests.append((net.post_request(b"/api/publish/batch", b'{"messages":[%s]}' % b",".join(
            b'{"subject":"%s","data":"%s"}' % ((SUBJECT % i).encode(), payload)
            for i in range(first, last))), last - first))
    return requests


def wait_events(streams, count, timeout=10):
    """Reads until streams has received count events in all; returns True
    when it did within timeout."""
    deadline = time.monotonic() + timeout
    while streams.events < count:
        if time.monotonic() > deadline:
            return False
        streams.poll(0.05)
    return True


def start_streams(options, workdir):
    """The daemon, the subscribers, and the streams, with the RSS before and
    after each step; returns (daemon, EventStreams, the memory row)."""
    count = options.streams
    limit = raise_open_files(count + 500)
    if limit < count + 100:
        progress("streams: RLIMIT_NOFILE %d: %d streams instead of %d"
                 % (limit, limit - 100, count))
        count = limit - 100
    daemon = start_daemon(options.daemon_binary, workdir, "streams", options.daemon_option,
                          options={"max_connections": count + 100}, open_files=count + 500)
    connections = []
    streams = None
    try:
        if daemon.metric("gophermq_streams") is None:
            raise Unsupported("this gophermqd has no streams (no gophermq_streams gauge)")
        subjects = [SUBJECT % i for i in range(count)]
        ids = net.subscribe_many(daemon.port, subjects)
        warm_up_connections(daemon)
        before = settle_rss(daemon)
        progress("streams: %d connections, one plain fetch each" % count)
        connections = net.open_connections(daemon.port, count)
        statuses = net.request_on_all(connections, lambda i: fetch_request(subjects[i], ids[i]))
        if statuses != {200: count}:
            raise BenchError("streams: plain fetches answered %s" % statuses)
        idle = settle_rss(daemon)
        progress("streams: opening a stream on each")
        streams = net.EventStreams(connections,
                                   [stream_path(subjects[i], ids[i]) for i in range(count)])
        gauge = daemon.metric("gophermq_streams")
        opened = settle_rss(daemon)
        progress("streams: one event on each")
        firsts = batch_requests(count, b"first")
        statuses, _ = net.bulk_requests(daemon.port, lambda i: firsts[i][0], len(firsts),
                                        connections=1, what="batch publishes")
        if statuses != {200: len(firsts)}:
            raise BenchError("streams: batch publishes answered %s" % statuses)
        if not wait_events(streams, count) or min(streams.counts()) != 1:
            raise BenchError("streams: %d events after one message per stream" % streams.events)
        evented = settle_rss(daemon)
        row = {
            "streams": count, "gauge": gauge, "threads": daemon.threads(),
            "rss": [before, idle, opened, evented],
            "per_stream": (opened - before) / count,
            "per_connection": (idle - before) / count,
            "beyond_connection": (opened - idle) / count,
            "after_event": (evented - before) / count,
        }
    except BaseException:
        if streams:
            streams.close()
        else:
            for conn in connections:
                conn.close()
        daemon.stop()
        raise
    return daemon, streams, row


class Unsupported(BenchError):
    pass


# ---------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------
def latency_run(options, daemon, streams, rate):
    """One paced publisher run at rate; returns its figures."""
    command = [sys.executable, os.path.abspath(__file__), "publish", "--port", str(daemon.port),
               "--rate", str(rate), "--seconds", str(options.duration),
               "--streams", str(len(streams.streams)), "--size", str(options.stream_payload)]
    latencies = []
    events_before = streams.events
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = system_busy_microseconds()
    cpu_before = daemon.cpu()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=confined_to("client"))
    started.append(process)
    try:
        with pinned_thread("client"):
            receiver_before = time.thread_time()
            wall_before = time.monotonic()
            checked = wall_before
            while True:
                streams.poll(0.05, latencies)
                now = time.monotonic()
                if now - checked > 0.05:
                    checked = now
                    if process.poll() is not None:
                        break
            wall = time.monotonic() - wall_before
            receiver = time.thread_time() - receiver_before
            out, err = process.communicate(timeout=10)
            if process.returncode != 0:
                raise BenchError("the paced publisher failed: %s\n%s" % (" ".join(command),
                                                                        err.decode()[-2000:]))
            result = json.loads(out)
            cpu = daemon.cpu() - cpu_before
            busy = system_busy_microseconds() - busy_before
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            publisher = ((children_after.ru_utime - children_before.ru_utime) +
                         (children_after.ru_stime - children_before.ru_stime))
            complete = wait_events(streams, events_before + result["ok"])
            while streams.poll(0, latencies):
                pass
    finally:
        stop_process(process)
    daemon.check_alive()
    result.update({
        "rate_asked": rate, "latencies": latencies, "events": streams.events - events_before,
        "complete": complete, "receiver_cores": receiver / wall,
        "publisher_cores": publisher / wall, "server_cores": cpu / (wall * 1e6),
        "other_cores": max(0.0, busy / 1e6 - cpu / 1e6 - receiver - publisher) / wall,
        "cpu_per_publish": cpu / result["publishes"] if result["publishes"] else float("nan"),
    })
    return result


def summarize_latency(rate, runs):
    samples = sorted(x for run in runs for x in run["latencies"])
    return {
        "rate_asked": rate, "rate": median([r["rate"] for r in runs]),
        "samples": len(samples),
        "p50_ms": percentile(samples, 0.50) / 1e6, "p90_ms": percentile(samples, 0.90) / 1e6,
        "p99_ms": percentile(samples, 0.99) / 1e6, "p999_ms": percentile(samples, 0.999) / 1e6,
        "max_ms": samples[-1] / 1e6 if samples else float("nan"),
        "rtt_p50_ms": median([r["rtt_p50_ms"] for r in runs]),
        "rtt_p99_ms": median([r["rtt_p99_ms"] for r in runs]),
        "cpu_per_publish": median([r["cpu_per_publish"] for r in runs]),
        "server_cores": median([r["server_cores"] for r in runs]),
        "receiver_cores": median([r["receiver_cores"] for r in runs]),
        "publisher_cores": median([r["publisher_cores"] for r in runs]),
        "other_cores": median([r["other_cores"] for r in runs]),
        "missing": sum(r["ok"] - r["events"] for r in runs),
        "errors": sum(r["publishes"] - r["ok"] for r in runs),
        "statuses": [r["statuses"] for r in runs],
        "rounds": [{k: v for k, v in r.items() if k != "latencies"} for r in runs],
    }


# ---------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------
class Publisher:
    """One keep-alive connection of the closed loop: up to pipeline
    requests unanswered; counts the messages its 2xx answers accepted."""

    def __init__(self, port, pipeline):
        self.conn = net.Connection(port)
        self.pipeline = pipeline
        self.waiting = []          # messages of each unanswered request, oldest first
        self.accepted = 0
        self.statuses = {}

    def on_readable(self):
        answers = self.conn.receive()
        for status, _, _ in self.conn.answers:
            messages = self.waiting.pop(0)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                self.accepted += messages
        del self.conn.answers[:answers]


def throughput_run(options, daemon, streams, mode):
    """One closed-loop run of --duration seconds; returns its figures."""
    count = len(streams.streams)
    payload = net.payload_of(options.stream_payload).encode()
    if mode == "batch":
        requests = batch_requests(count, payload)
        connections, pipeline = BATCH_CONNECTIONS, BATCH_PIPELINE
    else:
        requests = [(net.post_request(b"/api/publish", b'{"subject":"%s","data":"%s"}'
                                      % ((SUBJECT % i).encode(), payload)), 1)
                    for i in range(count)]
        connections, pipeline = SINGLE_CONNECTIONS, SINGLE_PIPELINE
    publishers = [Publisher(daemon.port, pipeline) for _ in range(connections)]
    for publisher in publishers:
        streams.watch(publisher.conn.sock, publisher.on_readable)
    window = options.stream_window
    counts_before = streams.counts()
    events_before = streams.events
    next_request = 0
    sent = 0

    def top_up():
        nonlocal next_request, sent
        for publisher in publishers:
            room = publisher.pipeline - len(publisher.waiting)
            chunk = []
            while room > 0:
                request, messages = requests[next_request]
                if sent + messages - (streams.events - events_before) > window:
                    break
                chunk.append(request)
                publisher.waiting.append(messages)
                sent += messages
                next_request = (next_request + 1) % len(requests)
                room -= 1
            if chunk:
                publisher.conn.send(b"".join(chunk))
    try:
        with pinned_thread("client"):
            wall_before = time.monotonic()
            end = wall_before + options.duration
            receiver_before = time.thread_time()
            busy_before = system_busy_microseconds()
            cpu_before = daemon.cpu()
            while time.monotonic() < end:
                top_up()
                streams.poll(0.01)
            events = streams.events - events_before
            cpu = daemon.cpu() - cpu_before
            busy = system_busy_microseconds() - busy_before
            receiver = time.thread_time() - receiver_before
            wall = time.monotonic() - wall_before
            answered = sum(sum(p.statuses.values()) for p in publishers)
            # the rest of what was published, outside the measurement
            deadline = time.monotonic() + 15
            while (any(p.waiting for p in publishers) or
                   streams.events - events_before < sum(p.accepted for p in publishers)):
                if time.monotonic() > deadline:
                    break
                streams.poll(0.05)
            accepted = sum(p.accepted for p in publishers)
            delivered = streams.events - events_before
    finally:
        for publisher in publishers:
            streams.unwatch(publisher.conn.sock)
            publisher.conn.close()
    daemon.check_alive()
    statuses = {}
    for publisher in publishers:
        for status, number in publisher.statuses.items():
            statuses[status] = statuses.get(status, 0) + number
    per_stream = [after - before for after, before in zip(streams.counts(), counts_before)]
    return {
        "mode": mode, "events": events, "seconds": wall, "event_rate": events / wall,
        "cpu_per_event": cpu / events if events else float("nan"),
        "server_cores": cpu / (wall * 1e6), "receiver_cores": receiver / wall,
        "other_cores": max(0.0, busy / 1e6 - cpu / 1e6 - receiver) / wall,
        "accepted": accepted, "delivered": delivered, "missing": accepted - delivered,
        "request_rate": answered / wall, "statuses": statuses,
        "errors": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "pending_after": daemon.pending(),
        "per_stream_spread": max(per_stream) - min(per_stream),
    }


def summarize_throughput(mode, runs):
    return {
        "mode": mode,
        "event_rate": median([r["event_rate"] for r in runs]),
        "cpu_per_event_us": median([r["cpu_per_event"] for r in runs]),
        "server_cores": median([r["server_cores"] for r in runs]),
        "receiver_cores": median([r["receiver_cores"] for r in runs]),
        "other_cores": median([r["other_cores"] for r in runs]),
        "requests_per_second": median([r["request_rate"] for r in runs]),
        "missing": sum(r["missing"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "pending_after": max(r["pending_after"] or 0 for r in runs),
        "per_stream_spread": max(r["per_stream_spread"] for r in runs),
        "rounds": runs,
    }


# ---------------------------------------------------------------------------
def run_streams(options, workdir, report):
    daemon, streams, memory = start_streams(options, workdir)
    latency, throughput = [], []
    try:
        results = {"latency": {rate: [] for rate in options.stream_rates},
                   "throughput": {mode: [] for mode in options.stream_modes}}
        for round_number in range(options.stream_rounds):
            for rate in options.stream_rates:
                progress("streams: round %d/%d, latency at %d publishes/s"
                         % (round_number + 1, options.stream_rounds, rate))
                results["latency"][rate].append(latency_run(options, daemon, streams, rate))
            for mode in options.stream_modes:
                progress("streams: round %d/%d, throughput, %s publishes"
                         % (round_number + 1, options.stream_rounds, mode))
                results["throughput"][mode].append(throughput_run(options, daemon, streams,
                                                                  mode))
        latency = [summarize_latency(rate, runs) for rate, runs in results["latency"].items()]
        throughput = [summarize_throughput(mode, runs)
                      for mode, runs in results["throughput"].items()]
        memory["gauge_after"] = daemon.metric("gophermq_streams")
        memory["threads_after"] = daemon.threads()
    finally:
        streams.close()
        daemon.stop()
    report["streams"] = {"memory": memory, "latency": latency, "throughput": throughput}
    return report["streams"]


def print_streams(result, options):
    memory = result["memory"]
    count = memory["streams"]
    print()
    print("Streams: %d subscribers stream.0 .. stream.%d, one keep-alive connection each, all "
          "read by one epoll loop on the client's CPU" % (count, count - 1))
    rss = memory["rss"]
    print_table(("state", "RSS MiB", "KiB per stream over subscribers only"), [
        ("subscribers only", "%.1f" % (rss[0] / MIB), ""),
        ("+ idle connection each (one plain fetch)", "%.1f" % (rss[1] / MIB),
         "%.2f" % (memory["per_connection"] / 1024)),
        ("+ stream open on each (idle)", "%.1f" % (rss[2] / MIB),
         "%.2f" % (memory["per_stream"] / 1024)),
        ("+ one event sent on each", "%.1f" % (rss[3] / MIB),
         "%.2f" % (memory["after_event"] / 1024)),
    ])
    print("  KiB per open stream = (RSS with the idle streams - RSS with the subscribers only) "
          "/ %d = %.2f, of which %.2f beyond the idle connection;"
          % (count, memory["per_stream"] / 1024, memory["beyond_connection"] / 1024))
    print("  gophermq_streams gauge %s after opening, %s at the end; threads %d at the end"
          % (memory["gauge"], memory.get("gauge_after", "-"),
             memory.get("threads_after", memory["threads"])))
    if result["latency"]:
        print()
        print("Stream latency: publish -> event, a paced publisher (one request at a time) round "
              "robin over the %d subjects; %d round(s) of %d s per rate, samples pooled"
              % (count, options.stream_rounds, options.duration))
        header = ("publishes/s asked", "achieved", "events timed", "p50 ms", "p90 ms",
                  "p99 ms", "p99.9 ms", "max ms", "publish answer p50 ms",
                  "publish answer p99 ms", "server CPU us/publish", "server cores",
                  "receiver cores", "publisher cores", "other cores", "missing", "errors")
        print_table(header, [(row["rate_asked"], "%.0f" % row["rate"], row["samples"],
                              "%.3f" % row["p50_ms"], "%.3f" % row["p90_ms"],
                              "%.3f" % row["p99_ms"], "%.3f" % row["p999_ms"],
                              "%.3f" % row["max_ms"], "%.3f" % row["rtt_p50_ms"],
                              "%.3f" % row["rtt_p99_ms"], "%.1f" % row["cpu_per_publish"],
                              "%.2f" % row["server_cores"], "%.2f" % row["receiver_cores"],
                              "%.2f" % row["publisher_cores"], "%.2f" % row["other_cores"],
                              row["missing"], row["errors"]) for row in result["latency"]])
        print("  latency = arrival of the read that brought the event - the send time in its "
              "data (CLOCK_MONOTONIC); 'publish answer' is the publisher's own round trip")
        print("  (the baseline); server CPU per publish includes its event; missing = 2xx "
              "publishes whose event did not arrive")
    if result["throughput"]:
        print()
        print("Stream throughput: closed loop, at most %d messages published and not yet "
              "received; %d round(s) of %d s per mode, medians"
              % (options.stream_window, options.stream_rounds, options.duration))
        header = ("publishes", "events/s (all streams)", "server CPU us/event",
                  "publish req/s", "server cores", "receiver cores", "other cores",
                  "per-stream spread", "missing", "pending after", "errors")
        print_table(header, [("%s (%s)" % (row["mode"], MODE_HELP[row["mode"]]),
                              "%.0f" % row["event_rate"], "%.2f" % row["cpu_per_event_us"],
                              "%.0f" % row["requests_per_second"],
                              "%.2f" % row["server_cores"], "%.2f" % row["receiver_cores"],
                              "%.2f" % row["other_cores"],
                              row["per_stream_spread"],
                              row["missing"], row["pending_after"], row["errors"])
                             for row in result["throughput"]])
        print("  server cores 1.00: the daemon was the bottleneck; receiver cores near 1.00: "
              "the client was; per-stream spread = most events one stream")
        print("  got in a run - fewest (round robin: 0 or 1); missing = messages accepted, "
              "never received")


def run_and_print(options, workdir, report):
    """Runs and prints the benchmark; returns False when the daemon has no
    streams (nothing run)."""
    try:
        result = run_streams(options, workdir, report)
    except Unsupported as error:
        report["streams"] = None
        print()
        print("Stream benchmarks: skipped, %s" % error)
        return False
    print_streams(result, options)
    return True


def estimate_seconds(options):
    total = 4 + options.streams / 1000
    total += options.stream_rounds * len(options.stream_rates) * (
        options.duration + WARMUP_SECONDS + 0.4)
    total += options.stream_rounds * len(options.stream_modes) * (options.duration + 0.5)
    return total


def judge(report, targets):
    result = report.get("streams")
    if not result:
        return
    memory = result["memory"]
    targets.note("  %-58s %.2f  (no goal)" % ("KiB per open stream, %d idle streams"
                                              % memory["streams"], memory["per_stream"] / 1024))
    for row in result["latency"]:
        targets.judge("stream publish->event p99 (ms), %d/s, %d streams"
                      % (row["rate_asked"], memory["streams"]), row["p99_ms"], 1.0, fmt="%.3f")
        targets.note("    (p50 %.3f; the publisher's own answer p99 %.3f; other cores %.2f)"
                     % (row["p50_ms"], row["rtt_p99_ms"], row["other_cores"]))
    for row in result["throughput"]:
        targets.note("  %-58s %.0f  (no goal; server cores %.2f, receiver %.2f)"
                     % ("stream events/s, %s publishes" % row["mode"], row["event_rate"],
                        row["server_cores"], row["receiver_cores"]))


if __name__ == "__main__":
    if sys.argv[1:2] != ["publish"]:
        sys.exit("usage: streams.py publish --port P --rate R --seconds S --streams N "
                 "[--size B]  (the benchmarks run from loadtest/run)")
    sys.exit(publisher_main(sys.argv[2:]))
