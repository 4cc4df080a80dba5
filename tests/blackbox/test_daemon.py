#!/usr/bin/env python3
"""test_daemon.py - gophermqd as a program: command line, configuration
checking, metrics, readiness, graceful shutdown and subscriber expiry."""

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, SHUTDOWN_RE, run_cli, unique_subject  # noqa: E402

SHIPPED_CONFIG = os.path.join(harness.SRCDIR, "etc", "gophermq.conf")


def package_version():
    """The version configure.ac declares."""
    with open(os.path.join(harness.SRCDIR, "configure.ac"), encoding="utf-8") as handle:
        match = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", handle.read())
    return match.group(1)


def mentions_line(text, number):
    """True when text names line number (as "line 3" or "FILE:3")."""
    return re.search(r"(line\s*:?\s*%d\b|:%d\b)" % (number, number), text, re.IGNORECASE) is not None


class CommandLineTest(DaemonTestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="gophermq-cli-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def config_file(self, text, name="gophermq.conf"):
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def output(self, result):
        return result.stdout + result.stderr

    def test_check_accepts_the_shipped_config(self):
        self.assertTrue(os.path.isfile(SHIPPED_CONFIG), "%s is missing" % SHIPPED_CONFIG)
        result = run_cli(["-t", "-c", SHIPPED_CONFIG])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("gophermq.conf", self.output(result))

    def test_check_accepts_every_option_set(self):
        path = self.config_file(
            'listen = "127.0.0.1"\nport = 8082\nmetrics_listen = "::1"\nmetrics_port = 9001\n'
            "max_pending = 5000\nmax_pending_bytes = 1048576\nmax_message_size = 65536\n"
            "max_subject_length = 128\npool_size = 4\nasync_queue_size = 100\nhttp_threads = 2\n"
            "max_connections = 100\nconnection_timeout = 30\nsubscriber_ttl = 3600\n"
            'log_level = "debug"\n# a comment\n\n')
        result = run_cli(["-t", "-c", path])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn(path, self.output(result))

    def test_check_accepts_an_empty_config(self):
        path = self.config_file("")
        result = run_cli(["-t", "-c", path])
        self.assertEqual(result.returncode, 0, self.output(result))

    def test_check_rejects_an_unknown_option_naming_file_line_and_option(self):
        path = self.config_file("port = 8082\n\nno_such_option = 1\nmax_pending = 10\n")
        result = run_cli(["-t", "-c", path])
        text = self.output(result)
        self.assertEqual(result.returncode, 1, text)
        self.assertIn(path, text)
        self.assertIn("no_such_option", text)
        self.assertTrue(mentions_line(text, 3), "no line number 3 in %r" % text)

    def test_check_rejects_bad_values_naming_file_and_option(self):
        cases = (("port", "70000"), ("port", '"abc"'), ("metrics_port", "-5"),
                 ("max_pending", "-1"), ("log_level", '"loud"'),
                 ("max_subject_length", '"long"'), ("connection_timeout", "1.5x"),
                 ("listen", '"not-an-address"'))
        paths = [self.config_file("# bad value\n%s = %s\n" % (option, value), name="bad%d.conf" % number)
                 for number, (option, value) in enumerate(cases)]
        results = harness.run_cli_all(["-t", "-c", path] for path in paths)
        for (option, value), path, result in zip(cases, paths, results):
            with self.subTest(option=option, value=value):
                text = self.output(result)
                self.assertEqual(result.returncode, 1, text)
                self.assertIn(path, text)
                self.assertIn(option, text)

    def test_check_rejects_syntax_errors_naming_file_and_line(self):
        cases = (("port = 1\nmax_pending = }\n", 2), ("port = 1\n= 5\n", 2),
                 ('port = 1\n\nlisten = "127.0.0.1\n', None), ("max_pending = {\n", None))
        paths = [self.config_file(text, name="syntax%d.conf" % number)
                 for number, (text, _) in enumerate(cases)]
        results = harness.run_cli_all(["-t", "-c", path] for path in paths)
        for (text, line), path, result in zip(cases, paths, results):
            with self.subTest(config=text):
                output = self.output(result)
                self.assertEqual(result.returncode, 1, output)
                self.assertIn(path, output)
                if line is not None:
                    self.assertTrue(mentions_line(output, line), "no line number %d in %r" % (line, output))

    def test_missing_config_file_is_an_error(self):
        missing = os.path.join(self.directory, "does-not-exist.conf")
        for args in (["-t", "-c", missing], ["-f", "-c", missing]):
            with self.subTest(args=args):
                result = run_cli(args)
                self.assertEqual(result.returncode, 1, self.output(result))
                self.assertIn(missing, result.stderr)

    def test_invalid_config_prevents_start(self):
        path = self.config_file("port = 0\nmetrics_port = 0\nmax_pending = -1\n")
        result = run_cli(["-f", "-c", path])
        self.assertEqual(result.returncode, 1, self.output(result))
        self.assertIn("max_pending", result.stderr)

    def test_version_prints_version_and_exits_0(self):
        result = run_cli(["-V"])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn(package_version(), self.output(result))

    def test_help_prints_usage_and_exits_0(self):
        result = run_cli(["-h"])
        text = self.output(result)
        self.assertEqual(result.returncode, 0, text)
        self.assertRegex(text.lower(), "usage")
        for option in ("-c", "-f", "-t", "-V", "-h"):
            self.assertIn(option, text)

    def test_unknown_option_prints_usage_and_exits_1(self):
        for args in (["-Z"], ["--no-such-option"]):
            with self.subTest(args=args):
                result = run_cli(args)
                self.assertEqual(result.returncode, 1, self.output(result))
                self.assertRegex(result.stderr.lower(), "usage")

    def test_port_in_use_fails_to_start_with_a_message(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            port = blocker.getsockname()[1]
            path = self.config_file('listen = "127.0.0.1"\nport = %d\nmetrics_listen = "127.0.0.1"\n'
                                    "metrics_port = 0\n" % port)
            result = run_cli(["-f", "-c", path], timeout=harness.scaled(15))
        self.assertNotEqual(result.returncode, 0, self.output(result))
        self.assertIn(str(port), result.stderr)

    def test_second_daemon_on_the_same_ports_fails_to_start(self):
        # Two brokers sharing a port would each get part of the requests.
        running = self.start_daemon()
        for api_port, metrics_port in ((running.api_port, 0), (0, running.metrics_port)):
            with self.subTest(port=api_port, metrics_port=metrics_port):
                path = self.config_file('listen = "127.0.0.1"\nport = %d\nmetrics_listen = "127.0.0.1"\n'
                                        "metrics_port = %d\n" % (api_port, metrics_port))
                result = run_cli(["-f", "-c", path], timeout=harness.scaled(15))
                self.assertNotEqual(result.returncode, 0, self.output(result))
                self.assertIn("cannot listen", result.stderr)
        self.assertEqual(running.request("GET", "/ready")[0], 204)


# Every family the daemon exports, with its Prometheus type.
FAMILIES = {
    "gophermq_client_request_rate": "counter",
    "gophermq_request_duration_seconds": "histogram",
    "gophermq_messages_published_total": "counter",
    "gophermq_messages_delivered_total": "counter",
    "gophermq_pending_messages": "gauge",
    "gophermq_pending_bytes": "gauge",
    "gophermq_subscribers": "gauge",
    "gophermq_subjects": "gauge",
    "gophermq_overflows_total": "counter",
    "gophermq_async_queue_depth": "gauge",
    "gophermq_async_workers": "gauge",
    "gophermq_async_failures_total": "counter",
    "gophermq_async_rejected_total": "counter",
    "gophermq_subscribers_expired_total": "counter",
    "gophermq_build_info": "gauge",
}

UNLABELLED = [name for name in FAMILIES
              if name not in ("gophermq_client_request_rate", "gophermq_request_duration_seconds",
                              "gophermq_build_info")]


class MetricsTest(DaemonTestCase):
    def test_metrics_are_served_as_prometheus_text(self):
        d = self.start_daemon()
        status, headers, body = d.metrics_request()
        self.assertEqual(status, 200)
        self.assertTrue((headers.get("Content-Type") or "").startswith("text/plain; version=0.0.4"),
                        headers.get("Content-Type"))
        harness.Metrics(body.decode("utf-8"))   # parses

    def test_every_family_has_help_type_and_a_sample(self):
        d = self.start_daemon({"pool_size": 2})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "x")
        d.request("POST", "/api/publish/async", {"subject": subject, "data": "y"})
        d.fetch_until(subject, subscriber, 2)
        metrics = d.metrics()
        for name, kind in FAMILIES.items():
            with self.subTest(family=name):
                self.assertIn(name, metrics.help, "no # HELP line")
                self.assertTrue(metrics.help[name].strip(), "empty HELP text")
                self.assertEqual(metrics.types.get(name), kind)
        for name in UNLABELLED:
            with self.subTest(sample=name):
                self.assertIsNotNone(metrics.value(name), "no unlabelled sample")
        for method in ("publish", "publish_async", "subscribe", "fetch"):
            with self.subTest(method=method):
                self.assertGreaterEqual(
                    metrics.value("gophermq_client_request_rate", method=method, code="200"), 1)
                self.assertGreaterEqual(
                    metrics.value("gophermq_request_duration_seconds_count", method=method, code="200"), 1)

    def test_gauges_and_counters_start_at_zero(self):
        d = self.start_daemon({"pool_size": 3})
        metrics = d.metrics()
        for name in UNLABELLED:
            if name == "gophermq_async_workers":
                continue
            with self.subTest(name=name):
                self.assertEqual(metrics.value(name), 0)
        self.assertEqual(metrics.value("gophermq_async_workers"), 3)
        self.assertEqual(metrics.find("gophermq_client_request_rate", code="200"), [])

    def test_metrics_follow_broker_activity(self):
        d = self.start_daemon({"max_pending": 100})
        subject = unique_subject()
        first, second = d.subscribe(subject), d.subscribe(subject)
        for text in ("one", "two", "six"):
            d.publish_ok(subject, text)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_pending_messages"), 6)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 18)
        self.assertEqual(metrics.value("gophermq_subscribers"), 2)
        self.assertEqual(metrics.value("gophermq_subjects"), 1)
        self.assertEqual(metrics.value("gophermq_messages_published_total"), 3)
        self.assertEqual(metrics.value("gophermq_messages_delivered_total"), 0)

        self.assertEqual(d.fetch(subject, first), ["one", "two", "six"])
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_messages_delivered_total"), 3)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 3)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 9)

        d.subscribe(unique_subject())
        self.assertEqual(d.publish(unique_subject(), "nobody")[0], 404)
        self.assertEqual(d.request("POST", "/api/subscribe", {"subject": "a..b"})[0], 400)
        self.assertEqual(d.request("POST", "/api/fetch", {"subject": subject, "id": "nope"})[0], 404)
        self.assertEqual(d.fetch(subject, second), ["one", "two", "six"])
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_subjects"), 2)
        self.assertEqual(metrics.value("gophermq_subscribers"), 3)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_messages_delivered_total"), 6)
        self.assertEqual(metrics.value("gophermq_messages_published_total"), 3)
        rate = "gophermq_client_request_rate"
        self.assertEqual(metrics.value(rate, method="publish", code="200"), 3)
        self.assertEqual(metrics.value(rate, method="publish", code="404"), 1)
        self.assertEqual(metrics.value(rate, method="subscribe", code="200"), 3)
        self.assertEqual(metrics.value(rate, method="subscribe", code="400"), 1)
        self.assertEqual(metrics.value(rate, method="fetch", code="200"), 2)
        self.assertEqual(metrics.value(rate, method="fetch", code="404"), 1)
        self.assertEqual(metrics.total(rate), 11)
        self.assertEqual(metrics.total(rate, method="publish_async"), 0)

    def test_request_duration_histogram_is_consistent(self):
        d = self.start_daemon()
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        for number in range(5):
            d.publish_ok(subject, str(number))
        d.fetch(subject, subscriber)
        d.publish(unique_subject(), "x")
        metrics = d.metrics()
        name = "gophermq_request_duration_seconds"
        for method, code, count in (("publish", "200", 5), ("publish", "404", 1),
                                    ("subscribe", "200", 1), ("fetch", "200", 1)):
            with self.subTest(method=method, code=code):
                buckets = metrics.find(name + "_bucket", method=method, code=code)
                self.assertGreater(len(buckets), 1, "no buckets")
                bounds = sorted(((float(labels["le"]), value) for labels, value in buckets))
                self.assertEqual(bounds[-1][0], float("inf"), "no +Inf bucket")
                values = [value for _, value in bounds]
                self.assertEqual(values, sorted(values), "buckets are not cumulative")
                self.assertEqual(bounds[-1][1], count)
                self.assertEqual(metrics.value(name + "_count", method=method, code=code), count)
                self.assertEqual(
                    metrics.value("gophermq_client_request_rate", method=method, code=code), count)
                total = metrics.value(name + "_sum", method=method, code=code)
                self.assertIsNotNone(total)
                self.assertGreaterEqual(total, 0)

    def test_overflows_are_counted(self):
        d = self.start_daemon({"max_pending": 1})
        subject = unique_subject()
        d.subscribe(subject)
        d.publish_ok(subject, "fills")
        for _ in range(3):
            self.assertEqual(d.publish(subject, "refused")[0], 429)
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_overflows_total"), 3)
        self.assertEqual(metrics.value("gophermq_client_request_rate", method="publish", code="429"), 3)
        self.assertEqual(metrics.value("gophermq_messages_published_total"), 1)

    def test_build_info_carries_the_version(self):
        d = self.start_daemon()
        metrics = d.metrics()
        samples = metrics.find("gophermq_build_info")
        self.assertEqual(len(samples), 1, samples)
        labels, value = samples[0]
        self.assertEqual(value, 1)
        self.assertEqual(labels.get("version"), package_version())


class ShutdownTest(DaemonTestCase):
    def test_ready_answers_204_while_serving(self):
        d = self.start_daemon()
        subject = unique_subject()
        d.subscribe(subject)
        with d.client() as client:
            for _ in range(10):
                status, _, body = client.request("GET", "/ready")
                self.assertEqual((status, body), (204, b""))
                d.publish_ok(subject, "x", client=client)

    def test_sigterm_under_load_finishes_in_flight_requests_and_exits_0(self):
        d = self.start_daemon({"max_pending": 100000000, "max_pending_bytes": 1 << 32,
                               "pool_size": 2})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        threads_count = 8
        answered = [0] * threads_count
        unexpected = []
        signalled = threading.Event()
        give_up = threading.Event()

        def publisher(number):
            client = d.client(timeout=harness.scaled(20))
            try:
                while not give_up.is_set():
                    try:
                        status, reply = d.publish(subject, "p%d" % number, client)
                    except Exception:
                        return          # the connection failed: the daemon is going away
                    if status == 200:
                        answered[number] += 1
                    elif signalled.is_set() and status == 503:
                        return
                    else:
                        unexpected.append((number, status, reply, signalled.is_set()))
                        return
            finally:
                client.close()

        threads = [threading.Thread(target=publisher, args=(n,), daemon=True) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        deadline = time.monotonic() + harness.WAIT_TIMEOUT
        while sum(answered) < threads_count and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(unexpected, [])
        self.assertGreater(sum(answered), 0, "no publish succeeded before SIGTERM")
        signalled.set()
        d.signal(signal.SIGTERM)
        code = d.wait_exit(harness.STOP_TIMEOUT)
        give_up.set()
        if code is None:
            d.kill()
            self.fail("gophermqd did not exit within %s s of SIGTERM under load\n%s"
                      % (harness.STOP_TIMEOUT, d.log_tail()))
        for thread in threads:
            thread.join(harness.scaled(30))
        self.assertFalse(any(thread.is_alive() for thread in threads), "a publisher hangs")
        self.assertEqual(code, 0, d.log_tail())
        self.assertEqual(unexpected, [])
        summary = d.wait_for_log(SHUTDOWN_RE.pattern, timeout=1)[-1]
        published, delivered, pending = map(int, SHUTDOWN_RE.search(summary).groups())
        successes = sum(answered)
        print("\n  %d publishes answered 200 before SIGTERM took effect; daemon counted %d"
              % (successes, published), end=" ", flush=True)
        self.assertGreaterEqual(published, successes, "a publish answered 200 was not counted")
        self.assertLessEqual(published, successes + threads_count,
                             "more publishes stored than requests were in flight")
        self.assertEqual(delivered, 0)
        self.assertEqual(pending, published, "one subscriber: every published message is pending")
        self.assertTrue(subscriber)

    def test_sigint_exits_0_with_a_summary(self):
        d = self.start_daemon()
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "a")
        d.publish_ok(subject, "b")
        d.fetch(subject, subscriber)
        d.publish_ok(subject, "c")
        self.assertEqual(d.stop(signal.SIGINT), 0)
        summary = d.wait_for_log(SHUTDOWN_RE.pattern, timeout=1)[-1]
        self.assertEqual(SHUTDOWN_RE.search(summary).groups(), ("3", "2", "1"))
        self.assertIn("notice", summary)

    def test_shutdown_summary_counts_published_delivered_pending(self):
        d = self.start_daemon()
        subject = unique_subject()
        first, second = d.subscribe(subject), d.subscribe(subject)
        for text in ("1", "2", "3"):
            d.publish_ok(subject, text)
        self.assertEqual(d.publish(unique_subject(), "nobody")[0], 404)
        self.assertEqual(d.fetch(subject, first), ["1", "2", "3"])
        self.assertEqual(d.stop(), 0)
        summary = d.wait_for_log(SHUTDOWN_RE.pattern, timeout=1)[-1]
        self.assertEqual(SHUTDOWN_RE.search(summary).groups(), ("3", "3", "3"))
        self.assertTrue(second)

    def test_idle_and_silent_connections_do_not_delay_shutdown(self):
        d = self.start_daemon({"connection_timeout": 600})
        keep_alive = d.client()
        self.addCleanup(keep_alive.close)
        self.assertEqual(keep_alive.request("GET", "/ready")[0], 204)
        silent = socket.create_connection((d.api_host, d.api_port))
        self.addCleanup(silent.close)
        partial = socket.create_connection((d.api_host, d.api_port))
        self.addCleanup(partial.close)
        partial.sendall(b"POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        metrics = socket.create_connection((d.metrics_host, d.metrics_port))
        self.addCleanup(metrics.close)
        time.sleep(0.2)
        self.assertEqual(d.stop(), 0)   # within 5 s, exit code 0

    def test_sigterm_right_after_start_exits_0(self):
        d = self.start_daemon()
        self.assertEqual(d.stop(), 0)
        self.assertIsNotNone(SHUTDOWN_RE.search(d.log()), d.log_tail())
        self.assertEqual(SHUTDOWN_RE.search(d.log()).groups(), ("0", "0", "0"))


class ListenTest(DaemonTestCase):
    def test_ipv6_loopback_listeners_serve_api_and_metrics(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        d = self.start_daemon({"listen": "::1", "metrics_listen": "::1"})
        self.assertEqual((d.api_host, d.metrics_host), ("::1", "::1"))
        self.assertRegex(d.log(), r"api listening on \[::1\]:%d" % d.api_port)
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        d.publish_ok(subject, "over IPv6")
        self.assertEqual(d.fetch(subject, subscriber), ["over IPv6"])
        self.assertEqual(d.metrics().value("gophermq_messages_published_total"), 1)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", d.api_port), timeout=harness.scaled(5)).close()


class HttpThreadsTest(DaemonTestCase):
    THREADS_RE = r"api listening on \S+ with (\d+) HTTP threads?$"

    def threads_logged(self, daemon):
        match = re.search(self.THREADS_RE, daemon.log(), re.MULTILINE)
        self.assertIsNotNone(match, daemon.log_tail())
        return int(match.group(1))

    def test_default_is_one_thread_per_cpu_the_daemon_may_run_on(self):
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(allowed)})
        try:
            confined = self.start_daemon()
        finally:
            os.sched_setaffinity(0, allowed)
        self.assertEqual(self.threads_logged(confined), 1)
        # libmicrohttpd warns when asked for a "pool" of one thread.
        self.assertNotIn("warning", confined.log())
        self.assertEqual(self.threads_logged(self.start_daemon()), len(allowed))

    def test_configured_count_wins_over_the_cpus(self):
        self.assertEqual(self.threads_logged(self.start_daemon({"http_threads": 3})), 3)


class ExpiryTest(DaemonTestCase):
    def test_idle_subscriber_expires_after_ttl(self):
        d = self.start_daemon({"subscriber_ttl": 1})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        status, _ = d.publish(subject, "will be dropped")
        self.assertIn(status, (200, 404))   # 404 only if it already expired
        d.wait_metric("gophermq_subscribers_expired_total", lambda value: value >= 1,
                      timeout=harness.scaled(30))
        response = d.request("POST", "/api/fetch", {"subject": subject, "id": subscriber})
        self.assertError(response, 404, "bad id")
        metrics = d.metrics()
        self.assertEqual(metrics.value("gophermq_subscribers_expired_total"), 1)
        self.assertEqual(metrics.value("gophermq_subscribers"), 0)
        self.assertEqual(metrics.value("gophermq_subjects"), 0)
        self.assertEqual(metrics.value("gophermq_pending_messages"), 0)
        self.assertEqual(metrics.value("gophermq_pending_bytes"), 0)
        self.assertEqual(d.publish(subject, "nobody left")[0], 404)

    def test_subscribers_do_not_expire_without_ttl(self):
        d = self.start_daemon({"subscriber_ttl": 0})
        subject = unique_subject()
        subscriber = d.subscribe(subject)
        time.sleep(2.5)
        d.publish_ok(subject, "still here")
        self.assertEqual(d.fetch(subject, subscriber), ["still here"])
        self.assertEqual(d.metrics().value("gophermq_subscribers_expired_total"), 0)


if __name__ == "__main__":
    harness.main()
