#!/usr/bin/env python3
"""Send one `ping` command over the MongoDB wire protocol (OP_MSG) and exit 0 if it answers ok.

Standard library only, so the dev scripts can wait for a server before any driver is installed.
Usage: mongo_ping.py HOST PORT
"""
import socket
import struct
import sys


def bson_ping() -> bytes:
    body = b"\x10ping\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    doc = bson_ping()
    msg = struct.pack("<I", 0) + b"\x00" + doc  # flagBits, section kind 0, body
    header = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(header + msg)
        head = s.recv(16)
        if len(head) < 16:
            return 1
        (length,) = struct.unpack("<i", head[:4])
        reply = b""
        while len(reply) < length - 16:
            chunk = s.recv(length - 16 - len(reply))
            if not chunk:
                return 1
            reply += chunk
    # {ok: 1.0} is encoded as type 0x01, "ok\0", little-endian double 1.0
    return 0 if b"\x01ok\x00" + struct.pack("<d", 1.0) in reply else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError:
        sys.exit(1)
