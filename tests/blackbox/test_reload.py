#!/usr/bin/env python3
"""test_reload.py - SIGHUP reloads the configuration file: live options
apply at once, restart-only options are reported, a broken file changes
nothing, and no message or subscriber is lost, even under load."""

import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, unique_subject  # noqa: E402

RELOADED = r"configuration reloaded from "
FAILED = r"reload failed"


class ReloadTest(DaemonTestCase):
    def reload(self, d, overrides, raw=None):
        """Rewrites d's config with overrides, sends SIGHUP and waits until
        the daemon logs that it reloaded that file."""
        pattern = RELOADED + re.escape(d.config_path)
        before = d.log_count(pattern)
        d.write_config(overrides, raw)
        d.signal(signal.SIGHUP)
        d.wait_for_log(pattern, count=before + 1)
        self.assertTrue(d.running(), "daemon exited on SIGHUP")

    def reload_broken(self, d, text):
        """Replaces d's config with text (or removes it when text is None),
        sends SIGHUP, waits for "reload failed" and returns the log lines
        written since the signal."""
        before_lines = len(d.log_lines())
        before = d.log_count(FAILED)
        if text is None:
            os.remove(d.config_path)
        else:
            d.write_config_text(text)
        d.signal(signal.SIGHUP)
        d.wait_for_log(FAILED, count=before + 1)
        self.assertTrue(d.running(), "daemon exited on a bad reload")
        d.wait_ready()
        return d.log_lines()[before_lines:]

    def assert_pending_limit(self, d, limit):
        """Exactly limit single-copy publishes fit into the empty broker."""
        subject = unique_subject("limit")
        subscriber = d.subscribe(subject)
        with d.client() as client:
            for number in range(limit):
                d.publish_ok(subject, str(number), client=client)
            response = d.request("POST", "/api/publish", {"subject": subject, "data": "over"}, client=client)
            self.assertError(response, 429, "broker overflow")
            self.assertEqual(d.fetch(subject, subscriber, client=client), [str(n) for n in range(limit)])

    def assert_single_process(self, d):
        """The daemon was not restarted or re-executed."""
        self.assertTrue(d.running())
        self.assertEqual(d.log_count(r"api listening on"), 1, "the daemon started its listener again")

    def test_sighup_lowers_max_pending_and_keeps_messages_and_subscribers(self):
        d = self.start_daemon({"max_pending": 100})
        pid = d.pid
        subject, other = unique_subject(), unique_subject()
        subscriber, other_subscriber = d.subscribe(subject), d.subscribe(other)
        for number in range(5):
            d.publish_ok(subject, "m%d" % number)
        self.reload(d, {"max_pending": 6})
        self.assertEqual(d.pid, pid)
        self.assert_single_process(d)
        d.publish_ok(subject, "m5")                      # 6 pending: the new limit
        response = d.request("POST", "/api/publish", {"subject": other, "data": "over"})
        self.assertError(response, 429, "broker overflow")
        self.assertEqual(d.fetch(subject, subscriber), ["m%d" % n for n in range(6)])
        self.assertEqual(d.fetch(other, other_subscriber), [])

        # A limit below what is pending keeps the messages but refuses more.
        for number in range(4):
            d.publish_ok(subject, "n%d" % number)
        self.reload(d, {"max_pending": 2})
        response = d.request("POST", "/api/publish", {"subject": subject, "data": "over"})
        self.assertError(response, 429, "broker overflow")
        self.assertEqual(d.fetch(subject, subscriber), ["n%d" % n for n in range(4)])
        self.assert_pending_limit(d, 2)

        self.reload(d, {"max_pending": 10})
        self.assert_pending_limit(d, 10)
        self.assert_single_process(d)

    def test_sighup_raises_and_lowers_max_pending_bytes(self):
        d = self.start_daemon({"max_pending": 1000, "max_pending_bytes": 100})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "a" * 80)
        self.assertEqual(d.publish(subject, "b" * 30)[0], 429)
        self.reload(d, {"max_pending": 1000, "max_pending_bytes": 200})
        d.publish_ok(subject, "b" * 30)
        self.reload(d, {"max_pending": 1000, "max_pending_bytes": 50})
        self.assertEqual(d.publish(subject, "c")[0], 429)
        self.assertEqual(d.fetch(subject, subscriber), ["a" * 80, "b" * 30])
        d.publish_ok(subject, "c" * 50)
        self.assertEqual(d.publish(subject, "d")[0], 429)

    def test_sighup_applies_message_size_and_subject_length(self):
        d = self.start_daemon({"max_message_size": 1000, "max_subject_length": 20})
        long_subject = "x" * 25
        small = unique_subject("s")[:20]
        subscriber = d.subscribe(small)
        self.assertError(d.request("POST", "/api/subscribe", {"subject": long_subject}),
                         400, "invalid subject")
        self.assertError(d.request("POST", "/api/publish", {"subject": small, "data": "y" * 1500}),
                         413, "message too large")
        self.reload(d, {"max_message_size": 2000, "max_subject_length": 30})
        long_subscriber = d.subscribe(long_subject)
        d.publish_ok(small, "y" * 1500)
        d.publish_ok(long_subject, "z")
        self.assertEqual(d.fetch(small, subscriber), ["y" * 1500])
        self.assertEqual(d.fetch(long_subject, long_subscriber), ["z"])
        d.publish_ok(long_subject, "sent before the limit came down")
        self.reload(d, {"max_message_size": 1000, "max_subject_length": 20})
        self.assertError(d.request("POST", "/api/publish", {"subject": small, "data": "y" * 1500}),
                         413, "message too large")
        self.assertError(d.request("POST", "/api/publish", {"subject": long_subject, "data": "z"}),
                         400, "invalid subject")
        self.assertError(d.request("POST", "/api/subscribe", {"subject": long_subject}),
                         400, "invalid subject")
        # What a subscriber of the longer subject was sent stays its own.
        self.assertEqual(d.fetch(long_subject, long_subscriber), ["sent before the limit came down"])
        self.assertError(d.request("POST", "/api/fetch", {"subject": long_subject, "id": subscriber}),
                         400, "invalid subject")

    def test_broken_config_on_sighup_keeps_the_old_configuration(self):
        d = self.start_daemon({"max_pending": 3})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "before")
        base = 'listen = "127.0.0.1"\nport = 0\nmetrics_listen = "127.0.0.1"\nmetrics_port = 0\n'
        cases = [
            ("syntax error", base + "max_pending = 100\nmax_pending = }\n", None),
            ("unknown option", base + "max_pending = 100\nno_such_option = 1\n", "no_such_option"),
            ("bad value", base + 'max_pending = 100\nlog_level = "loud"\n', "log_level"),
            ("negative value", base + "max_pending = -100\n", "max_pending"),
            ("missing file", None, None),
        ]
        for name, text, option in cases:
            with self.subTest(case=name):
                lines = self.reload_broken(d, text)
                failure = "\n".join(line for line in lines if re.search(FAILED, line))
                self.assertRegex(failure, r"\berror\b", "reload failure not logged as an error")
                if option is not None:
                    self.assertIn(option, "\n".join(lines), "the reason does not name the option")
                self.assert_single_process(d)
                # Still the old limit of 3 (1 message is already pending).
                other = unique_subject()
                other_subscriber = d.subscribe(other)
                d.publish_ok(other, "1")
                d.publish_ok(other, "2")
                self.assertEqual(d.publish(other, "3")[0], 429)
                self.assertEqual(d.fetch(other, other_subscriber), ["1", "2"])
        self.assertEqual(d.fetch(subject, subscriber), ["before"])
        # A good file afterwards is applied again.
        self.reload(d, {"max_pending": 5})
        self.assert_pending_limit(d, 5)

    def test_restart_only_change_is_logged_and_not_applied(self):
        d = self.start_daemon({"max_pending": 100})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "kept")
        old_port, old_metrics_port = d.api_port, d.metrics_port
        new_port, new_metrics_port = harness.free_port(), harness.free_port()
        before = d.log_count(r"needs restart")
        self.reload(d, {"port": new_port, "metrics_port": new_metrics_port, "max_pending": 7})
        lines = d.wait_for_log(r"needs restart", count=before + 1)
        self.assertRegex("\n".join(lines), r"\bport\b")
        self.assertRegex("\n".join(lines), r"\bmetrics_port\b")
        # Still on the old ports; the new ones are not listening.
        self.assertEqual((d.api_port, d.metrics_port), (old_port, old_metrics_port))
        d.wait_ready()
        self.assertEqual(d.metrics_request()[0], 200)
        for port in (new_port, new_metrics_port):
            with self.assertRaises(ConnectionRefusedError, msg="port %d is listening" % port):
                socket.create_connection(("127.0.0.1", port), timeout=harness.scaled(5)).close()
        # The live option in the same file was applied.
        self.assertEqual(d.fetch(subject, subscriber), ["kept"])
        self.assert_pending_limit(d, 7)
        self.assert_single_process(d)

    def test_log_level_change_applies(self):
        d = self.start_daemon({"log_level": "notice", "pool_size": 1})
        debug_line = r"^gophermqd: debug: "

        def async_failure(expected_total):
            response = d.request("POST", "/api/publish/async", {"subject": unique_subject(), "data": "x"})
            self.assertJsonReply(response, 200, {"status": "ok"})
            d.wait_metric("gophermq_async_failures_total", lambda value: value >= expected_total)

        async_failure(1)
        self.assertEqual(d.log_count(debug_line), 0, "debug lines at log_level notice")
        self.reload(d, {"log_level": "debug", "pool_size": 1})
        async_failure(2)
        d.wait_for_log(debug_line)
        self.reload(d, {"log_level": "notice", "pool_size": 1})
        time.sleep(0.2)
        count = d.log_count(debug_line)
        async_failure(3)
        time.sleep(0.2)
        self.assertEqual(d.log_count(debug_line), count, "debug lines after going back to notice")

    def test_pool_size_reload_resizes_the_async_workers(self):
        d = self.start_daemon({"pool_size": 2})
        self.assertEqual(d.metrics().value("gophermq_async_workers"), 2)
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        for size in (5, 1, 3):
            with self.subTest(pool_size=size):
                self.reload(d, {"pool_size": size})
                d.wait_metric("gophermq_async_workers", lambda value: value == size)
                texts = ["%d-%d" % (size, n) for n in range(10)]
                for text in texts:
                    response = d.request("POST", "/api/publish/async", {"subject": subject, "data": text})
                    self.assertJsonReply(response, 200, {"status": "ok"})
                self.assertEqual(sorted(d.fetch_until(subject, subscriber, len(texts))), sorted(texts))

    def test_sighup_with_unchanged_file_changes_nothing(self):
        d = self.start_daemon({"max_pending": 4})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "a")
        for _ in range(3):
            self.reload(d, {"max_pending": 4})
        self.assertEqual(d.log_count(r"needs restart"), 0)
        self.assertEqual(d.fetch(subject, subscriber), ["a"])
        self.assert_pending_limit(d, 4)

    def test_reload_under_load_loses_nothing(self):
        config = {"max_pending": 1000000, "max_pending_bytes": 1 << 30, "pool_size": 2,
                  "async_queue_size": 100000, "log_level": "info"}
        d = self.start_daemon(config)
        subject, async_subject = unique_subject("sync"), unique_subject("async")
        subscriber, async_subscriber = d.subscribe(subject), d.subscribe(async_subject)
        failures, received = [], []
        published, async_published = [0], [0]
        stop = threading.Event()

        def publisher():
            with d.client() as client:
                while not stop.is_set():
                    try:
                        status, reply = d.publish(subject, "m%d" % published[0], client)
                    except Exception as error:
                        failures.append(("publish", published[0], repr(error)))
                        return
                    if status != 200:
                        failures.append(("publish", published[0], status, reply))
                        return
                    published[0] += 1

        def async_publisher():
            with d.client() as client:
                while not stop.is_set() and async_published[0] < 3000:
                    try:
                        status, reply = d.publish(async_subject, "a%d" % async_published[0], client,
                                                  path="/api/publish/async")
                    except Exception as error:
                        failures.append(("async", repr(error)))
                        return
                    if status != 200:
                        failures.append(("async", status, reply))
                        return
                    async_published[0] += 1
                    time.sleep(0.001)

        def fetcher():
            with d.client() as client:
                while not stop.is_set():
                    try:
                        received.extend(d.fetch(subject, subscriber, client))
                    except Exception as error:
                        failures.append(("fetch", repr(error)))
                        return
                    time.sleep(0.005)

        threads = [threading.Thread(target=target, daemon=True)
                   for target in (publisher, async_publisher, fetcher)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + harness.WAIT_TIMEOUT
        while published[0] < 20 and time.monotonic() < deadline and not failures:
            time.sleep(0.02)
        for number in range(5):
            config.update({"max_pending": 1000000 + number, "pool_size": 1 + number % 3,
                           "async_queue_size": 100000 + number, "max_message_size": 65536 + number,
                           "log_level": ("notice", "info")[number % 2]})
            self.reload(d, config)
            time.sleep(0.1)
        time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(harness.scaled(30))
        self.assertFalse(any(thread.is_alive() for thread in threads), "a client thread hangs")
        self.assertEqual(failures, [])
        self.assertGreater(published[0], 0)
        received.extend(d.fetch(subject, subscriber))
        print("\n  %d sync and %d async publishes across 5 reloads"
              % (published[0], async_published[0]), end=" ", flush=True)
        self.assertEqual(len(received), published[0])
        self.assertTrue(received == ["m%d" % n for n in range(published[0])],
                        "messages lost, duplicated or reordered across reloads")
        async_received = d.fetch_until(async_subject, async_subscriber, async_published[0])
        self.assertEqual(sorted(async_received), sorted("a%d" % n for n in range(async_published[0])))
        self.assertEqual(d.fetch(async_subject, async_subscriber), [])
        self.assertEqual(d.log_count(FAILED), 0)
        self.assert_single_process(d)


if __name__ == "__main__":
    harness.main()
