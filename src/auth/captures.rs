//! Test helpers over `fixtures/spec/`: the signature vectors, a key set, and the raw SDK requests in `fixtures/spec/captures/*.txt` (request line, headers in
//! order, blank line, body; requests separated by lines of dashes or equals signs).

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

/// `fixtures/spec/vectors.json`.
pub fn vectors() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors.json")).expect("vectors.json parses")
}

/// A key set holding one access key.
pub fn keys(id: &str, secret: &str) -> super::Keys {
    super::Keys::new(vec![crate::config::AccessKey { id: id.into(), secret: secret.into() }])
}

pub struct Captured {
    pub method: String,
    /// Path as sent (still percent-encoded), without the query.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: String,
    /// Lines of the capture file that are not requests (RESULT, RTMP URLs).
    pub file_notes: Vec<String>,
}

pub fn load(name: &str) -> Vec<Captured> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec/captures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let notes: Vec<String> =
        text.lines().filter(|l| l.starts_with("RESULT") || l.starts_with("RTMP")).map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let is_separator = |l: &str| l.len() >= 10 && (l.bytes().all(|b| b == b'-') || l.bytes().all(|b| b == b'='));
    for line in text.lines().chain(std::iter::once("----------")) {
        if is_separator(line) {
            if let Some(req) = parse_block(&block, &notes) {
                out.push(req);
            }
            block.clear();
        } else {
            block.push(line);
        }
    }
    out
}

fn parse_block(lines: &[&str], notes: &[String]) -> Option<Captured> {
    let start = lines.iter().position(|l| l.contains(" HTTP/1.1") && l.as_bytes()[0].is_ascii_uppercase())?;
    let mut parts = lines[start].split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    let mut i = start + 1;
    while i < lines.len() && !lines[i].is_empty() {
        let (name, value) = lines[i].split_once(':')?;
        headers.append(HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value.trim()).ok()?);
        i += 1;
    }
    let body = lines.get(i + 1..).map(|rest| rest.join("\n")).unwrap_or_default();
    Some(Captured {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: body.trim_end().to_owned(),
        file_notes: notes.to_vec(),
    })
}
