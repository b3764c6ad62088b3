#!/usr/bin/env python3
"""Independent, dependency-free Matroska structure scanner used by make.sh.

It walks the EBML tree of each file given on the command line and prints one
summary line per file with the facts that ffprobe/mkvinfo do not show:

  * how the Segment and Cluster sizes are encoded (known, or unknown and in
    how many bytes: ``unknown/1`` is the single byte 0xFF, ``unknown/8`` is
    01 FF FF FF FF FF FF FF),
  * the TimestampScale,
  * per track: CodecID, number of SimpleBlocks, Blocks (inside BlockGroups),
    frames, which lacing types occur (none/xiph/ebml/fixed), and the raw block
    timestamps (cluster timestamp + relative, in TimestampScale units, no
    CodecDelay applied): ts=FIRST..LAST in file order, minmax=MIN..MAX,
  * counts of CRC-32 elements (inside Segment children, Clusters,
    BlockGroups, Tracks, Info: the elements walked), ReferenceBlock,
    BlockDuration and DiscardPadding elements,
  * whether any track has ContentEncodings (e.g. header stripping).

Usage: python3 ebmlscan.py FILE...
"""
import sys

SEGMENT = 0x18538067
CLUSTER = 0x1F43B675
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
CODEC_ID = 0x86
CONTENT_ENCODINGS = 0x6D80
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
SIMPLE_BLOCK = 0xA3
REFERENCE_BLOCK = 0xFB
BLOCK_DURATION = 0x9B
DISCARD_PADDING = 0x75A2
CLUSTER_TIMESTAMP = 0xE7
CRC32 = 0xBF
CUES = 0x1C53BB6B
SEEK_HEAD = 0x114D9B74

# Master elements we descend into.
MASTERS = {SEGMENT, CLUSTER, TRACKS, TRACK_ENTRY, INFO, BLOCK_GROUP}
# Elements that may legally have unknown size (and end when a sibling/parent
# level element appears).
TOP_LEVEL = {SEGMENT, CLUSTER, CUES, SEEK_HEAD, TRACKS, INFO,
             0x1043A770, 0x1254C367, 0x1941A469}  # Chapters, Tags, Attachments

LACING = {0: "none", 1: "xiph", 2: "fixed", 3: "ebml"}


def read_id(d, p):
    b = d[p]
    if b >= 0x80:
        n = 1
    elif b >= 0x40:
        n = 2
    elif b >= 0x20:
        n = 3
    elif b >= 0x10:
        n = 4
    else:
        raise ValueError("bad element id at %d" % p)
    return int.from_bytes(d[p:p + n], "big"), p + n


def read_vint(d, p):
    """Returns (value or None for unknown, length in bytes, new position)."""
    b = d[p]
    n = 1
    mask = 0x80
    while n <= 8 and not (b & mask):
        n += 1
        mask >>= 1
    if n > 8:
        raise ValueError("bad vint at %d" % p)
    v = b & (mask - 1)
    for i in range(1, n):
        v = (v << 8) | d[p + i]
    if v == (1 << (7 * n)) - 1:
        return None, n, p + n
    return v, n, p + n


def uint(b):
    return int.from_bytes(b, "big") if b else 0


class Scan:
    def __init__(self, data):
        self.d = data
        self.segment_size = None
        self.cluster_sizes = {}
        self.tscale = 1000000
        self.tracks = {}  # number -> dict
        self.cur_track = None
        self.cluster_ts = 0
        self.counts = {"ReferenceBlock": 0, "BlockDuration": 0, "DiscardPadding": 0,
                       "BlockGroup": 0, "Cluster": 0, "Cues": 0, "CRC-32": 0}

    def track(self, n):
        return self.tracks.setdefault(n, {"codec": "?", "simple": 0, "block": 0,
                                          "frames": 0, "lacing": set(), "enc": False,
                                          "ts": []})

    def block(self, p, end, simple):
        d = self.d
        tn, _, q = read_vint(d, p)
        rel = int.from_bytes(d[q:q + 2], "big", signed=True)
        flags = d[q + 2]
        lacing = (flags >> 1) & 3
        t = self.track(tn)
        t["lacing"].add(LACING[lacing])
        t["simple" if simple else "block"] += 1
        t["frames"] += 1 if lacing == 0 else d[q + 3] + 1
        t["ts"].append(self.cluster_ts + rel)

    def walk(self, p, end, parent):
        d = self.d
        while p < end:
            eid, q = read_id(d, p)
            size, slen, q = read_vint(d, q)
            if size is None:
                if eid not in (SEGMENT, CLUSTER):
                    raise ValueError("unknown size on element %x" % eid)
                # Unknown size: extends until the parent ends; a Cluster ends
                # at the next top-level element, which the walker handles by
                # treating the cluster's children at the segment level.
                tag = "unknown/%d" % slen
                if eid == SEGMENT:
                    self.segment_size = tag
                    self.walk(q, end, eid)
                    return end
                self.cluster_sizes[tag] = self.cluster_sizes.get(tag, 0) + 1
                self.counts["Cluster"] += 1
                p = q  # children follow inline; continue at this level
                continue
            stop = q + size
            if eid == SEGMENT:
                self.segment_size = "known/%d" % slen
            if eid == CLUSTER:
                self.counts["Cluster"] += 1
                self.cluster_sizes["known"] = self.cluster_sizes.get("known", 0) + 1
            if eid == CUES:
                self.counts["Cues"] += 1
            if eid == TRACK_ENTRY:
                self.cur_track = {"num": None, "codec": "?", "enc": False}
            if eid in MASTERS:
                self.walk(q, stop, eid)
            if eid == TRACK_ENTRY:
                t = self.track(self.cur_track["num"])
                t["codec"] = self.cur_track["codec"]
                t["enc"] = self.cur_track["enc"]
            elif eid == TRACK_NUMBER:
                self.cur_track["num"] = uint(d[q:stop])
            elif eid == CODEC_ID:
                self.cur_track["codec"] = d[q:stop].rstrip(b"\0").decode()
            elif eid == CONTENT_ENCODINGS:
                self.cur_track["enc"] = True
            elif eid == CRC32:
                self.counts["CRC-32"] += 1
            elif eid == CLUSTER_TIMESTAMP:
                self.cluster_ts = uint(d[q:stop])
            elif eid == TIMESTAMP_SCALE:
                self.tscale = uint(d[q:stop])
            elif eid == SIMPLE_BLOCK:
                self.block(q, stop, True)
            elif eid == BLOCK:
                self.block(q, stop, False)
            elif eid == BLOCK_GROUP:
                self.counts["BlockGroup"] += 1
            elif eid == REFERENCE_BLOCK:
                self.counts["ReferenceBlock"] += 1
            elif eid == BLOCK_DURATION:
                self.counts["BlockDuration"] += 1
            elif eid == DISCARD_PADDING:
                self.counts["DiscardPadding"] += 1
            p = stop
        return p


def scan(path):
    d = open(path, "rb").read()
    s = Scan(d)
    # EBML header
    eid, q = read_id(d, 0)
    size, _, q = read_vint(d, q)
    s.walk(q + size, len(d), None)
    clusters = ",".join("%s:%d" % kv for kv in sorted(s.cluster_sizes.items()))
    parts = ["segment=%s" % s.segment_size, "clusters=%s" % clusters,
             "cues=%d" % s.counts["Cues"], "crc32=%d" % s.counts["CRC-32"],
             "tscale=%d" % s.tscale,
             "blockgroups=%d" % s.counts["BlockGroup"],
             "refblocks=%d" % s.counts["ReferenceBlock"],
             "blockdurations=%d" % s.counts["BlockDuration"],
             "discardpadding=%d" % s.counts["DiscardPadding"]]
    for n in sorted(s.tracks):
        t = s.tracks[n]
        ts = t["ts"] or [0]
        parts.append("track%d=%s[simple=%d,block=%d,frames=%d,lacing=%s,"
                     "ts=%d..%d,minmax=%d..%d%s]" % (
                         n, t["codec"], t["simple"], t["block"], t["frames"],
                         "+".join(sorted(t["lacing"])) or "-", ts[0], ts[-1], min(ts),
                         max(ts), ",contentencoding" if t["enc"] else ""))
    return " ".join(parts)


if __name__ == "__main__":
    for f in sys.argv[1:]:
        print("%s %s" % (f.rsplit("/", 1)[-1], scan(f)))
