#!/usr/bin/env python3
"""UDP peer for the root tests: a tiny DNS server and a UDP echo, hand-rolled.

  udp_server.py HOST DNS_PORT ECHO_PORT

DNS (on HOST:DNS_PORT): answers every A query with 127.0.0.99 for names it knows
("*.example.test" and "allowed.test"), NXDOMAIN otherwise; never answers names under
"silent.". UDP echo (on HOST:ECHO_PORT,
0 = any free port): replies "echo:" + payload. Prints "ready DNS_PORT ECHO_PORT" when bound and one
line per datagram received: "dns NAME" / "echo PAYLOAD" (the tests count what arrived).
"""
import select
import socket
import struct
import sys


def answer(q):
    ident, flags = struct.unpack(">HH", q[:4])
    i = 12
    labels = []
    while q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += q[i] + 1
    qtype, = struct.unpack(">H", q[i + 1:i + 3])
    question = q[12:i + 5]
    name = ".".join(labels)
    known = name.endswith(".example.test") or name == "allowed.test"
    if known and qtype == 1:
        rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.99")
        head = struct.pack(">HHHHHH", ident, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
        return name, head + question + rr
    rcode = 0 if known else 3
    head = struct.pack(">HHHHHH", ident, 0x8180 | (flags & 0x0100) | rcode, 1, 0, 0, 0)
    return name, head + question


def main():
    host, dport, eport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    d = socket.socket(fam, socket.SOCK_DGRAM)
    d.bind((host, dport))
    e = socket.socket(fam, socket.SOCK_DGRAM)
    e.bind((host, eport))
    socks = [d, e]
    print("ready %d %d" % (d.getsockname()[1], e.getsockname()[1]), flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            data, peer = s.recvfrom(65535)
            if s is d:
                try:
                    name, reply = answer(data)
                except Exception:  # malformed: ignore
                    continue
                print("dns " + name, flush=True)
                if not name.startswith("silent."):  # silent.*: a resolver that never answers
                    s.sendto(reply, peer)
            else:
                print("echo " + data.decode(errors="replace"), flush=True)
                s.sendto(b"echo:" + data, peer)


if __name__ == "__main__":
    main()
