#!/usr/bin/env python3
"""Test client for the interceptor's root tests: a real process making real connects.

  probe.py once FAMILY HOST PORT TEXT      connect, send TEXT line, print one JSON result
  probe.py fork FAMILY HOST PORT TEXT      the same from a forked child (result has its pid)
  probe.py interactive                     commands on stdin, one JSON line per command:
      connect FAMILY HOST PORT   |  echo TEXT  |  close  |  exit
  probe.py wait-then-once GO_FILE OUT_FILE FAMILY HOST PORT TEXT
                                           wait until GO_FILE exists, then `once`, JSON to OUT_FILE

FAMILY is 4 (AF_INET), 6 (AF_INET6) or mapped (AF_INET6 socket to ::ffff:HOST).
"""
import json
import os
import socket
import sys
import time


def open_conn(family, host, port):
    if family == "4":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, port)
    elif family == "6":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        addr = (host, port)
    elif family == "mapped":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::ffff:" + host, port)
    else:
        raise SystemExit("bad family " + family)
    s.settimeout(10)
    s.connect(addr)
    return s


def peer_str(s):
    p = s.getpeername()
    return ("[%s]:%d" % (p[0], p[1])) if s.family == socket.AF_INET6 else ("%s:%d" % (p[0], p[1]))


def echo(s, text):
    s.sendall((text + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode().rstrip("\n")


def base():
    return {"pid": os.getpid(), "exe": os.path.realpath("/proc/self/exe")}


def once(family, host, port, text):
    r = base()
    try:
        s = open_conn(family, host, int(port))
        r["peer"] = peer_str(s)
        r["reply"] = echo(s, text)
        r["ok"] = r["reply"] != ""
        if not r["ok"]:
            r["error"] = "closed without reply"
        s.close()
    except OSError as e:
        r["ok"] = False
        r["error"] = "%s: %s" % (type(e).__name__, e)
        r["errno"] = e.errno
    return r


def main():
    cmd = sys.argv[1]
    if cmd == "once":
        print(json.dumps(once(*sys.argv[2:6])), flush=True)
    elif cmd == "fork":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, json.dumps(once(*sys.argv[2:6])).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.waitpid(pid, 0)
        out = json.loads(data)
        out["parent_pid"] = os.getpid()
        print(json.dumps(out), flush=True)
    elif cmd == "wait-then-once":
        go, out = sys.argv[2], sys.argv[3]
        # Written whole then renamed: the test polls for the file and reads it at once.
        with open(out + ".ready.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(out + ".ready.tmp", out + ".ready")
        deadline = time.time() + 60
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.02)
        res = once(*sys.argv[4:8])
        with open(out + ".tmp", "w") as f:
            f.write(json.dumps(res))
        os.rename(out + ".tmp", out)
    elif cmd == "interactive":
        s = None
        print(json.dumps(dict(base(), ready=True)), flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            r = base()
            try:
                if parts[0] == "connect":
                    s = open_conn(parts[1], parts[2], int(parts[3]))
                    r["peer"] = peer_str(s)
                    r["ok"] = True
                elif parts[0] == "echo":
                    r["reply"] = echo(s, " ".join(parts[1:]))
                    r["ok"] = r["reply"] != ""
                elif parts[0] == "close":
                    s.close()
                    r["ok"] = True
                elif parts[0] == "exit":
                    return
            except OSError as e:
                r["ok"] = False
                r["error"] = "%s: %s" % (type(e).__name__, e)
                r["errno"] = e.errno
            print(json.dumps(r), flush=True)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
