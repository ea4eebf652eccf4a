"""Drives every LiveChannel call through the real OSS Python SDKs against a running livechannel server.

Run by tests/sdk_interop.rs (which starts the server and passes --endpoint); needs oss2 2.19,
alibabacloud-oss-v2 1.4, ffmpeg and ffprobe. Exits non-zero with the failing check on the first failure.

  oss2, V1 and V4, private bucket: create / list / get / stat (Idle) / sign_rtmp_url -> ffmpeg push ->
  stat (Live, 640x360 H264, AAC 44100) -> status disabled (the push is kicked) -> history -> post and get
  VOD playlist over the pushed range -> ffprobe plays the VOD playlist through a presigned URL with
  x-oss-process=hls/sign -> delete -> errors map to oss2's exception classes.
  alibabacloud-oss-v2 invoke_operation, V4 (and V1 with the sub-resource metadata): the same calls, and the
  V1-without-metadata quirk answered with SignatureDoesNotMatch.
"""

import argparse
import subprocess
import time
import xml.etree.ElementTree as ET

import alibabacloud_oss_v2 as ossv2
import oss2
from oss2.models import LiveChannelInfo, LiveChannelInfoTarget

from common import check, run_main, wait_for

AK, SK, REGION = "AKIDEXAMPLE", "SECRETEXAMPLE", "cn-hangzhou"
BUCKET = "examplebucket"


def push(url):
    """A live 640x360 H.264 + AAC 44.1 kHz test pattern, paced in real time, for at most 60 s."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url],
        stdin=subprocess.DEVNULL)


def ffprobe_frames(url):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=60)
    # The HLS demuxer lists the stream once per program; the first line is enough.
    return out.returncode, (out.stdout.strip().splitlines() or [""])[0], out.stderr.strip()


def run_oss2(endpoint, version):
    print(f"== oss2 {oss2.__version__} {version}", flush=True)
    auth = oss2.Auth(AK, SK) if version == "v1" else oss2.AuthV4(AK, SK)
    bucket = oss2.Bucket(auth, endpoint, BUCKET, region=REGION)
    host = endpoint.split("://", 1)[1]
    ch = f"oss2-{version}"

    r = bucket.create_live_channel(ch, LiveChannelInfo(
        status="enabled", description="demo",
        target=LiveChannelInfoTarget(frag_duration=1, frag_count=3, playlist_name="playlist.m3u8")))
    check(r.publish_url == f"rtmp://{host}/{BUCKET}/live/{ch}", f"create: publish url {r.publish_url}")
    check(r.play_url == f"http://{host}/{BUCKET}/{ch}/playlist.m3u8", f"create: play url {r.play_url}")
    check(len(r.request_id) == 24, "create: request id")

    names = [c.name for c in bucket.list_live_channel(prefix="oss2-").channels]
    check(ch in names, f"list: {names}")
    page = bucket.list_live_channel(prefix="", marker="", max_keys=1)
    check(page.is_truncated in (True, False) and len(page.channels) == 1, "list: max_keys=1 pages")

    info = bucket.get_live_channel(ch)
    check((info.status, info.description, info.target.type, int(info.target.frag_duration), int(info.target.frag_count),
           info.target.playlist_name) == ("enabled", "demo", "HLS", 1, 3, "playlist.m3u8"), "get: configuration")
    check(bucket.get_live_channel_stat(ch).status == "Idle", "stat: Idle")

    # The RTMP URL signature is V1-only (oss2's AuthV4 cannot make one), as on OSS itself.
    signer = bucket if version == "v1" else oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET)
    url = signer.sign_rtmp_url(ch, "playlist.m3u8", 600)
    check(url.startswith(f"rtmp://{host}/{BUCKET}/live/{ch}?playlistName=playlist.m3u8&OSSAccessKeyId="),
          f"sign_rtmp_url: {url}")
    push_start = int(time.time())
    ffmpeg = push(url)
    try:
        stat = wait_for("stat: Live with video and audio", lambda: (
            lambda s: s if s.status == "Live" and s.video and s.audio and s.video.frame_rate else None)(
                bucket.get_live_channel_stat(ch)))
        check((stat.video.width, stat.video.height, stat.video.codec) == (640, 360, "H264"),
              f"stat: video {stat.video.width}x{stat.video.height} {stat.video.codec} {stat.video.frame_rate} fps")
        check((stat.audio.codec, stat.audio.sample_rate) == ("AAC", 44100), "stat: audio AAC 44100")
        check(stat.remote_addr.startswith("127.0.0.1:") and stat.connected_time > 0, "stat: remote and time")
        wait_for("3 segments in the live playlist",
                 lambda: bucket.get_object(f"{ch}/playlist.m3u8").read().count(b".ts") >= 3)
        try:
            bucket.create_live_channel(ch, LiveChannelInfo(target=LiveChannelInfoTarget()))
            raise AssertionError("overwrite while live was accepted")
        except oss2.exceptions.ChannelStillLive as e:
            check(e.status == 409, "create while live: ChannelStillLive")

        bucket.put_live_channel_status(ch, "disabled")
        ffmpeg.wait(timeout=20)
        check(ffmpeg.returncode is not None, f"disable: the push was kicked (ffmpeg exit {ffmpeg.returncode})")
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
    wait_for("stat: Disabled", lambda: bucket.get_live_channel_stat(ch).status == "Disabled")
    try:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5", "-t", "2",
                        "-c:v", "libx264", "-f", "flv", signer.sign_rtmp_url(ch, "playlist.m3u8", 600)],
                       timeout=20, capture_output=True, check=True)
        raise AssertionError("a disabled channel accepted a push")
    except subprocess.CalledProcessError:
        check(True, "a disabled channel refuses pushes")

    records = bucket.get_live_channel_history(ch).records
    check(len(records) == 1 and records[0].remote_addr.startswith("127.0.0.1:")
          and records[0].start_time <= records[0].end_time, f"history: {len(records)} record")

    end = int(time.time()) + 1
    bucket.post_vod_playlist(ch, "vod.m3u8", start_time=push_start - 1, end_time=end)
    vod = bucket.get_vod_playlist(ch, push_start - 1, end).playlist
    vod = vod.decode() if isinstance(vod, bytes) else vod
    check(vod.startswith("#EXTM3U") and "#EXT-X-ENDLIST" in vod and vod.count(".ts") >= 3, "get_vod_playlist")
    check(bucket.get_object(f"{ch}/vod.m3u8").read().decode() == vod, "post_vod_playlist stored the same playlist")
    signed = bucket.sign_url("GET", f"{ch}/vod.m3u8", 600, params={"x-oss-process": "hls/sign"})
    code, out, err = ffprobe_frames(signed)
    check(code == 0 and out.startswith("h264,640,360,") and int(out.split(",")[3]) > 25 and not err,
          f"ffprobe plays the VOD playlist: {out} {err}")
    try:
        bucket.post_vod_playlist(ch, "vod.m3u8", start_time=0, end_time=0)
        raise AssertionError("post_vod_playlist without a time range was accepted")
    except oss2.exceptions.InvalidArgument:
        check(True, "post_vod_playlist without a range: InvalidArgument")

    # The stored objects as an OSS bucket: both iterators walk the channel's folder in pages of 2.
    keys = [o.key for o in oss2.ObjectIterator(bucket, prefix=f"{ch}/", max_keys=2)]
    segments = [k for k in keys if k.endswith(".ts")]
    check({f"{ch}/playlist.m3u8", f"{ch}/vod.m3u8"} <= set(keys) and len(segments) >= 3
          and keys == sorted(set(keys)), f"ObjectIterator: {len(keys)} keys")
    check([o.key for o in oss2.ObjectIteratorV2(bucket, prefix=f"{ch}/", max_keys=2)] == keys,
          "ObjectIteratorV2 walks the same keys")
    tops = list(oss2.ObjectIterator(bucket, prefix="oss2-", delimiter="/"))
    check(any(o.is_prefix() and o.key == f"{ch}/" for o in tops), f"delimiter: {[o.key for o in tops]}")
    listed = bucket.list_objects_v2(prefix=f"{ch}/", max_keys=1000).object_list
    seg = next(o for o in listed if o.key == segments[0])
    meta = bucket.head_object(seg.key)
    check(meta.content_length == seg.size and meta.etag == seg.etag and meta.last_modified == seg.last_modified,
          f"head_object agrees with the listing: {meta.content_length} {meta.etag}")
    check(bucket.get_object(seg.key, byte_range=(188, 375)).read()
          == bucket.get_object(seg.key).read()[188:376], "get_object with a range")
    try:
        bucket.get_object(seg.key, headers={"If-None-Match": f'"{meta.etag}"'})
        raise AssertionError("a current If-None-Match got the bytes")
    except oss2.exceptions.NotModified as e:
        check(e.status == 304, "get_object If-None-Match: 304 NotModified")
    bucket.delete_object(segments[0])
    r = bucket.batch_delete_objects([segments[1], f"{ch}/none.ts"])
    check(sorted(r.deleted_keys) == sorted([segments[1], f"{ch}/none.ts"]), f"batch_delete_objects: {r.deleted_keys}")
    left = [o.key for o in oss2.ObjectIterator(bucket, prefix=f"{ch}/")]
    check(segments[0] not in left and segments[1] not in left and segments[2] in left, "deleted objects are gone")
    vod = bucket.get_vod_playlist(ch, push_start - 1, end).playlist
    vod = vod.decode() if isinstance(vod, bytes) else vod
    names = [line for line in vod.splitlines() if line.endswith(".ts")]
    check(not {segments[0].split("/")[-1], segments[1].split("/")[-1]} & {n.split("/")[-1].split("?")[0] for n in names},
          "the VOD playlist no longer names the deleted segments")

    bucket.delete_live_channel(ch)
    try:
        bucket.get_live_channel(ch)
        raise AssertionError("deleted channel still there")
    except oss2.exceptions.NoSuchLiveChannel as e:
        check(e.status == 404 and e.code == "NoSuchLiveChannel" and e.details.get("EC") == "0026-00000021"
              and len(e.request_id) == 24, "delete; then get: NoSuchLiveChannel")

    try:
        oss2.Bucket(oss2.Auth(AK, "wrong"), endpoint, BUCKET).get_live_channel_stat("x")
        raise AssertionError("a wrong secret was accepted")
    except oss2.exceptions.SignatureDoesNotMatch as e:
        check(e.status == 403, "wrong secret: SignatureDoesNotMatch")
    try:
        oss2.Bucket(oss2.AnonymousAuth(), endpoint, BUCKET).list_live_channel()
        raise AssertionError("anonymous access to a private bucket was accepted")
    except oss2.exceptions.AccessDenied:
        check(True, "anonymous on a private bucket: AccessDenied")


def run_ossv2(endpoint, version):
    print(f"== alibabacloud-oss-v2 invoke_operation {version}", flush=True)
    cfg = ossv2.config.load_default()
    cfg.credentials_provider = ossv2.credentials.StaticCredentialsProvider(AK, SK)
    cfg.region = REGION
    cfg.endpoint = endpoint
    cfg.retry_max_attempts = 1
    if version == "v1":
        cfg.signature_version = "v1"
    client = ossv2.Client(cfg)
    sub = {"sub-resource": ["live", "comp", "status", "vod", "startTime", "endTime"]}
    ch = f"ossv2-{version}"

    def call(name, method, params, key=None, body=None, headers=None, metadata=True):
        return client.invoke_operation(ossv2.OperationInput(
            op_name=name, method=method, bucket=BUCKET, key=key, parameters=params, body=body, headers=headers,
            op_metadata=dict(sub) if metadata else None))

    def xml(out):
        return ET.fromstring(out.http_response.content)

    body = (b'<?xml version="1.0" encoding="UTF-8"?><LiveChannelConfiguration><Status>enabled</Status>'
            b'<Target><Type>HLS</Type><FragDuration>1</FragDuration><FragCount>3</FragCount>'
            b'<PlaylistName>playlist.m3u8</PlaylistName></Target></LiveChannelConfiguration>')
    out = call("PutLiveChannel", "PUT", {"live": ""}, key=ch, body=body, headers={"Content-Type": "application/xml"})
    check(out.status_code == 200 and xml(out).find("PublishUrls/Url").text.endswith(f"/live/{ch}"), "PutLiveChannel")
    out = call("ListLiveChannel", "GET", {"live": "", "prefix": "ossv2-", "max-keys": "10"})
    check(ch in [e.text for e in xml(out).iter("Name")], "ListLiveChannel")
    out = call("GetLiveChannelInfo", "GET", {"live": ""}, key=ch)
    check(xml(out).find("Target/FragDuration").text == "1", "GetLiveChannelInfo")
    out = call("GetLiveChannelStat", "GET", {"live": "", "comp": "stat"}, key=ch)
    check(xml(out).find("Status").text == "Idle", "GetLiveChannelStat: Idle")

    url = oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET).sign_rtmp_url(ch, "playlist.m3u8", 600)
    push_start = int(time.time())
    ffmpeg = push(url)
    try:
        wait_for("GetLiveChannelStat: Live 640x360", lambda: (lambda x: x.find("Status").text == "Live"
                 and x.find("Video/Width") is not None and x.find("Video/Width").text == "640")(
                     xml(call("GetLiveChannelStat", "GET", {"live": "", "comp": "stat"}, key=ch))))
        wait_for("3 segments", lambda: client.get_object(ossv2.GetObjectRequest(
            bucket=BUCKET, key=f"{ch}/playlist.m3u8")).body.read().count(b".ts") >= 3)
        out = call("PutLiveChannelStatus", "PUT", {"live": "", "status": "disabled"}, key=ch)
        check(out.status_code == 200, "PutLiveChannelStatus disabled")
        ffmpeg.wait(timeout=20)
        check(True, "the push was kicked")
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
    out = call("GetLiveChannelHistory", "GET", {"live": "", "comp": "history"}, key=ch)
    check(len(xml(out).findall("LiveRecord")) == 1, "GetLiveChannelHistory")
    window = {"vod": "", "endTime": str(int(time.time()) + 1), "startTime": str(push_start - 1)}
    out = call("PostVodPlaylist", "POST", dict(window), key=f"{ch}/vod.m3u8")
    check(out.status_code == 200, "PostVodPlaylist")
    out = call("GetVodPlaylist", "GET", dict(window), key=ch)
    check(out.http_response.content.startswith(b"#EXTM3U") and b"#EXT-X-ENDLIST" in out.http_response.content,
          "GetVodPlaylist")
    out = call("DeleteLiveChannel", "DELETE", {"live": ""}, key=ch)
    check(out.status_code == 204, "DeleteLiveChannel")
    try:
        call("GetLiveChannelInfo", "GET", {"live": ""}, key=ch)
        raise AssertionError("deleted channel still there")
    except ossv2.exceptions.OperationError as e:
        se = e.unwrap()
        check((se.status_code, se.code, se.ec) == (404, "NoSuchLiveChannel", "0026-00000021")
              and len(se.request_id) == 24, "GetLiveChannelInfo after delete: NoSuchLiveChannel")
    if version == "v1":
        try:
            call("GetLiveChannelStat", "GET", {"live": "", "comp": "stat"}, key="x", metadata=False)
            raise AssertionError("V1 without sub-resource metadata was accepted")
        except ossv2.exceptions.OperationError as e:
            check(e.unwrap().code == "SignatureDoesNotMatch", "V1 without sub-resource metadata: SignatureDoesNotMatch")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--only", choices=["oss2-v1", "oss2-v4", "ossv2-v4", "ossv2-v1"], action="append")
    args = ap.parse_args()
    runs = args.only or ["oss2-v1", "oss2-v4", "ossv2-v4", "ossv2-v1"]
    for run in runs:
        sdk, version = run.split("-")
        (run_oss2 if sdk == "oss2" else run_ossv2)(args.endpoint, version)
    print(f"ALL OK: {', '.join(runs)}", flush=True)


if __name__ == "__main__":
    run_main(main)
