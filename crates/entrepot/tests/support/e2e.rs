//! Helpers for the end-to-end tests that drive real registry clients (skopeo, umoci, podman, buildah,
//! the docker CLI, containerd's ctr, and the Python SDKs oras and python-dxf) against a registry.
//!
//! Every client runs with its state in a fresh temporary directory; a client that is not installed makes
//! the test fail with a message pointing at `.ci/install-clients`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long one client command may run before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An `Accept` header value that admits every modern manifest type.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The repository root (the cargo workspace).
pub fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// Directory of the Python client scripts.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `<repo>/.venv/bin/python`, made by `.ci/install-clients`.
pub fn venv_python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    if !p.exists() {
        panic!("{} is missing: run `.ci/install-clients` to create the venv with oras and python-dxf", p.display());
    }
    p
}

/// A repository name unique to this process and call, valid under the distribution name grammar:
/// `e2e/<family>/<what>-<pid>-<n>-<nanos>`.
pub fn unique_repo(family: &str, what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let clean = |s: &str| -> String {
        let s: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        s.trim_matches('-').to_string()
    };
    format!("e2e/{}/{}-{}-{}-{}", clean(family), clean(what), std::process::id(), n, nanos)
}

/// Fails the test unless every program is on `PATH`.
pub fn require(programs: &[&str]) {
    for p in programs {
        if which(p).is_none() {
            panic!("required client `{p}` is not installed (not found on PATH): run `.ci/install-clients`");
        }
    }
}

/// Looks a program up on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The outcome of one client command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub what: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics (with the command, its stdout and stderr) unless it succeeded.
    pub fn expect_ok(self) -> Run {
        if !self.ok() {
            panic!(
                "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.status,
                self.what,
                self.stdout_str(),
                self.stderr
            );
        }
        self
    }

    /// Panics unless it failed.
    pub fn expect_fail(self) -> Run {
        if self.ok() {
            panic!(
                "command unexpectedly succeeded: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.what,
                self.stdout_str(),
                self.stderr
            );
        }
        self
    }
}

/// Runs a command to completion (stdin closed, output captured, proxies disabled), failing the test if
/// the program is missing or it runs longer than [`COMMAND_TIMEOUT`]. Does not check the exit status.
pub fn try_run(cmd: &mut Command) -> Run {
    let what = format!("{cmd:?}");
    let out = tempfile::tempfile().expect("tempfile");
    let err = tempfile::tempfile().expect("tempfile");
    for v in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(v);
    }
    cmd.env("NO_PROXY", "*").env("no_proxy", "*");
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("required client is not installed ({e}): {what}\nrun `.ci/install-clients`")
        }
        Err(e) => panic!("cannot start {what}: {e}"),
    };
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command timed out after {COMMAND_TIMEOUT:?}: {what}\n--- stderr ---\n{}", read_all(err));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = read_bytes(out);
    Run { status, stdout, stderr: read_all(err), what }
}

fn read_bytes(mut f: File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    let _ = f.rewind();
    let _ = f.read_to_end(&mut v);
    v
}

fn read_all(f: File) -> String {
    String::from_utf8_lossy(&read_bytes(f)).into_owned()
}

/// Runs a command and panics unless it exits 0; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    try_run(cmd).expect_ok().stdout_str()
}

/// Asserts two byte strings are equal, reporting sizes and digests (not the bytes) when they differ.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let show = |b: &[u8]| {
            if b.len() <= 512 && std::str::from_utf8(b).is_ok() {
                format!("{:?}", String::from_utf8_lossy(b))
            } else {
                format!("{} bytes, {}", b.len(), digest_of(b))
            }
        };
        panic!("{what}: bytes differ\n  actual: {}\nexpected: {}", show(actual), show(expected));
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to make real-sized layers.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------------------------------
// Plain HTTP, through curl (so the wire is exactly what a client sends, no library in between).

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with curl. `url` is a full `http://` URL.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> HttpResponse {
    require(&["curl"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let hdr = dir.path().join("headers");
    let out = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http1.1", "--noproxy", "*", "--max-time", "60"])
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"]);
    if method == "HEAD" {
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = body {
        let f = dir.path().join("request");
        std::fs::write(&f, b).expect("write request body");
        cmd.arg("--data-binary").arg(format!("@{}", f.display()));
    }
    cmd.arg(url);
    let r = run(&mut cmd);
    let status: u16 = r.trim().parse().unwrap_or_else(|_| panic!("curl status: {r:?}"));
    let raw = std::fs::read_to_string(&hdr).unwrap_or_default();
    // With interim responses (100 Continue) there are several header blocks: keep the last.
    let block = raw.split("\r\n\r\n").filter(|b| !b.trim().is_empty()).last().unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&out).unwrap_or_default();
    HttpResponse { status, headers, body }
}

/// `GET http://addr/v2/<path>` with an `Accept` header (if not empty).
pub fn get(addr: &str, path: &str, accept: &str) -> HttpResponse {
    let url = format!("http://{addr}/v2/{path}");
    if accept.is_empty() { http("GET", &url, &[], None) } else { http("GET", &url, &[("Accept", accept)], None) }
}

/// The manifest bytes, content type and `Docker-Content-Digest` of `name:reference`; panics unless 200.
pub fn get_manifest(addr: &str, name: &str, reference: &str) -> (Vec<u8>, String, String) {
    let r = get(addr, &format!("{name}/manifests/{reference}"), ACCEPT_ALL_MANIFESTS);
    assert_eq!(r.status, 200, "GET manifest {name}:{reference}: {} {}", r.status, r.text());
    let ct = r.header("Content-Type").unwrap_or("").to_string();
    let dcd = r.header("Docker-Content-Digest").unwrap_or("").to_string();
    (r.body, ct, dcd)
}

/// The bytes of a blob; panics unless 200 and the bytes hash to the digest.
pub fn get_blob(addr: &str, name: &str, digest: &str) -> Vec<u8> {
    let r = get(addr, &format!("{name}/blobs/{digest}"), "");
    assert_eq!(r.status, 200, "GET blob {name}@{digest}: {}", r.text());
    assert_eq!(digest_of(&r.body), digest, "blob bytes do not match their digest");
    r.body
}

/// The tags of a repository, as listed by `GET /v2/<name>/tags/list` (empty if the repository is unknown).
pub fn list_tags(addr: &str, name: &str) -> Vec<String> {
    let r = get(addr, &format!("{name}/tags/list"), "");
    if r.status == 404 {
        return vec![];
    }
    assert_eq!(r.status, 200, "tags/list {name}: {}", r.text());
    r.json()["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------
// OCI image layouts.

/// An OCI image layout directory on disk.
pub struct Layout {
    pub path: PathBuf,
}

impl Layout {
    pub fn new(path: impl Into<PathBuf>) -> Layout {
        Layout { path: path.into() }
    }

    pub fn index(&self) -> Value {
        let b = std::fs::read(self.path.join("index.json")).expect("read index.json");
        serde_json::from_slice(&b).expect("index.json is JSON")
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let b = std::fs::read(self.path.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", self.path.display()));
        assert_eq!(digest_of(&b), digest, "layout blob does not match its digest");
        b
    }

    /// The descriptor tagged `tag` in index.json (`org.opencontainers.image.ref.name`).
    pub fn descriptor(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.path.display()))
    }

    /// The digest of the manifest (or index) tagged `tag`.
    pub fn digest(&self, tag: &str) -> String {
        self.descriptor(tag)["digest"].as_str().expect("digest").to_string()
    }

    /// Every blob reachable from `digest` (the manifest/index itself first), depth first.
    pub fn reachable(&self, digest: &str) -> Vec<String> {
        let mut out = vec![digest.to_string()];
        let v: Value = serde_json::from_slice(&self.blob(digest)).expect("manifest JSON");
        for d in v["manifests"].as_array().into_iter().flatten() {
            out.extend(self.reachable(d["digest"].as_str().expect("digest")));
        }
        if let Some(c) = v["config"]["digest"].as_str() {
            out.push(c.to_string());
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            out.push(l["digest"].as_str().expect("digest").to_string());
        }
        out
    }

    /// Adds a blob; returns its descriptor fields (digest, size).
    pub fn put_blob(&self, bytes: &[u8]) -> (String, usize) {
        let d = digest_of(bytes);
        let p = self.path.join("blobs/sha256").join(&d[7..]);
        std::fs::write(p, bytes).expect("write blob");
        (d, bytes.len())
    }

    /// Adds (or replaces) a tagged descriptor in index.json.
    pub fn tag(&self, tag: &str, media_type: &str, digest: &str, size: usize) {
        let mut idx = self.index();
        let ms = idx["manifests"].as_array_mut().expect("manifests");
        ms.retain(|d| d["annotations"]["org.opencontainers.image.ref.name"] != tag);
        ms.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(self.path.join("index.json"), serde_json::to_vec(&idx).expect("json"))
            .expect("write index.json");
    }
}

/// Makes (or extends) an OCI layout with umoci: image `tag` with one layer holding `files`
/// (path inside the image, content, mode), configured for `linux/<arch>` with `cmd`.
/// Returns the manifest digest.
pub fn umoci_image(layout: &Path, tag: &str, arch: &str, files: &[(&str, &[u8], u32)], cmd: &[&str]) -> String {
    require(&["umoci"]);
    if !layout.join("index.json").exists() {
        run(Command::new("umoci").arg("init").arg("--layout").arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = work.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    for (path, content, mode) in files {
        let p = bundle.join("rootfs").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    let mut c = Command::new("umoci");
    c.args(["config", "--image", &image, "--os", "linux", "--architecture", arch]);
    for a in cmd {
        c.arg(format!("--config.cmd={a}"));
    }
    run(&mut c);
    run(Command::new("umoci").arg("gc").arg("--layout").arg(layout));
    Layout::new(layout).digest(tag)
}

/// Builds a two-platform OCI layout: images tagged `amd64` and `arm64` (each with `/platform.txt`
/// naming its platform plus `/data.bin` of pseudo-random bytes), and an image index tagged `index_tag`
/// that lists both with their platforms. Returns the index digest.
pub fn multi_arch_layout(layout: &Path, index_tag: &str) -> String {
    let mut manifests = vec![];
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let text = format!("platform linux/{arch}\n");
        let data = pseudo_random(64 * 1024, 7 + i as u64);
        let d = umoci_image(
            layout,
            arch,
            arch,
            &[("platform.txt", text.as_bytes(), 0o644), ("data.bin", &data, 0o644)],
            &["/bin/true"],
        );
        let l = Layout::new(layout);
        let size = l.blob(&d).len();
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": d,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": {"org.example.entrepot.test": "multi-arch"},
    });
    let l = Layout::new(layout);
    let bytes = serde_json::to_vec_pretty(&index).expect("json");
    let (d, size) = l.put_blob(&bytes);
    l.tag(index_tag, OCI_INDEX, &d, size);
    d
}

// ---------------------------------------------------------------------------------------------------
// skopeo with private state.

/// Runs skopeo with a private registries.conf, auth file and blob-info cache (the cache lives at the
/// fixed path /var/lib/containers/cache for root; each command runs in its own mount namespace with a
/// private directory bound there, so no test sees another's cached blob locations).
pub struct Skopeo {
    pub dir: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        require(&["skopeo", "unshare", "mount"]);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
        )
        .expect("write registries.conf");
        std::fs::write(dir.path().join("auth.json"), "{\"auths\":{}}").expect("write auth");
        std::fs::create_dir_all(dir.path().join("cache")).expect("mkdir cache");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir tmp");
        Skopeo { dir }
    }

    /// A `skopeo --registries-conf … <args>` command (add `--tls-verify=false` etc. yourself).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let _ = std::fs::create_dir_all("/var/lib/containers/cache");
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /var/lib/containers/cache && shift && exec skopeo \"$@\"")
            .arg(self.dir.path().join("cache"))
            .arg("skopeo")
            .arg("--registries-conf")
            .arg(self.dir.path().join("registries.conf"))
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("TMPDIR", self.dir.path().join("tmp"));
        c
    }

    /// Runs skopeo and panics unless it succeeds; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }

    pub fn try_run(&self, args: &[&str]) -> Run {
        try_run(&mut self.cmd(args))
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------------
// podman / buildah with private vfs storage.

/// Environment for podman and buildah: vfs storage, runroot, auth file, registries.conf and
/// containers.conf all under one temp dir.
pub struct Containers {
    pub dir: tempfile::TempDir,
}

impl Containers {
    pub fn new() -> Containers {
        require(&["podman", "buildah"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        for d in ["graph", "run", "tmp", "home"] {
            std::fs::create_dir_all(p.join(d)).expect("mkdir");
        }
        std::fs::write(
            p.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                p.join("run").display(),
                p.join("graph").display()
            ),
        )
        .expect("storage.conf");
        std::fs::write(
            p.join("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
        )
        .expect("registries.conf");
        std::fs::write(
            p.join("containers.conf"),
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        std::fs::write(p.join("auth.json"), "{\"auths\":{}}").expect("auth.json");
        Containers { dir }
    }

    fn env(&self, c: &mut Command) {
        let p = self.dir.path();
        c.env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", p.join("registries.conf"))
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", p.join("auth.json"))
            .env("BUILDAH_ISOLATION", "chroot")
            .env("TMPDIR", p.join("tmp"))
            .env("XDG_RUNTIME_DIR", p.join("run"));
    }

    pub fn podman(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.args(["--root", &self.path("graph"), "--runroot", &self.path("run")])
            .args(["--storage-driver", "vfs"])
            .args(args);
        self.env(&mut c);
        c
    }

    pub fn buildah(&self, args: &[&str]) -> Command {
        let mut c = Command::new("buildah");
        c.args(["--root", &self.path("graph"), "--runroot", &self.path("run")])
            .args(["--storage-driver", "vfs"])
            .args(args);
        self.env(&mut c);
        c
    }

    pub fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

impl Default for Containers {
    fn default() -> Self {
        Self::new()
    }
}

/// Compiles a tiny statically linked program that prints `message` (one line) and exits 0.
pub fn static_hello(dir: &Path, message: &str) -> PathBuf {
    require(&["gcc"]);
    let src = dir.join("hello.c");
    let escaped: String = message
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    std::fs::write(&src, format!("#include <stdio.h>\nint main(void) {{ puts(\"{escaped}\"); return 0; }}\n"))
        .expect("write hello.c");
    let bin = dir.join("hello");
    let r = try_run(Command::new("gcc").args(["-static", "-Os", "-s", "-o"]).arg(&bin).arg(&src));
    if !r.ok() {
        panic!("gcc -static failed (is libc6-dev installed? run .ci/install-clients): {}", r.stderr);
    }
    bin
}
