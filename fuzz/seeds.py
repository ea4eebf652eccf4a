#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*, from the project's own
fixtures: the FLV recordings (fixtures/media), the SDK captures (fixtures/spec/captures) and a few
hand-written playlists and headers. Run it from anywhere; it only adds or replaces seed-* files, so the
corpus the fuzzer grew next to them stays.

    python3 fuzz/seeds.py
"""

import os
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- FLV and RTMP


def flv_tags(path, limit):
    """(type, timestamp ms, body) of the first `limit` tags of an FLV file."""
    data = path.read_bytes()
    at = struct.unpack(">I", data[5:9])[0] + 4
    tags = []
    while at + 11 <= len(data) and len(tags) < limit:
        kind = data[at]
        size = int.from_bytes(data[at + 1 : at + 4], "big")
        ts = int.from_bytes(data[at + 4 : at + 7], "big") | (data[at + 7] << 24)
        body = data[at + 11 : at + 11 + size]
        tags.append((kind, ts, body))
        at += 11 + size + 4
    return tags


def amf0(*values):
    out = b""
    for v in values:
        if v is None:
            out += b"\x05"
        elif isinstance(v, bool):
            out += b"\x01" + bytes([v])
        elif isinstance(v, (int, float)):
            out += b"\x00" + struct.pack(">d", v)
        elif isinstance(v, str):
            out += b"\x02" + struct.pack(">H", len(v)) + v.encode()
        elif isinstance(v, dict):
            out += b"\x03"
            for k, x in v.items():
                out += struct.pack(">H", len(k)) + k.encode() + amf0(x)
            out += b"\x00\x00\x09"
    return out


def chunks(csid, type_id, msid, timestamp, payload, chunk_size):
    """One message as RTMP chunks: a type 0 header, then type 3 continuations."""
    ext = timestamp >= 0xFFFFFF
    field = 0xFFFFFF if ext else timestamp
    out = bytes([csid]) + field.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id])
    out += struct.pack("<I", msid) + (struct.pack(">I", timestamp) if ext else b"")
    for i in range(0, max(len(payload), 1), chunk_size):
        if i:
            out += bytes([0xC0 | csid]) + (struct.pack(">I", timestamp) if ext else b"")
        out += payload[i : i + chunk_size]
    return out


def interleaved(messages, chunk_size, window):
    """(csid, type, msid, timestamp, payload) messages cut into chunks with up to `window` of them (on distinct
    chunk streams) in flight, one chunk of each in turn: an encoder that interleaves chunk streams."""
    out, pending, flight = b"", list(messages), []
    while pending or flight:
        while pending and len(flight) < window and all(m[0] != pending[0][0] for m, _ in flight):
            flight.append((pending.pop(0), 0))
        for i, ((csid, type_id, msid, ts, payload), sent) in enumerate(flight):
            ext = struct.pack(">I", ts) if ts >= 0xFFFFFF else b""
            if sent == 0:
                field = min(ts, 0xFFFFFF)
                out += bytes([csid]) + field.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id])
                out += struct.pack("<I", msid)
            else:
                out += bytes([0xC0 | csid])
            out += ext + payload[sent : sent + chunk_size]
            flight[i] = ((csid, type_id, msid, ts, payload), sent + chunk_size)
        flight = [(m, sent) for m, sent in flight if sent < len(m[4])]
    return out


def rtmp_client(tags, chunk_size=4096, window=1):
    """What an encoder sends after the handshake: chunk size, connect, createStream, publish, metadata, media
    (interleaved if `window` > 1)."""
    out = chunks(2, 1, 0, 0, struct.pack(">I", chunk_size), 128)
    connect = amf0("connect", 1, {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1/live"})
    out += chunks(3, 20, 0, 0, connect, chunk_size)
    out += chunks(3, 20, 0, 0, amf0("createStream", 2, None), chunk_size)
    out += chunks(4, 20, 1, 0, amf0("publish", 3, None, "fuzz", "live"), chunk_size)
    out += chunks(4, 18, 1, 0, amf0("@setDataFrame", "onMetaData", {"width": 320, "height": 180}), chunk_size)
    media = [(6 if kind == 9 else 5, kind, 1, ts, body) for kind, ts, body in tags if kind in (8, 9)]
    if window > 1:
        return out + interleaved(media, chunk_size, window)
    for csid, kind, msid, ts, body in media:
        out += chunks(csid, kind, msid, ts, body, chunk_size)
    return out


def rtmp_seeds():
    write("rtmp_session", "connect-publish", b"\x10" + rtmp_client([]))
    for name in ["av_no_bframes", "av_bframes", "audio_only", "video_only"]:
        tags = flv_tags(ROOT / "fixtures/media" / f"{name}.flv", 80)
        write("rtmp_session", name, b"\x40" + rtmp_client(tags))
        write("rtmp_session", f"{name}-128", b"\x03" + rtmp_client(tags[:12], chunk_size=128))
        records = b""
        for kind, ts, body in tags:
            records += bytes([0 if kind == 9 else 1]) + struct.pack(">IH", ts, len(body)) + body
        write("flv_tags", name, records)
    # An encoder that interleaves audio chunks with the chunks of video frames, and the same media without.
    tags = flv_tags(ROOT / "fixtures/media/av_no_bframes.flv", 60)
    write("rtmp_session", "plain-128", b"\x03" + rtmp_client(tags, chunk_size=128))
    write("rtmp_session", "interleaved-128", b"\x03" + rtmp_client(tags, chunk_size=128, window=2))
    # Timestamps past the 24-bit field.
    tags = flv_tags(ROOT / "fixtures/media/av_no_bframes.flv", 30)
    write("rtmp_session", "extended-timestamps", b"\x40" + rtmp_client([(k, t + 0x1000000, b) for k, t, b in tags]))


def segmenter_seeds():
    # flags (bit 0 audio, bit 1 keyframe), dts step in ms (i16), cts in ms (u8), payload size.
    steady = b""
    for i in range(150):
        steady += struct.pack(">BhBB", 2 if i % 25 == 0 else 0, 40, 80 if i % 3 else 0, 200)
        steady += struct.pack(">BhBB", 1, 0, 0, 60)
    write("segmenter", "steady", steady)
    jumps = b"".join(struct.pack(">BhBB", 2 if i % 10 == 0 else 0, [40, -3000, 30000][i % 3], 0, 50) for i in range(60))
    write("segmenter", "jumps", jumps)
    write("segmenter", "no-keyframe", b"".join(struct.pack(">BhBB", 0, 1000, 0, 10) for _ in range(200)))


# ---------------------------------------------------------------- HTTP captures


def captured_requests():
    """(file, request text) of every captured SDK request."""
    for path in sorted((ROOT / "fixtures/spec/captures").glob("*.txt")):
        text = path.read_text()
        for block in re.split(r"\n(?:-{10,}|={10,})\n", text):
            lines = block.strip("\n").split("\n")
            start = next((i for i, l in enumerate(lines) if " HTTP/1.1" in l and l[:1].isupper()), None)
            if start is not None:
                yield path.stem, "\n".join(lines[start:])


def http_seeds():
    for n, (stem, request) in enumerate(captured_requests()):
        write("signatures", f"{stem}-{n}", request)
        # The same requests through the whole server (the harness authenticates them itself).
        write("api_requests", f"{stem}-{n}", request)
        head, _, body = request.partition("\n\n")
        target = head.split("\n")[0].split(" ")[1]
        query = target.partition("?")[2]
        if query:
            write("dialect_params", f"{stem}-query-{n}", query)
            write("http_parsing", f"{stem}-query-{n}", b"\x64" + query.encode())
        if body.strip().startswith("{"):
            write("dialect_params", f"{stem}-json-{n}", body)
        if "<LiveChannelConfiguration" in body:
            write("oss_xml", f"{stem}-{n}", body)
    for n, r in enumerate(["bytes=0-99", "bytes=-500", "bytes=100-", "bytes=5-4", "bytes=0-0,10-20", "items=1-2"]):
        write("http_parsing", f"range-{n}", b"\x64" + r.encode())
    write(
        "oss_xml",
        "spec-example",
        "<LiveChannelConfiguration><Description>test</Description><Status>enabled</Status><Target>"
        "<Type>HLS</Type><FragDuration>2</FragDuration><FragCount>3</FragCount>"
        "<PlaylistName>playlist.m3u8</PlaylistName></Target></LiveChannelConfiguration>",
    )


def playlist_seeds():
    write(
        "playlist_restore",
        "live",
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"
        "#EXT-X-TARGETDURATION:3\n#EXTINF:2.000,\n7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.500,\n8.ts\n"
        "#EXTINF:1.960,\n9.ts\n",
    )
    write(
        "playlist_restore",
        "ended",
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-12-01T10:00:00.000Z\n#EXTINF:2.000,\n0.ts\n#EXT-X-ENDLIST\n",
    )


def snapshot_seeds():
    """A real keyframe (AVCC, 4-byte lengths, after a 0 selector byte) and a small PPM (after a 1)."""
    tags = flv_tags(ROOT / "fixtures/media/av_bframes.flv", 40)
    key = next(body for kind, _, body in tags if kind == 9 and body[:2] == b"\x17\x01")
    write("snapshot", "keyframe", b"\x00" + key[5:])
    write("snapshot", "ppm", b"\x01" + b"P6\n4 3\n255\n" + bytes(range(36)))
    write("snapshot", "ppm-comment", b"\x01" + b"P6 # c\n2 2 255\n" + bytes(12))


if __name__ == "__main__":
    snapshot_seeds()
    rtmp_seeds()
    segmenter_seeds()
    http_seeds()
    playlist_seeds()
    for target in sorted(os.listdir(CORPUS)):
        print(target, len(os.listdir(CORPUS / target)), "inputs")
