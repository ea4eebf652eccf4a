//! ListObjects (V1) and ListObjectsV2 paging, sans I/O: the object keys of a bucket go in (in any order,
//! as the local store lists them), one page comes out — prefix filter, delimiter roll-up into common
//! prefixes, resumption after a marker, max-keys — and is written as OSS's `ListBucketResult` XML.
//! The API shell (`objects::list_objects`) does the store listing and the HTTP.

use std::collections::BTreeMap;
use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

/// One stored object, its key relative to the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
    pub etag: Option<String>,
}

/// What the request asks for. `after` is V1's marker, or V2's continuation-token or start-after.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub prefix: &'a str,
    pub delimiter: &'a str,
    pub after: &'a str,
    pub max_keys: usize,
}

/// A rolled-up listing row: an object, or a common prefix standing for every key under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Object(Entry),
    Prefix(String),
}

#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<Row>,
    pub truncated: bool,
    /// The last row's name when truncated: the next page starts after it.
    pub next: Option<String>,
}

/// Collects one page from keys in any order, holding at most `max_keys + 1` rows: the smallest names
/// after the marker win. A row is compared by its rolled-up name, so a marker that is a common prefix
/// skips every key under it, as S3 and OSS do.
pub struct Pager<'a> {
    query: Query<'a>,
    rows: BTreeMap<String, Option<Entry>>,
}

impl<'a> Pager<'a> {
    pub fn new(query: Query<'a>) -> Self {
        Pager { query, rows: BTreeMap::new() }
    }

    pub fn push(&mut self, entry: Entry) {
        let Some(rest) = entry.key.strip_prefix(self.query.prefix) else { return };
        let d = self.query.delimiter;
        let rolled = (!d.is_empty()).then(|| rest.find(d)).flatten().map(|i| self.query.prefix.len() + i + d.len());
        let name = match rolled {
            Some(end) => &entry.key[..end],
            None => entry.key.as_str(),
        };
        if name <= self.query.after || self.rows.contains_key(name) {
            return;
        }
        let keep = self.query.max_keys + 1;
        if self.rows.len() >= keep && self.rows.last_key_value().is_some_and(|(last, _)| name >= last.as_str()) {
            return;
        }
        let name = name.to_owned();
        self.rows.insert(name, rolled.is_none().then_some(entry));
        if self.rows.len() > keep {
            self.rows.pop_last();
        }
    }

    pub fn finish(self) -> Page {
        let max = self.query.max_keys;
        let truncated = self.rows.len() > max;
        let rows: Vec<Row> = self
            .rows
            .into_iter()
            .take(max)
            .map(|(name, entry)| match entry {
                Some(e) => Row::Object(e),
                None => Row::Prefix(name),
            })
            .collect();
        let next = truncated.then(|| rows.last()).flatten().map(|r| match r {
            Row::Object(e) => e.key.clone(),
            Row::Prefix(p) => p.clone(),
        });
        Page { rows, truncated, next }
    }
}

/// Which call is answered: the fields of the XML differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version<'a> {
    V1 { marker: &'a str },
    V2 { continuation_token: Option<&'a str>, start_after: Option<&'a str>, fetch_owner: bool },
}

/// `encoding-type=url`: what oss2 asks for by default, so that keys with any character survive XML.
/// OSS encodes like `quote_plus` minus the safe set; `/` stays, as in the keys the SDKs print.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

#[derive(Serialize)]
#[serde(rename = "ListBucketResult")]
struct Xml<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Prefix")]
    prefix: String,
    #[serde(rename = "Marker", skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
    #[serde(rename = "ContinuationToken", skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
    #[serde(rename = "StartAfter", skip_serializing_if = "Option::is_none")]
    start_after: Option<String>,
    #[serde(rename = "MaxKeys")]
    max_keys: usize,
    #[serde(rename = "Delimiter")]
    delimiter: String,
    #[serde(rename = "EncodingType", skip_serializing_if = "Option::is_none")]
    encoding_type: Option<&'static str>,
    #[serde(rename = "IsTruncated")]
    is_truncated: bool,
    #[serde(rename = "NextMarker", skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    #[serde(rename = "NextContinuationToken", skip_serializing_if = "Option::is_none")]
    next_continuation_token: Option<String>,
    #[serde(rename = "KeyCount", skip_serializing_if = "Option::is_none")]
    key_count: Option<usize>,
    #[serde(rename = "Contents")]
    contents: Vec<Contents>,
    #[serde(rename = "CommonPrefixes")]
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Serialize)]
struct Contents {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "LastModified")]
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "StorageClass")]
    storage_class: &'static str,
    #[serde(rename = "Owner", skip_serializing_if = "Option::is_none")]
    owner: Option<Owner<'static>>,
}

#[derive(Serialize)]
struct Owner<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "DisplayName")]
    display_name: &'a str,
}

#[derive(Serialize)]
struct CommonPrefix {
    #[serde(rename = "Prefix")]
    prefix: String,
}

/// The page as OSS's XML. `url_encoded` applies `encoding-type=url` to every key-like field.
pub fn to_xml(bucket: &str, query: &Query, version: &Version, url_encoded: bool, page: &Page) -> String {
    let enc = |s: &str| if url_encoded { utf8_percent_encode(s, URL_ENCODE).to_string() } else { s.to_owned() };
    let v2 = matches!(version, Version::V2 { .. });
    let fetch_owner = match version {
        Version::V1 { .. } => true,
        Version::V2 { fetch_owner, .. } => *fetch_owner,
    };
    let mut contents = Vec::new();
    let mut common_prefixes = Vec::new();
    for row in &page.rows {
        match row {
            Row::Object(e) => contents.push(Contents {
                key: enc(&e.key),
                last_modified: crate::wire::oss_time(e.modified),
                etag: super::conditional::quoted(e.etag.as_deref().unwrap_or("")),
                kind: "Normal",
                size: e.size,
                storage_class: "Standard",
                owner: fetch_owner.then_some(Owner { id: "livechannel", display_name: "livechannel" }),
            }),
            Row::Prefix(p) => common_prefixes.push(CommonPrefix { prefix: enc(p) }),
        }
    }
    let (marker, continuation_token, start_after) = match version {
        Version::V1 { marker } => (Some(enc(marker)), None, None),
        Version::V2 { continuation_token, start_after, .. } => {
            (None, continuation_token.map(&enc), start_after.map(&enc))
        }
    };
    let next = page.next.as_deref().map(&enc);
    let xml = Xml {
        name: bucket,
        prefix: enc(query.prefix),
        marker,
        continuation_token,
        start_after,
        max_keys: query.max_keys,
        delimiter: enc(query.delimiter),
        encoding_type: url_encoded.then_some("url"),
        is_truncated: page.truncated,
        next_marker: if v2 { None } else { next.clone() },
        next_continuation_token: if v2 { next } else { None },
        key_count: v2.then_some(page.rows.len()),
        contents,
        common_prefixes,
    };
    let body = quick_xml::se::to_string(&xml).unwrap_or_default();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}")
}

/// The body of DeleteMultipleObjects.
#[derive(Debug, serde::Deserialize)]
pub struct DeleteRequest {
    #[serde(rename = "Quiet", default)]
    pub quiet: bool,
    #[serde(rename = "Object", default)]
    pub objects: Vec<DeleteKey>,
}

#[derive(Debug, serde::Deserialize)]
pub struct DeleteKey {
    #[serde(rename = "Key")]
    pub key: String,
}

#[derive(Serialize)]
#[serde(rename = "DeleteResult")]
struct DeleteXml {
    #[serde(rename = "EncodingType", skip_serializing_if = "Option::is_none")]
    encoding_type: Option<&'static str>,
    #[serde(rename = "Deleted")]
    deleted: Vec<DeletedKey>,
    #[serde(rename = "Error")]
    errors: Vec<DeleteError>,
}

#[derive(Serialize)]
struct DeletedKey {
    #[serde(rename = "Key")]
    key: String,
}

#[derive(Serialize)]
struct DeleteError {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message")]
    message: String,
}

/// One key of a DeleteMultipleObjects request and how it went: deleted, or an OSS error code and message.
pub type DeleteOutcome<'a> = (&'a str, Result<(), (&'static str, String)>);

/// DeleteMultipleObjects' reply: deleted keys (left out when quiet) and the keys that failed, with why.
pub fn delete_result_xml(results: &[DeleteOutcome], quiet: bool, url_encoded: bool) -> String {
    let enc = |s: &str| if url_encoded { utf8_percent_encode(s, URL_ENCODE).to_string() } else { s.to_owned() };
    let mut xml = DeleteXml { encoding_type: url_encoded.then_some("url"), deleted: Vec::new(), errors: Vec::new() };
    for (key, outcome) in results {
        match outcome {
            Ok(()) if quiet => {}
            Ok(()) => xml.deleted.push(DeletedKey { key: enc(key) }),
            Err((code, message)) => {
                xml.errors.push(DeleteError { key: enc(key), code: (*code).to_owned(), message: message.clone() })
            }
        }
    }
    let body = quick_xml::se::to_string(&xml).unwrap_or_default();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        Entry { key: key.to_owned(), size: key.len() as u64, modified: SystemTime::UNIX_EPOCH, etag: Some("e".into()) }
    }

    fn page(
        keys: &[&str],
        prefix: &str,
        delimiter: &str,
        after: &str,
        max_keys: usize,
    ) -> (Vec<String>, Option<String>) {
        let mut pager = Pager::new(Query { prefix, delimiter, after, max_keys });
        for k in keys {
            pager.push(entry(k));
        }
        let p = pager.finish();
        let names = p
            .rows
            .iter()
            .map(|r| match r {
                Row::Object(e) => e.key.clone(),
                Row::Prefix(p) => format!("{p} (prefix)"),
            })
            .collect();
        assert_eq!(p.truncated, p.next.is_some());
        (names, p.next)
    }

    const KEYS: &[&str] = &["b/9.ts", "a/1.ts", "a/10.ts", "b/latest.jpg", "a/playlist.m3u8", "a/2.ts", "c.txt"];

    #[test]
    fn keys_come_out_sorted_and_filtered_whatever_order_they_came_in() {
        let (names, next) = page(KEYS, "a/", "", "", 100);
        assert_eq!(names, ["a/1.ts", "a/10.ts", "a/2.ts", "a/playlist.m3u8"]);
        assert_eq!(next, None);
        let (names, _) = page(KEYS, "a/1", "", "", 100);
        assert_eq!(names, ["a/1.ts", "a/10.ts"]);
    }

    #[test]
    fn a_delimiter_rolls_keys_up_into_common_prefixes() {
        let (names, _) = page(KEYS, "", "/", "", 100);
        assert_eq!(names, ["a/ (prefix)", "b/ (prefix)", "c.txt"]);
        let (names, _) = page(KEYS, "b/", "/", "", 100);
        assert_eq!(names, ["b/9.ts", "b/latest.jpg"]);
        let (names, _) = page(&["x/y/z", "x/y/w", "x/v"], "x/", "/", "", 100);
        assert_eq!(names, ["x/v", "x/y/ (prefix)"]);
    }

    #[test]
    fn pages_resume_after_the_marker_and_a_prefix_marker_skips_its_keys() {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let (names, next) = page(KEYS, "", "", &after, 2);
            assert!(names.len() <= 2);
            all.extend(names);
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        let mut sorted: Vec<String> = KEYS.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        assert_eq!(all, sorted);

        let (names, next) = page(KEYS, "", "/", "", 1);
        assert_eq!((names, next.as_deref()), (vec!["a/ (prefix)".to_owned()], Some("a/")));
        let (names, next) = page(KEYS, "", "/", "a/", 1);
        assert_eq!((names, next.as_deref()), (vec!["b/ (prefix)".to_owned()], Some("b/")));
        let (names, next) = page(KEYS, "", "/", "b/", 1);
        assert_eq!((names, next), (vec!["c.txt".to_owned()], None));
    }

    #[test]
    fn the_pager_holds_a_bounded_number_of_rows() {
        let mut pager = Pager::new(Query { prefix: "", delimiter: "", after: "", max_keys: 3 });
        for i in (0..10_000).rev() {
            pager.push(entry(&format!("k{i:05}")));
            assert!(pager.rows.len() <= 4);
        }
        let p = pager.finish();
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.next.as_deref(), Some("k00002"));
    }

    #[test]
    fn the_xml_carries_what_oss2_reads_and_url_encodes_keys() {
        let mut pager = Pager::new(Query { prefix: "dé", delimiter: "/", after: "", max_keys: 1 });
        for k in ["démo/1.ts", "démo/2.ts", "dé x.ts"] {
            pager.push(entry(k));
        }
        let page = pager.finish();
        let q = Query { prefix: "dé", delimiter: "/", after: "", max_keys: 1 };
        let xml = to_xml("live", &q, &Version::V1 { marker: "" }, true, &page);
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult><Name>live</Name>"),
            "{xml}"
        );
        for part in [
            "<Prefix>d%C3%A9</Prefix>",
            "<EncodingType>url</EncodingType>",
            "<IsTruncated>true</IsTruncated>",
            "<NextMarker>d%C3%A9%20x.ts</NextMarker>",
            "<Key>d%C3%A9%20x.ts</Key>",
            "<LastModified>1970-01-01T00:00:00.000Z</LastModified>",
            "<ETag>\"e\"</ETag>",
            "<Size>8</Size>",
            "<Delimiter>/</Delimiter>",
        ] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        assert!(!xml.contains("KeyCount"));
        let v2 = Version::V2 { continuation_token: Some("a<b"), start_after: None, fetch_owner: false };
        let xml = to_xml("live", &q, &v2, false, &page);
        for part in [
            "<ContinuationToken>a&lt;b</ContinuationToken>",
            "<KeyCount>1</KeyCount>",
            "<NextContinuationToken>dé x.ts</NextContinuationToken>",
        ] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        assert!(!xml.contains("<Owner>") && !xml.contains("<Marker>"));
    }
}
