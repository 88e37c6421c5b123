//! Byte ranges: the `Content-Range` of a chunked upload PATCH and the `Range` of a blob GET.

/// An inclusive byte range `start..=end` sent with an upload chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed range")]
    Malformed,
    #[error("range not satisfiable")]
    Unsatisfiable,
}

impl ContentRange {
    /// Parses `<start>-<end>` as the distribution spec writes it, also accepting the `bytes ` /
    /// `bytes=` prefix and a `/<total>` or `/*` suffix that some clients send.
    pub fn parse(s: &str) -> Result<ContentRange, RangeError> {
        let s = s.trim();
        let s = s.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(s);
        let s = s.split('/').next().unwrap_or(s);
        let (a, b) = s.split_once('-').ok_or(RangeError::Malformed)?;
        let start = parse_u64(a)?;
        let end = parse_u64(b)?;
        if end < start {
            return Err(RangeError::Malformed);
        }
        Ok(ContentRange { start, end })
    }

    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

fn parse_u64(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

/// A resolved, satisfiable byte range of a blob: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

impl ByteRange {
    /// Resolves an HTTP `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against a blob of `size`
    /// bytes. Only a single range is supported; a header that is not a bytes range is `Malformed`
    /// (callers ignore it and serve the whole blob, as RFC 9110 allows).
    pub fn resolve(header: &str, size: u64) -> Result<ByteRange, RangeError> {
        let spec = header.trim().strip_prefix("bytes=").ok_or(RangeError::Malformed)?.trim();
        if spec.contains(',') {
            return Err(RangeError::Malformed);
        }
        let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            let n = parse_u64(b)?;
            if n == 0 || size == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            let n = n.min(size);
            return Ok(ByteRange { start: size - n, len: n });
        }
        let start = parse_u64(a)?;
        let end = if b.is_empty() { u64::MAX } else { parse_u64(b)? };
        if end < start {
            return Err(RangeError::Malformed);
        }
        if start >= size {
            return Err(RangeError::Unsatisfiable);
        }
        let end = end.min(size - 1);
        Ok(ByteRange { start, len: end - start + 1 })
    }

    pub fn end_inclusive(&self) -> u64 {
        self.start + self.len - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(ContentRange::parse("0-99"), Ok(ContentRange { start: 0, end: 99 }));
        assert_eq!(ContentRange::parse("bytes 5-9/*"), Ok(ContentRange { start: 5, end: 9 }));
        assert_eq!(ContentRange::parse("bytes=5-9"), Ok(ContentRange { start: 5, end: 9 }));
        assert!(ContentRange::parse("9-5").is_err());
        assert!(ContentRange::parse("-5").is_err());
        assert!(ContentRange::parse("a-b").is_err());
        assert!(ContentRange::parse("+1-2").is_err());
        assert!(ContentRange::parse("99999999999999999999-1").is_err());
    }

    #[test]
    fn byte_range() {
        assert_eq!(ByteRange::resolve("bytes=0-9", 100), Ok(ByteRange { start: 0, len: 10 }));
        assert_eq!(ByteRange::resolve("bytes=90-", 100), Ok(ByteRange { start: 90, len: 10 }));
        assert_eq!(ByteRange::resolve("bytes=90-1000", 100), Ok(ByteRange { start: 90, len: 10 }));
        assert_eq!(ByteRange::resolve("bytes=-10", 100), Ok(ByteRange { start: 90, len: 10 }));
        assert_eq!(ByteRange::resolve("bytes=-1000", 100), Ok(ByteRange { start: 0, len: 100 }));
        assert_eq!(ByteRange::resolve("bytes=100-", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(ByteRange::resolve("bytes=-0", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(ByteRange::resolve("bytes=0-1,3-4", 100), Err(RangeError::Malformed));
        assert_eq!(ByteRange::resolve("items=0-1", 100), Err(RangeError::Malformed));
    }
}
