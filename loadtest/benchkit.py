"""benchkit.py - what every GopherMQ benchmark needs (Python 3 stdlib only).

  CPUs      which CPUs wrk and the servers run on (plan_cpus, confined_to)
  /proc     CPU time, RSS and thread count of a process; machine busy time
  servers   gophermqd (started by tests/blackbox/gmqlaunch.py, the launcher
            the black-box tests use too) and the ceiling server, as Server
            objects; every process started is stopped at exit
  wrk       run_wrk() runs one Lua scenario and parses its GMQ-RESULT line;
            measure() brackets it with the server's CPU time
  report    median, median_ratio, print_table, progress

The HTTP clients (control requests, pipelined bulk loads, held fetches) are
in benchhttp.py; the scenarios in scenarios.py and delivery.py; the command
line in `run`.
"""

import os
import re
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
for _directory in (HERE, os.path.join(TOP, "tests", "blackbox")):
    if _directory not in sys.path:
        sys.path.insert(0, _directory)
import gmqlaunch  # noqa: E402
from benchhttp import BenchError, http_call, progress, START  # noqa: E402,F401

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# The daemon's configuration in every benchmark, before the scenario's and
# the command line's options: no limits (so overflow never turns a
# measurement into a stream of 429s), no expiry, and the log at "notice",
# the level of the "listening on" lines the launcher reads the ports from
# (nothing is logged per request at it).
DAEMON_OPTIONS = {
    "max_pending": 0,
    "max_pending_bytes": 0,
    "subscriber_ttl": 0,
    "log_level": "notice",
}

# Processes this run started and must stop, whatever happens (Popen objects).
started = []


# ---------------------------------------------------------------------------
# CPUs
# ---------------------------------------------------------------------------
# The CPUs wrk and the servers run on: None lets them share all (the
# default of a module other scripts import).  plan_cpus() gives wrk CPUs of
# its own, so that the client's busy thread never competes with the
# server's threads for a core; each server then sizes its thread pool (one
# per CPU it may run on) to the CPUs left.  "one-core" is the first of the
# servers' CPUs, for the figures the issue asks "through one server core".
cpus_for = {"client": None, "servers": None, "one-core": None}


def plan_cpus(options):
    """Splits this process's CPUs: the first --threads for wrk, the rest for
    the servers.  Returns a line saying what it decided."""
    allowed = sorted(os.sched_getaffinity(0))
    if not options.pin:
        return "CPUs: wrk and the servers share CPUs %s (--no-pin)" % cpu_list(allowed)
    if len(allowed) <= options.threads:
        return ("CPUs: wrk and the servers share CPUs %s (too few to give wrk %d of its own)"
                % (cpu_list(allowed), options.threads))
    cpus_for["client"] = set(allowed[:options.threads])
    cpus_for["servers"] = set(allowed[options.threads:])
    cpus_for["one-core"] = {allowed[options.threads]}
    return ("CPUs: wrk on %s, the servers on %s (each sizes its thread pool to those; "
            "--no-pin to share)" % (cpu_list(cpus_for["client"]), cpu_list(cpus_for["servers"])))


def cpu_list(cpus):
    return ",".join(str(cpu) for cpu in sorted(cpus))


def confined_to(role, open_files=None):
    """A preexec_fn that keeps the child on the CPUs of role and, when
    open_files is given, raises its RLIMIT_NOFILE to that (at most the hard
    limit); None when there is nothing to do."""
    cpus = cpus_for[role]
    if cpus is None and open_files is None:
        return None

    def preexec():
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if open_files is not None:
            raise_open_files(open_files)
    return preexec


def raise_open_files(wanted):
    """Raises this process's RLIMIT_NOFILE soft limit towards wanted;
    returns the limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class pinned_thread:
    """with pinned_thread("client"): the calling thread runs on the
    client's CPUs (a probe measured in this process, like wrk)."""

    def __init__(self, role):
        self.cpus = cpus_for[role]

    def __enter__(self):
        self.saved = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        return self

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.saved)


# ---------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------
def cpu_microseconds(pid):
    """utime + stime of every thread of pid, in microseconds."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000 // TICKS_PER_SECOND


def system_busy_microseconds():
    """CPU time all CPUs spent on anything but idling, in microseconds."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) * 1_000_000 // TICKS_PER_SECOND


def proc_status(pid, field):
    """An integer field of /proc/PID/status (kB fields in bytes)."""
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                words = line.split()
                return int(words[1]) * (1024 if words[-1] == "kB" else 1)
    raise BenchError("no %s for pid %d" % (field, pid))


def rss_bytes(pid):
    return proc_status(pid, "VmRSS")


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
class Server:
    """gophermqd (launched: a gmqlaunch.DaemonProcess) or the ceiling."""

    def __init__(self, name, process, port, launched=None):
        self.name = name
        self.process = process
        self.pid = process.pid
        self.port = port
        self.launched = launched
        self.metrics_port = launched.metrics_port if launched else None

    def cpu(self):
        return cpu_microseconds(self.pid)

    def rss(self):
        self.check_alive()
        return rss_bytes(self.pid)

    def check_alive(self):
        """Raises BenchError, with the exit status and the log, when the
        server is no longer running."""
        if self.process.poll() is not None:
            raise BenchError("%s (pid %d) is gone: exit status %s\n%s"
                             % (self.name, self.pid, self.process.returncode, self.log_tail()))

    def threads(self):
        return proc_status(self.pid, "Threads")

    def alive(self):
        return self.process.poll() is None

    def metrics(self):
        """{family name: sum of its samples} from /metrics."""
        status, data = http_call(self.metrics_port, "GET", "/metrics")
        if status != 200:
            raise BenchError("GET /metrics -> %d" % status)
        totals = {}
        for line in data.decode(errors="replace").splitlines():
            match = re.match(r"([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)", line)
            if match and not line.startswith("#"):
                totals[match.group(1)] = totals.get(match.group(1), 0) + float(match.group(2))
        return totals

    def metric(self, name):
        """The sum of the samples of one family, None when it is absent."""
        value = self.metrics().get(name)
        return None if value is None else int(value)

    def pending(self):
        """Sum of the gophermq_pending_messages gauge (None if absent)."""
        return self.metric("gophermq_pending_messages")

    def stop(self):
        if self.launched is not None:
            try:
                self.launched.stop(timeout=15, expect=None)
                if self.launched.returncode not in (0, None):
                    progress("warning: gophermqd exited with %s" % self.launched.returncode)
            except gmqlaunch.LaunchError as error:
                progress("warning: %s" % str(error).split("\n")[0])
        stop_process(self.process)

    def log_tail(self):
        return self.launched.log_tail() if self.launched else ""


def stop_process(process, grace=10):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process in started:
        started.remove(process)


def stop_everything():
    for process in list(started):
        try:
            stop_process(process, grace=5)
        except Exception:   # noqa: BLE001 - best effort at exit
            pass


def start_daemon(binary, workdir, tag, overrides=(), options=None, cpus="servers",
                 open_files=None):
    """gophermqd with DAEMON_OPTIONS, then the scenario's options, then the
    command line's overrides ((name, value) pairs), in WORKDIR/gophermqd-TAG.conf."""
    config = dict(DAEMON_OPTIONS)
    config.update(options or {})
    config.update(overrides)
    try:
        launched = gmqlaunch.launch(workdir, config, name="gophermqd-" + tag, binary=binary,
                                    preexec_fn=confined_to(cpus, open_files))
    except gmqlaunch.LaunchError as error:
        raise BenchError(str(error)) from None
    started.append(launched.process)
    return Server("gophermqd", launched.process, launched.api_port, launched)


def start_ceiling(binary, workdir, cpus="servers"):
    out_path = os.path.join(workdir, "ceiling.out")
    out = open(out_path, "wb")
    process = subprocess.Popen([binary, "-p", "0"], stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, preexec_fn=confined_to(cpus))
    out.close()
    started.append(process)
    limit = time.monotonic() + 10
    while time.monotonic() < limit:
        if process.poll() is not None:
            break
        with open(out_path) as text:
            first = text.readline()
        if first.endswith("\n") and first.strip().isdigit():
            return Server("ceiling", process, int(first))
        time.sleep(0.02)
    with open(out_path) as text:
        raise BenchError("ceiling did not start: %s" % text.read())


def find_binaries(options):
    """Sets options.daemon_binary and options.ceiling_binary (made with
    make when missing) and checks that wrk runs."""
    daemon = options.daemon_binary or gmqlaunch.default_binary(TOP)
    ceiling = options.ceiling_binary or os.path.join(HERE, "ceiling")
    missing = [target for target, path in (("src/gophermqd", daemon),
                                           ("loadtest/ceiling", ceiling))
               if not os.access(path, os.X_OK)]
    if missing and os.path.exists(os.path.join(TOP, "Makefile")):
        progress("building %s with make" % " ".join(missing))
        subprocess.run(["make", "-C", TOP] + missing, check=True, stdout=sys.stderr)
    for path in (daemon, ceiling):
        if not os.access(path, os.X_OK):
            raise BenchError("%s is missing: build it (make bench builds both)" % path)
    options.daemon_binary = os.path.abspath(daemon)
    options.ceiling_binary = os.path.abspath(ceiling)
    if subprocess.run([options.wrk, "-v"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode not in (0, 1):
        raise BenchError("wrk not found (Debian: apt-get install wrk)")


def supports_delivery(server):
    """Whether gophermqd serves issue 11's API (POST /api/publish/batch
    answers an empty batch 400 "invalid messages"; an older one 404)."""
    status, body = http_call(server.port, "POST", "/api/publish/batch", {"messages": []})
    return status == 400


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------
RESULT_LINE = re.compile(r"^GMQ-RESULT (.*)$", re.MULTILINE)


def run_wrk(options, script, server, script_args, duration, connections=None):
    command = [options.wrk, "-t", str(options.threads),
               "-c", str(connections or options.connections),
               "-d", "%ds" % duration, "--timeout", "5s",
               "-s", os.path.join(HERE, script), "http://127.0.0.1:%d/" % server.port, "--"]
    command += ["%s=%s" % item for item in script_args.items()]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=confined_to("client"))
    started.append(process)
    try:
        out, err = process.communicate(timeout=duration + 60)
    finally:
        stop_process(process)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = RESULT_LINE.search(out)
    if process.returncode != 0 or match is None:
        server.check_alive()
        raise BenchError("wrk failed (%s): %s\n%s" % (process.returncode, " ".join(command),
                                                      (out + err)[-2000:]))
    result = {}
    for word in match.group(1).split():
        key, value = word.split("=", 1)
        try:
            result[key] = float(value) if "." in value else int(value)
        except ValueError:
            result[key] = value
    result["client_cpu_s"] = ((children_after.ru_utime - children_before.ru_utime)
                              + (children_after.ru_stime - children_before.ru_stime))
    result["errors"] = (result["non2xx"] + result["connect"] + result["read"]
                        + result["write"] + result["timeout"])
    result["ok"] = result["requests"] - result["non2xx"]
    return result


def measure(options, script, server, script_args, duration, settle=None, connections=None):
    """One wrk run against server, with its CPU time bracketed."""
    busy_before = system_busy_microseconds()
    wall_before = time.monotonic()
    cpu_before = server.cpu()
    result = run_wrk(options, script, server, script_args, duration, connections)
    if settle:
        settle()
    cpu_after = server.cpu()
    busy_after = system_busy_microseconds()
    wall = time.monotonic() - wall_before
    server.check_alive()
    result["cpu_us"] = cpu_after - cpu_before
    # CPU used by neither the server nor wrk (other processes, the runner,
    # softirq work charged to no one): a disturbed run shows here.
    result["other_cores"] = max(0.0, (busy_after - busy_before - result["cpu_us"]
                                      - result["client_cpu_s"] * 1e6) / (wall * 1e6))
    result["cpu_per_request"] = (result["cpu_us"] / result["requests"]
                                 if result["requests"] else float("nan"))
    result["rss"] = server.rss()
    return result


def wait_for_quiet(server, limit=60):
    """Waits until the pending gauge stops moving (async work done)."""
    deadline = time.monotonic() + limit
    last = None
    steady = 0
    while time.monotonic() < deadline:
        value = server.pending()
        steady = steady + 1 if value == last else 0
        if steady >= 3:
            return value
        last = value
        time.sleep(0.1)
    raise BenchError("the pending gauge kept moving for %d s" % limit)


def settle_rss(server, pause=0.5):
    time.sleep(pause)
    return server.rss()


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def median_ratio(runs, base_runs, key):
    """The median over rounds of runs[i][key] / base_runs[i][key]: the two
    runs of a round are back to back, so their ratio is the figure drift
    affects least.  Rounds with a zero base are left out."""
    return median([run[key] / base[key] for run, base in zip(runs, base_runs) if base[key]])


def percentile(values, fraction):
    """The value below which fraction of the sorted values lie (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))]


def print_table(header, lines, left=1):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]

    def fmt(cells):
        return "  ".join(str(cell).ljust(width) if index < left else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths)))
    print(fmt(header))
    print("  ".join("-" * width for width in widths))
    for line in lines:
        print(fmt(line))


class Targets:
    """Lines of the Targets block: a figure, its goal, met or not."""

    def __init__(self):
        self.lines = []

    def judge(self, text, value, limit, fmt="%.2f", lower_is_better=True, note=""):
        if value != value:      # NaN: not measured
            self.lines.append("  %-58s %s  (target %s %s)  not measured%s"
                              % (text, "-", "<=" if lower_is_better else ">=", fmt % limit,
                                 note))
            return
        good = value <= limit if lower_is_better else value >= limit
        self.lines.append("  %-58s %s  (target %s %s)  %s%s"
                          % (text, fmt % value, "<=" if lower_is_better else ">=", fmt % limit,
                             "met" if good else "NOT MET", note))

    def note(self, text):
        self.lines.append(text)
