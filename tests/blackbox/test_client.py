#!/usr/bin/env python3
"""test_client.py - the command-line client gophermq(1) against a real
gophermqd, as a user runs it.

Every command (pub, sub, fetch, ack, nack, unsub, tail, stats), the global
options (--url and GOPHERMQ_URL, --metrics-url and GOPHERMQ_METRICS_URL,
--token-file and GOPHERMQ_TOKEN_FILE, --cacert, --timeout, --version,
--help) and every exit code: 0 success, 1 usage or local error, 2 refused
by the broker ("gophermq: COMMAND: STATUS MESSAGE"), 3 broker unreachable
or its answer unusable.  What the client did is checked through the API and the metrics
directly, never through the client itself alone.

Environment (set by `make check`): GOPHERMQ_CLIENT, the built client
(default src/gophermq of the source tree); when it does not exist (a build
configured with --disable-client) the file is skipped (exit 77).  GOPHERMQD,
GOPHERMQ_SRCDIR and GOPHERMQ_VALGRIND as for every black-box test;
GOPHERMQ_CLIENT_VALGRIND=1 runs the client itself under valgrind memcheck
too (not done by check-valgrind: it is slow).

The client always runs with a private HOME and XDG_CACHE_HOME and none of
the caller's GOPHERMQ_* variables, so that it never reaches a broker on the
default ports.  Timing: behaviour only, never speed; every wait is generous
and stretched under valgrind.
"""

import concurrent.futures
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, unique_subject, UUID4_RE  # noqa: E402

CLIENT = os.environ.get("GOPHERMQ_CLIENT") or os.path.join(harness.SRCDIR, "src", "gophermq")
CLIENT_VALGRIND = os.environ.get("GOPHERMQ_CLIENT_VALGRIND") == "1"
CLIENT_WRAPPER = harness.VALGRIND_COMMAND if CLIENT_VALGRIND else []
SCALE = max(harness.SCALE, 10 if CLIENT_VALGRIND else 1)

# How long a client run may take, and how long a test waits for something
# that must happen (a line from tail, a metric to change).
RUN_TIMEOUT = 30 * SCALE
WAIT_TIMEOUT = 15 * SCALE
# An ack wait no test is meant to reach.
LONG_ACK_WAIT = 3600000

# Data that a careless client would mangle on the way in or out.
UNUSUAL_DATA = [
    'say "hi"',
    "back\\slash \\n \\u0041",
    "tab\there",
    "\u00e9t\u00e9 \u00fc \u65e5\u672c\u8a9e \U0001F389",
    '{"json": [1, 2], "x": null}',
    "%s %d %n %%",
    " leading and trailing spaces ",
    "control \x01\x1f\x7f",
    "line\u2028separator",
    "{seq} {data} {subject}",
    "x" * 5000,
]

STAT_LABELS = [
    ("pending messages", r"pending[ _-]*messages"),
    ("pending bytes", r"pending[ _-]*bytes"),
    ("in flight", r"in[ _-]*flight"),
    ("subscribers", r"subscribers"),
    ("subjects", r"subjects"),
    ("groups", r"groups"),
    ("streams", r"streams"),
    ("held fetches", r"held[ _-]*fetch(?:es)?"),
]
METHODS = ["publish", "publish_async", "publish_batch", "subscribe", "unsubscribe", "fetch",
           "ack", "nack", "extend", "stream"]
METHOD_ROW_RE = re.compile(r"^\s*(%s)\b\s*[:|]?\s*(\d+)\s*[|]?\s*(\S+)"
                           % "|".join(sorted(METHODS, key=len, reverse=True)))
RATE_RE = re.compile(r"^\d+(\.\d+)?(/s)?$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# gmq()'s default daemon: the test class's.
CLASS_DAEMON = object()


def scaled(seconds):
    """seconds, stretched under valgrind."""
    return seconds * SCALE


def ms(milliseconds):
    """milliseconds to put on a command line, stretched under valgrind."""
    return int(milliseconds * SCALE)


def client_version():
    """The version configure.ac gives the package: gophermq --version says it."""
    with open(os.path.join(harness.SRCDIR, "configure.ac"), encoding="utf-8") as handle:
        match = re.search(r"AC_INIT\(\[?[^],]*\]?,\s*\[?([^],)]+)", handle.read())
    return match.group(1).strip()


def client_env(home, extra=None):
    """The client's environment: the caller's without any GOPHERMQ_*
    variable, with HOME and XDG_CACHE_HOME in home, then extra (a value
    None removes the variable)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GOPHERMQ_")}
    env["HOME"] = home
    env["XDG_CACHE_HOME"] = os.path.join(home, "cache")
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def output_lines(text):
    """The lines of text, each ended by a newline (a last line without one
    fails); only LF ends a line."""
    if not text:
        return []
    assert text.endswith("\n"), "output does not end with a newline: %r" % text[-200:]
    return text[:-1].split("\n")


class Result:
    """A finished client run."""

    def __init__(self, argv, code, out, err):
        self.argv = argv
        self.code = code
        self.out_bytes = out
        self.out = out.decode("utf-8", "surrogateescape")
        self.err = err.decode("utf-8", "replace")

    def __repr__(self):
        return "gophermq %s -> exit %s, stdout %r, stderr %r" % (
            " ".join(self.argv[1:]), self.code, self.out[:400], self.err[:400])


def run_client(argv, env, input=None, stdin=None, timeout=None):
    """Runs the client (argv[0] is CLIENT) to the end; a run that takes
    longer than timeout is killed and fails the test."""
    timeout = timeout or RUN_TIMEOUT
    if input is not None:
        stdin = None
    elif stdin is None:
        stdin = subprocess.DEVNULL
    try:
        completed = subprocess.run(CLIENT_WRAPPER + argv, input=input, stdin=stdin,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError("%s did not exit within %s s (stdout %r, stderr %r)"
                             % (" ".join(argv), timeout, error.stdout, error.stderr)) from None
    return Result(argv, completed.returncode, completed.stdout, completed.stderr)


def run_all(function, items):
    """function(item) for every item, a few at a time (each is a short
    process of its own); the results in the order of items."""
    items = list(items)
    workers = max(2, min(len(items), 2 * (os.cpu_count() or 1)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


class ClientProcess:
    """A client that keeps running (tail, stats --watch, a held fetch): its
    stdout is read line by line by a thread, its stderr collected."""

    def __init__(self, test, argv, env):
        self.argv = argv
        self.process = subprocess.Popen(CLIENT_WRAPPER + argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines = queue.Queue()
        self.all_lines = []
        self.stderr_chunks = []
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self.readers:
            reader.start()
        test.addCleanup(self.kill)

    def _read_stdout(self):
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "surrogateescape")
            self.all_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self):
        for raw in iter(self.process.stderr.readline, b""):
            self.stderr_chunks.append(raw.decode("utf-8", "replace"))

    @property
    def stderr(self):
        return "".join(self.stderr_chunks)

    def running(self):
        return self.process.poll() is None

    def next_line(self, timeout=None):
        """The next line of stdout, without its newline."""
        try:
            line = self.lines.get(timeout=timeout or WAIT_TIMEOUT)
        except queue.Empty:
            raise AssertionError("%s printed no line within %s s (stderr %r)"
                                 % (" ".join(self.argv), timeout or WAIT_TIMEOUT,
                                    self.stderr)) from None
        if line is None:
            self.lines.put(None)
            raise AssertionError("%s closed stdout (exit %s) while a line was awaited; stderr %r"
                                 % (" ".join(self.argv), self.process.poll(), self.stderr))
        if not line.endswith("\n"):
            raise AssertionError("%s: a last line without newline: %r" % (self.argv, line))
        return line[:-1]

    def read_lines(self, count, timeout=None):
        deadline = time.monotonic() + (timeout or WAIT_TIMEOUT)
        return [self.next_line(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    def quiet(self, seconds):
        """Asserts that no line comes within seconds."""
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return
        if line is None:
            self.lines.put(None)
            return
        raise AssertionError("%s printed an unexpected line: %r" % (" ".join(self.argv), line))

    def send_signal(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout=None):
        """Waits for the exit; returns the exit code (a failure when the
        client is still running after timeout)."""
        timeout = timeout or WAIT_TIMEOUT
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %s s (stderr %r)"
                                 % (" ".join(self.argv), timeout, self.stderr)) from None
        for reader in self.readers:
            reader.join(timeout=scaled(5))
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


class FakeServer:
    """An HTTP server on a free loopback port that is not a broker: every
    request gets 200 with a body that is not JSON."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b"<html>this is not a broker</html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def parse_stats(text):
    """(values, methods) of one stats table: values maps each of
    STAT_LABELS to the first number after its label on its line; methods
    maps a request method to (total, rate text) from rows
    "METHOD TOTAL RATE"."""
    values, methods = {}, {}
    for line in ANSI_RE.sub("", text).split("\n"):
        row = METHOD_ROW_RE.match(line)
        if row:
            methods[row.group(1)] = (int(row.group(2)), row.group(3))
            continue
        for name, pattern in STAT_LABELS:
            match = re.search(r"\b%s\b" % pattern, line, re.IGNORECASE)
            if match and name not in values:
                number = re.search(r"-?\d+(?:\.\d+)?", line[match.end():])
                if number:
                    values[name] = float(number.group(0))
    return values, methods


class ClientTestCase(DaemonTestCase):
    """A class daemon (CONFIG), a private HOME, and helpers to run the
    client against the daemon and to check on the daemon through its API."""

    CONFIG = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.home = tempfile.mkdtemp(prefix="gophermq-client-home-")
        cls.d = cls.start_class_daemon(cls.CONFIG)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.home, ignore_errors=True)

    # -- running the client ------------------------------------------------
    @staticmethod
    def url(d):
        return "http://%s:%d" % (d.api_host, d.api_port)

    @staticmethod
    def metrics_url(d):
        return "http://%s:%d/metrics" % (d.metrics_host, d.metrics_port)

    def argv(self, args, daemon=CLASS_DAEMON):
        """CLIENT, --url and --metrics-url of daemon (the class daemon by
        default; None: neither), then args."""
        daemon = self.d if daemon is CLASS_DAEMON else daemon
        argv = [CLIENT]
        if daemon is not None:
            argv += ["--url", self.url(daemon), "--metrics-url", self.metrics_url(daemon)]
        return argv + list(args)

    def gmq(self, *args, input=None, stdin=None, env=None, daemon=CLASS_DAEMON, timeout=None):
        """Runs gophermq with args; input (str or bytes) is its stdin."""
        if isinstance(input, str):
            input = input.encode("utf-8")
        return run_client(self.argv(args, daemon), client_env(self.home, env), input=input,
                          stdin=stdin, timeout=timeout)

    def gmq_all(self, arg_lists, **kwargs):
        """gmq(*args, **kwargs) for every args of arg_lists, run side by
        side; the results in order."""
        return run_all(lambda args: self.gmq(*args, **kwargs), arg_lists)

    def spawn(self, *args, env=None, daemon=CLASS_DAEMON):
        """Starts gophermq with args, to be read while it runs."""
        return ClientProcess(self, self.argv(args, daemon), client_env(self.home, env))

    # -- checking the result ------------------------------------------------
    def assertSuccess(self, result, stdout=None):
        self.assertEqual((result.code, result.err), (0, ""), result)
        if stdout is not None:
            self.assertEqual(result.out, stdout, result)

    def assertRefused(self, result, command, status, message):
        """Exit 2 and exactly one stderr line "gophermq: COMMAND: STATUS MESSAGE"."""
        self.assertEqual(result.code, 2, result)
        self.assertEqual(result.out, "", result)
        self.assertEqual(result.err, "gophermq: %s: %d %s\n" % (command, status, message), result)

    def assertUsageError(self, result, mention=None):
        """Exit 1, nothing on stdout, a one-line message (and at most a
        one-line hint) on stderr."""
        self.assertEqual(result.code, 1, result)
        self.assertEqual(result.out, "", result)
        lines = output_lines(result.err)
        self.assertTrue(1 <= len(lines) <= 2 and all(line.strip() for line in lines),
                        "one line and a hint expected: %r" % (result,))
        if mention is not None:
            self.assertIn(mention, lines[0], "the message names what is wrong: %r" % (result,))

    def assertUsageErrors(self, arg_lists, mention=None, **kwargs):
        """assertUsageError for each args of arg_lists, run side by side."""
        for args, result in zip(arg_lists, self.gmq_all(arg_lists, **kwargs)):
            with self.subTest(args=args):
                self.assertUsageError(result, mention=mention)

    def assertUnreachable(self, result, port):
        """Exit 3 and one stderr line "gophermq: ..." naming the address."""
        self.assertEqual(result.code, 3, result)
        self.assertEqual(result.out, "", result)
        lines = output_lines(result.err)
        self.assertEqual(len(lines), 1, "one line on stderr: %r" % (result,))
        self.assertTrue(lines[0].startswith("gophermq: "), result)
        self.assertIn(":%d" % port, lines[0], "the line names the address: %r" % (result,))

    # -- the daemon, directly --------------------------------------------
    def api(self, path, body, d=None, headers=None, timeout=None):
        status, _, reply = (d or self.d).post_json(path, body, headers=headers, timeout=timeout)
        return status, reply

    def subscribe(self, subject, d=None, headers=None, **options):
        status, reply = self.api("/api/subscribe", dict(options, subject=subject), d, headers)
        self.assertEqual(status, 200, "subscribe %r: %r" % (subject, reply))
        return reply["id"]

    def publish(self, subject, data, d=None, headers=None, **fields):
        status, reply = self.api("/api/publish", dict(fields, subject=subject, data=data), d,
                                 headers)
        self.assertEqual((status, reply), (200, {"status": "ok"}), "publish to %r" % subject)

    def fetch_reply(self, subject, subscriber, d=None, headers=None, timeout=None, **fields):
        status, reply = self.api("/api/fetch", dict(fields, subject=subject, id=subscriber), d,
                                 headers, timeout)
        self.assertEqual(status, 200, "fetch %r: %r" % (subject, reply))
        return reply

    def fetch_data(self, subject, subscriber, d=None, **fields):
        """The data of the pending messages (removed)."""
        reply = self.fetch_reply(subject, subscriber, d, meta=True, **fields)
        return [message["data"] for message in reply["messages"]]

    def peek(self, subject, subscriber, d=None):
        """The pending messages, meta form, left where they are."""
        return self.fetch_reply(subject, subscriber, d, meta=True, peek=True)["messages"]

    def metric(self, name, d=None, **labels):
        value = (d or self.d).metrics().value(name, **labels)
        return 0 if value is None else value

    def wait_until(self, predicate, what, process=None, timeout=None):
        """Polls predicate() until it is true; fails when process (a
        ClientProcess) exits first or after timeout."""
        deadline = time.monotonic() + (timeout or WAIT_TIMEOUT)
        while not predicate():
            if process is not None and not process.running():
                raise AssertionError("%s exited with %s while waiting for %s; stderr %r"
                                     % (" ".join(process.argv), process.process.poll(), what,
                                        process.stderr))
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s" % what)
            time.sleep(0.02)

    def wait_metric(self, name, predicate, what, process=None, d=None):
        self.wait_until(lambda: predicate(self.metric(name, d)), what, process)

    def assert_no_subscriber(self, subject, d=None, headers=None):
        status, reply = self.api("/api/publish", {"subject": subject, "data": "probe"}, d, headers)
        self.assertEqual((status, reply), (404, {"message": "subscriber not found"}),
                         "%s still has a subscriber" % subject)


# ---------------------------------------------------------------------------
# The command line itself: --version, --help, usage errors (exit 1)
# ---------------------------------------------------------------------------

class CommandLineTest(ClientTestCase):
    def test_version_prints_the_package_version(self):
        for option in ("--version", "-V"):
            with self.subTest(option=option):
                result = self.gmq(option, daemon=None)
                self.assertSuccess(result, "gophermq %s\n" % client_version())

    def test_help_lists_every_command_on_stdout(self):
        for option in ("--help", "-h"):
            with self.subTest(option=option):
                result = self.gmq(option, daemon=None)
                self.assertSuccess(result)
                for word in ("pub", "sub", "fetch", "ack", "nack", "unsub", "tail", "stats",
                             "--url", "--token-file", "--metrics-url"):
                    self.assertRegex(result.out, r"(?<![\w-])%s\b" % re.escape(word),
                                     "--help mentions %s" % word)

    def test_unknown_command_is_exit_1(self):
        self.assertUsageError(self.gmq("frobnicate", "x"), mention="frobnicate")

    def test_no_command_is_exit_1(self):
        self.assertUsageError(self.gmq())

    def test_unknown_options_are_exit_1(self):
        subject = unique_subject("cli")
        subscriber = self.subscribe(subject)
        arg_lists = [["--frobnicate", "pub", subject, "x"], ["pub", subject, "x", "--frobnicate"],
                     ["fetch", subject, subscriber, "--frobnicate"], ["stats", "--frobnicate"]]
        self.assertUsageErrors(arg_lists, mention="frobnicate")
        self.assertEqual(self.fetch_data(subject, subscriber), [], "nothing was published")

    def test_missing_arguments_are_exit_1(self):
        subject = unique_subject("cli")
        subscriber = self.subscribe(subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        arg_lists = [["pub"], ["sub"], ["fetch"], ["fetch", subject], ["ack", subject, subscriber],
                     ["nack", subject, subscriber], ["unsub", subject], ["tail"],
                     ["sub", subject, "--group"], ["fetch", subject, subscriber, "--max"]]
        self.assertUsageErrors(arg_lists)
        with self.subTest(args=["--url"]):
            self.assertUsageError(self.gmq("pub", subject, "x", "--url", daemon=None))
        self.assertEqual(self.fetch_data(subject, subscriber), [], "nothing was published")
        self.assertEqual(self.gmq("fetch", subject, subscriber).code, 0, "still subscribed")

    def test_bad_numbers_are_exit_1(self):
        subject = unique_subject("cli")
        subscriber = self.subscribe(subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        arg_lists = [["pub", subject, "x", "--ttl", "abc"], ["pub", subject, "x", "--ttl", "10x"],
                     ["pub", "--batch", subject, "--batch-size", "many"],
                     ["sub", subject, "--ack", "--ack-wait", "soon"],
                     ["sub", subject, "--max-deliver", "1.5"],
                     ["fetch", subject, subscriber, "--max", "abc"],
                     ["fetch", subject, subscriber, "--wait", "later"],
                     ["ack", subject, subscriber, "one"], ["nack", subject, subscriber, "1x"],
                     ["nack", subject, subscriber, "1", "--delay", "abc"],
                     ["tail", subject, "--count", "x"], ["--timeout", "abc", "pub", subject, "x"],
                     ["stats", "--watch=abc"]]
        self.assertUsageErrors(arg_lists, input="")
        self.assertEqual(self.fetch_data(subject, subscriber), [], "nothing was published")

    def test_unreadable_token_file_is_exit_1(self):
        subject = unique_subject("cli")
        subscriber = self.subscribe(subject)
        missing = os.path.join(self.home, "no-such-token-file")
        runs = [(["--token-file", missing, "pub", subject, "x"], None),
                (["-T", missing, "pub", subject, "x"], None),
                (["pub", subject, "x"], {"GOPHERMQ_TOKEN_FILE": missing}),
                (["--token-file", self.home, "pub", subject, "x"], None)]
        results = run_all(lambda run: self.gmq(*run[0], env=run[1]), runs)
        for run, result in zip(runs, results):
            with self.subTest(run=run):
                self.assertUsageError(result)
        self.assertEqual(self.fetch_data(subject, subscriber), [], "nothing was published")

    def test_options_may_follow_the_arguments_and_double_dash_ends_them(self):
        subject = unique_subject("cli")
        subscriber = self.subscribe(subject)
        # Command options before the arguments.
        self.assertSuccess(self.gmq("pub", "--ttl", "600000", subject, "one"))
        self.assertSuccess(self.gmq("pub", subject, "two", "--ttl", "600000"))
        self.assertSuccess(self.gmq("fetch", "--max", "1", subject, subscriber), "one\n")
        # Global options after the command and its arguments.
        result = run_client([CLIENT, "fetch", subject, subscriber, "--url", self.url(self.d)],
                            client_env(self.home))
        self.assertSuccess(result, "two\n")
        # "--" ends the options: what follows is data, even with a dash.
        self.assertSuccess(self.gmq("pub", subject, "--", "--not-an-option"))
        self.assertSuccess(self.gmq("pub", "--", subject, "-x"))
        self.assertEqual(self.fetch_data(subject, subscriber), ["--not-an-option", "-x"])


# ---------------------------------------------------------------------------
# pub
# ---------------------------------------------------------------------------

class PubTest(ClientTestCase):
    # Small enough limits that a batch can be refused and that the client's
    # ~1 MiB request size matters.
    CONFIG = {"max_message_size": 400000, "max_batch_bytes": 2 * 1024 * 1024}

    def setUp(self):
        self.subject = unique_subject("pub")
        self.subscriber = self.subscribe(self.subject)

    def test_pub_data_argument_prints_nothing(self):
        result = self.gmq("pub", self.subject, "hello world", input="ignored stdin\n")
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), ["hello world"])

    def test_pub_empty_data_argument_is_an_empty_message_not_stdin(self):
        self.assertSuccess(self.gmq("pub", self.subject, "", input="from stdin\n"), "")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [""])

    def test_pub_reads_stdin_without_data_or_with_dash(self):
        cases = [((), "from stdin\n", "from stdin"),
                 (("-",), "dash\n", "dash"),
                 ((), "no newline at the end", "no newline at the end"),
                 ((), "two\nlines\n", "two\nlines"),
                 (("-",), "only one newline is removed\n\n", "only one newline is removed\n"),
                 ((), "", ""),
                 ((), "\n", "")]
        for args, stdin, expected in cases:
            with self.subTest(args=args, stdin=stdin):
                self.assertSuccess(self.gmq("pub", self.subject, *args, input=stdin), "")
                self.assertEqual(self.fetch_data(self.subject, self.subscriber), [expected])

    def test_pub_reads_large_stdin_completely(self):
        data = "".join("%06d %s\n" % (n, "z" * 90) for n in range(3000))    # ~290 KB
        self.assertSuccess(self.gmq("pub", self.subject, input=data + "\n"))
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [data])

    def test_pub_stdin_error_is_exit_1(self):
        directory = os.open("/", os.O_RDONLY)     # read() gives EISDIR
        try:
            result = self.gmq("pub", self.subject, stdin=directory)
        finally:
            os.close(directory)
        self.assertUsageError(result)
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [], "nothing published")

    def test_unusual_data_round_trips_byte_for_byte(self):
        for data in UNUSUAL_DATA:
            self.assertSuccess(self.gmq("pub", self.subject, data), "")
        self.assertSuccess(self.gmq("pub", self.subject, input="multi\nline\r\ndata\n"))
        expected = UNUSUAL_DATA + ["multi\nline\r\ndata"]
        # What the broker stored...
        self.assertEqual([m["data"] for m in self.peek(self.subject, self.subscriber)], expected)
        # ... and what fetch --json prints.
        result = self.gmq("fetch", self.subject, self.subscriber, "--json")
        self.assertSuccess(result)
        self.assertEqual([json.loads(line)["data"] for line in output_lines(result.out)], expected)

    def test_pub_ttl_expires_the_message(self):
        expired_before = self.metric("gophermq_messages_ttl_expired_total")
        self.assertSuccess(self.gmq("pub", self.subject, "short-lived", "--ttl", "200"), "")
        self.assertSuccess(self.gmq("pub", self.subject, "long-lived", "--ttl", "3600000"), "")
        self.assertSuccess(self.gmq("pub", self.subject, "no ttl"), "")
        self.wait_metric("gophermq_messages_ttl_expired_total",
                         lambda value: value >= expired_before + 1, "the message to expire")
        result = self.gmq("fetch", self.subject, self.subscriber)
        self.assertSuccess(result, "long-lived\nno ttl\n")
        self.assertEqual(self.metric("gophermq_messages_ttl_expired_total"), expired_before + 1)

    def test_pub_batch_ttl_applies_to_every_message(self):
        expired_before = self.metric("gophermq_messages_ttl_expired_total")
        self.assertSuccess(self.gmq("pub", "--batch", "--ttl", "200", self.subject,
                                    input="b1\nb2\n"), "")
        self.wait_metric("gophermq_messages_ttl_expired_total",
                         lambda value: value >= expired_before + 2, "both messages to expire")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [])

    def test_pub_to_a_subject_without_subscriber_is_404(self):
        self.assertRefused(self.gmq("pub", unique_subject("nobody"), "x"),
                           "pub", 404, "subscriber not found")

    def test_pub_to_an_invalid_subject_is_400(self):
        subjects = ["a..b", "orders.*", "orders.>", "has space"]
        for subject, result in zip(subjects, self.gmq_all([["pub", s, "x"] for s in subjects])):
            with self.subTest(subject=subject):
                self.assertRefused(result, "pub", 400, "invalid subject")

    def test_pub_too_large_is_413(self):
        self.assertRefused(self.gmq("pub", self.subject, input="y" * 400001),
                           "pub", 413, "message too large")

    # -- --batch ----------------------------------------------------------
    def batches(self):
        return self.metric("gophermq_batch_publishes_total")

    def test_batch_one_message_per_line_in_order(self):
        before = self.batches()
        result = self.gmq("pub", "--batch", self.subject, input="one\ntwo\n\nfour\n   \nlast")
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber),
                         ["one", "two", "", "four", "   ", "last"])
        self.assertEqual(self.batches(), before + 1, "one batch request")

    def test_batch_keeps_unusual_data(self):
        lines = [data for data in UNUSUAL_DATA if "\u2028" not in data]
        result = self.gmq("pub", self.subject, "--batch", input="\n".join(lines) + "\n")
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), lines)

    def test_batch_size_splits_into_several_requests(self):
        before = self.batches()
        messages_before = self.metric("gophermq_batch_messages_sum")
        lines = ["m%d" % n for n in range(7)]
        result = self.gmq("pub", "--batch", "--batch-size", "3", self.subject,
                          input="\n".join(lines) + "\n")
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), lines)
        self.assertEqual(self.batches(), before + 3, "7 messages by 3 are 3 requests")
        self.assertEqual(self.metric("gophermq_batch_messages_sum"), messages_before + 7)

    def test_batch_of_1200_lines_uses_requests_of_at_most_500(self):
        before = self.batches()
        lines = ["line-%04d" % n for n in range(1200)]
        self.assertSuccess(self.gmq("pub", "--batch", self.subject, input="\n".join(lines) + "\n"))
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), lines)
        self.assertGreaterEqual(self.batches(), before + 3, "requests of at most 500 messages")

    def test_batch_splits_by_size_too(self):
        # 8 lines of 300 KB: one request would pass max_batch_bytes (2 MiB);
        # requests of about 1 MiB fit.
        before = self.batches()
        lines = ["%d%s" % (n, chr(ord("a") + n) * 300000) for n in range(8)]
        self.assertSuccess(self.gmq("pub", "--batch", self.subject, input="\n".join(lines) + "\n"))
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), lines)
        self.assertGreaterEqual(self.batches(), before + 2, "requests of about 1 MiB")

    def assert_batch_refused(self, result, line, published, status, message):
        self.assertEqual(result.code, 2, result)
        self.assertEqual(result.out, "", result)
        lines = output_lines(result.err)
        self.assertEqual(len(lines), 1, "one line on stderr: %r" % (result,))
        self.assertTrue(lines[0].startswith("gophermq: pub: "), result)
        self.assertIn("%d %s" % (status, message), lines[0], result)
        self.assertRegex(lines[0], r"\b%d\b" % line,
                         "names the refused line %d: %r" % (line, result))
        self.assertRegex(lines[0], r"\b%d\b" % published,
                         "says %d lines were published: %r" % (published, result))

    def test_refused_batch_says_which_line_and_how_many_were_published(self):
        stdin = "a\nb\n%s\nd\n" % ("y" * 400001)
        # Batches of 2: "a" and "b" go through, the batch with line 3 is refused.
        result = self.gmq("pub", "--batch", "--batch-size", "2", self.subject, input=stdin)
        self.assert_batch_refused(result, line=3, published=2, status=413,
                                  message="message too large")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), ["a", "b"])
        # One batch: nothing is published.
        result = self.gmq("pub", "--batch", self.subject, input=stdin)
        self.assert_batch_refused(result, line=3, published=0, status=413,
                                  message="message too large")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [])

    def test_batch_to_a_subject_without_subscriber_is_refused(self):
        result = self.gmq("pub", "--batch", unique_subject("nobody"), input="x\ny\n")
        self.assert_batch_refused(result, line=1, published=0, status=404,
                                  message="subscriber not found")


class BatchDefaultsTest(ClientTestCase):
    """--batch against a broker with the default limits (max_message_size
    1 MiB, max_batch_bytes 8 MiB)."""

    def test_batch_requests_stay_about_1_mib_after_json_escaping(self):
        # Each line is under 1 MiB and a single publish takes it; JSON
        # writes each of its bytes as \u0001 (6 bytes): the two lines in one
        # request would be 9 MB, past max_batch_bytes.  Requests of about
        # 1 MiB go through.
        subject = unique_subject("batch")
        subscriber = self.subscribe(subject)
        lines = ["%d%s" % (n, "\x01" * 750000) for n in range(2)]
        result = self.gmq("pub", "--batch", subject, input="\n".join(lines) + "\n")
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(subject, subscriber), lines)


# ---------------------------------------------------------------------------
# sub
# ---------------------------------------------------------------------------

class SubTest(ClientTestCase):
    def sub(self, *args):
        """Runs sub; returns the id it printed (checked)."""
        result = self.gmq("sub", *args)
        self.assertSuccess(result)
        self.assertRegex(result.out, r"^[0-9a-f-]{36}\n\Z", result)
        subscriber = result.out[:-1]
        self.assertRegex(subscriber, UUID4_RE)
        return subscriber

    def test_sub_prints_the_id_of_a_plain_subscription(self):
        subject = unique_subject("sub")
        subscriber = self.sub(subject)
        self.publish(subject, "hello")
        reply = self.fetch_reply(subject, subscriber)
        self.assertEqual(reply, {"subject": subject, "id": subscriber, "data": ["hello"]},
                         "a plain subscription: the plain form")

    def test_sub_wildcard(self):
        prefix = unique_subject("sub")
        subscriber = self.sub(prefix + ".*")
        self.publish(prefix + ".eu", "hello")
        self.assertEqual(self.fetch_reply(prefix + ".*", subscriber, meta=True)["messages"][0]
                         ["subject"], prefix + ".eu")

    def test_sub_group_members_share_the_messages(self):
        subject = unique_subject("sub")
        groups_before = self.metric("gophermq_groups")
        first = self.sub(subject, "--group", "workers")
        second = self.sub("--group", "workers", subject)
        self.assertNotEqual(first, second)
        self.assertEqual(self.metric("gophermq_groups"), groups_before + 1)
        for n in range(4):
            self.publish(subject, "job %d" % n)
        received = self.fetch_data(subject, first) + self.fetch_data(subject, second)
        self.assertEqual(sorted(received), ["job %d" % n for n in range(4)],
                         "each message to one member")

    def test_sub_group_with_other_options_is_409(self):
        subject = unique_subject("sub")
        self.sub(subject, "--group", "g1")
        self.assertRefused(self.gmq("sub", subject, "--group", "g1", "--ack"),
                           "sub", 409, "group options differ")

    def test_sub_ack_with_ack_wait_redelivers(self):
        subject = unique_subject("sub")
        inflight_before = self.metric("gophermq_inflight_messages")
        subscriber = self.sub(subject, "--ack", "--ack-wait", "300")
        self.publish(subject, "work")
        first = self.fetch_reply(subject, subscriber)["messages"]
        self.assertEqual([(m["data"], m["attempt"]) for m in first], [("work", 1)],
                         "an ack subscription: the meta form")
        self.assertEqual(self.metric("gophermq_inflight_messages"), inflight_before + 1)
        # Not acknowledged: back after 300 ms (the default would be 30 s).
        again = self.fetch_reply(subject, subscriber, wait_ms=ms(10000), timeout=scaled(20))
        self.assertEqual([(m["seq"], m["data"], m["attempt"]) for m in again["messages"]],
                         [(first[0]["seq"], "work", 2)])
        self.api("/api/ack", {"subject": subject, "id": subscriber, "seqs": [first[0]["seq"]]})

    def test_sub_max_deliver_and_dead_letter(self):
        subject = unique_subject("sub")
        dead = subject + ".dead"
        dead_subscriber = self.subscribe(dead)
        subscriber = self.sub(subject, "--ack", "--ack-wait", str(LONG_ACK_WAIT),
                              "--max-deliver", "2", "--dead-letter", dead)
        self.publish(subject, "poison")
        for attempt in (1, 2):
            [message] = self.fetch_reply(subject, subscriber)["messages"]
            self.assertEqual((message["data"], message["attempt"]), ("poison", attempt))
            status, reply = self.api("/api/nack", {"subject": subject, "id": subscriber,
                                                   "seqs": [message["seq"]]})
            self.assertEqual((status, reply), (200, {"status": "ok", "count": 1}))
        self.assertEqual(self.fetch_reply(subject, subscriber)["messages"], [],
                         "removed after 2 deliveries")
        self.assertEqual(self.fetch_data(dead, dead_subscriber), ["poison"],
                         "published to the dead-letter subject")

    def test_sub_invalid_subject_is_400(self):
        self.assertRefused(self.gmq("sub", "a..b"), "sub", 400, "invalid subject")


# ---------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------

class FetchTest(ClientTestCase):
    def setUp(self):
        self.subject = unique_subject("fetch")
        self.subscriber = self.subscribe(self.subject)

    def publish_all(self, values):
        with self.d.client() as client:
            for value in values:
                status, _, reply = self.d.post_json("/api/publish",
                                                    {"subject": self.subject, "data": value},
                                                    client=client)
                self.assertEqual(status, 200, reply)
        return [m["seq"] for m in self.peek(self.subject, self.subscriber)]

    def test_fetch_prints_the_data_oldest_first(self):
        self.publish_all(["m1", "m2 with spaces", "m3"])
        result = self.gmq("fetch", self.subject, self.subscriber)
        self.assertSuccess(result, "m1\nm2 with spaces\nm3\n")
        self.assertEqual(self.fetch_data(self.subject, self.subscriber), [], "consumed")

    def test_fetch_with_nothing_pending_prints_nothing(self):
        self.assertSuccess(self.gmq("fetch", self.subject, self.subscriber), "")

    def test_fetch_json_prints_one_object_a_line(self):
        seqs = self.publish_all(["first", 'second "quoted"', ""])
        result = self.gmq("fetch", self.subject, self.subscriber, "--json")
        self.assertSuccess(result)
        objects = [json.loads(line, object_pairs_hook=list) for line in output_lines(result.out)]
        for pairs in objects:
            self.assertEqual([name for name, _ in pairs], ["seq", "subject", "attempt", "data"])
        self.assertEqual([dict(pairs) for pairs in objects],
                         [{"seq": seq, "subject": self.subject, "attempt": 1, "data": data}
                          for seq, data in zip(seqs, ["first", 'second "quoted"', ""])])

    def test_fetch_json_keeps_nul_and_control_characters(self):
        values = ["nul \u0000 inside", "newline\nand\rreturn", "\u0007bell", "del \x7f"]
        self.publish_all(values)
        result = self.gmq("fetch", self.subject, self.subscriber, "--json")
        self.assertSuccess(result)
        self.assertEqual([json.loads(line)["data"] for line in output_lines(result.out)], values)

    def test_fetch_format(self):
        seqs = self.publish_all(["alpha", "{seq}{data}"])
        result = self.gmq("fetch", self.subject, self.subscriber,
                          "--format", "{seq} {subject} {attempt} {data}")
        self.assertSuccess(result, "%d %s 1 alpha\n%d %s 1 {seq}{data}\n"
                           % (seqs[0], self.subject, seqs[1], self.subject))

    def test_fetch_format_repeats_and_literal_text(self):
        self.publish_all(["x"])
        result = self.gmq("fetch", "--format", "<{data}|{data}> tail", self.subject,
                          self.subscriber)
        self.assertSuccess(result, "<x|x> tail\n")

    def test_fetch_wildcard_subscription_shows_the_published_subject(self):
        prefix = unique_subject("fetch")
        subscriber = self.subscribe(prefix + ".>")
        self.publish(prefix + ".eu.paris", "bonjour")
        result = self.gmq("fetch", prefix + ".>", subscriber, "--format", "{subject}: {data}")
        self.assertSuccess(result, "%s.eu.paris: bonjour\n" % prefix)

    def test_fetch_max(self):
        self.publish_all(["a", "b", "c"])
        self.assertSuccess(self.gmq("fetch", self.subject, self.subscriber, "--max", "2"), "a\nb\n")
        self.assertSuccess(self.gmq("fetch", self.subject, self.subscriber, "--max", "2"), "c\n")

    def test_fetch_wait_is_answered_by_a_publish(self):
        parked_before = self.metric("gophermq_parked_fetches")
        fetch = self.spawn("fetch", self.subject, self.subscriber, "--wait", str(ms(20000)))
        self.wait_metric("gophermq_parked_fetches", lambda value: value >= parked_before + 1,
                         "the fetch to be held", fetch)
        publisher = threading.Thread(target=self.publish, args=(self.subject, "late"))
        publisher.start()
        publisher.join()
        self.assertEqual(fetch.next_line(), "late")
        self.assertEqual(fetch.wait(), 0, fetch.stderr)
        self.assertEqual(fetch.stderr, "")

    def test_fetch_wait_with_nothing_coming_prints_nothing(self):
        self.assertSuccess(self.gmq("fetch", self.subject, self.subscriber, "--wait", "200"), "")

    def test_fetch_unknown_id_is_404_bad_id(self):
        other = "00000000-0000-4000-8000-000000000000"
        self.assertRefused(self.gmq("fetch", self.subject, other), "fetch", 404, "bad id")

    def test_fetch_invalid_subject_is_400(self):
        self.assertRefused(self.gmq("fetch", "a..b", self.subscriber),
                           "fetch", 400, "invalid subject")


# ---------------------------------------------------------------------------
# ack, nack, unsub
# ---------------------------------------------------------------------------

class AckTest(ClientTestCase):
    def setUp(self):
        self.subject = unique_subject("ack")
        self.subscriber = self.subscribe(self.subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)

    def fetch_json(self, *options):
        result = self.gmq("fetch", self.subject, self.subscriber, "--json", *options)
        self.assertSuccess(result)
        return [json.loads(line) for line in output_lines(result.out)]

    def test_ack_prints_the_count(self):
        for value in ("a", "b", "c"):
            self.publish(self.subject, value)
        messages = self.fetch_json()
        self.assertEqual([(m["data"], m["attempt"]) for m in messages],
                         [("a", 1), ("b", 1), ("c", 1)])
        seqs = [m["seq"] for m in messages]
        acked_before = self.metric("gophermq_acked_total")
        self.assertSuccess(self.gmq("ack", self.subject, self.subscriber, str(seqs[0]),
                                    str(seqs[1])), "2\n")
        self.assertEqual(self.metric("gophermq_acked_total"), acked_before + 2)
        self.assertSuccess(self.gmq("ack", self.subject, self.subscriber, str(seqs[0]),
                                    str(seqs[2])), "1\n")
        self.assertSuccess(self.gmq("ack", self.subject, self.subscriber, str(seqs[2])), "0\n")

    def test_nack_brings_the_message_back_with_attempt_2(self):
        self.publish(self.subject, "retry me")
        [message] = self.fetch_json()
        self.assertSuccess(self.gmq("nack", self.subject, self.subscriber, str(message["seq"])),
                           "1\n")
        [again] = self.fetch_json()
        self.assertEqual((again["seq"], again["data"], again["attempt"]),
                         (message["seq"], "retry me", 2))
        self.assertSuccess(self.gmq("nack", self.subject, self.subscriber, "--delay", str(ms(500)),
                                    str(message["seq"])), "1\n")
        self.assertEqual(self.fetch_json(), [], "not before the delay")
        [third] = self.fetch_json("--wait", str(ms(10000)))
        self.assertEqual((third["seq"], third["attempt"]), (message["seq"], 3))
        self.assertSuccess(self.gmq("ack", self.subject, self.subscriber, str(message["seq"])),
                           "1\n")

    def test_ack_on_a_plain_subscription_is_409(self):
        subject = unique_subject("ack")
        subscriber = self.subscribe(subject)
        self.assertRefused(self.gmq("ack", subject, subscriber, "1"),
                           "ack", 409, "not an ack subscription")
        self.assertRefused(self.gmq("nack", subject, subscriber, "1"),
                           "nack", 409, "not an ack subscription")

    def test_ack_and_nack_unknown_id_is_404(self):
        other = "00000000-0000-4000-8000-000000000000"
        self.assertRefused(self.gmq("ack", self.subject, other, "1"), "ack", 404, "bad id")
        self.assertRefused(self.gmq("nack", self.subject, other, "1", "--delay", "5"),
                           "nack", 404, "bad id")

    def test_unsub_removes_the_subscriber(self):
        self.assertSuccess(self.gmq("unsub", self.subject, self.subscriber), "")
        status, reply = self.api("/api/fetch", {"subject": self.subject, "id": self.subscriber})
        self.assertEqual((status, reply), (404, {"message": "bad id"}))
        self.assert_no_subscriber(self.subject)
        self.assertRefused(self.gmq("unsub", self.subject, self.subscriber),
                           "unsub", 404, "bad id")
        self.assertRefused(self.gmq("fetch", self.subject, self.subscriber),
                           "fetch", 404, "bad id")


# ---------------------------------------------------------------------------
# tail
# ---------------------------------------------------------------------------

class TailTest(ClientTestCase):
    def start_tail(self, subject, *options, members=1, stream=True, env=None):
        """Starts tail on subject and waits until it has subscribed (and
        opened its stream, unless --poll)."""
        subscribers = self.metric("gophermq_subscribers")
        streams = self.metric("gophermq_streams")
        tail = self.spawn("tail", subject, *options, env=env)
        self.wait_metric("gophermq_subscribers", lambda value: value >= subscribers + members,
                         "tail to subscribe", tail)
        if stream:
            self.wait_metric("gophermq_streams", lambda value: value >= streams + members,
                             "tail to open its stream", tail)
        return tail

    def stop_tail(self, tail, signum=signal.SIGINT):
        tail.send_signal(signum)
        self.assertEqual(tail.wait(), 0, "tail exits 0 on signal %d; stderr %r"
                         % (signum, tail.stderr))

    def publish_all(self, subject, values):
        with self.d.client() as client:
            for value in values:
                status, _, reply = self.d.post_json("/api/publish",
                                                    {"subject": subject, "data": value},
                                                    client=client)
                self.assertEqual(status, 200, reply)

    def test_tail_prints_messages_in_order_and_ends_on_sigint(self):
        subject = unique_subject("tail")
        subscribers = self.metric("gophermq_subscribers")
        tail = self.start_tail(subject)
        values = ["message %d" % n for n in range(20)]
        self.publish_all(subject, values)
        self.assertEqual(tail.read_lines(20), values)
        self.publish(subject, "one more")
        self.assertEqual(tail.next_line(), "one more")
        self.stop_tail(tail, signal.SIGINT)
        self.assertEqual(tail.stderr, "")
        self.assertEqual(self.metric("gophermq_subscribers"), subscribers, "unsubscribed")
        self.assert_no_subscriber(subject)

    def test_tail_ends_on_sigterm_and_unsubscribes(self):
        subject = unique_subject("tail")
        subscribers = self.metric("gophermq_subscribers")
        tail = self.start_tail(subject, "--json")
        self.publish(subject, "x")
        self.assertEqual(json.loads(tail.next_line())["data"], "x")
        self.stop_tail(tail, signal.SIGTERM)
        self.assertEqual(self.metric("gophermq_subscribers"), subscribers, "unsubscribed")
        self.assert_no_subscriber(subject)

    def test_tail_json_and_format(self):
        subject = unique_subject("tail")
        json_tail = self.start_tail(subject, "--json")
        format_tail = self.start_tail(subject, "--format", "{seq}|{subject}|{attempt}|{data}")
        values = ["plain", 'quote " back\\slash', "\u00e9t\u00e9 \U0001F389", "{data}"]
        self.publish_all(subject, values)
        messages = [json.loads(line, object_pairs_hook=list) for line in json_tail.read_lines(4)]
        for pairs in messages:
            self.assertEqual([name for name, _ in pairs], ["seq", "subject", "attempt", "data"])
        messages = [dict(pairs) for pairs in messages]
        self.assertEqual([(m["subject"], m["attempt"], m["data"]) for m in messages],
                         [(subject, 1, value) for value in values])
        self.assertEqual(format_tail.read_lines(4),
                         ["%d|%s|1|%s" % (m["seq"], subject, m["data"]) for m in messages])
        self.stop_tail(json_tail)
        self.stop_tail(format_tail)

    def test_tail_count_exits_after_n_messages(self):
        subject = unique_subject("tail")
        subscribers = self.metric("gophermq_subscribers")
        tail = self.start_tail(subject, "--count", "3")
        self.publish_all(subject, ["1", "2", "3"])
        self.assertEqual(tail.read_lines(3), ["1", "2", "3"])
        self.assertEqual(tail.wait(), 0, tail.stderr)
        self.assertEqual(tail.all_lines, ["1\n", "2\n", "3\n"])
        self.assertEqual(tail.stderr, "")
        self.assertEqual(self.metric("gophermq_subscribers"), subscribers, "unsubscribed")
        self.assert_no_subscriber(subject)

    def test_tail_count_short_option(self):
        subject = unique_subject("tail")
        tail = self.start_tail(subject, "-C", "1")
        self.publish(subject, "only")
        self.assertEqual(tail.next_line(), "only")
        self.assertEqual(tail.wait(), 0, tail.stderr)

    def test_tail_ack_acknowledges_what_it_printed(self):
        subject = unique_subject("tail")
        acked = self.metric("gophermq_acked_total")
        redelivered = self.metric("gophermq_redelivered_total")
        inflight = self.metric("gophermq_inflight_messages")
        tail = self.start_tail(subject, "--ack", "--ack-wait", "200", "--json")
        self.publish_all(subject, ["a", "b", "c"])
        self.assertEqual([(m["data"], m["attempt"]) for m in map(json.loads, tail.read_lines(3))],
                         [("a", 1), ("b", 1), ("c", 1)])
        self.wait_metric("gophermq_acked_total", lambda value: value >= acked + 3,
                         "tail to ack the 3 messages", tail)
        self.assertEqual(self.metric("gophermq_inflight_messages"), inflight)
        # Well past the ack wait: nothing comes again.
        tail.quiet(0.6)
        self.assertEqual(self.metric("gophermq_redelivered_total"), redelivered)
        self.stop_tail(tail)

    def test_tail_without_ack_makes_a_plain_subscription(self):
        subject = unique_subject("tail")
        acked = self.metric("gophermq_acked_total")
        inflight = self.metric("gophermq_inflight_messages")
        tail = self.start_tail(subject)
        self.publish(subject, "x")
        self.assertEqual(tail.next_line(), "x")
        self.assertEqual(self.metric("gophermq_inflight_messages"), inflight)
        self.assertEqual(self.metric("gophermq_acked_total"), acked)
        self.stop_tail(tail)

    def test_tail_group_members_share_the_messages(self):
        subject = unique_subject("tail")
        groups = self.metric("gophermq_groups")
        first = self.start_tail(subject, "--group", "tailers")
        second = self.start_tail(subject, "--group", "tailers")
        self.assertEqual(self.metric("gophermq_groups"), groups + 1)
        values = ["job %d" % n for n in range(6)]
        self.publish_all(subject, values)
        self.wait_until(lambda: len(first.all_lines) + len(second.all_lines) >= 6,
                        "the 6 messages")
        time.sleep(0.3)
        received = [line[:-1] for line in first.all_lines + second.all_lines]
        self.assertEqual(sorted(received), values, "each message to exactly one member")
        self.stop_tail(first)
        self.stop_tail(second)
        self.assertEqual(self.metric("gophermq_groups"), groups)

    def test_tail_poll_uses_held_fetches(self):
        subject = unique_subject("tail")
        subscribers = self.metric("gophermq_subscribers")
        streams = self.metric("gophermq_streams")
        parked = self.metric("gophermq_parked_fetches")
        tail = self.start_tail(subject, "--poll", "--format", "{attempt} {data}", stream=False)
        self.wait_metric("gophermq_parked_fetches", lambda value: value >= parked + 1,
                         "tail --poll to hold a fetch", tail)
        self.assertEqual(self.metric("gophermq_streams"), streams, "no stream with --poll")
        values = ["p%d" % n for n in range(5)]
        self.publish_all(subject, values)
        self.assertEqual(tail.read_lines(5), ["1 " + value for value in values])
        self.publish(subject, "later")
        self.assertEqual(tail.next_line(), "1 later")
        self.wait_metric("gophermq_parked_fetches", lambda value: value >= parked + 1,
                         "tail --poll to hold a fetch again", tail)
        self.stop_tail(tail, signal.SIGINT)
        self.assertEqual(self.metric("gophermq_subscribers"), subscribers)
        self.assert_no_subscriber(subject)

    def test_tail_poll_ack_acknowledges_what_it_printed(self):
        subject = unique_subject("tail")
        acked = self.metric("gophermq_acked_total")
        redelivered = self.metric("gophermq_redelivered_total")
        tail = self.start_tail(subject, "--poll", "--ack", "--ack-wait", "200",
                               "--format", "{attempt} {data}", stream=False)
        self.publish_all(subject, ["a", "b"])
        self.assertEqual(tail.read_lines(2), ["1 a", "1 b"])
        self.wait_metric("gophermq_acked_total", lambda value: value >= acked + 2,
                         "tail --poll to ack the 2 messages", tail)
        tail.quiet(0.6)
        self.assertEqual(self.metric("gophermq_redelivered_total"), redelivered)
        self.stop_tail(tail)

    def test_tail_poll_ends_on_sigterm(self):
        subject = unique_subject("tail")
        parked = self.metric("gophermq_parked_fetches")
        tail = self.start_tail(subject, "--poll", "--ack", stream=False)
        self.wait_metric("gophermq_parked_fetches", lambda value: value >= parked + 1,
                         "tail --poll to hold a fetch", tail)
        self.stop_tail(tail, signal.SIGTERM)
        self.assert_no_subscriber(subject)

    def test_tail_wildcard_subject(self):
        prefix = unique_subject("tail")
        tail = self.start_tail(prefix + ".*", "--format", "{subject} {data}")
        self.publish(prefix + ".eu", "one")
        self.publish(prefix + ".us", "two")
        status, _ = self.api("/api/publish", {"subject": prefix + ".eu.paris", "data": "no"})
        self.assertEqual(status, 404, "a.* does not match a.b.c")
        self.assertEqual(tail.read_lines(2), [prefix + ".eu one", prefix + ".us two"])
        self.stop_tail(tail)
        self.assert_no_subscriber(prefix + ".eu")

    def test_tail_invalid_subject_is_400(self):
        self.assertRefused(self.gmq("tail", "a..b"), "tail", 400, "invalid subject")


class TailRestartTest(ClientTestCase):
    """A restart with persistence keeps the subscriber: tail carries on."""

    @classmethod
    def setUpClass(cls):
        cls.data_directory = tempfile.mkdtemp(prefix="gophermq-client-data-")
        # Fixed ports: the restarted daemon comes back at the same address.
        cls.CONFIG = {"persistence": "log", "data_dir": os.path.join(cls.data_directory, "data"),
                      "port": harness.free_port(), "metrics_port": harness.free_port()}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.data_directory, ignore_errors=True)

    def test_tail_survives_a_broker_restart(self):
        subject = unique_subject("tail")
        tail = self.spawn("tail", subject)
        self.wait_metric("gophermq_streams", lambda value: value >= 1, "the stream", tail)
        self.publish(subject, "before")
        self.assertEqual(tail.next_line(), "before")
        self.d.stop()
        self.d.start()
        self.assertTrue(tail.running(), "tail waits for the broker: %r" % tail.stderr)
        self.publish(subject, "after")
        self.assertEqual(tail.next_line(timeout=scaled(30)), "after")
        tail.send_signal(signal.SIGINT)
        self.assertEqual(tail.wait(), 0, tail.stderr)
        self.assert_no_subscriber(subject)


# ---------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------

class StatsTest(ClientTestCase):
    def stats(self, *args, cache=None, env=None, d=None):
        """Runs stats with its cache in cache; returns (values, methods, output)."""
        extra = dict(env or {})
        if cache is not None:
            extra.setdefault("XDG_CACHE_HOME", cache)
        result = self.gmq("stats", *args, env=extra, daemon=d or self.d)
        self.assertSuccess(result)
        values, methods = parse_stats(result.out)
        self.assertEqual(sorted(values), sorted(name for name, _ in STAT_LABELS),
                         "every figure in the table:\n" + result.out)
        return values, methods, result.out

    def request_totals(self, d=None):
        totals = {}
        for labels, value in (d or self.d).metrics().find("gophermq_client_request_rate"):
            totals[labels["method"]] = totals.get(labels["method"], 0) + int(value)
        return totals

    def test_stats_table_matches_the_broker(self):
        d = self.start_daemon()
        a = unique_subject("stats")
        a_id = self.subscribe(a, d)
        for n in range(3):
            self.publish(a, "pending %d" % n, d)
        b = unique_subject("stats")
        self.subscribe(b, d, group="workers")
        self.subscribe(b, d, group="workers")
        self.publish(b, "grouped", d)
        c = unique_subject("stats")
        c_id = self.subscribe(c, d, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        self.publish(c, "in flight", d)
        self.publish(c, "waiting", d)
        self.assertEqual(len(self.fetch_reply(c, c_id, d, max=1)["messages"]), 1)
        # A held fetch and an open stream.
        held = unique_subject("stats")
        held_id = self.subscribe(held, d)
        holder = threading.Thread(target=self.fetch_reply, args=(held, held_id, d),
                                  kwargs={"wait_ms": 60000, "timeout": scaled(90)},
                                  daemon=True)
        holder.start()
        streamed = unique_subject("stats")
        streamed_id = self.subscribe(streamed, d)
        stream = socket.create_connection((d.api_host, d.api_port), timeout=harness.REQUEST_TIMEOUT)
        self.addCleanup(stream.close)
        stream.sendall(("GET /api/stream?subject=%s&id=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                        % (streamed, streamed_id)).encode("ascii"))
        self.wait_metric("gophermq_parked_fetches", lambda value: value == 1, "the held fetch",
                         d=d)
        self.wait_metric("gophermq_streams", lambda value: value == 1, "the stream", d=d)
        metrics = d.metrics()
        values, methods, output = self.stats(cache=os.path.join(self.home, "cache-table"), d=d)
        expected = {"pending messages": 6, "in flight": 1, "subscribers": 6, "subjects": 5,
                    "groups": 1, "streams": 1, "held fetches": 1,
                    "pending bytes": metrics.value("gophermq_pending_bytes")}
        self.assertEqual(values, expected, output)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 6)
        totals = self.request_totals(d)
        for method in ("publish", "subscribe", "fetch"):
            self.assertIn(method, methods, output)
            self.assertEqual(methods[method], (totals[method], "-"),
                             "%s: total and no rate at the first call\n%s" % (method, output))
        self.publish(held, "release", d)
        holder.join(timeout=harness.REQUEST_TIMEOUT)
        self.assertEqual(self.fetch_data(a, a_id, d), ["pending %d" % n for n in range(3)])

    def test_second_call_shows_rates(self):
        cache = os.path.join(self.home, "cache-rates")
        subject = unique_subject("stats")
        self.subscribe(subject)
        self.publish(subject, "x")
        _, methods, output = self.stats(cache=cache)
        self.assertEqual(methods["publish"][1], "-", output)
        self.assertTrue(os.listdir(os.path.join(cache, "gophermq")),
                        "the figures are remembered in $XDG_CACHE_HOME/gophermq/")
        for n in range(10):
            self.publish(subject, "y")
        _, again, output = self.stats(cache=cache)
        self.assertEqual(again["publish"][0], methods["publish"][0] + 10, output)
        for method, (_, rate) in again.items():
            self.assertRegex(rate, RATE_RE, "%s: a rate at the second call\n%s" % (method, output))
        self.assertGreater(float(again["publish"][1].rstrip("/s")), 0, output)

    def test_rates_are_remembered_per_url(self):
        cache = os.path.join(self.home, "cache-per-url")
        other = self.start_daemon()
        for d in (self.d, other):
            subject = unique_subject("stats")
            self.subscribe(subject, d)
            self.publish(subject, "x", d)
        self.assertEqual(self.stats(cache=cache)[1]["publish"][1], "-")
        _, methods, output = self.stats(cache=cache, d=other)
        self.assertEqual(methods["publish"][1], "-",
                         "the first call for this URL has no rate\n" + output)
        _, methods, output = self.stats(cache=cache)
        self.assertRegex(methods["publish"][1], RATE_RE, output)

    def test_cache_falls_back_to_home(self):
        home = tempfile.mkdtemp(prefix="gophermq-client-home-")
        self.addCleanup(shutil.rmtree, home, True)
        subject = unique_subject("stats")
        self.subscribe(subject)
        self.publish(subject, "x")
        env = {"HOME": home, "XDG_CACHE_HOME": None}
        _, methods, output = self.stats(env=env)
        self.assertEqual(methods["publish"][1], "-", output)
        self.assertTrue(os.listdir(os.path.join(home, ".cache", "gophermq")),
                        "the figures are remembered in ~/.cache/gophermq/")
        self.publish(subject, "y")
        _, methods, output = self.stats(env=env)
        self.assertRegex(methods["publish"][1], RATE_RE, output)

    def test_stats_watch_refreshes_until_interrupted(self):
        subject = unique_subject("stats")
        subscriber = self.subscribe(subject)
        pending = self.metric("gophermq_pending_messages")
        watch = self.spawn("stats", "--watch", "1",
                           env={"XDG_CACHE_HOME": os.path.join(self.home, "cache-watch")})

        def tables():
            """(values, methods) of each table printed so far."""
            text = ANSI_RE.sub("", "".join(watch.all_lines))
            return [parse_stats(part) for part in
                    re.split(r"(?im)^(?=.*\bpending[ _-]*messages\b)", text)[1:]]

        self.wait_until(lambda: len(tables()) >= 1, "a first table", watch)
        self.assertEqual(tables()[0][0]["pending messages"], pending)
        self.publish(subject, "one")
        self.publish(subject, "two")

        def refreshed():
            return [methods for values, methods in tables()
                    if values.get("pending messages") == pending + 2 and "publish" in methods]

        self.wait_until(refreshed, "a table with the 2 new messages", watch)
        self.assertRegex(refreshed()[0]["publish"][1], RATE_RE, "a refreshed table has rates")
        watch.send_signal(signal.SIGINT)
        code = watch.wait()
        self.assertIn(code, (0, -signal.SIGINT), "stats --watch ends on SIGINT: %r" % watch.stderr)
        self.assertEqual(self.fetch_data(subject, subscriber), ["one", "two"])

    def test_metrics_url_from_the_environment(self):
        result = run_client([CLIENT, "stats"], client_env(self.home, {
            "GOPHERMQ_METRICS_URL": self.metrics_url(self.d)}))
        self.assertSuccess(result)
        self.assertIn("pending messages", parse_stats(result.out)[0], result.out)
        # --metrics-url wins over the environment.
        port = harness.free_port()
        result = run_client([CLIENT, "--metrics-url", self.metrics_url(self.d), "stats"],
                            client_env(self.home, {
                                "GOPHERMQ_METRICS_URL": "http://127.0.0.1:%d/metrics" % port}))
        self.assertSuccess(result)

    def test_stats_unreachable_is_exit_3(self):
        port = harness.free_port()
        result = run_client([CLIENT, "--metrics-url", "http://127.0.0.1:%d/metrics" % port,
                             "stats"], client_env(self.home))
        self.assertUnreachable(result, port)


# ---------------------------------------------------------------------------
# Global options: --url, GOPHERMQ_URL, tokens
# ---------------------------------------------------------------------------

class UrlTest(ClientTestCase):
    def test_url_option_and_environment(self):
        subject = unique_subject("url")
        subscriber = self.subscribe(subject)
        dead = "http://127.0.0.1:%d" % harness.free_port()
        runs = [([CLIENT, "--url", self.url(self.d), "pub", subject, "long"], {}),
                ([CLIENT, "-u", self.url(self.d), "pub", subject, "short"], {}),
                ([CLIENT, "pub", subject, "env"], {"GOPHERMQ_URL": self.url(self.d)}),
                ([CLIENT, "--url", self.url(self.d), "pub", subject, "option wins"],
                 {"GOPHERMQ_URL": dead})]
        for argv, env in runs:
            with self.subTest(argv=argv, env=env):
                self.assertSuccess(run_client(argv, client_env(self.home, env)), "")
        self.assertEqual(self.fetch_data(subject, subscriber),
                         ["long", "short", "env", "option wins"])

    def test_url_with_a_trailing_slash(self):
        subject = unique_subject("url")
        subscriber = self.subscribe(subject)
        result = run_client([CLIENT, "--url", self.url(self.d) + "/", "pub", subject, "x"],
                            client_env(self.home))
        self.assertSuccess(result, "")
        self.assertEqual(self.fetch_data(subject, subscriber), ["x"])

    def assert_default_port(self, port, args):
        """Without --url, --metrics-url or their variables the client goes
        to 127.0.0.1:port (checked only when nothing listens there)."""
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            self.skipTest("something listens on 127.0.0.1:%d" % port)
        finally:
            probe.close()
        self.assertUnreachable(run_client([CLIENT] + args, client_env(self.home)), port)

    def test_default_url_is_port_8082(self):
        self.assert_default_port(8082, ["pub", unique_subject("url"), "x"])

    def test_default_metrics_url_is_port_9001(self):
        self.assert_default_port(9001, ["stats"])


class TokenTest(ClientTestCase):
    TOKEN = "client-test-token-0123456789"

    @classmethod
    def setUpClass(cls):
        cls.token_directory = tempfile.mkdtemp(prefix="gophermq-client-tokens-")
        daemon_tokens = os.path.join(cls.token_directory, "daemon.tokens")
        with open(daemon_tokens, "w", encoding="utf-8") as handle:
            handle.write("# the broker's tokens\n%s\n" % cls.TOKEN)
        os.chmod(daemon_tokens, 0o600)
        cls.CONFIG = {"auth_token_file": daemon_tokens}
        cls.good = cls.token_file("good", "%s\nthe second line is not the token\n" % cls.TOKEN)
        cls.bare = cls.token_file("bare", cls.TOKEN)
        cls.wrong = cls.token_file("wrong", "not-the-token\n")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.token_directory, ignore_errors=True)

    @classmethod
    def token_file(cls, name, text):
        path = os.path.join(cls.token_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, 0o640)
        return path

    def bearer(self):
        return {"Authorization": "Bearer " + self.TOKEN}

    def test_token_file_option_and_environment(self):
        subject = unique_subject("token")
        runs = [(["--token-file", self.good], {}), (["-T", self.bare], {}),
                ([], {"GOPHERMQ_TOKEN_FILE": self.good}),
                (["--token-file", self.good], {"GOPHERMQ_TOKEN_FILE": self.wrong})]
        results = run_all(lambda run: self.gmq(*(run[0] + ["sub", subject]), env=run[1]), runs)
        subscribers = []
        for run, result in zip(runs, results):
            with self.subTest(run=run):
                self.assertSuccess(result)
                subscribers.append(result.out.strip())
        self.assertSuccess(self.gmq("-T", self.good, "pub", subject, "secret"), "")
        self.assertSuccess(self.gmq("fetch", subject, subscribers[0],
                                    env={"GOPHERMQ_TOKEN_FILE": self.good}), "secret\n")
        self.assertSuccess(self.gmq("--token-file", self.bare, "unsub", subject, subscribers[0]))
        status, reply = self.api("/api/fetch", {"subject": subject, "id": subscribers[1]},
                                 headers=self.bearer())
        self.assertEqual((status, reply["data"]), (200, ["secret"]))

    def test_tail_sends_the_token(self):
        subject = unique_subject("token")
        tail = self.spawn("--token-file", self.good, "tail", subject, "--count", "1")
        self.wait_until(lambda: self.api("/api/publish", {"subject": subject, "data": "for tail"},
                                         headers=self.bearer())[0] == 200,
                        "tail to subscribe", tail)
        self.assertEqual(tail.next_line(), "for tail")
        self.assertEqual(tail.wait(), 0, tail.stderr)

    def test_wrong_or_missing_token_is_401(self):
        subject = unique_subject("token")
        self.assertRefused(self.gmq("--token-file", self.wrong, "sub", subject),
                           "sub", 401, "unauthorized")
        self.assertRefused(self.gmq("pub", subject, "x"), "pub", 401, "unauthorized")
        self.assertRefused(self.gmq("tail", subject, env={"GOPHERMQ_TOKEN_FILE": self.wrong}),
                           "tail", 401, "unauthorized")


@__import__("unittest").skipIf(shutil.which("openssl") is None, "openssl is not installed")
class TlsTest(ClientTestCase):
    """--cacert: an https URL verified against the broker's certificate."""

    @classmethod
    def setUpClass(cls):
        cls.tls_directory = tempfile.mkdtemp(prefix="gophermq-client-tls-")
        cls.cert, key = harness.self_signed_certificate(cls.tls_directory)
        cls.home = tempfile.mkdtemp(prefix="gophermq-client-home-")
        d = harness.Daemon({"tls_cert_file": cls.cert, "tls_key_file": key},
                           owner=cls.__module__ + "." + cls.__qualname__, start=False)
        cls.addClassCleanup(d.close)
        # The harness's readiness probe speaks plain HTTP: trust the log.
        d.wait_ready = lambda timeout=None: None
        d.start()
        cls.d = d

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tls_directory, ignore_errors=True)

    def test_cacert_verifies_an_https_url(self):
        url = "https://127.0.0.1:%d" % self.d.api_port
        subject = unique_subject("tls")
        env = client_env(self.home)
        result = run_client([CLIENT, "--url", url, "--cacert", self.cert, "sub", subject], env)
        self.assertSuccess(result)
        subscriber = result.out.strip()
        self.assertRegex(subscriber, UUID4_RE)
        self.assertSuccess(run_client([CLIENT, "--url", url, "--cacert", self.cert,
                                       "pub", subject, "over tls"], env), "")
        self.assertSuccess(run_client([CLIENT, "--cacert", self.cert, "--url", url,
                                       "fetch", subject, subscriber], env), "over tls\n")
        # Without the CA the certificate is not trusted: not reachable.
        self.assertUnreachable(run_client([CLIENT, "--url", url, "pub", subject, "x"], env),
                               self.d.api_port)


class TimeoutTest(ClientTestCase):
    """--timeout bounds each request, but a held fetch's wait is added to
    it and a stream outlives it.  The three run side by side: one second
    of waiting for all."""

    def test_timeout_bounds_requests_but_not_held_fetches_or_streams(self):
        # 1 s (3 s under valgrind, whose daemon answers slowly).
        timeout = "1" if SCALE == 1 else "3"
        # A broker that accepts connections and never answers.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        silent = ClientProcess(self, [CLIENT, "--timeout", timeout, "--url",
                                      "http://127.0.0.1:%d" % port, "sub", "s.a"],
                               client_env(self.home))
        # A stream open longer than the timeout goes on (or resumes) quietly.
        streamed = unique_subject("timeout")
        streams = self.metric("gophermq_streams")
        tail = self.spawn("--timeout", timeout, "tail", streamed)
        # A fetch held for 1.2 times the timeout is not a timeout.
        held = unique_subject("timeout")
        held_id = self.subscribe(held)
        fetch = self.spawn("--timeout", timeout, "fetch", held, held_id,
                           "--wait", str(int(timeout) * 1200))
        self.wait_metric("gophermq_streams", lambda value: value >= streams + 1, "the stream",
                         tail)

        self.assertEqual(silent.wait(timeout=scaled(30)), 3, "no answer within --timeout")
        self.assertEqual(silent.all_lines, [])
        self.assertEqual(len(output_lines(silent.stderr)), 1, silent.stderr)
        self.assertTrue(silent.stderr.startswith("gophermq: "), silent.stderr)
        self.assertIn(":%d" % port, silent.stderr)

        self.assertEqual(fetch.wait(timeout=scaled(30)), 0, fetch.stderr)
        self.assertEqual((fetch.all_lines, fetch.stderr), ([], ""))

        self.publish(streamed, "after the timeout")
        self.assertEqual(tail.next_line(), "after the timeout")
        self.assertTrue(tail.running())
        tail.send_signal(signal.SIGINT)
        self.assertEqual(tail.wait(), 0, tail.stderr)
        self.assertEqual(tail.stderr, "")


# ---------------------------------------------------------------------------
# Exit code 3: the broker cannot be reached or does not answer usably
# ---------------------------------------------------------------------------

class UnreachableTest(ClientTestCase):
    ID = "00000000-0000-4000-8000-000000000000"

    def test_every_command_against_a_closed_port_is_exit_3(self):
        port = harness.free_port()
        url = "http://127.0.0.1:%d" % port
        arg_lists = [["pub", "s.a", "x"], ["pub", "--batch", "s.a"], ["sub", "s.a"],
                     ["fetch", "s.a", self.ID], ["ack", "s.a", self.ID, "1"],
                     ["nack", "s.a", self.ID, "1"], ["unsub", "s.a", self.ID],
                     ["tail", "s.a"], ["tail", "--poll", "s.a"]]
        results = self.gmq_all([["--url", url] + args for args in arg_lists], input=b"x\n",
                               daemon=None, timeout=scaled(60))
        for args, result in zip(arg_lists, results):
            with self.subTest(args=args):
                self.assertUnreachable(result, port)

    def test_an_answer_that_is_not_the_brokers_is_exit_3(self):
        server = FakeServer()
        self.addCleanup(server.close)
        url = "http://127.0.0.1:%d" % server.port
        arg_lists = [["sub", "s.a"], ["fetch", "s.a", self.ID], ["ack", "s.a", self.ID, "1"],
                     ["stats"]]
        results = self.gmq_all([["--url", url, "--metrics-url", url + "/metrics"] + args
                                for args in arg_lists], daemon=None, timeout=scaled(60))
        for args, result in zip(arg_lists, results):
            with self.subTest(args=args):
                self.assertUnreachable(result, server.port)



if __name__ == "__main__":
    if not (os.path.isfile(CLIENT) and os.access(CLIENT, os.X_OK)):
        print("SKIP: client %s not built (configured with --disable-client?)" % CLIENT)
        sys.exit(77)
    print("gophermq: %s%s" % (CLIENT, " (under valgrind)" if CLIENT_VALGRIND else ""))
    harness.main()
