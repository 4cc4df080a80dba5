#!/usr/bin/env python3
"""test_auth.py - bearer-token access control and TLS.

With auth_token_file set, every API request but GET /ready needs a valid
"Authorization: Bearer" token and is refused with 401, changing nothing,
without one; the metrics port has its own token file.  Token files that
others can read are refused at start and on reload, and a reload picks up
a changed token file.  With tls_cert_file/tls_key_file the API speaks
HTTPS."""

import http.client
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, Daemon, unique_subject  # noqa: E402

GOOD = "s3cret-token-for-tests"
OTHER = "second-valid-token"
METRICS_TOKEN = "metrics-only-token"
UNAUTHORIZED = {"message": "unauthorized"}


def write_token_file(directory, name, lines, mode=0o600):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, mode)
    return path


def bearer(token):
    return {"Authorization": "Bearer " + token}


class AuthTest(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp(prefix="gophermq-auth-")
        cls.api_tokens = write_token_file(cls.directory, "api.tokens",
                                          ["# API clients", "", GOOD, "  " + OTHER + "  "])
        cls.metrics_tokens = write_token_file(cls.directory, "metrics.tokens", [METRICS_TOKEN])
        cls.d = cls.start_class_daemon({"auth_token_file": cls.api_tokens,
                                        "metrics_auth_token_file": cls.metrics_tokens})

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def call(self, path, body, token=None, header=None):
        headers = dict(header or {})
        if token is not None:
            headers.update(bearer(token))
        status, _, reply = self.d.post_json(path, body, headers=headers)
        return status, reply

    def test_requests_without_a_valid_token_are_401_and_change_nothing(self):
        subject = unique_subject()
        status, reply = self.call("/api/subscribe", {"subject": subject}, GOOD)
        self.assertEqual(status, 200)
        subscriber = reply["id"]
        published_before = self.d.metrics_value_with_token("gophermq_messages_published_total")
        bad_headers = [None, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"},
                       {"Authorization": "Basic " + GOOD}, {"Authorization": GOOD},
                       {"Authorization": "Bearer " + GOOD + "x"}, {"Authorization": "Bearer " + GOOD[:-1]},
                       {"Authorization": "Bearer " + METRICS_TOKEN}]
        requests = [("/api/subscribe", {"subject": subject}),
                    ("/api/publish", {"subject": subject, "data": "x"}),
                    ("/api/publish/async", {"subject": subject, "data": "x"}),
                    ("/api/fetch", {"subject": subject, "id": subscriber}),
                    ("/api/nowhere", {})]
        for header in bad_headers:
            for path, body in requests:
                with self.subTest(header=header, path=path):
                    status, reply = self.call(path, body, header=header)
                    self.assertEqual((status, reply), (401, UNAUTHORIZED))
        _, headers, _ = self.d.request("POST", "/api/publish", {"subject": subject, "data": "x"})
        self.assertIn("Bearer", headers.get("WWW-Authenticate", ""))
        # Nothing was published or consumed by the refused requests.
        self.assertEqual(self.d.metrics_value_with_token("gophermq_messages_published_total"),
                         published_before)
        status, reply = self.call("/api/fetch", {"subject": subject, "id": subscriber}, GOOD)
        self.assertEqual((status, reply["data"]), (200, []))

    def test_every_listed_token_works_for_every_endpoint(self):
        for token in (GOOD, OTHER):
            with self.subTest(token=token):
                subject = unique_subject()
                status, reply = self.call("/api/subscribe", {"subject": subject}, token)
                self.assertEqual(status, 200)
                subscriber = reply["id"]
                self.assertEqual(self.call("/api/publish", {"subject": subject, "data": "1"}, token),
                                 (200, {"status": "ok"}))
                self.assertEqual(self.call("/api/publish/async", {"subject": subject, "data": "2"}, token),
                                 (200, {"status": "ok"}))
                received = []
                for _ in range(200):
                    status, reply = self.call("/api/fetch", {"subject": subject, "id": subscriber}, token)
                    self.assertEqual(status, 200)
                    received += reply["data"]
                    if len(received) == 2:
                        break
                self.assertEqual(received, ["1", "2"])

    def test_ready_stays_open_for_health_checks(self):
        status, _, _ = self.d.request("GET", "/ready")
        self.assertEqual(status, 204)

    def test_metrics_need_their_own_token(self):
        for headers in (None, bearer("wrong"), bearer(GOOD)):
            with self.subTest(headers=headers):
                client = harness.Client(self.d.metrics_host, self.d.metrics_port)
                try:
                    status, _, body = client.request("GET", "/metrics", headers=headers)
                finally:
                    client.close()
                self.assertEqual(status, 401, body[:200])
        client = harness.Client(self.d.metrics_host, self.d.metrics_port)
        try:
            status, _, body = client.request("GET", "/metrics", headers=bearer(METRICS_TOKEN))
        finally:
            client.close()
        self.assertEqual(status, 200)
        self.assertIn(b"gophermq_unauthorized_requests_total", body)


def metrics_value_with_token(daemon, name):
    client = harness.Client(daemon.metrics_host, daemon.metrics_port)
    try:
        status, _, body = client.request("GET", "/metrics", headers=bearer(METRICS_TOKEN))
    finally:
        client.close()
    assert status == 200, status
    return harness.Metrics(body.decode("utf-8")).value(name)


Daemon.metrics_value_with_token = metrics_value_with_token


class TokenFileTest(DaemonTestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="gophermq-auth-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def test_token_file_readable_by_others_is_refused_at_start(self):
        path = write_token_file(self.directory, "open.tokens", [GOOD], mode=0o644)
        config = os.path.join(self.directory, "gophermq.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write('port = 0\nmetrics_port = 0\nauth_token_file = "%s"\n' % path)
        result = harness.run_cli(["-f", "-c", config], timeout=harness.scaled(20))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("accessible by others", result.stderr)
        self.assertIn(path, result.stderr)

    def test_empty_or_missing_token_file_is_refused_at_start(self):
        empty = write_token_file(self.directory, "empty.tokens", ["# nothing yet"])
        for path in (empty, os.path.join(self.directory, "missing.tokens")):
            with self.subTest(path=path):
                config = os.path.join(self.directory, "gophermq.conf")
                with open(config, "w", encoding="utf-8") as handle:
                    handle.write('port = 0\nmetrics_port = 0\nauth_token_file = "%s"\n' % path)
                result = harness.run_cli(["-f", "-c", config], timeout=harness.scaled(20))
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn(path, result.stderr)

    def test_reload_applies_new_tokens_and_refuses_an_open_file(self):
        path = write_token_file(self.directory, "api.tokens", [GOOD])
        d = self.start_daemon({"auth_token_file": path})
        subject = unique_subject()
        self.assertEqual(d.post_json("/api/subscribe", {"subject": subject}, headers=bearer(GOOD))[0], 200)

        # Rotate the token: the new one works, the old one no longer does.
        write_token_file(self.directory, "api.tokens", [OTHER])
        before = d.log_count("configuration reloaded from ")
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded from ", count=before + 1)
        self.assertEqual(d.post_json("/api/subscribe", {"subject": subject}, headers=bearer(OTHER))[0], 200)
        self.assertEqual(d.post_json("/api/subscribe", {"subject": subject}, headers=bearer(GOOD))[0], 401)

        # A token file others can read is refused; the old tokens stay.
        os.chmod(path, 0o644)
        before = d.log_count("reload failed")
        d.signal(signal.SIGHUP)
        d.wait_for_log("reload failed", count=before + 1)
        self.assertTrue(any("accessible by others" in line for line in d.log_lines()))
        self.assertEqual(d.post_json("/api/subscribe", {"subject": subject}, headers=bearer(OTHER))[0], 200)

        # Switching auth off by reload opens the API.
        os.chmod(path, 0o600)
        d.write_config({"auth_token_file": ""})
        before = d.log_count("configuration reloaded from ")
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded from ", count=before + 1)
        self.assertEqual(d.post_json("/api/subscribe", {"subject": subject})[0], 200)


@__import__("unittest").skipIf(shutil.which("openssl") is None, "openssl is not installed")
class TlsTest(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp(prefix="gophermq-tls-")
        cls.cert, cls.key = harness.self_signed_certificate(cls.directory)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def https(self, d, method, path, body=None):
        context = ssl.create_default_context(cafile=self.cert)
        context.check_hostname = False
        connection = http.client.HTTPSConnection(d.api_host, d.api_port, context=context,
                                                 timeout=harness.scaled(10))
        try:
            headers = {"Content-Type": "application/json"}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def test_api_speaks_https_with_the_configured_certificate(self):
        d = Daemon({"tls_cert_file": self.cert, "tls_key_file": self.key}, owner=self.id(), start=False)
        self.addCleanup(d.close)
        # The harness's readiness probe speaks plain HTTP; wait for the log
        # lines instead and probe over TLS.
        d.wait_ready = lambda timeout=None: None
        d.start()
        self.assertTrue(re.search(r"api listening on \S+ \(TLS\)", d.log()))
        status, _ = self.https(d, "GET", "/ready")
        self.assertEqual(status, 204)
        subject = unique_subject()
        status, body = self.https(d, "POST", "/api/subscribe", '{"subject":"%s"}' % subject)
        self.assertEqual(status, 200, body)
        status, body = self.https(d, "POST", "/api/publish", '{"subject":"%s","data":"over tls"}' % subject)
        self.assertEqual((status, body), (200, b'{"status":"ok"}\n'))

    def test_unreadable_certificate_is_refused_at_start(self):
        config = os.path.join(self.directory, "bad.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write('port = 0\nmetrics_port = 0\ntls_cert_file = "%s"\ntls_key_file = "%s"\n'
                         % (os.path.join(self.directory, "missing.pem"), self.key))
        result = harness.run_cli(["-f", "-c", config], timeout=harness.scaled(20))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("tls_cert_file", result.stderr)


if __name__ == "__main__":
    harness.main()
