"""benchhttp.py - the benchmarks' HTTP clients (Python 3 stdlib only).

  http_call / api_call   one control request on a fresh connection
  bulk_requests          many requests pipelined over a few keep-alive
                         connections (setup and loads: 10^6 subscribes or
                         publishes in seconds)
  Connection             one raw keep-alive HTTP/1.1 connection that sends
                         a request and reads its answer later, without
                         blocking: held fetches and the wake-up probe
  open_connections       many Connections at once (10,000 held fetches)
  EventStreams           many Server-Sent Event streams (GET /api/stream)
                         read by one epoll loop: events counted, and the
                         latency of those whose data carries a send time

Also the error type (BenchError) and the progress line of the whole kit.
"""

import http.client
import json
import re
import select
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


# ---------------------------------------------------------------------------
# Server-Sent Event streams
# ---------------------------------------------------------------------------
EVENT_MARK = b"\nevent: message\n"
# The data of a message stamped with its send time: "t" and CLOCK_MONOTONIC
# nanoseconds (the same clock in every process of the machine).
EVENT_STAMP = re.compile(rb'"data":"t(\d+)')


class _Stream:
    __slots__ = ("sock", "opened", "head", "raw", "text", "events")

    def __init__(self, sock):
        self.sock = sock
        self.opened = False      # the first comment (": open") arrived
        self.head = b""          # the response header while it arrives, then None
        self.raw = b""           # chunked body bytes not yet taken apart
        self.text = b""          # event text after the last complete event
        self.events = 0


class EventStreams:
    """Streams opened on Connections (one each; the connections are then
    the streams'), all read by poll(), one epoll loop.  The body is
    chunked: its framing's CRLFs never occur in the event text (SSE lines
    end in LF, and JSON escapes a CR), so a split on CRLF takes the chunks
    apart, whatever the chunk and read boundaries.  Other sockets may be
    watched in the same loop (watch)."""

    def __init__(self, connections, paths, timeout=30):
        self.poller = select.epoll()
        self.streams = []
        self.by_fd = {}
        self.watched = {}
        self.events = 0
        self.opened = 0
        for conn, path in zip(connections, paths):
            stream = _Stream(conn.sock)
            self.streams.append(stream)
            self.by_fd[conn.fileno()] = stream
            self.poller.register(conn.fileno(), select.EPOLLIN)
            conn.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                      b"\r\n" % path)
        deadline = time.monotonic() + timeout
        while self.opened < len(self.streams):
            if time.monotonic() > deadline:
                raise BenchError("%d of %d streams open after %d s"
                                 % (self.opened, len(self.streams), timeout))
            self.poll(0.1)

    def watch(self, sock, on_readable):
        """Calls on_readable() from poll() whenever sock has data."""
        self.watched[sock.fileno()] = on_readable
        self.poller.register(sock.fileno(), select.EPOLLIN)

    def unwatch(self, sock):
        del self.watched[sock.fileno()]
        self.poller.unregister(sock.fileno())

    def poll(self, timeout, latencies=None):
        """Reads what arrived within timeout seconds; returns the events it
        completed.  latencies: a list to which, for each event whose data
        starts with "t<ns>", arrival - ns is appended (ns; the arrival is
        the time just before the read that completed the event)."""
        completed = 0
        for fd, _ in self.poller.poll(timeout):
            stream = self.by_fd.get(fd)
            if stream is None:
                self.watched[fd]()
                continue
            now = time.monotonic_ns()
            data = read_some(stream.sock)
            if not data:
                raise BenchError("the server closed a stream")
            if stream.head is not None:
                data = self._header(stream, data)
                if not data:
                    continue
            raw = stream.raw + data if stream.raw else data
            pieces = raw.split(b"\r\n")
            if len(pieces) & 1:      # size, data, ..., size, data, start of the next
                stream.raw = pieces[-1]
                body = b"".join(pieces[1:-1:2])
            else:                    # ..., size, the chunk's data so far
                stream.raw = pieces[-2] + b"\r\n" + pieces[-1]
                body = b"".join(pieces[1:-2:2])
            if not body:
                continue
            text = stream.text + body if stream.text else body
            end = text.rfind(b"\n\n") + 2
            if end < 2:
                stream.text = text
                continue
            if end < len(text):
                stream.text = text[end:]
                text = text[:end]
            else:
                stream.text = b""
            if not stream.opened:
                stream.opened = True
                self.opened += 1
            count = text.count(EVENT_MARK)
            if not count:
                continue            # comments only: ": open", ": keepalive"
            stream.events += count
            completed += count
            if latencies is not None:
                latencies.extend(now - int(stamp) for stamp in EVENT_STAMP.findall(text))
        self.events += completed
        return completed

    @staticmethod
    def _header(stream, data):
        """Collects the response header; returns the body bytes after it."""
        stream.head += data
        end = stream.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, body = stream.head[:end], stream.head[end + 4:]
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            raise BenchError("stream answered %r" % (head + body)[:300])
        stream.head = None
        return body

    def counts(self):
        """Events received so far on each stream, in order."""
        return [stream.events for stream in self.streams]

    def close(self):
        self.poller.close()
        for stream in self.streams:
            stream.sock.close()
