"""gmqlaunch.py - start one gophermqd on free loopback ports, and stop it.

The one daemon launcher of the source tree: the black-box tests
(tests/blackbox/harness.py, whose Daemon class builds on this one) and the
benchmarks (loadtest/) both use it.  Python 3 standard library only; put
this directory on sys.path and `import gmqlaunch`.

A launch:
  1. writes a configuration file: `listen` and `metrics_listen` 127.0.0.1,
     `port = 0` and `metrics_port = 0` (the kernel picks free ports), then
     the caller's options;
  2. starts `gophermqd -f -c FILE` with stdout and stderr on pipes, which
     two threads read into a list of lines;
  3. reads the ports from the log lines "api listening on HOST:PORT" and
     "metrics listening on HOST:PORT" (logged at level notice: a config with
     log_level "warning" or higher hides them, and the start fails at once
     instead of guessing);
  4. polls GET /ready until it answers 204.
stop() sends SIGTERM and waits for the exit; kill() is SIGKILL for cleanup.
Failures raise LaunchError, an AssertionError, so that in a test they count
as failures, with the end of the daemon's log in the message.
"""

import http.client
import os
import re
from signal import SIGTERM
import subprocess
import threading
import time

LISTEN_RE = re.compile(r"(api|metrics) listening on (\S+):(\d+)")
API_LISTENING = r"api listening on \S+:\d+"
METRICS_LISTENING = r"metrics listening on \S+:\d+"
LOOPBACK = {"listen": "127.0.0.1", "port": 0, "metrics_listen": "127.0.0.1", "metrics_port": 0}
QUIET_LEVELS = ("warning", "error", "err", "crit", "critical", "alert", "emerg")


class LaunchError(AssertionError):
    """gophermqd did not start or stop as it should."""


def default_binary(top=None):
    """$GOPHERMQD, or src/gophermqd of the source tree (top, by default the
    tree this file is in)."""
    top = top or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("GOPHERMQD") or os.path.join(top, "src", "gophermqd")


def format_value(value):
    """value in libconfuse syntax: integers bare, strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError("cannot write %r to a config file" % (value,))


def parse_value(text):
    """The value of a NAME=VALUE given on a command line: an integer, true
    or false, or a string (surrounding double quotes optional)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def config_text(overrides=None, raw=None, header=""):
    """A configuration: LOOPBACK, then overrides (a value None drops the
    option), then raw verbatim."""
    options = dict(LOOPBACK)
    options.update(overrides or {})
    text = header
    for name, value in options.items():
        if value is not None:
            text += "%s = %s\n" % (name, format_value(value))
    return text + (raw or "")


def write_file(path, text):
    """Writes text to a new file renamed over path: a reload never reads
    half a file."""
    temporary = path + ".new"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.rename(temporary, path)


def address(line):
    """(host, port) of a "... listening on HOST:PORT" line, as a client on
    this machine reaches it."""
    match = LISTEN_RE.search(line)
    host, port = match.group(2), int(match.group(3))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("0.0.0.0", "*", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


class DaemonProcess:
    """One gophermqd run: config file, process, log lines, ports.

    scale stretches every default timeout (the tests run the daemon under
    valgrind with scale 10).  wrapper is a command prefix (valgrind ...);
    preexec_fn runs in the child before exec (CPU affinity, rlimits)."""

    CONFIG_HEADER = "# written by tests/blackbox/gmqlaunch.py\n"

    def __init__(self, config_path, binary=None, args=(), wrapper=(), cwd=None,
                 preexec_fn=None, scale=1):
        self.binary = binary or default_binary()
        self.config_path = config_path
        self.extra_args = list(args)
        self.wrapper = list(wrapper)
        self.cwd = cwd or os.path.dirname(config_path)
        self.preexec_fn = preexec_fn
        self.scale = scale
        self.process = None
        self.lines = []
        self.lines_changed = threading.Condition()
        self.readers = []
        self.api_host = self.api_port = None
        self.metrics_host = self.metrics_port = None
        self.returncode = None

    # -- configuration -------------------------------------------------
    def write_config(self, overrides=None, raw=None):
        """(Re)writes the config file: loopback, port 0 and metrics_port 0,
        then overrides (a value None drops the option); raw, when given, is
        appended verbatim."""
        self.write_config_text(config_text(overrides, raw, self.CONFIG_HEADER))

    def write_config_text(self, text):
        """Replaces the config file with text, exactly."""
        write_file(self.config_path, text)

    # -- process -------------------------------------------------------
    def start(self, timeout=None):
        """Starts the daemon, learns its ports from its log and waits until
        /ready says 204.  On failure the process is killed."""
        timeout = timeout or 15 * self.scale
        self._refuse_quiet_log_level()
        api_before = self.log_count(API_LISTENING)
        metrics_before = self.log_count(METRICS_LISTENING)
        argv = self.wrapper + [self.binary, "-f", "-c", self.config_path] + self.extra_args
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=self.cwd,
                                        preexec_fn=self.preexec_fn)
        for stream in (self.process.stderr, self.process.stdout):
            reader = threading.Thread(target=self._read_lines, args=(stream,), daemon=True)
            reader.start()
            self.readers.append(reader)
        try:
            deadline = time.monotonic() + timeout
            # A restart appends to the same log: wait for this run's lines.
            api = self.wait_for_log(API_LISTENING, count=api_before + 1, timeout=timeout)
            metrics = self.wait_for_log(METRICS_LISTENING, count=metrics_before + 1,
                                        timeout=max(0.1, deadline - time.monotonic()))
            self.api_host, self.api_port = self._address(api[-1])
            self.metrics_host, self.metrics_port = self._address(metrics[-1])
            self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.kill()
            raise
        return self

    def _refuse_quiet_log_level(self):
        try:
            with open(self.config_path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return
        match = re.search(r'^\s*log_level\s*=\s*"?(\w+)', text, re.MULTILINE)
        if match and match.group(1).lower() in QUIET_LEVELS:
            raise LaunchError("log_level %s hides the \"listening on\" lines the launcher "
                              "reads the ports from: use notice or lower" % match.group(1))

    @staticmethod
    def _address(line):
        return address(line)

    def _read_lines(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lines_changed:
                self.lines.append(line)
                self.lines_changed.notify_all()
        stream.close()
        with self.lines_changed:
            self.lines_changed.notify_all()

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process is not None and self.process.poll() is None

    def signal(self, signum):
        """Sends signum to the daemon."""
        self.process.send_signal(signum)

    def wait_exit(self, timeout=None):
        """Waits for the daemon to exit; returns its exit code, or None when
        it is still running after timeout."""
        try:
            self.returncode = self.process.wait(timeout=timeout or 5 * self.scale)
        except subprocess.TimeoutExpired:
            return None
        for reader in self.readers:
            reader.join(timeout=5 * self.scale)
        return self.returncode

    def stop(self, signum=SIGTERM, timeout=None, expect=0):
        """Sends signum (SIGTERM), waits up to timeout (5 s, scaled: the
        daemon's promise) for the exit and returns the exit code.  Raises
        LaunchError when the daemon does not exit in time (it is then
        killed) or, unless expect is None, when the exit code is not
        expect."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            timeout = timeout or 5 * self.scale
            self.signal(signum)
            code = self.wait_exit(timeout)
            if code is None:
                self.kill()
                raise LaunchError("gophermqd did not exit within %s s of signal %d\n%s"
                                  % (timeout, signum, self.log_tail()))
        else:
            code = self.wait_exit(5 * self.scale)
        if expect is not None and code != expect:
            raise LaunchError("gophermqd exited with %s, expected %s%s\n%s"
                              % (code, expect, self.exit_hint(code), self.log_tail()))
        return code

    def exit_hint(self, code):
        """Words to add to an unexpected exit code (none here)."""
        return ""

    def kill(self):
        """SIGKILL, for cleanup after a failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=10 * self.scale)
            except subprocess.TimeoutExpired:
                pass

    # -- log -----------------------------------------------------------
    def log(self):
        """Everything the daemon wrote to stderr and stdout so far."""
        with self.lines_changed:
            return "\n".join(self.lines) + ("\n" if self.lines else "")

    def log_lines(self):
        with self.lines_changed:
            return list(self.lines)

    def log_tail(self, count=60):
        lines = self.log_lines()[-count:]
        return "---- gophermqd log (last %d lines) ----\n%s\n----" % (len(lines), "\n".join(lines))

    def log_count(self, pattern):
        """How many log lines match the regex pattern."""
        regex = re.compile(pattern)
        return sum(1 for line in self.log_lines() if regex.search(line))

    def wait_for_log(self, pattern, count=1, timeout=None):
        """Waits until at least count lines match pattern; returns them.
        Raises LaunchError on timeout or when the daemon exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (timeout or 15 * self.scale)
        with self.lines_changed:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                exited = self.process.poll() is not None and \
                    not any(reader.is_alive() for reader in self.readers)
                remaining = deadline - time.monotonic()
                if exited or remaining <= 0:
                    break
                self.lines_changed.wait(min(remaining, 0.2))
        state = "exited with %s" % self.process.poll() if exited else "timed out"
        raise LaunchError("%s waiting for %d log line(s) matching %r\n%s"
                          % (state, count, pattern, self.log_tail()))

    # -- readiness -----------------------------------------------------
    def probe(self, method, path, timeout):
        """(status, body) of one plain HTTP request on a fresh connection."""
        connection = http.client.HTTPConnection(self.api_host, self.api_port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_ready(self, timeout=None):
        """Polls GET /ready until it answers 204."""
        deadline = time.monotonic() + (timeout or 15 * self.scale)
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                status, _ = self.probe("GET", "/ready", timeout=2 * self.scale)
                if status == 204:
                    return
                last = "status %d" % status
            except (OSError, http.client.HTTPException) as error:
                last = repr(error)
            time.sleep(0.05)
        raise LaunchError("GET /ready never answered 204 (last: %s, exit code %s)\n%s"
                          % (last, self.process.poll(), self.log_tail()))


def launch(directory, options=None, name="gophermqd", binary=None, preexec_fn=None,
           timeout=None):
    """Writes DIRECTORY/NAME.conf (loopback, ports 0, then options) and
    starts gophermqd with it; returns the started DaemonProcess."""
    daemon = DaemonProcess(os.path.join(directory, name + ".conf"), binary=binary,
                           preexec_fn=preexec_fn)
    daemon.write_config(options)
    return daemon.start(timeout)
