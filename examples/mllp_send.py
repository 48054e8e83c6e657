#!/usr/bin/env python3
"""Replay HL7 v2 messages over MLLP, one at a time, waiting for each ACK.

    python3 examples/mllp_send.py messages/ --addr 127.0.0.1:2575 --rate 100

Reads a file or a folder (files in name order) of HL7 v2 messages (segments ending in CR,
LF or CRLF; a new message at each MSH), frames each one as 0x0B ... 0x1C 0x0D, sends it,
waits for the acknowledgement and reads MSA-1. Prints the counts per ACK code and the ACK
latency (p50, p99, max) at the end; exits 1 when any message was not acknowledged AA.
Standard library only.
"""

import argparse
import os
import socket
import sys
import time

START, END = b"\x0b", b"\x1c\x0d"


def messages(path):
    files = []
    if os.path.isdir(path):
        for root, dirs, names in os.walk(path):
            dirs.sort()
            files.extend(os.path.join(root, n) for n in sorted(names))
    else:
        files.append(path)
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        segs = [s for s in data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s.strip()]
        cur = []
        for s in segs:
            s = s.strip(b"\x0b\x1c")
            if s.startswith(b"MSH") and cur:
                yield f, b"\r".join(cur) + b"\r"
                cur = []
            if s:
                cur.append(s)
        if cur:
            yield f, b"\r".join(cur) + b"\r"


def read_ack(sock, buf):
    while True:
        s = buf.find(START)
        e = buf.find(END, s + 1) if s >= 0 else -1
        if s >= 0 and e >= 0:
            return buf[s + 1 : e], buf[e + 2 :]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection before acknowledging")
        buf += chunk


def msa(ack):
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA"):
            fs = seg[3:4] or b"|"
            f = seg.split(fs)
            return (f[1] if len(f) > 1 else b"?").decode("latin-1"), (
                f[3] if len(f) > 3 else b""
            ).decode("latin-1")
    return "?", "no MSA segment in the acknowledgement"


def control_id(message):
    """MSH-10 of a message, for reports."""
    msh = message.split(b"\r")[0]
    fields = msh.split(msh[3:4] or b"|")
    return fields[9].decode("latin-1") if len(fields) > 9 else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", help="a file or a folder of HL7 v2 messages")
    ap.add_argument("--addr", default="127.0.0.1:2575", help="HOST:PORT of the MLLP listener")
    ap.add_argument("--rate", type=float, default=0, help="messages per second (0: as fast as ACKs come)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for an ACK")
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=args.timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    counts, latencies, buf = {}, [], b""
    interval = 1.0 / args.rate if args.rate > 0 else 0
    start = time.monotonic()
    for i, (f, m) in enumerate(messages(args.path)):
        if interval:
            due = start + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        t = time.monotonic()
        sock.sendall(START + m + END)
        ack, buf = read_ack(sock, buf)
        latencies.append(time.monotonic() - t)
        code, reason = msa(ack)
        counts[code] = counts.get(code, 0) + 1
        if code != "AA":
            print(f"{f}: message {i + 1} ({control_id(m)}): {code} {reason}", file=sys.stderr)
    sock.close()
    n = len(latencies)
    took = time.monotonic() - start
    if n == 0:
        print("no messages found", file=sys.stderr)
        return 1
    latencies.sort()
    pct = lambda p: latencies[min(n - 1, int(p * n))] * 1000
    print(
        f"sent {n} messages in {took:.2f}s ({n / took:.0f}/s); ACKs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; ACK latency p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {latencies[-1] * 1000:.2f} ms"
    )
    return 0 if counts.get("AA", 0) == n else 1


if __name__ == "__main__":
    sys.exit(main())
