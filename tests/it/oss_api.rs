//! The OSS LiveChannel API over real HTTP against a real server: every operation, the validation rules and
//! error codes, signatures and ACLs, signed RTMP pushes (also on the HTTP port), kicks, VOD playlists, and
//! a restart that loses nothing. Requests are signed with the crate's V1 signer, which the unit tests hold
//! to the spec's vectors and to the real SDKs' captured requests; the Python SDKs drive it in `sdk_interop`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use livechannel::auth::oss::{Request, sign_rtmp_query, sign_v1, string_to_sign_v1};
use livechannel::auth::{parse_query, percent_decode, uri_encode};
use livechannel::config::{AccessKey, Acl, Bucket, Config};
use livechannel::names::ChannelKey;
use livechannel::rtmp::client::Publisher;

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "SECRETEXAMPLE";
const PRIVATE: &str = "examplebucket";

fn oss_config(dir: &Path) -> Config {
    let bucket = |name: &str, acl| Bucket { name: name.into(), acl, auto_create_channels: false, ..Bucket::default() };
    Config {
        base_domain: Some("oss.test".into()),
        access_keys: vec![AccessKey { id: AK.into(), secret: SK.into() }],
        buckets: vec![
            Bucket { auto_create_channels: true, ..bucket("live", Acl::PublicReadWrite) },
            bucket(PRIVATE, Acl::Private),
            bucket("readonly", Acl::PublicRead),
        ],
        ..config(dir, 1, 3)
    }
}

/// A V1-signing client for one bucket, path-style unless `vhost` is set.
pub(crate) struct Oss {
    addr: SocketAddr,
    bucket: String,
    secret: String,
    key_id: String,
    vhost: bool,
    anonymous: bool,
    date: Option<String>,
}

impl Oss {
    fn new(addr: SocketAddr, bucket: &str) -> Oss {
        Oss::with_key(addr, bucket, AK, SK)
    }

    /// Requests signed (V1, header) with this access key.
    pub(crate) fn with_key(addr: SocketAddr, bucket: &str, key_id: &str, secret: &str) -> Oss {
        Oss {
            addr,
            bucket: bucket.into(),
            secret: secret.into(),
            key_id: key_id.into(),
            vhost: false,
            anonymous: false,
            date: None,
        }
    }

    pub(crate) async fn call(&self, method: &str, key: &str, query: &str, body: &[u8]) -> HttpResponse {
        let date = self.date.clone().unwrap_or_else(|| livechannel::api::http_date(SystemTime::now()));
        let mut headers = HeaderMap::new();
        headers.insert("date", HeaderValue::from_str(&date).unwrap());
        let params = parse_query(query).unwrap();
        let req = Request { method, bucket: Some(&self.bucket), key, query: &params, headers: &headers };
        let auth = format!("OSS {}:{}", self.key_id, sign_v1(&self.secret, &string_to_sign_v1(&req, &date)));
        let host = format!("{}.oss.test:{}", self.bucket, self.addr.port());
        let path = if self.vhost {
            format!("/{}", uri_encode(key, true))
        } else {
            format!("/{}/{}", self.bucket, uri_encode(key, false))
        };
        let target = if query.is_empty() { path } else { format!("{path}?{query}") };
        let mut h: Vec<(&str, &str)> = vec![("Date", &date)];
        if !self.anonymous {
            h.push(("Authorization", &auth));
        }
        if self.vhost {
            h.push(("Host", &host));
        }
        http_request_body(self.addr, method, &target, &h, body).await
    }

    async fn put_channel(&self, name: &str, body: &str) -> HttpResponse {
        self.call("PUT", name, "live=", body.as_bytes()).await
    }
}

fn channel_xml(frag_duration: u32, frag_count: u32, playlist: &str) -> String {
    format!(
        "<LiveChannelConfiguration><Description>demo</Description><Status>enabled</Status><Target><Type>HLS</Type>\
         <FragDuration>{frag_duration}</FragDuration><FragCount>{frag_count}</FragCount><PlaylistName>{playlist}</PlaylistName>\
         </Target></LiveChannelConfiguration>"
    )
}

#[track_caller]
fn assert_error(resp: &HttpResponse, status: u16, code: &str) {
    let body = resp.text();
    assert_eq!((resp.status, tag(&body, "Code").as_deref()), (status, Some(code)), "{body}");
    assert_eq!(resp.header("content-type"), Some("application/xml"));
    assert!(resp.header("date").is_some_and(|d| d.ends_with("GMT")), "errors carry Date");
    let id = resp.header("x-oss-request-id").unwrap();
    assert_eq!(tag(&body, "RequestId").as_deref(), Some(id));
    assert_eq!(id.len(), 24);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    eventually(Duration::from_secs(20), what, async || f().await.then_some(())).await
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channel_lives_through_every_operation(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);

    // Create; the URLs name this server, path-style as the request was.
    let resp = oss.put_channel("ch1", &channel_xml(1, 3, "playlist.m3u8")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let http = ts.http();
    assert_eq!(tag(&resp.text(), "Url").unwrap(), format!("rtmp://{http}/{PRIVATE}/live/ch1"));
    assert!(resp.text().contains(&format!("<Url>http://{http}/{PRIVATE}/ch1/playlist.m3u8</Url>")));

    let info = oss.call("GET", "ch1", "live=", b"").await;
    assert_eq!(info.status, 200);
    let body = info.text();
    assert_eq!(
        ["Description", "Status", "Type", "FragDuration", "FragCount", "PlaylistName"].map(|t| tag(&body, t).unwrap()),
        ["demo", "enabled", "HLS", "1", "3", "playlist.m3u8"]
    );
    let stat = oss.call("GET", "ch1", "live=&comp=stat", b"").await;
    assert_eq!(tag(&stat.text(), "Status").as_deref(), Some("Idle"));

    // An unsigned push to a private bucket is refused; a signed one is accepted on the HTTP port.
    let tags = tags("media/av_bframes.flv");
    let unsigned = Publisher::connect(http, &format!("{PRIVATE}/live"), "ch1").await;
    assert!(unsigned.is_err(), "unsigned publish to a private bucket was accepted");
    let expired = sign_rtmp_query(PRIVATE, "ch1", None, unix_now() - 1, AK, SK);
    assert!(Publisher::connect(http, &format!("{PRIVATE}/live"), &format!("ch1?{expired}")).await.is_err());
    let query = sign_rtmp_query(PRIVATE, "ch1", Some("signed.m3u8"), unix_now() + 600, AK, SK);
    let mut publisher =
        Publisher::connect(http, &format!("{PRIVATE}/live"), &format!("ch1?{query}")).await.expect("signed publish");
    let pusher = tokio::spawn(async move {
        let _ = send_paced(&mut publisher, &tags, 0).await;
        publisher
    });

    // Stat shows the live stream's real properties.
    let mut stat_body = String::new();
    wait_until("stat with video and audio", async || {
        stat_body = oss.call("GET", "ch1", "live=&comp=stat", b"").await.text();
        stat_body.contains("<SampleRate>") && stat_body.contains("<Width>") && !stat_body.contains("<FrameRate>0<")
    })
    .await;
    assert_eq!(tag(&stat_body, "Status").as_deref(), Some("Live"), "{stat_body}");
    assert_eq!(
        ["Width", "Height", "FrameRate", "Codec", "SampleRate"].map(|t| tag(&stat_body, t).unwrap()),
        ["320", "180", "25", "H264", "44100"],
        "{stat_body}"
    );
    assert!(tag(&stat_body, "ConnectedTime").unwrap().ends_with(".000Z"));
    assert!(tag(&stat_body, "RemoteAddr").unwrap().starts_with("127.0.0.1:"));

    // Overwriting a live channel is refused.
    assert_error(&oss.put_channel("ch1", &channel_xml(2, 3, "playlist.m3u8")).await, 409, "ChannelStillLive");

    // playlistName from the signed URL names this publish's playlist; playback follows the ACL.
    wait_until("segments in signed.m3u8", async || {
        oss.call("GET", "ch1/signed.m3u8", "", b"").await.text().matches(".ts").count() >= 2
    })
    .await;
    assert_error(&http_request(http, "GET", &format!("/{PRIVATE}/ch1/signed.m3u8"), &[]).await, 403, "AccessDenied");
    assert_error(&http_request(http, "GET", &format!("/{PRIVATE}/ch1/0.ts"), &[]).await, 403, "AccessDenied");
    let segment = oss.call("GET", "ch1/0.ts", "", b"").await;
    assert_eq!((segment.status, segment.body[0]), (200, 0x47));

    // Disabling kicks the publisher; the channel then refuses pushes.
    let key = ChannelKey::new(PRIVATE, "ch1").unwrap();
    let resp = oss.call("PUT", "ch1", "live=&status=disabled", b"").await;
    assert_eq!((resp.status, resp.body.len()), (200, 0));
    wait_until("the kick", async || ts.server.channels.live(&key).is_none()).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), pusher).await;
    assert!(ts.server.channels.wait_flushed(&key, Duration::from_secs(10)).await);
    // The last segment's index row is committed just after the flush; the VOD checks below need it.
    assert!(ts.server.sync_metadata().await);
    assert_eq!(
        tag(&oss.call("GET", "ch1", "live=&comp=stat", b"").await.text(), "Status").as_deref(),
        Some("Disabled")
    );
    let query = sign_rtmp_query(PRIVATE, "ch1", None, unix_now() + 600, AK, SK);
    assert!(Publisher::connect(http, &format!("{PRIVATE}/live"), &format!("ch1?{query}")).await.is_err());

    // History holds the finished push.
    let history = oss.call("GET", "ch1", "live=&comp=history", b"").await.text();
    assert_eq!(history.matches("<LiveRecord>").count(), 1, "{history}");
    assert!(tag(&history, "StartTime").unwrap() <= tag(&history, "EndTime").unwrap());

    // VOD over the pushed time range: returned, and written next to the channel.
    let (start, end) = (unix_now() - 120, unix_now() + 1);
    let window = format!("endTime={end}&startTime={start}&vod=");
    let vod = oss.call("GET", "ch1", &window, b"").await;
    assert_eq!((vod.status, vod.header("content-type")), (200, Some("application/x-mpegURL")));
    let listed = vod.text().matches(".ts").count();
    assert!(listed >= 2 && vod.text().contains("#EXT-X-ENDLIST"), "{}", vod.text());
    let posted = oss.call("POST", "ch1/vod.m3u8", &window, b"").await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert!(posted.header("etag").is_some());
    assert_eq!(oss.call("GET", "ch1/vod.m3u8", "", b"").await.text(), vod.text());
    assert_error(&oss.call("POST", "ch1/vod.txt", &window, b"").await, 400, "InvalidArgument");

    // A presigned playlist URL with x-oss-process=hls/sign: segment URIs come back presigned too, so a
    // player holding one URL plays a private channel.
    let expires = (unix_now() + 600).to_string();
    let process = parse_query("x-oss-process=hls/sign").unwrap();
    let empty_headers = HeaderMap::new();
    let req =
        Request { method: "GET", bucket: Some(PRIVATE), key: "ch1/vod.m3u8", query: &process, headers: &empty_headers };
    let sig = uri_encode(&sign_v1(SK, &string_to_sign_v1(&req, &expires)), false);
    let url = format!(
        "/{PRIVATE}/ch1/vod.m3u8?x-oss-process=hls%2Fsign&OSSAccessKeyId={AK}&Expires={expires}&Signature={sig}"
    );
    let signed = http_request(http, "GET", &url, &[]).await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    let uris: Vec<String> = signed.text().lines().filter(|l| l.contains(".ts?")).map(str::to_owned).collect();
    assert_eq!(uris.len(), listed, "{}", signed.text());
    for uri in &uris {
        assert!(uri.starts_with(&format!("/{PRIVATE}/ch1/")), "{uri}");
        let seg = http_request(http, "GET", uri, &[]).await;
        assert_eq!((seg.status, seg.body.first()), (200, Some(&0x47)), "{uri}");
    }
    let forged = uris[0].replace("Signature=", "Signature=x");
    assert_error(&http_request(http, "GET", &forged, &[]).await, 403, "SignatureDoesNotMatch");
    let empty = format!("endTime={}&startTime={}&vod=", unix_now() - 3000, unix_now() - 4000);
    assert_error(&oss.call("GET", "ch1", &empty, b"").await, 400, "InvalidRequest");
    assert_error(&oss.call("GET", "ch1", "endTime=0&startTime=0&vod=", b"").await, 400, "InvalidArgument");

    // Delete; segments stay.
    let resp = oss.call("DELETE", "ch1", "live=", b"").await;
    assert_eq!(resp.status, 204);
    assert_error(&oss.call("GET", "ch1", "live=", b"").await, 404, "NoSuchLiveChannel");
    assert_eq!(oss.call("GET", "ch1/0.ts", "", b"").await.status, 200);
    ts.server.shutdown(Duration::from_secs(10)).await;
}}

on_both! {
#[tokio::test]
async fn credentials_and_acls_are_enforced(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);
    let xml = channel_xml(2, 3, "playlist.m3u8");

    let anonymous = Oss { anonymous: true, ..Oss::new(ts.http(), PRIVATE) };
    assert_error(&anonymous.put_channel("c", &xml).await, 403, "AccessDenied");
    assert_error(&anonymous.call("GET", "", "live=", b"").await, 403, "AccessDenied");

    let wrong = Oss { secret: "wrong".into(), ..Oss::new(ts.http(), PRIVATE) };
    let resp = wrong.put_channel("c", &xml).await;
    assert_error(&resp, 403, "SignatureDoesNotMatch");
    assert_eq!(tag(&resp.text(), "StringToSign").unwrap().rsplit('\n').next(), Some("/examplebucket/c?live"));
    assert_eq!(tag(&resp.text(), "OSSAccessKeyId").as_deref(), Some(AK));

    let unknown = Oss { key_id: "NOBODY".into(), ..Oss::new(ts.http(), PRIVATE) };
    assert_error(&unknown.put_channel("c", &xml).await, 403, "InvalidAccessKeyId");

    let skewed = Oss {
        date: Some(livechannel::api::http_date(SystemTime::now() - Duration::from_secs(16 * 60))),
        ..Oss::new(ts.http(), PRIVATE)
    };
    assert_error(&skewed.put_channel("c", &xml).await, 403, "RequestTimeTooSkewed");
    let garbage = Oss { date: Some("yesterday".into()), ..Oss::new(ts.http(), PRIVATE) };
    assert_error(&garbage.put_channel("c", &xml).await, 403, "AccessDenied");

    // public-read: anonymous reads, signed writes.
    let ro_anon = Oss { anonymous: true, ..Oss::new(ts.http(), "readonly") };
    assert_error(&ro_anon.put_channel("c", &xml).await, 403, "AccessDenied");
    assert_eq!(Oss::new(ts.http(), "readonly").put_channel("c", &xml).await.status, 200);
    assert_eq!(ro_anon.call("GET", "c", "live=", b"").await.status, 200);
    assert_eq!(ro_anon.call("GET", "", "live=", b"").await.status, 200);
    // Object calls follow the same ACL: a public-read bucket lists and reads, never deletes.
    assert_eq!(ro_anon.call("GET", "", "prefix=c/", b"").await.status, 200);
    assert_error(&ro_anon.call("DELETE", "c/0.ts", "", b"").await, 403, "AccessDenied");
    assert_error(&ro_anon.call("POST", "", "delete=", b"<Delete/>").await, 403, "AccessDenied");

    // public-read-write: anonymous everything; a bad signature is still refused.
    let open = Oss { anonymous: true, ..Oss::new(ts.http(), "live") };
    assert_eq!(open.put_channel("c", &xml).await.status, 200);
    assert_error(
        &Oss { secret: "x".into(), ..Oss::new(ts.http(), "live") }.put_channel("c", &xml).await,
        403,
        "SignatureDoesNotMatch",
    );

    let listed = oss.call("GET", "", "", b"").await;
    assert_eq!(listed.status, 200);
    assert!(listed.text().contains("<ListBucketResult>"), "{}", listed.text());
    assert_error(&oss.call("GET", "c/999.ts", "", b"").await, 404, "NoSuchKey");
    assert_error(&oss.call("GET", "c/notes.txt", "", b"").await, 404, "NoSuchKey");
    let nobucket = Oss::new(ts.http(), "nosuchbucket");
    assert_error(&nobucket.call("GET", "", "live=", b"").await, 404, "NoSuchBucket");
}}

on_both! {
#[tokio::test]
async fn validation_rules_and_error_codes_over_http(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);
    let wrap = |target: &str| {
        format!("<LiveChannelConfiguration><Target><Type>HLS</Type>{target}</Target></LiveChannelConfiguration>")
    };
    for (body, ec) in [
        (wrap("<FragDuration>0</FragDuration><FragCount>3</FragCount>"), "0044-00000014"),
        (wrap("<FragDuration>5</FragDuration><FragCount>101</FragCount>"), "0044-00000015"),
        (wrap("<FragDuration>5</FragDuration>"), "0044-00000015"),
        (wrap("<PlaylistName>x.mp4</PlaylistName>"), "0044-00000017"),
        (wrap("<PlaylistName>a/b.m3u8</PlaylistName>"), "0044-00000018"),
        ("<LiveChannelConfiguration><Status>paused</Status><Target><Type>HLS</Type></Target></LiveChannelConfiguration>".into(), "0044-00000002"),
    ] {
        let resp = oss.put_channel("v", &body).await;
        assert_error(&resp, 400, "InvalidArgument");
        assert_eq!(tag(&resp.text(), "EC").as_deref(), Some(ec), "{body}");
    }
    assert_error(&oss.put_channel("v", "<LiveChannelConfiguration><Target>").await, 400, "MalformedXML");
    assert_error(&oss.put_channel("v", "").await, 400, "MalformedXML");
    let long = format!("<LiveChannelConfiguration><Description>{}</Description>{}", "x".repeat(129), &wrap("")[26..]);
    assert_error(&oss.put_channel("v", &long).await, 400, "InvalidArgument");
    let huge = "x".repeat(200_000);
    assert_error(&oss.put_channel("v", &huge).await, 400, "EntityTooLarge");
    assert_error(&oss.put_channel(&"n".repeat(65), &wrap("")).await, 400, "InvalidChannelName");
    assert_error(&oss.put_channel("a%5Cb", &wrap("")).await, 400, "InvalidChannelName");

    // Defaults when FragDuration/FragCount/PlaylistName are absent.
    assert_eq!(oss.put_channel("d", &wrap("")).await.status, 200);
    let info = oss.call("GET", "d", "live=", b"").await.text();
    assert_eq!(
        (tag(&info, "FragDuration").unwrap(), tag(&info, "PlaylistName").unwrap()),
        ("1".into(), "playlist.m3u8".into())
    );
    // PutLiveChannel on an existing channel updates it.
    assert_eq!(oss.put_channel("d", &channel_xml(7, 9, "other.m3u8")).await.status, 200);
    let info = oss.call("GET", "d", "live=", b"").await.text();
    assert_eq!((tag(&info, "FragDuration").unwrap(), tag(&info, "FragCount").unwrap()), ("7".into(), "9".into()));

    assert_error(&oss.call("PUT", "d", "live=&status=paused", b"").await, 400, "InvalidArgument");
    assert_error(&oss.call("PUT", "nope", "live=&status=disabled", b"").await, 404, "NoSuchLiveChannel");
    assert_error(&oss.call("DELETE", "nope", "live=", b"").await, 404, "NoSuchLiveChannel");
    for q in ["live=&comp=stat", "live=&comp=history", "live="] {
        assert_error(&oss.call("GET", "nope", q, b"").await, 404, "NoSuchLiveChannel");
    }
    let window = format!("endTime={}&startTime={}&vod=", unix_now(), unix_now() - 60);
    assert_error(&oss.call("GET", "nope", &window, b"").await, 404, "NoSuchLiveChannel");
    for q in ["live=&max-keys=0", "live=&max-keys=1001", "live=&max-keys=x"] {
        assert_error(&oss.call("GET", "", q, b"").await, 400, "InvalidArgument");
    }
}}

on_both! {
#[tokio::test]
async fn listing_pages_in_byte_order_with_markers_in_both_addressing_styles(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);
    for name in ["ch3", "ch1", "ch2", "other", "Ch0"] {
        assert_eq!(oss.put_channel(name, &channel_xml(2, 3, "playlist.m3u8")).await.status, 200);
    }
    let page = oss.call("GET", "", "live=&prefix=ch&marker=&max-keys=2", b"").await.text();
    assert_eq!(tag(&page, "IsTruncated").as_deref(), Some("true"), "{page}");
    assert_eq!(tag(&page, "NextMarker").as_deref(), Some("ch2"));
    assert_eq!(page.matches("<LiveChannel>").count(), 2);
    assert!(tag(&page, "LastModified").unwrap().ends_with(".000Z"));
    let page = oss.call("GET", "", "live=&prefix=ch&marker=ch2&max-keys=2", b"").await.text();
    assert_eq!((tag(&page, "IsTruncated").as_deref(), tag(&page, "Name").as_deref()), (Some("false"), Some("ch3")));
    assert!(!page.contains("<NextMarker>"));
    let all = oss.call("GET", "", "live=", b"").await.text();
    let names: Vec<&str> = all.split("<Name>").skip(1).map(|s| s.split('<').next().unwrap()).collect();
    assert_eq!(names, ["Ch0", "ch1", "ch2", "ch3", "other"]);

    // Virtual-host style: the bucket from Host, URLs in the same style.
    let vhost = Oss { vhost: true, ..Oss::new(ts.http(), PRIVATE) };
    let resp = vhost.put_channel("vh", &channel_xml(2, 3, "playlist.m3u8")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let port = ts.http().port();
    assert!(resp.text().contains(&format!("rtmp://{PRIVATE}.oss.test:{port}/live/vh")), "{}", resp.text());
    assert!(resp.text().contains(&format!("http://{PRIVATE}.oss.test:{port}/vh/playlist.m3u8")));
    assert!(vhost.call("GET", "", "live=&prefix=v", b"").await.text().contains("<Name>vh</Name>"));
}}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_live_channel_kicks_its_publisher(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);
    assert_eq!(oss.put_channel("k", &channel_xml(1, 3, "playlist.m3u8")).await.status, 200);
    let query = sign_rtmp_query(PRIVATE, "k", None, unix_now() + 600, AK, SK);
    let mut p = Publisher::connect(ts.rtmp(), &format!("{PRIVATE}/live"), &format!("k?{query}")).await.unwrap();
    let tags = tags("media/av_no_bframes.flv");
    let pusher = tokio::spawn(async move { send_paced(&mut p, &tags, 0).await });
    let key = ChannelKey::new(PRIVATE, "k").unwrap();
    wait_until("live", async || ts.server.channels.live(&key).is_some()).await;
    assert_eq!(oss.call("DELETE", "k", "live=", b"").await.status, 204);
    wait_until("the kick", async || ts.server.channels.live(&key).is_none()).await;
    let sent = tokio::time::timeout(Duration::from_secs(15), pusher).await.expect("publisher noticed").unwrap();
    assert!(sent.is_err(), "the kicked publisher kept sending successfully");
    // Not recreated by a new push: the bucket does not auto-create.
    let query = sign_rtmp_query(PRIVATE, "k", None, unix_now() + 600, AK, SK);
    assert!(Publisher::connect(ts.rtmp(), &format!("{PRIVATE}/live"), &format!("k?{query}")).await.is_err());
}}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing_and_the_next_push_continues_the_sequence(db) {
    let dir = tempfile::tempdir().unwrap();
    let tags = tags("media/av_no_bframes.flv");
    let first_seqs;
    {
        let mut ts = TestServer::start(db.on(oss_config(dir.path()))).await;
        let oss = Oss::new(ts.http(), PRIVATE);
        assert_eq!(oss.put_channel("r", &channel_xml(2, 10, "playlist.m3u8")).await.status, 200);
        assert_eq!(oss.put_channel("r2", &channel_xml(3, 4, "idx.m3u8")).await.status, 200);
        assert_eq!(oss.call("PUT", "r2", "live=&status=disabled", b"").await.status, 200);
        let query = sign_rtmp_query(PRIVATE, "r", None, unix_now() + 600, AK, SK);
        let mut p = Publisher::connect(ts.rtmp(), &format!("{PRIVATE}/live"), &format!("r?{query}")).await.unwrap();
        send_all(&mut p, &tags, 0).await.unwrap();
        p.finish().await.unwrap();
        assert!(
            ts.server.channels.wait_flushed(&ChannelKey::new(PRIVATE, "r").unwrap(), Duration::from_secs(10)).await
        );
        first_seqs = ts.drain_stored().iter().map(|s| s.seq).collect::<Vec<_>>();
        assert!(first_seqs.len() >= 4);
        ts.server.shutdown(Duration::from_secs(10)).await;
    }
    let ts = TestServer::start(db.on(oss_config(dir.path()))).await;
    let oss = Oss::new(ts.http(), PRIVATE);
    let list = oss.call("GET", "", "live=", b"").await.text();
    assert_eq!(list.matches("<LiveChannel>").count(), 2, "{list}");
    let info = oss.call("GET", "r2", "live=", b"").await.text();
    assert_eq!(
        ["Status", "FragDuration", "FragCount", "PlaylistName"].map(|t| tag(&info, t).unwrap()),
        ["disabled", "3", "4", "idx.m3u8"]
    );
    assert_eq!(oss.call("GET", "r", "live=&comp=history", b"").await.text().matches("<LiveRecord>").count(), 1);
    // The push ran faster than real time, so its segments' wall-clock times reach into the future.
    let window = format!("endTime={}&startTime={}&vod=", unix_now() + 60, unix_now() - 300);
    assert_eq!(oss.call("GET", "r", &window, b"").await.text().matches(".ts").count(), first_seqs.len());

    let query = sign_rtmp_query(PRIVATE, "r", None, unix_now() + 600, AK, SK);
    let mut p = Publisher::connect(ts.rtmp(), &format!("{PRIVATE}/live"), &format!("r?{query}")).await.unwrap();
    send_all(&mut p, &tags, 0).await.unwrap();
    p.finish().await.unwrap();
    assert!(ts.server.channels.wait_flushed(&ChannelKey::new(PRIVATE, "r").unwrap(), Duration::from_secs(10)).await);
    let text = oss.call("GET", "r/playlist.m3u8", "", b"").await.text();
    let next = first_seqs.last().unwrap() + 1;
    let after = text.split(&format!("{}.ts", next - 1)).nth(1).unwrap_or_else(|| panic!("{text}"));
    assert!(after.contains("#EXT-X-DISCONTINUITY") && after.contains(&format!("{next}.ts")), "{text}");
}}

#[test]
fn percent_decoding_is_strict() {
    assert_eq!(percent_decode("ch1%2Fvod.m3u8").as_deref(), Some("ch1/vod.m3u8"));
    assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%ff"), None);
}

/// V1 signs Content-MD5 and V4 signs x-oss-content-sha256: a body that does not match the one a client
/// declared (a replayed signature with another body) is refused, not stored.
#[tokio::test]
async fn a_body_that_does_not_match_its_declared_digest_is_refused() {
    use base64::Engine as _;
    use md5::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(oss_config(dir.path())).await;
    let body = channel_xml(2, 3, "playlist.m3u8");
    let md5_of = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b));
    let put = async |headers: &[(&str, &str)]| {
        http_request_body(ts.http(), "PUT", "/live/digest?live", headers, body.as_bytes()).await
    };
    let wrong = md5_of(b"another body");
    assert_error(&put(&[("Content-MD5", &wrong)]).await, 400, "InvalidDigest");
    let sha_wrong = "0".repeat(64);
    assert_error(&put(&[("x-oss-content-sha256", &sha_wrong)]).await, 400, "InvalidDigest");
    assert_eq!(ts.get("/live/digest?live").await.status, 404, "nothing was stored");
    let right = md5_of(body.as_bytes());
    assert_eq!(put(&[("Content-MD5", &right), ("x-oss-content-sha256", "UNSIGNED-PAYLOAD")]).await.status, 200);
}
