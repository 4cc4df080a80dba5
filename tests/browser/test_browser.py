#!/usr/bin/env python3
"""test_browser.py - a real browser on GET /api/stream: headless Chromium
runs tests/browser/stream.html, whose EventSource reads a subscriber's
stream from the daemon, loses the connection and resumes by itself.

How it works:
  - the daemon runs with cors_origin = "*" (tests/blackbox/harness.py starts
    it, on free loopback ports);
  - a tiny HTTP server of this test, on another loopback port, serves
    stream.html and takes the page's reports: the page POSTs everything it
    has seen (opens, errors, messages, acks) to /report after each change.
    The page and the daemon are thus of different origins, as on a real
    site, so the stream and the acks need the daemon's CORS header;
  - Chromium (`chromium --headless`, Debian's package) loads the page, with
    the daemon's URL and the subscriber in the query string, and is left
    running until the test ends it.

The test never tells the page to reconnect: it cuts the stream from the
server side and the EventSource comes back by itself, after the browser's
default reconnection delay (about 3 s, as the daemon sends no `retry:`),
with the Last-Event-ID of the last event it got.  Chromium sends that
header without a CORS preflight (the daemon answers OPTIONS with 405, so a
preflight would make the reconnection fail, and these tests with it).

  PlainStreamTest  a plain subscription, persistence = "log": the daemon is
                   restarted on the same ports and data directory (the
                   stream drops), messages are published before the page is
                   back, and the page ends with every message exactly once,
                   in order.
  AckStreamTest    an ack subscription, the page acks each message
                   (fetch POST /api/ack): the test takes the stream over
                   with a stream of its own (which ends the page's), lets
                   messages go in flight to it without acking them, drops
                   it and publishes more; the reconnected page gets the
                   unacked in-flight ones again (seq > Last-Event-ID) and
                   the rest, and acks them all: nothing lost, nothing left.

Without a startable Chromium the whole file is skipped (exit 77, automake's
SKIP) with the reason; $GOPHERMQ_CHROMIUM names another binary.
"""

import atexit
import http.client
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "blackbox"))
import harness  # noqa: E402
from harness import DaemonTestCase, unique_subject  # noqa: E402

SKIP = 77                              # automake: the test was skipped
PAGE = os.path.join(HERE, "stream.html")
S = harness.SCALE
PAGE_LOAD_TIMEOUT = 30 * S             # Chromium's start and the page's first report
WAIT = 20 * S                          # anything the page must see (a reconnection is ~3 s)
ACK_WAIT_MS = 120000                   # no redelivery by timeout within a test
WATCHDOG = 180 * S

_browsers = set()
_browsers_lock = threading.Lock()


def chromium_binary():
    """The browser to run: $GOPHERMQ_CHROMIUM, or chromium on PATH."""
    named = os.environ.get("GOPHERMQ_CHROMIUM")
    if named:
        return shutil.which(named)
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserUnavailable(Exception):
    """Chromium is missing or died before it could load a page."""


class PageServer:
    """Serves stream.html on 127.0.0.1 and keeps the page's newest report."""

    def __init__(self):
        self.state = None
        self.reports = 0
        self.changed = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", content_type="text/plain; charset=utf-8"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if urllib.parse.urlsplit(self.path).path != "/stream.html":
                    self.reply(404, b"not found\n")
                    return
                with open(PAGE, "rb") as handle:
                    self.reply(200, handle.read(), "text/html; charset=utf-8")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/report":
                    self.reply(404, b"not found\n")
                    return
                try:
                    state = json.loads(body.decode("utf-8"))
                except ValueError:
                    self.reply(400, b"not JSON\n")
                    return
                server.take(state)
                self.reply(204)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # Chromium ending (killed at the end of a test) resets its
                # keep-alive connections: not worth a traceback.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def take(self, state):
        with self.changed:
            if self.state is None or state.get("report", 0) > self.state.get("report", 0):
                self.state = state
            self.reports += 1
            self.changed.notify_all()

    def url(self, **query):
        return "http://127.0.0.1:%d/stream.html?%s" % (self.port, urllib.parse.urlencode(query))

    def latest(self):
        with self.changed:
            return self.state

    def wait(self, predicate, timeout, what, browser=None):
        """Waits until predicate(state) holds for the page's newest report;
        returns that state.  Fails with the page's state and the browser's
        log otherwise."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if self.state is not None and predicate(self.state):
                    return self.state
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(min(remaining, 0.2))
            state = self.state
        raise AssertionError("the page never reported %s within %s s; its last report:\n%s%s"
                             % (what, timeout, json.dumps(state, indent=1),
                                browser.log_tail() if browser else ""))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Browser:
    """One headless Chromium with a throw-away profile, showing url."""

    FLAGS = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--mute-audio",
    ]

    def __init__(self, binary, url):
        self.directory = tempfile.mkdtemp(prefix="gophermq-browser-")
        self.log_path = os.path.join(self.directory, "chromium.log")
        environment = dict(os.environ)
        # Keep Chromium's files out of the user's home.
        environment["HOME"] = self.directory
        environment["XDG_CONFIG_HOME"] = os.path.join(self.directory, "config")
        environment["XDG_CACHE_HOME"] = os.path.join(self.directory, "cache")
        argv = [binary] + self.FLAGS + ["--user-data-dir=" + os.path.join(self.directory, "profile"),
                                        url]
        with open(self.log_path, "wb") as log:
            # A session of its own: close() ends Chromium and its helper
            # processes, and nothing else, by process group.
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        with _browsers_lock:
            _browsers.add(self)

    def exited(self):
        return self.process.poll()

    def log_tail(self, lines=25):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                text = handle.read().splitlines()
        except OSError:
            return ""
        # D-Bus complaints are noise in a container without a session bus.
        text = [line for line in text if "dbus" not in line.lower()][-lines:]
        if not text:
            return ""
        return "\n---- chromium log (last %d lines) ----\n%s\n----" % (len(text), "\n".join(text))

    def close(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        with _browsers_lock:
            _browsers.discard(self)
        shutil.rmtree(self.directory, ignore_errors=True)


def _close_browsers():
    with _browsers_lock:
        browsers = list(_browsers)
    for browser in browsers:
        browser.close()


atexit.register(_close_browsers)


class StreamReader:
    """The test's own GET /api/stream: a competing client."""

    def __init__(self, daemon, subject, subscriber):
        self.connection = http.client.HTTPConnection(daemon.api_host, daemon.api_port,
                                                     timeout=WAIT)
        self.connection.request("GET", "/api/stream?" + urllib.parse.urlencode(
            {"subject": subject, "id": subscriber}))
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise AssertionError("GET /api/stream: %d %r"
                                 % (self.response.status, self.response.read()[:300]))

    def events(self, count):
        """Reads count message events; returns their decoded data lines."""
        events, data = [], None
        while len(events) < count:
            line = self.response.readline()
            if not line:
                raise AssertionError("stream ended after %d events" % len(events))
            line = line.decode("utf-8").rstrip("\r\n")
            if line.startswith("data: "):
                data = json.loads(line[len("data: "):])
            elif line == "" and data is not None:
                events.append(data)
                data = None
        return events

    def close(self):
        self.connection.close()


class BrowserTestCase(DaemonTestCase):
    """Opens stream.html in Chromium for one subscriber of a daemon."""

    def open_page(self, daemon, subject, subscriber, ack=False):
        binary = chromium_binary()
        if binary is None:
            raise BrowserUnavailable("chromium is not installed")
        page = PageServer()
        self.addCleanup(page.close)
        query = {"api": "http://%s:%d" % (daemon.api_host, daemon.api_port),
                 "subject": subject, "id": subscriber}
        if ack:
            query["ack"] = "1"
        started = time.monotonic()
        browser = Browser(binary, page.url(**query))
        self.addCleanup(browser.close)
        deadline = started + PAGE_LOAD_TIMEOUT
        with page.changed:
            while page.state is None:
                code = browser.exited()
                if code is not None:
                    raise BrowserUnavailable("chromium exited with status %s before it loaded "
                                             "the page%s" % (code, browser.log_tail()))
                if time.monotonic() > deadline:
                    raise AssertionError("chromium runs but never loaded the page within %s s%s"
                                         % (PAGE_LOAD_TIMEOUT, browser.log_tail()))
                page.changed.wait(0.2)
        state = page.wait(lambda s: s["opens"] >= 1 or s["closed"] or s["problems"], WAIT,
                          "an open stream", browser)
        self.assertPageHealthy(state, browser)
        print("  chromium showed the page and opened the stream in %.1f s"
              % (time.monotonic() - started))
        return page, browser

    def assertPageHealthy(self, state, browser):
        self.assertEqual(state["problems"], [], browser.log_tail())
        self.assertFalse(state["closed"], "the EventSource gave up (readyState CLOSED): a "
                         "failed CORS check or preflight, or a non-200 answer%s"
                         % browser.log_tail())

    def assertDelivered(self, state, expected, browser):
        """The page got exactly the messages expected, each once, in order,
        with increasing seqs."""
        got = [m["data"] for m in state["messages"]]
        self.assertEqual(got, expected, "the page's messages, in order%s" % browser.log_tail())
        seqs = [m["seq"] for m in state["messages"]]
        self.assertEqual(seqs, sorted(set(seqs)), "seqs not strictly increasing")

    def wait_streams(self, daemon, predicate):
        return daemon.wait_metric("gophermq_streams", predicate, timeout=WAIT)

    def run(self, result=None):
        try:
            return super().run(result)
        finally:
            sys.stdout.flush()


class PlainStreamTest(BrowserTestCase):

    def test_page_resumes_after_a_daemon_restart_without_loss(self):
        daemon = harness.Daemon(start=False, owner=self.id())
        self.addCleanup(daemon.close)
        # Fixed ports: after the restart the daemon is back where the page
        # reconnects to.
        daemon.write_config({"cors_origin": "*", "persistence": "log",
                             "data_dir": os.path.join(daemon.directory, "data"),
                             "port": harness.free_port(), "metrics_port": harness.free_port()})
        daemon.start()
        subject = unique_subject("browser.plain")
        subscriber = daemon.subscribe(subject)
        try:
            page, browser = self.open_page(daemon, subject, subscriber)
        except BrowserUnavailable as error:
            raise unittest.SkipTest(str(error)) from None
        self.wait_streams(daemon, lambda v: v == 1)

        before = ["before-%d" % i for i in range(5)]
        for data in before:
            daemon.publish_ok(subject, data)
        state = page.wait(lambda s: len(s["messages"]) >= len(before), WAIT,
                          "the first %d messages" % len(before), browser)
        self.assertDelivered(state, before, browser)

        # The stream drops with the daemon; the subscriber and the sequence
        # counter survive in the journal.
        dropped = time.monotonic()
        daemon.stop()
        daemon.start()
        after = ["after-%d" % i for i in range(5)]
        for data in after:
            daemon.publish_ok(subject, data)
        if daemon.metrics().value("gophermq_streams") == 0:
            print("  published %d messages while the page was away" % len(after))
        else:
            print("  note: the page was back before the publishes ended")

        state = page.wait(lambda s: len(s["messages"]) >= len(before) + len(after)
                          or s["closed"] or s["problems"], WAIT,
                          "all %d messages" % (len(before) + len(after)), browser)
        print("  the page had every message %.1f s after the restart began"
              % (time.monotonic() - dropped))
        self.assertPageHealthy(state, browser)
        self.assertDelivered(state, before + after, browser)
        self.assertEqual(state["opens"], 2, "one reconnection, by the browser itself")
        self.assertEqual([m["connection"] for m in state["messages"]],
                         [1] * len(before) + [2] * len(after))
        self.assertTrue(all(m["subject"] == subject and m["attempt"] == 1
                            for m in state["messages"]), state["messages"])
        metrics = daemon.metrics()
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_streams"), 1)


class AckStreamTest(BrowserTestCase):

    def test_page_resumes_in_flight_messages_after_a_takeover(self):
        # log_level debug: the daemon logs what a Last-Event-ID made it resend.
        daemon = self.start_daemon({"cors_origin": "*", "log_level": "debug"})
        subject = unique_subject("browser.ack")
        status, _, reply = daemon.post_json("/api/subscribe", {"subject": subject, "ack": True,
                                                               "ack_wait_ms": ACK_WAIT_MS})
        self.assertEqual(status, 200, reply)
        subscriber = reply["id"]
        try:
            page, browser = self.open_page(daemon, subject, subscriber, ack=True)
        except BrowserUnavailable as error:
            raise unittest.SkipTest(str(error)) from None
        self.wait_streams(daemon, lambda v: v == 1)

        first = ["first-%d" % i for i in range(4)]
        for data in first:
            daemon.publish_ok(subject, data)
        state = page.wait(lambda s: len(s["acks"]) >= len(first), WAIT,
                          "acks of the first %d messages" % len(first), browser)
        self.assertDelivered(state, first, browser)
        daemon.wait_metric("gophermq_inflight_messages", lambda v: v == 0, timeout=WAIT)

        # A second stream for the subscriber ends the page's.  What goes out
        # on it is in flight, and this client never acks it.
        dropped = time.monotonic()
        taker = StreamReader(daemon, subject, subscriber)
        try:
            taken = ["taken-%d" % i for i in range(3)]
            for data in taken:
                daemon.publish_ok(subject, data)
            events = taker.events(len(taken))
            self.assertEqual([e["data"] for e in events], taken)
        finally:
            taker.close()
        # The page is still away (its reconnection delay is about 3 s):
        # these wait in the queue.
        queued = ["queued-%d" % i for i in range(3)]
        for data in queued:
            daemon.publish_ok(subject, data)
        if page.latest()["opens"] == 1:
            print("  %d messages in flight to the test's stream, %d queued, page away"
                  % (len(taken), len(queued)))
        else:
            print("  note: the page was back before the publishes ended")

        expected = first + taken + queued
        state = page.wait(lambda s: len(s["acks"]) >= len(expected) or s["closed"]
                          or s["problems"], WAIT,
                          "acks of all %d messages" % len(expected), browser)
        print("  the page had acked every message %.1f s after the takeover"
              % (time.monotonic() - dropped))
        self.assertPageHealthy(state, browser)
        self.assertDelivered(state, expected, browser)
        self.assertEqual(state["opens"], 2, "one reconnection, by the browser itself")
        self.assertEqual(sorted(a["seq"] for a in state["acks"]),
                         [m["seq"] for m in state["messages"]])
        self.assertEqual([(a["status"], a["count"]) for a in state["acks"]],
                         [(200, 1)] * len(expected), "every ack answered 200, count 1")
        # The browser's own Last-Event-ID (the last seq it had) brought the
        # taken messages back, as second deliveries.
        last_seen = state["messages"][len(first) - 1]["seq"]
        daemon.wait_for_log(r"stream of %s: %d in-flight message\(s\) after %d sent again"
                            % (subscriber, len(taken), last_seen), timeout=WAIT)
        attempts = [m["attempt"] for m in state["messages"]]
        self.assertEqual(attempts, [1] * len(first) + [2] * len(taken) + [1] * len(queued))
        metrics = daemon.metrics()
        self.assertEqual(metrics.value("gophermq_inflight_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_acked_total"), len(expected))
        self.assertEqual(metrics.value("gophermq_streams"), 1)


def _watchdog():
    _close_browsers()
    harness._watchdog()


def main():
    """Runs the tests verbosely.  Exit 0 when all passed, 77 when Chromium
    is missing or cannot start (every test skipped), 1 otherwise."""
    if not (os.path.isfile(harness.DAEMON) and os.access(harness.DAEMON, os.X_OK)):
        print("ERROR: daemon %s not found or not executable (set GOPHERMQD)" % harness.DAEMON)
        sys.exit(99)
    binary = chromium_binary()
    if binary is None:
        print("SKIP: %s is not installed (apt-get install chromium)"
              % os.environ.get("GOPHERMQ_CHROMIUM", "chromium"))
        sys.exit(SKIP)
    print("gophermqd: %s\nchromium: %s" % (harness.DAEMON, binary))
    watchdog = threading.Timer(WATCHDOG, _watchdog)
    watchdog.daemon = True
    watchdog.start()
    loader = unittest.defaultTestLoader
    if sys.argv[1:]:
        suite = loader.loadTestsFromNames(sys.argv[1:], sys.modules["__main__"])
    else:
        suite = loader.loadTestsFromModule(sys.modules["__main__"])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2,
                                     resultclass=harness.DaemonLogResult)
    started = time.monotonic()
    result = runner.run(suite)
    watchdog.cancel()
    print("browser tests took %.1f s" % (time.monotonic() - started))
    sys.stdout.flush()
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun and len(result.skipped) == result.testsRun:
        for _, reason in result.skipped:
            print("SKIP: %s" % reason)
        sys.exit(SKIP)
    sys.exit(0)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(99)
