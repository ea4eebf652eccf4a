//! Bytes from outside never panic the parsers or the ingest path: arbitrary FLV tag bodies, AVC and AAC
//! configurations, FLV files, streams of random tags, LiveChannelConfiguration bodies, OSS credentials
//! and signed RTMP query strings all give values or errors.

use std::time::SystemTime;

use bytes::Bytes;
use livechannel::api::oss::parse_configuration;
use livechannel::auth::{Keys, oss, parse_query};
use livechannel::config::{AccessKey, ChannelSettings};
use livechannel::flv::{self, avc, file};
use livechannel::hls::SegmenterConfig;
use livechannel::ingest::Ingest;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tag_and_config_parsers_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let b = Bytes::from(data.clone());
        let _ = flv::parse_video(&b);
        let _ = flv::parse_audio(&b);
        let _ = avc::parse_config(&b);
        let _ = flv::aac::parse_config(&data);
        let _ = avc::sps_picture_size(&data);
        let _ = avc::nal_units(&data, 4).count();
        let _ = file::parse(b);
    }

    #[test]
    fn ingest_takes_any_sequence_of_tags(
        tags in proptest::collection::vec((any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..60),
        prefix_video in proptest::sample::select(vec![0x17u8, 0x27, 0x12]),
        prefix_audio in proptest::sample::select(vec![0xafu8, 0x2f]),
    ) {
        let mut ingest = Ingest::new(SegmenterConfig::new(1));
        let mut out = Vec::new();
        // Valid configurations first, so random frames reach the muxer too.
        let avc_config = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce]);
        let _ = ingest.video(&avc_config, 0, SystemTime::UNIX_EPOCH, &mut out);
        let _ = ingest.audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), 0, SystemTime::UNIX_EPOCH, &mut out);
        for (is_video, ts, body) in tags {
            let mut b = vec![if is_video { prefix_video } else { prefix_audio }];
            b.extend(body);
            let b = Bytes::from(b);
            let _ = if is_video {
                ingest.video(&b, ts, SystemTime::UNIX_EPOCH, &mut out)
            } else {
                ingest.audio(&b, ts, SystemTime::UNIX_EPOCH, &mut out)
            };
        }
        ingest.finish(&mut out);
    }

    #[test]
    fn channel_configuration_bodies_of_any_shape_give_a_record_or_an_error(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "<LiveChannelConfiguration>", "</LiveChannelConfiguration>", "<Target>", "</Target>", "<Type>HLS</Type>",
            "<FragDuration>", "</FragDuration>", "<FragCount>3</FragCount>", "<PlaylistName>", "</PlaylistName>",
            "<Snapshot>", "</Snapshot>", "<Interval>", "</Interval>", "<Status>", "</Status>", "<Description/>",
            "5", "-1", "99999999999999999999", "a.m3u8", "&amp;", "&bogus;", "<![CDATA[x]]>", "<!--c-->", "\u{0}", "é",
        ]), 0..24),
    ) {
        let body = parts.concat();
        let _ = parse_configuration(body.as_bytes(), "ch", &ChannelSettings::default(), SystemTime::now());
    }

    #[test]
    fn credentials_of_any_shape_give_a_principal_or_an_error(
        auth in "(OSS |OSS4-HMAC-SHA256 )?[A-Za-z0-9=,/:; +]{0,80}",
        date in "[A-Za-z0-9 ,:]{0,40}",
        query in "[A-Za-z0-9=&%+._-]{0,80}",
    ) {
        let keys = Keys::new(vec![AccessKey { id: "AK".into(), secret: "SK".into() }]);
        let mut headers = hyper::HeaderMap::new();
        if let (Ok(a), Ok(d)) = (hyper::header::HeaderValue::from_str(&auth), hyper::header::HeaderValue::from_str(&date)) {
            headers.insert("authorization", a);
            headers.insert("date", d.clone());
            headers.insert("x-oss-date", d);
        }
        let params = parse_query(&query).unwrap_or_default();
        let req = oss::Request { method: "GET", bucket: Some("b"), key: "k", query: &params, headers: &headers };
        let _ = oss::verify(&req, &keys, SystemTime::now());
        let _ = oss::verify_rtmp("b", "k", &params, &keys, SystemTime::now());
    }
}

/// No parser of outside input recurses per nesting level: 100,000 levels of XML, inside a known element
/// and as an unknown one, give an answer (here: an error), not a stack overflow.
#[test]
fn deeply_nested_xml_bodies_are_answered() {
    for wrapper in ["Target", "Unknown"] {
        let depth = 100_000;
        let body = format!(
            "<LiveChannelConfiguration><{wrapper}>{}{}</{wrapper}></LiveChannelConfiguration>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        let parsed = parse_configuration(body.as_bytes(), "ch", &ChannelSettings::default(), SystemTime::now());
        let err = parsed.err().unwrap_or_else(|| panic!("<{wrapper}> of nested elements accepted"));
        assert_eq!(err.status, 400, "{wrapper}: {err:?}");
    }
}
