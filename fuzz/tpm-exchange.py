#!/usr/bin/env python3
"""TPM2 commands sent to a real swtpm (its TCP server socket), for fuzz/seeds: writes each
command and the response swtpm gave to it, byte for byte (OUT/NN-NAME.cmd, .rsp)."""
import os, socket, struct, sys

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def command(code, body=b"", tag=0x8001):
    return struct.pack("!HII", tag, 10 + len(body), code) + body

COMMANDS = [
    ("get-random", command(0x17B, struct.pack("!H", 32))),
    # PCR_Read: one selection, SHA-256, PCRs 0-7; then SHA-384, PCRs 4, 7, 11, 12.
    ("pcr-read-sha256", command(0x17E, struct.pack("!IHB3s", 1, 0x000B, 3, b"\xff\x00\x00"))),
    ("pcr-read-sha384", command(0x17E, struct.pack("!IHB3s", 1, 0x000C, 3, b"\x90\x18\x00"))),
    ("get-capability", command(0x17A, struct.pack("!III", 6, 0x100, 8))),
    ("read-clock", command(0x181)),
    # NV_ReadPublic of an index that is not defined: an error response.
    ("nv-read-public-absent", command(0x169, struct.pack("!I", 0x01C00002))),
    # A command code the TPM does not have (the NSM vendor code on a plain TPM).
    ("vendor-unknown", command(0x20000001, b"\x00" * 8)),
]

with socket.create_connection((host, port), timeout=10) as s:
    for i, (name, cmd) in enumerate(COMMANDS):
        s.sendall(cmd)
        head = b""
        while len(head) < 10:
            head += s.recv(10 - len(head))
        size = struct.unpack("!I", head[2:6])[0]
        rsp = head
        while len(rsp) < size:
            rsp += s.recv(size - len(rsp))
        base = os.path.join(out, f"{i:02}-{name}")
        open(base + ".cmd", "wb").write(cmd)
        open(base + ".rsp", "wb").write(rsp)
