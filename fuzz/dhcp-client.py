#!/usr/bin/env python3
"""A minimal DHCP client for fuzz/seeds: DISCOVER, then REQUEST the offered address, over
UDP on one interface; writes the OFFER and the ACK dnsmasq sent, byte for byte."""
import socket, struct, sys, os
iface, out = sys.argv[1], sys.argv[2]
mac = bytes.fromhex("525400123456")
xid = 0x5eed0001
def packet(msgtype, extra=b""):
    p = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                    b"\0"*4, b"\0"*4, b"\0"*4, b"\0"*4, mac + b"\0"*10, b"\0"*64, b"\0"*128)
    opts = bytes([99,130,83,99, 53,1,msgtype]) + extra + bytes([55,5,1,3,6,15,121, 255])
    return p + opts
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 68))
s.settimeout(10)
def exchange(msg, want):
    for _ in range(5):
        s.sendto(msg, ("255.255.255.255", 67))
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if data[4:8] == struct.pack("!I", xid) and bytes([53,1,want]) in data[240:]:
                    return data
        except socket.timeout:
            continue
    sys.exit("no answer from the DHCP server")
offer = exchange(packet(1), 2)
yiaddr = offer[16:20]
i = 240; server = None
while i < len(offer) and offer[i] != 255:
    if offer[i] == 0: i += 1; continue
    code, ln = offer[i], offer[i+1]
    if code == 54: server = offer[i+2:i+2+ln]
    i += 2 + ln
ack = exchange(packet(3, bytes([50,4]) + yiaddr + bytes([54,4]) + server), 5)
open(os.path.join(out, "offer"), "wb").write(offer)
open(os.path.join(out, "ack"), "wb").write(ack)
