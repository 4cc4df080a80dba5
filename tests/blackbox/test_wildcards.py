#!/usr/bin/env python3
"""test_wildcards.py - API.md's "Wildcard subscriptions" and "Per-message
expiry", on the real daemon.

Wildcards: a subscribe subject may use "*" (exactly one token) and ">"
(the last token: one or more); NATS semantics.  Publish subjects must be
literal (400 invalid subject, with "index" in a batch); ">" not last in a
subscribe subject is 400 too.  Every matching subscription or group gets
one copy, max_pending counts copies, a fetch names the subscription by its
own subject and the meta form gives each message's published subject.
gophermq_wildcard_subscriptions counts distinct wildcard subjects.

Expiry: ttl_ms (1..31536000000) on publish, async publish and each batch
message, message_ttl_ms (reloadable) for messages without one.  A copy not
fetched in time is removed and counted (gophermq_messages_ttl_expired_total),
frees its room in max_pending without any fetch, and is never delivered
late: not to a fetch, a held fetch, a stream, or an ack subscription's
redelivery.
With persistence = "log", wildcard subscriptions and their messages
survive a restart, and what expired while the daemon was down is gone.

Every test uses subjects under a prefix token of its own, so the tests of
a class share one daemon; the one test of a bare ">" has its own.  Tests
that count metrics clean up what they subscribed, so the counts of the
next one start from a quiet daemon.  Timing: ttls and waits are scaled by
harness.SCALE (10 under valgrind), and expiry is awaited by polling the
metrics: these tests check behaviour, never speed.
"""

import http.client
import json
import os
import re
import signal
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import json_body  # noqa: E402
from test_delivery import DeliveryTestCase, raw_body  # noqa: E402  (request helpers, held fetches)
from test_durability import Journaled  # noqa: E402  (a restartable daemon with persistence = "log")

S = harness.SCALE


def ms(milliseconds):
    """A duration to put on the wire, in ms, stretched under valgrind."""
    return int(milliseconds * S)


def seconds(milliseconds):
    return milliseconds / 1000.0


EXPIRED = "gophermq_messages_ttl_expired_total"
PENDING = "gophermq_pending_messages"
WILDCARDS = "gophermq_wildcard_subscriptions"

SHORT_TTL = ms(150)          # expires during the test
LONG_TTL = 3600 * 1000       # never reached by a test
TTL_MAX = 31536000000        # API: ttl_ms is 1..31536000000
LONG_WAIT = ms(60000)        # a wait_ms no test is meant to reach

# ttl_ms values that are not an integer in 1..31536000000 (JSON null is a
# wrong type too, as for every new field).
INVALID_TTLS = [0, -1, -100, "100", "", 1.5, 100.0, TTL_MAX + 1, 2 ** 63, 2 ** 64, True, False,
                None, [], [100], {}]
# Integer spellings that JSON types as numbers with a fraction or exponent.
RAW_INVALID_TTLS = ["1e3", "1E3", "100.0", "1.5e2"]
PUBLISH_PATHS = ("/api/publish", "/api/publish/async")

# The matching table (API.md: NATS semantics), relative to a prefix token:
# subscription -> the published subjects (of PUBLISHED) it gets.
PUBLISHED = ["a", "a.b", "a.b.c", "x.b"]
MATCHING = {
    "a.*": ["a.b"],
    "a.>": ["a.b", "a.b.c"],
    "*.b": ["a.b", "x.b"],
    ">": ["a", "a.b", "a.b.c", "x.b"],
    "a.*.c": ["a.b.c"],
    "a.b": ["a.b"],
}


def prefix():
    """A fresh first token, so that a test's wildcards match only its own
    subjects."""
    return "w%s" % uuid.uuid4().hex[:12]


class WildcardTestCase(DeliveryTestCase):
    """DeliveryTestCase's request helpers, and a few for this file."""

    def sub(self, d, subject, **options):
        """Subscribes (asserting 200) and unsubscribes again when the test
        ends, so that the next test's counts start from a quiet daemon."""
        sid = self.subscribe(d, subject, **options)
        self.addCleanup(self.post, d, "/api/unsubscribe", {"subject": subject, "id": sid})
        return sid

    def publish_ttl(self, d, subject, data, ttl_ms, path="/api/publish"):
        body = {"subject": subject, "data": data}
        if ttl_ms is not None:
            body["ttl_ms"] = ttl_ms
        self.assertJsonReply(self.post(d, path, body), 200, {"status": "ok"},
                             "publish %r to %r with ttl_ms %r" % (data, subject, ttl_ms))

    def received(self, d, subject, sid, **options):
        """Everything subscriber sid takes now, in the meta form, as a list
        of (published subject, data)."""
        messages = self.fetch_meta(d, subject, sid, meta=True, **options)
        return [(m["subject"], m["data"]) for m in messages]

    def wait_expired(self, d, count, timeout=None):
        """Polls until gophermq_messages_ttl_expired_total reaches count."""
        return d.wait_metric(EXPIRED, lambda value: value >= count, timeout=timeout)

    def poll_metric(self, d, name, predicate, timeout):
        """The metric's value once predicate holds, or its last value when
        timeout seconds pass first (for asserting on it afterwards)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric(d, name)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.05)


# ---------------------------------------------------------------------------
class MatchingTest(WildcardTestCase):
    """Which subscriptions get which messages."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"max_pending": 100000})

    def test_each_subscription_gets_exactly_the_messages_its_subject_matches(self):
        p = prefix()
        ids = {pattern: self.sub(self.d, p + "." + pattern) for pattern in MATCHING}
        for subject in PUBLISHED:
            self.publish(self.d, p + "." + subject, "to " + subject)
        for pattern, expected in MATCHING.items():
            with self.subTest(subscription=pattern):
                got = self.received(self.d, p + "." + pattern, ids[pattern])
                self.assertEqual(got, [(p + "." + s, "to " + s) for s in expected])

    def test_a_publish_matching_nothing_is_404_subscriber_not_found(self):
        p = prefix()
        self.sub(self.d, p + ".a.*")
        self.sub(self.d, p + ".b.>")
        self.sub(self.d, p + ".*.c")
        for subject in ("a", "a.b.c", "b", "x.y", "c.c.c", "x.c.d"):
            with self.subTest(subject=subject):
                self.assertError(self.post(self.d, "/api/publish", {"subject": p + "." + subject, "data": "x"}),
                                 404, "subscriber not found")
        status, _, body = self.batch(self.d, [{"subject": p + ".a.b", "data": "1"},
                                              {"subject": p + ".b", "data": "2"}])
        self.assertEqual((status, json_body(body)), (404, {"message": "subscriber not found", "index": 1}))

    def test_meta_form_gives_the_published_subject_and_the_reply_the_subscribed_one(self):
        p = prefix()
        pattern = p + ".orders.>"
        sid = self.sub(self.d, pattern)
        self.publish(self.d, p + ".orders.eu.new", "one")
        self.publish(self.d, p + ".orders.us", "two")
        reply = self.fetch(self.d, pattern, sid, meta=True)
        messages = self.assert_meta(reply, pattern, sid)
        self.assertEqual([(m["subject"], m["data"], m["attempt"]) for m in messages],
                         [(p + ".orders.eu.new", "one", 1), (p + ".orders.us", "two", 1)])
        self.assertLess(messages[0]["seq"], messages[1]["seq"])

    def test_plain_form_of_a_wildcard_fetch_is_the_original_one(self):
        p = prefix()
        pattern = p + ".*"
        sid = self.sub(self.d, pattern)
        self.publish(self.d, p + ".x", "one")
        self.publish(self.d, p + ".y", "two")
        self.assertEqual(self.fetch_data(self.d, pattern, sid), ["one", "two"])

    def test_every_copy_of_a_message_has_the_same_seq(self):
        p = prefix()
        literal = self.sub(self.d, p + ".a.b")
        star = self.sub(self.d, p + ".a.*")
        rest = self.sub(self.d, p + ".>")
        self.publish(self.d, p + ".a.b", "x")
        seqs = {self.fetch_meta(self.d, p + ".a.b", literal, meta=True)[0]["seq"],
                self.fetch_meta(self.d, p + ".a.*", star, meta=True)[0]["seq"],
                self.fetch_meta(self.d, p + ".>", rest, meta=True)[0]["seq"]}
        self.assertEqual(len(seqs), 1, seqs)

    def test_a_fetch_names_the_subscription_by_the_subject_it_subscribed_with(self):
        p = prefix()
        pattern = p + ".*"
        sid = self.sub(self.d, pattern)
        self.publish(self.d, p + ".a", "x")
        for wrong in (p + ".a", p + ".>", p + ".*.*", p):
            with self.subTest(subject=wrong):
                self.assertError(self.post(self.d, "/api/fetch", {"subject": wrong, "id": sid}), 404, "bad id")
        self.assertEqual(self.fetch_data(self.d, pattern, sid), ["x"])

    def test_wildcard_characters_inside_a_token_are_literal(self):
        p = prefix()
        gauge = self.metric(self.d, WILDCARDS)
        star = self.sub(self.d, p + ".a*")
        greater = self.sub(self.d, p + ".b>")
        inner = self.sub(self.d, p + ".*x.>y")
        self.assertEqual(self.metric(self.d, WILDCARDS), gauge)
        for subject in (p + ".a*", p + ".b>", p + ".*x.>y"):
            self.publish(self.d, subject, subject)
        for subject in (p + ".ab", p + ".a", p + ".b", p + ".bb", p + ".x.y", p + ".*x.y"):
            with self.subTest(subject=subject):
                self.assertError(self.post(self.d, "/api/publish", {"subject": subject, "data": "x"}),
                                 404, "subscriber not found")
        self.assertEqual(self.fetch_data(self.d, p + ".a*", star), [p + ".a*"])
        self.assertEqual(self.fetch_data(self.d, p + ".b>", greater), [p + ".b>"])
        self.assertEqual(self.fetch_data(self.d, p + ".*x.>y", inner), [p + ".*x.>y"])

    def test_a_held_fetch_of_a_wildcard_subscription_is_answered_by_a_matching_publish(self):
        p = prefix()
        pattern = p + ".*.done"
        sid = self.sub(self.d, pattern)
        other = self.sub(self.d, p + ".>")
        held = self.held(self.d, pattern, sid, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, 1)
        self.publish(self.d, p + ".job.running", "not for the held fetch")
        self.publish(self.d, p + ".job.done", "for it")
        status, reply = held.reply()
        self.assertEqual(status, 200)
        self.assertEqual(reply["data"], ["for it"])
        self.assertEqual(self.fetch_data(self.d, p + ".>", other), ["not for the held fetch", "for it"])

    def test_a_dead_letter_reaches_wildcard_subscriptions_with_its_own_subject(self):
        p = prefix()
        work = p + ".work"
        worker = self.sub(self.d, work, ack=True, max_deliver=1, dead_letter=p + ".dead.work")
        graveyard = self.sub(self.d, p + ".dead.*")
        self.publish(self.d, work, "poison")
        seq = self.fetch_meta(self.d, work, worker)[0]["seq"]
        self.settle(self.d, "/api/nack", work, worker, [seq], 1)
        self.assertEqual(self.received(self.d, p + ".dead.*", graveyard), [(p + ".dead.work", "poison")])

    def test_a_dead_letter_subject_with_a_wildcard_is_400(self):
        p = prefix()
        for dead_letter in (p + ".*", p + ".>", "*", ">", p + ".*.x"):
            with self.subTest(dead_letter=dead_letter):
                self.assertError(self.post(self.d, "/api/subscribe", {"subject": p + ".work", "ack": True,
                                                                       "max_deliver": 1,
                                                                       "dead_letter": dead_letter}),
                                 400, "invalid dead_letter")


class BareGreaterThanTest(WildcardTestCase):
    """A bare ">" matches every subject: a daemon of its own."""

    def test_bare_greater_than_gets_every_message_and_bare_star_one_token_subjects(self):
        d = self.start_daemon()
        everything = self.subscribe(d, ">")
        one = self.subscribe(d, "*")
        two = self.subscribe(d, "*.*")
        for subject in PUBLISHED:
            self.publish(d, subject, "to " + subject)
        self.publish(d, "any.thing.at.all." + uuid.uuid4().hex, "deep")
        got = self.received(d, ">", everything)
        self.assertEqual([s for s, _ in got[:4]], PUBLISHED)
        self.assertEqual(len(got), 5)
        self.assertEqual(got[4][1], "deep")
        self.assertEqual(self.received(d, "*", one), [("a", "to a")])
        self.assertEqual(self.received(d, "*.*", two), [("a.b", "to a.b"), ("x.b", "to x.b")])
        self.assertEqual(self.metric(d, WILDCARDS), 3)
        # Once it is gone, a publish nobody else matches has no subscriber.
        self.unsubscribe(d, ">", everything)
        self.assertError(self.post(d, "/api/publish", {"subject": "a.b.c", "data": "x"}),
                         404, "subscriber not found")


class SubjectValidationTest(WildcardTestCase):
    """Wildcards are for subscriptions; ">" only as the last token."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon()

    def test_publishing_to_a_subject_with_a_wildcard_token_is_400_and_stores_nothing(self):
        p = prefix()
        catch_all = self.sub(self.d, p + ".>")
        star = self.sub(self.d, p + ".*")
        published = self.metric(self.d, "gophermq_messages_published_total")
        for path in PUBLISH_PATHS:
            for subject in (p + ".*", p + ".>", p + ".*.c", p + ".a.>", p + ".*.>", "*", ">",
                            "*." + p, p + ".>.b"):
                with self.subTest(path=path, subject=subject):
                    self.assertError(self.post(self.d, path, {"subject": subject, "data": "x"}),
                                     400, "invalid subject")
                    self.assertError(self.post(self.d, path, {"subject": subject, "data": "x",
                                                              "ttl_ms": 1000}),
                                     400, "invalid subject")
        self.assertEqual(self.metric(self.d, "gophermq_messages_published_total"), published)
        self.assertEqual(self.fetch_data(self.d, p + ".>", catch_all), [])
        self.assertEqual(self.fetch_data(self.d, p + ".*", star), [])

    def test_a_batch_with_a_wildcard_subject_is_400_with_its_index_and_stores_nothing(self):
        p = prefix()
        sid = self.sub(self.d, p + ".>")
        for bad in (p + ".*", p + ".>", p + ".a.*.c"):
            with self.subTest(subject=bad):
                status, _, body = self.batch(self.d, [{"subject": p + ".a", "data": "1"},
                                                      {"subject": p + ".b", "data": "2"},
                                                      {"subject": bad, "data": "3"},
                                                      {"subject": p + ".c", "data": "4"}])
                self.assertEqual((status, json_body(body)), (400, {"message": "invalid subject", "index": 2}))
        self.assertEqual(self.fetch_data(self.d, p + ".>", sid), [])

    def test_greater_than_not_last_is_an_ordinary_token(self):
        # The original accepts these subjects; they keep its answer.  Only
        # a last ">" is the wildcard, so nothing reaches them: a publish
        # naming a ">" token is refused.
        p = prefix()
        for subject in (p + ".>.b", ">.a", p + ".>.>", ">.>", "a.>.b.c"):
            with self.subTest(subject=subject):
                sid = self.sub(self.d, subject)
                status, reply = self.d.publish(subject, "x")
                self.assertEqual((status, reply), (400, {"message": "invalid subject"}))
                self.d.publish(subject.replace(">", "z"), "y")
                self.assertEqual(self.fetch_data(self.d, subject, sid), [])

    def test_valid_wildcard_subscriptions_are_accepted(self):
        p = prefix()
        for subject in (p + ".*", p + ".>", p + ".*.*", p + ".*.>", "*." + p, p + ".a.*.c.>", ">", "*"):
            with self.subTest(subject=subject):
                response = self.post(self.d, "/api/subscribe", {"subject": subject})
                self.assertEqual(response[0], 200, response[2])
                reply = json_body(response[2])
                self.assertEqual(reply["subject"], subject)
                self.unsubscribe(self.d, subject, reply["id"])


class GroupAndAckTest(WildcardTestCase):
    """Groups and ack subscriptions on wildcard subjects."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"max_pending": 100000})

    def test_a_group_on_a_wildcard_gives_each_message_to_one_member_and_a_plain_subscriber_gets_all(self):
        p = prefix()
        pattern = p + ".*"
        members = [self.sub(self.d, pattern, group="workers") for _ in range(3)]
        plain = self.sub(self.d, pattern)
        other_group = self.sub(self.d, p + ".>", group="workers")
        expected = []
        for i in range(30):
            subject = "%s.%s" % (p, "xyz"[i % 3])
            self.publish(self.d, subject, "m%d" % i)
            expected.append((subject, "m%d" % i))
        got = []
        for _ in range(40):
            taken = 0
            for member in members:
                batch = self.received(self.d, pattern, member, max=2)
                got += batch
                taken += len(batch)
            if not taken:
                break
        self.assertEqual(sorted(got), sorted(expected))       # each once, to one member
        self.assertEqual(self.received(self.d, pattern, plain), expected)
        # A group of the same name on another pattern is another group.
        self.assertEqual(self.received(self.d, p + ".>", other_group), expected)

    def test_a_group_on_a_wildcard_counts_one_copy_per_message(self):
        p = prefix()
        pending = self.metric(self.d, PENDING)
        for _ in range(3):
            self.sub(self.d, p + ".*", group="g")
        self.publish(self.d, p + ".a", "x")
        self.assertEqual(self.metric(self.d, PENDING), pending + 1)

    def test_ack_subscription_on_a_wildcard_acks_and_nacks_by_seq(self):
        p = prefix()
        pattern = p + ".jobs.*"
        sid = self.sub(self.d, pattern, ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(self.d, p + ".jobs.a", "one")
        self.publish(self.d, p + ".jobs.b", "two")
        reply = self.fetch(self.d, pattern, sid)          # ack subscriptions: always the meta form
        first, second = self.assert_meta(reply, pattern, sid)
        self.assertEqual((first["subject"], first["data"], first["attempt"]), (p + ".jobs.a", "one", 1))
        self.assertEqual((second["subject"], second["data"], second["attempt"]), (p + ".jobs.b", "two", 1))
        self.settle(self.d, "/api/ack", pattern, sid, [first["seq"]], 1)
        self.settle(self.d, "/api/nack", pattern, sid, [second["seq"]], 1)
        again = self.fetch_meta(self.d, pattern, sid)
        self.assertEqual([(m["seq"], m["subject"], m["data"], m["attempt"]) for m in again],
                         [(second["seq"], p + ".jobs.b", "two", 2)])
        self.settle(self.d, "/api/ack", pattern, sid, [second["seq"]], 1)
        self.settle(self.d, "/api/ack", pattern, sid, [first["seq"], second["seq"]], 0)
        self.assertEqual(self.fetch_meta(self.d, pattern, sid), [])
        # Settling names the subscription by its own subject too.
        self.assertError(self.post(self.d, "/api/ack", {"subject": p + ".jobs.a", "id": sid,
                                                        "seqs": [first["seq"]]}), 404, "bad id")


class LimitsAndGaugeTest(WildcardTestCase):
    """max_pending counts a copy per matching subscription; the wildcard
    gauge; unsubscribing a wildcard subscriber."""

    MAX_PENDING = 5

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"max_pending": cls.MAX_PENDING})

    def test_max_pending_counts_one_copy_per_matching_subscription(self):
        p = prefix()
        literal = self.sub(self.d, p + ".a.b")
        star = self.sub(self.d, p + ".a.*")
        rest = self.sub(self.d, p + ".>")
        self.sub(self.d, p + ".a.*", group="g")
        self.sub(self.d, p + ".a.*", group="g")
        self.publish(self.d, p + ".a.b", "first")              # 4 copies: the group is one
        self.assertEqual(self.metric(self.d, PENDING), 4)
        overflows = self.metric(self.d, "gophermq_overflows_total")
        self.assertError(self.post(self.d, "/api/publish", {"subject": p + ".a.b", "data": "second"}),
                         429, "broker overflow")               # 8 > 5
        status, _, body = self.batch(self.d, [{"subject": p + ".q", "data": "fits"},
                                              {"subject": p + ".a.c", "data": "does not"}])
        self.assertEqual((status, json_body(body)), (429, {"message": "broker overflow", "index": 1}))
        self.assertGreater(self.metric(self.d, "gophermq_overflows_total"), overflows)
        self.assertEqual(self.metric(self.d, PENDING), 4)      # nothing stored
        self.publish(self.d, p + ".q", "one copy")             # only p.> matches: 5
        self.assertError(self.post(self.d, "/api/publish", {"subject": p + ".z", "data": "x"}),
                         429, "broker overflow")
        self.assertEqual(self.received(self.d, p + ".a.b", literal), [(p + ".a.b", "first")])
        self.assertEqual(self.received(self.d, p + ".a.*", star), [(p + ".a.b", "first")])
        self.assertEqual(self.received(self.d, p + ".>", rest), [(p + ".a.b", "first"), (p + ".q", "one copy")])
        self.publish(self.d, p + ".a.b", "room again")         # fetching freed room

    def test_an_expired_copy_frees_its_room_without_a_fetch(self):
        p = prefix()
        star = self.sub(self.d, p + ".*")
        rest = self.sub(self.d, p + ".>")
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, p + ".a", "short", SHORT_TTL)   # 2 copies
        self.publish_ttl(self.d, p + ".b", "short", SHORT_TTL)   # 4
        self.assertError(self.post(self.d, "/api/publish", {"subject": p + ".c", "data": "long",
                                                            "ttl_ms": LONG_TTL}),
                         429, "broker overflow")                # 6 would not fit
        self.wait_expired(self.d, expired + 4)
        self.assertEqual(self.metric(self.d, PENDING), 0)
        self.publish_ttl(self.d, p + ".c", "long", LONG_TTL)
        self.publish_ttl(self.d, p + ".d", "long", LONG_TTL)
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 4)
        self.assertEqual(self.received(self.d, p + ".*", star), [(p + ".c", "long"), (p + ".d", "long")])
        self.assertEqual(self.received(self.d, p + ".>", rest), [(p + ".c", "long"), (p + ".d", "long")])

    def test_the_wildcard_gauge_counts_distinct_wildcard_subjects(self):
        p = prefix()
        base = self.metric(self.d, WILDCARDS)

        def gauge():
            return self.metric(self.d, WILDCARDS) - base

        first = self.subscribe(self.d, p + ".*")
        self.assertEqual(gauge(), 1)
        second = self.subscribe(self.d, p + ".*")
        self.assertEqual(gauge(), 1)                          # the same subject
        rest = self.subscribe(self.d, p + ".>")
        member = self.subscribe(self.d, p + ".a.*", group="g")
        self.assertEqual(gauge(), 3)
        literal = self.subscribe(self.d, p + ".a")
        weird = self.subscribe(self.d, p + ".a*")
        self.assertEqual(gauge(), 3)                          # no wildcard in those
        inner = self.subscribe(self.d, p + ".>.a")           # ">" not last: no wildcard
        self.assertEqual(gauge(), 3)
        self.unsubscribe(self.d, p + ".>.a", inner)
        self.unsubscribe(self.d, p + ".*", first)
        self.assertEqual(gauge(), 3)                          # still one subscriber of p.*
        self.unsubscribe(self.d, p + ".*", second)
        self.assertEqual(gauge(), 2)
        self.unsubscribe(self.d, p + ".a.*", member)
        self.assertEqual(gauge(), 1)
        self.unsubscribe(self.d, p + ".a", literal)
        self.unsubscribe(self.d, p + ".a*", weird)
        self.assertEqual(gauge(), 1)
        self.unsubscribe(self.d, p + ".>", rest)
        self.assertEqual(gauge(), 0)
        # Subscribing again after it went away counts again.
        again = self.subscribe(self.d, p + ".>")
        self.assertEqual(gauge(), 1)
        self.unsubscribe(self.d, p + ".>", again)
        self.assertEqual(gauge(), 0)

    def test_unsubscribing_a_wildcard_subscriber_frees_its_messages_and_its_id(self):
        p = prefix()
        pattern = p + ".*"
        sid = self.subscribe(self.d, pattern)
        stays = self.sub(self.d, p + ".>")
        pending = self.metric(self.d, PENDING)
        self.publish(self.d, p + ".a", "x")
        self.assertEqual(self.metric(self.d, PENDING), pending + 2)
        self.assertError(self.post(self.d, "/api/unsubscribe", {"subject": p + ".a", "id": sid}), 404, "bad id")
        self.unsubscribe(self.d, pattern, sid)
        self.assertEqual(self.metric(self.d, PENDING), pending + 1)
        self.assertError(self.post(self.d, "/api/fetch", {"subject": pattern, "id": sid}), 404, "bad id")
        self.assertError(self.post(self.d, "/api/unsubscribe", {"subject": pattern, "id": sid}), 404, "bad id")
        self.publish(self.d, p + ".b", "y")                    # only p.> left
        self.assertEqual(self.received(self.d, p + ".>", stays), [(p + ".a", "x"), (p + ".b", "y")])
        self.unsubscribe(self.d, p + ".>", stays)
        self.assertError(self.post(self.d, "/api/publish", {"subject": p + ".c", "data": "z"}),
                         404, "subscriber not found")


# ---------------------------------------------------------------------------
class ExpiryTest(WildcardTestCase):
    """ttl_ms: removed and counted when not fetched in time, never late."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"max_pending": 100000})

    def test_a_copy_not_fetched_within_its_ttl_is_removed_and_counted_without_any_fetch(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired, pending = self.metric(self.d, EXPIRED), self.metric(self.d, PENDING)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        self.assertEqual(self.metric(self.d, PENDING), pending + 1)
        self.wait_expired(self.d, expired + 1)
        # The room is free at once, without a fetch.
        self.assertEqual(self.metric(self.d, PENDING), pending)
        self.assertEqual(self.metric(self.d, "gophermq_pending_bytes"), 0)
        self.assertEqual(self.fetch_data(self.d, subject, sid), [])
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 1)

    def test_a_copy_fetched_within_its_ttl_is_delivered_and_not_counted(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "long", ms(60000))
        self.publish_ttl(self.d, subject, "longest", TTL_MAX)
        self.publish_ttl(self.d, subject, "async", ms(60000), path="/api/publish/async")
        self.assertEqual(sorted(self.d.fetch_until(subject, sid, 3)), ["async", "long", "longest"])
        self.assertEqual(self.metric(self.d, EXPIRED), expired)

    def test_a_message_published_async_with_a_ttl_expires(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL, path="/api/publish/async")
        self.wait_expired(self.d, expired + 1)
        self.assertEqual(self.fetch_data(self.d, subject, sid), [])

    def test_every_matching_copy_expires_and_counts(self):
        p = prefix()
        ids = {pattern: self.sub(self.d, p + "." + pattern) for pattern in ("a.b", "a.*", ">", "*.b")}
        group = self.sub(self.d, p + ".a.*", group="g")
        self.sub(self.d, p + ".a.*", group="g")
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, p + ".a.b", "short", SHORT_TTL)   # 5 copies
        self.wait_expired(self.d, expired + 5)
        for pattern, sid in ids.items():
            self.assertEqual(self.fetch_data(self.d, p + "." + pattern, sid), [])
        self.assertEqual(self.fetch_data(self.d, p + ".a.*", group), [])
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 5)

    def test_only_the_expired_copies_vanish_and_the_order_is_kept(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        for data, ttl in (("long1", LONG_TTL), ("short1", SHORT_TTL), ("none1", None),
                          ("short2", 2 * SHORT_TTL), ("long2", LONG_TTL), ("none2", None), ("short3", SHORT_TTL)):
            self.publish_ttl(self.d, subject, data, ttl)
        self.wait_expired(self.d, expired + 3)
        self.assertEqual(self.fetch_data(self.d, subject, sid), ["long1", "none1", "long2", "none2"])
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 3)

    def test_a_ttl_behind_a_message_without_one_expires_after_an_earlier_expiry(self):
        # The same queue had an expired copy before: the bookkeeping of
        # "which copy expires first" must start afresh.
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "early", SHORT_TTL)
        self.wait_expired(self.d, expired + 1)
        self.publish_ttl(self.d, subject, "none", None)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        count = self.poll_metric(self.d, EXPIRED, lambda value: value >= expired + 2, harness.scaled(3))
        self.assertEqual(self.fetch_data(self.d, subject, sid), ["none"],
                         "a message delivered after its ttl_ms")
        self.assertEqual(count, expired + 2, "the expired copy was not counted")

    def test_a_batch_gives_each_message_its_own_ttl(self):
        p = prefix()
        sid = self.sub(self.d, p + ".*")
        expired = self.metric(self.d, EXPIRED)
        self.batch_ok(self.d, [{"subject": p + ".a", "data": "short", "ttl_ms": SHORT_TTL},
                               {"subject": p + ".b", "data": "none"},
                               {"subject": p + ".c", "data": "long", "ttl_ms": LONG_TTL},
                               {"subject": p + ".d", "data": "short too", "ttl_ms": SHORT_TTL}])
        self.wait_expired(self.d, expired + 2)
        self.assertEqual(self.received(self.d, p + ".*", sid), [(p + ".b", "none"), (p + ".c", "long")])

    def test_a_fetch_held_after_the_message_expired_gets_nothing_and_waits_its_whole_wait(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        time.sleep(seconds(SHORT_TTL) + 0.05 * S)          # past the ttl: expired, whether swept or not
        wait = ms(600)
        held = self.held(self.d, subject, sid, wait_ms=wait)
        status, reply = held.reply(timeout=harness.WAIT_TIMEOUT + seconds(wait))
        self.assertEqual((status, reply["data"]), (200, []))
        self.assertGreaterEqual(held.elapsed(), seconds(wait) - 0.02, "answered before its wait ended")
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 1)

    def test_a_held_fetch_gets_a_message_with_a_long_ttl_and_not_an_expired_one(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        self.wait_expired(self.d, expired + 1)
        held = self.held(self.d, subject, sid, wait_ms=LONG_WAIT)
        self.wait_parked(self.d, 1)
        self.publish_ttl(self.d, subject, "long", LONG_TTL)
        status, reply = held.reply()
        self.assertEqual((status, reply["data"]), (200, ["long"]))

    def test_a_held_wildcard_fetch_gets_a_matching_message_with_a_ttl(self):
        p = prefix()
        sid = self.sub(self.d, p + ".*")
        held = self.held(self.d, p + ".*", sid, wait_ms=LONG_WAIT, meta=True)
        self.wait_parked(self.d, 1)
        self.publish_ttl(self.d, p + ".x", "in time", ms(60000))
        status, reply = held.reply()
        self.assertEqual(status, 200)
        self.assertEqual([(m["subject"], m["data"]) for m in reply["messages"]], [(p + ".x", "in time")])

    def test_peek_shows_no_expired_copy(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        self.publish_ttl(self.d, subject, "long", LONG_TTL)
        time.sleep(seconds(SHORT_TTL) + 0.05 * S)
        self.assertEqual(self.fetch_data(self.d, subject, sid, peek=True), ["long"])
        self.assertEqual(self.fetch_data(self.d, subject, sid), ["long"])
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 1)


class InvalidTtlTest(WildcardTestCase):
    """ttl_ms of a wrong type or out of 1..31536000000: 400 invalid ttl_ms,
    nothing stored."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon()

    def setUp(self):
        self.subject = harness.unique_subject("ttl")
        self.sid = self.sub(self.d, self.subject)
        self.published = self.metric(self.d, "gophermq_messages_published_total")

    def assert_nothing_stored(self):
        self.assertEqual(self.metric(self.d, "gophermq_messages_published_total"), self.published)
        self.assertEqual(self.fetch_data(self.d, self.subject, self.sid), [])

    def test_invalid_ttl_ms_on_publish_and_async_publish_is_400(self):
        for path in PUBLISH_PATHS:
            for ttl in INVALID_TTLS:
                with self.subTest(path=path, ttl_ms=ttl):
                    self.assertError(self.post(self.d, path, {"subject": self.subject, "data": "x", "ttl_ms": ttl}),
                                     400, "invalid ttl_ms")
            for raw in RAW_INVALID_TTLS:
                with self.subTest(path=path, raw=raw):
                    body = raw_body({"subject": self.subject, "data": "x"}, "ttl_ms", raw)
                    self.assertError(self.post(self.d, path, body), 400, "invalid ttl_ms")
        self.assert_nothing_stored()

    def test_invalid_ttl_ms_in_a_batch_is_400_with_its_index_and_nothing_is_stored(self):
        for ttl in INVALID_TTLS:
            with self.subTest(ttl_ms=ttl):
                status, _, body = self.batch(self.d, [
                    {"subject": self.subject, "data": "ok", "ttl_ms": 1000},
                    {"subject": self.subject, "data": "ok too"},
                    {"subject": self.subject, "data": "bad", "ttl_ms": ttl}])
                self.assertEqual((status, json_body(body)), (400, {"message": "invalid ttl_ms", "index": 2}))
        for raw in RAW_INVALID_TTLS:
            with self.subTest(raw=raw):
                text = '{"messages":[{"subject":%s,"data":"a"},{"subject":%s,"data":"b","ttl_ms":%s}]}' % (
                    json.dumps(self.subject), json.dumps(self.subject), raw)
                status, _, body = self.post(self.d, "/api/publish/batch", text)
                self.assertEqual((status, json_body(body)), (400, {"message": "invalid ttl_ms", "index": 1}))
        self.assert_nothing_stored()

    def test_the_bounds_of_ttl_ms_are_accepted(self):
        self.publish_ttl(self.d, self.subject, "max", TTL_MAX)
        self.publish_ttl(self.d, self.subject, "one", 1)        # may well expire before the fetch
        self.batch_ok(self.d, [{"subject": self.subject, "data": "batch max", "ttl_ms": TTL_MAX},
                               {"subject": self.subject, "data": "batch one", "ttl_ms": 1}])
        self.assertEqual(self.metric(self.d, "gophermq_messages_published_total"), self.published + 4)
        got = self.fetch_data(self.d, self.subject, self.sid)
        self.assertEqual([data for data in got if "max" in data], ["max", "batch max"])

    def test_the_body_and_the_subject_are_checked_before_ttl_ms(self):
        # As for subscribe (test_delivery.py): the original fields first,
        # on every publishing endpoint alike.
        p = prefix()
        self.sub(self.d, p + ".>")
        for subject in ("a..b", p + ".*", p + ".>", p + ".a.*"):
            for path in PUBLISH_PATHS:
                with self.subTest(path=path, subject=subject):
                    self.assertError(self.post(self.d, path, {"subject": subject, "data": "x", "ttl_ms": 0}),
                                     400, "invalid subject")
            with self.subTest(path="/api/publish/batch", subject=subject):
                status, _, body = self.batch(self.d, [{"subject": subject, "data": "x", "ttl_ms": 0}])
                self.assertEqual((status, json_body(body)), (400, {"message": "invalid subject", "index": 0}))
        for path in PUBLISH_PATHS:
            with self.subTest(path=path, subject=5):
                self.assertError(self.post(self.d, path, {"subject": 5, "data": "x", "ttl_ms": 0}),
                                 400, "request's body is invalid")
        self.assert_nothing_stored()

    def test_an_invalid_ttl_ms_with_an_unknown_subject_is_still_400(self):
        for path in PUBLISH_PATHS:
            with self.subTest(path=path):
                self.assertError(self.post(self.d, path, {"subject": harness.unique_subject("nobody"),
                                                          "data": "x", "ttl_ms": 0}), 400, "invalid ttl_ms")


class AckExpiryTest(WildcardTestCase):
    """An ack subscription's copies: delivered in time they are in flight
    until acked; a redelivery after the ttl does not happen."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"max_pending": 100000})

    def test_a_nacked_message_whose_ttl_passes_during_the_delay_is_not_redelivered(self):
        p = prefix()
        pattern = p + ".*"
        sid = self.sub(self.d, pattern, ack=True, ack_wait_ms=LONG_WAIT)
        expired = self.metric(self.d, EXPIRED)
        redelivered = self.metric(self.d, "gophermq_redelivered_total")
        self.publish_ttl(self.d, p + ".a", "short", SHORT_TTL)
        self.publish_ttl(self.d, p + ".b", "long", LONG_TTL)
        messages = self.fetch_meta(self.d, pattern, sid)
        self.assertEqual([m["data"] for m in messages], ["short", "long"])
        self.settle(self.d, "/api/nack", pattern, sid, [m["seq"] for m in messages], 2,
                    delay_ms=4 * SHORT_TTL)
        # A fetch held meanwhile gets the live one only, as attempt 2.
        held = self.held(self.d, pattern, sid, wait_ms=LONG_WAIT)
        status, reply = held.reply()
        self.assertEqual(status, 200)
        self.assertEqual([(m["subject"], m["data"], m["attempt"]) for m in reply["messages"]],
                         [(p + ".b", "long", 2)])
        self.wait_expired(self.d, expired + 1)
        self.assertEqual(self.fetch_meta(self.d, pattern, sid), [])
        self.settle(self.d, "/api/ack", pattern, sid, [messages[1]["seq"]], 1)
        self.settle(self.d, "/api/ack", pattern, sid, [messages[0]["seq"]], 0)
        self.assertEqual(self.metric(self.d, "gophermq_redelivered_total"), redelivered + 1)
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 1)

    def test_a_held_fetch_is_not_woken_by_a_redelivery_of_an_expired_message(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        expired = self.metric(self.d, EXPIRED)
        pending = self.metric(self.d, PENDING)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        seq = self.fetch_meta(self.d, subject, sid)[0]["seq"]
        delay = 3 * SHORT_TTL
        self.settle(self.d, "/api/nack", subject, sid, [seq], 1, delay_ms=delay)
        wait = delay + ms(600)
        held = self.held(self.d, subject, sid, wait_ms=wait)
        status, reply = held.reply(timeout=harness.WAIT_TIMEOUT + seconds(wait))
        self.assertEqual((status, reply["messages"]), (200, []))
        self.assertGreaterEqual(held.elapsed(), seconds(wait) - 0.02, "answered before its wait ended")
        self.wait_expired(self.d, expired + 1)
        self.assertEqual(self.metric(self.d, PENDING), pending)
        self.assertEqual(self.metric(self.d, "gophermq_inflight_messages"), 0)

    def test_an_ack_wait_that_passes_after_the_ttl_does_not_redeliver(self):
        p = prefix()
        subject = p + ".a"
        ack_wait = 2 * SHORT_TTL
        sid = self.sub(self.d, subject, ack=True, ack_wait_ms=ack_wait)
        expired = self.metric(self.d, EXPIRED)
        redelivered = self.metric(self.d, "gophermq_redelivered_total")
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        self.assertEqual([m["data"] for m in self.fetch_meta(self.d, subject, sid)], ["short"])
        self.wait_expired(self.d, expired + 1)
        self.assertEqual(self.fetch_meta(self.d, subject, sid), [])
        self.assertEqual(self.metric(self.d, "gophermq_redelivered_total"), redelivered)
        self.assertEqual(self.metric(self.d, "gophermq_inflight_messages"), 0)

    def test_a_message_delivered_in_time_can_be_acked_after_its_ttl(self):
        p = prefix()
        subject = p + ".a"
        sid = self.sub(self.d, subject, ack=True, ack_wait_ms=LONG_WAIT)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, subject, "short", SHORT_TTL)
        seq = self.fetch_meta(self.d, subject, sid)[0]["seq"]
        time.sleep(seconds(SHORT_TTL) + 0.05 * S)
        self.settle(self.d, "/api/ack", subject, sid, [seq], 1)
        self.assertEqual(self.metric(self.d, EXPIRED), expired)


class DefaultTtlTest(WildcardTestCase):
    """message_ttl_ms: the ttl of messages published without one;
    reloadable."""

    RELOADED = r"configuration reloaded from "

    def reload(self, d, options):
        pattern = self.RELOADED + re.escape(d.config_path)
        before = d.log_count(pattern)
        d.write_config(options)
        d.signal(signal.SIGHUP)
        d.wait_for_log(pattern, count=before + 1)

    def test_message_ttl_ms_applies_to_messages_without_a_ttl_and_a_reload_changes_it(self):
        # Each phase on a subject of its own: what is asserted is which
        # ttl a message got, not how one queue mixes them.
        d = self.start_daemon({"message_ttl_ms": SHORT_TTL})
        p = prefix()
        first = self.subscribe(d, p + ".first.*")
        self.publish_ttl(d, p + ".first.default", "default", None)
        self.publish_ttl(d, p + ".first.own", "own", LONG_TTL)      # its own ttl wins
        self.wait_expired(d, 1)
        self.assertEqual(self.received(d, p + ".first.*", first), [(p + ".first.own", "own")])

        # 0: messages without a ttl no longer expire ...
        self.reload(d, {"message_ttl_ms": 0})
        second = self.subscribe(d, p + ".second")
        marker = self.subscribe(d, p + ".marker")
        self.publish_ttl(d, p + ".second", "none", None)
        # ... which a marker published after it with a longer ttl proves:
        # once the marker expired, the other would have too.
        self.publish_ttl(d, p + ".marker", "marker", 2 * SHORT_TTL)
        self.wait_expired(d, 2)
        self.assertEqual(self.received(d, p + ".second", second), [(p + ".second", "none")])

        # And back: later publishes expire again (single, async, batch),
        # earlier ones keep the ttl they were published with.
        kept = self.subscribe(d, p + ".kept")
        self.publish_ttl(d, p + ".kept", "kept", None)
        self.reload(d, {"message_ttl_ms": SHORT_TTL})
        third = self.subscribe(d, p + ".third.*")
        self.publish_ttl(d, p + ".third.gone", "gone", None)
        self.publish_ttl(d, p + ".third.async", "async", None, path="/api/publish/async")
        self.batch_ok(d, [{"subject": p + ".third.batch", "data": "batch"}])
        self.wait_expired(d, 5)
        self.assertEqual(self.received(d, p + ".third.*", third), [])
        self.assertEqual(self.received(d, p + ".kept", kept), [(p + ".kept", "kept")])
        self.assertEqual(self.received(d, p + ".marker", marker), [])
        self.assertEqual(self.metric(d, EXPIRED), 5)


class StreamTest(WildcardTestCase):
    """GET /api/stream of a wildcard subscription: each event names the
    subject its message was published to; an expired copy is not sent."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon()

    def open_stream(self, subject, sid):
        connection = http.client.HTTPConnection(self.d.api_host, self.d.api_port,
                                                timeout=harness.REQUEST_TIMEOUT)
        self.addCleanup(connection.close)
        connection.request("GET", "/api/stream?" + urllib.parse.urlencode({"subject": subject, "id": sid}))
        response = connection.getresponse()
        self.assertEqual(response.status, 200, response.read(300) if response.status != 200 else "")
        return response

    def next_event(self, response):
        """The decoded data of the stream's next event (comments skipped)."""
        fields = {}
        while True:
            line = response.readline()
            if not line:
                raise AssertionError("the stream ended")
            line = line.decode("utf-8").rstrip("\n")
            if not line:
                if "data" in fields:
                    return json.loads(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def test_a_wildcard_stream_sends_each_message_with_its_published_subject(self):
        p = prefix()
        pattern = p + ".>"
        sid = self.sub(self.d, pattern)
        self.publish(self.d, p + ".a", "one")
        self.publish(self.d, p + ".b.c", "two")
        stream = self.open_stream(pattern, sid)
        events = [self.next_event(stream), self.next_event(stream)]
        self.publish(self.d, p + ".d.e.f", "three")
        events.append(self.next_event(stream))
        self.assertEqual([(e["subject"], e["data"], e["attempt"]) for e in events],
                         [(p + ".a", "one", 1), (p + ".b.c", "two", 1), (p + ".d.e.f", "three", 1)])
        self.assertEqual(sorted(e["seq"] for e in events), [e["seq"] for e in events])

    def test_a_stream_opened_after_a_ttl_passed_does_not_send_that_message(self):
        p = prefix()
        pattern = p + ".*"
        sid = self.sub(self.d, pattern)
        expired = self.metric(self.d, EXPIRED)
        self.publish_ttl(self.d, p + ".a", "short", SHORT_TTL)
        time.sleep(seconds(SHORT_TTL) + 0.05 * S)          # past the ttl: expired, whether swept or not
        stream = self.open_stream(pattern, sid)
        self.publish_ttl(self.d, p + ".b", "long", LONG_TTL)
        event = self.next_event(stream)
        self.assertEqual((event["subject"], event["data"]), (p + ".b", "long"))
        self.assertEqual(self.metric(self.d, EXPIRED), expired + 1)


# ---------------------------------------------------------------------------
class DurabilityTest(WildcardTestCase):
    """persistence = "log": wildcard subscriptions and their messages
    survive a restart; deadlines are wall-clock time."""

    def test_wildcard_subscriptions_and_their_messages_survive_a_restart(self):
        node = Journaled(self)
        d = node.start()
        p = prefix()
        star = self.subscribe(d, p + ".*")
        rest = self.subscribe(d, p + ".>", group="g")
        acked = self.subscribe(d, p + ".jobs.*", ack=True, ack_wait_ms=LONG_WAIT)
        self.publish(d, p + ".a", "one")
        self.publish_ttl(d, p + ".b", "two", LONG_TTL)
        self.batch_ok(d, [{"subject": p + ".jobs.x", "data": "job", "ttl_ms": LONG_TTL}])
        in_flight = self.fetch_meta(d, p + ".jobs.*", acked)
        self.assertEqual([(m["subject"], m["data"]) for m in in_flight], [(p + ".jobs.x", "job")])
        self.assertEqual(self.metric(d, WILDCARDS), 3)
        d.stop()

        d = node.start()
        self.assertEqual(self.metric(d, WILDCARDS), 3)
        self.assertEqual(self.received(d, p + ".*", star), [(p + ".a", "one"), (p + ".b", "two")])
        self.assertEqual(self.received(d, p + ".>", rest),
                         [(p + ".a", "one"), (p + ".b", "two"), (p + ".jobs.x", "job")])
        again = self.fetch_meta(d, p + ".jobs.*", acked)
        self.assertEqual([(m["seq"], m["subject"], m["data"], m["attempt"]) for m in again],
                         [(in_flight[0]["seq"], p + ".jobs.x", "job", 2)])
        self.settle(d, "/api/ack", p + ".jobs.*", acked, [in_flight[0]["seq"]], 1)
        # The patterns match new publishes as before.
        self.publish(d, p + ".c", "three")
        self.publish(d, p + ".jobs.y", "four")
        self.assertEqual(self.received(d, p + ".*", star), [(p + ".c", "three")])
        self.assertEqual(self.received(d, p + ".>", rest), [(p + ".c", "three"), (p + ".jobs.y", "four")])
        self.assertEqual([m["data"] for m in self.fetch_meta(d, p + ".jobs.*", acked)], ["four"])

    def test_a_ttl_that_passes_while_the_daemon_is_stopped_is_honoured_after_the_restart(self):
        node = Journaled(self)
        d = node.start()
        p = prefix()
        sid = self.subscribe(d, p + ".*")
        later = self.subscribe(d, p + ".later.>")
        acked = self.subscribe(d, p + ".jobs.*", ack=True, ack_wait_ms=LONG_WAIT)
        ttl = ms(1000)
        later_ttl = ms(2500)
        published_at = time.monotonic()
        self.publish_ttl(d, p + ".short", "short", ttl)
        self.publish_ttl(d, p + ".long", "long", LONG_TTL)
        self.publish_ttl(d, p + ".none", "none", None)
        self.batch_ok(d, [{"subject": p + ".batch", "data": "batch short", "ttl_ms": ttl},
                          {"subject": p + ".later.x", "data": "later", "ttl_ms": later_ttl},
                          {"subject": p + ".jobs.a", "data": "job short", "ttl_ms": ttl},
                          {"subject": p + ".jobs.b", "data": "job long", "ttl_ms": LONG_TTL},
                          {"subject": p + ".jobs.c", "data": "queued short", "ttl_ms": ttl}])
        # Two in flight when the daemon stops: after the restart only the
        # one whose ttl has not passed is delivered again.
        in_flight = self.fetch_meta(d, p + ".jobs.*", acked, max=2)
        self.assertEqual([m["data"] for m in in_flight], ["job short", "job long"])
        d.stop()
        remaining = published_at + seconds(ttl) + 0.1 * S - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

        d = node.start()
        self.assertEqual(self.received(d, p + ".*", sid), [(p + ".long", "long"), (p + ".none", "none")])
        again = self.fetch_meta(d, p + ".jobs.*", acked)
        self.assertEqual([(m["subject"], m["data"], m["attempt"]) for m in again], [(p + ".jobs.b", "job long", 2)])
        self.settle(d, "/api/ack", p + ".jobs.*", acked, [again[0]["seq"]], 1)
        # A deadline still ahead at the restart holds after it.
        if time.monotonic() < published_at + seconds(later_ttl) - 0.5 * S:
            self.assertEqual(self.received(d, p + ".later.>", later, peek=True), [(p + ".later.x", "later")])
        remaining = published_at + seconds(later_ttl) + 0.05 * S - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        self.assertEqual(self.received(d, p + ".later.>", later), [])
        self.assertEqual(self.metric(d, PENDING), 0)

    def test_a_compacted_log_keeps_wildcard_subscriptions_published_subjects_and_deadlines(self):
        node = Journaled(self, fsync="never", compact_min_size=65536, segment_size=65536)
        d = node.start()
        p = prefix()
        star = self.subscribe(d, p + ".*")
        acked = self.subscribe(d, p + ".>", ack=True, ack_wait_ms=LONG_WAIT)
        ttl = ms(1000)
        self.publish_ttl(d, p + ".a", "long", LONG_TTL)
        self.publish_ttl(d, p + ".b", "none", None)
        self.publish_ttl(d, p + ".c", "short", ttl)
        published_at = time.monotonic()
        taken = self.fetch_meta(d, p + ".>", acked, max=1)
        self.assertEqual([m["data"] for m in taken], ["long"])
        other = harness.unique_subject("garbage")
        other_id = self.subscribe(d, other)
        before = self.metric(d, "gophermq_journal_compactions_total")
        for _ in range(100):
            if self.metric(d, "gophermq_journal_compactions_total") > before:
                break
            self.batch_ok(d, [{"subject": other, "data": "g" * 4096} for _ in range(100)])
            self.fetch_data(d, other, other_id)
        d.wait_metric("gophermq_journal_compactions_total", lambda v: v > before, timeout=20 * S)
        d.kill()
        remaining = published_at + seconds(ttl) + 0.1 * S - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

        d = node.start()
        self.assertEqual(self.metric(d, WILDCARDS), 2)
        self.assertEqual(self.received(d, p + ".*", star), [(p + ".a", "long"), (p + ".b", "none")])
        got = self.fetch_meta(d, p + ".>", acked)
        self.assertEqual([(m["subject"], m["data"], m["attempt"]) for m in got],
                         [(p + ".a", "long", 2), (p + ".b", "none", 1)])


if __name__ == "__main__":
    harness.main()
