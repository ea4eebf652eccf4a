//! The publish policy without sockets: signatures and ACLs, names, channel state, playlistName.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::auth::captures::keys;
use crate::auth::oss::sign_rtmp_query;
use crate::meta::from_millis;

const NOW: u64 = 1_736_150_400;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn bucket(acl: Acl, auto_create_channels: bool) -> Bucket {
    Bucket { name: "examplebucket".into(), acl, auto_create_channels, ..Bucket::default() }
}

fn record(status: ChannelStatus) -> ChannelRecord {
    ChannelRecord {
        name: "cam1".into(),
        description: String::new(),
        status,
        settings: ChannelSettings::default(),
        snapshot: None,
        last_modified: from_millis(0),
    }
}

fn signed(channel: &str, playlist: Option<&str>, expires: u64, secret: &str) -> String {
    format!("{channel}?{}", sign_rtmp_query("examplebucket", channel, playlist, expires, "AK", secret))
}

#[test]
fn a_private_bucket_takes_only_signed_pushes_and_an_open_one_refuses_bad_signatures_too() {
    let keys = keys("AK", "SECRET");
    let policy = Policy { keys: &keys };
    let private = bucket(Acl::Private, false);
    let open = bucket(Acl::PublicReadWrite, false);
    let who = policy.authorize(&private, &signed("cam1", None, NOW + 60, "SECRET"), now()).unwrap();
    assert_eq!(who.key, ChannelKey::new("examplebucket", "cam1").unwrap());
    assert_eq!(who.user_args, "", "the credentials are not passed on to callbacks");
    let who = policy.authorize(&private, &signed("cam1", Some("a.m3u8"), NOW + 60, "SECRET"), now()).unwrap();
    assert_eq!(who.user_args, "playlistName=a.m3u8");

    let unsigned = policy.authorize(&private, "cam1", now()).unwrap_err();
    assert!(matches!(unsigned, Refusal::AccessDenied(_)), "{unsigned:?}");
    assert!(unsigned.to_string().starts_with("AccessDenied: bucket examplebucket is not public-read-write"));
    assert!(policy.authorize(&bucket(Acl::PublicRead, false), "cam1", now()).is_err(), "public-read is not enough");
    let expired = policy.authorize(&private, &signed("cam1", None, NOW - 1, "SECRET"), now()).unwrap_err();
    assert_eq!(expired, Refusal::AccessDenied("the signed URL has expired".into()));
    for bad in
        [signed("cam1", None, NOW + 60, "WRONG"), signed("other", None, NOW + 60, "SECRET").replace("other", "cam1")]
    {
        let refusal = policy.authorize(&open, &bad, now()).unwrap_err();
        assert_eq!((refusal.rtmp_status(), refusal.oss_code()), ("NetStream.Publish.Rejected", "AccessDenied"));
    }
    assert_eq!(policy.authorize(&open, "cam1?token=x&userId=alice", now()).unwrap().user_args, "token=x&userId=alice");
}

#[test]
fn names_and_queries_that_are_not_valid_are_refused_as_bad_names() {
    let keys = keys("AK", "SECRET");
    let policy = Policy { keys: &keys };
    let open = bucket(Acl::PublicReadWrite, false);
    for key in ["..", "", "a#b", &"x".repeat(65)] {
        let refusal = policy.authorize(&open, key, now()).unwrap_err();
        assert!(matches!(refusal, Refusal::BadName(_)), "{key:?}: {refusal:?}");
        assert_eq!(refusal.rtmp_status(), "NetStream.Publish.BadName");
    }
    assert_eq!(policy.authorize(&open, "cam1?x=%zz", now()).unwrap_err(), Refusal::BadQuery);
    assert_eq!(Refusal::NotConnected.rtmp_status(), "NetStream.Publish.BadConnection");
}

#[test]
fn the_channel_must_exist_or_be_auto_created_and_must_be_enabled() {
    let keys = keys("AK", "SECRET");
    let policy = Policy { keys: &keys };
    let who = policy.authorize(&bucket(Acl::PublicReadWrite, false), "cam1", now()).unwrap();
    let missing = policy.admit(&who, None).unwrap_err();
    assert_eq!(missing.to_string(), "NoSuchLiveChannel: channel examplebucket/cam1 does not exist");
    assert_eq!(missing.oss_code(), "NoSuchLiveChannel");
    let disabled = policy.admit(&who, Some(&record(ChannelStatus::Disabled))).unwrap_err();
    assert_eq!(disabled.to_string(), "LiveChannelDisabled: Live channel is disabled by owner.");
    assert_eq!(
        policy.admit(&who, Some(&record(ChannelStatus::Enabled))).unwrap(),
        Admission::Admit(ChannelSettings::default())
    );
    let auto = policy.authorize(&bucket(Acl::PublicReadWrite, true), "cam1", now()).unwrap();
    assert_eq!(policy.admit(&auto, None).unwrap(), Admission::Create);
    assert_eq!(policy.admit(&auto, Some(&record(ChannelStatus::Disabled))).unwrap_err(), Refusal::Disabled);
}

#[test]
fn a_signed_playlist_name_selects_the_playlist_of_this_publish_and_is_validated() {
    let keys = keys("AK", "SECRET");
    let policy = Policy { keys: &keys };
    let private = bucket(Acl::Private, false);
    let who = policy.authorize(&private, &signed("cam1", Some("event.m3u8"), NOW + 60, "SECRET"), now()).unwrap();
    let Admission::Admit(settings) = policy.admit(&who, Some(&record(ChannelStatus::Enabled))).unwrap() else {
        panic!("not admitted")
    };
    assert_eq!(settings.playlist_name, "event.m3u8");
    let bad = policy.authorize(&private, &signed("cam1", Some("x.txt"), NOW + 60, "SECRET"), now()).unwrap();
    let refusal = policy.admit(&bad, Some(&record(ChannelStatus::Enabled))).unwrap_err();
    assert!(matches!(refusal, Refusal::InvalidPlaylistName(_)), "{refusal:?}");
    assert!(refusal.to_string().starts_with("InvalidArgument: "), "{refusal}");
}

#[test]
fn the_query_string_is_parameters_not_part_of_the_channel_name() {
    assert_eq!(parse_stream_key("demo"), ("demo", vec![]));
    let (name, params) = parse_stream_key("demo?Expires=1&Signature=abc%3D&playlistName=x.m3u8&flag");
    assert_eq!(name, "demo");
    assert_eq!(params, vec![("Expires", "1"), ("Signature", "abc%3D"), ("playlistName", "x.m3u8"), ("flag", "")]);
}
