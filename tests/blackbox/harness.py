"""harness.py - start the real gophermqd and talk to it as a user would.

The black-box tests import this module.  It needs nothing but the Python 3
standard library.  Environment:

  GOPHERMQD          absolute path of the built daemon (set by `make check`);
                     defaults to src/gophermqd next to this source tree
  GOPHERMQ_SRCDIR    the source tree (for etc/gophermq.conf, configure.ac)
  GOPHERMQ_VALGRIND  "1": run every daemon under valgrind memcheck, scale all
                     timeouts by 10 and require exit code 0 (valgrind's own
                     --error-exitcode is 99)

A Daemon writes a configuration file with `port = 0` and `metrics_port = 0`
into a private temporary directory, starts `gophermqd -f -c FILE`, reads the
ports it picked back from its log on stderr and waits until GET /ready
answers 204 (gmqlaunch.py beside this file does that part, for the
benchmarks in loadtest/ too).  Every daemon a test starts is stopped with SIGTERM when the
test ends (and must exit 0); whatever happens, an atexit hook kills what is
left, so a failing test never leaves a daemon behind.
"""

import atexit
import concurrent.futures
import http.client
import json
import os
import re
import select
import shutil
from signal import SIGTERM
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import gmqlaunch  # noqa: E402  (the launcher, shared with loadtest/)
from gmqlaunch import LISTEN_RE, format_value  # noqa: E402,F401  (part of this module's API)

SRCDIR = os.environ.get("GOPHERMQ_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
DAEMON = os.environ.get("GOPHERMQD") or os.path.join(SRCDIR, "src", "gophermqd")
VALGRIND = os.environ.get("GOPHERMQ_VALGRIND") == "1"
VALGRIND_COMMAND = [
    "valgrind", "--error-exitcode=99", "--leak-check=full",
    "--show-leak-kinds=definite,indirect",
    "--errors-for-leak-kinds=definite,indirect", "--track-fds=no", "-q",
]
SCALE = 10 if VALGRIND else 1

# Generous bounds for things that must happen, never assertions on speed.
START_TIMEOUT = 15 * SCALE
REQUEST_TIMEOUT = 15 * SCALE
STOP_TIMEOUT = 5 * SCALE          # the daemon's promise: exit within 5 s
STREAM_TIMEOUT = 10 * SCALE        # for the next event of a stream
WAIT_TIMEOUT = 15 * SCALE         # polling for async effects, log lines
FILE_WATCHDOG = 300 * SCALE       # a whole test file, as a last resort

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SHUTDOWN_RE = re.compile(r"shutdown complete: (\d+) published, (\d+) delivered, (\d+) pending")

_DEFAULT = object()
_live_daemons = set()
_all_daemons = []
_live_lock = threading.Lock()
_subject_counter = [0]


def scaled(seconds):
    """seconds, stretched when the daemon runs under valgrind."""
    return seconds * SCALE


def unique_subject(prefix="test"):
    """A fresh valid subject, so tests sharing a daemon never collide."""
    with _live_lock:
        _subject_counter[0] += 1
        number = _subject_counter[0]
    return "%s.s%d.%s" % (prefix, number, uuid.uuid4().hex[:8])


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed_certificate(directory):
    """Writes a self-signed certificate for localhost and 127.0.0.1 and its
    key into directory (openssl); returns (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def wrap_command(argv):
    """argv, prefixed with valgrind when GOPHERMQ_VALGRIND=1."""
    return (VALGRIND_COMMAND + list(argv)) if VALGRIND else list(argv)


def run_cli(args, timeout=None):
    """Runs the daemon with args (no daemon left running) and returns a
    subprocess.CompletedProcess with text stdout and stderr.  A daemon that
    does not exit within timeout is killed and reported as a failure."""
    timeout = timeout or scaled(10)
    try:
        return subprocess.run(wrap_command([DAEMON] + list(args)), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, errors="replace", text=True)
    except subprocess.TimeoutExpired as error:
        raise AssertionError("gophermqd %s did not exit within %s s (stderr: %r)"
                             % (" ".join(args), timeout, error.stderr)) from None


def run_cli_all(arg_lists, timeout=None):
    """run_cli for every list of args, as many at a time as there are CPUs
    (each is a short process of its own, under valgrind one of about a
    second); returns the results in the order of arg_lists."""
    arg_lists = [list(args) for args in arg_lists]
    workers = max(1, min(len(arg_lists), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda args: run_cli(args, timeout), arg_lists))


def json_body(body):
    """body (bytes) decoded as JSON; a helpful AssertionError otherwise."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise AssertionError("response body is not JSON (%s): %r" % (error, body[:500])) from None


def encode_body(body, headers, content_type):
    """(bytes or None, headers) for a request body given as bytes, str or a
    JSON-able object.  content_type None sends no Content-Type at all."""
    headers = dict(headers or {})
    if body is None:
        return None, headers
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    if content_type is _DEFAULT:
        content_type = "application/json"
    if content_type is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    return data, headers


class Client:
    """One HTTP/1.1 connection, kept alive across requests."""

    def __init__(self, host, port, timeout=None):
        self.host = host
        self.port = port
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout or REQUEST_TIMEOUT)

    def request(self, method, path, body=None, headers=None, content_type=_DEFAULT):
        """Sends one request; returns (status, headers, body bytes)."""
        data, headers = encode_body(body, headers, content_type)
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        return response.status, response.headers, payload

    def post_json(self, path, obj, **kwargs):
        """POSTs obj as JSON; returns (status, headers, decoded JSON or None)."""
        status, headers, body = self.request("POST", path, obj, **kwargs)
        return status, headers, (json_body(body) if body else None)

    def local_port(self):
        """The client side port of the connection, None when not connected."""
        sock = self.connection.sock
        return sock.getsockname()[1] if sock is not None else None

    def close(self):
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Metrics:
    """A parsed Prometheus text exposition."""

    SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$")
    LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')

    def __init__(self, text):
        self.text = text
        self.help = {}
        self.types = {}
        self.samples = []      # (name, labels dict, value)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "HELP":
                    self.help[parts[2]] = parts[3] if len(parts) > 3 else ""
                elif len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            match = self.SAMPLE_RE.match(line)
            if not match:
                raise AssertionError("metrics line %d is not a sample: %r" % (number, line))
            labels = {}
            label_text = match.group(3) or ""
            position = 0
            while position < len(label_text):
                label = self.LABEL_RE.match(label_text, position)
                if not label:
                    raise AssertionError("metrics line %d has bad labels: %r" % (number, line))
                labels[label.group(1)] = label.group(2).replace('\\"', '"').replace("\\n", "\n") \
                    .replace("\\\\", "\\")
                position = label.end()
            self.samples.append((match.group(1), labels, float(match.group(4))))

    def find(self, name, **labels):
        """Every (labels, value) of name whose labels include the given ones."""
        wanted = {k: str(v) for k, v in labels.items()}
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == v for k, v in wanted.items())]

    def value(self, name, **labels):
        """The value of the sample of name with exactly these labels, or None."""
        wanted = {k: str(v) for k, v in labels.items()}
        for n, l, v in self.samples:
            if n == name and l == wanted:
                return v
        return None

    def total(self, name, **labels):
        """Sum of the samples of name whose labels include the given ones."""
        return sum(v for _, v in self.find(name, **labels))


class Daemon(gmqlaunch.DaemonProcess):
    """A gophermqd process started on free loopback ports.  Writing the
    config, starting, reading the ports from the log, waiting for /ready,
    the log and stopping are gmqlaunch.DaemonProcess's (shared with the
    benchmarks); this class adds the test's bookkeeping (cleanup at exit,
    logs of failed tests), valgrind and the HTTP helpers."""

    CONFIG_HEADER = "# written by tests/blackbox/harness.py\n"

    def __init__(self, config=None, owner=None, start=True, args=()):
        self.owner = owner
        self.directory = tempfile.mkdtemp(prefix="gophermq-test-")
        super().__init__(os.path.join(self.directory, "gophermq.conf"), binary=DAEMON,
                         args=args, wrapper=VALGRIND_COMMAND if VALGRIND else (),
                         cwd=self.directory, scale=SCALE)
        self.dumped = False
        self.write_config(config or {})
        with _live_lock:
            _all_daemons.append(self)
        if start:
            self.start()

    # -- process (see gmqlaunch.DaemonProcess for the rest) ---------------
    def start(self, timeout=None):
        """Starts the daemon and waits until /ready says 204."""
        with _live_lock:
            _live_daemons.add(self)
        return super().start(timeout or START_TIMEOUT)

    def wait_exit(self, timeout=None):
        """Waits for the daemon to exit; returns its exit code, or None when
        it is still running after timeout."""
        code = super().wait_exit(timeout or STOP_TIMEOUT)
        if code is not None:
            with _live_lock:
                _live_daemons.discard(self)
        return code

    def exit_hint(self, code):
        return " (valgrind found errors or leaks)" if VALGRIND and code == 99 else ""

    def kill(self):
        """SIGKILL, for cleanup after a failure."""
        super().kill()
        with _live_lock:
            _live_daemons.discard(self)

    def close(self):
        """Stops the daemon if it still runs (asserting exit code 0) and
        removes its directory."""
        try:
            if self.running():
                self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- HTTP ----------------------------------------------------------
    def client(self, timeout=None):
        """A keep-alive connection to the API port."""
        return Client(self.api_host, self.api_port, timeout)

    def request(self, method, path, body=None, headers=None, content_type=_DEFAULT,
                client=None, timeout=None):
        """One request on client, or on a fresh connection closed afterwards.
        Returns (status, headers, body bytes)."""
        if client is not None:
            return client.request(method, path, body, headers, content_type)
        with self.client(timeout) as fresh:
            return fresh.request(method, path, body, headers, content_type)

    def post_json(self, path, obj, client=None, **kwargs):
        """POSTs obj; returns (status, headers, decoded JSON or None)."""
        status, headers, body = self.request("POST", path, obj, client=client, **kwargs)
        return status, headers, (json_body(body) if body else None)

    # Convenience wrappers that assert success.
    def subscribe(self, subject, client=None):
        """Subscribes to subject; returns the id."""
        status, _, reply = self.post_json("/api/subscribe", {"subject": subject}, client=client)
        if status != 200:
            raise AssertionError("subscribe %r: %d %r" % (subject, status, reply))
        return reply["id"]

    def publish(self, subject, data, client=None, path="/api/publish"):
        """Publishes; returns (status, decoded reply)."""
        status, _, reply = self.post_json(path, {"subject": subject, "data": data}, client=client)
        return status, reply

    def publish_ok(self, subject, data, client=None):
        status, reply = self.publish(subject, data, client)
        if status != 200 or reply != {"status": "ok"}:
            raise AssertionError("publish to %r: %d %r" % (subject, status, reply))

    def fetch(self, subject, subscriber_id, client=None):
        """Fetches; returns the list of data, asserting a 200 reply."""
        status, _, reply = self.post_json("/api/fetch", {"subject": subject, "id": subscriber_id},
                                          client=client)
        if status != 200:
            raise AssertionError("fetch %r %r: %d %r" % (subject, subscriber_id, status, reply))
        return reply["data"]

    def fetch_until(self, subject, subscriber_id, count, timeout=None):
        """Fetches repeatedly until count messages arrived in total (or more);
        returns them all.  For asynchronous deliveries."""
        deadline = time.monotonic() + (timeout or WAIT_TIMEOUT)
        received = []
        while True:
            received += self.fetch(subject, subscriber_id)
            if len(received) >= count or time.monotonic() > deadline:
                return received
            time.sleep(0.02)

    def metrics_request(self, path="/metrics", method="GET"):
        """(status, headers, body) of a request to the metrics port."""
        client = Client(self.metrics_host, self.metrics_port)
        try:
            return client.request(method, path)
        finally:
            client.close()

    def metrics_text(self):
        status, headers, body = self.metrics_request()
        if status != 200:
            raise AssertionError("GET /metrics: %d %r" % (status, body[:300]))
        return body.decode("utf-8")

    def metrics(self):
        """The current metrics, parsed."""
        return Metrics(self.metrics_text())

    def wait_metric(self, name, predicate, timeout=None, **labels):
        """Polls the metrics until predicate(value of name with exactly these
        labels; 0 when absent) is true; returns the value."""
        deadline = time.monotonic() + (timeout or WAIT_TIMEOUT)
        while True:
            value = self.metrics().value(name, **labels)
            value = 0 if value is None else value
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError("metric %s%r stuck at %r" % (name, labels, value))
            time.sleep(0.05)


class DaemonTestCase(unittest.TestCase):
    """Base class: start_daemon() in a test, or cls.start_class_daemon() in
    setUpClass; either is stopped with SIGTERM (exit 0 asserted) afterwards."""

    maxDiff = 4000

    def start_daemon(self, config=None, **kwargs):
        daemon = Daemon(config, owner=self.id(), start=False, **kwargs)
        self.addCleanup(daemon.close)
        daemon.start()
        return daemon

    @classmethod
    def start_class_daemon(cls, config=None, **kwargs):
        daemon = Daemon(config, owner=cls.__module__ + "." + cls.__qualname__, start=False, **kwargs)
        if hasattr(cls, "addClassCleanup"):            # Python >= 3.8
            cls.addClassCleanup(daemon.close)
        else:
            cls._class_daemons = getattr(cls, "_class_daemons", []) + [daemon]
        daemon.start()
        return daemon

    @classmethod
    def tearDownClass(cls):
        for daemon in cls.__dict__.get("_class_daemons", []):
            daemon.close()
        super().tearDownClass()

    def assertJsonReply(self, response, status, expected, message=None):
        """response is (status, headers, body bytes): checks the status, the
        JSON content type and that the body decodes to expected."""
        got_status, headers, body = response
        self.assertEqual(got_status, status, message or "body: %r" % (body[:300],))
        self.assertEqual(headers.get("Content-Type"), JSON_CONTENT_TYPE, message)
        self.assertEqual(json_body(body), expected, message)

    def assertError(self, response, status, text, message=None):
        """An error reply: status and exactly {"message": text}."""
        self.assertJsonReply(response, status, {"message": text}, message)


class DaemonLogResult(unittest.TextTestResult):
    """Prints the logs of the daemons involved when a test fails."""

    def _dump(self, test):
        keys = {getattr(test, "id", lambda: "")()}
        keys.add(type(test).__module__ + "." + type(test).__qualname__)
        description = str(test)
        with _live_lock:
            daemons = list(_all_daemons)
        for daemon in daemons:
            related = daemon.owner in keys or (daemon.owner and daemon.owner in description)
            if related and not daemon.dumped:
                daemon.dumped = True
                self.stream.write("\n" + daemon.log_tail(80) + "\n")
                self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)


def _kill_live_daemons():
    with _live_lock:
        daemons = list(_live_daemons)
    for daemon in daemons:
        daemon.kill()
        shutil.rmtree(daemon.directory, ignore_errors=True)


atexit.register(_kill_live_daemons)


def _watchdog():
    sys.stdout.write("\nFAIL: watchdog: test file still running after %d s, giving up\n"
                     % FILE_WATCHDOG)
    for thread_id, frame in sys._current_frames().items():
        sys.stdout.write("thread %d:\n%s" % (thread_id, "".join(traceback.format_stack(frame))))
    sys.stdout.flush()
    _kill_live_daemons()
    os._exit(1)


def main():
    """Runs the tests of __main__ (or those named on the command line, as
    Class or Class.test) verbosely; exits 0 when all passed."""
    if not (os.path.isfile(DAEMON) and os.access(DAEMON, os.X_OK)):
        print("ERROR: daemon %s not found or not executable (set GOPHERMQD)" % DAEMON)
        sys.exit(99)
    if VALGRIND and shutil.which("valgrind") is None:
        print("ERROR: GOPHERMQ_VALGRIND=1 but valgrind is not installed")
        sys.exit(99)
    print("gophermqd: %s%s" % (DAEMON, " (under valgrind)" if VALGRIND else ""))
    watchdog = threading.Timer(FILE_WATCHDOG, _watchdog)
    watchdog.daemon = True
    watchdog.start()
    if sys.argv[1:]:
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:], sys.modules["__main__"])
    else:
        suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=DaemonLogResult)
    result = runner.run(suite)
    watchdog.cancel()
    sys.stdout.flush()
    sys.exit(not result.wasSuccessful())


class EventStream:
    """One GET /api/stream on a raw socket, read as an EventSource would.

    The request is sent at once; the response head is read by read_head()
    (called by the constructor unless defer_head: a reader that never
    reads).  The body is HTTP/1.1 chunked (or, for an error reply, sized
    by Content-Length); its text is parsed into items, ("comment", text)
    for ": text" lines and ("event", fields) for events, fields being a
    dict of "id", "event", "data" and "lines" (the event's raw lines).
    daemon is anything with api_host and api_port (a Daemon, a proxy)."""

    def __init__(self, daemon, path, headers=None, rcvbuf=None, defer_head=False):
        self.daemon = daemon
        self.path = path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so that the window the daemon sees is small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(REQUEST_TIMEOUT)
        self.sock.connect((daemon.api_host, daemon.api_port))
        head = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n" % (
            path, daemon.api_host, daemon.api_port)
        for name, value in (headers or {}).items():
            head += "%s: %s\r\n" % (name, value)
        self.sock.sendall((head + "\r\n").encode("utf-8"))
        self.raw = bytearray()        # received, not yet decoded from chunks
        self.text = bytearray()       # body bytes, not yet parsed into lines
        self.body_length = 0          # body bytes so far
        self.items = []               # parsed, not yet taken by next_item()
        self.comments = []            # every comment seen
        self.fields = {}              # the event being parsed
        self.lines = []
        self.status = None
        self.headers = {}
        self.chunked = False
        self.content_length = None
        self.ended = False            # the body ended as HTTP says (last chunk)
        self.eof = False              # the daemon closed the connection
        self.sock_closed = False
        if not defer_head:
            self.read_head()

    # -- socket -------------------------------------------------------
    def _receive(self, deadline):
        """Reads what is there (waiting until deadline); False at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("%s: nothing more within the timeout" % self.path)
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise AssertionError("%s: nothing more within the timeout" % self.path) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        return True

    def read_head(self, timeout=None):
        deadline = time.monotonic() + (timeout or REQUEST_TIMEOUT)
        while b"\r\n\r\n" not in self.raw:
            if not self._receive(deadline):
                raise AssertionError("%s: connection closed before the response head: %r"
                                     % (self.path, bytes(self.raw)))
        end = self.raw.index(b"\r\n\r\n")
        lines = self.raw[:end].decode("iso-8859-1").split("\r\n")
        del self.raw[:end + 4]
        match = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0] + " ")
        if not match:
            raise AssertionError("%s: bad status line %r" % (self.path, lines[0]))
        self.status = int(match.group(1))
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if "content-length" in self.headers:
            self.content_length = int(self.headers["content-length"])
        self._decode()
        return self

    def header(self, name):
        return self.headers.get(name.lower())

    def _decode(self):
        """Moves whole chunks from raw to text and parses the text."""
        while not self.ended:
            if self.chunked:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(self.raw[:line_end]).split(b";")[0], 16)
                if size == 0:
                    # The last chunk: no trailers are sent, an empty line ends it.
                    if len(self.raw) < line_end + 4:
                        break
                    if self.raw[line_end + 2:line_end + 4] != b"\r\n":
                        raise AssertionError("%s: trailers after the last chunk: %r"
                                             % (self.path, bytes(self.raw[:200])))
                    del self.raw[:line_end + 4]
                    self.ended = True
                    break
                if len(self.raw) < line_end + 2 + size + 2:
                    break
                chunk = self.raw[line_end + 2:line_end + 2 + size]
                if self.raw[line_end + 2 + size:line_end + 4 + size] != b"\r\n":
                    raise AssertionError("%s: bad chunk framing" % self.path)
                del self.raw[:line_end + 4 + size]
            else:
                if not self.raw:
                    break
                chunk = bytes(self.raw)
                del self.raw[:]
            self.body_length += len(chunk)
            self.text += chunk
            if self.content_length is not None and self.body_length >= self.content_length:
                self.ended = True
        self._parse()

    def _parse(self):
        """SSE: lines end with LF (CRLF and CR are allowed too; the daemon
        sends LF); a blank line dispatches the event being built."""
        while True:
            end = self.text.find(b"\n")
            if end < 0:
                return
            line = self.text[:end].decode("utf-8")
            del self.text[:end + 1]
            if line.endswith("\r"):
                line = line[:-1]
            if "\r" in line:
                # An EventSource ends a line at a lone CR as well.
                raise AssertionError("%s: a bare CR inside a line: %r" % (self.path, line))
            if line == "":
                if self.fields:
                    self.fields["lines"] = self.lines
                    self.items.append(("event", self.fields))
                self.fields, self.lines = {}, []
            elif line.startswith(":"):
                comment = line[1:].lstrip(" ")
                self.comments.append(comment)
                self.items.append(("comment", comment))
            else:
                name, colon, value = line.partition(":")
                if colon and value.startswith(" "):
                    value = value[1:]
                self.lines.append(line)
                if name == "data" and "data" in self.fields:
                    self.fields["data"] += "\n" + value
                else:
                    self.fields[name] = value

    # -- reading ------------------------------------------------------
    def next_item(self, timeout=None):
        """The next comment or event; AssertionError when none comes within
        timeout or the body ends first."""
        deadline = time.monotonic() + (timeout or STREAM_TIMEOUT)
        while not self.items:
            if self.ended or self.eof:
                raise AssertionError("%s: the stream ended (clean end: %s) while an event was "
                                     "awaited" % (self.path, self.ended))
            self._receive(deadline)
            self._decode()
        return self.items.pop(0)

    def readable(self, timeout):
        """Whether an item is parsed and waiting, after reading what comes
        within timeout."""
        if not self.items and not (self.ended or self.eof):
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                self._receive(time.monotonic() + REQUEST_TIMEOUT)
                self._decode()
        return bool(self.items)

    def next_event(self, timeout=None):
        """The next event (comments skipped but kept in comments)."""
        deadline = time.monotonic() + (timeout or STREAM_TIMEOUT)
        while True:
            kind, value = self.next_item(max(0.001, deadline - time.monotonic()))
            if kind == "event":
                return value

    def events(self, count, timeout=None):
        """The next count events."""
        deadline = time.monotonic() + (timeout or STREAM_TIMEOUT)
        return [self.next_event(max(0.001, deadline - time.monotonic())) for _ in range(count)]

    def wait_comment(self, text, count=1, timeout=None):
        """Reads until count comments equal to text have been seen in all;
        fails on an event meanwhile."""
        deadline = time.monotonic() + (timeout or STREAM_TIMEOUT)
        while self.comments.count(text) < count:
            kind, value = self.next_item(max(0.001, deadline - time.monotonic()))
            if kind == "event":
                raise AssertionError("%s: unexpected event %r" % (self.path, value))

    def read_to_end(self, timeout=None):
        """Reads until the body ends; returns the events meanwhile.  The end
        must be the clean end of a chunked body, not a cut connection."""
        deadline = time.monotonic() + (timeout or STREAM_TIMEOUT)
        while not (self.ended or self.eof):
            self._receive(deadline)
            self._decode()
        if not self.ended:
            raise AssertionError("%s: the connection closed without the body's last chunk "
                                 "(%d bytes left over)" % (self.path, len(self.raw)))
        if self.text or self.fields:
            raise AssertionError("%s: the body ended inside an event: %r %r"
                                 % (self.path, bytes(self.text), self.fields))
        events = [value for kind, value in self.items if kind == "event"]
        self.items = []
        return events

    def close(self):
        if not self.sock_closed:
            self.sock_closed = True
            self.sock.close()
