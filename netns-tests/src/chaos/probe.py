# The chaos client: asks every probed IP who has it (ARP request, IPv4; Neighbor Solicitation, IPv6) every INTERVAL
# seconds on one AF_PACKET socket, and reads the answers off the wire. One process for every IP: a tool per IP
# (arping, ndisc6 in a loop) at 20 ms would take the two cores. Answers that arrive before the next round belong to
# the round. Prints, one line each, epoch seconds (the harness's clock):
#   A <t> <ip> <mac>          the IP is answered again, or by another MAC than before
#   G <ip> <from> <to>        a gap: no answer between these two answers (at least two rounds missed)
#   D <t> <ip> <since>        no answer for DOWN_ROUNDS rounds (unanswered since <since>; 0: never answered)
#   2 <t> <ip> <mac> <mac>... two MACs answered in each of two consecutive rounds
#   1 <t> <ip> <mac> <mac>... two MACs answered within one round (a crossing answer; not yet two MACs)
# stdin: "+IP" starts probing an IP, "-IP" stops.
# Usage: probe.py IFACE MAC IPV4 IPV6 INTERVAL_S IP...
import os, select, socket, struct, sys, time

IFACE, MAC, SRC4, SRC6, INTERVAL = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
DOWN_ROUNDS = 5
mac_b = bytes.fromhex(MAC.replace(":", ""))
src4 = socket.inet_pton(socket.AF_INET, SRC4)
src6 = socket.inet_pton(socket.AF_INET6, SRC6)

def fmt_mac(b):
    return ":".join("%02x" % x for x in b)

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def arp_request(ip):
    eth = b"\xff" * 6 + mac_b + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_b + src4 + b"\0" * 6 + ip
    return eth + arp

def neighbor_solicitation(ip):
    group = b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + ip[13:]
    icmp = struct.pack("!BBHI", 135, 0, 0, 0) + ip + b"\x01\x01" + mac_b
    pseudo = src6 + group + struct.pack("!I", len(icmp)) + b"\0\0\0\x3a"
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + src6 + group
    eth = b"\x33\x33\xff" + ip[13:] + mac_b + b"\x86\xdd"
    return eth + ip6 + icmp

class Target:
    def __init__(self, text):
        self.text = text
        if ":" in text:
            self.raw = socket.inet_pton(socket.AF_INET6, text)
            self.frame = neighbor_solicitation(self.raw)
        else:
            self.raw = socket.inet_pton(socket.AF_INET, text)
            self.frame = arp_request(self.raw)
        self.last = 0.0       # last answer
        self.mac = None       # MAC of the last answer
        self.missed = 0       # rounds without an answer
        self.down = True      # D printed (or never answered)
        self.round = set()    # MACs that answered this round
        self.multi = False    # the previous round had two MACs

targets = {}
for text in sys.argv[6:]:
    targets[socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)] = Target(text)

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.bind((IFACE, 0))
sock.setblocking(False)
out = sys.stdout

def answered(raw, mac, now):
    t = targets.get(raw)
    if t is None:
        return
    t.round.add(mac)
    if t.down or mac != t.mac:
        out.write("A %.4f %s %s\n" % (now, t.text, mac))
    elif now - t.last > 2.5 * INTERVAL:
        out.write("G %s %.4f %.4f\n" % (t.text, t.last, now))
    if t.down and t.last > 0:
        out.write("G %s %.4f %.4f\n" % (t.text, t.last, now))
    t.down = False
    t.missed = 0
    t.last = now
    t.mac = mac

def read_frames():
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return
        if addr[2] == socket.PACKET_OUTGOING or len(data) < 42:
            continue
        now = time.time()
        kind = data[12:14]
        if kind == b"\x08\x06" and data[20:22] == b"\x00\x02":
            answered(bytes(data[28:32]), fmt_mac(data[22:28]), now)
        elif kind == b"\x86\xdd" and len(data) >= 78 and data[20] == 58 and data[54] == 136:
            answered(bytes(data[62:78]), fmt_mac(data[6:12]), now)

pending = b""

def read_commands():
    # os.read, not sys.stdin.readline: readline would keep a second line in Python's buffer, where select does not
    # see it, and the command would wait for the next one.
    global pending
    data = os.read(sys.stdin.fileno(), 4096)
    if not data:
        sys.exit(0)
    pending += data
    *lines, pending = pending.split(b"\n")
    for line in lines:
        line = line.decode().strip()
        if len(line) < 2:
            continue
        text = line[1:]
        raw = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        if line[0] == "+" and raw not in targets:
            targets[raw] = Target(text)
        elif line[0] == "-":
            targets.pop(raw, None)

next_round = time.time()
while True:
    now = time.time()
    for t in targets.values():
        if len(t.round) >= 2:
            out.write("%s %.4f %s %s\n" % ("2" if t.multi else "1", now, t.text, " ".join(sorted(t.round))))
            t.multi = True
        else:
            t.multi = False
        if not t.round:
            t.missed += 1
            if t.missed == DOWN_ROUNDS and not t.down:
                out.write("D %.4f %s %.4f\n" % (now, t.text, t.last))
                t.down = True
        t.round = set()
        try:
            sock.send(t.frame)
        except OSError:
            pass
    out.flush()
    next_round += INTERVAL
    if next_round < now:
        next_round = now + INTERVAL
    while True:
        wait = next_round - time.time()
        if wait <= 0:
            break
        ready, _, _ = select.select([sock, sys.stdin], [], [], wait)
        if sock in ready:
            read_frames()
        if sys.stdin in ready:
            read_commands()
