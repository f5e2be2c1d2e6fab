#!/usr/bin/env python3
"""A stand-in for an AI agent's tool calls: two plain TCP connects, no configuration.

Run by `cargo xtask demo` under `interceptor run`; it neither knows nor cares that every
connect goes through the interceptor.
"""
import socket
import sys


def call(host, port, text):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            peer = "%s:%d" % s.getpeername()
            s.sendall(text.encode() + b"\n")
            reply = s.recv(4096).decode().strip()
            if not reply:
                raise ConnectionResetError("connection closed without a reply")
            print("  agent: connect %s:%d -> ok (getpeername says %s), reply %r" % (host, port, peer, reply))
    except OSError as e:
        print("  agent: connect %s:%d -> FAILED: %s" % (host, port, e))


host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.2"
call(host, 7001, "hello from the agent")
call(host, 7002, "trying the other port")
