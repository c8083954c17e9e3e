#!/usr/bin/env python3
"""Post-dial delay added by the proxy, from a loopback capture (tcpdump -w, Linux lo).

pdd.py CAPTURE.pcap UAC_ADDR PROXY_ADDR UAS_ADDR

Per Call-ID it takes the first INVITE UAC->proxy (t0), the first INVITE proxy->UAS (t1), the first
180 UAS->proxy (t2) and the first 180 proxy->UAC (t3), all kernel capture timestamps (µs), and
prints, in ms: `n p50 p99 max` of the delay the proxy adds, (t1-t0)+(t3-t2) (the UAS's own answer
time excluded), then `n p50 p99 max` of the whole post-dial delay seen at the UAC's socket, t3-t0,
then the number of distinct Request-URI users the proxy sent INVITEs to (the agents it chose).
Only complete calls count. The capture filter keeps INVITEs and 180s only (see run.sh).
"""
import struct
import sys


def packets(fn):
    with open(fn, "rb") as f:
        gh = f.read(24)
        if len(gh) < 24:
            return
        magic = struct.unpack("<I", gh[:4])[0]
        if magic == 0xA1B2C3D4:
            end, frac = "<", 1e-6
        elif magic == 0xA1B23C4D:
            end, frac = "<", 1e-9
        elif magic == 0xD4C3B2A1:
            end, frac = ">", 1e-6
        else:
            sys.exit(f"{fn}: not a pcap file")
        link = struct.unpack(end + "I", gh[20:24])[0]
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, sub, incl, _ = struct.unpack(end + "IIII", h)
            data = f.read(incl)
            if link == 1:  # Ethernet (Linux lo)
                if len(data) < 14 or data[12:14] != b"\x08\x00":
                    continue
                ip = data[14:]
            elif link == 113:  # Linux cooked (-i any)
                ip = data[16:]
            else:
                sys.exit(f"{fn}: link type {link} not handled")
            if len(ip) < 28 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            src = ".".join(str(b) for b in ip[12:16])
            dst = ".".join(str(b) for b in ip[16:20])
            yield sec + sub * frac, src, dst, ip[ihl + 8:]


def call_id(payload):
    for line in payload.split(b"\r\n"):
        low = line[:8].lower()
        if low.startswith(b"call-id:") or low.startswith(b"i:"):
            return line.split(b":", 1)[1].strip()
    return None


def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    fn, uac, proxy, uas = sys.argv[1:5]
    first = {}  # (call_id, leg) -> time
    agents = set()  # Request-URI users of the INVITEs the proxy sent: the agents it chose
    for t, src, dst, p in packets(fn):
        if p.startswith(b"INVITE sip:") and (src, dst) == (proxy, uas):
            agents.add(p[11:].split(b"@", 1)[0])
        if p.startswith(b"INVITE "):
            leg = 0 if (src, dst) == (uac, proxy) else 1 if (src, dst) == (proxy, uas) else None
        elif p.startswith(b"SIP/2.0 180"):
            leg = 2 if (src, dst) == (uas, proxy) else 3 if (src, dst) == (proxy, uac) else None
        else:
            continue
        cid = call_id(p) if leg is not None else None
        if cid is not None:
            first.setdefault((cid, leg), t)
    added, whole = [], []
    for (cid, leg), t0 in first.items():
        if leg != 0:
            continue
        try:
            t1, t2, t3 = first[(cid, 1)], first[(cid, 2)], first[(cid, 3)]
        except KeyError:
            continue
        added.append(((t1 - t0) + (t3 - t2)) * 1e3)
        whole.append((t3 - t0) * 1e3)
    out = []
    for v in (added, whole):
        v.sort()
        out += [str(len(v))] + (["%.3f" % pct(v, 0.5), "%.3f" % pct(v, 0.99), "%.3f" % v[-1]] if v else ["n/a"] * 3)
    out.append(str(len(agents)))
    print(" ".join(out))


if __name__ == "__main__":
    main()
