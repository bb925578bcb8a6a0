#!/usr/bin/env python3
"""natsreq.py - a minimal NATS client for the fault tests (no packages).

Enough of the NATS text protocol (INFO, CONNECT, PING/PONG, SUB, PUB, HPUB,
MSG, HMSG) to talk to JetStream's API and publish to streams, so that the
harness needs nothing but python3: the machine has no `nats` CLI.

  natsreq.py [--servers URLS] [--timeout S] req SUBJECT [DATA]
      One request; prints the reply's payload.  Exit 0; 1 on a timeout
      or when no server could be reached; 2 on "no responders" (503).
  natsreq.py [--servers URLS] [--timeout S] js-pub SUBJECT COUNT
             [--id-prefix P] [--deadline S] [--data D]
      Publishes COUNT messages to a stream one at a time (request, wait
      for the PubAck), message k with Nats-Msg-Id P<k>; a message that
      gets no ack (timeout, no responders, JetStream error, connection
      lost) is sent again, on a new connection to the next server, until
      --deadline (default 30 s).  Prints one JSON line: {"ok": n,
      "duplicates": n, "retries": n, "errors": {"text": n}, "seconds": s,
      "max_stall": s}; exit 0 when all COUNT were acked, else 1.

URLS are comma-separated nats://host:port (default $CLUSTER_URLS or
$NATS_URL); they are tried in order until one connects.
"""
import json
import os
import socket
import sys
import time


class NatsError(Exception):
    pass


class Conn:
    """One connection to the first server of `urls` that answers."""

    def __init__(self, urls, timeout=2.0, start=0):
        self.sock = None
        self.buf = b""
        self.sid = 0
        self.url = None
        last = None
        n = len(urls)
        for k in range(n):
            url = urls[(start + k) % n]
            hp = url.split("://")[-1].rsplit("@", 1)[-1]
            host, port = hp.rsplit(":", 1)
            try:
                s = socket.create_connection((host, int(port)), timeout)
                s.settimeout(timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = s
                self.buf = b""
                line = self._line()
                if not line.startswith(b"INFO "):
                    raise NatsError("unexpected greeting %r" % line[:40])
                self._send(b'CONNECT {"verbose":false,"pedantic":false,'
                           b'"headers":true,"no_responders":true,'
                           b'"protocol":1,"name":"natsreq"}\r\nPING\r\n')
                while True:
                    line = self._line()
                    if line == b"PONG":
                        break
                    if line.startswith(b"-ERR"):
                        raise NatsError(line.decode())
                self.url = url
                self.index = (start + k) % n
                return
            except (OSError, NatsError) as e:
                last = e
                if self.sock:
                    self.sock.close()
                self.sock = None
        raise NatsError("no server available: %s" % last)

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _send(self, b):
        self.sock.sendall(b)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise NatsError("connection closed by the server")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n + 2:]
        return d

    def subscribe(self, subject):
        self.sid += 1
        self._send(b"SUB %s %d\r\n" % (subject.encode(), self.sid))
        return self.sid

    def publish(self, subject, data=b"", reply=None, headers=None):
        r = (b" " + reply.encode()) if reply else b""
        if headers:
            h = b"NATS/1.0\r\n" + b"".join(
                b"%s: %s\r\n" % (k.encode(), v.encode())
                for k, v in headers.items()) + b"\r\n"
            self._send(b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
                subject.encode(), r, len(h), len(h) + len(data), h, data))
        else:
            self._send(b"PUB %s%s %d\r\n%s\r\n" % (subject.encode(), r,
                                                   len(data), data))

    def next_msg(self, timeout):
        """(subject, status, headers, payload) of the next message; None on
        a timeout.  status is the header line's code ("503"), or ""."""
        m = self.next_msg_reply(timeout)
        return None if m is None else (m[0], m[2], m[3], m[4])

    def next_msg_reply(self, timeout):
        """(subject, reply, status, headers, payload) of the next message:
        next_msg with its reply subject ("" when none), to ack it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                line = self._line()
            except socket.timeout:
                return None
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode())
            parts = line.split()
            if not parts or parts[0] not in (b"MSG", b"HMSG"):
                continue  # +OK, PONG, INFO updates
            self.sock.settimeout(max(left, 1.0))
            hdr = parts[0] == b"HMSG"
            reply = parts[3].decode() if len(parts) == (6 if hdr else 5) else ""
            if not hdr:
                data = self._bytes(int(parts[-1]))
                return parts[1].decode(), reply, "", {}, data
            hlen, tlen = int(parts[-2]), int(parts[-1])
            raw = self._bytes(tlen)
            hdr, data = raw[:hlen], raw[hlen:]
            lines = hdr.decode(errors="replace").split("\r\n")
            status = lines[0][len("NATS/1.0"):].strip().split(" ")[0]
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip()] = v.strip()
            return parts[1].decode(), reply, status, headers, data

    def request(self, subject, data=b"", timeout=2.0, headers=None):
        """(subject, status, headers, payload) of the reply; raises
        TimeoutError.  One inbox subscription per connection; a late reply
        to an earlier request is skipped."""
        if not getattr(self, "inbox", None):
            self.inbox = "_INBOX.natsreq.%d.%d" % (os.getpid(), id(self))
            self.subscribe(self.inbox + ".*")
            self.nreq = 0
        self.nreq += 1
        reply = "%s.%d" % (self.inbox, self.nreq)
        self.publish(subject, data, reply, headers)
        deadline = time.monotonic() + timeout
        while True:
            m = self.next_msg(deadline - time.monotonic())
            if m is None:
                raise TimeoutError("no reply to %s within %.1f s"
                                   % (subject, timeout))
            if m[0] == reply:
                return m


def servers(arg):
    s = arg or os.environ.get("CLUSTER_URLS") or os.environ.get("NATS_URL")
    if not s:
        sys.exit("natsreq: no servers (--servers, $CLUSTER_URLS, $NATS_URL)")
    return [u for u in s.split(",") if u]


def cmd_req(urls, timeout, subject, data):
    try:
        c = Conn(urls, timeout)
    except NatsError as e:
        print("natsreq: %s" % e, file=sys.stderr)
        return 1
    try:
        _, status, _, payload = c.request(subject, data.encode(), timeout)
    except TimeoutError as e:
        print("natsreq: %s" % e, file=sys.stderr)
        return 1
    if status == "503":
        print("natsreq: no responders on %s" % subject, file=sys.stderr)
        return 2
    sys.stdout.write(payload.decode(errors="replace") + "\n")
    return 0


def cmd_js_pub(urls, timeout, subject, count, prefix, deadline_s, data):
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    ok = dups = retries = 0
    errors = {}
    max_stall = 0.0
    c = None
    start = 0
    k = 1
    last_ack = t0
    while k <= count and time.monotonic() < deadline:
        err = None
        try:
            if c is None:
                c = Conn(urls, timeout, start)
            _, status, _, payload = c.request(
                subject, data.encode(), timeout,
                {"Nats-Msg-Id": "%s%d" % (prefix, k)})
            if status == "503":
                err = "no responders"
            else:
                ack = json.loads(payload or b"{}")
                if "error" in ack:
                    err = "%s (%s)" % (ack["error"].get("description"),
                                      ack["error"].get("err_code"))
                elif "seq" not in ack:
                    err = "bad ack %r" % payload[:60]
                else:
                    ok += 1
                    dups += 1 if ack.get("duplicate") else 0
                    now = time.monotonic()
                    max_stall = max(max_stall, now - last_ack)
                    last_ack = now
                    k += 1
                    continue
        except TimeoutError:
            err = "timeout"
        except (OSError, NatsError) as e:
            err = "connection: %s" % e
        errors[err] = errors.get(err, 0) + 1
        retries += 1
        if err.startswith("connection") or err == "timeout":
            if c is not None:
                start = c.index + 1  # the next server
                c.close()
            c = None
        time.sleep(0.05)
    if c is not None:
        c.close()
    print(json.dumps({"ok": ok, "duplicates": dups, "retries": retries,
                      "errors": errors,
                      "seconds": round(time.monotonic() - t0, 3),
                      "max_stall": round(max_stall, 3)}))
    return 0 if ok == count else 1


def main(argv):
    urls_arg = None
    timeout = 2.0
    while argv and argv[0].startswith("--"):
        if argv[0] == "--servers":
            urls_arg = argv[1]
        elif argv[0] == "--timeout":
            timeout = float(argv[1])
        else:
            sys.exit("natsreq: unknown option %s" % argv[0])
        argv = argv[2:]
    if not argv:
        sys.exit(__doc__)
    urls = servers(urls_arg)
    if argv[0] == "req" and len(argv) in (2, 3):
        return cmd_req(urls, timeout, argv[1], argv[2] if len(argv) > 2
                       else "")
    if argv[0] == "js-pub" and len(argv) >= 3:
        prefix, deadline, data = "m", 30.0, "x"
        rest = argv[3:]
        while rest:
            if rest[0] == "--id-prefix":
                prefix = rest[1]
            elif rest[0] == "--deadline":
                deadline = float(rest[1])
            elif rest[0] == "--data":
                data = rest[1]
            else:
                sys.exit("natsreq: unknown js-pub option %s" % rest[0])
            rest = rest[2:]
        return cmd_js_pub(urls, timeout, argv[1], int(argv[2]), prefix,
                          deadline, data)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
