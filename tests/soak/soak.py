#!/usr/bin/env python3
"""soak.py - a long run of publishers and fetchers against a real gophermqd.

Starts gophermqd (tests/blackbox/harness.py: free ports, a temporary
config), then runs for --minutes (or --seconds):

  * --publishers processes, each on one keep-alive connection, publishing
    as fast as they can (or --rate messages/s each) round-robin over the
    subjects; message n of publisher p carries the unique id "p-n", a
    payload derived from it, and goes to subject n % subjects;
  * --fetchers processes, each owning some subscribers (--fanout of them per
    subject), fetching them in turn on keep-alive connections.

Every few seconds (--interval, 5 s; a 30th of shorter runs) it prints the daemon's resident memory (VmRSS
from /proc), the pending gauge and the rates.  At the end the publishers
stop, the fetchers drain every queue, and the run passes only when

  1. no request failed: every publish answered 200 {"status":"ok"}, every
     fetch 200, no connection error;
  2. every published message (200-answered) was fetched exactly once by each
     subscriber of its subject: per publisher and subscriber the ids arrive
     strictly increasing (so no duplicate, no reordering), every id belongs
     to that subscriber's subject, every payload is intact, and the counts
     received equal the counts published (so nothing lost);
  3. the daemon's RSS stayed flat after warm-up: the samples after the first
     --warmup fraction of the run (default 0.25) are split in thirds, and the
     largest sample of the last third may exceed the largest of the first
     third by at most --rss-slack-mib (default 4 MiB).  The least-squares
     slope over those samples is printed too (KiB/min), for information;
  4. after the drain the pending gauge is 0 and the daemon exits 0 on
     SIGTERM.

Exit status 0 when all hold, 1 otherwise.  Python 3 standard library only.

    tests/soak/soak.py --seconds 60            # the CI version (make soak-short)
    tests/soak/soak.py                         # 10 minutes (make soak)
    GOPHERMQD=/path/to/gophermqd tests/soak/soak.py --minutes 30 --publishers 6
"""

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "blackbox"))
import harness  # noqa: E402


# ---------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client: http.client costs more CPU than the
# daemon does per request, and the load generator must not be the limit.
# ---------------------------------------------------------------------------

class HttpError(Exception):
    pass


class FastClient:
    def __init__(self, host, port, timeout=30.0):
        self.address = (host, port)
        self.timeout = timeout
        self.sock = None
        self.buffer = b""
        self.host_header = ("Host: %s:%d\r\n" % (host, port)).encode()

    def connect(self):
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, path, body):
        """POSTs body (bytes); returns (status, body bytes).  Raises
        HttpError or OSError when the connection fails."""
        if self.sock is None:
            self.connect()
        request = (b"POST " + path + b" HTTP/1.1\r\n" + self.host_header
                   + b"Content-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.sock.sendall(request)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        head = self.buffer[:end]
        self.buffer = self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError("bad status line %r" % lines[0]) from None
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise HttpError("response without Content-Length")
        while len(self.buffer) < length:
            self._fill()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            self.close()
        return status, payload

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise HttpError("connection closed by the server")
        self.buffer += data


def payload_for(publisher, sequence, size):
    """The data of message sequence of publisher: its id, then padding
    derived from it, size bytes in all (at least the id)."""
    head = "%d-%d|" % (publisher, sequence)
    fill = "abcdefghijklmnopqrstuvwxyz0123456789"[(publisher * 7 + sequence) % 36]
    return head + fill * max(0, size - len(head))


# ---------------------------------------------------------------------------
# Workers (separate processes)
# ---------------------------------------------------------------------------

def publisher_main(index, options, subjects, stop, counters, results):
    """Publishes until stop is set; puts its summary on results."""
    client = FastClient(options.host, options.port)
    subject_count = len(subjects)
    published = [0] * subject_count        # 200-answered, per subject
    errors = []
    sequence = 0
    interval = 1.0 / options.rate if options.rate else 0.0
    next_time = time.monotonic()
    encoded_subjects = [json.dumps(subject) for subject in subjects]
    local_count = 0
    while not stop.is_set():
        if interval:
            next_time += interval
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        target = sequence % subject_count
        body = ('{"subject":%s,"data":"%s"}' % (encoded_subjects[target],
                                                 payload_for(index, sequence, options.size))).encode()
        try:
            status, reply = client.post(b"/api/publish", body)
        except (OSError, HttpError) as error:
            errors.append("publish %d-%d: %s" % (index, sequence, error))
            client.close()
            sequence += 1          # the outcome is unknown: never reuse the id
            if len(errors) > 100:
                break
            continue
        if status == 200 and reply == b'{"status":"ok"}\n':
            published[target] += 1
            local_count += 1
            if local_count % 256 == 0:
                with counters["published"].get_lock():
                    counters["published"].value += 256
        else:
            errors.append("publish %d-%d: %d %r" % (index, sequence, status, reply[:200]))
            if len(errors) > 100:
                break
        sequence += 1
    with counters["published"].get_lock():
        counters["published"].value += local_count % 256
    client.close()
    results.put(("publisher", index, {"sequences": sequence, "published": published, "errors": errors}))


def fetcher_main(index, options, owned, publishers_total, stop, drain, counters, results):
    """Fetches its subscribers (owned: list of (subscriber number, subject
    number, subject, id)) until stop; then, once drain is set, until every
    queue is empty twice in a row.  Verifies order, ownership and payloads
    as it goes; puts its summary on results."""
    client = FastClient(options.host, options.port)
    subject_count = options.subjects
    # last[s][p]: last sequence from publisher p seen by subscriber s
    last = {number: [-1] * publishers_total for number, _, _, _ in owned}
    received = {number: [0] * publishers_total for number, _, _, _ in owned}
    errors = []
    bodies = [(number, subject_number,
               json.dumps({"subject": subject, "id": subscriber_id}).encode())
              for number, subject_number, subject, subscriber_id in owned]
    empty_rounds = 0
    local_count = 0
    requests = 0
    while True:
        round_total = 0
        for number, subject_number, body in bodies:
            requests += 1
            try:
                status, reply = client.post(b"/api/fetch", body)
            except (OSError, HttpError) as error:
                errors.append("fetch %d: %s" % (number, error))
                client.close()
                continue
            if status != 200:
                errors.append("fetch %d: %d %r" % (number, status, reply[:200]))
                continue
            try:
                data = json.loads(reply)["data"]
            except (ValueError, KeyError) as error:
                errors.append("fetch %d: bad reply %r (%s)" % (number, reply[:200], error))
                continue
            round_total += len(data)
            seen_last, seen_count = last[number], received[number]
            for item in data:
                head, _, _ = item.partition("|")
                try:
                    publisher, sequence = (int(part) for part in head.split("-"))
                except ValueError:
                    errors.append("subscriber %d: foreign message %r" % (number, item[:80]))
                    continue
                if item != payload_for(publisher, sequence, options.size):
                    errors.append("subscriber %d: message %s corrupted" % (number, head))
                if sequence % subject_count != subject_number:
                    errors.append("subscriber %d: message %s of another subject" % (number, head))
                if sequence <= seen_last[publisher]:
                    errors.append("subscriber %d: message %s after %d-%d (duplicate or out of order)"
                                  % (number, head, publisher, seen_last[publisher]))
                seen_last[publisher] = sequence
                seen_count[publisher] += 1
            if len(errors) > 100:
                break
        local_count += round_total
        if local_count >= 256:
            with counters["fetched"].get_lock():
                counters["fetched"].value += local_count
            local_count = 0
        if len(errors) > 100:
            break
        if drain.is_set():
            empty_rounds = empty_rounds + 1 if round_total == 0 else 0
            if empty_rounds >= 2:
                break
        elif round_total == 0 and options.fetch_pause:
            time.sleep(options.fetch_pause)
    with counters["fetched"].get_lock():
        counters["fetched"].value += local_count
    client.close()
    results.put(("fetcher", index, {"received": received, "last": last, "errors": errors,
                                    "requests": requests}))


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User plus system CPU seconds pid has used."""
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def least_squares_slope(points):
    """Slope of the least-squares line through (x, y) points."""
    count = len(points)
    if count < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    return numerator / denominator if denominator else 0.0


def rss_verdict(samples, warmup_fraction, slack_kib, duration):
    """(passed, text) for the RSS samples [(seconds, KiB)] of the load phase."""
    steady = [(t, kib) for t, kib in samples if t >= duration * warmup_fraction]
    if len(steady) < 6:
        return False, "too few RSS samples after warm-up (%d; run longer or lower --interval)" % len(steady)
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]
    first_max = max(kib for _, kib in first)
    last_max = max(kib for _, kib in last)
    slope = least_squares_slope([(t / 60.0, kib) for t, kib in steady])
    passed = last_max <= first_max + slack_kib
    text = ("max RSS of the first third after warm-up %d KiB, of the last third %d KiB "
            "(%+d KiB, allowed %+d); slope %+.1f KiB/min over %d samples"
            % (first_max, last_max, last_max - first_max, slack_kib, slope, len(steady)))
    return passed, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0, help="length of the load phase (default 10)")
    length.add_argument("--seconds", type=float, help="length of the load phase in seconds")
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes (default 3)")
    parser.add_argument("--fetchers", type=int, default=2, help="fetcher processes (default 2)")
    parser.add_argument("--subjects", type=int, default=8, help="subjects (default 8)")
    parser.add_argument("--fanout", type=int, default=2, help="subscribers per subject (default 2)")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    parser.add_argument("--rate", type=float, default=0, help="messages/s per publisher, 0 = flat out")
    parser.add_argument("--fetch-pause", type=float, default=0.001,
                        help="seconds a fetcher sleeps after a round that found nothing (default 0.001)")
    parser.add_argument("--interval", type=float,
                        help="seconds between RSS reports (default 5; runs under 5 minutes: a 30th of the run)")
    parser.add_argument("--warmup", type=float, default=0.25,
                        help="fraction of the run ignored by the RSS criterion (default 0.25)")
    parser.add_argument("--rss-slack-mib", type=float, default=4.0,
                        help="allowed RSS growth, last third vs first third (default 4 MiB)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds allowed for the drain")
    parser.add_argument("--daemon-option", action="append", default=[], metavar="NAME=VALUE",
                        help="extra config option for the daemon (repeatable)")
    options = parser.parse_args()
    duration = options.seconds if options.seconds is not None else options.minutes * 60.0
    if options.subjects < 1 or options.fanout < 1 or options.publishers < 1 or options.fetchers < 1:
        parser.error("--subjects, --fanout, --publishers and --fetchers must be at least 1")
    if options.interval is None:
        options.interval = 5.0 if duration >= 300 else max(1.0, duration / 30.0)

    config = {
        "max_pending": 0, "max_pending_bytes": 0,     # the test, not the limits, is under test
        "max_connections": 1024, "connection_timeout": 60, "subscriber_ttl": 3600,
    }
    for option in options.daemon_option:
        name, _, value = option.partition("=")
        config[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    if not os.access(harness.DAEMON, os.X_OK):
        print("soak: daemon %s not found (set GOPHERMQD)" % harness.DAEMON)
        return 2
    daemon = harness.Daemon(config, owner="soak")
    try:
        return run(options, duration, daemon)
    finally:
        daemon.kill()
        shutil.rmtree(daemon.directory, ignore_errors=True)


def run(options, duration, daemon):
    options.host, options.port = daemon.api_host, daemon.api_port
    print("soak: gophermqd pid %d on %s:%d; %s of load: %d publishers, %d fetchers, %d subjects x %d "
          "subscribers, %d-byte payloads%s"
          % (daemon.pid, options.host, options.port,
             ("%.0f s" % duration) if duration < 120 else ("%.1f min" % (duration / 60)),
             options.publishers, options.fetchers, options.subjects, options.fanout, options.size,
             (", %.0f msg/s per publisher" % options.rate) if options.rate else ", flat out"))
    sys.stdout.flush()

    subjects = ["soak.subject%d.%s" % (n, uuid.uuid4().hex[:6]) for n in range(options.subjects)]
    subscribers = []                  # (number, subject number, subject, id)
    for copy in range(options.fanout):
        for number, subject in enumerate(subjects):
            subscribers.append((len(subscribers), number, subject, daemon.subscribe(subject)))
    owned = [subscribers[i::options.fetchers] for i in range(options.fetchers)]

    context = multiprocessing.get_context("fork")
    stop, drain = context.Event(), context.Event()
    counters = {"published": context.Value("q", 0), "fetched": context.Value("q", 0)}
    results = context.Queue()
    workers = [context.Process(target=publisher_main, args=(p, options, subjects, stop, counters, results))
               for p in range(options.publishers)]
    workers += [context.Process(target=fetcher_main,
                                args=(f, options, owned[f], options.publishers, stop, drain, counters, results))
                for f in range(options.fetchers)]

    samples = []                      # (seconds, RSS KiB) during the load phase
    print("\n%8s %10s %12s %12s %10s %10s %10s" % ("seconds", "RSS KiB", "published", "fetched",
                                                    "pub/s", "fetch/s", "pending"))
    start = time.monotonic()
    samples.append((0.0, rss_kib(daemon.pid)))
    cpu_start = cpu_seconds(daemon.pid)
    for worker in workers:
        worker.start()
    last_time, last_published, last_fetched = start, 0, 0
    failure = None
    try:
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= duration:
                break
            time.sleep(min(options.interval, duration - elapsed))
            now = time.monotonic()
            published, fetched = counters["published"].value, counters["fetched"].value
            kib = rss_kib(daemon.pid)
            pending = daemon.metrics().value("gophermq_pending_messages")
            samples.append((now - start, kib))
            span = max(now - last_time, 1e-9)
            print("%8.0f %10d %12d %12d %10.0f %10.0f %10.0f"
                  % (now - start, kib, published, fetched, (published - last_published) / span,
                     (fetched - last_fetched) / span, pending or 0))
            sys.stdout.flush()
            last_time, last_published, last_fetched = now, published, fetched
            if not daemon.running():
                failure = "gophermqd died"
                break
            if not any(worker.is_alive() for worker in workers[:options.publishers]):
                failure = "every publisher stopped early (too many errors?)"
                break
    except KeyboardInterrupt:
        failure = "interrupted"
    load_seconds = time.monotonic() - start
    daemon_cpu = cpu_seconds(daemon.pid) - cpu_start
    stop.set()

    # Collect the publishers first: their counts are final before the drain.
    summaries = {}
    deadline = time.monotonic() + options.drain_timeout
    drain_started = None
    while len(summaries) < len(workers) and time.monotonic() < deadline:
        if drain_started is None and all(("publisher", p) in summaries for p in range(options.publishers)):
            drain.set()
            drain_started = time.monotonic()
        try:
            kind, index, summary = results.get(timeout=0.5)
        except queue.Empty:
            continue
        summaries[(kind, index)] = summary
    drain_seconds = time.monotonic() - (drain_started or time.monotonic())
    for worker in workers:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.terminate()
    if len(summaries) < len(workers):
        failure = failure or "workers did not finish within --drain-timeout (%d of %d reported)" \
            % (len(summaries), len(workers))

    # ---- verdicts -------------------------------------------------------
    errors = []
    published = {}                    # (publisher, subject number) -> count
    attempted = 0
    for p in range(options.publishers):
        summary = summaries.get(("publisher", p))
        if summary is None:
            continue
        attempted += summary["sequences"]
        errors += summary["errors"]
        for s, count in enumerate(summary["published"]):
            published[(p, s)] = count
    received_total = 0
    fetch_requests = 0
    missing = duplicated = 0
    for f in range(options.fetchers):
        summary = summaries.get(("fetcher", f))
        if summary is None:
            continue
        errors += summary["errors"]
        fetch_requests += summary["requests"]
        for number, counts in summary["received"].items():
            subject_number = subscribers[int(number)][1]
            for p, count in enumerate(counts):
                received_total += count
                want = published.get((p, subject_number), 0)
                if count < want:
                    missing += want - count
                elif count > want:
                    duplicated += count - want
    published_total = sum(published.values())
    expected_copies = published_total * options.fanout

    final = daemon.metrics()
    pending_after = final.value("gophermq_pending_messages")
    rss_passed, rss_text = rss_verdict(samples, options.warmup, int(options.rss_slack_mib * 1024), load_seconds)
    end_rss = rss_kib(daemon.pid)
    try:
        exit_code = daemon.stop()
        exit_text = "exit code %d" % exit_code
    except AssertionError as error:
        exit_code = None
        exit_text = str(error).splitlines()[0]

    checks = [
        ("no request errors", not errors, "%d errors%s" % (len(errors), (": " + "; ".join(errors[:5])) if errors else "")),
        ("every message fetched exactly once", missing == 0 and duplicated == 0 and received_total == expected_copies
         and not any("duplicate" in e for e in errors),
         "%d published x %d subscribers = %d copies; %d fetched, %d missing, %d extra"
         % (published_total, options.fanout, expected_copies, received_total, missing, duplicated)),
        ("RSS flat after warm-up", rss_passed, rss_text),
        ("nothing pending after the drain", pending_after == 0, "gophermq_pending_messages %s" % pending_after),
        ("clean shutdown", exit_code == 0, exit_text),
    ]
    if failure:
        checks.insert(0, ("run completed", False, failure))

    rss_values = [kib for _, kib in samples]
    print("\nsoak summary")
    table = [
        ("load phase", "%.1f s" % load_seconds),
        ("drain", "%.1f s" % drain_seconds),
        ("publish requests", "%d (%.0f/s)" % (attempted, attempted / max(load_seconds, 1e-9))),
        ("messages published (200)", "%d" % published_total),
        ("copies fetched", "%d of %d" % (received_total, expected_copies)),
        ("fetch requests", "%d (%.0f/s)" % (fetch_requests, fetch_requests / max(load_seconds + drain_seconds, 1e-9))),
        ("fetch rate", "%.0f copies/s" % (received_total / max(load_seconds + drain_seconds, 1e-9))),
        ("daemon CPU during load", "%.0f%% of one core (%d cores online)"
         % (100.0 * daemon_cpu / max(load_seconds, 1e-9), os.cpu_count() or 0)),
        ("RSS start / min / max / end", "%d / %d / %d / %d KiB" % (rss_values[0], min(rss_values),
                                                                    max(rss_values), end_rss)),
    ]
    for name, value in table:
        print("  %-30s %s" % (name, value))
    print()
    passed = True
    for name, ok, detail in checks:
        print("  %-4s %-36s %s" % ("PASS" if ok else "FAIL", name, detail))
        passed = passed and ok
    if not passed:
        print("\n" + daemon.log_tail(30))
    print("\nsoak: %s" % ("PASSED" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
