#!/usr/bin/env python3
"""Misbehaving PostgreSQL clients, all at once, against HOST:PORT (through the interceptor).

  bad_pg_clients.py HOST PORT

Prints one JSON line per client: {"client": NAME, "ok": bool, "secs": elapsed, ...}.
"ok" means the client got what a well-behaved proxy owes it:
  garbage           1 KiB of junk as the first packet   -> FATAL 08P01, then closed
  huge_startup      startup length 0x7fffffff            -> FATAL 08P01, then closed
  huge_frame        Query declaring 2 GiB, then 16 MiB   -> FATAL 54000, then closed
  slow_startup      startup packet at 1 byte/s           -> FATAL 08P01 at the startup deadline
  slow_query        Query frame at 1 byte/s              -> its answer (the session is fine)
  half_closed       Query, then shutdown(SHUT_WR)        -> its answer, then closed
  half_startup      half a startup packet, SHUT_WR       -> closed
"""
import json
import os
import socket
import struct
import sys
import threading
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
STARTUP_BODY = struct.pack("!i", 196608) + b"user\0agent\0database\0x\0\0"
STARTUP = struct.pack("!i", len(STARTUP_BODY) + 4) + STARTUP_BODY
out_lock = threading.Lock()


def report(name, t0, ok, **kw):
    with out_lock:
        print(json.dumps(dict(client=name, ok=ok, secs=round(time.time() - t0, 2), **kw)), flush=True)


def conn():
    c = socket.create_connection((HOST, PORT), timeout=30)
    return c


def read_all(c):
    """Everything until the peer closes (EOF or reset); (bytes, how it ended)."""
    buf = b""
    while True:
        try:
            d = c.recv(65536)
        except ConnectionResetError:
            return buf, "reset"
        except socket.timeout:
            return buf, "timeout"
        if not d:
            return buf, "eof"
        buf += d


def ready(c):
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        d = c.recv(65536)
        if not d:
            raise RuntimeError("closed during startup: %r" % buf[:200])
        buf += d


def query(sql):
    q = sql.encode() + b"\0"
    return b"Q" + struct.pack("!i", len(q) + 4) + q


def fatal(buf, code):
    return buf[:1] == b"E" and (b"C" + code.encode() + b"\0") in buf


def garbage():
    t0 = time.time()
    c = conn()
    c.sendall(b"\xde\xad\xbe\xef" + os.urandom(1020))
    buf, end = read_all(c)
    report("garbage", t0, fatal(buf, "08P01") and end == "eof", end=end, head=buf[:80].decode("latin1"))


def huge_startup():
    t0 = time.time()
    c = conn()
    c.sendall(struct.pack("!I", 0x7FFFFFFF) + b"\0" * 8)
    buf, end = read_all(c)
    report("huge_startup", t0, fatal(buf, "08P01") and end == "eof", end=end, head=buf[:80].decode("latin1"))


def huge_frame():
    t0 = time.time()
    c = conn()
    c.sendall(STARTUP)
    ready(c)
    c.sendall(b"Q" + struct.pack("!I", 0x7FFFFFFF))
    sent = 0
    try:
        chunk = b"x" * 65536
        while sent < 16 << 20:
            c.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    buf, end = read_all(c)
    report("huge_frame", t0, fatal(buf, "54000") and end in ("eof", "reset"), end=end, sent=sent,
           head=buf[:120].decode("latin1"))


def slow_startup():
    t0 = time.time()
    c = conn()
    try:
        for b in STARTUP:
            c.sendall(bytes([b]))
            time.sleep(1.0)
    except OSError:
        pass
    buf, end = read_all(c)
    report("slow_startup", t0, fatal(buf, "08P01") and b"startup" in buf, end=end,
           head=buf[:160].decode("latin1"))


def slow_query():
    t0 = time.time()
    c = conn()
    c.sendall(STARTUP)
    ready(c)
    for b in query("SELECT 'slow-ok'"):
        c.sendall(bytes([b]))
        time.sleep(1.0)
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        d = c.recv(65536)
        if not d:
            break
        buf += d
    c.close()
    report("slow_query", t0, b"slow-ok" in buf and b"Z\0\0\0\x05I" in buf)


def half_closed():
    t0 = time.time()
    c = conn()
    c.sendall(STARTUP)
    ready(c)
    c.sendall(query("SELECT 'half-ok'"))
    c.shutdown(socket.SHUT_WR)
    buf, end = read_all(c)
    report("half_closed", t0, b"half-ok" in buf and end == "eof", end=end)


def half_startup():
    t0 = time.time()
    c = conn()
    c.sendall(STARTUP[: len(STARTUP) // 2])
    c.shutdown(socket.SHUT_WR)
    buf, end = read_all(c)
    report("half_startup", t0, end == "eof" and (buf == b"" or buf[:1] == b"E"), end=end)


def guarded(f):
    def run():
        try:
            f()
        except Exception as e:  # a client that blew up is a failed client
            report(f.__name__, time.time(), False, error="%s: %s" % (type(e).__name__, e))
    return run


threads = [threading.Thread(target=guarded(f)) for f in
           (garbage, huge_startup, huge_frame, slow_startup, slow_query, half_closed, half_startup)]
for t in threads:
    t.start()
for t in threads:
    t.join()
