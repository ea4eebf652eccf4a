//! Names that come from outside (stream keys, URL paths) and become object keys: a channel's address,
//! [`ChannelKey`], and the rules that keep every key inside its channel's folder. A leaf: everything that
//! turns a name into a key (storage, API, publish, the live registry) goes through here.
//!
//! Refused: empty names, `.` and `..`, `/`, `\\`, `#` (the local store's marker for uploads in progress),
//! `%`, `?`, `*` and control characters.

use object_store::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// Checks one path component that came from outside (stream key, URL).
pub fn validate_component(name: &str, max_len: usize) -> Result<(), NameError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > max_len {
        Some("too long")
    } else if name == "." || name == ".." {
        Some("a relative path component")
    } else if name.chars().any(|c| c.is_control() || matches!(c, '/' | '\\' | '#' | '%' | '?' | '*')) {
        Some("contains a character that is not allowed (/ \\ # % ? * or a control character)")
    } else if name.chars().any(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}') || ('\u{FDD0}'..='\u{FDEF}').contains(&c)) {
        // Not characters XML may carry: one such name would make every ListLiveChannel of its bucket invalid.
        Some("contains a Unicode noncharacter (U+FFFE, U+FFFF, U+FDD0-U+FDEF)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError { name: name.chars().take(80).collect(), reason }),
        None => Ok(()),
    }
}

/// A channel's address: bucket and channel name, both validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    bucket: String,
    channel: String,
}

impl ChannelKey {
    /// OSS allows channel names up to 64 bytes without '/'.
    pub fn new(bucket: &str, channel: &str) -> Result<Self, NameError> {
        validate_component(bucket, 63)?;
        validate_component(channel, 64)?;
        Ok(ChannelKey { bucket: bucket.to_owned(), channel: channel.to_owned() })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn prefix(&self) -> Path {
        Path::from_iter([self.bucket.as_str(), self.channel.as_str()])
    }

    /// The key of a file in this channel's folder; the file name is validated too.
    pub fn object(&self, file: &str) -> Result<Path, NameError> {
        validate_component(file, 128)?;
        Ok(Path::from_iter([self.bucket.as_str(), self.channel.as_str(), file]))
    }
}

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_channel_folder_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "x#1", "a%2e", "new\nline", "q?x"] {
            assert!(ChannelKey::new("live", bad).is_err(), "{bad:?} accepted");
        }
        assert!(ChannelKey::new("live", &"x".repeat(65)).is_err());
        // XML cannot carry these: one such name would break ListLiveChannel for the whole bucket.
        for bad in ["a\u{FFFF}", "\u{FFFE}", "x\u{FDD0}"] {
            assert!(ChannelKey::new("live", bad).is_err(), "{bad:?} accepted");
        }
        let key = ChannelKey::new("live", "demo-1_ü").unwrap();
        assert!(key.object("../x.ts").is_err());
        // object_store percent-encodes non-ASCII in keys; reads and writes both go through `object`.
        assert_eq!(key.object("7.ts").unwrap().as_ref(), "live/demo-1_%C3%BC/7.ts");
    }
}
