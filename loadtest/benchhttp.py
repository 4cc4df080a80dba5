"""benchhttp.py - the benchmarks' HTTP clients (Python 3 stdlib only).

  http_call / api_call   one control request on a fresh connection
  bulk_requests          many requests pipelined over a few keep-alive
                         connections (setup and loads: 10^6 subscribes or
                         publishes in seconds)
  Connection             one raw keep-alive HTTP/1.1 connection that sends
                         a request and reads its answer later, without
                         blocking: held fetches and the wake-up probe
  open_connections       many Connections at once (10,000 held fetches)

Also the error type (BenchError) and the progress line of the whole kit.
"""

import http.client
import json
import re
import selectors
import socket
import sys
import threading
import time

START = time.monotonic()


class BenchError(Exception):
    pass


# Reads go into a buffer kept per thread: recv(n) allocates n bytes first,
# and at 1 MiB that is an mmap and a munmap per read (~0.25 ms, more than a
# request costs the server).
_read_buffers = threading.local()


def read_some(sock):
    """What sock has to read (b"" at its end), at most 256 KiB; raises
    BlockingIOError when a non-blocking sock has nothing."""
    view = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(1 << 18))
    return bytes(view[:sock.recv_into(view)])


def progress(message):
    print("[%7.1fs] %s" % (time.monotonic() - START, message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# control requests
# ---------------------------------------------------------------------------
def http_call(port, method, path, body=None, timeout=120):
    """One request on a fresh connection; returns (status, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def api_call(port, path, body, expect=200):
    status, data = http_call(port, "POST", path, body)
    if status != expect:
        raise BenchError("POST %s %s -> %d %s" % (path, json.dumps(body)[:200], status,
                                                  data[:200]))
    return json.loads(data) if data else None


def post_request(path, body):
    """The bytes of one POST with a JSON body (path and body: bytes)."""
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body))


def payload_of(size):
    pattern = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return (pattern * (size // len(pattern) + 1))[:size]


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def parse_response(buffer, position=0):
    """(status, body start, body end) of the complete response at position
    of buffer, or None while it is incomplete."""
    header_end = buffer.find(b"\r\n\r\n", position)
    if header_end < 0:
        return None
    head = bytes(buffer[position:header_end])
    match = CONTENT_LENGTH.search(head)
    if match is None:
        raise BenchError("response without Content-Length: %r" % head[:200])
    body_start = header_end + 4
    body_end = body_start + int(match.group(1))
    if len(buffer) < body_end:
        return None
    return int(head[9:12]), body_start, body_end


# ---------------------------------------------------------------------------
# pipelined bulk requests
# ---------------------------------------------------------------------------
class _PipelinedConnection:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.outgoing = bytearray()
        self.inflight = []       # request numbers, oldest first
        self.inflight_head = 0
        self.incoming = bytearray()
        self.writing = False


def bulk_requests(port, make_request, count, connections=4, window=128,
                  collect=False, deadline=None, what="requests", on_body=None):
    """Sends make_request(i) for i in range(count), pipelined on keep-alive
    connections (at most `window` unanswered per connection).  Returns
    (statuses: {status: n}, bodies: list when collect is set, else None);
    on_body(i, status, body), when given, sees every answer."""
    statuses = {}
    bodies = [None] * count if collect else None
    conns = [_PipelinedConnection(port) for _ in range(min(connections, max(count, 1)))]
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    next_request = 0
    answered = 0
    last_report = time.monotonic()
    try:
        while answered < count:
            for conn in conns:
                outstanding = len(conn.inflight) - conn.inflight_head
                if next_request < count and outstanding <= window // 2:
                    end = min(count, next_request + window - outstanding)
                    conn.outgoing += b"".join(make_request(i) for i in range(next_request, end))
                    conn.inflight.extend(range(next_request, end))
                    next_request = end
                want_write = bool(conn.outgoing)
                if want_write != conn.writing:
                    conn.writing = want_write
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
                    selector.modify(conn.sock, events, conn)
            for key, mask in selector.select(timeout=1.0):
                conn = key.data
                if mask & selectors.EVENT_WRITE and conn.outgoing:
                    try:
                        sent = conn.sock.send(conn.outgoing)
                        del conn.outgoing[:sent]
                    except BlockingIOError:
                        pass
                if mask & selectors.EVENT_READ:
                    try:
                        data = read_some(conn.sock)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise BenchError("server closed a pipelined connection after %d of %d %s"
                                         % (answered, count, what))
                    conn.incoming += data
                    answered += _parse_responses(conn, statuses, bodies, on_body)
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise BenchError("too slow: %d of %d %s answered before the deadline"
                                 % (answered, count, what))
            if now - last_report > 10:
                progress("  %d of %d %s answered" % (answered, count, what))
                last_report = now
    finally:
        selector.close()
        for conn in conns:
            conn.sock.close()
    return statuses, bodies


def _parse_responses(conn, statuses, bodies, on_body):
    buffer = conn.incoming
    position = 0
    parsed = 0
    while True:
        response = parse_response(buffer, position)
        if response is None:
            break
        status, body_start, body_end = response
        statuses[status] = statuses.get(status, 0) + 1
        number = conn.inflight[conn.inflight_head]
        conn.inflight_head += 1
        if bodies is not None or on_body is not None:
            body = bytes(buffer[body_start:body_end])
            if bodies is not None:
                bodies[number] = body
            if on_body is not None:
                on_body(number, status, body)
        position = body_end
        parsed += 1
    if position:
        del buffer[:position]
    if conn.inflight_head > 100000:
        del conn.inflight[:conn.inflight_head]
        conn.inflight_head = 0
    return parsed


def subscribe_many(port, subjects, deadline=None, collect=True, options=b""):
    """Subscribes once to each subject (a list, or a pair (function i ->
    subject, count)); returns the ids in order when collect is set.
    options: more JSON members for every subscribe, e.g. b',"ack":true'."""
    if callable(subjects[0]):
        make_subject, count = subjects
    else:
        count = len(subjects)
        make_subject = subjects.__getitem__
    statuses, bodies = bulk_requests(
        port, lambda i: post_request(b"/api/subscribe", b'{"subject":"%s"%s}'
                                     % (make_subject(i).encode(), options)),
        count, collect=collect, deadline=deadline, what="subscribes")
    if statuses.get(200, 0) != count:
        raise BenchError("subscribe: expected %d x 200, got %s" % (count, statuses))
    if collect:
        return [json.loads(body)["id"] for body in bodies]
    return None


def publish_many(port, subject, payload, count, deadline=None):
    body = b'{"subject":"%s","data":"%s"}' % (subject.encode(), payload.encode())
    request = post_request(b"/api/publish", body)
    statuses, _ = bulk_requests(port, lambda i: request, count, deadline=deadline,
                                what="publishes")
    return statuses


def drain(port, subject, ids, batch=None):
    """Fetches every subscriber empty; returns how many messages came back.
    batch: fetch at most that many per request (the `max` of issue 11)."""
    total = 0
    for subscriber in ids:
        while True:
            request = {"subject": subject, "id": subscriber}
            if batch:
                request["max"] = batch
            result = api_call(port, "/api/fetch", request)
            got = len(result["data"]) if "data" in result else len(result["messages"])
            total += got
            if not batch or got < batch:
                break
    return total


# ---------------------------------------------------------------------------
# raw keep-alive connections: held fetches and the wake-up probe
# ---------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection: send() a request, then poll()
    or wait() for its answer; answers are (status, body, monotonic ns of
    their arrival)."""

    def __init__(self, port, blocking_connect=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if blocking_connect:
            self.sock.connect(("127.0.0.1", port))
            self.sock.setblocking(False)
        else:
            self.sock.setblocking(False)
            self.sock.connect_ex(("127.0.0.1", port))
        self.incoming = bytearray()
        self.answers = []

    def fileno(self):
        return self.sock.fileno()

    def send(self, request):
        """Sends all of request (blocking until the kernel took it)."""
        view = memoryview(request)
        while view:
            try:
                sent = self.sock.send(view)
                view = view[sent:]
            except BlockingIOError:
                _wait_writable(self.sock)

    def receive(self):
        """Reads what has arrived; returns the number of complete answers
        now waiting in self.answers.  Raises BenchError when the server
        closed the connection."""
        now = time.monotonic_ns()
        try:
            data = read_some(self.sock)
        except BlockingIOError:
            return len(self.answers)
        if not data:
            raise BenchError("the server closed a connection")
        self.incoming += data
        while True:
            response = parse_response(self.incoming)
            if response is None:
                break
            status, start, end = response
            self.answers.append((status, bytes(self.incoming[start:end]), now))
            del self.incoming[:end]
        return len(self.answers)

    def close(self):
        self.sock.close()


def _wait_writable(sock):
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        selector.select(5)


def wait_answers(connections, timeout=10):
    """Waits until every connection in the list has an answer; returns
    them in order (the first answer of each, taken off its list)."""
    deadline = time.monotonic() + timeout
    waiting = 0
    with selectors.DefaultSelector() as selector:
        for conn in connections:
            if not conn.answers:
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                waiting += 1
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("%d answers still missing after %s s" % (waiting, timeout))
            for key, _ in selector.select(left):
                conn = key.data
                if conn.receive():
                    selector.unregister(conn.sock)
                    waiting -= 1
    return [conn.answers.pop(0) for conn in connections]


def open_connections(port, count, batch=200):
    """count Connections, opened batch at a time (so the listen backlog
    never overflows), each established before it is returned."""
    connections = []
    while len(connections) < count:
        group = [Connection(port, blocking_connect=False)
                 for _ in range(min(batch, count - len(connections)))]
        with selectors.DefaultSelector() as selector:
            for conn in group:
                selector.register(conn.sock, selectors.EVENT_WRITE, conn)
            pending = set(group)
            deadline = time.monotonic() + 30
            while pending:
                if time.monotonic() > deadline:
                    raise BenchError("%d connections not established in 30 s" % len(pending))
                for key, _ in selector.select(1.0):
                    conn = key.data
                    error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise BenchError("connect failed: %s" % error)
                    selector.unregister(conn.sock)
                    pending.discard(conn)
        connections.extend(group)
    return connections


def request_on_all(connections, make_request, wait=True, timeout=60):
    """Sends make_request(i) on connection i; with wait, waits for every
    answer and returns the status counts."""
    for number, conn in enumerate(connections):
        conn.send(make_request(number))
    if not wait:
        return None
    statuses = {}
    for status, _, _ in wait_answers(connections, timeout):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses
