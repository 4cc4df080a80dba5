#!/usr/bin/env python3
"""test_streams.py - GET /api/stream: a subscriber's messages as
Server-Sent Events (API.md, "Streams (Server-Sent Events)").

The stream is read on a raw socket by harness.EventStream: the response head,
the chunked body, and the body parsed as an EventSource would ("id:",
"event:", "data:" fields, ":" comments, a blank line ending an event).

Covered: events in order with id = seq and the exact data JSON; headers;
keepalive comments (and stream_keepalive_s reloaded); resuming an ack
subscription with Last-Event-ID or ?last_event_id=; a plain subscription
losing nothing between two consecutive streams; one stream per subscriber;
unsubscribe ending the stream; a reader that stops reading (memory stays
bounded, publishes get 429, nothing is lost once it reads again); wildcard
subscriptions; expired messages; auth; errors; CORS; subscriber_ttl; the
metrics; SIGTERM ending streams cleanly with unsent messages kept across a
restart (persistence = "log").

Timing: these tests check behaviour, never speed.  Every wait for an event
is generous and stretched under valgrind (harness.SCALE); conditions on
the daemon's state are polled from its metrics.
"""

import json
import os
import re
import signal
import sys
import tempfile
import shutil
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, EventStream, unique_subject  # noqa: E402

S = harness.SCALE
# How long a test waits for something that must come (an event, the end of
# a stream): generous, and far longer under valgrind.
EVENT_TIMEOUT = harness.STREAM_TIMEOUT
# An ack_wait_ms that no test is meant to reach.
LONG_ACK_WAIT = 3600000
RELOADED = r"configuration reloaded from "
EVENT_FIELDS = ["seq", "subject", "attempt", "data"]


def ms(milliseconds):
    """A duration to put on the wire, in ms, stretched under valgrind."""
    return int(milliseconds * S)


def stream_path(subject, subscriber_id, **query):
    """/api/stream?subject=...&id=...[&more], URL-encoded."""
    params = [("subject", subject), ("id", subscriber_id)] + sorted(query.items())
    return "/api/stream?" + urllib.parse.urlencode(params)


def read_rss_kib(pid):
    """The resident set size of pid in KiB, from /proc."""
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def daemon_has_asan():
    """True when the daemon is built with AddressSanitizer, whose quarantine
    holds freed memory back on purpose (RSS then says nothing)."""
    try:
        with open(harness.DAEMON, "rb") as handle:
            return b"__asan_init" in handle.read()
    except OSError:
        return False


def socket_buffer_bound():
    """More bytes than the kernel can hold for one loopback TCP connection
    whose reader has a small receive buffer: the sender's largest send
    buffer (tcp_wmem's maximum) and a MiB for the rest."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as handle:
            largest = int(handle.read().split()[2])
    except (OSError, ValueError, IndexError):
        largest = 4 << 20
    return largest + (1 << 20)


class StreamTestCase(DaemonTestCase):
    """Helpers shared by the stream tests."""

    def post(self, d, path, body, client=None, headers=None):
        status, _, reply = d.post_json(path, body, client=client, headers=headers)
        return status, reply

    def subscribe(self, d, subject, headers=None, **options):
        status, reply = self.post(d, "/api/subscribe", dict(options, subject=subject), headers=headers)
        self.assertEqual(status, 200, "subscribe %r %r: %r" % (subject, options, reply))
        return reply["id"]

    def publish(self, d, subject, data, client=None, headers=None, **fields):
        status, reply = self.post(d, "/api/publish", dict(fields, subject=subject, data=data),
                                  client=client, headers=headers)
        self.assertEqual((status, reply), (200, {"status": "ok"}), "publish %r to %r" % (data, subject))

    def ack(self, d, subject, subscriber, seqs, count):
        status, reply = self.post(d, "/api/ack", {"subject": subject, "id": subscriber, "seqs": list(seqs)})
        self.assertEqual((status, reply), (200, {"status": "ok", "count": count}), "ack %r" % (seqs,))

    def open_stream(self, d, subject, subscriber, headers=None, **query):
        """A stream that answered 200 and sent its opening comment; closed
        when the test ends."""
        stream = EventStream(d, stream_path(subject, subscriber, **query), headers=headers)
        self.addCleanup(stream.close)
        self.assertEqual(stream.status, 200, "GET %s: %r" % (stream.path, stream.headers))
        self.assertEqual(stream.next_item(), ("comment", "open"), "the body starts with \": open\"")
        return stream

    def stream_error(self, d, path, method="GET", headers=None):
        """(status, headers, body) of a request to path that is not a stream."""
        return d.request(method, path, None, headers=headers, content_type=None)

    def message(self, event):
        """The event's data JSON, checked for its exact form, as a dict."""
        self.assertEqual(event.get("event"), "message", event)
        self.assertEqual(len(event["lines"]), 3, event)
        self.assertEqual([line.split(":", 1)[0] for line in event["lines"]], ["id", "event", "data"], event)
        pairs = json.loads(event["data"], object_pairs_hook=list)
        self.assertEqual([name for name, _ in pairs], EVENT_FIELDS, event["data"])
        message = dict(pairs)
        self.assertEqual(event["id"], str(message["seq"]), "the event id is the seq")
        return message

    def assert_messages(self, events, subject, expected, attempt=1):
        """events carry exactly expected (data strings, or (data, attempt)),
        in order, to subject, with strictly increasing seqs.  Returns the
        seqs."""
        messages = [self.message(event) for event in events]
        want = [(item if isinstance(item, tuple) else (item, attempt)) for item in expected]
        self.assertEqual([(m["data"], m["attempt"]) for m in messages], want)
        for m in messages:
            self.assertEqual(m["subject"], subject)
        seqs = [m["seq"] for m in messages]
        self.assertEqual(seqs, sorted(set(seqs)), "seqs in order, no repeats")
        return seqs

    def fill_stuck_stream(self, d, subject, **fields):
        """Publishes numbered 1 KiB messages ("000042 zzz...") to subject,
        more than the socket's buffers can hold: to a stream whose client
        reads nothing (opened before or after), some are then left in the
        broker.  Returns how many were published."""
        published = 0
        bound = socket_buffer_bound()
        with d.client() as client:
            while published * 1024 <= bound:
                batch = [dict(fields, subject=subject, data="%06d " % (published + n) + "z" * 1017)
                         for n in range(64)]
                status, reply = self.post(d, "/api/publish/batch", {"messages": batch}, client=client)
                self.assertEqual(status, 200, reply)
                published += len(batch)
        return published

    def numbered(self, events):
        """The numbers of fill_stuck_stream()'s messages in events."""
        return [int(self.message(event)["data"].split(" ")[0]) for event in events]

    def wait_streams(self, d, count):
        d.wait_metric("gophermq_streams", lambda value: value == count)


# ---------------------------------------------------------------------------
# One daemon, default configuration
# ---------------------------------------------------------------------------

class StreamBasicsTest(StreamTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon()

    def test_events_in_order_with_exact_data(self):
        d = self.d
        subject = unique_subject("stream")
        subscriber = self.subscribe(d, subject)
        self.wait_streams(d, 0)       # other tests' streams are closed
        metrics = d.metrics()
        events_before = metrics.value("gophermq_stream_events_total")
        opened_before = metrics.value("gophermq_client_request_rate", method="stream", code="200") or 0
        # Published before the stream opens: the stream starts with them.
        d.publish_ok(subject, "before the stream")
        stream = self.open_stream(d, subject, subscriber)
        data = ["plain", "", 'quote " and back\\slash', "line\nbreak\r\ttab", "nul \u0000 byte",
                "\u00e9t\u00e9 \u4e16\u754c \U0001F389", "</script><b>", "data: not a field\n\nid: 1",
                "\u2028\u2029", "x" * 5000]
        with d.client() as client:
            for value in data:
                self.publish(d, subject, value, client=client)
        events = stream.events(1 + len(data))
        seqs = self.assert_messages(events, subject, ["before the stream"] + data)
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "every message of the subject, once")
        # The data line is the message in the meta form of fetch: exact JSON.
        self.assertEqual(events[2]["lines"], ["id: %d" % seqs[2], "event: message",
                                              'data: {"seq":%d,"subject":"%s","attempt":1,"data":""}'
                                              % (seqs[2], subject)])
        # A plain subscription's streamed messages are consumed.
        self.assertEqual(d.fetch(subject, subscriber), [])
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_streams"), 1)
        self.assertEqual(metrics.value("gophermq_stream_events_total"), events_before + len(events))
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="stream", code="200"),
                         opened_before + 1)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.types.get("gophermq_streams"), "gauge")
        self.assertEqual(metrics.types.get("gophermq_stream_events_total"), "counter")
        # Later messages come on the same stream, as they are published.
        for n in range(3):
            self.publish(d, subject, "later %d" % n)
            self.assert_messages([stream.next_event()], subject, ["later %d" % n])

    def test_headers(self):
        d = self.d
        subject = unique_subject("headers")
        stream = self.open_stream(d, subject, self.subscribe(d, subject))
        content_type = stream.header("Content-Type")
        self.assertEqual(content_type.split(";")[0].strip(), "text/event-stream", content_type)
        self.assertEqual(stream.header("Cache-Control"), "no-cache")
        self.assertIsNone(stream.header("Content-Length"))
        self.assertTrue(stream.chunked, stream.headers)
        self.assertIsNone(stream.header("Access-Control-Allow-Origin"), "no cors_origin configured")

    def test_errors(self):
        d = self.d
        subject = unique_subject("errors")
        subscriber = self.subscribe(d, subject)
        other_subject = unique_subject("errors")
        self.subscribe(d, other_subject)
        self.wait_streams(d, 0)       # other tests' streams are closed
        for path in [stream_path(subject, "00000000-0000-4000-8000-000000000000"),
                     stream_path(subject, "not an id"), stream_path(subject, ""),
                     "/api/stream?subject=" + urllib.parse.quote(subject),
                     stream_path(other_subject, subscriber),
                     stream_path(subject, subscriber.upper())]:
            self.assertError(self.stream_error(d, path), 404, "bad id", path)
        for bad in ["", "a..b", ".a", "a.", "a b", "a\tb"]:
            path = stream_path(bad, subscriber)
            self.assertError(self.stream_error(d, path), 400, "invalid subject", path)
        self.assertError(self.stream_error(d, "/api/stream"), 400, "invalid subject")
        for method in ["POST", "PUT", "DELETE"]:
            response = self.stream_error(d, stream_path(subject, subscriber), method=method)
            self.assertError(response, 405, "Method Not Allowed", method)
        # None of them opened a stream, and the subscriber is untouched.
        self.assertEqual(d.metrics().value("gophermq_streams"), 0)
        self.publish(d, subject, "still there")
        self.assertEqual(d.fetch(subject, subscriber), ["still there"])

    def test_a_new_stream_of_the_subscriber_ends_the_old_one(self):
        d = self.d
        subject = unique_subject("replace")
        subscriber = self.subscribe(d, subject)
        first = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "to the first")
        self.assert_messages([first.next_event()], subject, ["to the first"])
        second = self.open_stream(d, subject, subscriber)
        self.assertEqual(first.read_to_end(), [], "the old stream ends, with nothing more")
        self.publish(d, subject, "to the second")
        self.assert_messages([second.next_event()], subject, ["to the second"])
        # Another subscriber's stream is not affected by either.
        other = self.subscribe(d, subject)
        third = self.open_stream(d, subject, other)
        self.publish(d, subject, "to both")
        self.assert_messages([second.next_event()], subject, ["to both"])
        self.assert_messages([third.next_event()], subject, ["to both"])
        first.close()
        d.wait_metric("gophermq_streams", lambda value: value <= 2)

    def test_unsubscribe_ends_the_stream(self):
        d = self.d
        subject = unique_subject("unsubscribe")
        subscriber = self.subscribe(d, subject)
        stream = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "before")
        self.assert_messages([stream.next_event()], subject, ["before"])
        status, reply = self.post(d, "/api/unsubscribe", {"subject": subject, "id": subscriber})
        self.assertEqual((status, reply), (200, {"status": "ok"}))
        self.assertEqual(stream.read_to_end(), [])
        self.assertError(self.stream_error(d, stream_path(subject, subscriber)), 404, "bad id")

    def test_group_members_streams_share_the_messages(self):
        d = self.d
        subject = unique_subject("group")
        members = [self.subscribe(d, subject, group="workers") for _ in range(2)]
        loner = self.subscribe(d, subject)
        streams = [self.open_stream(d, subject, member) for member in members]
        loner_stream = self.open_stream(d, subject, loner)
        data = ["job %d" % n for n in range(10)]
        with d.client() as client:
            for value in data:
                self.publish(d, subject, value, client=client)
        # The subscriber outside the group gets every message ...
        self.assert_messages(loner_stream.events(len(data)), subject, data)
        # ... and each goes to exactly one member, each member's in order.
        received = [[], []]
        deadline = time.monotonic() + EVENT_TIMEOUT
        while sum(map(len, received)) < len(data):
            self.assertLess(time.monotonic(), deadline, "group messages missing: %r" % (received,))
            for stream, messages in zip(streams, received):
                if stream.items or stream.readable(0.05):
                    messages.append(self.message(stream.next_event()))
        self.assertEqual(sorted(m["data"] for m in received[0] + received[1]), sorted(data))
        for messages in received:
            seqs = [m["seq"] for m in messages]
            self.assertEqual(seqs, sorted(seqs))

    def test_wildcard_subscriptions(self):
        d = self.d
        base = unique_subject("wild")
        star = self.subscribe(d, base + ".*")
        tail = self.subscribe(d, base + ".>")
        star_stream = self.open_stream(d, base + ".*", star)
        tail_stream = self.open_stream(d, base + ".>", tail)
        for subject in [base + ".a", base + ".b.c", base + ".d"]:
            self.publish(d, subject, "to " + subject)
        star_messages = [self.message(event) for event in star_stream.events(2)]
        self.assertEqual([(m["subject"], m["data"]) for m in star_messages],
                         [(base + ".a", "to " + base + ".a"), (base + ".d", "to " + base + ".d")])
        tail_messages = [self.message(event) for event in tail_stream.events(3)]
        self.assertEqual([(m["subject"], m["data"]) for m in tail_messages],
                         [(s, "to " + s) for s in [base + ".a", base + ".b.c", base + ".d"]])
        self.assertEqual([m["seq"] for m in star_messages],
                         [tail_messages[0]["seq"], tail_messages[2]["seq"]])
        # A stream names the subscription by the subject it was made with.
        self.assertError(self.stream_error(d, stream_path(base + ".a", star)), 404, "bad id")

    def test_expired_messages_are_never_streamed(self):
        d = self.d
        subject = unique_subject("ttl")
        subscriber = self.subscribe(d, subject)
        ttl = ms(200)
        self.publish(d, subject, "expires", ttl_ms=ttl)
        self.publish(d, subject, "stays")
        self.publish(d, subject, "expires too", ttl_ms=ttl)
        time.sleep(ttl / 1000.0 + 0.3)
        stream = self.open_stream(d, subject, subscriber)
        self.assert_messages([stream.next_event()], subject, ["stays"])
        # With the stream open, a message with a long enough ttl comes; the
        # next event after the expired ones is a later message.
        self.publish(d, subject, "lives", ttl_ms=ms(600000))
        self.assert_messages([stream.next_event()], subject, ["lives"])
        self.assertEqual(d.metrics().value("gophermq_pending_messages"), 0)

    def test_a_closed_client_is_noticed_and_a_plain_stream_loses_nothing(self):
        d = self.d
        subject = unique_subject("continuity")
        subscriber = self.subscribe(d, subject)
        # Other tests' streams are closed: the count goes back to 0.
        self.wait_streams(d, 0)
        first = self.open_stream(d, subject, subscriber)
        first_data = ["first %d" % n for n in range(5)]
        with d.client() as client:
            for value in first_data:
                self.publish(d, subject, value, client=client)
        seqs = self.assert_messages(first.events(len(first_data)), subject, first_data)
        first.close()
        # The daemon notices the closed connection by itself.
        self.wait_streams(d, 0)
        second_data = ["second %d" % n for n in range(4)]
        with d.client() as client:
            for value in second_data:
                self.publish(d, subject, value, client=client)
        second = self.open_stream(d, subject, subscriber)
        later = self.assert_messages(second.events(len(second_data)), subject, second_data)
        self.assertGreater(later[0], seqs[-1])
        # Nothing else comes before a message published now: no duplicates.
        self.publish(d, subject, "sentinel")
        self.assert_messages([second.next_event()], subject, ["sentinel"])
        self.assertEqual(d.fetch(subject, subscriber), [])


# ---------------------------------------------------------------------------
# Ack subscriptions: resuming with Last-Event-ID
# ---------------------------------------------------------------------------

class AckStreamTest(StreamTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon()

    def resume(self, how):
        """An ack subscriber reads six messages, acks three, disconnects;
        two more are published; it reconnects with last event id L (how:
        "header" or "query").  The new stream sends the unacked messages
        after L again, attempt 2, then the new ones; never the acked ones,
        nor the unacked one at or before L."""
        d = self.d
        subject = unique_subject("resume")
        subscriber = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        stream = self.open_stream(d, subject, subscriber)
        data = ["m%d" % n for n in range(1, 7)]
        with d.client() as client:
            for value in data:
                self.publish(d, subject, value, client=client)
        seqs = self.assert_messages(stream.events(len(data)), subject, data)
        self.ack(d, subject, subscriber, [seqs[0], seqs[1], seqs[3]], 3)
        stream.close()
        # Published once the daemon has noticed the client went away (a
        # message taken by the going stream just then would come back as
        # attempt 2).  Other tests' streams are closed as well.
        self.wait_streams(d, 0)
        self.publish(d, subject, "m7")
        self.publish(d, subject, "m8")
        last = seqs[2]       # m3: unacked, at L, so not sent again
        if how == "header":
            resumed = self.open_stream(d, subject, subscriber, headers={"Last-Event-ID": str(last)})
        else:
            resumed = self.open_stream(d, subject, subscriber, last_event_id=str(last))
        got = self.assert_messages(resumed.events(4), subject, [("m5", 2), ("m6", 2), ("m7", 1), ("m8", 1)])
        self.assertEqual(got[:2], [seqs[4], seqs[5]], "the same messages, by seq")
        # Nothing else comes before a message published now.
        self.publish(d, subject, "m9")
        [last_seq] = self.assert_messages([resumed.next_event()], subject, ["m9"])
        # m3 is still in flight (its ack wait has not passed), and so are
        # m5..m9; m1, m2 and m4 are gone.
        self.ack(d, subject, subscriber, seqs + got[2:] + [last_seq], 3 + 2 + 1)
        self.ack(d, subject, subscriber, seqs + got[2:] + [last_seq], 0)

    def test_last_event_id_header_sends_the_unacked_messages_after_it_again(self):
        self.resume("header")

    def test_last_event_id_query_sends_the_unacked_messages_after_it_again(self):
        self.resume("query")

    def test_an_unacked_event_comes_again_on_the_stream_after_its_ack_wait(self):
        d = self.d
        subject = unique_subject("redeliver")
        subscriber = self.subscribe(d, subject, ack=True, ack_wait_ms=ms(300))
        stream = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "unacked")
        [seq] = self.assert_messages(stream.events(1), subject, ["unacked"])
        self.assertEqual(self.assert_messages(stream.events(1), subject, [("unacked", 2)]), [seq])
        self.ack(d, subject, subscriber, [seq], 1)
        self.publish(d, subject, "after the ack")
        [later] = self.assert_messages([stream.next_event()], subject, ["after the ack"])
        self.ack(d, subject, subscriber, [seq, later], 1)

    def test_without_last_event_id_in_flight_messages_wait_for_their_ack_wait(self):
        d = self.d
        subject = unique_subject("noresume")
        subscriber = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        stream = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "in flight")
        [seq] = self.assert_messages(stream.events(1), subject, ["in flight"])
        stream.close()
        again = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "new")
        self.assert_messages([again.next_event()], subject, ["new"])
        # A Last-Event-ID that is not a seq is ignored as well.
        again.close()
        odd = self.open_stream(d, subject, subscriber, headers={"Last-Event-ID": "abc"})
        self.publish(d, subject, "newer")
        self.assert_messages([odd.next_event()], subject, ["newer"])
        self.ack(d, subject, subscriber, [seq], 1)

    def test_last_event_id_zero_sends_every_in_flight_message_again(self):
        d = self.d
        subject = unique_subject("zero")
        subscriber = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        stream = self.open_stream(d, subject, subscriber)
        for value in ["a", "b"]:
            self.publish(d, subject, value)
        seqs = self.assert_messages(stream.events(2), subject, ["a", "b"])
        # A second stream while the first is open: it replaces it, and
        # resumes from 0.
        resumed = self.open_stream(d, subject, subscriber, headers={"Last-Event-ID": "0"})
        self.assertEqual(stream.read_to_end(), [])
        self.assertEqual(self.assert_messages(resumed.events(2), subject, [("a", 2), ("b", 2)]), seqs)
        self.ack(d, subject, subscriber, seqs, 2)
        self.ack(d, subject, subscriber, seqs, 0)


# ---------------------------------------------------------------------------
# Keepalive comments
# ---------------------------------------------------------------------------

class KeepaliveTest(StreamTestCase):
    def test_keepalive_comments_while_silent(self):
        d = self.start_daemon({"stream_keepalive_s": 1})
        subject = unique_subject("keepalive")
        subscriber = self.subscribe(d, subject)
        stream = self.open_stream(d, subject, subscriber)
        stream.wait_comment("keepalive", count=2)
        self.publish(d, subject, "between")
        self.assert_messages([stream.next_event()], subject, ["between"])
        stream.wait_comment("keepalive", count=3)
        self.assertEqual(set(stream.comments), {"open", "keepalive"})

    def test_stream_keepalive_s_is_reloaded(self):
        d = self.start_daemon({"stream_keepalive_s": 3600})
        subject = unique_subject("keepalive")
        subscriber = self.subscribe(d, subject)
        pattern = RELOADED + re.escape(d.config_path)
        d.write_config({"stream_keepalive_s": 1})
        d.signal(signal.SIGHUP)
        d.wait_for_log(pattern)
        stream = self.open_stream(d, subject, subscriber)
        stream.wait_comment("keepalive", count=2)


# ---------------------------------------------------------------------------
# A reader that stops reading
# ---------------------------------------------------------------------------

class SlowReaderTest(StreamTestCase):
    """A stream whose client never reads while publishes go on: the
    daemon's memory stays bounded by the pending limits, publishes get 429
    once they are reached, other requests are served, and when the client
    reads at last every accepted message comes, in order, once."""

    MAX_PENDING_BYTES = 256 * 1024
    MESSAGE = 1024
    BATCH = 64
    # Bounds of the whole test's publishing: reaching 429 must not need
    # more than this (kernel socket buffers hold a few MiB at most).
    PUBLISH_CAP = 64 << 20
    RSS_MARGIN_KIB = 8192

    def body(self, number):
        text = "%08d " % number
        return text + "x" * (self.MESSAGE - len(text))

    def test_a_reader_that_does_not_read(self):
        d = self.start_daemon({"max_pending": 100000, "max_pending_bytes": self.MAX_PENDING_BYTES})
        subject = unique_subject("slow")
        subscriber = self.subscribe(d, subject)
        bystander_subject = unique_subject("bystander")
        bystander = self.subscribe(d, bystander_subject)
        self.publish(d, bystander_subject, "waiting for a fetch")
        # Never reads until told: not even the response head.
        stream = EventStream(d, stream_path(subject, subscriber), rcvbuf=4096, defer_head=True)
        self.addCleanup(stream.close)
        self.wait_streams(d, 1)
        measure_rss = not (harness.VALGRIND or daemon_has_asan())
        baseline = read_rss_kib(d.pid)

        accepted = []
        published_bytes = 0
        with d.client() as client:
            # Batches until one is refused, then single messages until one is.
            refused = None
            while refused is None:
                self.assertLess(published_bytes, self.PUBLISH_CAP,
                                "no 429 after %d bytes: the stream buffers without bound" % published_bytes)
                numbers = range(len(accepted), len(accepted) + self.BATCH)
                status, reply = self.post(d, "/api/publish/batch",
                                          {"messages": [{"subject": subject, "data": self.body(n)}
                                                        for n in numbers]}, client=client)
                published_bytes += self.BATCH * self.MESSAGE
                if status == 200:
                    accepted += list(numbers)
                else:
                    self.assertEqual(status, 429, reply)
                    self.assertEqual(reply["message"], "broker overflow")
                    self.assertIn(reply["index"], range(self.BATCH))
                    refused = status
            # Single messages: refused once the limit is reached.  While
            # the kernel still takes bytes into the socket's buffers the
            # stream frees some room now and then, so the test goes on
            # until 20 publishes in a row are refused.
            refused_in_a_row = 0
            for _ in range(10000):
                status, reply = self.post(d, "/api/publish", {"subject": subject,
                                                              "data": self.body(len(accepted))},
                                          client=client)
                if status == 200:
                    accepted.append(len(accepted))
                    refused_in_a_row = 0
                    continue
                self.assertEqual((status, reply), (429, {"message": "broker overflow"}))
                refused_in_a_row += 1
                if refused_in_a_row == 20:
                    break
            self.assertEqual(refused_in_a_row, 20, "publishes went on being accepted")
            metrics = d.metrics()
            self.assertLessEqual(metrics.value("gophermq_pending_bytes"), self.MAX_PENDING_BYTES)
            self.assertGreater(metrics.value("gophermq_pending_bytes"), self.MAX_PENDING_BYTES // 2,
                               "the limit is what refuses them")
            if measure_rss:
                # Refused publishes cost nothing that stays.
                for _ in range(100):
                    status, _ = self.post(d, "/api/publish/batch",
                                          {"messages": [{"subject": subject, "data": self.body(-1)}] * self.BATCH},
                                          client=client)
                    self.assertEqual(status, 429)
                grown = read_rss_kib(d.pid) - baseline
                bound = 4 * self.MAX_PENDING_BYTES // 1024 + self.RSS_MARGIN_KIB
                print("\n    %d messages accepted (%d KiB), RSS grew %d KiB (bound %d)"
                      % (len(accepted), len(accepted) * self.MESSAGE // 1024, grown, bound), end=" ... ")
                self.assertLess(grown, bound, "RSS grew by %d KiB while the reader did not read" % grown)
            # Other requests are served alongside.
            self.assertEqual(d.fetch(bystander_subject, bystander, client=client), ["waiting for a fetch"])
            self.subscribe(d, unique_subject("alongside"))
            self.assertEqual(d.metrics().value("gophermq_streams"), 1)

            # The reader reads at last: everything accepted, in order, once.
            stream.read_head()
            self.assertEqual(stream.status, 200)
            self.assertEqual(stream.next_item(), ("comment", "open"))
            events = stream.events(len(accepted), timeout=harness.scaled(60))
            messages = [self.message(event) for event in events]
            numbers = [int(m["data"].split(" ")[0]) for m in messages]
            self.assertEqual(numbers, accepted)
            seqs = [m["seq"] for m in messages]
            self.assertEqual(seqs, sorted(set(seqs)))
            # And publishes work again.
            d.wait_metric("gophermq_pending_messages", lambda value: value == 0)
            self.publish(d, subject, "after", client=client)
            self.assert_messages([stream.next_event()], subject, ["after"])


class StuckStreamTest(StreamTestCase):
    """A stream whose client stopped reading holds what it took from the
    queue and has not sent yet (at most one batch).  Those messages are
    not delivered: they must not be sent once expired, and a newer stream
    of the subscriber must get them, in order.

    The messages are published before the stream opens: it then takes
    whole batches (64 of these messages) from a long queue and is almost
    always in the middle of one when its socket's buffers are full."""

    def stalled_stream(self, d, subject, subscriber):
        """A stream whose client reads nothing, opened on a backlog larger
        than its socket's buffers, once it has stopped sending."""
        stream = EventStream(d, stream_path(subject, subscriber), rcvbuf=4096, defer_head=True)
        self.addCleanup(stream.close)
        self.wait_streams(d, 1)
        sent = d.wait_metric("gophermq_stream_events_total", lambda value: value > 0)
        while True:
            time.sleep(0.2 * S)
            now = d.metrics().value("gophermq_stream_events_total")
            if now == sent:
                return stream
            sent = now

    def test_messages_expiring_while_the_reader_does_not_read_are_never_sent(self):
        d = self.start_daemon()
        subject = unique_subject("stuck")
        subscriber = self.subscribe(d, subject)
        self.fill_stuck_stream(d, subject, ttl_ms=ms(1500))
        stream = self.stalled_stream(d, subject, subscriber)
        # Every copy left in the queue has expired: so has every message
        # published before them, sent or not.
        d.wait_metric("gophermq_messages_ttl_expired_total", lambda value: value >= 1,
                      timeout=harness.scaled(30))
        d.wait_metric("gophermq_pending_messages", lambda value: value == 0, timeout=harness.scaled(30))
        sent = int(d.metrics().value("gophermq_stream_events_total"))
        stream.read_head()
        self.assertEqual(stream.next_item(), ("comment", "open"))
        received = self.numbered(stream.events(sent, timeout=harness.scaled(60)))
        self.assertEqual(received, list(range(sent)))
        # What had not gone out when the messages expired never does.
        self.publish(d, subject, "sentinel")
        self.assertEqual(self.message(stream.next_event())["data"], "sentinel",
                         "expired messages were sent after %d in time" % sent)

    def test_a_new_stream_gets_what_a_stuck_older_stream_has_not_sent(self):
        d = self.start_daemon()
        subject = unique_subject("stuck")
        subscriber = self.subscribe(d, subject)
        published = self.fill_stuck_stream(d, subject)
        stuck = self.stalled_stream(d, subject, subscriber)
        newer = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "sentinel")
        received = []
        while True:
            message = self.message(newer.next_event(timeout=harness.scaled(30)))
            if message["data"] == "sentinel":
                break
            received.append(int(message["data"].split(" ")[0]))
        # The older stream sends what it had sent already, and ends.
        stuck.read_head()
        self.assertEqual(stuck.next_item(), ("comment", "open"))
        sent = self.numbered(stuck.read_to_end(timeout=harness.scaled(60)))
        self.assertEqual(sent + received, list(range(published)),
                         "the older stream sent %d; the newer one got %d before a message published "
                         "after it opened" % (len(sent), len(received)))


# ---------------------------------------------------------------------------
# Configurations: auth, CORS, subscriber_ttl
# ---------------------------------------------------------------------------

class AuthStreamTest(StreamTestCase):
    TOKEN = "stream-test-token"

    def test_a_stream_needs_a_token(self):
        directory = tempfile.mkdtemp(prefix="gophermq-stream-auth-")
        self.addCleanup(shutil.rmtree, directory, True)
        tokens = os.path.join(directory, "api.tokens")
        with open(tokens, "w", encoding="utf-8") as handle:
            handle.write(self.TOKEN + "\n")
        os.chmod(tokens, 0o600)
        d = self.start_daemon({"auth_token_file": tokens})
        good = {"Authorization": "Bearer " + self.TOKEN}
        subject = unique_subject("auth")
        subscriber = self.subscribe(d, subject, headers=good)
        path = stream_path(subject, subscriber)
        for headers in [None, {"Authorization": "Bearer wrong"}, {"Authorization": self.TOKEN}]:
            self.assertError(self.stream_error(d, path, headers=headers), 401, "unauthorized", headers)
        self.assertEqual(d.metrics().value("gophermq_streams"), 0)
        stream = self.open_stream(d, subject, subscriber, headers=good)
        self.publish(d, subject, "for the token holder", headers=good)
        self.assert_messages([stream.next_event()], subject, ["for the token holder"])


class CorsStreamTest(StreamTestCase):
    def test_cors_origin_is_sent_on_streams_and_errors(self):
        d = self.start_daemon({"cors_origin": "*"})
        subject = unique_subject("cors")
        subscriber = self.subscribe(d, subject)
        stream = self.open_stream(d, subject, subscriber)
        self.assertEqual(stream.header("Access-Control-Allow-Origin"), "*")
        _, headers, _ = self.stream_error(d, stream_path(subject, "nobody"))
        self.assertEqual(headers.get("Access-Control-Allow-Origin"), "*")


class StreamsAreNotHeldFetchesTest(StreamTestCase):
    def test_streams_work_with_max_parked_fetches_0(self):
        d = self.start_daemon({"max_parked_fetches": 0})
        subject = unique_subject("parked")
        subscriber = self.subscribe(d, subject)
        stream = self.open_stream(d, subject, subscriber)
        self.publish(d, subject, "not held")
        self.assert_messages([stream.next_event()], subject, ["not held"])
        self.assertEqual(d.metrics().value("gophermq_parked_fetches"), 0)


class StreamActivityTest(StreamTestCase):
    """subscriber_ttl = 1: an open stream keeps its subscriber alive; an
    idle subscriber, and the streamer once its stream is gone, expire."""

    def test_an_open_stream_is_activity(self):
        d = self.start_daemon({"subscriber_ttl": 1, "stream_keepalive_s": 3600})
        subject = unique_subject("active")
        streamer = self.subscribe(d, subject)
        stream = self.open_stream(d, subject, streamer)
        # Subscribed after the stream opened: idle for less time than the
        # streamer has been without any request.
        idle_subject = unique_subject("idle")
        idle = self.subscribe(d, idle_subject)
        d.wait_metric("gophermq_subscribers_expired_total", lambda value: value >= 1,
                      timeout=harness.scaled(30))
        self.assertError(d.request("POST", "/api/fetch", {"subject": idle_subject, "id": idle}), 404, "bad id")
        # Several more ttls and sweeps pass: the streamer is still there.
        time.sleep(2.5)
        self.assertEqual(d.metrics().value("gophermq_subscribers_expired_total"), 1)
        self.publish(d, subject, "still subscribed")
        self.assert_messages([stream.next_event()], subject, ["still subscribed"])
        # Without its stream it expires like any other.
        stream.close()
        d.wait_metric("gophermq_subscribers_expired_total", lambda value: value >= 2,
                      timeout=harness.scaled(30))
        self.assertEqual(d.publish(subject, "nobody")[0], 404)
        self.assertEqual(d.metrics().value("gophermq_streams"), 0)


# ---------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------

class StreamShutdownTest(StreamTestCase):
    def test_sigterm_ends_streams_and_keeps_what_was_not_sent(self):
        directory = tempfile.mkdtemp(prefix="gophermq-stream-data-")
        self.addCleanup(shutil.rmtree, directory, True)
        # Fixed ports: the restarted daemon comes back at the same address.
        config = {"persistence": "log", "data_dir": os.path.join(directory, "data"),
                  "port": harness.free_port(), "metrics_port": harness.free_port()}
        d = self.start_daemon(config)
        subject = unique_subject("shutdown")
        subscriber = self.subscribe(d, subject)
        idle_subject = unique_subject("shutdown")
        idle_subscriber = self.subscribe(d, idle_subject)
        idle = self.open_stream(d, idle_subject, idle_subscriber)
        # A reader that does not read while messages are published, until
        # some of them wait in the broker (the socket's buffers are full).
        stream = EventStream(d, stream_path(subject, subscriber), rcvbuf=4096, defer_head=True)
        self.addCleanup(stream.close)
        self.wait_streams(d, 2)
        published = self.fill_stuck_stream(d, subject)
        d.signal(signal.SIGTERM)
        # Both streams end cleanly: the reader gets the rest of its body,
        # up to its last chunk.
        self.assertEqual(idle.read_to_end(), [])
        stream.read_head()
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.next_item(), ("comment", "open"))
        streamed = self.numbered(stream.read_to_end(timeout=harness.scaled(60)))
        self.assertEqual(d.wait_exit(), 0)
        self.assertLess(len(streamed), published, "some messages were not sent")
        # After a restart the stream gets the rest: nothing lost, nothing twice.
        d.start()
        resumed = self.open_stream(d, subject, subscriber)
        rest = self.numbered(resumed.events(published - len(streamed), timeout=harness.scaled(30)))
        self.assertEqual(streamed + rest, list(range(published)))
        self.publish(d, subject, "sentinel")
        self.assertEqual(self.message(resumed.next_event())["data"], "sentinel")


    def test_sigterm_keeps_the_unacked_messages_of_an_ack_stream(self):
        directory = tempfile.mkdtemp(prefix="gophermq-stream-data-")
        self.addCleanup(shutil.rmtree, directory, True)
        config = {"persistence": "log", "data_dir": os.path.join(directory, "data"),
                  "port": harness.free_port(), "metrics_port": harness.free_port()}
        d = self.start_daemon(config)
        subject = unique_subject("shutdown")
        subscriber = self.subscribe(d, subject, ack=True, ack_wait_ms=LONG_ACK_WAIT)
        stream = self.open_stream(d, subject, subscriber)
        with d.client() as client:
            for value in ["m0", "m1", "m2", "m3"]:
                self.publish(d, subject, value, client=client)
        seqs = self.assert_messages(stream.events(4), subject, ["m0", "m1", "m2", "m3"])
        self.ack(d, subject, subscriber, [seqs[1]], 1)
        d.signal(signal.SIGTERM)
        self.assertEqual(stream.read_to_end(), [])
        self.assertEqual(d.wait_exit(), 0)
        d.start()
        # Every unacknowledged message comes again, and only those.
        resumed = self.open_stream(d, subject, subscriber, headers={"Last-Event-ID": "0"})
        messages = [self.message(event) for event in resumed.events(3)]
        self.assertEqual([(m["seq"], m["data"]) for m in messages],
                         [(seqs[0], "m0"), (seqs[2], "m2"), (seqs[3], "m3")])
        self.publish(d, subject, "m4")
        [m4] = self.assert_messages([resumed.next_event()], subject, ["m4"])
        self.assertGreater(m4, seqs[3], "seqs are not reused after a restart")
        self.ack(d, subject, subscriber, seqs + [m4], 4)


if __name__ == "__main__":
    harness.main()
