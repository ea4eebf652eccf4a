"""Drives every callback configuration and query call through the vendors' real Python SDKs against a
running livechannel server, then checks the delivery-record queries over real records from an ffmpeg push.

Run by tests/sdk_interop.rs (which starts the server with the keys below and a `live` bucket whose domains
include push.example.com). Needs aliyun-python-sdk-core 2.16.1 + aliyun-python-sdk-live 3.9.75 (HMAC-SHA1),
alibabacloud-live20161101 3.0.2 (ACS3, and its v2 RPC mode), huaweicloudsdklive 3.1.219, and ffmpeg.
"""

import argparse
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import check, run_main

AK, SK = "AKIDEXAMPLE", "SECRETEXAMPLE"
HW_AK, HW_SK, PROJECT = "HWAKEXAMPLE", "HWSKEXAMPLE", "0123456789abcdef0123456789abcdef"
DOMAIN = "push.example.com"


def expect_error(fn, status, code, what):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - each SDK has its own exception class
        got_status = getattr(e, "status_code", None) or (e.get_http_status() if hasattr(e, "get_http_status") else None)
        got_code = getattr(e, "error_code", None) or getattr(e, "code", None) or (
            e.get_error_code() if hasattr(e, "get_error_code") else None)
        check((got_status, got_code) == (status, code), f"{what}: {type(e).__name__} {got_status} {got_code}")
        return
    raise AssertionError(f"{what}: no error")


class Receiver(BaseHTTPRequestHandler):
    got = []
    lock = threading.Lock()

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        with Receiver.lock:
            Receiver.got.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":1,"result":"success"}')

    do_GET = do_POST = _record

    def log_message(self, *args):
        pass


def window():
    now = time.gmtime(time.time() - 3600)
    later = time.gmtime(time.time() + 3600)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", now), time.strftime("%Y-%m-%dT%H:%M:%SZ", later)


# ------------------------------------------------------------------------------------------ legacy SDK

def legacy_call(client, req, **params):
    """One aliyun-python-sdk-core request to our loopback endpoint over http, parameters set by name."""
    req.set_endpoint("127.0.0.1")
    req.set_protocol_type("http")
    for k, v in params.items():
        getattr(req, f"set_{k}")(v)
    return json.loads(client.do_action_with_exception(req))


def run_legacy(port, rurl):
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException  # noqa: F401
    from aliyunsdkcore.client import AcsClient
    from aliyunsdklive.request.v20161101 import (
        AddLiveRecordNotifyConfigRequest as AddRec, CreateEventSubRequest as Create,
        DeleteEventSubRequest as Delete, DeleteLiveRecordNotifyConfigRequest as DelRec,
        DeleteLiveStreamsNotifyUrlConfigRequest as DelStreams, DescribeLiveRecordNotifyConfigRequest as DescRec,
        DescribeLiveRecordNotifyRecordsRequest as Records, DescribeLiveStreamsNotifyUrlConfigRequest as DescStreams,
        ListEventSubRequest as List, SetLiveStreamsNotifyUrlConfigRequest as SetStreams,
        UpdateEventSubRequest as Update, UpdateLiveRecordNotifyConfigRequest as UpdRec)
    print("== aliyun-python-sdk-live (RPC HMAC-SHA1)", flush=True)
    client = AcsClient(AK, SK, "cn-shanghai", port=port, auto_retry=False)

    def call(req, **params):
        return legacy_call(client, req, **params)

    r = call(Create.CreateEventSubRequest(), AppId="live", ChannelId="legacy1", Userss=["u1", "u2"],
             Eventss=["ChannelEvent", "UserEvent"], CallbackUrl=f"{rurl}/legacy")
    sub = r["SubscribeId"]
    check(sub and len(r["RequestId"]) == 36, "CreateEventSub")
    call(Update.UpdateEventSubRequest(), AppId="live", SubscribeId=sub, ChannelId="legacy1", Eventss=["UserEvent"],
         CallbackUrl=f"{rurl}/legacy2")
    subs = call(List.ListEventSubRequest(), AppId="live")["Subscribers"]
    mine = [s for s in subs if s["SubId"] == sub]
    check(mine and mine[0]["Events"] == ["UserEvent"] and mine[0]["CallbackUrl"].endswith("/legacy2"),
          "UpdateEventSub + ListEventSub")
    call(Delete.DeleteEventSubRequest(), AppId="live", SubscribeId=sub)
    expect_error(lambda: call(Delete.DeleteEventSubRequest(), AppId="live", SubscribeId=sub), 404, "ResourceNotExist",
                 "DeleteEventSub twice")
    expect_error(lambda: call(Create.CreateEventSubRequest(), AppId="live", Eventss=["UserEvent"], CallbackUrl="ftp://x"),
                 400, "ErrorInvalidCallBackUrl", "CreateEventSub with a bad URL")

    # The legacy class has no NotifyReqAuth/NotifyAuthKey setters: add them as query parameters.
    add = AddRec.AddLiveRecordNotifyConfigRequest()
    add.add_query_param("NotifyReqAuth", "true")
    add.add_query_param("NotifyAuthKey", "abcdefgh12345678")
    call(add, DomainName=DOMAIN, NotifyUrl=f"{rurl}/legacy-rec", NeedStatusNotify=True)
    expect_error(lambda: call(AddRec.AddLiveRecordNotifyConfigRequest(), DomainName=DOMAIN, NotifyUrl=f"{rurl}/x"),
                 400, "ConfigAlreadyExists", "AddLiveRecordNotifyConfig twice")
    call(UpdRec.UpdateLiveRecordNotifyConfigRequest(), DomainName=DOMAIN, NotifyUrl=f"{rurl}/legacy-rec2",
         NeedStatusNotify=False)
    cfg = call(DescRec.DescribeLiveRecordNotifyConfigRequest(), DomainName=DOMAIN)["LiveRecordNotifyConfig"]
    check(cfg["NotifyUrl"].endswith("/legacy-rec2") and cfg["NeedStatusNotify"] is False, "Update/DescribeLiveRecordNotifyConfig")
    call(DelRec.DeleteLiveRecordNotifyConfigRequest(), DomainName=DOMAIN)
    expect_error(lambda: call(DescRec.DescribeLiveRecordNotifyConfigRequest(), DomainName=DOMAIN), 404, "ConfigNotFound",
                 "DescribeLiveRecordNotifyConfig after delete")
    expect_error(lambda: call(DescRec.DescribeLiveRecordNotifyConfigRequest(), DomainName="nosuch.example.com"), 404,
                 "InvalidDomain.NotFound", "an unknown domain")

    call(SetStreams.SetLiveStreamsNotifyUrlConfigRequest(), DomainName=DOMAIN, NotifyUrl=f"{rurl}/legacy-ingest",
         NotifyReqAuth="yes", NotifyAuthKey="abcdefgh12345678")
    cfg = call(DescStreams.DescribeLiveStreamsNotifyUrlConfigRequest(), DomainName=DOMAIN)["LiveStreamsNotifyConfig"]
    check(cfg["NotifyReqAuth"] == "yes", "Set/DescribeLiveStreamsNotifyUrlConfig")
    call(DelStreams.DeleteLiveStreamsNotifyUrlConfigRequest(), DomainName=DOMAIN)

    start, end = window()
    r = call(Records.DescribeLiveRecordNotifyRecordsRequest(), DomainName=DOMAIN, StartTime=start, EndTime=end,
             PageSize=20, PageNumber=1)
    check(r["Code"] == 0 and r["Msg"] == "ok" and isinstance(r["CallbackList"], list), "DescribeLiveRecordNotifyRecords")
    expect_error(lambda: call(Records.DescribeLiveRecordNotifyRecordsRequest(), DomainName=DOMAIN, StartTime=start,
                              EndTime=end, PageSize=0, PageNumber=1), 400, "MalformedParams", "PageSize=0")
    expect_error(lambda: call(Records.DescribeLiveRecordNotifyRecordsRequest(), DomainName=DOMAIN, EndTime=end,
                              PageSize=20, PageNumber=1), 400, "MissingParams", "no StartTime")
    bad = AcsClient(AK, "wrong", "cn-shanghai", port=port, auto_retry=False)
    try:
        legacy_call(bad, List.ListEventSubRequest(), AppId="live")
        raise AssertionError("a wrong secret was accepted")
    except (ServerException, ClientException) as e:
        # The SDK compares our string to sign with its own and reports InvalidAccessKeySecret when they agree.
        check(e.get_error_code() in ("SignatureDoesNotMatch", "InvalidAccessKeySecret"),
              f"wrong secret: {e.get_error_code()}")


# ------------------------------------------------------------------------------------------ new SDK

def new_client(port, algorithm):
    from alibabacloud_live20161101.client import Client
    from alibabacloud_tea_openapi import utils_models as open_api
    cfg = open_api.Config(access_key_id=AK, access_key_secret=SK, endpoint=f"127.0.0.1:{port}", protocol="http")
    if algorithm == "v2":
        cfg.signature_algorithm = "v2"
    return Client(cfg)


def run_new(port, rurl, algorithm):
    from alibabacloud_live20161101 import models as m
    from darabonba.runtime import RuntimeOptions
    print(f"== alibabacloud-live20161101 ({'ACS3' if algorithm == 'v3' else 'RPC v2'})", flush=True)
    client = new_client(port, algorithm)
    rt = RuntimeOptions(autoretry=False, max_attempts=1)
    r = client.create_event_sub_with_options(m.CreateEventSubRequest(
        app_id="live", channel_id=f"new{algorithm}", users=["u1"], events=["ChannelEvent"],
        callback_url=f"{rurl}/new"), rt)
    sub = r.body.subscribe_id
    check(r.status_code == 200 and sub, "create_event_sub")
    client.update_event_sub_with_options(m.UpdateEventSubRequest(
        app_id="live", subscribe_id=sub, channel_id=f"new{algorithm}", events=["UserEvent"],
        callback_url=f"{rurl}/new2"), rt)
    subs = client.list_event_sub_with_options(m.ListEventSubRequest(app_id="live"), rt).body.subscribers
    check(any(s.sub_id == sub and s.events == ["UserEvent"] for s in subs), "update_event_sub + list_event_sub")
    client.delete_event_sub_with_options(m.DeleteEventSubRequest(app_id="live", subscribe_id=sub), rt)
    expect_error(lambda: client.list_event_sub_with_options(m.ListEventSubRequest(app_id="nosuchapp"), rt), 404,
                 "ResourceNotExist", "list_event_sub on an unknown AppId")
    client.add_live_record_notify_config_with_options(m.AddLiveRecordNotifyConfigRequest(
        domain_name=DOMAIN, notify_url=f"{rurl}/new-rec", need_status_notify=True, notify_req_auth=True,
        notify_auth_key="abcdefgh12345678"), rt)
    client.update_live_record_notify_config_with_options(m.UpdateLiveRecordNotifyConfigRequest(
        domain_name=DOMAIN, notify_url=f"{rurl}/new-rec2", need_status_notify=True), rt)
    cfg = client.describe_live_record_notify_config_with_options(
        m.DescribeLiveRecordNotifyConfigRequest(domain_name=DOMAIN), rt).body.live_record_notify_config
    check(cfg.notify_url.endswith("/new-rec2") and cfg.need_status_notify is True, "record notify config round trip")
    client.delete_live_record_notify_config_with_options(m.DeleteLiveRecordNotifyConfigRequest(domain_name=DOMAIN), rt)
    start, end = window()
    r = client.describe_live_record_notify_records_with_options(m.DescribeLiveRecordNotifyRecordsRequest(
        domain_name=DOMAIN, start_time=start, end_time=end, page_size=20, page_number=1), rt)
    check(r.body.code == 0 and r.body.msg == "ok", "describe_live_record_notify_records")
    expect_error(lambda: client.describe_live_record_notify_records_with_options(
        m.DescribeLiveRecordNotifyRecordsRequest(domain_name=DOMAIN, start_time=start, end_time=end, page_size=501,
                                                 page_number=1), rt), 400, "MalformedParams", "PageSize=501")
    now = int(time.time())
    logs = client.list_event_sub_event_with_options(m.ListEventSubEventRequest(
        app_id="live", start_time=str(now - 3600), end_time=str(now + 60), page_no=1, page_size=10), rt)
    check(logs.status_code == 200, "list_event_sub_event")


# ------------------------------------------------------------------------------------------ Huawei

def run_huawei(endpoint, rurl):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdklive.v1 import LiveClient
    from huaweicloudsdklive.v1.model import (
        CallbackUrl, CreateRecordCallbackConfigRequest, DeletePublishTemplateRequest,
        DeleteRecordCallbackConfigRequest, ListPublishTemplateRequest, ListRecordCallbackConfigsRequest,
        RecordCallbackConfigRequest, ShowRecordCallbackConfigRequest, UpdatePublishTemplateRequest,
        UpdateRecordCallbackConfigRequest)
    print("== huaweicloudsdklive", flush=True)
    cfg = HttpConfig.get_default_config()
    cfg.retry_times = 0
    client = (LiveClient.new_builder().with_credentials(BasicCredentials(HW_AK, HW_SK, PROJECT))
              .with_endpoint(endpoint).with_http_config(cfg).build())
    key = "0123456789abcdef0123456789abcdef"
    client.update_publish_template(UpdatePublishTemplateRequest(domain=DOMAIN, body=CallbackUrl(
        url=f"{rurl}/hw", auth_sign_key=key, call_back_area="mainland_china")))
    got = client.list_publish_template(ListPublishTemplateRequest(domain=DOMAIN))
    check(got.url == f"{rurl}/hw" and got.auth_sign_key == key, "update/list_publish_template")
    expect_error(lambda: client.list_publish_template(ListPublishTemplateRequest(domain="bad.example.com")), 400,
                 "LIVE.100011001", "an unknown domain")
    rec = client.create_record_callback_config(CreateRecordCallbackConfigRequest(body=RecordCallbackConfigRequest(
        publish_domain=DOMAIN, app="live", notify_callback_url=f"{rurl}/hwrec",
        notify_event_subscription=["RECORD_FILE_COMPLETE"], sign_type="HMACSHA256", key=key)))
    check(rec.id and rec.publish_domain == DOMAIN, "create_record_callback_config")
    listed = client.list_record_callback_configs(ListRecordCallbackConfigsRequest(publish_domain=DOMAIN, app="live"))
    check(listed.total == 1 and listed.callback_config[0].id == rec.id, "list_record_callback_configs")
    check(client.show_record_callback_config(ShowRecordCallbackConfigRequest(id=rec.id)).app == "live",
          "show_record_callback_config")
    upd = client.update_record_callback_config(UpdateRecordCallbackConfigRequest(id=rec.id, body=RecordCallbackConfigRequest(
        publish_domain=DOMAIN, app="live", notify_callback_url=f"{rurl}/hwrec",
        notify_event_subscription=["RECORD_START", "RECORD_FILE_COMPLETE"], sign_type="MD5", key=key)))
    check(upd.sign_type == "MD5", "update_record_callback_config")
    client.delete_record_callback_config(DeleteRecordCallbackConfigRequest(id=rec.id))
    expect_error(lambda: client.show_record_callback_config(ShowRecordCallbackConfigRequest(id=rec.id)), 404,
                 "LIVE.103011019", "show after delete")
    client.delete_publish_template(DeletePublishTemplateRequest(domain=DOMAIN))


# ------------------------------------------------------------------------------------------ records of a push

def run_records(port, rurl):
    from aliyunsdkcore.client import AcsClient
    from aliyunsdklive.request.v20161101 import (
        DescribeLiveRecordNotifyRecordsRequest as Records, DescribeLiveStreamsNotifyRecordsRequest as Ingest,
        ListEventSubEventRequest as Events)
    from alibabacloud_live20161101 import models as m
    from darabonba.runtime import RuntimeOptions
    print("== delivery records over a real ffmpeg push", flush=True)
    new = new_client(port, "v3")
    rt = RuntimeOptions(autoretry=False, max_attempts=1)
    new.add_live_record_notify_config_with_options(m.AddLiveRecordNotifyConfigRequest(
        domain_name=DOMAIN, notify_url=f"{rurl}/rec", need_status_notify=True), rt)
    new.set_live_streams_notify_url_config_with_options(m.SetLiveStreamsNotifyUrlConfigRequest(
        domain_name=DOMAIN, notify_url=f"{rurl}/ingest"), rt)
    new.create_event_sub_with_options(m.CreateEventSubRequest(
        app_id="live", channel_id="sdkcb", events=["ChannelEvent", "UserEvent"], callback_url=f"{rurl}/sub"), rt)
    url = f"rtmp://127.0.0.1:{port}/live/sdkcb?userId=bob&callback_id=7"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "6",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-f", "flv", url], check=True, timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:
        with Receiver.lock:
            files = [b for (_, p, b) in Receiver.got if p == "/rec" and '"uri"' in b]
            ingest = [p for (_, p, _) in Receiver.got if p.startswith("/ingest?")]
        if len(files) >= 2 and len(ingest) >= 2:
            break
        time.sleep(0.25)
    check(len(files) >= 2 and json.loads(files[0])["push_args"] == {"callback_id": "7"},
          f"{len(files)} file_created callbacks arrived")
    time.sleep(1)
    legacy = AcsClient(AK, SK, "cn-shanghai", port=port, auto_retry=False)

    def call(req, **params):
        return legacy_call(legacy, req, **params)

    start, end = window()
    base = dict(DomainName=DOMAIN, StartTime=start, EndTime=end)
    everything = call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=500, PageNumber=1, **base)
    total = everything["TotalNum"]
    types = sorted({r["NotifyType"] for r in everything["CallbackList"]})
    check(total == len(files) + 1 and types == ["file_created", "record_started"], f"{total} records: {types}")
    p1 = call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=2, PageNumber=1, **base)
    p2 = call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=2, PageNumber=2, **base)
    check(len(p1["CallbackList"]) == 2 and p1["TotalPage"] == (total + 1) // 2
          and p1["CallbackList"][0]["NotifyContent"] != p2["CallbackList"][0]["NotifyContent"], "pages")
    check(call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=20, PageNumber=1, Status="success",
               StreamName="sdkcb", AppName="live", **base)["TotalNum"] == total, "Status/StreamName/AppName filters")
    check(call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=20, PageNumber=1, Status="failed",
               **base)["TotalNum"] == 0, "no failed records")
    check(call(Records.DescribeLiveRecordNotifyRecordsRequest(), PageSize=20, PageNumber=1, StreamName="other",
               **base)["TotalNum"] == 0, "another stream has none")
    r = new.describe_live_record_notify_records_with_options(m.DescribeLiveRecordNotifyRecordsRequest(
        domain_name=DOMAIN, start_time=start, end_time=end, page_size=3, page_number=1, stream_name="sdkcb"), rt)
    check(r.body.total_num == total and len(r.body.callback_list) == 3
          and r.body.callback_list[0].notify_result == "success", "the new SDK parses the records")
    ing = call(Ingest.DescribeLiveStreamsNotifyRecordsRequest(), PageSize=20, PageNumber=1, **base)
    kinds = sorted(x["NotifyType"] for x in ing["NotifyRecordsInfo"]["LiveStreamNotifyRecordsInfo"])
    check(kinds == ["publish", "publish_done"], f"ingest records: {kinds}")
    now = int(time.time())
    ev = call(Events.ListEventSubEventRequest(), AppId="live", StartTime=now - 3600, EndTime=now + 60, PageNo=1, PageSize=10)
    check(ev["Count"] == 2 and all(log["Code"] == 200 for log in ev["Logs"]), "ListEventSubEvent")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    port = int(args.endpoint.rsplit(":", 1)[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rurl = f"http://127.0.0.1:{server.server_address[1]}"
    run_legacy(port, rurl)
    run_new(port, rurl, "v3")
    run_new(port, rurl, "v2")
    run_huawei(args.endpoint, rurl)
    run_records(port, rurl)
    server.shutdown()
    print("ALL OK: aliyun-legacy, aliyun-acs3, aliyun-v2, huawei, records", flush=True)


if __name__ == "__main__":
    run_main(main)
