#!/usr/bin/env python3
"""Upstream HTTP(S) server for the HTTP root tests (loopback only).

usage: http_upstream.py HOST LOG_FILE TOKEN [CERT KEY]

Prints `PORT <n>` once listening. Logs one JSON line per request to LOG_FILE (method,
path, host, whether Authorization carried the expected token, accept-encoding) — never
the token itself.

  GET  /v1/users/<id>  JSON with personal data and `auth`: ok | wrong | missing
  GET  /chunked        the same JSON, sent with Transfer-Encoding: chunked
  GET  /gzip           the same JSON, gzip-compressed when the client accepts gzip;
                       `?always=1`: compressed whatever the client accepts, with
                       `&coding=deflate|br` (br: not real brotli), `&clean=1`: a body
                       without personal data
  GET  /blob?file=P    the bytes of file P (application/octet-stream)
  GET  /typed?ct=T     the user JSON labelled T (`none`: no Content-Type); with
                       `&lines=2` two of them as JSON lines (`&bad=1`: then a
                       line that is not JSON); `&gz=1`: gzip-compressed;
                       `&esc=1`: `@` written `\\u0040`; `&bom=1`: a UTF-8 BOM first;
                       `&dup=1`: {"id", "note" with an address, "note": "clean"} (a
                       duplicate key); `&fidelity=1`: JSON with a big integer, decimals
                       and keys out of order, on several lines; `&range=1`: a `Range` header is answered 206
                       with just the "note" string (valid JSON alone); `&partial=1`:
                       that 206 whatever was asked; `&utf16=1`: encoded
                       in UTF-16 (with its byte order mark)
  GET  /tecoded        a text/plain body with personal data, sent with
                       Transfer-Encoding: gzip, chunked
  GET  /v1/echo        like POST /v1/echo (a GET with a body)
  GET  /events?gate=G  server-sent events: one event, then the rest only once
                       /release?gate=G was called (or `gate-timeout` after 20 s), so
                       a client sees whether event 1 reached it before the end;
                       `&gz=1`: one gzip stream, flushed after every chunk
  GET  /release?gate=G opens gate G: {"released": whether a stream was waiting}
  POST /v1/echo        echoes the request body length and sha256
  *    anything else   200 {"ok": true, "method": ..., "path": ...}
"""
import gzip
import hashlib
import json
import ssl
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOST, LOG, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
LOCK = threading.Lock()
GATES = {}


def gate(name):
    with LOCK:
        return GATES.setdefault(name, threading.Event())


# Masked, only the address and the ssn may change (the HTTP root test compares the bytes).
FIDELITY = (
    b'{"zeta": 12345678901234567890123,\n "email": "alice@example.com",'
    b' "alpha": [1.10, -0, 1e2, 0.1000000000000000055],\n "ssn": "123-45-6789", "b": "caf\\u00e9"}\n'
)


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def auth(self):
        got = self.headers.get_all("Authorization") or []
        if not got:
            return "missing"
        return "ok" if got == [f"Bearer {TOKEN}"] else "wrong"

    def record(self):
        rec = {
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "auth": self.auth(),
            "accept_encoding": self.headers.get("Accept-Encoding"),
            "connection": self.headers.get("Connection"),
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
        }
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def user(self, uid):
        return {
            "id": uid,
            "name": "Alice Example",
            "email": "alice@example.com",
            "ssn": "123-45-6789",
            "note": "call bob@example.org",
            "auth": self.auth(),
        }

    def body_in(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def do_GET(self):
        self.record()
        u = urlparse(self.path)
        if u.path.startswith("/v1/users/"):
            return self.send(200, json.dumps(self.user(u.path.rsplit("/", 1)[1])).encode())
        if u.path == "/chunked":
            body = json.dumps(self.user("c")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                part = body[i : i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if u.path == "/gzip":
            q = parse_qs(u.query)
            body = json.dumps({"id": "z", "ok": True} if "clean" in q else self.user("z")).encode()
            if "always" in q or "gzip" in (self.headers.get("Accept-Encoding") or ""):
                coding = q.get("coding", ["gzip"])[0]
                packed = {
                    "gzip": gzip.compress,
                    "deflate": zlib.compress,
                    "br": lambda b: b"\x0b\x02\x80not really brotli",
                }[coding](body)
                return self.send(200, packed, extra=[("Content-Encoding", coding)])
            return self.send(200, body)
        if u.path == "/typed":
            q = parse_qs(u.query)
            lines = int(q.get("lines", ["0"])[0])
            if lines:
                body = b"".join(json.dumps(self.user(f"l{i}")).encode() + b"\n" for i in range(lines))
                if "bad" in q:
                    body += b"not json: alice@example.com\n"
            elif "dup" in q:
                body = b'{"id": "d", "note": "call bob@example.org", "note": "clean"}'
            elif "fidelity" in q:
                body = FIDELITY
            else:
                body = json.dumps(self.user("t")).encode()
            if "esc" in q:
                body = body.replace(b"@", b"\\u0040")
            if "bom" in q:
                body = b"\xef\xbb\xbf" + body
            if "utf16" in q:
                body = body.decode().encode("utf-16")
            if "partial" in q or ("range" in q and self.headers.get("Range")):
                note = json.dumps(self.user("t")["note"]).encode()
                start = body.index(note)
                rng = f"bytes {start}-{start + len(note) - 1}/{len(body)}"
                return self.send(206, note, "application/json", [("Content-Range", rng)])
            ct = q["ct"][0]
            if "gz" in q:
                return self.send(200, gzip.compress(body), ct, [("Content-Encoding", "gzip")])
            if ct == "none":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            return self.send(200, body, ct)
        if u.path == "/tecoded":
            packed = gzip.compress(b"call alice@example.com, ssn 123-45-6789\n")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "gzip, chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed))
            return
        if u.path == "/v1/echo":
            body = self.body_in()
            out = {"len": len(body), "sha256": hashlib.sha256(body).hexdigest(), "method": "GET"}
            return self.send(200, json.dumps(out).encode())
        if u.path == "/events":
            q = parse_qs(u.query)
            return self.events(q["gate"][0], "gz" in q)
        if u.path == "/release":
            g = parse_qs(u.query)["gate"][0]
            with LOCK:
                waiting = g in GATES
            gate(g).set()
            return self.send(200, json.dumps({"released": waiting}).encode())
        if u.path == "/blob":
            with open(parse_qs(u.query)["file"][0], "rb") as f:
                return self.send(200, f.read(), "application/octet-stream")
        return self.send(200, json.dumps({"ok": True, "method": self.command, "path": self.path}).encode())

    do_HEAD = do_GET

    def events(self, g, gz):
        opened = gate(g)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        z = zlib.compressobj(wbits=31) if gz else None
        if z:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()

        def raw(b):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()

        def chunk(b):
            raw(z.compress(b) + z.flush(zlib.Z_SYNC_FLUSH) if z else b)

        chunk(b"id: 1\ndata: " + json.dumps(self.user("e1")).encode() + b"\n\n")
        if opened.wait(20):
            chunk(b"event: note\nid: bob@example.org\ndata: write to\ndata: alice@example.com\n\n")
            third = b"data: " + json.dumps(self.user("e3")).replace(", ", ",\ndata: ").encode() + b"\n\n"
            chunk(third[:40])
            chunk(third[40:] + b": done\n\ndata: [DONE]\n\n")
        else:
            chunk(b"data: gate-timeout\n\n")
        if z:
            raw(z.flush())
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self):
        self.record()
        body = self.body_in()
        out = {"len": len(body), "sha256": hashlib.sha256(body).hexdigest(), "method": "POST"}
        return self.send(200, json.dumps(out).encode())

    def other(self):
        self.record()
        self.body_in()
        return self.send(200, json.dumps({"ok": True, "method": self.command, "path": self.path}).encode())

    do_DELETE = do_PUT = do_PATCH = other


srv = ThreadingHTTPServer((HOST, 0), H)
srv.daemon_threads = True
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"PORT {srv.server_address[1]}", flush=True)
srv.serve_forever()
