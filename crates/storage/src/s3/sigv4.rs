//! AWS Signature Version 4 for S3: canonical requests, the signing key chain (HMAC-SHA256 on `sha2`),
//! the `Authorization` header and query-string presigning, plus the UTC date handling they need.
//!
//! Pure functions over strings and bytes: no I/O, no clock reads (the caller passes the time), so the
//! AWS documentation's examples can be asserted byte for byte. Never logs or returns a secret key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

/// SHA-256 of the empty string, the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key, its secret and an optional session token (temporary credentials).
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optionally) `AWS_SESSION_TOKEN`, as every S3
    /// tool reads them; `None` unless both keys are set and non-empty.
    pub fn from_env() -> Option<Credentials> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Credentials {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// URI-encodes `s` the way SigV4 wants: every byte but `A-Za-z0-9-_.~` as `%XX` (upper case), and `/`
/// kept as is unless `encode_slash`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical query string of `(name, value)` pairs (unencoded): each encoded, sorted by name then
/// value, joined with `&`.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (uri_encode(k, true), uri_encode(v, true))).collect();
    enc.sort();
    enc.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A request time in the two forms SigV4 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `YYYYMMDD`
    pub date: String,
    /// `YYYYMMDDTHHMMSSZ`
    pub datetime: String,
}

impl Stamp {
    pub fn at(t: SystemTime) -> Stamp {
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        let date = format!("{y:04}{m:02}{d:02}");
        let datetime = format!("{date}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60);
        Stamp { date, datetime }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_time(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> Option<SystemTime> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, mo, d)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60 + s))
}

/// Parses an S3 XML timestamp, `2024-01-31T12:34:56.789Z` (fraction optional).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let rest = rest.strip_prefix('.').map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit())).unwrap_or(rest);
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    to_time(y as i64, mo as u32, d as u32, h, mi, sec)
}

/// Parses an HTTP date (`Last-Modified`), `Tue, 02 Jan 2024 03:04:05 GMT`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, hms, "GMT"] = parts[..] else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mo = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, mi, sec] = t[..] else { return None };
    to_time(y.parse().ok()?, mo, d.parse().ok()?, h, mi, sec)
}

/// What a signature covers besides the credentials.
pub struct Request<'a> {
    pub method: &'a str,
    /// The URI-encoded absolute path, e.g. `/bucket/blobs/sha256/ab/ab12…`.
    pub canonical_uri: &'a str,
    /// From [`canonical_query`].
    pub canonical_query: &'a str,
    /// Headers to sign (any case; `host` must be among them), values as sent.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

fn scope(stamp: &Stamp, region: &str) -> String {
    format!("{}/{region}/s3/aws4_request", stamp.date)
}

fn signing_key(secret: &str, stamp: &Stamp, region: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), stamp.date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    hmac(&k_service, b"aws4_request")
}

/// Canonical headers block and the signed-headers list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    hs.sort();
    let block: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = hs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    (block, names)
}

/// The signature (hex) of `req` and its signed-headers list.
pub fn signature(creds: &Credentials, region: &str, stamp: &Stamp, req: &Request<'_>) -> (String, String) {
    let (block, signed) = canonical_headers(req.headers);
    let creq = format!(
        "{}\n{}\n{}\n{block}\n{signed}\n{}",
        req.method, req.canonical_uri, req.canonical_query, req.payload_hash
    );
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{}\n{}\n{}", stamp.datetime, scope(stamp, region), sha256_hex(creq.as_bytes()));
    let sig = hex(&hmac(&signing_key(&creds.secret_access_key, stamp, region), to_sign.as_bytes()));
    (sig, signed)
}

/// The `Authorization` header value for `req` (whose headers must already include `x-amz-date`,
/// `x-amz-content-sha256` and, with a session token, `x-amz-security-token`).
pub fn authorization(creds: &Credentials, region: &str, stamp: &Stamp, req: &Request<'_>) -> String {
    let (sig, signed) = signature(creds, region, stamp, req);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={signed},Signature={sig}",
        creds.access_key_id,
        scope(stamp, region)
    )
}

/// The query string (without `?`) of a presigned request: `method` on `canonical_uri` at `host`,
/// valid for `expires` from `stamp`. Only `host` is signed, so any client can use the URL as is.
pub fn presigned_query(
    creds: &Credentials,
    region: &str,
    stamp: &Stamp,
    method: &str,
    host: &str,
    canonical_uri: &str,
    expires: Duration,
) -> String {
    let mut q = vec![
        ("X-Amz-Algorithm".to_string(), "AWS4-HMAC-SHA256".to_string()),
        ("X-Amz-Credential".to_string(), format!("{}/{}", creds.access_key_id, scope(stamp, region))),
        ("X-Amz-Date".to_string(), stamp.datetime.clone()),
        ("X-Amz-Expires".to_string(), expires.as_secs().clamp(1, 604_800).to_string()),
        ("X-Amz-SignedHeaders".to_string(), "host".to_string()),
    ];
    if let Some(t) = &creds.session_token {
        q.push(("X-Amz-Security-Token".to_string(), t.clone()));
    }
    let cq = canonical_query(&q);
    let headers = [("host".to_string(), host.to_string())];
    let req =
        Request { method, canonical_uri, canonical_query: &cq, headers: &headers, payload_hash: "UNSIGNED-PAYLOAD" };
    let (sig, _) = signature(creds, region, stamp, &req);
    format!("{cq}&X-Amz-Signature={sig}")
}

#[cfg(test)]
mod tests {
    //! The examples of the S3 documentation ("Signature Calculations for the Authorization Header" and
    //! "Authenticating Requests: Using Query Parameters"), asserted exactly.
    use super::*;

    fn example_creds() -> Credentials {
        Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    }

    fn example_stamp() -> Stamp {
        let s = Stamp::at(UNIX_EPOCH + Duration::from_secs(1_369_353_600));
        assert_eq!(s, Stamp { date: "20130524".into(), datetime: "20130524T000000Z".into() });
        s
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn get_object_with_range() {
        let stamp = example_stamp();
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let req = Request {
            method: "GET",
            canonical_uri: "/test.txt",
            canonical_query: "",
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            authorization(&example_creds(), "us-east-1", &stamp, &req),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn put_object_with_payload() {
        let stamp = example_stamp();
        let payload = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        let headers = h(&[
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]);
        let uri = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(uri, "/test%24file.text");
        let req = Request {
            method: "PUT",
            canonical_uri: &uri,
            canonical_query: "",
            headers: &headers,
            payload_hash: &payload,
        };
        let (sig, signed) = signature(&example_creds(), "us-east-1", &stamp, &req);
        assert_eq!(signed, "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
        assert_eq!(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    }

    #[test]
    fn list_objects_with_query() {
        let stamp = example_stamp();
        let headers = h(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let q = canonical_query(&[("prefix".into(), "J".into()), ("max-keys".into(), "2".into())]);
        assert_eq!(q, "max-keys=2&prefix=J");
        let req = Request {
            method: "GET",
            canonical_uri: "/",
            canonical_query: &q,
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        let (sig, _) = signature(&example_creds(), "us-east-1", &stamp, &req);
        assert_eq!(sig, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    }

    #[test]
    fn presigned_get() {
        let stamp = example_stamp();
        let q = presigned_query(
            &example_creds(),
            "us-east-1",
            &stamp,
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            Duration::from_secs(86_400),
        );
        assert_eq!(
            q,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(uri_encode("a b+c/d~", false), "a%20b%2Bc/d~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode("é", true), "%C3%A9");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Stamp::at(t).date, "20000229");
        assert_eq!(parse_iso8601("2000-02-29T00:00:00.000Z"), Some(t));
        assert_eq!(parse_iso8601("2000-02-29T00:00:00Z"), Some(t));
        assert_eq!(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"), Some(t));
        assert_eq!(parse_iso8601("2013-05-24T01:02:03Z"), Some(UNIX_EPOCH + Duration::from_secs(1_369_353_600 + 3723)));
        assert_eq!(parse_iso8601("2013-13-24T01:02:03Z"), None);
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
