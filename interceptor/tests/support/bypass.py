#!/usr/bin/env python3
"""Bypass attempts for the root tests (interceptor/tests/bypass/). Each mode tries one way
around the interceptor and prints one JSON line: {"ok": bool, "errno": N|null, "error": ..., ...}.
"ok": true means the attempt got through to where it aimed (for a bypass: a failure of the
interceptor); the tests say what each result must be.

  bypass.py udp MODE FAMILY HOST PORT TEXT   MODE: sendto | connect | sendmsg; FAMILY 4|6|mapped
  bypass.py dns MODE FAMILY HOST NAME [QTYPE] DNS query over UDP (MODE as above); rcode, answers, from
  bypass.py dnsflood HOST NAME COUNT         COUNT queries at once, replies within 2 s, the
                                             daemon's (parent's) fds; then one more query
  bypass.py tcp FAMILY HOST PORT TEXT        plain connect + one echo line
  bypass.py tfo HOST PORT TEXT               TCP Fast Open: sendto(MSG_FASTOPEN) without connect()
  bypass.py iouring HOST PORT TEXT           IORING_OP_CONNECT via raw io_uring syscalls, then echo
  bypass.py socket KIND                      create a raw4 | raw6 | icmp | packet | packet-dgram socket
  bypass.py forge SRC HOST PORT TEXT         bind TCP source SRC (another 127.x), connect, echo
  bypass.py transparent                      setsockopt IP_TRANSPARENT (needs CAP_NET_ADMIN)
  bypass.py escape CGROUP_PROCS              write our pid into another cgroup's cgroup.procs
  bypass.py child|grandchild MODE ARGS...    run MODE in a forked child / grandchild
"""
import ctypes
import errno as E
import json
import mmap
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)


def out(**kw):
    kw.setdefault("pid", os.getpid())
    print(json.dumps(kw), flush=True)


def fail(e, **kw):
    out(ok=False, errno=getattr(e, "errno", None), error=str(e), **kw)


def addr_for(family, host, port):
    if family == "4":
        return socket.AF_INET, (host, port)
    if family == "6":
        return socket.AF_INET6, (host, port)
    if family == "mapped":
        return socket.AF_INET6, ("::ffff:" + host, port)
    raise SystemExit("bad family " + family)


def fmt(a):
    return ("[%s]:%d" % (a[0], a[1])) if ":" in a[0] else ("%s:%d" % (a[0], a[1]))


def udp_exchange(mode, family, host, port, payload):
    fam, addr = addr_for(family, host, port)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if family == "mapped":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.settimeout(3)
    if mode == "connect":
        s.connect(addr)
        s.send(payload)
    elif mode == "sendto":
        s.sendto(payload, addr)
    elif mode == "sendmsg":
        s.sendmsg([payload], [], 0, addr)
    else:
        raise SystemExit("bad udp mode " + mode)
    data, frm = s.recvfrom(65535)
    peer = None
    if mode == "connect":
        peer = fmt(s.getpeername())
    return data, fmt(frm), peer


def udp(mode, family, host, port, text):
    try:
        data, frm, peer = udp_exchange(mode, family, host, int(port), text.encode())
        out(ok=True, reply=data.decode(errors="replace"), reply_from=frm, peer=peer)
    except OSError as e:
        fail(e)


def dns_query(name, qtype):
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def dns(mode, family, host, name, qtype="1"):
    try:
        data, frm, peer = udp_exchange(mode, family, host, 53, dns_query(name, int(qtype)))
    except OSError as e:
        return fail(e)
    ident, flags, qd, an = struct.unpack(">HHHH", data[:8])
    answers = []
    # Skip the question, then read A records (our test server answers uncompressed A).
    i = 12
    while data[i] != 0:
        i += data[i] + 1
    i += 5
    for _ in range(an):
        if data[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while data[i] != 0:
                i += data[i] + 1
            i += 1
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        rdata = data[i + 10:i + 10 + rdlen]
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntoa(rdata))
        i += 10 + rdlen
    out(ok=True, id=ident, rcode=flags & 0xF, answers=answers, reply_from=frm, peer=peer)


def dnsflood(host, name, count):
    """COUNT queries for NAME to HOST:53 from one socket, about 50 per ms; the rcodes of the
    replies that arrive within 2 s and the peak number of open descriptors of our parent (the
    daemon, under `interceptor run`); then, once the proxy's upstream timeout (5 s) has passed,
    one ordinary query for after.example.test."""
    import time
    ppid = os.getppid()

    def fds():
        return len(os.listdir("/proc/%d/fd" % ppid))

    base = peak = fds()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setblocking(False)
    rcodes = {}

    def drain():
        while True:
            try:
                data = s.recv(512)
            except BlockingIOError:
                return
            rc = str(data[3] & 0xF)
            rcodes[rc] = rcodes.get(rc, 0) + 1

    body = dns_query(name, 1)[2:]
    for i in range(int(count)):
        try:
            s.sendto(struct.pack(">H", i & 0xFFFF) + body, (host, 53))
        except BlockingIOError:
            pass
        if i % 50 == 49:
            drain()
            peak = max(peak, fds())
            time.sleep(0.001)
    deadline = time.time() + 2
    while time.time() < deadline:
        drain()
        peak = max(peak, fds())
        time.sleep(0.01)
    time.sleep(4)
    try:
        data, _frm, _peer = udp_exchange("sendto", "4", host, 53, dns_query("after.example.test", 1))
        after = data[3] & 0xF
    except OSError as e:
        after = str(e)
    out(ok=True, parent=open("/proc/%d/comm" % ppid).read().strip(), base_fds=base,
        peak_fds=peak, rcodes=rcodes, after_rcode=after)


def tcp(family, host, port, text):
    fam, addr = addr_for(family, host, int(port))
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(addr)
        s.sendall((text + "\n").encode())
        reply = s.recv(4096).decode().strip()
        out(ok=bool(reply), reply=reply, peer=fmt(s.getpeername()))
    except OSError as e:
        fail(e)


def tfo(host, port, text):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Blocking: a non-blocking TFO sendto without a cookie returns EINPROGRESS.
        s.sendto((text + "\n").encode(), socket.MSG_FASTOPEN, (host, int(port)))
        s.settimeout(5)
        reply = s.recv(4096).decode().strip()
        out(ok=bool(reply), reply=reply, peer=fmt(s.getpeername()))
    except OSError as e:
        fail(e)


SYS_io_uring_setup = 425
SYS_io_uring_enter = 426
IORING_OP_CONNECT = 16
IORING_ENTER_GETEVENTS = 1
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000


def iouring(host, port, text):
    """connect() submitted through io_uring (IORING_OP_CONNECT) with raw syscalls."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(SYS_io_uring_setup, 4, params)
    if fd < 0:
        err = ctypes.get_errno()
        return out(ok=False, errno=err, error="io_uring_setup: " + os.strerror(err), stage="setup")
    p = params.raw
    sq_entries, cq_entries = struct.unpack_from("<II", p, 0)
    sq_off = struct.unpack_from("<IIIIIIIIQ", p, 40)
    cq_off = struct.unpack_from("<IIIIIIIIQ", p, 80)
    sq_len = sq_off[6] + sq_entries * 4
    cq_len = cq_off[5] + cq_entries * 16
    sq = mmap.mmap(fd, sq_len, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=IORING_OFF_SQ_RING)
    cq = mmap.mmap(fd, cq_len, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=IORING_OFF_CQ_RING)
    sqes = mmap.mmap(fd, sq_entries * 64, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=IORING_OFF_SQES)
    sa = ctypes.create_string_buffer(struct.pack("<H", socket.AF_INET) + struct.pack(">H", int(port))
                                     + socket.inet_aton(host) + b"\x00" * 8)
    sqe = struct.pack("<BBHiQQIIQ", IORING_OP_CONNECT, 0, 0, s.fileno(), 16,
                      ctypes.addressof(sa), 0, 0, 0x77) + b"\x00" * 24
    tail = struct.unpack_from("<I", sq, sq_off[1])[0]
    mask = struct.unpack_from("<I", sq, sq_off[2])[0]
    idx = tail & mask
    sqes[idx * 64:(idx + 1) * 64] = sqe
    struct.pack_into("<I", sq, sq_off[6] + idx * 4, idx)
    struct.pack_into("<I", sq, sq_off[1], tail + 1)
    n = libc.syscall(SYS_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, None, 0)
    if n < 0:
        err = ctypes.get_errno()
        return out(ok=False, errno=err, error="io_uring_enter: " + os.strerror(err), stage="enter")
    head = struct.unpack_from("<I", cq, cq_off[0])[0]
    cmask = struct.unpack_from("<I", cq, cq_off[2])[0]
    user_data, res, _flags = struct.unpack_from("<QiI", cq, cq_off[5] + (head & cmask) * 16)
    struct.pack_into("<I", cq, cq_off[0], head + 1)
    if res < 0:
        return out(ok=False, errno=-res, error="IORING_OP_CONNECT: " + os.strerror(-res), stage="connect",
                   via="io_uring")
    try:
        s.settimeout(5)
        s.sendall((text + "\n").encode())
        reply = s.recv(4096).decode().strip()
        out(ok=bool(reply), reply=reply, peer=fmt(s.getpeername()), via="io_uring", user_data=user_data)
    except OSError as e:
        fail(e, via="io_uring")


def make_socket(kind):
    try:
        if kind == "raw4":
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        elif kind == "raw6":
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
        elif kind == "icmp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        elif kind == "packet":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        elif kind == "packet-dgram":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        else:
            raise SystemExit("bad kind " + kind)
        s.close()
        out(ok=True)
    except OSError as e:
        fail(e)


def forge(src, host, port, text):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(5)
        s.connect((host, int(port)))
        s.sendall((text + "\n").encode())
        reply = s.recv(4096).decode().strip()
        out(ok=bool(reply), reply=reply, local=fmt(s.getsockname()))
    except OSError as e:
        fail(e)


def transparent():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
        out(ok=True)
    except OSError as e:
        fail(e)


def escape(procs):
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
        with open("/proc/self/cgroup") as f:
            out(ok=True, cgroup=f.read().strip())
    except OSError as e:
        fail(e)


def in_child(depth, args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        if depth > 1:
            in_child(depth - 1, args)
        else:
            dispatch(args)
        sys.stdout.flush()
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    sys.stdout.write(data.decode())
    sys.stdout.flush()


def dispatch(a):
    cmd = a[0]
    if cmd == "udp":
        udp(*a[1:6])
    elif cmd == "dns":
        dns(*a[1:])
    elif cmd == "dnsflood":
        dnsflood(*a[1:4])
    elif cmd == "tcp":
        tcp(*a[1:5])
    elif cmd == "tfo":
        tfo(*a[1:4])
    elif cmd == "iouring":
        iouring(*a[1:4])
    elif cmd == "socket":
        make_socket(a[1])
    elif cmd == "forge":
        forge(*a[1:5])
    elif cmd == "transparent":
        transparent()
    elif cmd == "escape":
        escape(a[1])
    elif cmd == "child":
        in_child(1, a[1:])
    elif cmd == "grandchild":
        in_child(2, a[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    dispatch(sys.argv[1:])
