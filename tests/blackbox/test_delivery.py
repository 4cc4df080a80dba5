#!/usr/bin/env python3
"""test_delivery.py - issue 11, "delivery": the part of API.md's "Beyond the
original" that consumers use to wait, take bounded batches, share work and
acknowledge it.

Sequence numbers; subscribe options (group, ack, ack_wait_ms, max_deliver,
dead_letter); fetch options (max, max_bytes, wait_ms, meta, peek);
/api/ack, /api/nack, /api/extend, /api/unsubscribe, /api/publish/batch; the
new configuration options and metrics; and the original requests keeping
their exact answers.  Where API.md is silent, the shared decisions of
issue 11 (error texts, checking order, ranges) are what is asserted.

Timing: every wait the daemon is asked for (ack_wait_ms, delay_ms, wait_ms,
fetch_max_wait_ms, connection_timeout) is stretched by T (2 under
valgrind), every bound on how late something may come by harness.SCALE
(10 under valgrind), and every bound is generous: these tests check
behaviour, never speed.
"""

import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, JSON_CONTENT_TYPE, UUID4_RE, json_body, unique_subject  # noqa: E402

S = harness.SCALE
# The stretch of the durations the daemon is asked to time.  Valgrind slows
# the daemon's code, not its clock: a request takes it about a millisecond
# there, tens the first time a code path runs, so twice the plain duration
# (600 ms or more where a test must act before a timer fires) leaves every
# such step far inside its window, while the full SCALE made the tests that
# wait timers out (most of this file) ten times longer.  Bounds on how late
# something may come keep the full SCALE.
T = 2 if harness.VALGRIND else 1


def ms(milliseconds):
    """A duration to put on the wire, in ms, stretched under valgrind."""
    return int(milliseconds * T)


def seconds(milliseconds):
    return milliseconds / 1000.0


# Slack, in seconds, on "about t": how late a timed answer may come.
SLACK = harness.scaled(2.0)
# A wait_ms that no test is meant to reach.
LONG_WAIT = ms(60000)

RELOADED = r"configuration reloaded from "
OWN_SUBJECT = object()     # stands for the subscription's own subject

# Values of the wrong type for an integer field (JSON 1.0 is not an integer).
NOT_INTEGERS = [1.5, 1.0, "1", "", True, False, [], [1], {}]
# Values of the wrong type for a boolean field.
NOT_BOOLEANS = [1, 0, "true", "false", "", [], {}, 1.0]
# (JSON null, a wrong type too, has a test of its own: NullFieldTest.)
# Integer spellings that are not JSON integers, sent as raw JSON text.
RAW_NOT_INTEGERS = ["1e3", "1E3", "1.0", "10.5", "1e0"]

NEW_COUNTERS = ["gophermq_acked_total", "gophermq_nacked_total", "gophermq_redelivered_total",
                "gophermq_dead_lettered_total", "gophermq_max_deliver_dropped_total",
                "gophermq_batch_publishes_total"]
NEW_GAUGES = ["gophermq_inflight_messages", "gophermq_parked_fetches", "gophermq_groups"]
NEW_HISTOGRAMS = ["gophermq_batch_messages"]


def raw_body(fields, name, raw_value):
    """The JSON text of fields with name's value replaced by raw_value verbatim."""
    marker = "__raw_%s__" % uuid.uuid4().hex
    body = dict(fields)
    body[name] = marker
    return json.dumps(body).replace('"%s"' % marker, raw_value)


class HeldRequest(threading.Thread):
    """One POST on its own connection, in a thread, so a test can do other
    things (publish, unsubscribe, signal) while the daemon holds it."""

    def __init__(self, daemon, path, body, timeout=None):
        super().__init__(daemon=True)
        self.d = daemon
        self.path = path
        self.body = body
        self.timeout = timeout or (harness.REQUEST_TIMEOUT + seconds(LONG_WAIT))
        self.response = None
        self.error = None
        self.started_at = self.answered_at = None
        self.start()

    def run(self):
        try:
            client = self.d.client(timeout=self.timeout)
            try:
                client.connection.connect()
                self.started_at = time.monotonic()
                self.response = client.request("POST", self.path, self.body)
            finally:
                client.close()
        except Exception as error:      # reported by result()
            self.error = error
        self.answered_at = time.monotonic()

    def answered(self):
        return not self.is_alive()

    def result(self, timeout=None):
        """(status, headers, body bytes) once answered; AssertionError when
        no answer comes within timeout seconds."""
        self.join(timeout if timeout is not None else harness.WAIT_TIMEOUT)
        if self.is_alive():
            raise AssertionError("held %s %r not answered in time" % (self.path, self.body))
        if self.error is not None:
            raise AssertionError("held %s %r failed: %r" % (self.path, self.body, self.error))
        return self.response

    def reply(self, timeout=None):
        """(status, decoded JSON) once answered."""
        status, _, body = self.result(timeout)
        return status, (json_body(body) if body else None)

    def elapsed(self):
        return self.answered_at - self.started_at


class RawRequests:
    """Many requests held at once on non-blocking sockets, all watched by
    one selector: thousands of held fetches without thousands of threads."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.selector = selectors.DefaultSelector()
        self.open = 0
        self.answers = {}        # key -> (status, body bytes, sent_at, answered_at)

    def send(self, key, path, body):
        data = json.dumps(body).encode("utf-8")
        head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n"
                % (path, self.host, self.port, len(data))).encode("ascii")
        sock = socket.create_connection((self.host, self.port), timeout=harness.REQUEST_TIMEOUT)
        sock.sendall(head + data)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ,
                               {"key": key, "buffer": bytearray(), "sent_at": time.monotonic()})
        self.open += 1

    @staticmethod
    def _parse(buffer):
        """(status, body) when buffer holds a whole response, else None."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3})", head[0])
        status = int(match.group(1)) if match else None
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = bytes(buffer[end + 4:])
        if length is None or len(body) < length:
            return None
        return status, body[:length]

    def _finish(self, sock, state, parsed):
        self.selector.unregister(sock)
        sock.close()
        self.open -= 1
        status, body = parsed if parsed else (None, bytes(state["buffer"]))
        self.answers[state["key"]] = (status, body, state["sent_at"], time.monotonic())

    def poll(self, timeout):
        for selected, _ in self.selector.select(timeout):
            sock, state = selected.fileobj, selected.data
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                state["buffer"] += chunk
                parsed = self._parse(state["buffer"])
                if parsed is not None:
                    self._finish(sock, state, parsed)
            else:
                self._finish(sock, state, self._parse(state["buffer"]))

    def wait_for(self, keys, timeout):
        """Serves the sockets until every key in keys has its answer or
        timeout seconds passed; returns the keys still unanswered."""
        keys = set(keys)
        deadline = time.monotonic() + timeout
        while True:
            missing = keys.difference(self.answers)
            if not missing or time.monotonic() > deadline:
                return missing
            self.poll(min(0.2, max(0.0, deadline - time.monotonic())))

    def close(self):
        for selected in list(self.selector.get_map().values()):
            selected.fileobj.close()
        self.selector.close()


class DeliveryTestCase(DaemonTestCase):
    """Request helpers for the new API; every one asserts what it needs."""

    # -- plain requests ----------------------------------------------------
    def post(self, d, path, body, client=None):
        return d.request("POST", path, body, client=client)

    def subscribe(self, d, subject, client=None, **options):
        body = dict(options, subject=subject)
        response = self.post(d, "/api/subscribe", body, client)
        self.assertEqual(response[0], 200, "subscribe %r: %r" % (body, response[2]))
        reply = json_body(response[2])
        self.assertRegex(reply["id"], UUID4_RE)
        return reply["id"]

    def publish(self, d, subject, data, client=None):
        response = self.post(d, "/api/publish", {"subject": subject, "data": data}, client)
        self.assertJsonReply(response, 200, {"status": "ok"}, "publish %r to %r" % (data, subject))

    def fetch(self, d, subject, subscriber, client=None, **options):
        """The decoded 200 reply of a fetch with options."""
        body = dict(options, subject=subject, id=subscriber)
        response = self.post(d, "/api/fetch", body, client)
        self.assertEqual(response[0], 200, "fetch %r: %r" % (body, response[2]))
        self.assertEqual(response[1].get("Content-Type"), JSON_CONTENT_TYPE)
        return json_body(response[2])

    def assert_plain(self, reply, subject, subscriber):
        self.assertEqual(set(reply), {"subject", "id", "data"}, "not the plain form: %r" % (reply,))
        self.assertEqual((reply["subject"], reply["id"]), (subject, subscriber))
        self.assertIsInstance(reply["data"], list)
        return reply["data"]

    def assert_meta(self, reply, subject, subscriber):
        self.assertEqual(set(reply), {"subject", "id", "messages"}, "not the meta form: %r" % (reply,))
        self.assertEqual((reply["subject"], reply["id"]), (subject, subscriber))
        for message in reply["messages"]:
            self.assertEqual(set(message), {"seq", "subject", "attempt", "data"}, message)
            for field in ("seq", "attempt"):
                self.assertIs(type(message[field]), int, message)
                self.assertGreaterEqual(message[field], 1, message)
            self.assertIsInstance(message["data"], str)
        return reply["messages"]

    def fetch_data(self, d, subject, subscriber, client=None, **options):
        """The data list of a plain-form fetch."""
        return self.assert_plain(self.fetch(d, subject, subscriber, client, **options), subject, subscriber)

    def fetch_meta(self, d, subject, subscriber, client=None, **options):
        """The messages of a meta-form fetch."""
        return self.assert_meta(self.fetch(d, subject, subscriber, client, **options), subject, subscriber)

    def settle(self, d, path, subject, subscriber, seqs, count, client=None, **options):
        """ack / nack / extend, asserting 200 {"status":"ok","count":count}."""
        body = dict(options, subject=subject, id=subscriber, seqs=list(seqs))
        self.assertJsonReply(self.post(d, path, body, client), 200, {"status": "ok", "count": count},
                             "%s %r" % (path, body))

    def batch(self, d, messages, client=None):
        return self.post(d, "/api/publish/batch", {"messages": messages}, client)

    def batch_ok(self, d, messages, client=None):
        self.assertJsonReply(self.batch(d, messages, client), 200,
                             {"status": "ok", "count": len(messages)})

    def unsubscribe(self, d, subject, subscriber):
        self.assertJsonReply(self.post(d, "/api/unsubscribe", {"subject": subject, "id": subscriber}),
                             200, {"status": "ok"})

    def held(self, d, subject, subscriber, **options):
        """A fetch held in a thread; see HeldRequest."""
        return HeldRequest(d, "/api/fetch", dict(options, subject=subject, id=subscriber))

    # -- metrics -----------------------------------------------------------
    def metric(self, d, name, **labels):
        value = d.metrics().value(name, **labels)
        return 0 if value is None else value

    def wait_parked(self, d, count):
        """Waits until count fetches are held (gophermq_parked_fetches)."""
        d.wait_metric("gophermq_parked_fetches", lambda value: value >= count)

    def assert_no_message_left(self, d, subject, subscriber):
        self.assertEqual(self.fetch_data(d, subject, subscriber, meta=False), [])


# ---------------------------------------------------------------------------
class SequenceNumberTest(DeliveryTestCase):
    def test_first_message_of_a_fresh_daemon_has_seq_1(self):
        d = self.start_daemon()
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        self.publish(d, subject, "first")
        self.assertEqual(self.fetch_meta(d, subject, subscriber, meta=True),
                         [{"seq": 1, "subject": subject, "attempt": 1, "data": "first"}])

    def test_seqs_strictly_increase_in_publish_order_across_subjects_and_endpoints(self):
        d = self.start_daemon({"pool_size": 1})
        first, second = unique_subject(), unique_subject()
        plain = self.subscribe(d, first)
        acked = self.subscribe(d, second, ack=True)
        order = []
        with d.client() as client:
            for number in range(20):
                subject = first if number % 3 else second
                self.publish(d, subject, "p%d" % number, client)
                order.append("p%d" % number)
                if number == 10:
                    # A refused publish in the middle changes nothing here.
                    self.assertEqual(d.publish(unique_subject(), "nobody")[0], 404)
            self.batch_ok(d, [{"subject": first, "data": "b0"}, {"subject": second, "data": "b1"}], client)
            order += ["b0", "b1"]
        received = self.fetch_meta(d, first, plain, meta=True) + self.fetch_meta(d, second, acked)
        seq_of = {message["data"]: message["seq"] for message in received}
        self.assertEqual(sorted(seq_of), sorted(order))
        seqs = [seq_of[text] for text in order]
        self.assertEqual(seqs[0], 1)
        for earlier, later in zip(seqs, seqs[1:]):
            self.assertGreater(later, earlier, "seqs not strictly increasing: %r" % seqs)
        # An asynchronous publish gets the next one.
        self.assertJsonReply(self.post(d, "/api/publish/async", {"subject": first, "data": "async"}),
                             200, {"status": "ok"})
        deadline = time.monotonic() + harness.WAIT_TIMEOUT
        late = []
        while not late and time.monotonic() < deadline:
            late = self.fetch_meta(d, first, plain, meta=True)
            time.sleep(0.02)
        self.assertEqual([m["data"] for m in late], ["async"])
        self.assertGreater(late[0]["seq"], seqs[-1])

    def test_every_copy_of_a_message_carries_the_same_seq(self):
        d = self.start_daemon()
        subject = unique_subject()
        subscribers = [self.subscribe(d, subject) for _ in range(3)]
        acked = self.subscribe(d, subject, ack=True)
        grouped = self.subscribe(d, subject, group="g")
        self.publish(d, subject, "x")
        self.publish(d, subject, "y")
        expected = None
        for subscriber in subscribers + [acked, grouped]:
            seqs = [(m["seq"], m["data"]) for m in self.fetch_meta(d, subject, subscriber, meta=True)]
            expected = expected or seqs
            self.assertEqual(seqs, expected)
        self.assertEqual([text for _, text in expected], ["x", "y"])
        self.assertEqual(expected[1][0], expected[0][0] + 1)


# ---------------------------------------------------------------------------
class FetchOptionsTest(DeliveryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "max_pending_bytes": 1 << 30,
                                             "fetch_max_wait_ms": ms(120000)})

    def setUp(self):
        self.d = self.daemon
        self.subject = unique_subject("fetch")
        self.subscriber = self.subscribe(self.d, self.subject)

    def publish_all(self, texts):
        with self.d.client() as client:
            for text in texts:
                self.publish(self.d, self.subject, text, client)

    def test_meta_true_gives_the_meta_form_on_a_plain_subscription(self):
        self.publish_all(["one", "two"])
        messages = self.fetch_meta(self.d, self.subject, self.subscriber, meta=True)
        self.assertEqual([(m["subject"], m["attempt"], m["data"]) for m in messages],
                         [(self.subject, 1, "one"), (self.subject, 1, "two")])
        self.assertEqual(messages[1]["seq"], messages[0]["seq"] + 1)
        self.assertEqual(self.fetch_meta(self.d, self.subject, self.subscriber, meta=True), [])

    def test_meta_false_keeps_the_plain_form_and_ack_subscriptions_always_use_meta(self):
        self.publish_all(["one"])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, meta=False), ["one"])
        subject = unique_subject()
        acked = self.subscribe(self.d, subject, ack=True)
        self.publish(self.d, subject, "acked")
        for options in ({}, {"meta": False}):
            with self.subTest(options=options):
                messages = self.fetch_meta(self.d, subject, acked, **options)
                self.assertEqual([m["data"] for m in messages], ["acked"] if not options else [])

    def test_max_returns_at_most_n_oldest_first_and_keeps_the_rest(self):
        texts = ["m%d" % n for n in range(7)]
        self.publish_all(texts)
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=3), texts[:3])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=1), texts[3:4])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=100), texts[4:])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=5), [])

    def test_max_bytes_stops_before_exceeding_b_but_returns_at_least_one_message(self):
        texts = ["aaaa", "bbbb", "cc", "d" * 10, "e", "f"]
        self.publish_all(texts)
        fetch = lambda **options: self.fetch_data(self.d, self.subject, self.subscriber, **options)
        self.assertEqual(fetch(max_bytes=9), ["aaaa", "bbbb"])        # + "cc" would be 10 > 9
        self.assertEqual(fetch(max_bytes=1), ["cc"])                  # always at least one
        self.assertEqual(fetch(max_bytes=5), ["d" * 10])              # one, even above b
        self.assertEqual(fetch(max_bytes=2), ["e", "f"])              # exactly b is fine
        self.assertEqual(fetch(max_bytes=1), [])

    def test_max_bytes_does_not_skip_a_large_message_to_take_later_small_ones(self):
        self.publish_all(["aaaa", "b" * 20, "c", "d"])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max_bytes=6), ["aaaa"])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max_bytes=6), ["b" * 20])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber), ["c", "d"])

    def test_max_and_max_bytes_together_stop_at_whichever_comes_first(self):
        self.publish_all(["x"] * 6)
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=2, max_bytes=100),
                         ["x", "x"])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=10, max_bytes=3),
                         ["x", "x", "x"])
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, max=10, max_bytes=10), ["x"])

    def test_max_and_max_bytes_apply_to_the_meta_form(self):
        self.publish_all(["aa", "bb", "cc"])
        messages = self.fetch_meta(self.d, self.subject, self.subscriber, meta=True, max=2, max_bytes=3)
        self.assertEqual([m["data"] for m in messages], ["aa"])
        messages = self.fetch_meta(self.d, self.subject, self.subscriber, meta=True, max=1)
        self.assertEqual([m["data"] for m in messages], ["bb"])

    def test_wait_ms_zero_answers_at_once(self):
        started = time.monotonic()
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, wait_ms=0), [])
        self.assertLess(time.monotonic() - started, harness.scaled(5))

    def test_wait_ms_with_messages_available_answers_at_once_with_them(self):
        self.publish_all(["ready"])
        started = time.monotonic()
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT, max=5),
                         ["ready"])
        self.assertLess(time.monotonic() - started, harness.scaled(5))


# ---------------------------------------------------------------------------
class HeldFetchTest(DeliveryTestCase):
    """Long polls: a fetch with wait_ms waits for a message or for t ms."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "fetch_max_wait_ms": ms(120000)})

    def setUp(self):
        self.d = self.daemon
        self.subject = unique_subject("held")
        self.subscriber = self.subscribe(self.d, self.subject)
        self.parked_before = self.metric(self.d, "gophermq_parked_fetches")

    def test_held_fetch_is_answered_by_a_publish_well_before_wait_ms(self):
        held = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, self.parked_before + 1)
        self.assertFalse(held.answered(), "answered before anything was published")
        published_at = time.monotonic()
        self.publish(self.d, self.subject, "wake up")
        status, reply = held.reply(timeout=harness.scaled(10))
        self.assertEqual((status, reply), (200, {"subject": self.subject, "id": self.subscriber,
                                                 "data": ["wake up"]}))
        self.assertLess(held.answered_at - published_at, harness.scaled(5),
                        "a publish must answer a held fetch, not its wait_ms")
        self.assert_no_message_left(self.d, self.subject, self.subscriber)

    def test_held_fetch_of_an_ack_subscription_is_answered_in_meta_form_and_in_flight(self):
        subject = unique_subject()
        acked = self.subscribe(self.d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        held = self.held(self.d, subject, acked, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, self.parked_before + 1)
        self.publish(self.d, subject, "work")
        status, reply = held.reply(timeout=harness.scaled(10))
        self.assertEqual(status, 200, reply)
        messages = self.assert_meta(reply, subject, acked)
        self.assertEqual([(m["data"], m["attempt"], m["subject"]) for m in messages], [("work", 1, subject)])
        self.assertEqual(self.fetch_meta(self.d, subject, acked), [])      # in flight
        self.settle(self.d, "/api/ack", subject, acked, [messages[0]["seq"]], 1)

    def test_wait_ms_expiring_answers_empty_data_at_about_t(self):
        wait = ms(700)
        for options, key in (({}, "data"), ({"meta": True}, "messages")):
            with self.subTest(options=options):
                held = self.held(self.d, self.subject, self.subscriber, wait_ms=wait, **options)
                status, reply = held.reply(timeout=seconds(wait) + SLACK + harness.scaled(5))
                self.assertEqual((status, reply), (200, {"subject": self.subject, "id": self.subscriber,
                                                         key: []}))
                self.assertGreaterEqual(held.elapsed(), seconds(wait) * 0.9)
                self.assertLess(held.elapsed(), seconds(wait) + SLACK)

    def test_one_message_wakes_one_of_two_held_fetches_of_one_subscriber(self):
        first = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT)
        second = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, self.parked_before + 2)
        self.publish(self.d, self.subject, "only one")
        deadline = time.monotonic() + harness.scaled(10)
        while not (first.answered() or second.answered()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2 * S)
        self.assertEqual(sum(held.answered() for held in (first, second)), 1,
                         "exactly one held fetch can take one message")
        self.publish(self.d, self.subject, "another")
        replies = sorted(json_body(held.result(harness.scaled(10))[2])["data"][0] for held in (first, second))
        self.assertEqual(replies, ["another", "only one"])

    def test_a_publish_wakes_every_subscriber_of_its_subject_and_no_other(self):
        others = [self.subscribe(self.d, self.subject) for _ in range(2)]
        unrelated_subject = unique_subject()
        unrelated = self.subscribe(self.d, unrelated_subject)
        helds = [self.held(self.d, self.subject, s, wait_ms=LONG_WAIT) for s in [self.subscriber] + others]
        bystander = self.held(self.d, unrelated_subject, unrelated, wait_ms=ms(1500))
        self.wait_parked(self.d, self.parked_before + 4)
        self.publish(self.d, self.subject, "fan out")
        for held in helds:
            status, reply = held.reply(timeout=harness.scaled(10))
            self.assertEqual((status, reply["data"]), (200, ["fan out"]))
        status, reply = bystander.reply(timeout=seconds(ms(1500)) + SLACK + harness.scaled(5))
        self.assertEqual((status, reply["data"]), (200, []))
        self.assertGreaterEqual(bystander.elapsed(), seconds(ms(1500)) * 0.9)

    def test_held_fetch_takes_at_most_max_of_what_a_batch_makes_available(self):
        held = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT, max=2)
        self.wait_parked(self.d, self.parked_before + 1)
        self.batch_ok(self.d, [{"subject": self.subject, "data": t} for t in ("b1", "b2", "b3")])
        status, reply = held.reply(timeout=harness.scaled(10))
        self.assertEqual(status, 200)
        taken = reply["data"]
        self.assertIn(taken, (["b1"], ["b1", "b2"]))
        self.assertEqual(taken + self.fetch_data(self.d, self.subject, self.subscriber), ["b1", "b2", "b3"])

    def test_held_fetch_is_answered_404_bad_id_after_unsubscribe(self):
        held = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, self.parked_before + 1)
        self.unsubscribe(self.d, self.subject, self.subscriber)
        response = held.result(timeout=harness.scaled(10))
        self.assertError(response, 404, "bad id")
        self.assertLess(held.elapsed(), seconds(LONG_WAIT) / 2)
        self.d.wait_metric("gophermq_parked_fetches", lambda value: value == self.parked_before)

    def test_held_fetch_of_a_group_member_is_answered_404_after_it_unsubscribes(self):
        subject = unique_subject()
        member = self.subscribe(self.d, subject, group="workers")
        other = self.subscribe(self.d, subject, group="workers")
        held = self.held(self.d, subject, member, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, self.parked_before + 1)
        self.unsubscribe(self.d, subject, member)
        self.assertError(held.result(timeout=harness.scaled(10)), 404, "bad id")
        self.publish(self.d, subject, "to the one left")
        self.assertEqual(self.fetch_data(self.d, subject, other), ["to the one left"])

    def test_peek_with_wait_ms_is_held_until_a_message_arrives_and_leaves_it(self):
        held = self.held(self.d, self.subject, self.subscriber, wait_ms=LONG_WAIT, peek=True)
        self.wait_parked(self.d, self.parked_before + 1)
        self.publish(self.d, self.subject, "look")
        status, reply = held.reply(timeout=harness.scaled(10))
        self.assertEqual((status, reply["data"]), (200, ["look"]))
        self.assertEqual(self.fetch_data(self.d, self.subject, self.subscriber), ["look"])

    def test_ack_message_handed_to_a_vanished_held_fetch_is_not_lost(self):
        # The client of a held fetch goes away; whatever the daemon does with
        # the message it then publishes, an ack subscription must get it:
        # still pending, or redelivered after ack_wait_ms.
        subject = unique_subject()
        wait = ms(500)
        acked = self.subscribe(self.d, subject, ack=True, ack_wait_ms=wait)
        raw = RawRequests(self.d.api_host, self.d.api_port)
        raw.send("gone", "/api/fetch", {"subject": subject, "id": acked, "wait_ms": LONG_WAIT})
        self.wait_parked(self.d, self.parked_before + 1)
        raw.close()
        time.sleep(0.2)
        self.publish(self.d, subject, "not lost")
        messages = self.fetch_meta(self.d, subject, acked, wait_ms=wait + ms(3000))
        self.assertEqual([m["data"] for m in messages], ["not lost"])
        self.settle(self.d, "/api/ack", subject, acked, [messages[0]["seq"]], 1)

    def test_held_fetch_of_an_expiring_subscriber_is_answered(self):
        # API.md: a subscriber that expires while its fetch is held gets
        # 404 bad id.  (Whether a held fetch keeps a subscriber alive is
        # not said; either way the fetch must be answered, and consistently.)
        d = self.start_daemon({"subscriber_ttl": 1, "fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        # With ttl 1 s an idle subscriber goes at a once-a-second sweep 1 to
        # 3 s after its last request, under valgrind too: the wait must
        # outlast that by a few sweeps, and need not be stretched.
        wait = 5000
        held = self.held(d, subject, subscriber, wait_ms=wait)
        response = held.result(timeout=seconds(wait) + SLACK + harness.scaled(5))
        if response[0] == 404:
            self.assertError(response, 404, "bad id")
            self.assertEqual(self.metric(d, "gophermq_subscribers_expired_total"), 1)
            self.assertError(self.post(d, "/api/fetch", {"subject": subject, "id": subscriber}), 404, "bad id")
        else:
            self.assertJsonReply(response, 200, {"subject": subject, "id": subscriber, "data": []})

    def test_wait_ms_is_clamped_by_fetch_max_wait_ms(self):
        limit = ms(500)
        d = self.start_daemon({"fetch_max_wait_ms": limit})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        for wait in (ms(600000), 3600000 * 100, limit + 1):
            with self.subTest(wait_ms=wait):
                held = self.held(d, subject, subscriber, wait_ms=wait)
                status, reply = held.reply(timeout=seconds(limit) + SLACK + harness.scaled(5))
                self.assertEqual((status, reply["data"]), (200, []))
                self.assertGreaterEqual(held.elapsed(), seconds(limit) * 0.9)
                self.assertLess(held.elapsed(), seconds(limit) + SLACK)

    def test_fetch_max_wait_ms_zero_answers_every_fetch_at_once(self):
        d = self.start_daemon({"fetch_max_wait_ms": 0})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        started = time.monotonic()
        self.assertEqual(self.fetch_data(d, subject, subscriber, wait_ms=ms(30000)), [])
        self.assertLess(time.monotonic() - started, harness.scaled(5))

    def test_fetch_beyond_max_parked_fetches_is_answered_at_once(self):
        d = self.start_daemon({"max_parked_fetches": 2, "fetch_max_wait_ms": ms(120000)})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        helds = [self.held(d, subject, subscriber, wait_ms=LONG_WAIT) for _ in range(2)]
        self.wait_parked(d, 2)
        for options, key in (({}, "data"), ({"meta": True}, "messages"), ({"peek": True}, "data")):
            with self.subTest(options=options):
                started = time.monotonic()
                reply = self.fetch(d, subject, subscriber, wait_ms=LONG_WAIT, **options)
                self.assertEqual(reply, {"subject": subject, "id": subscriber, key: []})
                self.assertLess(time.monotonic() - started, harness.scaled(5))
        self.assertFalse(any(held.answered() for held in helds))
        self.publish(d, subject, "one")
        self.publish(d, subject, "two")
        got = sorted(json_body(held.result(harness.scaled(10))[2])["data"][0] for held in helds)
        self.assertEqual(got, ["one", "two"])
        # Room again: a new fetch is held.
        held = self.held(d, subject, subscriber, wait_ms=LONG_WAIT)
        self.wait_parked(d, 1)
        self.publish(d, subject, "three")
        self.assertEqual(json_body(held.result(harness.scaled(10))[2])["data"], ["three"])

    def test_max_parked_fetches_zero_never_holds_a_fetch(self):
        d = self.start_daemon({"max_parked_fetches": 0})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        started = time.monotonic()
        self.assertEqual(self.fetch_data(d, subject, subscriber, wait_ms=ms(20000)), [])
        self.assertLess(time.monotonic() - started, harness.scaled(5))

    def test_connection_sweep_does_not_cut_off_a_held_fetch(self):
        timeout = 1 * T
        d = self.start_daemon({"connection_timeout": timeout, "fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        wait = 1000 * timeout + ms(1500)
        held = self.held(d, subject, subscriber, wait_ms=wait)
        status, reply = held.reply(timeout=seconds(wait) + SLACK + harness.scaled(5))
        self.assertEqual((status, reply), (200, {"subject": subject, "id": subscriber, "data": []}))
        self.assertGreaterEqual(held.elapsed(), seconds(wait) * 0.9)


    def test_a_held_fetch_whose_client_left_ends_and_takes_nothing(self):
        d = self.start_daemon({"max_parked_fetches": 1, "fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        body = json.dumps({"subject": subject, "id": subscriber, "wait_ms": ms(60000)}).encode()
        gone = socket.create_connection((d.api_host, d.api_port))
        gone.sendall(b"POST /api/fetch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        d.wait_metric("gophermq_parked_fetches", lambda value: value == 1)
        gone.close()
        # The connection sweep (once a second) notices and ends the wait.
        d.wait_metric("gophermq_parked_fetches", lambda value: value == 0)
        # Its slot is free for another held fetch, and a publish is not
        # sent to the closed socket: the next fetch gets it.
        held = self.held(d, subject, subscriber, wait_ms=ms(30000))
        d.wait_metric("gophermq_parked_fetches", lambda value: value == 1)
        self.publish(d, subject, "kept")
        self.assertEqual(held.reply(timeout=harness.scaled(10)),
                         (200, {"subject": subject, "id": subscriber, "data": ["kept"]}))


# ---------------------------------------------------------------------------
class ManyHeldFetchesTest(DeliveryTestCase):
    COUNT = 2000

    def raise_file_limit(self, wanted):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < wanted:
            self.fail("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs"
                      % (hard, wanted))
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    def thread_count(self, d):
        return len(os.listdir("/proc/%d/task" % d.pid))

    def test_2000_held_fetches_keep_the_thread_count_and_are_all_answered(self):
        count = self.COUNT
        # The daemon inherits the limit: both sides need a descriptor per fetch.
        self.raise_file_limit(count + 1024)
        timeout_wait = ms(5000)
        d = self.start_daemon({"max_connections": count + 500, "max_parked_fetches": count + 100,
                               "fetch_max_wait_ms": 3600000, "max_pending": 1000000})
        woken_subject, timed_subject = unique_subject("woken"), unique_subject("timed")
        subscribers = {}
        with d.client() as client:
            for number in range(count):
                subject = woken_subject if number % 2 == 0 else timed_subject
                subscribers[number] = (subject, self.subscribe(d, subject, client))
            # Warm up whatever a held fetch uses, then count the threads.
            self.assertEqual(self.fetch(d, woken_subject, subscribers[0][1], client, wait_ms=1)["data"], [])
            self.assertEqual(self.fetch(d, timed_subject, subscribers[1][1], client, wait_ms=1)["data"], [])
        threads_before = self.thread_count(d)

        raw = RawRequests(d.api_host, d.api_port)
        self.addCleanup(raw.close)
        for number, (subject, subscriber) in subscribers.items():
            wait = LONG_WAIT if subject == woken_subject else timeout_wait
            raw.send(number, "/api/fetch", {"subject": subject, "id": subscriber, "wait_ms": wait})
        d.wait_metric("gophermq_parked_fetches", lambda value: value >= count,
                      timeout=harness.WAIT_TIMEOUT + harness.scaled(15))
        raw.poll(0)
        self.assertEqual(raw.answers, {}, "fetches answered before any publish or timeout")
        self.assertEqual(self.thread_count(d), threads_before,
                         "holding %d fetches changed the daemon's thread count" % count)
        self.assertEqual(self.metric(d, "gophermq_parked_fetches"), count)

        published_at = time.monotonic()
        self.publish(d, woken_subject, "for everyone")
        woken = [n for n in subscribers if n % 2 == 0]
        missing = raw.wait_for(woken, harness.scaled(20))
        self.assertEqual(len(missing), 0, "%d held fetches not answered by the publish" % len(missing))
        for number in woken:
            status, body, _, answered_at = raw.answers[number]
            subject, subscriber = subscribers[number]
            self.assertEqual((status, json_body(body)),
                             (200, {"subject": subject, "id": subscriber, "data": ["for everyone"]}))
            self.assertLess(answered_at - published_at, harness.scaled(20))
        self.assertEqual(self.thread_count(d), threads_before)

        timed = [n for n in subscribers if n % 2 == 1]
        missing = raw.wait_for(timed, seconds(timeout_wait) + harness.scaled(30))
        self.assertEqual(len(missing), 0, "%d held fetches not answered at wait_ms" % len(missing))
        for number in timed:
            status, body, sent_at, answered_at = raw.answers[number]
            subject, subscriber = subscribers[number]
            self.assertEqual((status, json_body(body)), (200, {"subject": subject, "id": subscriber, "data": []}))
            self.assertGreaterEqual(answered_at - sent_at, seconds(timeout_wait) * 0.9)
        self.assertEqual(self.thread_count(d), threads_before)
        d.wait_metric("gophermq_parked_fetches", lambda value: value == 0)


# ---------------------------------------------------------------------------
class PeekTest(DeliveryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000})

    def setUp(self):
        self.d = self.daemon

    def test_peek_returns_messages_and_leaves_them_pending(self):
        subject = unique_subject()
        subscriber = self.subscribe(self.d, subject)
        for text in ("a", "b", "c"):
            self.publish(self.d, subject, text)
        pending = self.metric(self.d, "gophermq_pending_messages")
        self.assertEqual(self.fetch_data(self.d, subject, subscriber, peek=True), ["a", "b", "c"])
        self.assertEqual(self.fetch_data(self.d, subject, subscriber, peek=True, max=2), ["a", "b"])
        messages = self.fetch_meta(self.d, subject, subscriber, peek=True, meta=True)
        self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("a", 1), ("b", 1), ("c", 1)])
        self.assertEqual(self.metric(self.d, "gophermq_pending_messages"), pending)
        self.assertEqual(self.fetch_data(self.d, subject, subscriber), ["a", "b", "c"])
        self.assertEqual(self.fetch_data(self.d, subject, subscriber, peek=True), [])

    def test_peek_false_is_an_ordinary_fetch(self):
        subject = unique_subject()
        subscriber = self.subscribe(self.d, subject)
        self.publish(self.d, subject, "x")
        self.assertEqual(self.fetch_data(self.d, subject, subscriber, peek=False), ["x"])
        self.assertEqual(self.fetch_data(self.d, subject, subscriber), [])

    def test_peek_on_an_ack_subscription_starts_no_ack_timer_and_no_delivery(self):
        wait = ms(400)
        subject = unique_subject()
        acked = self.subscribe(self.d, subject, ack=True, ack_wait_ms=wait)
        self.publish(self.d, subject, "m")
        inflight = self.metric(self.d, "gophermq_inflight_messages")
        for _ in range(2):
            messages = self.fetch_meta(self.d, subject, acked, peek=True)
            self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("m", 1)])
        self.assertEqual(self.metric(self.d, "gophermq_inflight_messages"), inflight)
        time.sleep(seconds(wait) * 2)
        # Had the peeks started a delivery, this would be attempt 2.
        messages = self.fetch_meta(self.d, subject, acked)
        self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("m", 1)])
        seq = messages[0]["seq"]
        # In flight now: a peek does not see it.
        self.assertEqual(self.fetch_meta(self.d, subject, acked, peek=True), [])
        self.settle(self.d, "/api/nack", subject, acked, [seq], 1)
        # Its next delivery is the second.
        messages = self.fetch_meta(self.d, subject, acked, peek=True)
        self.assertEqual([(m["seq"], m["attempt"]) for m in messages], [(seq, 2)])
        messages = self.fetch_meta(self.d, subject, acked)
        self.assertEqual([(m["seq"], m["attempt"]) for m in messages], [(seq, 2)])
        self.settle(self.d, "/api/ack", subject, acked, [seq], 1)

    def test_peek_of_an_in_flight_message_does_not_touch_its_timer(self):
        wait = ms(600)
        subject = unique_subject()
        acked = self.subscribe(self.d, subject, ack=True, ack_wait_ms=wait)
        self.publish(self.d, subject, "m")
        sent = time.monotonic()
        seq = self.fetch_meta(self.d, subject, acked)[0]["seq"]
        self.assertEqual(self.fetch_meta(self.d, subject, acked, peek=True), [])
        messages = self.fetch_meta(self.d, subject, acked, wait_ms=wait + ms(5000))
        self.assertEqual([(m["seq"], m["attempt"]) for m in messages], [(seq, 2)])
        self.assertGreaterEqual(time.monotonic() - sent, seconds(wait) * 0.9)
        self.settle(self.d, "/api/ack", subject, acked, [seq], 1)

    def test_peek_on_a_group_member_sees_the_groups_queue_and_takes_nothing(self):
        subject = unique_subject()
        first = self.subscribe(self.d, subject, group="g")
        second = self.subscribe(self.d, subject, group="g")
        self.publish(self.d, subject, "shared")
        self.assertEqual(self.fetch_data(self.d, subject, first, peek=True), ["shared"])
        self.assertEqual(self.fetch_data(self.d, subject, second, peek=True), ["shared"])
        self.assertEqual(self.fetch_data(self.d, subject, second), ["shared"])
        self.assertEqual(self.fetch_data(self.d, subject, first), [])


# ---------------------------------------------------------------------------
class GroupTest(DeliveryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "fetch_max_wait_ms": ms(60000),
                                             "ack_wait_ms": 30000})

    def setUp(self):
        self.d = self.daemon

    def test_subscribe_reply_adds_the_group_after_the_subject(self):
        subject = unique_subject()
        for group in ("workers", "a", "A-Z_0-9", "g" * 64):
            with self.subTest(group=group):
                status, headers, body = self.post(self.d, "/api/subscribe", {"subject": subject, "group": group})
                self.assertEqual(status, 200, body)
                self.assertEqual(headers.get("Content-Type"), JSON_CONTENT_TYPE)
                reply = json_body(body)
                self.assertEqual(list(reply), ["id", "subject", "group"])
                self.assertEqual((reply["subject"], reply["group"]), (subject, group))
                self.assertRegex(reply["id"], UUID4_RE)
                self.assertEqual(body.rstrip(b"\n"), ('{"id":"%s","subject":"%s","group":"%s"}'
                                                      % (reply["id"], subject, group)).encode())

    def test_subscribe_reply_without_group_is_the_original(self):
        subject = unique_subject()
        for options in ({}, {"ack": True}, {"ack": False}, {"ack": True, "ack_wait_ms": 1000, "max_deliver": 3}):
            with self.subTest(options=options):
                status, _, body = self.post(self.d, "/api/subscribe", dict(options, subject=subject))
                self.assertEqual(status, 200, body)
                reply = json_body(body)
                self.assertEqual(list(reply), ["id", "subject"])
                self.assertEqual(body, ('{"id":"%s","subject":"%s"}\n' % (reply["id"], subject)).encode())

    def test_group_of_3_splits_3000_messages_while_a_plain_subscriber_gets_all(self):
        d, total = self.d, 3000
        subject = unique_subject("split")
        plain = self.subscribe(d, subject)
        members = [self.subscribe(d, subject, group="split") for _ in range(3)]
        texts = ["m%04d" % n for n in range(total)]
        received = {member: [] for member in members}
        errors = []
        done = threading.Event()
        lock = threading.Lock()
        taken = [0]

        def consume(member):
            try:
                with d.client() as client:
                    while not done.is_set():
                        data = self.fetch_data(d, subject, member, client, wait_ms=ms(200), max=97)
                        received[member].extend(data)
                        with lock:
                            taken[0] += len(data)
                            if taken[0] >= total:
                                done.set()
            except Exception as error:
                errors.append(repr(error))
                done.set()

        consumers = [threading.Thread(target=consume, args=(m,), daemon=True) for m in members]
        for thread in consumers:
            thread.start()
        try:
            with d.client() as client:
                for text in texts:
                    self.publish(d, subject, text, client)
            done.wait(harness.scaled(60))
        finally:
            done.set()
            for thread in consumers:
                thread.join(harness.scaled(30))
        self.assertEqual(errors, [])
        everything = [text for member in members for text in received[member]]
        self.assertEqual(len(everything), len(set(everything)), "a message went to two members")
        self.assertEqual(sorted(everything), texts, "a message was lost")
        for member in members:
            self.assertEqual(received[member], sorted(received[member]), "a member got messages out of order")
            self.assertEqual(self.fetch_data(d, subject, member), [])
        self.assertEqual(self.fetch_data(d, subject, plain), texts)
        print("\n  split %s" % [len(received[m]) for m in members], end=" ", flush=True)

    def test_ack_group_of_3_shares_300_messages_with_no_loss_and_no_duplicate(self):
        d, total = self.d, 300
        subject = unique_subject("acksplit")
        members = [self.subscribe(d, subject, group="acked", ack=True, ack_wait_ms=LONG_WAIT)
                   for _ in range(3)]
        self.batch_ok(d, [{"subject": subject, "data": "a%03d" % n} for n in range(total)])
        received, errors = {m: [] for m in members}, []

        def consume(member):
            try:
                with d.client() as client:
                    while True:
                        messages = self.fetch_meta(d, subject, member, client, max=7)
                        if not messages:
                            return
                        self.settle(d, "/api/ack", subject, member, [m["seq"] for m in messages],
                                    len(messages), client)
                        received[member].extend(m["data"] for m in messages)
            except Exception as error:
                errors.append(repr(error))

        threads = [threading.Thread(target=consume, args=(m,), daemon=True) for m in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(harness.scaled(60))
        self.assertEqual(errors, [])
        everything = [text for member in members for text in received[member]]
        self.assertEqual(sorted(everything), ["a%03d" % n for n in range(total)])
        self.assertEqual(self.metric(d, "gophermq_inflight_messages"), 0)

    def test_ack_group_racing_redeliveries_and_acks_acks_every_message_exactly_once(self):
        # ack_wait_ms is short and members sometimes ack late, so deliveries
        # time out and go to other members while acks are on their way.
        # Whatever the interleaving, each seq is acknowledged (count 1)
        # exactly once and nothing stays in flight.
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        total, wait = 240, ms(150)
        subject = unique_subject("race")
        members = [self.subscribe(d, subject, group="race", ack=True, ack_wait_ms=wait) for _ in range(3)]
        acked_before = self.metric(d, "gophermq_acked_total")
        self.batch_ok(d, [{"subject": subject, "data": "r%03d" % n} for n in range(total)])
        acked, late, errors, lock = [], [], [], threading.Lock()
        done = threading.Event()

        def consume(number, member):
            try:
                with d.client() as client:
                    turn = 0
                    while not done.is_set():
                        messages = self.fetch_meta(d, subject, member, client, max=5, wait_ms=ms(100))
                        for message in messages:
                            turn += 1
                            if (turn + number) % 12 == 0:
                                time.sleep(seconds(wait) * 1.5)        # too late, sometimes
                            body = {"subject": subject, "id": member, "seqs": [message["seq"]]}
                            status, _, raw = self.post(d, "/api/ack", body, client)
                            reply = json_body(raw)
                            if status != 200 or reply.get("count") not in (0, 1):
                                errors.append((status, reply))
                                continue
                            if reply["count"] == 0:
                                late.append(message["seq"])
                            if reply["count"] == 1:
                                with lock:
                                    acked.append(message["seq"])
                                    if len(acked) >= total:
                                        done.set()
            except Exception as error:
                errors.append(repr(error))
                done.set()

        threads = [threading.Thread(target=consume, args=(n, m), daemon=True) for n, m in enumerate(members)]
        for thread in threads:
            thread.start()
        done.wait(harness.scaled(60))
        done.set()
        for thread in threads:
            thread.join(harness.scaled(30))
        self.assertEqual(errors, [])
        self.assertEqual(len(acked), len(set(acked)), "a seq was acknowledged twice")
        self.assertEqual(len(acked), total, "messages never acknowledged")
        self.assertEqual(self.metric(d, "gophermq_acked_total") - acked_before, total)
        d.wait_metric("gophermq_inflight_messages", lambda value: value == 0)
        for member in members:
            self.assertEqual(self.fetch_meta(d, subject, member), [])
        print("\n  %d late acks counted 0" % len(late), end=" ", flush=True)

    def test_groups_and_plain_subscribers_of_a_subject_each_get_a_copy(self):
        subject = unique_subject()
        plain = self.subscribe(self.d, subject)
        first = [self.subscribe(self.d, subject, group="one") for _ in range(2)]
        second = self.subscribe(self.d, subject, group="two")
        self.publish(self.d, subject, "x")
        self.assertEqual(self.fetch_data(self.d, subject, plain), ["x"])
        self.assertEqual(self.fetch_data(self.d, subject, second), ["x"])
        got = self.fetch_data(self.d, subject, first[0]) + self.fetch_data(self.d, subject, first[1])
        self.assertEqual(got, ["x"])

    def test_same_group_name_on_two_subjects_is_two_groups(self):
        one, two = unique_subject(), unique_subject()
        on_one = self.subscribe(self.d, one, group="same")
        on_two = self.subscribe(self.d, two, group="same", ack=True)   # different options: no conflict
        self.publish(self.d, one, "1")
        self.publish(self.d, two, "2")
        self.assertEqual(self.fetch_data(self.d, one, on_one), ["1"])
        self.assertEqual([m["data"] for m in self.fetch_meta(self.d, two, on_two)], ["2"])
        self.assertError(self.post(self.d, "/api/fetch", {"subject": two, "id": on_one}), 404, "bad id")

    def test_member_asking_for_different_options_gets_409_and_the_group_is_unchanged(self):
        subject = unique_subject()
        first = {"group": "g", "ack": True, "ack_wait_ms": 5000, "max_deliver": 3,
                 "dead_letter": unique_subject("dl")}
        leader = self.subscribe(self.d, subject, **first)
        differing = [
            {"group": "g"},
            {"group": "g", "ack": False},
            {"group": "g", "ack": True},
            {"group": "g", "ack": True, "ack_wait_ms": 5001, "max_deliver": 3, "dead_letter": first["dead_letter"]},
            {"group": "g", "ack": True, "ack_wait_ms": 5000, "max_deliver": 4, "dead_letter": first["dead_letter"]},
            {"group": "g", "ack": True, "ack_wait_ms": 5000, "max_deliver": 3},
            {"group": "g", "ack": True, "ack_wait_ms": 5000, "max_deliver": 3, "dead_letter": unique_subject()},
            {"group": "g", "ack": True, "ack_wait_ms": 5000},
        ]
        subscribers = self.metric(self.d, "gophermq_subscribers")
        for options in differing:
            with self.subTest(options=options):
                self.assertError(self.post(self.d, "/api/subscribe", dict(options, subject=subject)),
                                 409, "group options differ")
        self.assertEqual(self.metric(self.d, "gophermq_subscribers"), subscribers)
        same = self.subscribe(self.d, subject, **dict(first))
        self.publish(self.d, subject, "once")
        got = self.fetch_meta(self.d, subject, leader) + self.fetch_meta(self.d, subject, same)
        self.assertEqual([m["data"] for m in got], ["once"])

    def test_default_ack_wait_ms_and_the_same_value_given_explicitly_are_the_same_options(self):
        subject = unique_subject()
        self.subscribe(self.d, subject, group="g", ack=True)                  # config: 30000
        self.subscribe(self.d, subject, group="g", ack=True, ack_wait_ms=30000)
        self.subscribe(self.d, subject, group="g", ack=True, max_deliver=0)  # 0 is the default
        self.assertError(self.post(self.d, "/api/subscribe", {"subject": subject, "group": "g", "ack": True,
                                                              "ack_wait_ms": 29999}),
                         409, "group options differ")
        plain = unique_subject()
        self.subscribe(self.d, plain, group="p")
        self.subscribe(self.d, plain, group="p", ack=False)

    def test_group_ends_with_its_last_member_and_a_new_first_member_sets_its_options(self):
        subject = unique_subject()
        groups = self.metric(self.d, "gophermq_groups")
        member = self.subscribe(self.d, subject, group="again", ack=True)
        self.assertEqual(self.metric(self.d, "gophermq_groups"), groups + 1)
        self.unsubscribe(self.d, subject, member)
        self.assertEqual(self.metric(self.d, "gophermq_groups"), groups)
        member = self.subscribe(self.d, subject, group="again")              # no ack now: a new group
        self.publish(self.d, subject, "plain")
        self.assertEqual(self.fetch_data(self.d, subject, member), ["plain"])

    def test_group_counts_as_one_copy_for_max_pending(self):
        d = self.start_daemon({"max_pending": 3})
        subject = unique_subject()
        members = [self.subscribe(d, subject, group="g") for _ in range(3)]
        for text in ("1", "2", "3"):
            self.publish(d, subject, text)
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "4"}), 429, "broker overflow")
        got = []
        for member in members:
            got += self.fetch_data(d, subject, member)
        self.assertEqual(got, ["1", "2", "3"])

    def test_a_publish_wakes_one_held_fetch_of_a_group_and_every_message_reaches_one_member(self):
        subject = unique_subject()
        members = [self.subscribe(self.d, subject, group="g") for _ in range(3)]
        parked = self.metric(self.d, "gophermq_parked_fetches")
        helds = [self.held(self.d, subject, member, wait_ms=LONG_WAIT) for member in members]
        self.wait_parked(self.d, parked + 3)
        self.publish(self.d, subject, "first")
        deadline = time.monotonic() + harness.scaled(10)
        while not any(held.answered() for held in helds) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2 * S)
        self.assertEqual(sum(held.answered() for held in helds), 1, "one message, one member")
        self.publish(self.d, subject, "second")
        self.publish(self.d, subject, "third")
        got = sorted(json_body(held.result(harness.scaled(10))[2])["data"][0] for held in helds)
        self.assertEqual(got, ["first", "second", "third"])

    def test_unacked_message_of_a_member_is_redelivered_to_another_members_held_fetch(self):
        wait = ms(500)
        subject = unique_subject()
        first = self.subscribe(self.d, subject, group="r", ack=True, ack_wait_ms=wait)
        second = self.subscribe(self.d, subject, group="r", ack=True, ack_wait_ms=wait)
        self.publish(self.d, subject, "job")
        sent = time.monotonic()
        taken = self.fetch_meta(self.d, subject, first)
        fetched = time.monotonic()
        self.assertEqual([(m["data"], m["attempt"]) for m in taken], [("job", 1)])
        held = self.held(self.d, subject, second, wait_ms=LONG_WAIT)
        status, reply = held.reply(timeout=seconds(wait) + SLACK + harness.scaled(5))
        self.assertEqual(status, 200, reply)
        self.assertEqual([(m["seq"], m["attempt"]) for m in reply["messages"]], [(taken[0]["seq"], 2)])
        self.assertGreaterEqual(held.answered_at - sent, seconds(wait) * 0.9)
        self.assertLess(held.answered_at - fetched, seconds(wait) + SLACK)
        self.settle(self.d, "/api/ack", subject, second, [taken[0]["seq"]], 1)

    def test_a_member_nack_gives_the_message_to_the_group(self):
        subject = unique_subject()
        first = self.subscribe(self.d, subject, group="n", ack=True, ack_wait_ms=LONG_WAIT)
        second = self.subscribe(self.d, subject, group="n", ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(self.d, subject, "job")
        seq = self.fetch_meta(self.d, subject, first)[0]["seq"]
        self.assertEqual(self.fetch_meta(self.d, subject, second), [])
        self.settle(self.d, "/api/nack", subject, first, [seq], 1)
        self.assertEqual([(m["seq"], m["attempt"]) for m in self.fetch_meta(self.d, subject, second)], [(seq, 2)])
        self.settle(self.d, "/api/ack", subject, second, [seq], 1)

    def test_ack_counts_only_messages_delivered_to_this_member(self):
        subject = unique_subject()
        first = self.subscribe(self.d, subject, group="k", ack=True, ack_wait_ms=LONG_WAIT)
        second = self.subscribe(self.d, subject, group="k", ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(self.d, subject, "one")
        self.publish(self.d, subject, "two")
        seq_one = self.fetch_meta(self.d, subject, first, max=1)[0]["seq"]
        seq_two = self.fetch_meta(self.d, subject, second, max=1)[0]["seq"]
        self.settle(self.d, "/api/ack", subject, first, [seq_one, seq_two], 1)
        self.settle(self.d, "/api/extend", subject, first, [seq_two], 0)
        self.settle(self.d, "/api/nack", subject, first, [seq_two], 0)
        self.settle(self.d, "/api/ack", subject, second, [seq_two], 1)
        self.assertEqual(self.fetch_meta(self.d, subject, first), [])


# ---------------------------------------------------------------------------
class AckTest(DeliveryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "fetch_max_wait_ms": ms(60000)})

    def setUp(self):
        self.d = self.daemon
        self.subject = unique_subject("ack")

    def test_fetched_message_stays_in_flight_until_acked(self):
        d, subject = self.d, self.subject
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        inflight = self.metric(d, "gophermq_inflight_messages")
        acks = self.metric(d, "gophermq_acked_total")
        for text in ("one", "two"):
            self.publish(d, subject, text)
        messages = self.fetch_meta(d, subject, acked)
        self.assertEqual([(m["data"], m["attempt"], m["subject"]) for m in messages],
                         [("one", 1, subject), ("two", 1, subject)])
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        self.assertEqual(self.metric(d, "gophermq_inflight_messages"), inflight + 2)
        self.settle(d, "/api/ack", subject, acked, [m["seq"] for m in messages], 2)
        self.assertEqual(self.metric(d, "gophermq_inflight_messages"), inflight)
        self.assertEqual(self.metric(d, "gophermq_acked_total"), acks + 2)
        self.assertEqual(self.fetch_meta(d, subject, acked), [])

    def test_unacked_message_is_redelivered_after_ack_wait_ms_with_attempt_2(self):
        d, subject, wait = self.d, self.subject, ms(600)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait)
        redelivered = self.metric(d, "gophermq_redelivered_total")
        self.publish(d, subject, "again")
        sent = time.monotonic()
        first = self.fetch_meta(d, subject, acked)
        fetched = time.monotonic()
        self.assertEqual([(m["data"], m["attempt"]) for m in first], [("again", 1)])
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        held = self.held(d, subject, acked, wait_ms=LONG_WAIT)
        status, reply = held.reply(timeout=seconds(wait) + SLACK + harness.scaled(5))
        self.assertEqual(status, 200, reply)
        messages = self.assert_meta(reply, subject, acked)
        self.assertEqual([(m["seq"], m["data"], m["attempt"]) for m in messages],
                         [(first[0]["seq"], "again", 2)])
        self.assertGreaterEqual(held.answered_at - sent, seconds(wait) * 0.9)
        self.assertLess(held.answered_at - fetched, seconds(wait) + SLACK)
        self.assertEqual(self.metric(d, "gophermq_redelivered_total"), redelivered + 1)
        self.settle(d, "/api/ack", subject, acked, [first[0]["seq"]], 1)

    def test_a_fetch_after_the_ack_wait_passed_gets_the_message(self):
        d, subject, wait = self.d, self.subject, ms(300)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait)
        self.publish(d, subject, "late")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        time.sleep(seconds(wait) + 0.3 * T)
        self.assertEqual([(m["seq"], m["attempt"]) for m in self.fetch_meta(d, subject, acked)], [(seq, 2)])
        time.sleep(seconds(wait) + 0.3 * T)
        self.assertEqual([(m["seq"], m["attempt"]) for m in self.fetch_meta(d, subject, acked)], [(seq, 3)])
        self.settle(d, "/api/ack", subject, acked, [seq], 1)

    def test_redelivered_message_comes_before_newer_messages(self):
        d, subject, wait = self.d, self.subject, ms(400)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait)
        self.publish(d, subject, "old")
        old = self.fetch_meta(d, subject, acked, max=1)[0]
        self.publish(d, subject, "new")
        time.sleep(seconds(wait) + 0.3 * T)
        messages = self.fetch_meta(d, subject, acked)
        self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("old", 2), ("new", 1)])
        self.assertEqual(messages[0]["seq"], old["seq"])
        self.settle(d, "/api/ack", subject, acked, [m["seq"] for m in messages], 2)

    def test_acked_message_is_never_redelivered(self):
        d, subject, wait = self.d, self.subject, ms(300)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait)
        self.publish(d, subject, "done")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        self.settle(d, "/api/ack", subject, acked, [seq], 1)
        self.assertEqual(self.fetch_meta(d, subject, acked, wait_ms=wait * 3), [])
        self.settle(d, "/api/ack", subject, acked, [seq], 0)

    def test_nack_without_delay_redelivers_at_once_before_newer_messages(self):
        d, subject = self.d, self.subject
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        nacks = self.metric(d, "gophermq_nacked_total")
        for text in ("a", "b", "c"):
            self.publish(d, subject, text)
        first = self.fetch_meta(d, subject, acked, max=2)
        self.assertEqual([m["data"] for m in first], ["a", "b"])
        self.settle(d, "/api/nack", subject, acked, [first[1]["seq"]], 1)
        second = self.fetch_meta(d, subject, acked)
        self.assertEqual([(m["data"], m["attempt"]) for m in second], [("b", 2), ("c", 1)])
        self.assertEqual(second[0]["seq"], first[1]["seq"])
        self.assertEqual(self.metric(d, "gophermq_nacked_total"), nacks + 1)
        self.settle(d, "/api/nack", subject, acked, [first[0]["seq"]], 1, delay_ms=0)
        third = self.fetch_meta(d, subject, acked)
        self.assertEqual([(m["seq"], m["data"], m["attempt"]) for m in third], [(first[0]["seq"], "a", 2)])
        self.settle(d, "/api/ack", subject, acked, [m["seq"] for m in third + second], 3)

    def test_nack_wakes_a_held_fetch(self):
        d, subject = self.d, self.subject
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "x")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        parked = self.metric(d, "gophermq_parked_fetches")
        held = self.held(d, subject, acked, wait_ms=LONG_WAIT)
        self.wait_parked(d, parked + 1)
        self.settle(d, "/api/nack", subject, acked, [seq], 1)
        status, reply = held.reply(timeout=harness.scaled(10))
        self.assertEqual(status, 200)
        self.assertEqual([(m["seq"], m["attempt"]) for m in reply["messages"]], [(seq, 2)])
        self.settle(d, "/api/ack", subject, acked, [seq], 1)

    def test_nack_with_delay_ms_redelivers_after_the_delay(self):
        d, subject, delay = self.d, self.subject, ms(700)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "later")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        sent = time.monotonic()
        self.settle(d, "/api/nack", subject, acked, [seq], 1, delay_ms=delay)
        nacked = time.monotonic()
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        held = self.held(d, subject, acked, wait_ms=LONG_WAIT)
        status, reply = held.reply(timeout=seconds(delay) + SLACK + harness.scaled(5))
        self.assertEqual(status, 200, reply)
        self.assertEqual([(m["seq"], m["data"], m["attempt"]) for m in reply["messages"]], [(seq, "later", 2)])
        self.assertGreaterEqual(held.answered_at - sent, seconds(delay) * 0.9)
        self.assertLess(held.answered_at - nacked, seconds(delay) + SLACK)
        self.settle(d, "/api/ack", subject, acked, [seq], 1)

    def test_extend_restarts_the_ack_wait_clock_and_prevents_a_redelivery(self):
        d, subject, wait = self.d, self.subject, ms(800)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait)
        self.publish(d, subject, "slow work")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        fetched = time.monotonic()
        # Keep extending for twice the ack wait: never redelivered.
        while time.monotonic() - fetched < 2 * seconds(wait):
            time.sleep(0.3 * seconds(wait))
            extended = time.monotonic()
            self.settle(d, "/api/extend", subject, acked, [seq], 1)
            self.assertEqual(self.fetch_meta(d, subject, acked), [],
                             "redelivered although extended %.3f s ago" % (time.monotonic() - extended))
        # Then stop: redelivered one ack wait after the last extend.
        held = self.held(d, subject, acked, wait_ms=LONG_WAIT)
        status, reply = held.reply(timeout=seconds(wait) + SLACK + harness.scaled(5))
        self.assertEqual(status, 200, reply)
        self.assertEqual([(m["seq"], m["attempt"]) for m in reply["messages"]], [(seq, 2)])
        self.assertGreaterEqual(held.answered_at - extended, seconds(wait) * 0.9)
        self.settle(d, "/api/ack", subject, acked, [seq], 1)

    def test_ack_nack_and_extend_count_only_seqs_in_flight_for_this_subscriber(self):
        d, subject = self.d, self.subject
        mine = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        other = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        for text in ("1", "2", "3", "4"):
            self.publish(d, subject, text)
        seqs = [m["seq"] for m in self.fetch_meta(d, subject, mine, max=3)]
        unknown = seqs[-1] + 1000000
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            with self.subTest(path=path):
                self.settle(d, path, subject, mine, [], 0)
                self.settle(d, path, subject, other, seqs, 0)          # pending for other, not in flight
                self.settle(d, path, subject, mine, [unknown, seqs[-1] + 1], 0)   # 4th: pending, not in flight
        self.settle(d, "/api/extend", subject, mine, seqs[:2] + [unknown], 2)
        self.settle(d, "/api/nack", subject, mine, [seqs[2], unknown], 1)
        self.settle(d, "/api/ack", subject, mine, seqs + [unknown], 2)
        self.settle(d, "/api/ack", subject, mine, seqs, 0)

    def test_ack_nack_extend_on_a_subscription_without_ack_is_409(self):
        d, subject = self.d, self.subject
        plain = self.subscribe(d, subject)
        grouped = self.subscribe(d, subject, group="plain")
        self.publish(d, subject, "x")
        seq = self.fetch_meta(d, subject, plain, meta=True)[0]["seq"]
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            for subscriber in (plain, grouped):
                with self.subTest(path=path, subscriber=subscriber):
                    response = self.post(d, path, {"subject": subject, "id": subscriber, "seqs": [seq]})
                    self.assertError(response, 409, "not an ack subscription")
        self.assertEqual(self.fetch_data(d, subject, grouped), ["x"])

    def test_ack_nack_extend_with_a_bad_id_or_subject_are_404_and_400(self):
        d, subject = self.d, self.subject
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        other_subject = unique_subject()
        self.subscribe(d, other_subject, ack=True)
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            with self.subTest(path=path):
                for body in ({"subject": subject, "id": str(uuid.uuid4()), "seqs": [1]},
                             {"subject": subject, "id": "nope", "seqs": [1]},
                             {"subject": other_subject, "id": acked, "seqs": [1]},
                             {"subject": unique_subject(), "id": acked, "seqs": [1]}):
                    self.assertError(self.post(d, path, body), 404, "bad id")
                self.assertError(self.post(d, path, {"subject": "a..b", "id": acked, "seqs": [1]}),
                                 400, "invalid subject")
                self.assertError(self.post(d, path, {"id": acked, "seqs": [1]}), 400, "invalid subject")
                for body in (b"", b"[]", b"{", {"subject": 5, "id": acked, "seqs": [1]},
                             {"subject": subject, "id": 5, "seqs": [1]}):
                    self.assertError(self.post(d, path, body), 400, "request's body is invalid")

    def test_default_ack_wait_ms_comes_from_the_config(self):
        wait = ms(500)
        d = self.start_daemon({"ack_wait_ms": wait, "fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True)
        self.publish(d, subject, "x")
        sent = time.monotonic()
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        messages = self.fetch_meta(d, subject, acked, wait_ms=wait + ms(5000))
        self.assertEqual([(m["seq"], m["attempt"]) for m in messages], [(seq, 2)])
        self.assertGreaterEqual(time.monotonic() - sent, seconds(wait) * 0.9)

    def test_max_deliver_zero_means_no_limit(self):
        d, subject = self.d, self.subject
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT, max_deliver=0)
        self.publish(d, subject, "forever")
        for attempt in range(1, 8):
            messages = self.fetch_meta(d, subject, acked)
            self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("forever", attempt)])
            self.settle(d, "/api/nack", subject, acked, [messages[0]["seq"]], 1)
        self.settle(d, "/api/ack", subject, acked, [], 0)


# ---------------------------------------------------------------------------
class DeadLetterTest(DeliveryTestCase):
    def test_message_is_dead_lettered_after_max_deliver_into_a_subscribed_subject(self):
        wait = ms(400)
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        subject, dead = unique_subject("work"), unique_subject("dead")
        watcher = self.subscribe(d, dead)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait, max_deliver=2, dead_letter=dead)
        self.publish(d, subject, "poison \u00e9\n\"")
        first = self.fetch_meta(d, subject, acked)
        self.assertEqual([m["attempt"] for m in first], [1])
        second = self.fetch_meta(d, subject, acked, wait_ms=wait + ms(5000))
        self.assertEqual([(m["seq"], m["attempt"]) for m in second], [(first[0]["seq"], 2)])
        # Not acked after its second delivery: removed and published to dead.
        letters = self.fetch_meta(d, dead, watcher, meta=True, wait_ms=wait + ms(5000))
        self.assertEqual(len(letters), 1, letters)
        self.assertEqual((letters[0]["subject"], letters[0]["data"], letters[0]["attempt"]),
                         (dead, "poison \u00e9\n\"", 1))
        self.assertGreater(letters[0]["seq"], first[0]["seq"], "a dead letter is a new message")
        self.assertEqual(self.fetch_meta(d, subject, acked, wait_ms=wait * 2), [])
        self.settle(d, "/api/ack", subject, acked, [first[0]["seq"]], 0)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_dead_lettered_total"), 1)
        self.assertEqual(metrics.value("gophermq_max_deliver_dropped_total"), 0)
        self.assertEqual(metrics.value("gophermq_inflight_messages"), 0)
        self.assertEqual(metrics.value("gophermq_redelivered_total"), 1)

    def test_nack_of_the_last_allowed_delivery_dead_letters_the_message(self):
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        subject, dead = unique_subject("work"), unique_subject("dead")
        watchers = [self.subscribe(d, dead), self.subscribe(d, dead, group="dl")]
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT, max_deliver=1, dead_letter=dead)
        self.publish(d, subject, "bad")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        self.settle(d, "/api/nack", subject, acked, [seq], 1)
        for watcher in watchers:
            letters = self.fetch_meta(d, dead, watcher, meta=True, wait_ms=ms(5000))
            self.assertEqual([(m["data"], m["subject"]) for m in letters], [("bad", dead)])
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        self.assertEqual(self.metric(d, "gophermq_dead_lettered_total"), 1)

    def test_dead_letter_without_a_subscriber_is_counted_and_dropped(self):
        wait = ms(300)
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        subject, dead = unique_subject("work"), unique_subject("nobody")
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait, max_deliver=1, dead_letter=dead)
        self.publish(d, subject, "dropped")
        self.fetch_meta(d, subject, acked)
        d.wait_metric("gophermq_max_deliver_dropped_total", lambda value: value >= 1)
        self.assertEqual(self.fetch_meta(d, subject, acked, wait_ms=wait * 2), [])
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_max_deliver_dropped_total"), 1)
        self.assertEqual(metrics.value("gophermq_dead_lettered_total"), 0)
        self.assertEqual(metrics.value("gophermq_inflight_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        # A subscriber that comes later does not get it.
        late = self.subscribe(d, dead)
        self.assertEqual(self.fetch_data(d, dead, late), [])

    def test_dead_letter_may_use_the_room_its_removed_original_frees(self):
        # max_pending is full when the original runs out of deliveries; it
        # is removed, then published to dead: that fits.
        wait = ms(300)
        d = self.start_daemon({"max_pending": 2, "fetch_max_wait_ms": ms(60000)})
        subject, dead = unique_subject("work"), unique_subject("dead")
        watcher = self.subscribe(d, dead)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=wait, max_deliver=1, dead_letter=dead)
        self.publish(d, subject, "last chance")
        self.publish(d, dead, "filler")
        self.assertEqual(self.post(d, "/api/publish", {"subject": dead, "data": "full"})[0], 429)
        self.assertEqual([m["data"] for m in self.fetch_meta(d, subject, acked)], ["last chance"])
        time.sleep(seconds(wait) + 0.5 * T)
        self.assertEqual(self.fetch_data(d, dead, watcher), ["filler", "last chance"])
        self.assertEqual(self.metric(d, "gophermq_dead_lettered_total"), 1)
        self.assertEqual(self.metric(d, "gophermq_max_deliver_dropped_total"), 0)

    def test_max_deliver_without_dead_letter_drops_and_counts(self):
        d = self.start_daemon()
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT, max_deliver=3)
        self.publish(d, subject, "three strikes")
        for attempt in (1, 2, 3):
            messages = self.fetch_meta(d, subject, acked)
            self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("three strikes", attempt)])
            self.settle(d, "/api/nack", subject, acked, [messages[0]["seq"]], 1)
        d.wait_metric("gophermq_max_deliver_dropped_total", lambda value: value >= 1)
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        self.assertEqual(self.metric(d, "gophermq_inflight_messages"), 0)
        self.assertEqual(self.metric(d, "gophermq_dead_lettered_total"), 0)


# ---------------------------------------------------------------------------
class InFlightPendingLimitTest(DeliveryTestCase):
    def test_in_flight_messages_count_against_max_pending_until_acked(self):
        d = self.start_daemon({"max_pending": 3})
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        for text in ("1", "2", "3"):
            self.publish(d, subject, text)
        seqs = [m["seq"] for m in self.fetch_meta(d, subject, acked)]
        self.assertEqual(len(seqs), 3)
        response = self.post(d, "/api/publish", {"subject": subject, "data": "4"})
        self.assertError(response, 429, "broker overflow")
        self.settle(d, "/api/extend", subject, acked, seqs, 3)
        self.settle(d, "/api/nack", subject, acked, seqs[:1], 1)
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "4"}), 429, "broker overflow")
        self.assertEqual(self.batch(d, [{"subject": subject, "data": "4"}])[0], 429)
        self.assertEqual([m["seq"] for m in self.fetch_meta(d, subject, acked)], seqs[:1])
        self.settle(d, "/api/ack", subject, acked, seqs[:2], 2)
        self.publish(d, subject, "4")
        self.publish(d, subject, "5")
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "6"}), 429, "broker overflow")
        self.assertEqual([m["data"] for m in self.fetch_meta(d, subject, acked)], ["4", "5"])

    def test_in_flight_bytes_count_against_max_pending_bytes_until_acked(self):
        d = self.start_daemon({"max_pending": 1000, "max_pending_bytes": 10})
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "0123456789")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "x"}), 429, "broker overflow")
        self.settle(d, "/api/ack", subject, acked, [seq], 1)
        self.publish(d, subject, "0123456789")

    def test_a_plain_fetch_still_frees_room_at_once(self):
        d = self.start_daemon({"max_pending": 2})
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        self.publish(d, subject, "1")
        self.publish(d, subject, "2")
        self.assertEqual(self.fetch_data(d, subject, plain, max=1), ["1"])
        self.publish(d, subject, "3")
        self.assertEqual(self.post(d, "/api/publish", {"subject": subject, "data": "4"})[0], 429)


# ---------------------------------------------------------------------------
class UnsubscribeTest(DeliveryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000})

    def setUp(self):
        self.d = self.daemon

    def test_unsubscribe_answers_ok_and_the_id_is_gone(self):
        d, subject = self.d, unique_subject()
        subscriber = self.subscribe(d, subject)
        subscribers = self.metric(d, "gophermq_subscribers")
        response = self.post(d, "/api/unsubscribe", {"subject": subject, "id": subscriber})
        self.assertJsonReply(response, 200, {"status": "ok"})
        self.assertEqual(response[2], b'{"status":"ok"}\n')
        self.assertEqual(self.metric(d, "gophermq_subscribers"), subscribers - 1)
        self.assertError(self.post(d, "/api/fetch", {"subject": subject, "id": subscriber}), 404, "bad id")
        self.assertError(self.post(d, "/api/unsubscribe", {"subject": subject, "id": subscriber}), 404, "bad id")
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "x"}), 404,
                         "subscriber not found")
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            self.assertError(self.post(d, path, {"subject": subject, "id": subscriber, "seqs": [1]}), 404, "bad id")

    def test_unsubscribe_errors(self):
        d, subject = self.d, unique_subject()
        subscriber = self.subscribe(d, subject)
        other = unique_subject()
        self.subscribe(d, other)
        for body in ({"subject": subject, "id": str(uuid.uuid4())}, {"subject": subject, "id": "nope"},
                     {"subject": subject}, {"subject": other, "id": subscriber},
                     {"subject": unique_subject(), "id": subscriber}):
            with self.subTest(body=body):
                self.assertError(self.post(d, "/api/unsubscribe", body), 404, "bad id")
        for body in ({"subject": "a..b", "id": subscriber}, {"id": subscriber}):
            with self.subTest(body=body):
                self.assertError(self.post(d, "/api/unsubscribe", body), 400, "invalid subject")
        for body in (b"", b"[]", b"{", {"subject": 5, "id": subscriber}, {"subject": subject, "id": 5},
                     {"subject": subject, "id": None}):
            with self.subTest(body=body):
                self.assertError(self.post(d, "/api/unsubscribe", body), 400, "request's body is invalid")
        self.publish(d, subject, "still here")
        self.assertEqual(self.fetch_data(d, subject, subscriber), ["still here"])

    def test_unsubscribe_frees_pending_and_in_flight_messages(self):
        d = self.start_daemon({"max_pending": 4, "max_pending_bytes": 1000})
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "1")
        self.publish(d, subject, "2")
        self.assertEqual(len(self.fetch_meta(d, subject, acked)), 2)
        self.assertEqual(self.post(d, "/api/publish", {"subject": subject, "data": "3"})[0], 429)
        self.unsubscribe(d, subject, plain)
        self.unsubscribe(d, subject, acked)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 0)
        self.assertEqual(metrics.value("gophermq_inflight_messages"), 0)
        fresh = self.subscribe(d, subject)
        for text in ("a", "b", "c", "d"):
            self.publish(d, subject, text)
        self.assertEqual(self.fetch_data(d, subject, fresh), ["a", "b", "c", "d"])

    def test_group_member_in_flight_messages_go_back_to_the_group(self):
        d, subject = self.d, unique_subject()
        leaving = self.subscribe(d, subject, group="g", ack=True, ack_wait_ms=LONG_WAIT)
        staying = self.subscribe(d, subject, group="g", ack=True, ack_wait_ms=LONG_WAIT)
        for text in ("1", "2", "3"):
            self.publish(d, subject, text)
        taken = self.fetch_meta(d, subject, leaving, max=2)
        self.assertEqual([m["data"] for m in taken], ["1", "2"])
        self.assertEqual(self.fetch_meta(d, subject, staying, peek=True, meta=True)[0]["data"], "3")
        self.unsubscribe(d, subject, leaving)
        messages = self.fetch_meta(d, subject, staying)
        self.assertEqual([m["data"] for m in messages], ["1", "2", "3"])
        self.assertEqual([m["seq"] for m in messages[:2]], [m["seq"] for m in taken])
        # Their second delivery (API.md: attempt is 1 on first delivery).
        self.assertEqual([m["attempt"] for m in messages], [2, 2, 1])
        self.settle(d, "/api/ack", subject, staying, [m["seq"] for m in messages], 3)

    def test_expired_group_member_in_flight_messages_go_back_to_the_group(self):
        d = self.start_daemon({"subscriber_ttl": 1})
        subject = unique_subject()
        expiring = self.subscribe(d, subject, group="g", ack=True, ack_wait_ms=LONG_WAIT)
        staying = self.subscribe(d, subject, group="g", ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "job")
        seq = self.fetch_meta(d, subject, expiring)[0]["seq"]
        deadline = time.monotonic() + harness.scaled(15)
        messages = []
        while not messages and time.monotonic() < deadline:
            messages = self.fetch_meta(d, subject, staying)       # keeps staying alive
            time.sleep(0.2)
        self.assertEqual([(m["seq"], m["data"]) for m in messages], [(seq, "job")])
        self.assertError(self.post(d, "/api/fetch", {"subject": subject, "id": expiring}), 404, "bad id")
        self.assertEqual(self.metric(d, "gophermq_subscribers_expired_total"), 1)
        self.settle(d, "/api/ack", subject, staying, [seq], 1)

    def test_group_member_leaving_leaves_the_groups_pending_messages_to_the_others(self):
        d, subject = self.d, unique_subject()
        leaving = self.subscribe(d, subject, group="g")
        staying = self.subscribe(d, subject, group="g")
        self.publish(d, subject, "1")
        self.publish(d, subject, "2")
        self.unsubscribe(d, subject, leaving)
        self.assertEqual(self.fetch_data(d, subject, staying), ["1", "2"])

    def test_unsubscribing_the_last_group_member_frees_the_groups_queue(self):
        d = self.start_daemon({"max_pending": 2})
        subject = unique_subject()
        member = self.subscribe(d, subject, group="g")
        self.publish(d, subject, "1")
        self.publish(d, subject, "2")
        self.unsubscribe(d, subject, member)
        self.assertEqual(self.metric(d, "gophermq_pending_messages"), 0)
        self.assertEqual(self.metric(d, "gophermq_groups"), 0)
        self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "x"}), 404,
                         "subscriber not found")
        member = self.subscribe(d, subject, group="g")
        self.publish(d, subject, "3")
        self.publish(d, subject, "4")
        self.assertEqual(self.fetch_data(d, subject, member), ["3", "4"])


# ---------------------------------------------------------------------------
class BatchPublishTest(DeliveryTestCase):
    LIMIT = 100      # max_message_size

    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "max_message_size": cls.LIMIT,
                                             "max_batch_messages": 1000, "max_batch_bytes": 1 << 20})

    def setUp(self):
        self.d = self.daemon
        self.one, self.two = unique_subject("one"), unique_subject("two")
        self.on_one = self.subscribe(self.d, self.one)
        self.on_two = [self.subscribe(self.d, self.two), self.subscribe(self.d, self.two, group="g")]

    def assert_nothing_stored(self):
        metrics = self.d.metrics()
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 0)
        self.assertEqual(self.fetch_data(self.d, self.one, self.on_one), [])
        for subscriber in self.on_two:
            self.assertEqual(self.fetch_data(self.d, self.two, subscriber), [])

    def assert_batch_error(self, response, status, text, index=None):
        expected = {"message": text}
        if index is not None:
            expected["index"] = index
        self.assertJsonReply(response, status, expected)
        self.assertTrue(response[2].endswith(b"}\n"), response[2])
        self.assert_nothing_stored()

    def test_batch_answers_count_and_gives_consecutive_seqs_in_array_order(self):
        d = self.d
        messages = [{"subject": self.one, "data": "a"}, {"subject": self.two, "data": "b"},
                    {"subject": self.one, "data": "c"}, {"subject": self.two, "data": "d"},
                    {"subject": self.one, "data": ""}, {"subject": self.one, "data": "\u0000\"\\\n\u00e9\U0001f600"}]
        response = self.batch(d, messages)
        self.assertJsonReply(response, 200, {"status": "ok", "count": 6})
        self.assertEqual(response[2], b'{"status":"ok","count":6}\n')
        got = self.fetch_meta(d, self.one, self.on_one, meta=True)
        got += self.fetch_meta(d, self.two, self.on_two[0], meta=True)
        by_data = {m["data"]: m for m in got}
        seqs = [by_data[m["data"]]["seq"] for m in messages]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 6)))
        for message in messages:
            self.assertEqual(by_data[message["data"]]["subject"], message["subject"])
        self.assertEqual(self.fetch_data(d, self.two, self.on_two[1]), ["b", "d"])
        self.publish(d, self.one, "after")
        self.assertGreater(self.fetch_meta(d, self.one, self.on_one, meta=True)[0]["seq"], seqs[-1])

    def test_batch_element_without_data_publishes_empty_data(self):
        self.batch_ok(self.d, [{"subject": self.one}])
        self.assertEqual(self.fetch_data(self.d, self.one, self.on_one), [""])

    def test_batch_of_max_batch_messages_and_max_message_size_data_is_accepted(self):
        messages = [{"subject": self.one, "data": "%04d" % n + "x" * (self.LIMIT - 4)} for n in range(1000)]
        self.batch_ok(self.d, messages)
        self.assertEqual(self.fetch_data(self.d, self.one, self.on_one), [m["data"] for m in messages])

    def test_batch_failures_are_all_or_nothing_with_the_first_failing_index(self):
        ok_one = {"subject": self.one, "data": "ok"}
        ok_two = {"subject": self.two, "data": "ok"}
        nobody = {"subject": unique_subject("nobody"), "data": "x"}
        big = {"subject": self.one, "data": "x" * (self.LIMIT + 1)}
        cases = [
            # element not an object, or subject/data of a wrong type
            ([ok_one, ok_two, "text"], 400, "request's body is invalid", 2),
            ([5], 400, "request's body is invalid", 0),
            ([ok_one, None], 400, "request's body is invalid", 1),
            ([ok_one, []], 400, "request's body is invalid", 1),
            ([ok_one, {"subject": 5, "data": "x"}], 400, "request's body is invalid", 1),
            ([ok_one, ok_two, {"subject": self.one, "data": 5}], 400, "request's body is invalid", 2),
            ([{"subject": self.one, "data": None}], 400, "request's body is invalid", 0),
            ([ok_one, {"subject": [self.one], "data": "x"}], 400, "request's body is invalid", 1),
            # invalid subject
            ([ok_one, ok_two, ok_one, {"subject": "a..b", "data": "x"}], 400, "invalid subject", 3),
            ([{"subject": "", "data": "x"}], 400, "invalid subject", 0),
            ([ok_one, {"data": "x"}], 400, "invalid subject", 1),
            ([ok_one, {"subject": "a b", "data": "x"}, ok_two], 400, "invalid subject", 1),
            # data above max_message_size
            ([ok_one, big], 413, "message too large", 1),
            ([big, ok_one, big], 413, "message too large", 0),
            # no subscriber
            ([ok_one, ok_two, nobody], 404, "subscriber not found", 2),
            ([nobody, ok_one], 404, "subscriber not found", 0),
            # validation errors are found before 404/429, first index wins among them
            ([nobody, ok_one, {"subject": "a..b", "data": "x"}], 400, "invalid subject", 2),
            ([nobody, big], 413, "message too large", 1),
            ([ok_one, big, {"subject": "a..b", "data": "x"}], 413, "message too large", 1),
            ([ok_one, {"subject": ".a", "data": "x"}, big], 400, "invalid subject", 1),
            ([ok_one, {"subject": self.one, "data": 1}, big], 400, "request's body is invalid", 1),
        ]
        published = self.metric(self.d, "gophermq_messages_published_total")
        for messages, status, text, index in cases:
            with self.subTest(messages=[m if not isinstance(m, dict) or m is not big else "big" for m in messages]):
                self.assert_batch_error(self.batch(self.d, messages), status, text, index)
        self.assertEqual(self.metric(self.d, "gophermq_messages_published_total"), published)

    def test_batch_missing_empty_or_non_array_messages_is_400_invalid_messages(self):
        for body in ({}, {"messages": None}, {"messages": []}, {"messages": 5}, {"messages": "x"},
                     {"messages": {}}, {"messages": {"subject": self.one, "data": "x"}},
                     {"messages": True}, {"subject": self.one, "data": "x"}):
            with self.subTest(body=body):
                self.assert_batch_error(self.post(self.d, "/api/publish/batch", body), 400, "invalid messages")

    def test_batch_body_that_is_not_a_json_object_is_400_body_invalid(self):
        for body in (b"", b"[]", b"{", b'[{"subject":"a.b","data":"x"}]', b"null",
                     b'{"messages":[{"subject":"a.b","data":"x"}]} x'):
            with self.subTest(body=body):
                self.assert_batch_error(self.post(self.d, "/api/publish/batch", body), 400,
                                        "request's body is invalid")

    def test_batch_overflowing_max_pending_is_429_at_the_first_message_that_does_not_fit(self):
        d = self.start_daemon({"max_pending": 6, "max_pending_bytes": 1000})
        one, two = unique_subject(), unique_subject()
        on_one = self.subscribe(d, one)
        on_two = [self.subscribe(d, two), self.subscribe(d, two)]
        self.publish(d, one, "before")                      # 1 copy
        # one: 1 copy each, two: 2 copies each -> 2, 3, 5, 7 > 6
        response = self.batch(d, [{"subject": one, "data": "a"}, {"subject": one, "data": "b"},
                                  {"subject": two, "data": "c"}, {"subject": two, "data": "d"}])
        self.assertJsonReply(response, 429, {"message": "broker overflow", "index": 3})
        self.assertRegex((response[1].get("Retry-After") or "").strip(), r"^\d+$")
        self.assertEqual(self.fetch_data(d, one, on_one), ["before"])
        for subscriber in on_two:
            self.assertEqual(self.fetch_data(d, two, subscriber), [])
        self.assertEqual(self.metric(d, "gophermq_pending_messages"), 0)
        # 404 at a lower index than the overflow wins.
        response = self.batch(d, [{"subject": unique_subject(), "data": "x"}] + [{"subject": two, "data": "y"}] * 4)
        self.assertJsonReply(response, 404, {"message": "subscriber not found", "index": 0})
        self.assertEqual(self.metric(d, "gophermq_pending_messages"), 0)
        # And an overflow at a lower index than a 404 wins: 2, 4, 6, 8 > 6 at 3.
        response = self.batch(d, [{"subject": two, "data": "y"}] * 4 + [{"subject": unique_subject(), "data": "x"}])
        self.assertJsonReply(response, 429, {"message": "broker overflow", "index": 3})
        self.assertEqual(self.metric(d, "gophermq_pending_messages"), 0)
        # Exactly the limit fits: 2 + 2 + 2 copies.
        self.batch_ok(d, [{"subject": two, "data": "e"}, {"subject": two, "data": "f"}, {"subject": two, "data": "g"}])
        self.assertEqual(self.metric(d, "gophermq_pending_messages"), 6)
        response = self.batch(d, [{"subject": one, "data": "h"}])
        self.assertJsonReply(response, 429, {"message": "broker overflow", "index": 0})

    def test_batch_overflowing_max_pending_bytes_is_429_with_its_index(self):
        d = self.start_daemon({"max_pending": 1000, "max_pending_bytes": 100})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        response = self.batch(d, [{"subject": subject, "data": "a" * 40}, {"subject": subject, "data": "b" * 40},
                                  {"subject": subject, "data": "c" * 21}, {"subject": subject, "data": ""}])
        self.assertJsonReply(response, 429, {"message": "broker overflow", "index": 2})
        self.assertEqual(self.fetch_data(d, subject, subscriber), [])
        self.batch_ok(d, [{"subject": subject, "data": "a" * 40}, {"subject": subject, "data": "b" * 60}])
        self.assertEqual(self.fetch_data(d, subject, subscriber), ["a" * 40, "b" * 60])

    def test_batch_with_more_than_max_batch_messages_is_413_batch_too_large(self):
        d = self.start_daemon({"max_batch_messages": 3})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        response = self.batch(d, [{"subject": subject, "data": str(n)} for n in range(4)])
        self.assertJsonReply(response, 413, {"message": "batch too large"})
        self.assertEqual(self.fetch_data(d, subject, subscriber), [])
        self.batch_ok(d, [{"subject": subject, "data": str(n)} for n in range(3)])
        self.assertEqual(self.fetch_data(d, subject, subscriber), ["0", "1", "2"])

    def test_batch_body_above_max_batch_bytes_is_413_batch_too_large(self):
        limit = 1024
        d = self.start_daemon({"max_batch_bytes": limit, "max_message_size": 4096})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)

        def body_of_length(length):
            empty = json.dumps({"messages": [{"subject": subject, "data": ""}]})
            return json.dumps({"messages": [{"subject": subject, "data": "x" * (length - len(empty))}]})

        for length in (limit + 1, limit + 100, 10 * limit):
            with self.subTest(length=length):
                body = body_of_length(length)
                self.assertEqual(len(body), length)
                response = self.post(d, "/api/publish/batch", body)
                self.assertJsonReply(response, 413, {"message": "batch too large"})
                self.assertEqual(self.fetch_data(d, subject, subscriber), [])
        body = body_of_length(limit)
        self.assertJsonReply(self.post(d, "/api/publish/batch", body), 200, {"status": "ok", "count": 1})
        self.assertEqual(self.fetch_data(d, subject, subscriber), [json.loads(body)["messages"][0]["data"]])

    def test_batch_body_is_bounded_by_max_batch_bytes_not_the_single_publish_limit(self):
        d = self.start_daemon({"max_message_size": 1000, "max_batch_bytes": 1 << 20})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        messages = [{"subject": subject, "data": "%03d" % n + "y" * 997} for n in range(50)]   # ~52 KB
        self.batch_ok(d, messages)
        self.assertEqual(self.fetch_data(d, subject, subscriber), [m["data"] for m in messages])

    def test_batch_wakes_held_fetches_and_reaches_groups(self):
        d = self.d
        parked = self.metric(d, "gophermq_parked_fetches")
        held = self.held(d, self.one, self.on_one, wait_ms=ms(30000))
        self.wait_parked(d, parked + 1)
        self.batch_ok(d, [{"subject": self.two, "data": "t"}, {"subject": self.one, "data": "o"}])
        self.assertEqual(json_body(held.result(harness.scaled(10))[2])["data"], ["o"])
        self.assertEqual(self.fetch_data(d, self.two, self.on_two[0]), ["t"])
        self.assertEqual(self.fetch_data(d, self.two, self.on_two[1]), ["t"])

    def test_batch_publishes_are_counted(self):
        d = self.start_daemon()
        subject = unique_subject()
        self.subscribe(d, subject)
        self.batch_ok(d, [{"subject": subject, "data": "x"}] * 3)
        self.batch_ok(d, [{"subject": subject, "data": "x"}] * 5)
        self.assertEqual(self.batch(d, [{"subject": "a..b", "data": "x"}])[0], 400)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_batch_publishes_total"), 2)
        self.assertEqual(metrics.value("gophermq_batch_messages_count"), 2)
        self.assertEqual(metrics.value("gophermq_batch_messages_sum"), 8)
        self.assertEqual(metrics.value("gophermq_messages_published_total"), 8)
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="publish_batch", code="200"), 2)
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="publish_batch", code="400"), 1)


# ---------------------------------------------------------------------------
class NewFieldValidationTest(DeliveryTestCase):
    """Every new field with a wrong type or range: 400 {"message":"invalid
    <field>"}, and the request changed nothing."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_pending": 1000000, "max_subject_length": 256})

    def setUp(self):
        self.d = self.daemon

    def subscribe_cases(self):
        dead = unique_subject("dl")
        cases = []
        add = lambda field, options: cases.append((field, options, None))
        for value in [5, 0, "", "g" * 65, "a b", "a.b", "a*", "a>", "a/b", "é", "a\u0000", " g", True,
                      [], ["g"], {}, 1.5]:
            add("group", {"group": value})
        for value in NOT_BOOLEANS:
            add("ack", {"ack": value})
        for value in NOT_INTEGERS + [0, -1, 86400001, 2 ** 64]:
            add("ack_wait_ms", {"ack": True, "ack_wait_ms": value})
        for options in ({"ack_wait_ms": 1000}, {"ack": False, "ack_wait_ms": 1000}):
            add("ack_wait_ms", options)
        for value in NOT_INTEGERS + [-1, 1000001, 2 ** 64]:
            add("max_deliver", {"ack": True, "max_deliver": value})
        for options in ({"max_deliver": 3}, {"ack": False, "max_deliver": 3}):
            add("max_deliver", options)
        for value in [5, "", "a..b", ".a", "a b", "a\nb", "x" * 300, True, [], {}, [dead], OWN_SUBJECT]:
            add("dead_letter", {"ack": True, "max_deliver": 2, "dead_letter": value})
        for options in ({"ack": True, "dead_letter": dead}, {"ack": True, "max_deliver": 0, "dead_letter": dead},
                        {"dead_letter": dead}, {"ack": False, "dead_letter": dead}):
            add("dead_letter", options)
        # max_deliver without ack is found first.
        for options in ({"ack": False, "max_deliver": 2, "dead_letter": dead}, {"max_deliver": 2, "dead_letter": dead}):
            add("max_deliver", options)
        # Checking order: group, ack, ack_wait_ms, max_deliver, dead_letter.
        add("group", {"group": "", "ack": "x", "ack_wait_ms": 0, "max_deliver": -1, "dead_letter": ""})
        add("ack", {"group": "ok", "ack": "x", "ack_wait_ms": 0, "max_deliver": -1, "dead_letter": ""})
        add("ack_wait_ms", {"ack": True, "ack_wait_ms": 0, "max_deliver": -1, "dead_letter": ""})
        add("max_deliver", {"ack": True, "ack_wait_ms": 10, "max_deliver": -1, "dead_letter": ""})
        for raw in RAW_NOT_INTEGERS:
            cases.append(("ack_wait_ms", {"ack": True}, ("ack_wait_ms", raw)))
            cases.append(("max_deliver", {"ack": True}, ("max_deliver", raw)))
        return cases

    def test_subscribe_bad_new_fields_are_400_invalid_field_and_subscribe_nothing(self):
        d = self.d
        group_subject = unique_subject()
        member = self.subscribe(d, group_subject, group="g")
        subscribers = self.metric(d, "gophermq_subscribers")
        for field, options, raw in self.subscribe_cases():
            subject = unique_subject("v")
            body = dict(options, subject=subject)
            if body.get("dead_letter") == OWN_SUBJECT:
                body["dead_letter"] = subject
            if raw is not None:
                body = raw_body(body, *raw)
            with self.subTest(field=field, body=body):
                self.assertError(self.post(d, "/api/subscribe", body), 400, "invalid " + field)
                self.assertError(self.post(d, "/api/publish", {"subject": subject, "data": "x"}), 404,
                                 "subscriber not found")
        # A refused join leaves an existing group alone.
        for options in ({"group": "g", "ack": "x"}, {"group": "g", "ack": True, "ack_wait_ms": 0}):
            with self.subTest(group_options=options):
                self.assertError(self.post(d, "/api/subscribe", dict(options, subject=group_subject)), 400,
                                 "invalid " + list(options)[-1])
        self.assertEqual(self.metric(d, "gophermq_subscribers"), subscribers)
        self.publish(d, group_subject, "x")
        self.assertEqual(self.fetch_data(d, group_subject, member), ["x"])

    def test_subscribe_checks_body_and_subject_before_the_new_fields(self):
        for body, text in (({"subject": 5, "group": 5}, "request's body is invalid"),
                           ({"subject": None, "ack": "x"}, "request's body is invalid"),
                           ({"subject": "a..b", "group": 5}, "invalid subject"),
                           ({"group": "g"}, "invalid subject"),
                           ({"subject": "", "ack": True, "ack_wait_ms": 0}, "invalid subject")):
            with self.subTest(body=body):
                self.assertError(self.post(self.d, "/api/subscribe", body), 400, text)

    def test_subscribe_accepts_the_edges_of_every_range(self):
        subject = unique_subject()
        for options in ({"group": "g" * 64}, {"group": "-_aZ09"}, {"ack": False}, {"ack": True},
                        {"ack": True, "ack_wait_ms": 1}, {"ack": True, "ack_wait_ms": 86400000},
                        {"ack": True, "max_deliver": 0}, {"ack": True, "max_deliver": 1000000},
                        {"ack": True, "max_deliver": 1, "dead_letter": unique_subject()},
                        {"ack": True, "max_deliver": 1, "dead_letter": "d" * 256},
                        {"unknown_field": [1, {"x": None}], "ack": True}):
            with self.subTest(options=options):
                self.subscribe(self.d, subject, **options)

    def test_fetch_bad_new_fields_are_400_invalid_field_and_take_nothing(self):
        d = self.d
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "kept 1")
        self.publish(d, subject, "kept 2")
        cases = []
        for field in ("max", "max_bytes"):
            for value in NOT_INTEGERS + [0, -1, -(2 ** 63)]:
                cases.append((field, {field: value}))
        for value in NOT_INTEGERS + [-1, -(2 ** 63)]:
            cases.append(("wait_ms", {"wait_ms": value}))
        for field in ("meta", "peek"):
            for value in NOT_BOOLEANS:
                cases.append((field, {field: value}))
        # Checking order: max, max_bytes, wait_ms, meta, peek.
        cases += [("max", {"max": 0, "max_bytes": 0, "wait_ms": -1, "meta": 1, "peek": 1}),
                  ("max_bytes", {"max": 1, "max_bytes": 0, "wait_ms": -1, "meta": 1, "peek": 1}),
                  ("wait_ms", {"wait_ms": -1, "meta": 1, "peek": 1}),
                  ("meta", {"meta": 1, "peek": 1})]
        parked = self.metric(d, "gophermq_parked_fetches")
        for subscriber in (plain, acked):
            for field, options in cases:
                body = dict(options, subject=subject, id=subscriber)
                with self.subTest(field=field, body=body):
                    self.assertError(self.post(d, "/api/fetch", body), 400, "invalid " + field)
                # Field errors come before a bad id.
                body = dict(options, subject=subject, id=str(uuid.uuid4()))
                with self.subTest(field=field, body=body):
                    self.assertError(self.post(d, "/api/fetch", body), 400, "invalid " + field)
            for field in ("max", "max_bytes", "wait_ms"):
                for raw in RAW_NOT_INTEGERS:
                    body = raw_body({"subject": subject, "id": subscriber}, field, raw)
                    with self.subTest(body=body):
                        self.assertError(self.post(d, "/api/fetch", body), 400, "invalid " + field)
        for body, status, text in (({"subject": "a..b", "id": plain, "max": 0}, 400, "invalid subject"),
                                   ({"subject": 5, "id": plain, "max": 0}, 400, "request's body is invalid"),
                                   ({"subject": subject, "id": None, "max": 0}, 400, "request's body is invalid")):
            with self.subTest(body=body):
                self.assertError(self.post(d, "/api/fetch", body), status, text)
        self.assertEqual(self.metric(d, "gophermq_parked_fetches"), parked)
        self.assertEqual(self.fetch_data(d, subject, plain), ["kept 1", "kept 2"])
        messages = self.fetch_meta(d, subject, acked)
        self.assertEqual([(m["data"], m["attempt"]) for m in messages], [("kept 1", 1), ("kept 2", 1)])

    def test_fetch_accepts_the_edges_of_every_range(self):
        d = self.d
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        for options in ({"max": 1}, {"max": 2 ** 31}, {"max": 2 ** 53}, {"max_bytes": 1},
                        {"max_bytes": 2 ** 53}, {"wait_ms": 0}, {"meta": False}, {"peek": False},
                        {"meta": True, "peek": True, "max": 1, "max_bytes": 1, "wait_ms": 0}):
            with self.subTest(options=options):
                self.fetch(d, subject, subscriber, **options)

    def test_ack_nack_extend_bad_seqs_and_delay_are_400_and_change_nothing(self):
        d = self.d
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "in flight")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        bad_seqs = [1, "1", {}, {"1": 1}, True, [0], [-1], [seq, 0], [1.5], [1.0], ["1"], [True],
                    [None], [[1]], [seq, "x"], [{}]]
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            cases = [({"subject": subject, "id": acked}, "seqs")]
            cases += [({"subject": subject, "id": acked, "seqs": value}, "seqs") for value in bad_seqs]
            cases += [(raw_body({"subject": subject, "id": acked}, "seqs", "[%s]" % raw), "seqs")
                      for raw in RAW_NOT_INTEGERS]
            if path == "/api/nack":
                cases += [({"subject": subject, "id": acked, "seqs": [seq], "delay_ms": value}, "delay_ms")
                          for value in NOT_INTEGERS + [-1, 86400001, 2 ** 64]]
                cases += [(raw_body({"subject": subject, "id": acked, "seqs": [seq]}, "delay_ms", raw), "delay_ms")
                          for raw in RAW_NOT_INTEGERS]
            for body, field in cases:
                with self.subTest(path=path, body=body):
                    self.assertError(self.post(d, path, body), 400, "invalid " + field)
        # Still in flight, neither acked nor nacked.
        self.assertEqual(self.fetch_meta(d, subject, acked), [])
        self.settle(d, "/api/ack", subject, acked, [seq], 1)
        # The edges of the ranges are accepted.
        self.publish(d, subject, "edge")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        self.settle(d, "/api/extend", subject, acked, [seq, 2 ** 53], 1)
        self.settle(d, "/api/nack", subject, acked, [seq], 1, delay_ms=86400000)
        self.assertEqual(self.fetch_meta(d, subject, acked), [])

    def test_batch_bad_messages_are_400_and_store_nothing(self):
        d = self.d
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        for value in (None, 5, "x", {}, True, [], 1.5):
            with self.subTest(messages=value):
                self.assertError(self.post(d, "/api/publish/batch", {"messages": value}), 400, "invalid messages")
        self.assertEqual(self.fetch_data(d, subject, subscriber), [])


class NullFieldTest(DeliveryTestCase):
    """JSON null is a wrong type for every new field, as it is for the
    original ones ("subject":null is 400): 400 invalid <field>, nothing
    changed -- not taken as "absent"."""

    def test_null_new_fields_are_400_invalid_field_and_change_nothing(self):
        d = self.start_daemon()
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, subject, "kept")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        subscribers = self.metric(d, "gophermq_subscribers")
        new = unique_subject()
        cases = [("/api/subscribe", {"subject": new, "group": None}, "group"),
                 ("/api/subscribe", {"subject": new, "ack": None}, "ack"),
                 ("/api/subscribe", {"subject": new, "ack": True, "ack_wait_ms": None}, "ack_wait_ms"),
                 ("/api/subscribe", {"subject": new, "ack": True, "max_deliver": None}, "max_deliver"),
                 ("/api/subscribe", {"subject": new, "ack": True, "max_deliver": 1, "dead_letter": None},
                  "dead_letter")]
        for field in ("max", "max_bytes", "wait_ms", "meta", "peek"):
            cases.append(("/api/fetch", {"subject": subject, "id": plain, field: None}, field))
        for path in ("/api/ack", "/api/nack", "/api/extend"):
            cases.append((path, {"subject": subject, "id": acked, "seqs": None}, "seqs"))
        cases.append(("/api/nack", {"subject": subject, "id": acked, "seqs": [seq], "delay_ms": None}, "delay_ms"))
        cases.append(("/api/publish/batch", {"messages": None}, "messages"))
        for path, body, field in cases:
            with self.subTest(path=path, body=body):
                self.assertError(self.post(d, path, body), 400, "invalid " + field)
        self.assertEqual(self.metric(d, "gophermq_subscribers"), subscribers)
        self.assertEqual(self.fetch_data(d, subject, plain), ["kept"])
        self.assertEqual(self.fetch_meta(d, subject, acked), [])         # not nacked
        self.settle(d, "/api/ack", subject, acked, [seq], 1)


# ---------------------------------------------------------------------------
class OriginalAnswersTest(DeliveryTestCase):
    """Spot checks that the new code kept the original answers byte for byte
    (test_api.py covers the rest)."""

    def test_original_requests_keep_their_exact_bytes(self):
        d = self.start_daemon()
        subject = unique_subject()
        status, _, body = self.post(d, "/api/subscribe", {"subject": subject})
        subscriber = json_body(body)["id"]
        self.assertEqual((status, body), (200, ('{"id":"%s","subject":"%s"}\n' % (subscriber, subject)).encode()))
        self.assertEqual(self.post(d, "/api/publish", {"subject": subject, "data": "x"})[2], b'{"status":"ok"}\n')
        self.assertEqual(self.post(d, "/api/fetch", {"subject": subject, "id": subscriber})[2],
                         ('{"subject":"%s","id":"%s","data":["x"]}\n' % (subject, subscriber)).encode())
        self.assertEqual(self.post(d, "/api/fetch", {"subject": subject, "id": subscriber})[2],
                         ('{"subject":"%s","id":"%s","data":[]}\n' % (subject, subscriber)).encode())
        self.assertEqual(self.post(d, "/api/fetch", {"subject": subject, "id": "x"})[2], b'{"message":"bad id"}\n')
        self.assertEqual(self.post(d, "/api/publish", {"subject": unique_subject(), "data": "x"})[2],
                         b'{"message":"subscriber not found"}\n')

    def test_original_fetch_still_drains_everything_without_fetch_max_batch(self):
        d = self.start_daemon({"max_pending": 100000})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        texts = ["%d" % n for n in range(2500)]
        for start in range(0, len(texts), 500):
            self.batch_ok(d, [{"subject": subject, "data": t} for t in texts[start:start + 500]])
        self.assertEqual(self.fetch_data(d, subject, subscriber), texts)

    def test_fetch_max_batch_caps_original_fetches_too(self):
        d = self.start_daemon({"fetch_max_batch": 3})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        acked = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        for n in range(8):
            self.publish(d, subject, str(n))
        self.assertEqual(self.post(d, "/api/fetch", {"subject": subject, "id": subscriber})[2],
                         ('{"subject":"%s","id":"%s","data":["0","1","2"]}\n' % (subject, subscriber)).encode())
        self.assertEqual(self.fetch_data(d, subject, subscriber, max=10), ["3", "4", "5"])
        self.assertEqual(self.fetch_data(d, subject, subscriber, max=1), ["6"])
        self.assertEqual(self.fetch_data(d, subject, subscriber, peek=True), ["7"])
        self.assertEqual([m["data"] for m in self.fetch_meta(d, subject, acked)], ["0", "1", "2"])
        self.assertEqual([m["data"] for m in self.fetch_meta(d, subject, acked, max=100)], ["3", "4", "5"])

    def test_a_plain_subscriber_next_to_new_kinds_keeps_the_original_fetch(self):
        d = self.start_daemon()
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        self.subscribe(d, subject, ack=True)
        self.subscribe(d, subject, group="g", ack=True, max_deliver=2)
        self.publish(d, subject, "x")
        self.assertJsonReply(self.post(d, "/api/fetch", {"subject": subject, "id": plain}), 200,
                             {"subject": subject, "id": plain, "data": ["x"]})

    def test_new_paths_answer_405_to_other_methods(self):
        d = self.start_daemon()
        for path in ("/api/ack", "/api/nack", "/api/extend", "/api/unsubscribe", "/api/publish/batch"):
            for method in ("GET", "PUT", "DELETE"):
                with self.subTest(method=method, path=path):
                    self.assertError(d.request(method, path), 405, "Method Not Allowed")
        for path in ("/api/publish/batch/", "/api/acks", "/api/ack/x"):
            with self.subTest(path=path):
                self.assertError(d.request("POST", path, {}), 404, "Not Found")


# ---------------------------------------------------------------------------
class MetricsAndConfigTest(DeliveryTestCase):
    OPTIONS = {   # name: (least, most)
        "ack_wait_ms": (1, 86400000),
        "fetch_max_batch": (0, 1000000000),
        "fetch_max_wait_ms": (0, 3600000),
        "max_batch_messages": (1, 1000000),
        "max_batch_bytes": (1024, 1073741824),
        "max_parked_fetches": (0, 10000000),
    }

    def test_new_metric_families_are_exported_unlabelled_and_start_at_zero(self):
        d = self.start_daemon()
        metrics = d.metrics()
        for name in NEW_COUNTERS + NEW_GAUGES:
            with self.subTest(name=name):
                self.assertEqual(metrics.types.get(name), "counter" if name in NEW_COUNTERS else "gauge")
                self.assertTrue(metrics.help.get(name, "").strip(), "no HELP")
                self.assertEqual(metrics.find(name), [({}, 0.0)])
        for name in NEW_HISTOGRAMS:
            with self.subTest(name=name):
                self.assertEqual(metrics.types.get(name), "histogram")
                self.assertEqual(metrics.value(name + "_count"), 0)
                for labels, _ in metrics.find(name + "_bucket"):
                    self.assertEqual(set(labels), {"le"})

    def test_new_endpoints_are_counted_under_their_method_labels(self):
        d = self.start_daemon()
        subject = unique_subject()
        acked = self.subscribe(d, subject, ack=True, group="g")
        self.publish(d, subject, "x")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        self.settle(d, "/api/extend", subject, acked, [seq], 1)
        self.settle(d, "/api/nack", subject, acked, [seq], 1)
        self.fetch_meta(d, subject, acked)
        self.settle(d, "/api/ack", subject, acked, [seq], 1)
        self.batch_ok(d, [{"subject": subject, "data": "y"}])
        self.unsubscribe(d, subject, acked)
        metrics = d.metrics()
        rate = "gophermq_client_request_rate"
        for method, count in (("ack", 1), ("nack", 1), ("extend", 1), ("publish_batch", 1),
                              ("unsubscribe", 1), ("fetch", 2), ("subscribe", 1), ("publish", 1)):
            with self.subTest(method=method):
                self.assertEqual(metrics.value(rate, method=method, code="200"), count)
                self.assertEqual(metrics.value("gophermq_request_duration_seconds_count", method=method,
                                               code="200"), count)
        self.assertEqual(metrics.value("gophermq_acked_total"), 1)
        self.assertEqual(metrics.value("gophermq_nacked_total"), 1)
        self.assertEqual(metrics.value("gophermq_redelivered_total"), 1)
        self.assertEqual(metrics.value("gophermq_groups"), 0)
        labels = set()
        for name, sample_labels, _ in metrics.samples:
            labels.update(sample_labels)
        self.assertLessEqual(labels, {"method", "code", "le", "version"}, "a label per id or subject?")

    def test_groups_and_parked_fetches_gauges_follow_activity(self):
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        first = self.subscribe(d, subject, group="a")
        self.subscribe(d, subject, group="a")
        self.subscribe(d, subject, group="b")
        self.subscribe(d, unique_subject(), group="a")
        self.assertEqual(self.metric(d, "gophermq_groups"), 3)
        helds = [self.held(d, subject, first, wait_ms=LONG_WAIT) for _ in range(3)]
        self.wait_parked(d, 3)
        self.assertEqual(self.metric(d, "gophermq_parked_fetches"), 3)
        for n in range(3):
            self.publish(d, subject, str(n))
        for held in helds:
            self.assertEqual(held.result(harness.scaled(10))[0], 200)
        d.wait_metric("gophermq_parked_fetches", lambda value: value == 0)

    def test_new_options_are_checked_with_their_ranges(self):
        directory = tempfile.mkdtemp(prefix="gophermq-delivery-")
        self.addCleanup(shutil.rmtree, directory, True)
        cases = []
        for name, (least, most) in self.OPTIONS.items():
            for value, good in ((least, True), (most, True), (least - 1, False), (most + 1, False)):
                path = os.path.join(directory, "%s-%d.conf" % (name, len(cases)))
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write("%s = %d\n" % (name, value))
                cases.append((name, value, good, path))
        results = harness.run_cli_all(["-t", "-c", path] for _, _, _, path in cases)
        for (name, value, good, _), result in zip(cases, results):
            with self.subTest(option=name, value=value):
                output = result.stdout + result.stderr
                self.assertEqual(result.returncode, 0 if good else 1, output)
                if not good:
                    self.assertIn(name, output)

    def test_shipped_config_documents_the_new_options(self):
        with open(os.path.join(harness.SRCDIR, "etc", "gophermq.conf"), encoding="utf-8") as handle:
            text = handle.read()
        defaults = {"ack_wait_ms": 30000, "fetch_max_batch": 0, "fetch_max_wait_ms": 30000,
                    "max_batch_messages": 1000, "max_batch_bytes": 8388608, "max_parked_fetches": 10000}
        for name, value in defaults.items():
            with self.subTest(option=name):
                self.assertRegex(text, r"(?m)^#%s = %d$" % (name, value))

    def test_new_options_are_applied_by_a_reload(self):
        d = self.start_daemon({"fetch_max_wait_ms": ms(60000)})
        subject = unique_subject()
        subscriber = self.subscribe(d, subject)
        before = d.log_count(RELOADED + re.escape(d.config_path))
        limit = ms(1000)
        d.write_config({"fetch_max_batch": 2, "max_batch_messages": 2, "max_batch_bytes": 1024,
                        "fetch_max_wait_ms": limit, "ack_wait_ms": limit, "max_parked_fetches": 1})
        d.signal(signal.SIGHUP)
        d.wait_for_log(RELOADED + re.escape(d.config_path), count=before + 1)
        # max_batch_messages
        self.assertJsonReply(self.batch(d, [{"subject": subject, "data": "x"}] * 3), 413,
                             {"message": "batch too large"})
        self.batch_ok(d, [{"subject": subject, "data": "1"}, {"subject": subject, "data": "2"}])
        self.publish(d, subject, "3")
        # max_batch_bytes
        response = self.batch(d, [{"subject": subject, "data": "x" * 1100}])
        self.assertJsonReply(response, 413, {"message": "batch too large"})
        # fetch_max_batch
        self.assertEqual(self.fetch_data(d, subject, subscriber), ["1", "2"])
        self.assertEqual(self.fetch_data(d, subject, subscriber), ["3"])
        # fetch_max_wait_ms
        started = time.monotonic()
        self.assertEqual(self.fetch_data(d, subject, subscriber, wait_ms=LONG_WAIT), [])
        self.assertLess(time.monotonic() - started, seconds(limit) + SLACK)
        self.assertGreaterEqual(time.monotonic() - started, seconds(limit) * 0.9)
        # max_parked_fetches
        held = self.held(d, subject, subscriber, wait_ms=LONG_WAIT)
        self.wait_parked(d, 1)
        started = time.monotonic()
        self.assertEqual(self.fetch_data(d, subject, subscriber, wait_ms=LONG_WAIT), [])
        self.assertLess(time.monotonic() - started, seconds(limit) * 0.9)
        self.assertEqual(held.reply(seconds(limit) + SLACK + harness.scaled(5))[1]["data"], [])
        # ack_wait_ms (the default for new subscriptions)
        acked = self.subscribe(d, subject, ack=True)
        self.publish(d, subject, "a")
        seq = self.fetch_meta(d, subject, acked)[0]["seq"]
        time.sleep(seconds(limit) + 0.3 * T)
        self.assertEqual([(m["seq"], m["attempt"]) for m in self.fetch_meta(d, subject, acked)], [(seq, 2)])


# ---------------------------------------------------------------------------
class ShutdownTest(DeliveryTestCase):
    def test_sigterm_answers_held_fetches_200_with_what_they_have(self):
        d = self.start_daemon({"fetch_max_wait_ms": ms(120000)})
        subject = unique_subject()
        plain = self.subscribe(d, subject)
        acked = self.subscribe(d, subject, ack=True)
        member = self.subscribe(d, subject, group="g")
        helds = [(self.held(d, subject, plain, wait_ms=LONG_WAIT), "data"),
                 (self.held(d, subject, plain, wait_ms=LONG_WAIT, meta=True), "messages"),
                 (self.held(d, subject, acked, wait_ms=LONG_WAIT), "messages"),
                 (self.held(d, subject, member, wait_ms=LONG_WAIT, max=5, peek=True), "data")]
        ids = [plain, plain, acked, member]
        self.wait_parked(d, len(helds))
        signalled = time.monotonic()
        d.signal(signal.SIGTERM)
        for (held, key), subscriber in zip(helds, ids):
            status, reply = held.reply(timeout=harness.STOP_TIMEOUT + harness.scaled(5))
            self.assertEqual((status, reply), (200, {"subject": subject, "id": subscriber, key: []}))
            self.assertLess(held.answered_at - signalled, harness.STOP_TIMEOUT)
        self.assertEqual(d.wait_exit(harness.STOP_TIMEOUT), 0, d.log_tail())


if __name__ == "__main__":
    harness.main()
