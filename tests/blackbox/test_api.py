#!/usr/bin/env python3
"""test_api.py - the HTTP API of a running gophermqd, per /API.md.

Every endpoint's success and error replies, subjects, body validation,
byte-exact payloads, size and pending limits, async publishing, routing
(404/405), content types and keep-alive connections.
"""

import json
import os
import random
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, JSON_CONTENT_TYPE, UUID4_RE, json_body, unique_subject  # noqa: E402

ENDPOINTS = ("/api/subscribe", "/api/publish", "/api/publish/async", "/api/fetch")

# Subjects API.md declares invalid: empty, containing space/tab/CR/LF, or
# with an empty dot-separated token.
INVALID_SUBJECTS = [
    "", " ", "a b", "a\tb", "a\rb", "a\nb", " a", "a ", "\t", "\n",
    "a..b", ".a", "a.", ".", "..", "a.b.", ".a.b", "a. b", "a.b c.d",
]

# Bodies that are not a JSON object at all (or not JSON).
NOT_AN_OBJECT = [
    b"", b" ", b"hello", b"[]", b'[{"subject":"a.b"}]', b"42", b'"a.b"', b"null", b"true",
    b"{", b'{"subject":"a.b"', b'{"subject":"a.b",', b'{"subject":', b'{"subject":"a.b}',
    b"}", b"\x00", b"\xff\xfe{}",
]

# Not JSON by RFC 8259, though lenient parsers take them.
NON_STANDARD_JSON = [
    b"{'subject':'a.b'}", b'{subject:"a.b"}', b'{"subject":"a.b",}', b'{"subject":"a\nb"}',
    b'{"subject":"a.b"} x', b'{"subject":"a.b"}{}', b'{"subject":"a.b"} // c', b'/* c */ {"subject":"a.b"}',
]

NON_STRING_VALUES = [5, 1.5, -1, True, False, [], ["a.b"], {}, {"a": 1}]

PAYLOADS = [
    "", "x", "\u0000", "a\u0000b", "\u0000\u0000\u0000", '"quoted"', "'single'", "back\\slash",
    "\\u0000 literally", "line\nbreak", "crlf\r\n", "\ttab", "/", "a/b/", "</script>",
    "\u0001\u001f\u007f", "\u0080\u00ff", "ünïcödé", "中文字符", "emoji 😀🎉", "\U0001f600",
    "\u2028\u2029", "\ufeffbom", "\uffff", '{"json":"inside"}', "[1,2]", "null", "  spaces  ",
    "x" * 1000,
]


class ApiTest(DaemonTestCase):
    """One daemon with generous limits, shared by the tests of this class;
    every test uses its own subjects."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({
            "max_pending": 1000000, "max_pending_bytes": 1 << 30,
            "max_message_size": 1 << 20, "max_subject_length": 256,
            "pool_size": 4, "async_queue_size": 10000,
        })

    def setUp(self):
        self.d = self.daemon
        # A subject with a subscriber, for tests that need a valid context.
        self.subject = unique_subject("ctx")
        self.subscriber_id = self.d.subscribe(self.subject)

    def valid_body(self, endpoint):
        """A body endpoint would accept."""
        if endpoint == "/api/subscribe":
            return {"subject": self.subject}
        if endpoint == "/api/fetch":
            return {"subject": self.subject, "id": self.subscriber_id}
        return {"subject": self.subject, "data": "x"}

    # -- subscribe ---------------------------------------------------------
    def test_subscribe_returns_uuid4_id_and_echoes_subject(self):
        subject = unique_subject()
        response = self.d.request("POST", "/api/subscribe", {"subject": subject})
        status, headers, body = response
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("Content-Type"), JSON_CONTENT_TYPE)
        reply = json_body(body)
        self.assertEqual(set(reply), {"id", "subject"})
        self.assertEqual(reply["subject"], subject)
        self.assertRegex(reply["id"], UUID4_RE)

    def test_subscribe_ids_are_unique_uuid4(self):
        subject = unique_subject()
        ids = [self.d.subscribe(subject) for _ in range(50)]
        ids += [self.d.subscribe(unique_subject()) for _ in range(50)]
        for subscriber_id in ids:
            self.assertRegex(subscriber_id, UUID4_RE)
        self.assertEqual(len(set(ids)), len(ids), "duplicate subscriber ids")

    # -- publish and fetch -----------------------------------------------
    def test_publish_answers_ok_and_fetch_returns_the_message(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        response = self.d.request("POST", "/api/publish", {"subject": subject, "data": "hello"})
        self.assertJsonReply(response, 200, {"status": "ok"})
        response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber})
        self.assertJsonReply(response, 200, {"subject": subject, "id": subscriber, "data": ["hello"]})

    def test_publish_fans_out_a_copy_to_every_subscriber(self):
        subject = unique_subject()
        subscribers = [self.d.subscribe(subject) for _ in range(3)]
        for text in ("one", "two"):
            self.d.publish_ok(subject, text)
        for subscriber in subscribers:
            self.assertEqual(self.d.fetch(subject, subscriber), ["one", "two"])
        for subscriber in subscribers:
            self.assertEqual(self.d.fetch(subject, subscriber), [])

    def test_subscriber_gets_only_messages_published_after_it_subscribed(self):
        subject = unique_subject()
        early = self.d.subscribe(subject)
        self.d.publish_ok(subject, "before")
        late = self.d.subscribe(subject)
        self.d.publish_ok(subject, "after")
        self.assertEqual(self.d.fetch(subject, early), ["before", "after"])
        self.assertEqual(self.d.fetch(subject, late), ["after"])

    def test_subjects_match_exactly_without_wildcards(self):
        base = unique_subject()
        names = [base, base + ".child", base + ".other", base.rsplit(".", 1)[0]]
        subscribers = {name: self.d.subscribe(name) for name in names}
        self.d.publish_ok(base, "to base")
        self.d.publish_ok(base + ".child", "to child")
        self.assertEqual(self.d.fetch(base, subscribers[base]), ["to base"])
        self.assertEqual(self.d.fetch(base + ".child", subscribers[base + ".child"]), ["to child"])
        self.assertEqual(self.d.fetch(base + ".other", subscribers[base + ".other"]), [])
        parent = base.rsplit(".", 1)[0]
        self.assertEqual(self.d.fetch(parent, subscribers[parent]), [])
        # A wildcard token is for subscriptions only: publishing to one is
        # refused (the original took it as a literal token).
        status, reply = self.d.publish(base + ".*", "wild")
        self.assertEqual((status, reply), (400, {"message": "invalid subject"}))

    def test_fetch_returns_messages_oldest_first(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        expected = ["message %d" % number for number in range(50)]
        with self.d.client() as client:
            for text in expected:
                self.d.publish_ok(subject, text, client=client)
        self.assertEqual(self.d.fetch(subject, subscriber), expected)

    def test_fetch_drains_the_queue_then_returns_empty_list(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber})
        self.assertJsonReply(response, 200, {"subject": subject, "id": subscriber, "data": []})
        self.d.publish_ok(subject, "a")
        self.d.publish_ok(subject, "b")
        self.assertEqual(self.d.fetch(subject, subscriber), ["a", "b"])
        response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber})
        self.assertJsonReply(response, 200, {"subject": subject, "id": subscriber, "data": []})
        self.d.publish_ok(subject, "c")
        self.assertEqual(self.d.fetch(subject, subscriber), ["c"])

    def test_fetch_with_unknown_id_is_404_bad_id(self):
        own = self.subscriber_id
        for bad_id in (str(uuid.uuid4()), "nope", "", own.upper(), own + "0", own[:-1],
                       " " + self.subscriber_id, "00000000-0000-0000-0000-000000000000"):
            with self.subTest(id=bad_id):
                response = self.d.request("POST", "/api/fetch", {"subject": self.subject, "id": bad_id})
                self.assertError(response, 404, "bad id")

    def test_fetch_with_id_of_another_subject_is_404_bad_id(self):
        other = unique_subject()
        other_id = self.d.subscribe(other)
        self.d.publish_ok(self.subject, "kept")
        response = self.d.request("POST", "/api/fetch", {"subject": other, "id": self.subscriber_id})
        self.assertError(response, 404, "bad id")
        response = self.d.request("POST", "/api/fetch", {"subject": self.subject, "id": other_id})
        self.assertError(response, 404, "bad id")
        # A subject nobody ever subscribed to.
        response = self.d.request("POST", "/api/fetch",
                                  {"subject": unique_subject(), "id": self.subscriber_id})
        self.assertError(response, 404, "bad id")
        # The failed fetches took nothing away.
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), ["kept"])

    def test_publish_without_subscriber_is_404_subscriber_not_found(self):
        response = self.d.request("POST", "/api/publish", {"subject": unique_subject(), "data": "x"})
        self.assertError(response, 404, "subscriber not found")

    # -- subjects ------------------------------------------------------------
    def test_subscribe_with_invalid_subject_is_400(self):
        for subject in INVALID_SUBJECTS:
            with self.subTest(subject=subject):
                response = self.d.request("POST", "/api/subscribe", {"subject": subject})
                self.assertError(response, 400, "invalid subject")

    def test_subscribe_without_subject_is_400_invalid_subject(self):
        for body in ({}, {"data": "x"}, {"subjects": "a.b"}):
            with self.subTest(body=body):
                response = self.d.request("POST", "/api/subscribe", body)
                self.assertError(response, 400, "invalid subject")

    def test_publish_with_invalid_subject_is_400(self):
        for path in ("/api/publish", "/api/publish/async"):
            for subject in INVALID_SUBJECTS:
                with self.subTest(path=path, subject=subject):
                    response = self.d.request("POST", path, {"subject": subject, "data": "x"})
                    self.assertError(response, 400, "invalid subject")
            with self.subTest(path=path, subject="missing"):
                response = self.d.request("POST", path, {"data": "x"})
                self.assertError(response, 400, "invalid subject")

    def test_fetch_with_invalid_subject_is_400_not_500(self):
        for subject in INVALID_SUBJECTS:
            for subscriber in (self.subscriber_id, str(uuid.uuid4())):
                with self.subTest(subject=subject, id=subscriber):
                    response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber})
                    self.assertError(response, 400, "invalid subject")
        response = self.d.request("POST", "/api/fetch", {"id": self.subscriber_id})
        self.assertError(response, 400, "invalid subject")

    def test_subject_length_limit_is_256_bytes(self):
        prefix = "len%s." % uuid.uuid4().hex[:8]
        longest = prefix + "a" * (256 - len(prefix))
        self.assertEqual(len(longest.encode()), 256)
        subscriber = self.d.subscribe(longest)
        self.d.publish_ok(longest, "fits")
        self.assertEqual(self.d.fetch(longest, subscriber), ["fits"])
        multibyte = prefix + "é" * ((256 - len(prefix)) // 2)
        multibyte += "a" * (256 - len(multibyte.encode()))
        self.assertEqual(len(multibyte.encode()), 256)
        self.d.subscribe(multibyte)
        for subject in (longest + "b", multibyte + "é", "a" * 10000):
            with self.subTest(length=len(subject.encode())):
                self.assertError(self.d.request("POST", "/api/subscribe", {"subject": subject}),
                                 400, "invalid subject")
                self.assertError(self.d.request("POST", "/api/publish", {"subject": subject, "data": "x"}),
                                 400, "invalid subject")
                self.assertError(self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber}),
                                 400, "invalid subject")

    def test_unusual_but_valid_subjects_work(self):
        tag = uuid.uuid4().hex[:8]
        for subject in ("a" + tag, "A-b_c:d" + tag, "x.a*.>b" + tag, "ünïcode.主题." + tag,
                        "emoji.😀." + tag, "1.2.3." + tag, "a/b?c=d&e#f" + tag, "-" + tag,
                        '"quoted".\\' + tag):
            with self.subTest(subject=subject):
                response = self.d.request("POST", "/api/subscribe", {"subject": subject})
                self.assertEqual(response[0], 200, response[2])
                reply = json_body(response[2])
                self.assertEqual(reply["subject"], subject)
                self.d.publish_ok(subject, "payload")
                response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": reply["id"]})
                self.assertJsonReply(response, 200,
                                     {"subject": subject, "id": reply["id"], "data": ["payload"]})

    # -- body validation -----------------------------------------------------
    def test_body_that_is_not_a_json_object_is_400(self):
        for path in ENDPOINTS:
            for body in NOT_AN_OBJECT:
                with self.subTest(path=path, body=body):
                    response = self.d.request("POST", path, body)
                    self.assertError(response, 400, "request's body is invalid")

    def test_non_standard_json_is_400(self):
        for path in ENDPOINTS:
            for body in NON_STANDARD_JSON:
                with self.subTest(path=path, body=body):
                    response = self.d.request("POST", path, body)
                    self.assertError(response, 400, "request's body is invalid")

    def test_non_string_fields_are_400_body_invalid(self):
        cases = []
        for value in NON_STRING_VALUES:
            cases.append(("/api/subscribe", {"subject": value}))
            for path in ("/api/publish", "/api/publish/async"):
                cases.append((path, {"subject": value, "data": "x"}))
                cases.append((path, {"subject": self.subject, "data": value}))
            cases.append(("/api/fetch", {"subject": value, "id": self.subscriber_id}))
            cases.append(("/api/fetch", {"subject": self.subject, "id": value}))
        for path, body in cases:
            with self.subTest(path=path, body=body):
                self.assertError(self.d.request("POST", path, body), 400, "request's body is invalid")
        # Nothing was published by the refused requests.
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def test_null_fields_are_400_body_invalid(self):
        cases = [("/api/subscribe", {"subject": None}),
                 ("/api/publish", {"subject": None, "data": "x"}),
                 ("/api/publish", {"subject": self.subject, "data": None}),
                 ("/api/publish/async", {"subject": None, "data": "x"}),
                 ("/api/publish/async", {"subject": self.subject, "data": None}),
                 ("/api/fetch", {"subject": None, "id": self.subscriber_id}),
                 ("/api/fetch", {"subject": self.subject, "id": None})]
        for path, body in cases:
            with self.subTest(path=path, body=body):
                self.assertError(self.d.request("POST", path, body), 400, "request's body is invalid")
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def test_invalid_utf8_in_json_strings_is_400(self):
        subject = self.subject.encode()
        for bad in (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"a\x80b",
                    b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80"):
            bodies = [
                ("/api/subscribe", b'{"subject":"a.' + bad + b'"}'),
                ("/api/publish", b'{"subject":"' + subject + b'","data":"' + bad + b'"}'),
                ("/api/publish/async", b'{"subject":"' + subject + b'","data":"' + bad + b'"}'),
                ("/api/fetch", b'{"subject":"' + subject + b'","id":"' + bad + b'"}'),
                ("/api/publish", b'{"subject":"' + subject + b'","data":"ok","extra":"' + bad + b'"}'),
            ]
            for path, body in bodies:
                with self.subTest(path=path, body=body):
                    self.assertError(self.d.request("POST", path, body), 400, "request's body is invalid")
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def test_unknown_fields_are_ignored(self):
        extra = {"extra": 1, "nested": {"a": [1, 2, None]}, "flag": True, "id2": None}
        subject = unique_subject()
        response = self.d.request("POST", "/api/subscribe", dict(extra, subject=subject))
        self.assertEqual(response[0], 200, response[2])
        subscriber = json_body(response[2])["id"]
        response = self.d.request("POST", "/api/publish", dict(extra, subject=subject, data="d", id="x"))
        self.assertJsonReply(response, 200, {"status": "ok"})
        response = self.d.request("POST", "/api/fetch", dict(extra, subject=subject, id=subscriber))
        self.assertJsonReply(response, 200, {"subject": subject, "id": subscriber, "data": ["d"]})

    # -- payloads ------------------------------------------------------------
    def test_data_round_trips_byte_for_byte(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        for payload in PAYLOADS:
            self.d.publish_ok(subject, payload)
        self.assertEqual(self.d.fetch(subject, subscriber), PAYLOADS)
        # Also with non-ASCII written raw (not \u-escaped) in the request.
        for payload in PAYLOADS:
            body = ('{"subject":"%s","data":%s}' % (subject, json.dumps(payload, ensure_ascii=False)))
            status, _, reply = self.d.request("POST", "/api/publish", body.encode("utf-8"))
            self.assertEqual(status, 200, (payload, reply))
        self.assertEqual(self.d.fetch(subject, subscriber), PAYLOADS)

    def test_json_escapes_in_data_are_decoded(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        raw_and_decoded = [
            (r"a\/b", "a/b"), (r"\u00e9", "é"), (r"\u00E9", "é"), (r"\ud83d\ude00", "😀"),
            (r"\u0000", "\u0000"), (r"\b\f\n\r\t", "\b\f\n\r\t"), (r"\"\\", '"\\'),
            (r"\u4e2d", "中"), ("\u00e9", "é"),
        ]
        for raw, _ in raw_and_decoded:
            body = '{"subject":"%s","data":"%s"}' % (subject, raw)
            status, _, reply = self.d.request("POST", "/api/publish", body.encode("utf-8"))
            self.assertEqual(status, 200, (raw, reply))
        self.assertEqual(self.d.fetch(subject, subscriber), [decoded for _, decoded in raw_and_decoded])

    def test_large_payload_round_trips(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        generator = random.Random(42)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,;:-_!?"
        large = "".join(generator.choice(alphabet) for _ in range((1 << 20) - 1)) + "\n"
        self.assertEqual(len(large.encode()), 1 << 20)
        self.d.publish_ok(subject, large)
        mixed = ("é😀\u0000\"\\/" * 7000)[: 50000]
        self.d.publish_ok(subject, mixed)
        received = self.d.fetch(subject, subscriber)
        self.assertEqual(len(received), 2)
        self.assertTrue(received[0] == large, "1 MiB payload changed on the way")
        self.assertTrue(received[1] == mixed, "escaped payload changed on the way")
        too_large = large + "x"
        self.assertError(self.d.request("POST", "/api/publish", {"subject": subject, "data": too_large}),
                         413, "message too large")
        self.assertEqual(self.d.fetch(subject, subscriber), [])

    # -- concurrency -----------------------------------------------------------
    def test_concurrent_publishers_lose_nothing_and_keep_their_order(self):
        subject = unique_subject()
        subscribers = [self.d.subscribe(subject) for _ in range(2)]
        threads_count, per_thread = 8, 100
        errors = []

        def publisher(number):
            try:
                with self.d.client() as client:
                    for sequence in range(per_thread):
                        status, reply = self.d.publish(subject, "%d:%d" % (number, sequence), client)
                        if status != 200:
                            errors.append((number, sequence, status, reply))
                            return
            except Exception as error:  # reported below
                errors.append((number, repr(error)))

        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(harness.scaled(60))
        self.assertEqual(errors, [])
        for subscriber in subscribers:
            received = self.d.fetch(subject, subscriber)
            self.assertEqual(len(received), threads_count * per_thread)
            self.assertEqual(len(set(received)), len(received), "a message arrived twice")
            for number in range(threads_count):
                own = [text for text in received if text.startswith("%d:" % number)]
                self.assertEqual(own, ["%d:%d" % (number, s) for s in range(per_thread)],
                                 "publisher %d's messages out of order or lost" % number)

    def test_concurrent_publish_and_fetch_deliver_each_message_exactly_once(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        publishers, per_thread = 4, 100
        errors, received = [], []
        done = threading.Event()

        def publisher(number):
            try:
                with self.d.client() as client:
                    for sequence in range(per_thread):
                        status, reply = self.d.publish(subject, "%d:%d" % (number, sequence), client)
                        if status != 200:
                            errors.append((status, reply))
                            return
            except Exception as error:
                errors.append(repr(error))

        def fetcher():
            try:
                with self.d.client() as client:
                    while not done.is_set():
                        received.extend(self.d.fetch(subject, subscriber, client))
            except Exception as error:
                errors.append(repr(error))

        consumer = threading.Thread(target=fetcher)
        consumer.start()
        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(publishers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(harness.scaled(60))
        done.set()
        consumer.join(harness.scaled(30))
        received.extend(self.d.fetch(subject, subscriber))
        self.assertEqual(errors, [])
        expected = ["%d:%d" % (n, s) for n in range(publishers) for s in range(per_thread)]
        self.assertEqual(sorted(received), sorted(expected))
        for number in range(publishers):
            own = [text for text in received if text.startswith("%d:" % number)]
            self.assertEqual(own, ["%d:%d" % (number, s) for s in range(per_thread)])

    # -- async publish ---------------------------------------------------------
    def test_async_publish_answers_ok_and_delivers(self):
        subject = unique_subject()
        subscribers = [self.d.subscribe(subject) for _ in range(2)]
        expected = ["async %d" % number for number in range(20)]
        with self.d.client() as client:
            for text in expected:
                response = self.d.request("POST", "/api/publish/async", {"subject": subject, "data": text},
                                          client=client)
                self.assertJsonReply(response, 200, {"status": "ok"})
        for subscriber in subscribers:
            received = self.d.fetch_until(subject, subscriber, len(expected))
            self.assertEqual(sorted(received), sorted(expected))
        for subscriber in subscribers:
            self.assertEqual(self.d.fetch(subject, subscriber), [], "a message was delivered twice")

    def test_async_publish_keeps_data_byte_for_byte(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        for payload in PAYLOADS:
            response = self.d.request("POST", "/api/publish/async", {"subject": subject, "data": payload})
            self.assertJsonReply(response, 200, {"status": "ok"})
        received = self.d.fetch_until(subject, subscriber, len(PAYLOADS))
        self.assertEqual(sorted(received), sorted(PAYLOADS))

    # -- routing -----------------------------------------------------------------
    def test_ready_answers_204_to_get_and_head(self):
        with self.d.client() as client:
            status, _, body = client.request("GET", "/ready")
            self.assertEqual((status, body), (204, b""))
            status, _, body = client.request("HEAD", "/ready")
            self.assertEqual((status, body), (204, b""))

    def test_unknown_path_is_404_json(self):
        for method, path in (("GET", "/"), ("POST", "/"), ("GET", "/api"), ("POST", "/api"),
                             ("POST", "/api/"), ("POST", "/api/publish/"), ("POST", "/api/Publish"),
                             ("POST", "/api/publishx"), ("POST", "/api/publish/async/x"),
                             ("POST", "/api/unknown"), ("GET", "/metrics"), ("GET", "/readyz"),
                             ("GET", "/ready/x"), ("DELETE", "/nothing"), ("POST", "/api//publish")):
            with self.subTest(method=method, path=path):
                response = self.d.request(method, path, self.valid_body("/api/publish")
                                          if method == "POST" else None)
                self.assertError(response, 404, "Not Found")

    def test_wrong_method_is_405_json(self):
        for method, path in (("GET", "/api/publish"), ("GET", "/api/subscribe"), ("GET", "/api/fetch"),
                             ("GET", "/api/publish/async"), ("PUT", "/api/publish"),
                             ("DELETE", "/api/subscribe"), ("PATCH", "/api/fetch"),
                             ("OPTIONS", "/api/publish"), ("POST", "/ready"), ("PUT", "/ready"),
                             ("DELETE", "/ready")):
            with self.subTest(method=method, path=path):
                body = self.valid_body(path) if path.startswith("/api") and method != "GET" else None
                response = self.d.request(method, path, body)
                self.assertError(response, 405, "Method Not Allowed")
        status, _, _ = self.d.request("HEAD", "/api/publish")
        self.assertEqual(status, 405)
        # The refused requests published nothing.
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    # -- content types -------------------------------------------------------------
    def exercise_all_endpoints(self, **request_options):
        subject = unique_subject()
        status, headers, body = self.d.request("POST", "/api/subscribe", {"subject": subject},
                                               **request_options)
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("Content-Type"), JSON_CONTENT_TYPE)
        subscriber = json_body(body)["id"]
        response = self.d.request("POST", "/api/publish", {"subject": subject, "data": "d1"},
                                  **request_options)
        self.assertJsonReply(response, 200, {"status": "ok"})
        response = self.d.request("POST", "/api/publish/async", {"subject": subject, "data": "d2"},
                                  **request_options)
        self.assertJsonReply(response, 200, {"status": "ok"})
        received = []
        deadline = time.monotonic() + harness.WAIT_TIMEOUT
        while len(received) < 2 and time.monotonic() < deadline:
            response = self.d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber},
                                      **request_options)
            self.assertEqual(response[0], 200, response[2])
            self.assertEqual(response[1].get("Content-Type"), JSON_CONTENT_TYPE)
            received += json_body(response[2])["data"]
        self.assertEqual(sorted(received), ["d1", "d2"])

    def test_json_body_without_content_type_is_accepted(self):
        self.exercise_all_endpoints(content_type=None)

    def test_form_urlencoded_content_type_is_read_as_json(self):
        self.exercise_all_endpoints(content_type="application/x-www-form-urlencoded")

    def test_json_content_type_with_charset_is_accepted(self):
        self.exercise_all_endpoints(content_type="application/json; charset=utf-8")

    def test_expect_100_continue_is_honoured(self):
        subject = unique_subject()
        subscriber = self.d.subscribe(subject)
        payload = "c" * 5000
        body = json.dumps({"subject": subject, "data": payload}).encode()
        head = ("POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        address = (self.d.api_host, self.d.api_port)
        with socket.create_connection(address, timeout=harness.REQUEST_TIMEOUT) as sock:
            sock.sendall(head.encode())
            interim = read_http_response(sock, interim=True)
            self.assertEqual(interim[0], 100, "expected 100 Continue first")
            sock.sendall(body)
            status, headers, reply = read_http_response(sock)
        self.assertEqual(status, 200, reply)
        self.assertEqual(json_body(reply), {"status": "ok"})
        self.assertEqual(self.d.fetch(subject, subscriber), [payload])

    # -- connections -----------------------------------------------------------------
    def test_keep_alive_serves_many_requests_on_one_connection(self):
        subject = unique_subject()
        with self.d.client() as client:
            subscriber = self.d.subscribe(subject, client=client)
            port = client.local_port()
            self.assertIsNotNone(port)
            for number in range(20):
                status, headers, body = client.request(
                    "POST", "/api/publish", {"subject": subject, "data": str(number)})
                self.assertEqual(status, 200, body)
                self.assertNotEqual((headers.get("Connection") or "").lower(), "close")
                self.assertEqual(client.local_port(), port, "the daemon closed a keep-alive connection")
            self.assertEqual(self.d.fetch(subject, subscriber, client=client), [str(n) for n in range(20)])
            self.assertEqual(client.local_port(), port, "the daemon closed the connection after a fetch")
            status, headers, _ = client.request("GET", "/ready")
            self.assertEqual(status, 204)
            self.assertNotEqual((headers.get("Connection") or "").lower(), "close",
                                "GET /ready closes a keep-alive connection")
            self.assertEqual(client.local_port(), port, "the daemon closed the connection after GET /ready")

    def test_connection_stays_usable_after_error_replies(self):
        requests = [("POST", "/api/publish", {"subject": "a..b", "data": "x"}, 400),
                    ("POST", "/api/publish", b"not json", 400),
                    ("POST", "/api/publish", {"subject": unique_subject(), "data": "x"}, 404),
                    ("POST", "/api/fetch", {"subject": self.subject, "id": "nope"}, 404),
                    ("GET", "/api/publish", None, 405),
                    ("GET", "/nowhere", None, 404)]
        for method, path, body, expected in requests:
            with self.subTest(method=method, path=path, body=body), self.d.client() as client:
                self.assertEqual(self.d.fetch(self.subject, self.subscriber_id, client=client), [])
                port = client.local_port()
                self.assertIsNotNone(port)
                status, headers, reply = client.request(method, path, body)
                self.assertEqual(status, expected, reply)
                self.assertNotEqual((headers.get("Connection") or "").lower(), "close",
                                    "Connection: close after %d" % status)
                self.assertEqual(client.local_port(), port, "connection closed after %d" % status)
                self.assertEqual(self.d.fetch(self.subject, self.subscriber_id, client=client), [])
                self.assertEqual(client.local_port(), port)


def read_http_response(sock, interim=False):
    """Reads one HTTP response from sock: (status, headers dict, body).  With
    interim, returns a 1xx response (or the final one if no 1xx came)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before a response (got %r)" % data[:200])
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if 100 <= status < 200:
        return status, headers, rest
    length = headers.get("content-length")
    if length is not None:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    else:
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk
    return status, headers, rest


class MessageSizeTest(DaemonTestCase):
    """max_message_size = 1000: data up to 1000 decoded bytes, request bodies
    up to 1000 + 4096 bytes."""

    LIMIT = 1000

    @classmethod
    def setUpClass(cls):
        cls.daemon = cls.start_class_daemon({"max_message_size": cls.LIMIT, "max_pending": 100000})

    def setUp(self):
        self.d = self.daemon
        self.subject = unique_subject("size")
        self.subscriber_id = self.d.subscribe(self.subject)

    def test_data_of_exactly_max_message_size_is_accepted(self):
        payloads = ["a" * self.LIMIT, "é" * (self.LIMIT // 2), "😀" * (self.LIMIT // 4)]
        for payload in payloads:
            self.assertEqual(len(payload.encode()), self.LIMIT)
            self.d.publish_ok(self.subject, payload)
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), payloads)

    def test_data_above_max_message_size_is_413_and_not_stored(self):
        for payload in ("a" * (self.LIMIT + 1), "é" * (self.LIMIT // 2) + "a", "x" * (self.LIMIT * 4)):
            with self.subTest(length=len(payload.encode())):
                response = self.d.request("POST", "/api/publish", {"subject": self.subject, "data": payload})
                self.assertError(response, 413, "message too large")
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def test_async_data_above_max_message_size_is_413(self):
        response = self.d.request("POST", "/api/publish/async",
                                  {"subject": self.subject, "data": "a" * (self.LIMIT + 1)})
        self.assertError(response, 413, "message too large")
        time.sleep(0.2 * harness.SCALE)
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def test_limit_counts_decoded_bytes_not_escaped_bytes(self):
        # 1000 newlines are 2000 bytes in JSON, 1000 bytes of data.
        newlines = "\n" * self.LIMIT
        self.d.publish_ok(self.subject, newlines)
        # 500 NULs: 3000 bytes escaped, 500 bytes of data.
        nuls = "\u0000" * (self.LIMIT // 2)
        self.d.publish_ok(self.subject, nuls)
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [newlines, nuls])
        response = self.d.request("POST", "/api/publish", {"subject": self.subject, "data": newlines + "\n"})
        self.assertError(response, 413, "message too large")

    def body_of_length(self, length):
        """A valid publish body of exactly length bytes (padded with an
        ignored field) carrying a small payload."""
        prefix = '{"subject":"%s","data":"small","pad":"' % self.subject
        padding = length - len(prefix) - 2
        self.assertGreater(padding, 0)
        body = (prefix + "p" * padding + '"}').encode()
        self.assertEqual(len(body), length)
        return body

    def test_body_up_to_limit_plus_4096_bytes_is_accepted(self):
        response = self.d.request("POST", "/api/publish", self.body_of_length(self.LIMIT + 4096))
        self.assertJsonReply(response, 200, {"status": "ok"})
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), ["small"])

    def test_body_above_limit_plus_4096_bytes_is_413(self):
        body = self.body_of_length(self.LIMIT + 4097)
        for path in ENDPOINTS:
            with self.subTest(path=path):
                self.assertError(self.d.request("POST", path, body), 413, "message too large")
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])

    def huge_request(self, path, length):
        """Announces a body of length bytes and streams it from a thread
        while reading the reply; returns (status, headers, body)."""
        head = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (path, length)).encode()
        sock = socket.create_connection((self.d.api_host, self.d.api_port), timeout=harness.REQUEST_TIMEOUT)
        try:
            sock.sendall(head)

            def send_body():
                chunk = b'{"subject":"' + self.subject.encode() + b'","data":"' + b"z" * 65000
                sent = 0
                try:
                    sock.sendall(chunk)
                    sent = len(chunk)
                    block = b"z" * 65536
                    while sent < length:
                        piece = block[: min(len(block), length - sent)]
                        sock.sendall(piece)
                        sent += len(piece)
                except OSError:
                    pass   # the daemon may stop reading once it has refused

            sender = threading.Thread(target=send_body, daemon=True)
            sender.start()
            response = read_http_response(sock)
            return response
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def test_huge_body_is_refused_with_413(self):
        for path in ("/api/publish", "/api/subscribe"):
            with self.subTest(path=path):
                status, headers, body = self.huge_request(path, 16 << 20)
                self.assertEqual(status, 413, body[:200])
                self.assertEqual(headers.get("content-type"), JSON_CONTENT_TYPE)
                self.assertEqual(json_body(body), {"message": "message too large"})
        self.assertEqual(self.d.fetch(self.subject, self.subscriber_id), [])
        status, _, _ = self.d.request("GET", "/ready")
        self.assertEqual(status, 204)


def assert_retry_after(test, headers):
    value = headers.get("Retry-After")
    test.assertIsNotNone(value, "429 without a Retry-After header")
    test.assertRegex(value.strip(), r"^\d+$", "Retry-After is not a number of seconds")


class PendingLimitTest(DaemonTestCase):
    """max_pending counts message copies, max_pending_bytes their payload
    bytes; a publish that would exceed either stores nothing."""

    def test_overflow_by_count_is_429_with_retry_after_and_stores_nothing(self):
        d = self.start_daemon({"max_pending": 5})
        subject, other = unique_subject(), unique_subject()
        first, second = d.subscribe(subject), d.subscribe(subject)
        third = d.subscribe(other)
        d.publish_ok(subject, "m1")            # 2 copies pending
        d.publish_ok(subject, "m2")            # 4
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "m3"})  # would be 6
        self.assertError(response, 429, "broker overflow")
        assert_retry_after(self, response[1])
        d.publish_ok(other, "o1")              # 5: exactly the limit
        response = d.request("POST", "/api/publish", {"subject": other, "data": "o2"})
        self.assertError(response, 429, "broker overflow")
        assert_retry_after(self, response[1])
        self.assertEqual(d.fetch(subject, first), ["m1", "m2"])
        self.assertEqual(d.fetch(subject, second), ["m1", "m2"])
        self.assertEqual(d.fetch(other, third), ["o1"])
        self.assertEqual(d.metrics().value("gophermq_overflows_total"), 2)

    def test_publish_needing_more_copies_than_the_limit_reaches_nobody(self):
        d = self.start_daemon({"max_pending": 5})
        subject = unique_subject()
        subscribers = [d.subscribe(subject) for _ in range(6)]
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "six copies"})
        self.assertError(response, 429, "broker overflow")
        for subscriber in subscribers:
            self.assertEqual(d.fetch(subject, subscriber), [])
        exact = unique_subject()
        five = [d.subscribe(exact) for _ in range(5)]
        d.publish_ok(exact, "five copies")
        for subscriber in five:
            self.assertEqual(d.fetch(exact, subscriber), ["five copies"])

    def test_overflow_by_bytes_is_all_or_nothing(self):
        d = self.start_daemon({"max_pending": 1000, "max_pending_bytes": 1000})
        subject = unique_subject()
        first, second = d.subscribe(subject), d.subscribe(subject)
        d.publish_ok(subject, "a" * 400)       # 800 bytes pending
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "b" * 101})  # 1002
        self.assertError(response, 429, "broker overflow")
        assert_retry_after(self, response[1])
        d.publish_ok(subject, "c" * 100)       # 1000: exactly the limit
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "d"})
        self.assertError(response, 429, "broker overflow")
        d.publish_ok(subject, "")              # no bytes, and copies are far from their limit
        self.assertEqual(d.fetch(subject, first), ["a" * 400, "c" * 100, ""])
        self.assertEqual(d.fetch(subject, second), ["a" * 400, "c" * 100, ""])

    def test_bytes_are_counted_as_decoded_payload_bytes(self):
        d = self.start_daemon({"max_pending": 1000, "max_pending_bytes": 100})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "é" * 50)        # 100 bytes, 50 characters
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "x"})
        self.assertError(response, 429, "broker overflow")
        self.assertEqual(d.fetch(subject, subscriber), ["é" * 50])
        d.publish_ok(subject, "\u0000" * 100)  # 600 bytes escaped, 100 bytes of data
        self.assertEqual(d.fetch(subject, subscriber), ["\u0000" * 100])

    def test_fetch_frees_room_at_once(self):
        d = self.start_daemon({"max_pending": 3, "max_pending_bytes": 1000000})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        for text in ("1", "2", "3"):
            d.publish_ok(subject, text)
        self.assertEqual(d.publish(subject, "4")[0], 429)
        self.assertEqual(d.fetch(subject, subscriber), ["1", "2", "3"])
        for text in ("5", "6", "7"):
            d.publish_ok(subject, text)
        self.assertEqual(d.publish(subject, "8")[0], 429)
        self.assertEqual(d.fetch(subject, subscriber), ["5", "6", "7"])
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 0)

    def test_async_overflow_answers_ok_and_is_counted_as_async_failure(self):
        d = self.start_daemon({"max_pending": 1})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "fills the broker")
        response = d.request("POST", "/api/publish/async", {"subject": subject, "data": "overflows"})
        self.assertJsonReply(response, 200, {"status": "ok"})
        d.wait_metric("gophermq_async_failures_total", lambda value: value >= 1)
        self.assertEqual(d.fetch(subject, subscriber), ["fills the broker"])


class AsyncFailureTest(DaemonTestCase):
    def test_async_publish_without_subscriber_answers_ok_and_counts_failure(self):
        d = self.start_daemon({"pool_size": 2})
        self.assertEqual(d.metrics().value("gophermq_async_failures_total"), 0)
        response = d.request("POST", "/api/publish/async", {"subject": unique_subject(), "data": "lost"})
        self.assertJsonReply(response, 200, {"status": "ok"})
        value = d.wait_metric("gophermq_async_failures_total", lambda value: value >= 1)
        self.assertEqual(value, 1)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_messages_published_total"), 0)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="publish_async", code="200"), 1)

    def test_async_queue_full_is_503_and_every_accepted_message_arrives(self):
        # A one-slot queue flooded from 8 connections: whether any request
        # finds it full depends on timing, but every answer must be 200 or
        # 503 "async queue full", the 503s must be counted, and exactly the
        # 200s must be delivered.
        d = self.start_daemon({"pool_size": 1, "async_queue_size": 1, "max_pending": 1000000})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        accepted, rejected, errors = [], [], []

        def flood(number):
            try:
                with d.client() as client:
                    for sequence in range(100):
                        text = "%d:%d" % (number, sequence)
                        status, reply = d.publish(subject, text, client, path="/api/publish/async")
                        if status == 200 and reply == {"status": "ok"}:
                            accepted.append(text)
                        elif status == 503 and reply == {"message": "async queue full"}:
                            rejected.append(text)
                        else:
                            errors.append((status, reply))
            except Exception as error:
                errors.append(repr(error))

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(harness.scaled(60))
        self.assertEqual(errors, [])
        self.assertEqual(len(accepted) + len(rejected), 800)
        received = d.fetch_until(subject, subscriber, len(accepted))
        self.assertEqual(sorted(received), sorted(accepted))
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_async_rejected_total"), len(rejected))
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="publish_async", code="503")
                         or 0, len(rejected))
        self.assertEqual(metrics.value("gophermq_async_failures_total"), 0)
        print("\n  %d accepted, %d refused with 503" % (len(accepted), len(rejected)), end=" ", flush=True)


if __name__ == "__main__":
    harness.main()
