#!/usr/bin/env python3
"""Raw-protocol PostgreSQL client probing the ways a row value could reach the agent
outside a masked result, run under `interceptor run` against 127.0.0.2:PORT.

  pg_leaks.py PORT

Prints one JSON object: per scenario, everything the server sent back, decoded:
  stale_statement   the unnamed statement described as `SELECT 1::int AS a`, then
                    replaced by a query of users executed without a Describe
  stale_portal      cursor c described while it was `SELECT 1::int`, closed, declared
                    again over users, then executed with the extended protocol
  error_text        a cast error quoting a row value
  parameter         application_name set from a row value (ParameterStatus)
  notification      LISTEN, then pg_notify with a row value as payload
  half_closed       a failing Parse, a Query skipped behind it, Sync, then SHUT_WR:
                    the session must end (it used to wait forever)
  scs_pipeline      `SET standard_conforming_strings = off` (allowed: privileged) and,
                    in the same write, a query that hides a DELETE when read with it off
  rebind            the unnamed statement bound to a portal as a query of users, then
                    parsed again as `SELECT 1, 2` and described, then the portal executed
  copy_sync         `COPY imports FROM STDIN` with a Sync inside the copy (the server
                    ignores it), then a described query of users: masked as its own
  sql_prepared      `PREPARE s1` in SQL, then Describe/Bind/Execute of s1 in the protocol
  double_copy       two `COPY imports FROM STDIN` in one Query, a Sync inside the second,
                    then Execute of a statement of users described before: masked
  long_names        two statement names equal in their first 62 bytes, the 63rd byte
                    the first of different multi-byte characters (the server keys 63
                    bytes): the harmless one described, the users one executed
  deallocated       a statement of orders, DEALLOCATEd in SQL, parsed again over users
"""
import json
import socket
import struct
import sys

PORT = int(sys.argv[1])


def msg(t, body):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def parse(name, q):
    return msg(b"P", cstr(name) + cstr(q) + struct.pack("!H", 0))


def bind(portal, stmt):
    return msg(b"B", cstr(portal) + cstr(stmt) + struct.pack("!HHH", 0, 0, 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def execute(portal):
    return msg(b"E", cstr(portal) + struct.pack("!I", 0))


def query(q):
    return msg(b"Q", cstr(q))


SYNC = msg(b"S", b"")


class Conn:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.2", PORT), timeout=20)
        self.buf = b""
        body = struct.pack("!I", 196608) + cstr("user") + cstr("agent") + cstr("database") + cstr("x") + b"\0"
        self.s.sendall(struct.pack("!I", len(body) + 4) + body)
        self.until_ready()

    def recv(self):
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!I", self.buf[1:5])[0]:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        n = struct.unpack("!I", self.buf[1:5])[0]
        t, b = self.buf[0:1], self.buf[5 : 1 + n]
        self.buf = self.buf[1 + n :]
        return t, b

    def until_ready(self):
        """Decoded messages up to ReadyForQuery."""
        out = []
        while True:
            t, b = self.recv()
            out.append(decode(t, b))
            if t == b"Z":
                return out

    def send(self, data, readies=1):
        self.s.sendall(data)
        out = []
        for _ in range(readies):
            out += self.until_ready()
        return out


def decode(t, b):
    if t == b"D":
        n = struct.unpack("!H", b[:2])[0]
        i, vals = 2, []
        for _ in range(n):
            (ln,) = struct.unpack("!i", b[i : i + 4])
            i += 4
            if ln < 0:
                vals.append(None)
            else:
                vals.append(b[i : i + ln].decode(errors="replace"))
                i += ln
        return ["row", vals]
    if t in (b"E", b"N"):
        return ["error" if t == b"E" else "notice", [f.decode(errors="replace") for f in b.split(b"\0") if f]]
    if t == b"S":
        return ["parameter", [f.decode(errors="replace") for f in b.split(b"\0") if f]]
    if t == b"A":
        return ["notification", [f.decode(errors="replace") for f in b[4:].split(b"\0") if f]]
    return [t.decode(), None]


out = {}
c = Conn()
c.send(parse("", "SELECT 1::int AS a") + describe(b"S", "") + SYNC)
out["stale_statement"] = c.send(
    parse("", "SELECT 1::int AS a, email, ssn FROM users WHERE id = 2") + bind("", "") + execute("") + SYNC
)

c = Conn()
c.send(query("BEGIN"))
c.send(query("DECLARE c CURSOR FOR SELECT 1::int"))
c.send(describe(b"P", "c") + SYNC)
c.send(query("CLOSE c"))
c.send(query("DECLARE c CURSOR FOR SELECT email, ssn FROM users WHERE id = 2"))
out["stale_portal"] = c.send(execute("c") + SYNC)
c.send(query("COMMIT"))

c = Conn()
out["error_text"] = c.send(query("SELECT email::int FROM users WHERE id = 2"))
out["parameter"] = c.send(query("SELECT set_config('application_name', email, false) IS NULL FROM users WHERE id = 2"))
c.send(query("LISTEN ch"))
out["notification"] = c.send(query("SELECT pg_notify('ch', email) FROM users WHERE id = 2"))
if not any(m[0] == "notification" for m in out["notification"]):
    out["notification"] += c.send(query("SELECT 1"))

c = Conn()
hidden = "SELECT 'a\\' , ' ; DELETE FROM orders; SELECT 1; -- '"
out["scs_pipeline"] = c.send(query("SET standard_conforming_strings = off") + query(hidden), 2)

c = Conn()
out["rebind"] = c.send(
    parse("", "SELECT email, ssn FROM users WHERE id = 2")
    + bind("", "")
    + parse("", "SELECT 1::int AS a, 2::int AS b")
    + describe(b"S", "")
    + execute("")
    + SYNC
)

c = Conn()
c.s.sendall(query("COPY imports FROM STDIN"))
started = [decode(*c.recv())]
c.s.sendall(SYNC + msg(b"c", b""))
out["copy_sync"] = started + c.until_ready()
out["copy_sync"] += c.send(
    parse("", "SELECT email, ssn FROM users WHERE id = 2") + bind("", "") + describe(b"P", "") + execute("") + SYNC
)

c = Conn()
c.send(query("PREPARE s1 AS SELECT email, ssn FROM users WHERE id = 2"))
out["sql_prepared"] = c.send(bind("", "s1") + describe(b"P", "") + execute("") + SYNC)

USERS = "SELECT email, ssn FROM users WHERE id = 2"
c = Conn()
c.send(parse("victim", USERS) + describe(b"S", "victim") + SYNC)
c.s.sendall(query("COPY imports FROM STDIN; COPY imports FROM STDIN"))
started = [decode(*c.recv())]
c.s.sendall(msg(b"c", b""))
started += [decode(*c.recv()), decode(*c.recv())]
c.s.sendall(SYNC + msg(b"c", b""))
out["double_copy"] = started + c.until_ready()
out["double_copy"] += c.send(bind("", "victim") + execute("") + SYNC)

c = Conn()
a, b = "x" * 62 + "\u00e9", "x" * 62 + "\u20ac"
c.send(parse(a, "SELECT 1::int AS a, 2::int AS b") + describe(b"S", a) + SYNC)
out["long_names"] = c.send(parse(b, USERS) + bind("", b) + describe(b"S", a) + execute("") + SYNC)

c = Conn()
c.send(parse("s", "SELECT 1::int AS a, 2::int AS b") + SYNC)
c.send(query("DEALLOCATE s"))
out["deallocated"] = c.send(parse("s", USERS) + bind("", "s") + describe(b"P", "") + execute("") + SYNC)

c = Conn()
c.s.sendall(parse("", "SELECT * FROM no_such_table") + query("SELECT 1") + SYNC)
c.s.shutdown(socket.SHUT_WR)
ended = []
try:
    while True:
        t, b = c.recv()
        ended.append(decode(t, b))
except EOFError:
    ended.append(["eof", None])
except socket.timeout:
    ended.append(["timeout", None])
out["half_closed"] = ended
print(json.dumps(out))
