#!/usr/bin/env python3
"""Splits a capture made by capture.sh into seed inputs for the fuzz
targets (see fuzz/README.md), and writes the hand-made ones (API requests,
netlink replies). Run from anywhere: seeds go next to this script."""
import hashlib, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))

def frames(path):
    data = open(path, 'rb').read()
    magic = struct.unpack('<I', data[:4])[0]
    endian = '<' if magic in (0xa1b2c3d4, 0xa1b23c4d) else '>'
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + 'IIII', data[at:at + 16])
        yield data[at + 16:at + 16 + incl]
        at += 16 + incl

def save(target, blob, seen):
    key = (target, hashlib.sha1(blob).hexdigest())
    if key in seen:
        return
    seen.add(key)
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, key[1][:16]), 'wb').write(blob)

def main(pcap):
    seen = set()
    counts = {}
    for f in frames(pcap):
        if len(f) < 14:
            continue
        ethertype = struct.unpack('>H', f[12:14])[0]
        src_mac = f[6:12]
        ours = src_mac[0] & 2  # weft endpoints have locally administered MACs
        # switch_frame: the frame from endpoint 100 with its own MAC and
        # address forced (bits 7, 6), to the gateway (bit 5) or bridged,
        # and replayed after learning (bit 4).
        if len(f) <= 2048:
            kind = (ethertype, f[23] if ethertype == 0x0800 and len(f) > 23 else 0, len(f) > 600, f[0] & 1)
            n = counts.get(('switch', kind), 0)
            if n < 4:
                counts[('switch', kind)] = n + 1
                for control in (0xC0, 0xE0, 0xF0):
                    save('switch_frame', bytes([control]) + f, seen)
                # gateway: the same frame, moved into the target's subnets,
                # as a raw step from endpoint 100 (the gateway's MAC forced
                # or not), alone and followed by an echo built from fields.
                g = to_gateway_subnets(f)
                for control in (0xC0, 0xE0):
                    step = bytes([0, 0, control]) + struct.pack('<H', len(g)) + g
                    save('gateway', step, seen)
                    save('gateway', step + GATEWAY_ECHO_STEP, seen)
        if ethertype != 0x0800 or len(f) < 34:
            continue
        ip = f[14:]
        ihl = (ip[0] & 0x0f) * 4
        proto = ip[9]
        # nat_translate: SNAT and DNAT to 192.0.2.2:40000, full and
        # partial checksums.
        nkey = ('nat', proto, len(ip) > 600)
        if len(ip) <= 1500 and counts.get(nkey, 0) < 4:
            counts[nkey] = counts.get(nkey, 0) + 1
            for flags in (0, 1, 2):
                save('nat_translate', bytes([192, 0, 2, 2, 0x9c, 0x40, flags]) + ip, seen)
        # dns_wire: UDP and TCP payloads to or from port 53.
        if proto == 17 and len(ip) >= ihl + 8:
            sport, dport = struct.unpack('>HH', ip[ihl:ihl + 4])
            if 53 in (sport, dport):
                msg = ip[ihl + 8:]
                save('dns_wire', b'\x00' + msg, seen)
                save('dns_wire', b'\x07' + msg, seen)
        if proto == 6 and len(ip) >= ihl + 20:
            sport, dport = struct.unpack('>HH', ip[ihl:ihl + 4])
            doff = (ip[ihl + 12] >> 4) * 4
            payload = ip[ihl + doff:]
            if 53 in (sport, dport) and len(payload) > 2:
                save('dns_wire', b'\x01' + payload[2:], seen)
            # gso_segment: TCP frames as GSO super-frames (NEEDS_CSUM,
            # TCPv4, hdr_len, gso_size 500 or 1448) and as plain frames.
            if len(payload) > 0 and counts.get('gso', 0) < 4 and len(f) > 1000:
                counts['gso'] = counts.get('gso', 0) + 1
                hdr_len = 14 + ihl + doff
                for gso_type, size in ((1, 500), (1, 1448), (0, 0)):
                    vnet = struct.pack('<BBHHHH', 1 if gso_type else 0, gso_type, hdr_len, size, 14 + ihl, 16)
                    save('gso_segment', vnet + b'\x00' + f, seen)
    for line in API_REQUESTS:
        save('api_request', line.encode(), seen)
    for blob in netlink_seeds():
        save('netlink_reply', blob, seen)
    for t in sorted({t for t, _ in seen}):
        print(t, sum(1 for x, _ in seen if x == t))

# The gateway target's built step (fuzz_targets/gateway.rs, Step::Ip): an
# echo request from endpoint 100 to its gateway.
GATEWAY_ECHO_STEP = bytes([2, 0, 0]) + struct.pack('<H', 2) + bytes([0, 40, 0x34, 0x12, 0, 1, 0, 7])

def csum_fold(x):
    while x >> 16:
        x = (x & 0xffff) + (x >> 16)
    return x

def csum_adjust(old_sum, old, new):
    """RFC 1624 eqn. 3 over 16-bit words."""
    x = (~old_sum) & 0xffff
    for o, n in zip(struct.unpack('>%dH' % (len(old) // 2), old), struct.unpack('>%dH' % (len(new) // 2), new)):
        x += ((~o) & 0xffff) + n
    return (~csum_fold(x)) & 0xffff

def remap(addr):
    """capture.sh's subnets 10.201/10.202 as the target's 10.1/10.2."""
    if addr[0] == 10 and addr[1] in (201, 202):
        return bytes([10, addr[1] - 200]) + addr[2:]
    return addr

def to_gateway_subnets(f):
    f = bytearray(f)
    ethertype = struct.unpack('>H', f[12:14])[0]
    if ethertype == 0x0806 and len(f) >= 42:
        for at in (28, 38):
            f[at:at + 4] = remap(bytes(f[at:at + 4]))
    if ethertype != 0x0800 or len(f) < 34:
        return bytes(f)
    old = bytes(f[26:34])
    new = remap(old[:4]) + remap(old[4:])
    f[26:34] = new
    ihl = (f[14] & 0x0f) * 4
    f[24:26] = struct.pack('>H', csum_adjust(struct.unpack('>H', f[24:26])[0], old, new))
    proto, first = f[23], struct.unpack('>H', f[20:22])[0] & 0x1fff == 0
    at = {6: 16, 17: 6}.get(proto)
    l4 = 14 + ihl
    if at is not None and first and len(f) >= l4 + at + 2:
        old_sum = struct.unpack('>H', f[l4 + at:l4 + at + 2])[0]
        if not (proto == 17 and old_sum == 0):
            f[l4 + at:l4 + at + 2] = struct.pack('>H', csum_adjust(old_sum, old, new))
    return bytes(f)

API_REQUESTS = [
    '{"op":"status"}',
    '{"op":"network_create","name":"front","subnet":"10.1.0.0/24"}',
    '{"op":"network_create","name":"ov","subnet":"10.20.0.0/24","vni":4242,"ip_range":"10.20.0.0/25","mtu":1450,"internal":true,"gateway":"10.20.0.1"}',
    '{"op":"attach","network":"front","netns":"web1","name":"web1","ip":"10.1.0.5","mac":"02:00:00:00:00:05","ifname":"eth1","publish":["8080:80","53:53/udp"],"aliases":["www"],"no_resolv_conf":false,"owner":{"container_id":"abc","ifname":"eth0"}}',
    '{"op":"attach","network":"front","pid":4242}',
    '{"op":"detach","network":"front","endpoint":"web1"}',
    '{"op":"route_allow","a":"front","b":"back"}',
    '{"op":"endpoints","network":null}',
    '{"op":"peer_add","addr":"192.168.1.20:4789"}',
    '{"op":"fdb_add","network":"ov","mac":"02:00:00:00:00:09","vtep":"192.168.1.20"}',
    '{"op":"uplink_set","interface":"eth0","ip":"192.168.1.50/24","gateway":"192.168.1.1"}',
    '{"op":"service_create","name":"web","network":"front","vip":"10.1.0.100","port":"80/tcp","backends":["web1","web2"],"lb":"hash"}',
    '{"op":"publish_remove","network":"front","endpoint":"web1","spec":"8080/tcp"}',
    '{"op":"network_create","name":"typo","subnet":"10.9.0.0/24","internl":true}',
]

def nlmsg(msg_type, flags, seq, payload):
    return struct.pack('=IHHII', 16 + len(payload), msg_type, flags, seq, 4242) + payload

def netlink_seeds():
    seq = struct.pack('=I', 7)
    request = nlmsg(16, 0x5, 7, b'\x00' * 16)  # the echoed RTM_NEWLINK header
    ack = nlmsg(2, 0x100, 7, struct.pack('=i', 0) + request[:16])
    refused = nlmsg(2, 0x300, 7, struct.pack('=i', -17) + request[:16] + struct.pack('=HH', 4 + 20, 1) + b'File exists\x00\x00\x00\x00\x00\x00\x00\x00\x00')
    done = nlmsg(3, 0x2, 7, struct.pack('=i', 0))
    ifname = b'eth0\x00'
    attrs = struct.pack('=HH', 4 + len(ifname), 3) + ifname + b'\x00' * (-(4 + len(ifname)) % 4)
    attrs += struct.pack('=HHI', 8, 4, 1500)  # IFLA_MTU
    attrs += struct.pack('=HH', 10, 1) + bytes.fromhex('020000000001') + b'\x00\x00'  # IFLA_ADDRESS
    link = nlmsg(16, 0x2, 7, struct.pack('=BBHiII', 0, 0, 1, 2, 0x1043, 0) + attrs)
    addr = nlmsg(20, 0x2, 7, struct.pack('=BBBBI', 2, 24, 0, 0, 2) + struct.pack('=HH4s', 8, 1, bytes([10, 1, 0, 1])))
    other_seq = nlmsg(2, 0, 6, struct.pack('=i', 0) + request[:16])
    return [seq + ack, seq + refused, seq + done, seq + link + done, seq + addr + ack, seq + other_seq + ack, seq + link[:20]]

if __name__ == '__main__':
    main(sys.argv[1])
