"""durability.py - benchmarks of persistence = "log" (loadtest/README.md).

  modes       sync publish against four daemons: persistence none, and log
              with fsync never, everysec and always, at wrk -c 1, 10 and 50
              (taking turns, as the main table's servers do): req/s, p99,
              CPU per request, fsyncs per request (group commit)
  replay      10^6 pending messages of 100 B, SIGTERM, start again: replay
              time, start to /ready, log size on disk, RSS after the replay
  compaction  publish latency (fsync everysec, wrk -c10) on a daemon holding
              500,000 pending messages, while a compaction runs and while
              none does: two runs on one daemon, told by a reload of
              compact_min_size which of them may compact
Every daemon gets a data directory of its own in the run's temporary
directory.  run_durability() runs the parts asked for (all skipped, with a
note, when the daemon does not start with persistence = "log"); judge()
adds their lines to the Targets block.
"""

import argparse
import json
import os
import re
import signal
import threading
import time

import benchhttp as net
from benchkit import (DAEMON_OPTIONS, MIB, BenchError, Server, confined_to, gmqlaunch, measure,
                      median, median_ratio, print_table, progress, run_wrk, settle_rss,
                      start_daemon, started, wait_for_quiet)
from delivery import publish_batches

PARTS = ["modes", "replay", "compaction"]
PART_HELP = {
    "modes": "sync publish with persistence none / fsync never, everysec, always, "
             "at --modes-connections clients",
    "replay": "restart with --replay-messages pending: replay time, log on disk, RSS",
    "compaction": "publish latency while a compaction of --compaction-messages runs vs none",
}
# The daemons of the modes benchmark: name, then their persistence options.
MODES = [
    ("none", {"persistence": "none"}),
    ("never", {"persistence": "log", "fsync": "never"}),
    ("everysec", {"persistence": "log", "fsync": "everysec"}),
    ("always", {"persistence": "log", "fsync": "always"}),
]
# The subject wrk publishes to (publish.lua), in the modes and compaction runs.
MODES_SUBJECT = "durability.publish"
# A compact_min_size no log reaches: no compaction.
NO_COMPACTION = 1 << 50
# Messages that inflate the log before a compaction run: 32 x 128 KiB per
# batch publish (a 4 MiB body, within the default max_batch_bytes).
CHURN_SIZE = 128 * 1024
CHURN_BATCH = 32
REPLAYED = re.compile(r"journal in (\S+) replayed in ([\d.]+) s: subscribers (\d+), "
                      r"messages pending (\d+), last seq (\d+)")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def daemon_config(options, extra):
    """The whole configuration start_daemon() writes for extra: what a
    reload must write again, with one value changed."""
    config = dict(DAEMON_OPTIONS)
    config.update(extra)
    config.update(options.daemon_option)
    return config


def start_journaled(options, workdir, tag, extra):
    """gophermqd with extra and a fresh data directory WORKDIR/TAG-data;
    returns (server, its configuration, the data directory)."""
    data_dir = os.path.join(workdir, tag + "-data")
    extra = dict(extra, data_dir=data_dir)
    daemon = start_daemon(options.daemon_binary, workdir, tag, options.daemon_option,
                          options=extra)
    return daemon, daemon_config(options, extra), data_dir


def restart(server, options, timeout):
    """Starts gophermqd again with server's configuration file (so on the
    same data directory) once server has exited; returns the new Server
    and the seconds from starting the process to /ready answering 204."""
    launched = gmqlaunch.DaemonProcess(server.launched.config_path,
                                       binary=options.daemon_binary,
                                       preexec_fn=confined_to("servers"))
    began = time.monotonic()
    try:
        launched.start(timeout)
    except gmqlaunch.LaunchError as error:
        raise BenchError(str(error)) from None
    seconds = time.monotonic() - began
    started.append(launched.process)
    return Server("gophermqd", launched.process, launched.api_port, launched), seconds


def reload_config(server, config):
    """Writes config to server's configuration file; the returned function
    sends SIGHUP (the daemon reads the file then)."""
    server.launched.write_config(config)
    return lambda: os.kill(server.pid, signal.SIGHUP)


def one_thread(options):
    """options with wrk -t1 (the runs at -c1 need it; the CPUs stay as
    planned)."""
    copy = argparse.Namespace(**vars(options))
    copy.threads = 1
    return copy


def filesystem_of(path):
    """(mount point, type, device) of the filesystem that holds path."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            point = point.replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, kind, device)
    return best


def describe_directory(workdir):
    """Where the data directories are, in words, for the tables' headers."""
    point, kind, device = filesystem_of(workdir)
    try:
        same = os.stat(workdir).st_dev == os.stat("/tmp").st_dev
    except OSError:
        same = False
    words = "%s: %s on %s (mounted on %s%s)" % (
        workdir, kind, device, point, ", the filesystem of /tmp" if same else "")
    if kind in ("tmpfs", "ramfs"):
        words += "; in memory, so fsync costs nothing there"
    return words


def disk_usage(directory):
    """(bytes allocated, as du counts them, apparent size) of the files
    under directory."""
    allocated = apparent = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                status = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            allocated += status.st_blocks * 512
            apparent += status.st_size
    return allocated, apparent


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def warm_up(options, daemon, ids, connections):
    """--warmup seconds of the publish scenario, then its backlog fetched:
    connections, buffers and the queue exist before the first measurement."""
    if options.warmup > 0:
        run_wrk(one_thread(options), "publish.lua", daemon,
                {"subject": MODES_SUBJECT, "size": options.size}, options.warmup,
                connections=connections)
        net.drain(daemon.port, MODES_SUBJECT, ids, batch=10000)


# ---------------------------------------------------------------------------
# fsync modes
# ---------------------------------------------------------------------------


def run_modes(options, workdir, report):
    """One daemon per mode, each with one subscriber; in every round each
    number of clients runs against the four in turn (so that drift hits
    them alike), and every run's backlog is fetched after it."""
    wrk = one_thread(options)
    daemons = []
    try:
        for name, extra in MODES:
            # Compaction would come at a different moment in each daemon:
            # off here (the compaction benchmark measures it).
            daemon, _, _ = start_journaled(options, workdir, "modes-" + name,
                                           dict(extra, compact_min_size=NO_COMPACTION))
            ids = net.subscribe_many(daemon.port, [MODES_SUBJECT])
            daemons.append((name, daemon, ids))
        if options.warmup > 0:
            progress("modes: warm-up, %d s on each daemon" % options.warmup)
        for _, daemon, ids in daemons:
            warm_up(options, daemon, ids, max(options.modes_connections))
        results = {(name, clients): [] for name, _ in MODES
                   for clients in options.modes_connections}
        copies = {name: [0, 0] for name, _ in MODES}    # answered 2xx, fetched back
        gauge_mismatches = {name: 0 for name, _ in MODES}
        for round_number in range(options.modes_rounds):
            for clients in options.modes_connections:
                for name, daemon, ids in daemons:
                    progress("modes: round %d/%d, -c%d, %s" % (
                        round_number + 1, options.modes_rounds, clients, name))
                    before = daemon.metrics()
                    result = measure(wrk, "publish.lua", daemon,
                                     {"subject": MODES_SUBJECT, "size": options.size},
                                     options.duration, settle=lambda: wait_for_quiet(daemon),
                                     connections=clients)
                    after = daemon.metrics()
                    requests = result["requests"] or float("nan")
                    result["fsyncs"] = delta(before, after, "gophermq_journal_fsync_seconds_count")
                    result["fsyncs_per_request"] = result["fsyncs"] / requests
                    result["log_bytes_per_request"] = delta(before, after,
                                                            "gophermq_journal_bytes") / requests
                    gauge = daemon.pending()
                    drained = net.drain(daemon.port, MODES_SUBJECT, ids, batch=10000)
                    gauge_mismatches[name] += gauge is not None and gauge != drained
                    copies[name][0] += result["ok"]
                    copies[name][1] += drained
                    results[(name, clients)].append(result)
    finally:
        for _, daemon, _ in daemons:
            daemon.stop()
    rows = []
    for name, _ in MODES:
        for clients in options.modes_connections:
            runs = results[(name, clients)]
            base = results[("none", clients)]
            rows.append({
                "mode": name, "clients": clients,
                "rps": median([r["rps"] for r in runs]),
                "p50_ms": median([r["p50_us"] for r in runs]) / 1000,
                "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
                "fsyncs_per_request": median([r["fsyncs_per_request"] for r in runs]),
                "log_bytes_per_request": median([r["log_bytes_per_request"] for r in runs]),
                "rps_vs_none": median_ratio(runs, base, "rps"),
                "errors": sum(r["errors"] for r in runs),
                "statuses": ",".join(sorted({r["statuses"] for r in runs})),
                "client_cores": median([r["client_cpu_s"] * 1e6 / r["duration_us"]
                                        for r in runs]),
                "other_cores": median([r["other_cores"] for r in runs]),
                "rounds": runs,
            })
    low, high = min(options.modes_connections), max(options.modes_connections)
    slack = options.modes_rounds * sum(options.modes_connections)
    checks = []
    for name, _ in MODES:
        answered, fetched = copies[name]
        checks.append("%s: %d publishes answered 2xx, %d messages fetched back (requests in "
                      "flight when wrk stops may add up to %d): %s; pending gauge equal to the "
                      "messages fetched after each run: %s"
                      % (name, answered, fetched, slack,
                         "ok" if answered <= fetched <= answered + slack else "MISMATCH",
                         "ok" if not gauge_mismatches[name]
                         else "MISMATCH in %d runs" % gauge_mismatches[name]))
    modes = {
        "rows": rows, "checks": checks, "connections": options.modes_connections,
        "rounds": options.modes_rounds, "duration": options.duration,
        "always_scaling": median_ratio(results[("always", high)], results[("always", low)],
                                       "rps") if high != low else float("nan"),
        "always_scaling_clients": [low, high],
    }
    report["durability"]["modes"] = modes
    return modes


def print_modes(modes, options, where):
    print()
    print("Durability modes: sync publish (publish.lua, one subject, one subscriber, %d B), "
          "wrk -t1, medians over %d rounds of %d s;" % (options.size, modes["rounds"],
                                                        modes["duration"]))
    print("  four daemons (persistence none; log with fsync never, everysec, always), "
          "taking turns in each round; compaction off (compact_min_size 2^50);")
    print("  no limits (max_pending 0, max_pending_bytes 0); each run's backlog fetched after "
          "it, outside the measurement; a warm-up of %d s on each daemon first" % options.warmup)
    print("  data directories in %s" % where)
    header = ("mode", "clients", "req/s", "p50 ms", "p99 ms", "CPU us/req", "fsyncs/req",
              "log B/req", "req/s vs none", "errors", "wrk cores", "other cores")
    lines = []
    for row in modes["rows"]:
        journaled = row["mode"] != "none"
        lines.append((row["mode"], row["clients"], "%.0f" % row["rps"], "%.3f" % row["p50_ms"],
                      "%.3f" % row["p99_ms"], "%.2f" % row["cpu_per_request"],
                      "%.4f" % row["fsyncs_per_request"] if journaled else "-",
                      "%.1f" % row["log_bytes_per_request"] if journaled else "-",
                      "%.2f" % row["rps_vs_none"], row["errors"], "%.2f" % row["client_cores"],
                      "%.2f" % row["other_cores"]))
    print_table(header, lines, left=2)
    print("  req/s vs none = the median of the per-round ratios to persistence none at the "
          "same number of clients;")
    print("  fsyncs/req = gophermq_journal_fsync_seconds_count over the run / requests; "
          "log B/req = growth of gophermq_journal_bytes / requests")
    low, high = modes["always_scaling_clients"]
    if high != low:
        always = {row["clients"]: row for row in modes["rows"] if row["mode"] == "always"}
        print("  fsync always: req/s at %d clients / at %d: %.1f (group commit: %.1f requests "
              "per fsync at %d clients, %.1f at %d)"
              % (high, low, modes["always_scaling"],
                 1 / always[high]["fsyncs_per_request"] if always[high]["fsyncs_per_request"]
                 else float("nan"), high,
                 1 / always[low]["fsyncs_per_request"] if always[low]["fsyncs_per_request"]
                 else float("nan"), low))
    for row in modes["rows"]:
        if row["errors"]:
            print("  errors %s -c%d: status counts %s" % (row["mode"], row["clients"],
                                                        row["statuses"]))
    print("Checks:")
    for check in modes["checks"]:
        print("  " + check)


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------
REPLAY_SUBJECT = "durability.replay"


def run_replay(options, workdir, report):
    count, size = options.replay_messages, options.replay_payload
    payload = net.payload_of(size)
    daemon, _, data_dir = start_journaled(options, workdir, "replay",
                                          {"persistence": "log", "fsync": "never"})
    try:
        subscriber = net.api_call(daemon.port, "/api/subscribe",
                                  {"subject": REPLAY_SUBJECT})["id"]
        progress("replay: %d messages of %d B in batches of 1000" % (count, size))
        began = time.monotonic()
        publish_batches(daemon, REPLAY_SUBJECT, payload, count)
        load_seconds = time.monotonic() - began
        metrics = daemon.metrics()
        rss_before = settle_rss(daemon)
        progress("replay: SIGTERM, then starting again on %s" % data_dir)
        began = time.monotonic()
        daemon.stop()
        stop_seconds = time.monotonic() - began
        allocated, apparent = disk_usage(data_dir)
        daemon, ready_seconds = restart(daemon, options, timeout=30 + count / 50000)
        replayed = daemon.metrics()
        line = next((line for line in daemon.launched.log_lines() if REPLAYED.search(line)), "")
        match = REPLAYED.search(line)
        rss_after = settle_rss(daemon)
        # the first messages are the ones published, payload and all
        status, body = net.http_call(daemon.port, "POST", "/api/fetch",
                                     {"subject": REPLAY_SUBJECT, "id": subscriber, "max": 3,
                                      "peek": True})
        sample = json.loads(body).get("data") if status == 200 else None
        row = {
            "messages": count, "payload": size, "data_dir": data_dir,
            "load_seconds": load_seconds,
            "pending_before": int(metrics.get("gophermq_pending_messages", -1)),
            "journal_bytes": int(metrics.get("gophermq_journal_bytes", -1)),
            "segments": int(metrics.get("gophermq_journal_segments", -1)),
            "compactions": int(metrics.get("gophermq_journal_compactions_total", 0)),
            "disk_allocated": allocated, "disk_apparent": apparent,
            "stop_seconds": stop_seconds,
            "replay_seconds": replayed.get("gophermq_journal_replay_seconds", float("nan")),
            "log_line": line.strip(),
            "logged_seconds": float(match.group(2)) if match else float("nan"),
            "logged_pending": int(match.group(4)) if match else None,
            "ready_seconds": ready_seconds,
            "pending_after": int(replayed.get("gophermq_pending_messages", -1)),
            "rss_before": rss_before, "rss_after": rss_after,
            "sample_ok": sample == [payload] * min(3, count),
        }
    finally:
        daemon.stop()
    report["durability"]["replay"] = row
    return row


def print_replay(row, where):
    print()
    print("Replay: persistence log, fsync never; %d messages of %d B batch-published (1000 "
          "per request) to one subscriber, SIGTERM, started again"
          % (row["messages"], row["payload"]))
    print("  data directory in %s" % where)
    header = ("pending", "load msg/s", "log MiB", "on disk MiB", "stop s", "replay s",
              "start to /ready s", "RSS before the stop MiB", "RSS after replay MiB",
              "pending after")
    print_table(header, [(row["messages"], "%.0f" % (row["messages"] / row["load_seconds"]),
                          "%.1f" % (row["journal_bytes"] / MIB),
                          "%.1f" % (row["disk_allocated"] / MIB), "%.2f" % row["stop_seconds"],
                          "%.3f" % row["replay_seconds"], "%.3f" % row["ready_seconds"],
                          "%.1f" % (row["rss_before"] / MIB), "%.1f" % (row["rss_after"] / MIB),
                          row["pending_after"])])
    print("  log = gophermq_journal_bytes before the stop (segments: %d, compactions: %d); "
          "on disk = du of the data directory after the stop (apparent size %.1f MiB)"
          % (row["segments"], row["compactions"], row["disk_apparent"] / MIB))
    print("  replay s = gophermq_journal_replay_seconds; start to /ready = from starting the "
          "process to GET /ready answering 204")
    print("  log: %s" % (row["log_line"] or "(no \"replayed in\" line)"))
    print("Checks:")
    print("  pending gauge after the restart = %d messages published: %s (before the stop: %d; "
          "the log line: %s)" % (row["messages"],
                                 "ok" if row["pending_after"] == row["messages"] else "MISMATCH",
                                 row["pending_before"], row["logged_pending"]))
    print("  the first messages fetched after the restart (peek) carry the payload published: "
          "%s" % ("ok" if row["sample_ok"] else "MISMATCH"))


# ---------------------------------------------------------------------------
# compaction
# ---------------------------------------------------------------------------
LIVE_SUBJECT = "durability.live"
CHURN_SUBJECT = "durability.churn"


def live_estimate(metrics):
    """The daemon's estimate of its live state (src/main.c): a compaction
    starts when the log passes twice this and compact_min_size."""
    return (metrics.get("gophermq_pending_bytes", 0) + 32 * metrics.get(
        "gophermq_pending_messages", 0) + 128 * metrics.get("gophermq_subscribers", 0))


def grow_log(daemon, margin=16 * MIB):
    """Grows the log past twice the live estimate (plus margin) with large
    messages to a subscriber made for the purpose, then unsubscribes it:
    the log grows, the live state does not.  Returns the log's size."""
    metrics = daemon.metrics()
    needed = 2 * live_estimate(metrics) + margin - metrics.get("gophermq_journal_bytes", 0)
    if needed > 0:
        subscriber = net.api_call(daemon.port, "/api/subscribe", {"subject": CHURN_SUBJECT})["id"]
        message = b'{"subject":"%s","data":"%s"}' % (CHURN_SUBJECT.encode(),
                                                     net.payload_of(CHURN_SIZE).encode())
        request = net.post_request(b"/api/publish/batch",
                                   b'{"messages":[%s]}' % b",".join([message] * CHURN_BATCH))
        batches = int(needed // (CHURN_SIZE * CHURN_BATCH)) + 1
        statuses, _ = net.bulk_requests(daemon.port, lambda i: request, batches, connections=1,
                                        window=4, deadline=time.monotonic() + 120,
                                        what="batch publishes")
        if statuses != {200: batches}:
            raise BenchError("compaction: publishes that grow the log answered %s" % statuses)
        net.api_call(daemon.port, "/api/unsubscribe", {"subject": CHURN_SUBJECT,
                                                       "id": subscriber})
        wait_synced(daemon)
    return daemon.metric("gophermq_journal_bytes")


def wait_synced(daemon, timeout=30):
    """Waits until the log is synced (fsync everysec syncs once a second
    while there is something to sync): a sync since the call, then none for
    1.5 s.  Writing back what was written before then falls into no run."""
    first = last = daemon.metric("gophermq_journal_fsync_seconds_count") or 0
    changed = time.monotonic()
    deadline = changed + timeout
    while time.monotonic() < deadline:
        count = daemon.metric("gophermq_journal_fsync_seconds_count") or 0
        if count != last:
            last, changed = count, time.monotonic()
        elif count > first and time.monotonic() - changed >= 1.5:
            return
        time.sleep(0.1)


class CompactionWatch:
    """Polls gophermq_journal_compactions_total every 50 ms in a thread;
    records the moments it went up."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.first = daemon.metric("gophermq_journal_compactions_total") or 0
        self.last = self.first
        self.finished = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        while not self.stopping.wait(0.05):
            try:
                count = self.daemon.metric("gophermq_journal_compactions_total") or 0
            except (OSError, BenchError):
                continue
            if count > self.last:
                self.finished += [time.monotonic()] * (count - self.last)
                self.last = count

    def wait(self, count, timeout):
        """Waits until count compactions finished since the start."""
        deadline = time.monotonic() + timeout
        while self.last - self.first < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.last - self.first >= count

    def stop(self):
        self.stopping.set()
        self.thread.join()
        return self.last - self.first


def compaction_run(options, daemon, config, compact_min_size, reloads):
    """One wrk run; a timer reloads config with compact_min_size a tenth of
    the way in (in both cases, so that the reload itself is alike).  Returns
    the result with the compactions and their timing."""
    send = reload_config(daemon, dict(config, compact_min_size=compact_min_size))
    watch = CompactionWatch(daemon)
    delay = max(0.2, options.duration / 10)
    reloaded = []

    def fire():
        reloaded.append(time.monotonic())
        send()
    timer = threading.Timer(delay, fire)
    began = time.monotonic()
    timer.start()
    try:
        result = measure(one_thread(options), "publish.lua", daemon,
                         {"subject": MODES_SUBJECT, "size": options.size}, options.duration,
                         connections=options.compaction_connections)
    finally:
        timer.cancel()
    ended = began + result["duration_us"] / 1e6
    during = watch.last - watch.first
    if compact_min_size != NO_COMPACTION and not during:
        progress("compaction: still compacting when the run ended; waiting for it")
        watch.wait(1, timeout=600)
    result["compactions"] = during
    result["compactions_after"] = watch.stop() - during
    if reloaded and watch.finished:
        done = watch.finished[0]
        result["compaction_seconds"] = done - reloaded[0]
        result["compaction_in_run"] = max(0.0, min(done, ended) - max(reloaded[0], began))
    else:
        result["compaction_seconds"] = result["compaction_in_run"] = float("nan")
    reloads_now = wait_reloads(daemon, reloads + 1)
    result["reloaded"] = reloads_now == reloads + 1
    return result, reloads_now


def run_compaction(options, workdir, report):
    count = options.compaction_messages
    daemon, config, data_dir = start_journaled(
        options, workdir, "compaction", {"persistence": "log", "fsync": "everysec",
                                         "compact_min_size": NO_COMPACTION})
    results = {"none": [], "compacting": []}
    logs = []
    try:
        net.api_call(daemon.port, "/api/subscribe", {"subject": LIVE_SUBJECT})
        progress("compaction: %d live messages of 100 B" % count)
        publish_batches(daemon, LIVE_SUBJECT, net.payload_of(100), count)
        ids = net.subscribe_many(daemon.port, [MODES_SUBJECT])
        warm_up(options, daemon, ids, options.compaction_connections)
        live = daemon.metrics()
        reloads = wait_reloads(daemon, 0)
        for round_number in range(options.compaction_rounds):
            progress("compaction: round %d/%d, growing the log" % (round_number + 1,
                                                                   options.compaction_rounds))
            grown = grow_log(daemon)
            for case, minimum in (("none", NO_COMPACTION),
                                  ("compacting", options.compaction_trigger)):
                progress("compaction: round %d/%d, %s" % (round_number + 1,
                                                          options.compaction_rounds,
                                                          "with a compaction" if minimum !=
                                                          NO_COMPACTION else "no compaction"))
                before = daemon.metric("gophermq_journal_bytes")
                result, reloads = compaction_run(options, daemon, config, minimum, reloads)
                result["log_before"] = before
                result["log_after"] = daemon.metric("gophermq_journal_bytes")
                results[case].append(result)
                net.drain(daemon.port, MODES_SUBJECT, ids, batch=10000)
            # no compaction while the next round grows the log
            reload_config(daemon, dict(config, compact_min_size=NO_COMPACTION))()
            reloads = wait_reloads(daemon, reloads + 1)
            logs.append(grown)
        pending_after = daemon.pending()
    finally:
        daemon.stop()
    rows = []
    for case in ("none", "compacting"):
        runs = results[case]
        rows.append({
            "case": case,
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_us"] for r in runs]) / 1000,
            "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
            "max_ms": median([r["max_us"] for r in runs]) / 1000,
            "cpu_per_request": median([r["cpu_per_request"] for r in runs]),
            "compactions": [r["compactions"] for r in runs],
            "compactions_after": [r["compactions_after"] for r in runs],
            "compaction_seconds": median([r["compaction_seconds"] for r in runs]),
            "compaction_in_run": median([r["compaction_in_run"] for r in runs]),
            "log_before_mib": median([r["log_before"] for r in runs]) / MIB,
            "log_after_mib": median([r["log_after"] for r in runs]) / MIB,
            "reload_failures": sum(not r["reloaded"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "statuses": ",".join(sorted({r["statuses"] for r in runs})),
            "other_cores": median([r["other_cores"] for r in runs]),
            "rounds": runs,
        })
    none, compacting = rows
    as_planned = (not any(none["compactions"]) and not any(none["compactions_after"])
                  and all(during + after == 1 for during, after in
                          zip(compacting["compactions"], compacting["compactions_after"])))
    row = {
        "compactions_as_planned": as_planned,
        "live_messages": int(live.get("gophermq_pending_messages", 0)),
        "live_bytes": int(live.get("gophermq_pending_bytes", 0)),
        "live_estimate": live_estimate(live), "log_grown": logs,
        "pending_after": pending_after, "data_dir": data_dir,
        "trigger": options.compaction_trigger, "rows": rows,
        "p99_ratio": median_ratio(results["compacting"], results["none"], "p99_us"),
        "max_ratio": median_ratio(results["compacting"], results["none"], "max_us"),
        "rps_ratio": median_ratio(results["compacting"], results["none"], "rps"),
    }
    report["durability"]["compaction"] = row
    return row


def wait_reloads(daemon, count, timeout=10):
    """Waits until gophermq_config_reloads_total reaches count; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        reloads = daemon.metric("gophermq_config_reloads_total") or 0
        if reloads >= count or time.monotonic() > deadline:
            return reloads
        time.sleep(0.05)


def print_compaction(row, options, where):
    print()
    print("Compaction: publish (publish.lua, %d B) with fsync everysec, wrk -t1 -c%d, on a "
          "daemon holding %d pending messages (%.1f MiB of payload)"
          % (options.size, options.compaction_connections, row["live_messages"],
             row["live_bytes"] / MIB))
    print("  each round: the log grown past twice the live estimate (%.1f MiB) with messages "
          "that are then dropped; then a %d s run with compact_min_size 2^50"
          % (row["live_estimate"] / MIB, options.duration))
    print("  (no compaction) and one with %d B, each reloaded (SIGHUP) a tenth of the way in; "
          "medians over %d rounds after a warm-up of %d s;"
          % (row["trigger"], options.compaction_rounds, options.warmup))
    print("  data directory in %s" % where)
    header = ("case", "req/s", "p50 ms", "p99 ms", "max ms", "CPU us/req",
              "compactions in the runs", "compaction s", "of it in the run s",
              "log before MiB", "log after MiB", "errors", "other cores")
    lines = []
    for case in row["rows"]:
        compacted = case["case"] == "compacting"
        lines.append(("during a compaction" if compacted else "no compaction",
                      "%.0f" % case["rps"], "%.3f" % case["p50_ms"],
                      "%.3f" % case["p99_ms"], "%.3f" % case["max_ms"],
                      "%.2f" % case["cpu_per_request"],
                      " ".join(str(c) for c in case["compactions"]),
                      "%.2f" % case["compaction_seconds"] if compacted else "-",
                      "%.2f" % case["compaction_in_run"] if compacted else "-",
                      "%.1f" % case["log_before_mib"], "%.1f" % case["log_after_mib"],
                      case["errors"], "%.2f" % case["other_cores"]))
    print_table(header, lines)
    print("  compaction / none: p99 %.2f, max %.2f, req/s %.2f (medians of the per-round "
          "ratios); compactions = gophermq_journal_compactions_total deltas, one per run"
          % (row["p99_ratio"], row["max_ratio"], row["rps_ratio"]))
    print("  compaction s = from the reload to the counter going up (polled every 50 ms); "
          "log = gophermq_journal_bytes before and after the run")
    for case in row["rows"]:
        if case["errors"]:
            print("  errors (%s): status counts %s" % (case["case"], case["statuses"]))
    none, compacting = row["rows"]
    late = sum(compacting["compactions_after"])
    print("Checks:")
    print("  compactions: none in the runs without, one in each run with a compaction%s: %s"
          % (" (%d finished after its run had ended)" % late if late else "",
             "ok" if row["compactions_as_planned"] else "MISMATCH"))
    print("  every run's reload applied (gophermq_config_reloads_total): %s"
          % ("ok" if not none["reload_failures"] and not compacting["reload_failures"]
             else "MISMATCH in %d runs" % (none["reload_failures"]
                                          + compacting["reload_failures"])))
    print("  live messages still pending after the runs: %d of %d: %s"
          % (row["pending_after"], row["live_messages"],
             "ok" if row["pending_after"] == row["live_messages"] else "MISMATCH"))


# ---------------------------------------------------------------------------
def persistence_refused(options, workdir):
    """None when this gophermqd starts with persistence = "log", else the
    error it logged."""
    try:
        probe, _, _ = start_journaled(options, workdir, "durability-probe",
                                      {"persistence": "log", "fsync": "never"})
    except BenchError as error:
        errors = [line for line in str(error).splitlines() if ": error: " in line]
        return errors[0] if errors else str(error).splitlines()[0]
    probe.stop()
    return None


def run_durability(options, workdir, report):
    """Runs and prints the parts in options.durability; returns False when
    the daemon does not start with persistence (nothing run)."""
    refused = persistence_refused(options, workdir)
    if refused:
        report["durability"] = "not supported"
        print()
        print("Durability benchmarks (%s): skipped, this gophermqd does not start with "
              "persistence = \"log\":" % ", ".join(options.durability))
        print("  " + refused)
        return False
    where = describe_directory(workdir)
    report["durability"] = {"data_directories": where}
    for part in options.durability:
        if part == "modes":
            print_modes(run_modes(options, workdir, report), options, where)
        elif part == "replay":
            print_replay(run_replay(options, workdir, report), where)
        elif part == "compaction":
            print_compaction(run_compaction(options, workdir, report), options, where)
    return True


def judge(report, targets):
    durability = report.get("durability")
    if not isinstance(durability, dict):
        return
    modes = durability.get("modes")
    if modes:
        for row in modes["rows"]:
            if row["mode"] == "everysec":
                targets.judge("fsync everysec: req/s / persistence none, wrk -c%d"
                              % row["clients"], row["rps_vs_none"], 0.90,
                              lower_is_better=False)
        low, high = modes["always_scaling_clients"]
        if high != low:
            always = {row["clients"]: row for row in modes["rows"] if row["mode"] == "always"}
            targets.judge("fsync always: req/s at -c%d / at -c%d (%.0f / %.0f)"
                          % (high, low, always[high]["rps"], always[low]["rps"]),
                          modes["always_scaling"], 10.0, fmt="%.1f", lower_is_better=False,
                          note="" if (low, high) == (1, 50) else " (the goal is for -c50 / -c1)")
            targets.note("    (fsyncs per request with always: %s)" % ", ".join(
                "%.3f at %d" % (always[c]["fsyncs_per_request"], c)
                for c in modes["connections"]))
    replay = durability.get("replay")
    if replay:
        count = replay["messages"]
        scaled = count != 1000000
        targets.judge("replay (s) of %d pending %d B messages%s"
                      % (count, replay["payload"], ", goal scaled" if scaled else ""),
                      replay["replay_seconds"], 2.0 * count / 1e6, fmt="%.3f",
                      note=" (2 s per 10^6)" if scaled else "")
    compaction = durability.get("compaction")
    if compaction:
        none, compacting = compaction["rows"]
        targets.note("  %-58s %.2f  (no goal; p99 %.3f ms vs %.3f ms, compacting %.2f s of "
                     "the run)" % ("publish p99 during a compaction / without",
                                   compaction["p99_ratio"], compacting["p99_ms"],
                                   none["p99_ms"], compacting["compaction_in_run"]))
