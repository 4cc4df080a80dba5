#!/usr/bin/env python3
"""test_fleet.py - three gophermqd behind HAProxy, configured by the shipped
etc/haproxy-gophermq.cfg.example (`make check-fleet`).

Three brokers (persistence = "log", each in a directory of its own) and
one HAProxy run on free loopback ports.  HAProxy gets the shipped file with
only the address of its `bind` line and of its `server brokerN` lines
changed (to the brokers', in both backends): every other line is used as
shipped, so what passes here is the file admins install.  It checks:

  - each endpoint (subscribe, publish, publish/async, publish/batch, fetch
    held or not, ack, nack, extend, unsubscribe, stream) reaches, through
    the proxy, the one broker of its subject's first token, on one
    keep-alive connection: the request counters of that broker alone grow
    by exactly the requests sent, and a subscriber made through the proxy
    exists on that broker only (asked directly); first tokens spread over
    all three brokers; an ack subscription (fetch, nack, redelivery,
    extend, ack), wildcard subscriptions `T.>` and `T.*` receiving what is
    published to `T.work`, `T.a.b`..., and a stream receiving events;
  - a publish of nearly max_message_size with `subject` after `data` is
    routed (the buffer holds it whole), a batch larger than the buffer is
    routed by its first message, and a body cut before its subject is
    answered 413 by the proxy;
  - requests the proxy cannot route (no subject, not JSON, a wildcard or
    empty or non-ASCII first token) are answered by the proxy with its JSON
    error and reach no broker; GET /ready is 204 from the proxy;
  - a stream through the proxy stays open over idle keepalives, a held
    fetch is answered, and `timeout server` exceeds the brokers' default
    fetch_max_wait_ms and stream_keepalive_s;
  - with one broker stopped, its subjects get 503 {"message":"broker
    unavailable"} from the proxy and are not moved (no other broker sees
    any of those requests), the others' subjects keep working, CORS
    preflights still work; after its restart its subscribers and pending
    (and in-flight) messages are back through the proxy.

Exit 77 (skipped) only when haproxy is not installed.  No assertion on
speed: every wait is generous and ends as soon as its condition holds.
HAProxy is stopped at the end and, should this process die, by the kernel
(PR_SET_PDEATHSIG); harness.py stops the daemons.
"""

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GOPHERMQ_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "blackbox"))
import harness  # noqa: E402

EXAMPLE = os.path.join(SRCDIR, "etc", "haproxy-gophermq.cfg.example")
JSON_TYPE = harness.JSON_CONTENT_TYPE
BROKERS = 3
WAIT = harness.WAIT_TIMEOUT
# Candidate first tokens: enough that each broker owns some (the mapping
# is fixed by the file's hash settings and server ids, so this is not luck).
TOKENS = ["orders", "payments", "users", "sensors", "jobs", "audit", "billing", "chat",
          "media", "search", "stock", "tickets", "alerts", "backups", "carts", "devices",
          "emails", "fraud", "ledger", "quotes", "reports", "trades", "uploads", "video"]
# gophermq_client_request_rate's `method` label of each path.
METHODS = {"/api/subscribe": "subscribe", "/api/unsubscribe": "unsubscribe",
           "/api/publish": "publish", "/api/publish/async": "publish_async",
           "/api/publish/batch": "publish_batch", "/api/fetch": "fetch", "/api/ack": "ack",
           "/api/nack": "nack", "/api/extend": "extend", "/api/stream": "stream"}


def find_haproxy():
    found = shutil.which("haproxy")
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        path = os.path.join(directory, "haproxy")
        if os.access(path, os.X_OK):
            return path
    return None


def say(text):
    print("  - " + text, flush=True)


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent():
    """In the child: SIGKILL it when the test process dies (PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)


def rewrite_config(text, proxy_port, broker_ports):
    """The shipped file with the `bind` address and each `server brokerN`
    address replaced; returns (text, number of lines changed)."""
    lines, changed, binds, servers = [], 0, 0, set()
    for line in text.splitlines(True):
        new = line
        match = re.match(r"^(\s*bind\s+)(\S+)(.*)$", line, re.S)
        if match:
            new = "%s127.0.0.1:%d%s" % (match.group(1), proxy_port, match.group(3))
            binds += 1
        match = re.match(r"^(\s*server\s+broker(\d+)\s+)(\S+)(.*)$", line, re.S)
        if match:
            number = int(match.group(2))
            new = "%s127.0.0.1:%d%s" % (match.group(1), broker_ports[number - 1], match.group(4))
            servers.add(number)
        changed += new != line
        lines.append(new)
    if binds != 1 or servers != set(range(1, BROKERS + 1)):
        raise AssertionError("%s: expected one bind line and servers broker1..broker%d, found "
                             "%d bind line(s) and servers %r" % (EXAMPLE, BROKERS, binds, servers))
    return "".join(lines), changed


class Proxy:
    """haproxy -db -f FILE, its output in a file.  Its address is api_host
    and api_port, as a Daemon's (for harness.EventStream)."""

    api_host = "127.0.0.1"

    @property
    def api_port(self):
        return self.port

    def __init__(self, binary, directory, broker_ports):
        with open(EXAMPLE, encoding="utf-8") as handle:
            self.shipped = handle.read()
        self.binary = binary
        self.directory = directory
        self.config = os.path.join(directory, "haproxy.cfg")
        self.output_path = os.path.join(directory, "haproxy.out")
        self.process = None
        self.broker_ports = broker_ports

    def check(self, path):
        result = subprocess.run([self.binary, "-c", "-f", path], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                timeout=30)
        if result.returncode != 0:
            raise AssertionError("haproxy -c -f %s failed:\n%s" % (path, result.stdout))

    def start(self):
        self.check(EXAMPLE)
        for attempt in range(3):          # the free port may be taken meanwhile
            self.port = harness.free_port()
            text, changed = rewrite_config(self.shipped, self.port, self.broker_ports)
            self.changed = changed
            with open(self.config, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.check(self.config)
            output = open(self.output_path, "ab")
            try:
                self.process = subprocess.Popen([self.binary, "-db", "-f", self.config],
                                                stdin=subprocess.DEVNULL, stdout=output,
                                                stderr=subprocess.STDOUT,
                                                preexec_fn=_die_with_parent)
            finally:
                output.close()
            if self._wait_ready():
                return
            self.stop()
        raise AssertionError("haproxy did not start:\n" + self.output())

    def _wait_ready(self):
        deadline = time.monotonic() + harness.START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/ready")
                status = connection.getresponse().status
                connection.close()
                if status == 204:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return False

    def output(self):
        try:
            with open(self.output_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, timeout=None):
        return harness.Client("127.0.0.1", self.port, timeout)


class FleetTest(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if (HAPROXY or find_haproxy()) is None:
            raise unittest.SkipTest("haproxy is not installed")
        owner = cls.__module__ + "." + cls.__qualname__
        cls.brokers = []
        for _ in range(BROKERS):
            daemon = harness.Daemon(owner=owner, start=False)
            cls.addClassCleanup(daemon.close)
            options = {"persistence": "log", "data_dir": os.path.join(daemon.directory, "data"),
                       "fsync": "never", "segment_size": 1 << 20, "stream_keepalive_s": 1,
                       "cors_origin": "*"}
            daemon.write_config(options)
            daemon.start()
            # Pin the ports it got: a restart must come back where HAProxy
            # sends its subjects.
            options.update(port=daemon.api_port, metrics_port=daemon.metrics_port)
            daemon.write_config(options)
            cls.brokers.append(daemon)
        directory = tempfile.mkdtemp(prefix="gophermq-fleet-")
        cls.addClassCleanup(shutil.rmtree, directory, True)
        cls.proxy = Proxy(HAPROXY or find_haproxy(), directory, [d.api_port for d in cls.brokers])
        cls.addClassCleanup(cls.proxy.stop)
        cls.proxy.start()
        print("\nhaproxy %s on 127.0.0.1:%d with %s (%d lines changed: bind and servers);"
              " brokers on %s" % (cls.proxy.binary, cls.proxy.port, EXAMPLE, cls.proxy.changed,
                                  ", ".join(str(d.api_port) for d in cls.brokers)), flush=True)
        cls.owners = cls.map_tokens()

    # -- helpers ---------------------------------------------------------
    @classmethod
    def owner_of(cls, subject, subscriber):
        """Indexes of the brokers that know subscriber of subject, asked
        directly (a peek changes nothing)."""
        found = []
        for index, daemon in enumerate(cls.brokers):
            if not daemon.running():
                continue
            status, _, _ = daemon.post_json("/api/fetch", {"subject": subject, "id": subscriber,
                                                           "peek": True})
            if status == 200:
                found.append(index)
        return found

    @classmethod
    def map_tokens(cls):
        """{broker index: [first tokens it owns]}, learnt by subscribing
        through the proxy and asking each broker."""
        owners = {index: [] for index in range(BROKERS)}
        with cls.proxy.client() as client:
            for token in TOKENS:
                subject = token + ".probe"
                status, _, reply = client.post_json("/api/subscribe", {"subject": subject})
                if status != 200:
                    raise AssertionError("subscribe %s through the proxy: %d %r"
                                         % (subject, status, reply))
                found = cls.owner_of(subject, reply["id"])
                if len(found) != 1:
                    raise AssertionError("%s: subscriber on brokers %r, expected exactly one"
                                         % (subject, found))
                owners[found[0]].append(token)
                status, _, _ = client.post_json("/api/unsubscribe",
                                                {"subject": subject, "id": reply["id"]})
                if status != 200:
                    raise AssertionError("unsubscribe %s through the proxy: %d" % (subject, status))
        return owners

    def token(self, broker, number=0):
        tokens = self.owners[broker]
        self.assertGreater(len(tokens), number, "broker %d owns tokens %r" % (broker + 1, tokens))
        return tokens[number]

    def stream(self, subject, subscriber):
        """GET /api/stream through the proxy."""
        return harness.EventStream(self.proxy, "/api/stream?" + urllib.parse.urlencode(
            {"subject": subject, "id": subscriber}))

    def counters(self, indexes=None):
        """{broker index: {(method, code): requests}} from each broker's metrics."""
        result = {}
        for index in (range(BROKERS) if indexes is None else indexes):
            metrics = self.brokers[index].metrics()
            result[index] = {(labels.get("method"), labels.get("code")): value
                             for labels, value in metrics.find("gophermq_client_request_rate")}
        return result

    @staticmethod
    def delta(after, before):
        return {key: value - before.get(key, 0) for key, value in after.items()
                if value - before.get(key, 0)}

    def assert_only(self, owner, before, sent, indexes=None):
        """The requests sent ({(method, code): n}) reached broker owner, and
        no request at all reached the others (indexes: the brokers to look at)."""
        indexes = list(range(BROKERS)) if indexes is None else indexes
        expected = {key: value for key, value in sent.items() if value}
        deadline = time.monotonic() + WAIT
        while True:          # a counter may be bumped just after the reply
            after = self.counters(indexes)
            got = self.delta(after[owner], before[owner]) if owner is not None else {}
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if owner is not None:
            self.assertEqual(got, expected, "requests counted by broker %d" % (owner + 1))
        for index in indexes:
            if index != owner:
                self.assertEqual(self.delta(after[index], before[index]), {},
                                 "requests counted by broker %d, which should see none"
                                 % (index + 1))

    def subscriber_counts(self):
        return [d.metrics().value("gophermq_subscribers") for d in self.brokers]

    # -- tests -------------------------------------------------------------
    def test_1_every_endpoint_goes_to_the_broker_of_the_first_token(self):
        say("first tokens per broker: %s" % "; ".join(
            "broker%d %s" % (i + 1, ",".join(t)) for i, t in self.owners.items()))
        for index in range(BROKERS):
            self.assertTrue(self.owners[index], "broker %d owns none of %d first tokens"
                            % (index + 1, len(TOKENS)))
        with self.proxy.client() as client:           # one keep-alive connection
            for index in range(BROKERS):
                self.endpoints_of_one_token(client, index, self.token(index))

    def endpoints_of_one_token(self, client, owner, token):
        say("broker%d, first token %r: every endpoint through the proxy on one keep-alive "
            "connection lands there and only there" % (owner + 1, token))
        sent = {}

        def call(path, body, status=200):
            got, headers, reply = client.post_json(path, body)
            self.assertEqual(got, status, "%s %r: %r" % (path, body, reply))
            key = (METHODS[path], str(status))
            sent[key] = sent.get(key, 0) + 1
            return reply

        before = self.counters()
        subscribers_before = self.subscriber_counts()
        plain = call("/api/subscribe", {"subject": token + ".plain"})["id"]
        work = call("/api/subscribe", {"subject": token + ".work", "ack": True})["id"]
        tree = call("/api/subscribe", {"subject": token + ".>"})["id"]
        star = call("/api/subscribe", {"subject": token + ".*"})["id"]
        live = call("/api/subscribe", {"subject": token + ".live"})["id"]
        subscribers = self.subscriber_counts()
        self.assertEqual([a - b for a, b in zip(subscribers, subscribers_before)],
                         [5 if i == owner else 0 for i in range(BROKERS)], "gophermq_subscribers")

        stream = self.stream(token + ".live", live)
        self.addCleanup(stream.close)
        self.assertEqual(stream.status, 200, stream.headers)
        self.assertEqual(stream.next_item(), ("comment", "open"))
        sent[("stream", "200")] = 1

        call("/api/publish", {"subject": token + ".plain", "data": "p1"})
        call("/api/publish/async", {"subject": token + ".plain", "data": "p2"})
        self.assertEqual(call("/api/publish/batch", {"messages": [
            {"subject": token + ".work", "data": "w1"},
            {"subject": token + ".a.b", "data": "deep"},
            {"subject": token + ".live", "data": "s1"}]}), {"status": "ok", "count": 3})

        event = stream.next_event()
        self.assertEqual(json.loads(event["data"])["data"], "s1")
        self.assertEqual(json.loads(event["data"])["subject"], token + ".live")

        # Plain subscription: the sync and the async publish (held fetches).
        data = []
        deadline = time.monotonic() + WAIT
        while len(data) < 2 and time.monotonic() < deadline:
            data += call("/api/fetch", {"subject": token + ".plain", "id": plain,
                                        "wait_ms": 1000})["data"]
        self.assertEqual(sorted(data), ["p1", "p2"])

        # Ack subscription: fetch, nack -> redelivered, extend, ack.
        reply = call("/api/fetch", {"subject": token + ".work", "id": work, "wait_ms": 5000})
        self.assertEqual([(m["data"], m["attempt"]) for m in reply["messages"]], [("w1", 1)])
        seq = reply["messages"][0]["seq"]
        nack = {"subject": token + ".work", "id": work, "seqs": [seq]}
        self.assertEqual(call("/api/nack", nack), {"status": "ok", "count": 1})
        reply = call("/api/fetch", {"subject": token + ".work", "id": work, "wait_ms": 5000})
        self.assertEqual([(m["seq"], m["data"], m["attempt"]) for m in reply["messages"]],
                         [(seq, "w1", 2)])
        self.assertEqual(call("/api/extend", nack), {"status": "ok", "count": 1})
        self.assertEqual(call("/api/ack", nack), {"status": "ok", "count": 1})
        self.assertEqual(call("/api/fetch", {"subject": token + ".work",
                                             "id": work})["messages"], [])

        # Wildcards: T.> gets all five, T.* all but T.a.b.
        for subscriber, pattern, expected in (
                (tree, ".>", ["a.b", "live", "plain", "plain", "work"]),
                (star, ".*", ["live", "plain", "plain", "work"])):
            got = []
            deadline = time.monotonic() + WAIT
            while len(got) < len(expected) and time.monotonic() < deadline:
                got += call("/api/fetch", {"subject": token + pattern, "id": subscriber,
                                           "meta": True, "wait_ms": 1000})["messages"]
            self.assertEqual(sorted(m["subject"][len(token) + 1:] for m in got), expected,
                             "what %s%s received" % (token, pattern))

        for subject, subscriber in ((".plain", plain), (".work", work), (".>", tree),
                                    (".*", star), (".live", live)):
            self.assertEqual(call("/api/unsubscribe", {"subject": token + subject,
                                                       "id": subscriber}), {"status": "ok"})
        self.assertEqual(stream.read_to_end(), [], "the stream ends, cleanly, with its subscriber")
        self.assert_only(owner, before, sent)

        # Asked directly: a subscriber made through the proxy is on that
        # broker only, whatever the rest of the subject.
        for subject in (token, token + ".x.y.z"):
            subscriber = call("/api/subscribe", {"subject": subject})["id"]
            self.assertEqual(self.owner_of(subject, subscriber), [owner], subject)
            call("/api/unsubscribe", {"subject": subject, "id": subscriber})

    def test_2_bodies_larger_than_the_buffer(self):
        owner = 0
        token = self.token(owner)
        say("a publish of nearly max_message_size (1 MiB) with its subject after its data "
            "is routed; a 1.5 MB batch (larger than tune.bufsize) goes to the broker of its "
            "first message; a body cut before its subject gets 413 from the proxy")
        with self.proxy.client() as client:
            status, _, reply = client.post_json("/api/subscribe", {"subject": token + ".big"})
            self.assertEqual(status, 200, reply)
            subscriber = reply["id"]
            before = self.counters()
            body = json.dumps({"data": "x" * 1048000, "subject": token + ".big"})
            status, _, reply = client.post_json("/api/publish", body)
            self.assertEqual((status, reply), (200, {"status": "ok"}))
            self.assert_only(owner, before, {("publish", "200"): 1})
            status, _, reply = client.post_json("/api/fetch", {"subject": token + ".big",
                                                               "id": subscriber})
            self.assertEqual((status, [len(d) for d in reply["data"]]), (200, [1048000]))
            before = self.counters()
            chunk = "x" * 500000
            status, _, reply = client.post_json("/api/publish/batch", {"messages": [
                {"subject": token + ".big", "data": chunk} for _ in range(3)]})
            self.assertEqual((status, reply), (200, {"status": "ok", "count": 3}))
            self.assert_only(owner, before, {("publish_batch", "200"): 1})
            before = self.counters()
            body = json.dumps({"data": "x" * 1200000, "subject": token + ".big"})
            response = client.request("POST", "/api/publish", body)
            self.assertEqual(response[0], 413, response)
            self.assertEqual(response[1].get("Content-Type"), JSON_TYPE)
            self.assertEqual(harness.json_body(response[2]),
                             {"message": "body too large to find its subject"})
            self.assert_only(None, before, {})
            status, _, reply = client.post_json("/api/fetch", {"subject": token + ".big",
                                                               "id": subscriber})
            self.assertEqual((status, [len(d) for d in reply["data"]]), (200, [500000] * 3))
            client.post_json("/api/unsubscribe", {"subject": token + ".big", "id": subscriber})

    def test_3_what_the_proxy_answers_itself(self):
        say("no subject, non-JSON body, wildcard, empty or non-ASCII first token: JSON "
            "error from the proxy, no broker sees the request; /ready 204; unknown path 404")
        cases = [
            ("POST", "/api/subscribe", {"subject": "*.eu"}, 400,
             "first token of subject must not be a wildcard"),
            ("POST", "/api/subscribe", {"subject": ">"}, 400,
             "first token of subject must not be a wildcard"),
            ("POST", "/api/publish", {"subject": "*.x", "data": "d"}, 400,
             "first token of subject must not be a wildcard"),
            ("GET", "/api/stream?subject=%3E&id=x", None, 400,
             "first token of subject must not be a wildcard"),
            ("POST", "/api/subscribe", {}, 400, "no subject to route by"),
            ("POST", "/api/publish", b"subject=orders", 400, "no subject to route by"),
            ("POST", "/api/publish/batch", {"subject": "orders", "messages": []}, 400,
             "no subject to route by"),
            ("GET", "/api/stream?id=x", None, 400, "no subject to route by"),
            ("POST", "/api/subscribe", {"subject": ""}, 400, "invalid subject"),
            ("POST", "/api/subscribe", {"subject": ".orders"}, 400, "invalid subject"),
            ("POST", "/api/subscribe", {"subject": "caf\u00e9.x"}, 400,
             "first token of subject must be printable ASCII"),
            ("POST", "/api/subscribe", "{\"subject\":\"caf\u00e9.x\"}".encode("utf-8"), 400,
             "first token of subject must be printable ASCII"),
            ("GET", "/metrics", None, 404, "Not Found"),
        ]
        before = self.counters()
        with self.proxy.client() as client:
            for method, path, body, status, message in cases:
                response = client.request(method, path, body)
                what = "%s %s %r" % (method, path, body)
                self.assertEqual(response[0], status, "%s: %r" % (what, response[2]))
                self.assertEqual(response[1].get("Content-Type"), JSON_TYPE, what)
                self.assertEqual(harness.json_body(response[2]), {"message": message}, what)
            for method in ("GET", "HEAD"):
                self.assertEqual(client.request(method, "/ready")[0], 204)
        self.assert_only(None, before, {})

    def test_4_streams_and_held_fetches_over_idle_time(self):
        token = self.token(1)
        text = open(EXAMPLE, encoding="utf-8").read()
        match = re.search(r"^\s*timeout\s+server\s+(\d+)(ms|s|m)?\s*$", text, re.M)
        self.assertIsNotNone(match, "timeout server in %s" % EXAMPLE)
        timeout_ms = int(match.group(1)) * {"ms": 1, None: 1, "s": 1000, "m": 60000}[match.group(2)]
        say("timeout server %d ms > fetch_max_wait_ms 30000 and stream_keepalive_s 15 s; a stream "
            "through the proxy stays open over keepalives, then gets an event; held fetches"
            % timeout_ms)
        self.assertGreater(timeout_ms, 30000 + 5000)
        with self.proxy.client() as client:
            status, _, reply = client.post_json("/api/subscribe", {"subject": token + ".idle"})
            self.assertEqual(status, 200, reply)
            subscriber = reply["id"]
            stream = self.stream(token + ".idle", subscriber)
            self.addCleanup(stream.close)
            self.assertEqual((stream.status, (stream.header("content-type") or "")[:17]),
                             (200, "text/event-stream"))
            keepalives = 0
            while keepalives < 3:               # stream_keepalive_s = 1: 3 s of silence
                kind, value = stream.next_item()
                self.assertEqual(kind, "comment", value)
                keepalives += value == "keepalive"
            status, _, reply = client.post_json("/api/publish", {"subject": token + ".idle",
                                                                 "data": "after the silence"})
            self.assertEqual(status, 200, reply)
            self.assertEqual(json.loads(stream.next_event()["data"])["data"], "after the silence")
            stream.close()
            # A held fetch that times out is answered, not cut.
            started = time.monotonic()
            status, _, reply = client.post_json("/api/fetch", {"subject": token + ".idle",
                                                               "id": subscriber, "wait_ms": 1500})
            self.assertEqual((status, reply["data"]), (200, []))
            self.assertGreaterEqual(time.monotonic() - started, 1.0)
            # A held fetch woken by a publish through another connection.
            result = {}

            def held():
                with self.proxy.client() as other:
                    result["reply"] = other.post_json("/api/fetch", {
                        "subject": token + ".idle", "id": subscriber, "wait_ms": 20000})
            thread = threading.Thread(target=held)
            thread.start()
            time.sleep(0.3)
            status, _, reply = client.post_json("/api/publish", {"subject": token + ".idle",
                                                                 "data": "wake up"})
            self.assertEqual(status, 200, reply)
            thread.join(WAIT + 20)
            self.assertEqual((result["reply"][0], result["reply"][2]["data"]), (200, ["wake up"]))
            client.post_json("/api/unsubscribe", {"subject": token + ".idle", "id": subscriber})

    def test_5_a_stopped_broker_keeps_its_subjects(self):
        down = 2
        token = self.token(down)
        daemon = self.brokers[down]
        others = [i for i in range(BROKERS) if i != down]
        say("broker%d (first token %r) holds messages, pending and in flight, then stops"
            % (down + 1, token))
        with self.proxy.client() as client:
            def ok(path, body):
                status, _, reply = client.post_json(path, body)
                self.assertEqual(status, 200, "%s %r: %r" % (path, body, reply))
                return reply
            plain = ok("/api/subscribe", {"subject": token + ".plain"})["id"]
            work = ok("/api/subscribe", {"subject": token + ".work", "ack": True})["id"]
            ok("/api/publish/batch", {"messages": [
                {"subject": token + ".plain", "data": "m1"},
                {"subject": token + ".plain", "data": "m2"},
                {"subject": token + ".work", "data": "j1"},
                {"subject": token + ".work", "data": "j2"}]})
            reply = ok("/api/fetch", {"subject": token + ".work", "id": work, "max": 1})
            self.assertEqual([m["data"] for m in reply["messages"]], ["j1"])   # in flight
        daemon.stop()

        say("its subjects: 503 JSON from the proxy for every endpoint, and no other broker "
            "sees any of those requests")
        before = self.counters(others)
        requests = [
            ("POST", "/api/subscribe", {"subject": token + ".new"}),
            ("POST", "/api/subscribe", {"subject": token}),
            ("POST", "/api/publish", {"subject": token + ".plain", "data": "m3"}),
            ("POST", "/api/publish/async", {"subject": token + ".plain", "data": "m3"}),
            ("POST", "/api/publish/batch", {"messages": [{"subject": token + ".plain",
                                                          "data": "m3"}]}),
            ("POST", "/api/fetch", {"subject": token + ".plain", "id": plain}),
            ("POST", "/api/ack", {"subject": token + ".work", "id": work, "seqs": [1]}),
            ("POST", "/api/unsubscribe", {"subject": token + ".plain", "id": plain}),
            ("GET", "/api/stream?" + urllib.parse.urlencode({"subject": token + ".plain",
                                                            "id": plain}), None),
        ]
        responses = [None] * len(requests)

        def send(number):                    # each takes HAProxy's retry second
            method, path, body = requests[number]
            with self.proxy.client() as one:
                responses[number] = one.request(method, path, body)
        threads = [threading.Thread(target=send, args=(n,)) for n in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT + 10)
        for (method, path, body), response in zip(requests, responses):
            what = "%s %s %r" % (method, path, body)
            self.assertIsNotNone(response, what)
            self.assertEqual(response[0], 503, "%s: %r" % (what, response[2]))
            self.assertEqual(response[1].get("Content-Type"), JSON_TYPE, what)
            self.assertEqual(harness.json_body(response[2]), {"message": "broker unavailable"})
        self.assert_only(None, before, {}, indexes=others)

        say("the other brokers' subjects keep working; CORS preflights still answered")
        for index in others:
            other = self.token(index)
            before = self.counters(others)
            with self.proxy.client() as client:
                status, _, reply = client.post_json("/api/subscribe", {"subject": other + ".up"})
                self.assertEqual(status, 200, reply)
                status, _, _ = client.post_json("/api/publish", {"subject": other + ".up",
                                                                 "data": "fine"})
                self.assertEqual(status, 200)
                status, _, fetched = client.post_json("/api/fetch", {"subject": other + ".up",
                                                                     "id": reply["id"]})
                self.assertEqual((status, fetched["data"]), (200, ["fine"]))
                client.post_json("/api/unsubscribe", {"subject": other + ".up", "id": reply["id"]})
            self.assert_only(index, before, {("subscribe", "200"): 1, ("publish", "200"): 1,
                                             ("fetch", "200"): 1, ("unsubscribe", "200"): 1},
                             indexes=others)
        for _ in range(2 * BROKERS):
            with self.proxy.client() as client:
                status, headers, _ = client.request(
                    "OPTIONS", "/api/publish", headers={"Origin": "http://example.org",
                                                        "Access-Control-Request-Method": "POST"},
                    content_type=None)
            self.assertEqual((status, headers.get("Access-Control-Allow-Origin")), (204, "*"))

        say("broker%d restarted: its subscribers, pending and in-flight messages are back "
            "through the proxy" % (down + 1))
        daemon.start()
        with self.proxy.client() as client:
            status, _, reply = client.post_json("/api/fetch", {"subject": token + ".plain",
                                                               "id": plain})
            self.assertEqual((status, reply.get("data")), (200, ["m1", "m2"]), reply)
            got = []
            deadline = time.monotonic() + WAIT
            while len(got) < 2 and time.monotonic() < deadline:
                status, _, reply = client.post_json("/api/fetch", {
                    "subject": token + ".work", "id": work, "wait_ms": 1000})
                self.assertEqual(status, 200, reply)
                got += reply["messages"]
            self.assertEqual(sorted(m["data"] for m in got), ["j1", "j2"])
            status, _, reply = client.post_json("/api/ack", {
                "subject": token + ".work", "id": work, "seqs": [m["seq"] for m in got]})
            self.assertEqual((status, reply), (200, {"status": "ok", "count": 2}))
            status, _, reply = client.post_json("/api/subscribe", {"subject": token + ".new"})
            self.assertEqual(status, 200, reply)
            self.assertEqual(self.owner_of(token + ".new", reply["id"]), [down])
            for subject, subscriber in ((".plain", plain), (".work", work), (".new", reply["id"])):
                status, _, _ = client.post_json("/api/unsubscribe", {"subject": token + subject,
                                                                     "id": subscriber})
                self.assertEqual(status, 200)


class ProxyLogResult(harness.DaemonLogResult):
    """Adds HAProxy's own output to a failed test's report."""

    def _dump(self, test):
        super()._dump(test)
        proxy = getattr(FleetTest, "proxy", None)
        if proxy is not None:
            self.stream.write("\n---- haproxy output ----\n%s\n----\n" % proxy.output())
            self.stream.flush()


HAPROXY = None

if __name__ == "__main__":
    HAPROXY = find_haproxy()
    if HAPROXY is None:
        print("SKIP: haproxy is not installed (apt-get install haproxy)")
        sys.exit(77)
    harness.DaemonLogResult = ProxyLogResult
    started = time.monotonic()
    try:
        harness.main()
    finally:
        print("test_fleet.py: %.1f s" % (time.monotonic() - started), flush=True)
