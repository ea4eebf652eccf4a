"""Snapshots end to end through the real SDKs against a running livechannel server.

Run by tests/sdk_interop.rs, which starts the server with a private bucket `examplebucket` (domain
push.example.com), a private DestBucket `snaps` and the NotifyTopic `snapshotnotify` pointing at
--receiver (signed with --sign-key). Needs oss2 2.19, alibabacloud-oss-v2 1.4, aliyun-python-sdk-live,
alibabacloud-live20161101, ffmpeg and ffprobe.

  For oss2 V1 and V4, one channel each, pushed at the same time: PutLiveChannel with a Snapshot container
  (Interval 1, DestBucket snaps; oss2's LiveChannelInfo model has no Snapshot, so the request is oss2's own
  signed `_do` with the seed's XML) -> ffmpeg pushes 12 s of 640x360 x264 High with B-frames and a 1 s GOP
  to the URL oss2's sign_rtmp_url makes -> ObjectIterator (V1) / ObjectIteratorV2 (V4) list about 12
  snapshots under the channel prefix, and alibabacloud-oss-v2's ListObjectsV2 paginator the same -> each
  one, fetched with get_object, is a JPEG ffprobe decodes at 640x360 -> the receiver got one signed message
  per snapshot naming exactly those objects -> DescribeLiveStreamSnapshotInfo (aliyun-python-sdk-live and
  alibabacloud-live20161101) returns the same list, and pages with Limit and NextStartTime.
"""

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import alibabacloud_oss_v2 as ossv2
import oss2

from common import check, run_main, wait_for

AK, SK, REGION = "AKIDEXAMPLE", "SECRETEXAMPLE", "cn-hangzhou"
BUCKET, DEST, DOMAIN = "examplebucket", "snaps", "push.example.com"
SNAPSHOT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<LiveChannelConfiguration>
  <Description>snapshots</Description>
  <Status>enabled</Status>
  <Target><Type>HLS</Type><FragDuration>2</FragDuration><FragCount>3</FragCount><PlaylistName>playlist.m3u8</PlaylistName></Target>
  <Snapshot>
    <RoleName>role_for_snapshot</RoleName>
    <DestBucket>snaps</DestBucket>
    <NotifyTopic>snapshotnotify</NotifyTopic>
    <Interval>1</Interval>
  </Snapshot>
</LiveChannelConfiguration>"""


class Receiver(BaseHTTPRequestHandler):
    got = []
    lock = threading.Lock()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"null")
        with Receiver.lock:
            Receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def messages(channel):
    with Receiver.lock:
        return [(h, b) for (h, b) in Receiver.got if b and b.get("channel") == channel]


def push(url):
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=44100",
         "-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "2", "-g", "25",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url],
        stdin=subprocess.DEVNULL)


def snapshot_keys(keys, channel):
    return sorted(k for k in keys if k.startswith(f"{channel}/") and k.endswith(".jpg") and k != f"{channel}/latest.jpg")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--receiver", required=True)
    ap.add_argument("--sign-key", required=True)
    args = ap.parse_args()
    host, port = args.receiver.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_port = int(args.endpoint.rsplit(":", 1)[1])

    # Both channels at once: the snapshot pool serves two publishers, and the test takes 12 s, not 24.
    auths = {"v1": oss2.Auth(AK, SK), "v4": oss2.AuthV4(AK, SK)}
    started = time.time()
    pushes = {}
    for version, auth in auths.items():
        bucket = oss2.Bucket(auth, args.endpoint, BUCKET, region=REGION)
        ch = f"snap-{version}"
        resp = bucket._do("PUT", BUCKET, ch, params={"live": ""}, data=SNAPSHOT_XML.encode())
        check(resp.status == 200, f"oss2 {version}: PutLiveChannel with a Snapshot")
        info = bucket.get_live_channel(ch)
        check(info.status == "enabled", f"oss2 {version}: GetLiveChannelInfo")
        url = oss2.Bucket(oss2.Auth(AK, SK), args.endpoint, BUCKET).sign_rtmp_url(ch, "playlist.m3u8", 600)
        pushes[version] = push(url)
    for version, p in pushes.items():
        check(p.wait(timeout=60) == 0, f"ffmpeg push of snap-{version}")

    listed = {}
    for version, auth in auths.items():
        ch = f"snap-{version}"
        dest = oss2.Bucket(auth, args.endpoint, DEST, region=REGION)
        iterator = oss2.ObjectIterator if version == "v1" else oss2.ObjectIteratorV2

        def settled():
            keys = snapshot_keys([o.key for o in iterator(dest, prefix=f"{ch}/", max_keys=5)], ch)
            # Every snapshot is announced once the outbox has caught up.
            return keys if keys and len(messages(ch)) == len(keys) else None

        keys = wait_for(f"oss2 {version}: {iterator.__name__} lists the announced snapshots", settled, timeout=40)
        check(10 <= len(keys) <= 14, f"oss2 {version}: 12 s with a 1 s GOP gave {len(keys)} snapshots")
        listed[ch] = keys
        with tempfile.TemporaryDirectory() as tmp:
            for key in keys + [f"{ch}/latest.jpg"]:
                path = os.path.join(tmp, key.replace("/", "_"))
                with open(path, "wb") as f:
                    f.write(dest.get_object(key).read())
                out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                                      "-of", "csv=p=0", path], capture_output=True, text=True, timeout=30)
                if out.returncode != 0 or out.stdout.strip() != "mjpeg,640,360":
                    raise AssertionError(f"{key}: ffprobe said {out.stdout!r} {out.stderr!r}")
        check(True, f"oss2 {version}: every snapshot and latest.jpg is a 640x360 JPEG")

        got = messages(ch)
        check(sorted(b["object"] for _, b in got) == keys, f"{len(got)} messages name exactly the listed objects")
        for h, b in got:
            sig = hashlib.md5(f"{host}|{h['ali-live-timestamp']}|{args.sign_key}".encode()).hexdigest()
            if h["ali-live-signature"] != sig or b["status"] != "success" or b["bucket"] != DEST:
                raise AssertionError(f"bad message {h} {b}")
            if (b["width"], b["height"], b["source_bucket"]) != (640, 360, BUCKET):
                raise AssertionError(f"bad message fields {b}")
        check(True, f"{ch}: every message is signed and names its bucket, size and picture")

    # alibabacloud-oss-v2 lists the same objects with its ListObjectsV2 paginator.
    cfg = ossv2.config.load_default()
    cfg.credentials_provider = ossv2.credentials.StaticCredentialsProvider(AK, SK)
    cfg.region, cfg.endpoint, cfg.retry_max_attempts = REGION, args.endpoint, 1
    client = ossv2.Client(cfg)
    for ch, keys in listed.items():
        seen = []
        for page in client.list_objects_v2_paginator(limit=4).iter_page(
                ossv2.models.ListObjectsV2Request(bucket=DEST, prefix=f"{ch}/")):
            seen += [o.key for o in page.contents or []]
        check(snapshot_keys(seen, ch) == keys, f"alibabacloud-oss-v2: ListObjectsV2 pages list {ch}'s snapshots")
        head = client.head_object(ossv2.models.HeadObjectRequest(bucket=DEST, key=keys[0]))
        check(head.content_type == "image/jpeg", f"alibabacloud-oss-v2: HeadObject {keys[0]} is image/jpeg")

    span = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 60)),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)))

    from aliyunsdkcore.client import AcsClient
    from aliyunsdklive.request.v20161101 import DescribeLiveStreamSnapshotInfoRequest as Info
    legacy = AcsClient(AK, SK, "cn-shanghai", port=api_port, auto_retry=False)

    def legacy_info(ch, **params):
        req = Info.DescribeLiveStreamSnapshotInfoRequest()
        req.set_endpoint("127.0.0.1")
        req.set_protocol_type("http")
        for k, v in dict(DomainName=DOMAIN, AppName="live", StreamName=ch, StartTime=span[0], EndTime=span[1],
                         **params).items():
            getattr(req, f"set_{k}")(v)
        return json.loads(legacy.do_action_with_exception(req))

    from alibabacloud_live20161101 import models as m
    from alibabacloud_live20161101.client import Client
    from alibabacloud_tea_openapi import utils_models as open_api
    from darabonba.runtime import RuntimeOptions
    new = Client(open_api.Config(access_key_id=AK, access_key_secret=SK, endpoint=f"127.0.0.1:{api_port}",
                                 protocol="http"))
    rt = RuntimeOptions(autoretry=False, max_attempts=1)
    for ch, keys in listed.items():
        r = legacy_info(ch, Limit=100)
        items = r["LiveStreamSnapshotInfoList"]["LiveStreamSnapshotInfo"]
        check([i["OssObject"] for i in items] == keys and all(i["OssBucket"] == DEST for i in items)
              and "NextStartTime" not in r, f"aliyun-python-sdk-live: DescribeLiveStreamSnapshotInfo lists {ch}'s {len(keys)}")
        first = legacy_info(ch, Limit=5)
        page = first["LiveStreamSnapshotInfoList"]["LiveStreamSnapshotInfo"]
        check(len(page) == 5 and first.get("NextStartTime"), "Limit=5 pages with NextStartTime")
        desc = legacy_info(ch, Limit=3, Order="desc")["LiveStreamSnapshotInfoList"]["LiveStreamSnapshotInfo"]
        check([i["OssObject"] for i in desc] == keys[::-1][:3], "Order=desc starts with the newest")
        body = new.describe_live_stream_snapshot_info_with_options(m.DescribeLiveStreamSnapshotInfoRequest(
            domain_name=DOMAIN, app_name="live", stream_name=ch, start_time=span[0], end_time=span[1], limit=100),
            rt).body
        got = [i.oss_object for i in body.live_stream_snapshot_info_list.live_stream_snapshot_info]
        check(got == keys and all(i.create_timestamp > 0 for i in
                                  body.live_stream_snapshot_info_list.live_stream_snapshot_info),
              f"alibabacloud-live20161101: describe_live_stream_snapshot_info lists {ch}'s")
    server.shutdown()
    print("ALL OK: snapshots oss2-v1, oss2-v4, ossv2, aliyun-legacy, aliyun-new", flush=True)


if __name__ == "__main__":
    run_main(main)
