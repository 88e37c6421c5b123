//! Crash consistency: several threads push concurrently (monolithic `POST ?digest=`, chunked
//! `PATCH`+`PUT`, and manifests referencing pushed blobs) while the server is killed with SIGKILL at a
//! random moment, then restarted on the same data directory. After every restart:
//!
//! - the server starts (and answers `/v2/`);
//! - every blob the test attempted is either absent (404) or served whole: `Content-Length` equals its
//!   size and the bytes hash to its digest; every blob acknowledged with 201 before the kill is present;
//! - every manifest it serves (by digest or by tag) hashes to its digest and all blobs it references
//!   are present; every manifest acknowledged before the kill is present;
//! - no staged upload bytes are visible as a blob (prefixes of chunked uploads are never served, and
//!   every file in the blob directory hashes to its name);
//! - an upload session opened before the kill is either resumable (status 204 with a `Range` at a chunk
//!   boundary no earlier than the last acknowledged one, and finishing it yields the right blob) or
//!   cleanly unknown (404 `BLOB_UPLOAD_UNKNOWN`), never a 5xx.
//!
//! The run is seeded from the clock; set `ENTREPOT_CRASH_SEED=<n>` to replay a seed (the timing of the
//! kill still varies), and `ENTREPOT_CRASH_CYCLES=<n>` for more than 3 kill/restart cycles. Uses plain `TcpStream`s (one request per connection) so a kill can land in the
//! middle of a request body.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::Server;
use support::e2e::digest_of;

/// Kill/restart cycles (`ENTREPOT_CRASH_CYCLES` overrides, for longer soaks).
const CYCLES: usize = 3;
const WORKERS: usize = 6;
const REPOS: &[&str] = &["crash/alpha", "crash/beta", "crash/team/gamma"];
const TAGS: &[&str] = &["latest", "v1", "v2"];
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

// ------------------------------------------------------------------------------------------ randomness

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

// ------------------------------------------------------------------------------------------ HTTP

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body[..self.body.len().min(300)]))
    }
}

/// One request on a fresh connection (`Connection: close`). With `slow`, the body is written in small
/// pieces with pauses, so that a kill is likely to land in the middle of it.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    slow: bool,
) -> io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if slow {
        for piece in body.chunks(16 * 1024) {
            s.write_all(piece)?;
            thread::sleep(Duration::from_micros(500));
        }
    } else {
        s.write_all(body)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8], head: bool) -> io::Result<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("truncated response head"))?;
    let text = std::str::from_utf8(&raw[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = Resp { status, headers, body: raw[end + 4..].to_vec() };
    if head {
        resp.body.clear();
        return Ok(resp);
    }
    if resp.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        resp.body = dechunk(&resp.body)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if resp.body.len() != len {
            return Err(bad(format!("body of {} bytes, Content-Length {len}", resp.body.len())));
        }
    }
    Ok(resp)
}

fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ------------------------------------------------------------------------------------------ what was tried

struct BlobAttempt {
    repo: String,
    digest: String,
    size: usize,
    acked: bool,
}

struct ManifestAttempt {
    repo: String,
    digest: String,
    tag: Option<String>,
    bytes: Vec<u8>,
    acked: bool,
}

struct SessionAttempt {
    repo: String,
    location: String,
    data: Vec<u8>,
    digest: String,
    /// Offsets at which a chunk ends (the last one is the blob's size).
    boundaries: Vec<usize>,
    /// The offset of the last acknowledged PATCH.
    acked_offset: usize,
    /// The final PUT was acknowledged.
    finished: bool,
}

#[derive(Default)]
struct Log {
    blobs: Vec<BlobAttempt>,
    manifests: Vec<ManifestAttempt>,
    sessions: Vec<SessionAttempt>,
    /// `(repo, digest)` of proper prefixes of chunked uploads: staged bytes that must never be a blob.
    prefixes: Vec<(String, String)>,
    /// Anything that went wrong while the server was alive.
    unexpected: Vec<String>,
    /// Operations cut short by the kill.
    interrupted: usize,
    completed: usize,
}

impl Log {
    fn absorb(&mut self, other: Log) {
        self.blobs.extend(other.blobs);
        self.manifests.extend(other.manifests);
        self.sessions.extend(other.sessions);
        self.prefixes.extend(other.prefixes);
        self.unexpected.extend(other.unexpected);
        self.interrupted += other.interrupted;
        self.completed += other.completed;
    }
}

struct Shared {
    addr: String,
    /// Set just before the kill: I/O errors after this are expected.
    killing: AtomicBool,
    in_flight: AtomicUsize,
    completed: AtomicUsize,
    /// Blobs acknowledged with 201, per repository, for manifests to reference.
    acked: Mutex<HashMap<String, Vec<(String, usize)>>>,
}

enum OpError {
    /// The connection failed (expected once the server is killed).
    Io(String),
    /// The server answered something other than success: always a failure.
    Status(String),
}

impl From<io::Error> for OpError {
    fn from(e: io::Error) -> OpError {
        OpError::Io(e.to_string())
    }
}

fn expect_status(r: &Resp, want: u16, what: &str) -> Result<(), OpError> {
    if r.status == want {
        Ok(())
    } else {
        Err(OpError::Status(format!("{what}: expected {want}, got {}", r.describe())))
    }
}

// ------------------------------------------------------------------------------------------ workers

fn worker(shared: Arc<Shared>, seed: u64) -> Log {
    let mut rng = Rng::new(seed);
    let mut log = Log::default();
    while !shared.killing.load(Ordering::SeqCst) {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = match rng.below(10) {
            0..=3 => push_monolithic(&shared, &mut rng, &mut log),
            4..=6 => push_chunked(&shared, &mut rng, &mut log),
            _ => push_manifest(&shared, &mut rng, &mut log),
        };
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(()) => {
                log.completed += 1;
                shared.completed.fetch_add(1, Ordering::SeqCst);
            }
            Err(OpError::Io(e)) => {
                if shared.killing.load(Ordering::SeqCst) {
                    log.interrupted += 1;
                } else {
                    log.unexpected.push(format!("I/O error while the server was up: {e}"));
                }
                break;
            }
            Err(OpError::Status(e)) => {
                log.unexpected.push(e);
                break;
            }
        }
    }
    log
}

fn ack_blob(shared: &Shared, log: &mut Log, idx: usize) {
    let b = &mut log.blobs[idx];
    b.acked = true;
    let mut acked = shared.acked.lock().unwrap_or_else(|p| p.into_inner());
    acked.entry(b.repo.clone()).or_default().push((b.digest.clone(), b.size));
}

fn push_monolithic(shared: &Shared, rng: &mut Rng, log: &mut Log) -> Result<(), OpError> {
    let repo = rng.pick(REPOS).to_string();
    let size = rng.range(1, 256 * 1024);
    let data = rng.bytes(size);
    let digest = digest_of(&data);
    let slow = rng.below(2) == 0;
    log.blobs.push(BlobAttempt { repo: repo.clone(), digest: digest.clone(), size, acked: false });
    let idx = log.blobs.len() - 1;
    let r = request(
        &shared.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        &data,
        slow,
    )?;
    expect_status(&r, 201, "monolithic POST")?;
    ack_blob(shared, log, idx);
    Ok(())
}

fn push_chunked(shared: &Shared, rng: &mut Rng, log: &mut Log) -> Result<(), OpError> {
    let repo = rng.pick(REPOS).to_string();
    let chunks = rng.range(2, 5);
    let mut boundaries = Vec::new();
    let mut size = 0;
    for _ in 0..chunks {
        size += rng.range(1024, 96 * 1024);
        boundaries.push(size);
    }
    let data = rng.bytes(size);
    let digest = digest_of(&data);
    let slow = rng.below(2) == 0;
    // The last chunk goes with the PUT half of the time.
    let last_in_put = rng.below(2) == 0;
    log.blobs.push(BlobAttempt { repo: repo.clone(), digest: digest.clone(), size, acked: false });
    let blob_idx = log.blobs.len() - 1;
    for &b in &boundaries[..boundaries.len() - 1] {
        log.prefixes.push((repo.clone(), digest_of(&data[..b])));
    }

    let r = request(&shared.addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[], false)?;
    expect_status(&r, 202, "start upload")?;
    let location = r
        .header("location")
        .ok_or_else(|| OpError::Status("start upload: no Location".into()))?
        .trim_start_matches(&format!("http://{}", shared.addr))
        .to_string();
    log.sessions.push(SessionAttempt {
        repo: repo.clone(),
        location: location.clone(),
        data: data.clone(),
        digest: digest.clone(),
        boundaries: boundaries.clone(),
        acked_offset: 0,
        finished: false,
    });
    let sess_idx = log.sessions.len() - 1;

    let patched = if last_in_put { boundaries.len() - 1 } else { boundaries.len() };
    let mut start = 0;
    for &end in &boundaries[..patched] {
        let range = format!("{start}-{}", end - 1);
        let r = request(
            &shared.addr,
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &data[start..end],
            slow,
        )?;
        expect_status(&r, 202, "PATCH chunk")?;
        if r.header("range") != Some(format!("0-{}", end - 1).as_str()) {
            return Err(OpError::Status(format!("PATCH {range}: Range {:?}", r.header("range"))));
        }
        log.sessions[sess_idx].acked_offset = end;
        start = end;
    }
    let put_path = format!("{location}?digest={digest}");
    let r = if last_in_put {
        let range = format!("{start}-{}", size - 1);
        request(
            &shared.addr,
            "PUT",
            &put_path,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &data[start..],
            slow,
        )?
    } else {
        request(&shared.addr, "PUT", &put_path, &[], &[], false)?
    };
    expect_status(&r, 201, "PUT finishing a chunked upload")?;
    log.sessions[sess_idx].finished = true;
    ack_blob(shared, log, blob_idx);
    Ok(())
}

fn push_manifest(shared: &Shared, rng: &mut Rng, log: &mut Log) -> Result<(), OpError> {
    let repo = rng.pick(REPOS).to_string();
    let blobs = {
        let acked = shared.acked.lock().unwrap_or_else(|p| p.into_inner());
        acked.get(&repo).cloned().unwrap_or_default()
    };
    if blobs.len() < 2 {
        return push_monolithic(shared, rng, log);
    }
    let desc = |media: &str, (d, s): &(String, usize)| serde_json::json!({"mediaType": media, "digest": d, "size": s});
    let config = desc(OCI_CONFIG, rng.pick(&blobs));
    let layers: Vec<serde_json::Value> = (0..rng.range(1, 4)).map(|_| desc(OCI_LAYER, rng.pick(&blobs))).collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": {"nonce": rng.next().to_string()},
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| OpError::Status(e.to_string()))?;
    let digest = digest_of(&bytes);
    let tag = (rng.below(3) != 0).then(|| rng.pick(TAGS).to_string());
    let reference = tag.clone().unwrap_or_else(|| digest.clone());
    log.manifests.push(ManifestAttempt { repo: repo.clone(), digest: digest.clone(), tag, bytes, acked: false });
    let idx = log.manifests.len() - 1;
    let r = request(
        &shared.addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", OCI_MANIFEST)],
        &log.manifests[idx].bytes,
        false,
    )?;
    expect_status(&r, 201, "PUT manifest")?;
    if r.header("docker-content-digest") != Some(digest.as_str()) {
        return Err(OpError::Status(format!(
            "PUT manifest: Docker-Content-Digest {:?}",
            r.header("docker-content-digest")
        )));
    }
    log.manifests[idx].acked = true;
    Ok(())
}

// ------------------------------------------------------------------------------------------ checks

/// Every file under `<data>/blobs/<algorithm>/<xx>/<hex>` must hash to its name: a crash never leaves
/// a partial blob in place.
fn check_blob_files(data: &Path, problems: &mut Vec<String>) -> usize {
    let mut n = 0;
    let root = data.join("blobs");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            n += 1;
            let rel = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().to_string();
            let parts: Vec<&str> = rel.split('/').collect();
            let bytes = std::fs::read(&path).unwrap_or_default();
            match parts.as_slice() {
                [alg, _, hex] if *alg == "sha256" => {
                    let actual = digest_of(&bytes);
                    if actual != format!("sha256:{hex}") {
                        problems.push(format!("blob file {rel} ({} bytes) hashes to {actual}", bytes.len()));
                    }
                }
                _ => problems.push(format!("unexpected file in the blob directory: {rel}")),
            }
        }
    }
    n
}

fn head_blob(addr: &str, repo: &str, digest: &str) -> io::Result<Resp> {
    request(addr, "HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[], false)
}

/// Checks a blob is either absent or whole; returns whether it is present.
fn check_blob(addr: &str, repo: &str, digest: &str, size: Option<usize>, problems: &mut Vec<String>) -> bool {
    let what = format!("blob {repo}@{digest}");
    let head = match head_blob(addr, repo, digest) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("HEAD {what}: {e}"));
            return false;
        }
    };
    match head.status {
        404 => return false,
        200 => {}
        _ => {
            problems.push(format!("HEAD {what}: {}", head.describe()));
            return false;
        }
    }
    let get = match request(addr, "GET", &format!("/v2/{repo}/blobs/{digest}"), &[], &[], false) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("GET {what}: {e}"));
            return false;
        }
    };
    if get.status != 200 {
        problems.push(format!("GET {what} after HEAD 200: {}", get.describe()));
        return false;
    }
    let head_len = head.header("content-length").and_then(|v| v.parse::<usize>().ok());
    if head_len != Some(get.body.len()) {
        problems.push(format!("{what}: HEAD Content-Length {head_len:?}, GET returned {} bytes", get.body.len()));
    }
    if let Some(size) = size
        && get.body.len() != size
    {
        problems.push(format!("{what}: served {} bytes, pushed {size}", get.body.len()));
    }
    let actual = digest_of(&get.body);
    if actual != digest {
        problems.push(format!("{what}: served bytes hash to {actual}"));
    }
    if get.header("docker-content-digest") != Some(digest) {
        problems.push(format!("{what}: Docker-Content-Digest {:?}", get.header("docker-content-digest")));
    }
    true
}

/// Checks a served manifest: hashes to `digest` (and to its Docker-Content-Digest) and every blob it
/// references is present in the repository.
fn check_served_manifest(addr: &str, repo: &str, reference: &str, problems: &mut Vec<String>) -> Option<String> {
    let what = format!("manifest {repo}:{reference}");
    let r = match request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", OCI_MANIFEST)],
        &[],
        false,
    ) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("GET {what}: {e}"));
            return None;
        }
    };
    match r.status {
        404 => return None,
        200 => {}
        _ => {
            problems.push(format!("GET {what}: {}", r.describe()));
            return None;
        }
    }
    let actual = digest_of(&r.body);
    if r.header("docker-content-digest") != Some(actual.as_str()) {
        problems.push(format!(
            "{what}: bytes hash to {actual}, Docker-Content-Digest {:?}",
            r.header("docker-content-digest")
        ));
    }
    if reference.contains(':') && actual != reference {
        problems.push(format!("{what}: bytes hash to {actual}"));
    }
    match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(m) => {
            let refs = m["config"]
                .as_object()
                .into_iter()
                .chain(m["layers"].as_array().into_iter().flatten().filter_map(|l| l.as_object()));
            for d in refs {
                let digest = d.get("digest").and_then(|v| v.as_str()).unwrap_or_default();
                match head_blob(addr, repo, digest) {
                    Ok(h) if h.status == 200 => {}
                    Ok(h) => problems.push(format!("{what} references {digest}, which is {}", h.status)),
                    Err(e) => problems.push(format!("HEAD {repo}@{digest}: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("{what}: served bytes are not JSON: {e}")),
    }
    Some(actual)
}

/// Parses an upload `Range` header (`0-<last>`) into the offset; `0-0` is an empty upload (chunks here
/// are never a single byte).
fn upload_offset(range: Option<&str>) -> Option<usize> {
    let last: usize = range?.strip_prefix("0-")?.parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}

struct SessionOutcome {
    resumed: usize,
    unknown: usize,
}

/// A session opened before the kill and not acknowledged as finished: resumable or cleanly unknown.
fn check_session(addr: &str, s: &SessionAttempt, problems: &mut Vec<String>, out: &mut SessionOutcome) -> bool {
    let what = format!("upload {} ({} bytes, last acknowledged offset {})", s.location, s.data.len(), s.acked_offset);
    let r = match request(addr, "GET", &s.location, &[], &[], false) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("GET {what}: {e}"));
            return false;
        }
    };
    match r.status {
        404 => {
            if r.error_code() != "BLOB_UPLOAD_UNKNOWN" {
                problems.push(format!("GET {what}: 404 without BLOB_UPLOAD_UNKNOWN: {}", r.describe()));
            }
            out.unknown += 1;
            return false;
        }
        204 => {}
        _ => {
            problems.push(format!("GET {what}: {}", r.describe()));
            return false;
        }
    }
    let Some(offset) = upload_offset(r.header("range")) else {
        problems.push(format!("GET {what}: bad Range {:?}", r.header("range")));
        return false;
    };
    if offset < s.acked_offset || (offset != 0 && !s.boundaries.contains(&offset)) {
        problems
            .push(format!("GET {what}: resumes at {offset}, not a chunk boundary at or after the acknowledged one"));
        return false;
    }
    // Resume: send the rest, then finish.
    if offset < s.data.len() {
        let range = format!("{offset}-{}", s.data.len() - 1);
        match request(
            addr,
            "PATCH",
            &s.location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &s.data[offset..],
            false,
        ) {
            Ok(r) if r.status == 202 => {}
            Ok(r) => {
                problems.push(format!("resuming {what} at {offset}: PATCH {}", r.describe()));
                return false;
            }
            Err(e) => {
                problems.push(format!("resuming {what}: PATCH: {e}"));
                return false;
            }
        }
    }
    match request(addr, "PUT", &format!("{}?digest={}", s.location, s.digest), &[], &[], false) {
        Ok(r) if r.status == 201 => {}
        Ok(r) => {
            problems.push(format!("finishing resumed {what} (offset {offset}): PUT {}", r.describe()));
            return false;
        }
        Err(e) => {
            problems.push(format!("finishing resumed {what}: PUT: {e}"));
            return false;
        }
    }
    out.resumed += 1;
    if !check_blob(addr, &s.repo, &s.digest, Some(s.data.len()), problems) {
        problems.push(format!("resumed {what} finished with 201 but the blob is absent"));
    }
    true
}

/// Everything the registry serves after a restart, checked against everything the test attempted.
fn verify(addr: &str, all: &mut Log, new_sessions: Vec<SessionAttempt>) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    match request(addr, "GET", "/v2/", &[], &[], false) {
        Ok(r) if r.status == 200 => {}
        Ok(r) => problems.push(format!("GET /v2/ after restart: {}", r.describe())),
        Err(e) => problems.push(format!("GET /v2/ after restart: {e}")),
    }

    // Sessions first: resuming them makes their blobs acknowledged.
    let mut out = SessionOutcome { resumed: 0, unknown: 0 };
    for s in new_sessions.iter().filter(|s| !s.finished) {
        if check_session(addr, s, &mut problems, &mut out) {
            for b in all.blobs.iter_mut().filter(|b| b.repo == s.repo && b.digest == s.digest) {
                b.acked = true;
            }
        }
    }

    let mut present = 0;
    for b in &all.blobs {
        if check_blob(addr, &b.repo, &b.digest, Some(b.size), &mut problems) {
            present += 1;
        } else if b.acked {
            problems.push(format!("blob {}@{} was acknowledged with 201 but is gone", b.repo, b.digest));
        }
    }
    for (repo, digest) in &all.prefixes {
        match head_blob(addr, repo, digest) {
            Ok(r) if r.status == 404 => {}
            Ok(r) => {
                problems.push(format!("staged prefix {repo}@{digest} of a chunked upload is visible: {}", r.status))
            }
            Err(e) => problems.push(format!("HEAD {repo}@{digest}: {e}")),
        }
    }

    let mut manifests_present = 0;
    let mut tags: BTreeSet<(String, String)> = BTreeSet::new();
    for m in &all.manifests {
        match check_served_manifest(addr, &m.repo, &m.digest, &mut problems) {
            Some(_) => {
                manifests_present += 1;
                if let Ok(r) = request(
                    addr,
                    "GET",
                    &format!("/v2/{}/manifests/{}", m.repo, m.digest),
                    &[("Accept", OCI_MANIFEST)],
                    &[],
                    false,
                ) && r.body != m.bytes
                {
                    problems
                        .push(format!("manifest {}@{}: served bytes differ from the pushed ones", m.repo, m.digest));
                }
            }
            None if m.acked => {
                problems.push(format!("manifest {}@{} was acknowledged with 201 but is gone", m.repo, m.digest))
            }
            None => {}
        }
        if let Some(t) = &m.tag {
            tags.insert((m.repo.clone(), t.clone()));
        }
    }
    for (repo, tag) in &tags {
        let candidates: Vec<&ManifestAttempt> =
            all.manifests.iter().filter(|m| &m.repo == repo && m.tag.as_ref() == Some(tag)).collect();
        match check_served_manifest(addr, repo, tag, &mut problems) {
            Some(d) if !candidates.iter().any(|m| m.digest == d) => {
                problems.push(format!("tag {repo}:{tag} points at {d}, never pushed under that tag"));
            }
            Some(_) => {}
            None if candidates.iter().any(|m| m.acked) => {
                problems.push(format!("tag {repo}:{tag} was acknowledged but is gone"))
            }
            None => {}
        }
    }
    let summary = format!(
        "{present}/{} blobs present, {manifests_present}/{} manifests present, {} tags, {} prefixes absent-checked, \
         {} interrupted sessions resumed, {} unknown",
        all.blobs.len(),
        all.manifests.len(),
        tags.len(),
        all.prefixes.len(),
        out.resumed,
        out.unknown
    );
    (problems, summary)
}

// ------------------------------------------------------------------------------------------ the test

#[test]
fn kill_during_concurrent_pushes_leaves_a_consistent_registry() {
    let mut server = Server::start();
    if !server.managed() {
        eprintln!("ENTREPOT_TEST_REGISTRY is set: this test needs to kill the server; skipping");
        return;
    }
    let started = Instant::now();
    let seed = std::env::var("ENTREPOT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("crash test seed: {seed} (ENTREPOT_CRASH_SEED={seed} to replay)");
    let mut rng = Rng::new(seed);
    let mut all = Log::default();
    let acked = Arc::new(Mutex::new(HashMap::new()));

    let cycles = std::env::var("ENTREPOT_CRASH_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(CYCLES);
    for cycle in 0..cycles {
        let shared = Arc::new(Shared {
            addr: server.addr.clone(),
            killing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            acked: Mutex::new(acked.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let shared = shared.clone();
                let seed = rng.next();
                thread::spawn(move || worker(shared, seed))
            })
            .collect();

        // Let the load build up, then kill at a random moment while requests are in flight.
        let warmup = Instant::now();
        while shared.completed.load(Ordering::SeqCst) < 10 {
            assert!(warmup.elapsed() < Duration::from_secs(20), "cycle {cycle}: the workers made no progress");
            if workers.iter().all(|w| w.is_finished()) {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(rng.range(20, 400) as u64));
        let spin = Instant::now();
        while shared.in_flight.load(Ordering::SeqCst) == 0 && spin.elapsed() < Duration::from_secs(1) {
            thread::yield_now();
        }
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        shared.killing.store(true, Ordering::SeqCst);
        server.kill();

        let mut log = Log::default();
        for w in workers {
            log.absorb(w.join().expect("worker panicked"));
        }
        assert!(
            log.unexpected.is_empty(),
            "cycle {cycle}: failures while the server was up:\n{}",
            log.unexpected.join("\n")
        );
        *acked.lock().unwrap_or_else(|p| p.into_inner()) =
            shared.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();

        // The state the crash left on disk.
        let mut problems = Vec::new();
        let files = check_blob_files(server.data_dir(), &mut problems);

        server.restart();
        let sessions = std::mem::take(&mut log.sessions);
        let (completed, interrupted) = (log.completed, log.interrupted);
        all.absorb(log);
        let (more, summary) = verify(&server.addr, &mut all, sessions);
        problems.extend(more);
        eprintln!(
            "cycle {cycle}: {completed} operations completed, {interrupted} interrupted ({in_flight} in flight at the \
             kill); {files} blob files; after restart: {summary}"
        );
        assert!(
            problems.is_empty(),
            "cycle {cycle} (seed {seed}): {} problems:\n{}",
            problems.len(),
            problems.join("\n")
        );

        // Blobs acknowledged by resuming sessions may be referenced by later manifests too.
        let mut acked_now = acked.lock().unwrap_or_else(|p| p.into_inner());
        for b in all.blobs.iter().filter(|b| b.acked) {
            let list = acked_now.entry(b.repo.clone()).or_default();
            if !list.iter().any(|(d, _)| d == &b.digest) {
                list.push((b.digest.clone(), b.size));
            }
        }
    }
    assert!(all.interrupted > 0, "no kill interrupted an operation in flight");
    eprintln!("crash test done in {:.1} s", started.elapsed().as_secs_f64());
}
