//! Scale-out mode of the test harness: the registry as it runs when one machine is not enough — two
//! `entrepot serve` instances on one S3 bucket (a real SeaweedFS) and one PostgreSQL database, behind an
//! nginx load balancer (round robin, HTTP/1.1 keep-alive upstreams, nothing buffered).
//!
//! [`super::Server::start_with`] builds a [`Stack`] instead of one process when `ENTREPOT_TEST_SCALEOUT=1`
//! (scripts/test runs the HTTP protocol and client suites that way); `tests/scaleout.rs` builds one always.
//! SeaweedFS (`SeaweedFs::shared`) and PostgreSQL (`pgtest::PgServer`) are started once per test process
//! and stopped at its exit; every stack gets its own key prefix in the process's bucket and its own
//! database, so stacks never see each other's data. Each instance has its own (otherwise unused) data
//! directory; they share only the bucket and the database.
//!
//! Everything listens on 127.0.0.1 only; nginx's pid file, error log and temp files live in a temporary
//! directory. A missing `nginx` (Debian package nginx-light, installed by `.ci/install-clients`), `weed` or
//! PostgreSQL fails the test with a message saying so: it never skips. Must never hold registry logic:
//! the stack only starts, stops and points at real processes.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use entrepot_meta::pgtest::PgServer;
use entrepot_storage::S3BlobStore;
use entrepot_storage::s3::testsupport::{ACCESS_KEY, SECRET_KEY, SeaweedFs, unique_bucket};

/// The variable that turns scale-out mode on for [`super::Server`].
pub const ENV: &str = "ENTREPOT_TEST_SCALEOUT";

/// Whether `ENTREPOT_TEST_SCALEOUT=1` (or `true`) asks for scale-out mode.
pub fn enabled() -> bool {
    matches!(std::env::var(ENV).as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// Two registry instances on S3 + PostgreSQL behind nginx.
pub struct Stack {
    /// The S3 endpoint (`http://127.0.0.1:PORT`) of the shared SeaweedFS.
    pub s3_endpoint: String,
    /// The process's bucket, shared by every stack.
    pub bucket: String,
    /// This stack's key prefix in the bucket (`scaleout-<pid>-<n>/`).
    pub prefix: String,
    /// This stack's PostgreSQL database.
    pub database_url: String,
    /// The `auth_dir` both instances share (token signing keys, robots), as a deployment shares it on a
    /// volume: a token issued by one instance is accepted by the other.
    pub auth_dir: tempfile::TempDir,
    instances: Vec<Instance>,
    nginx: Nginx,
    extra_args: Vec<String>,
}

/// One `entrepot serve` process of the stack.
struct Instance {
    /// `127.0.0.1:PORT`, kept across restarts.
    addr: String,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl Stack {
    /// Starts two instances with `args` (on top of the S3 and database flags) and nginx in front.
    pub fn start(args: &[&str]) -> Stack {
        let nginx_bin = require_nginx();
        let weed = SeaweedFs::shared();
        let bucket = shared_bucket(weed).to_string();
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("scaleout-{}-{}/", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let database_url = create_database();
        let mut stack = Stack {
            s3_endpoint: weed.endpoint.clone(),
            bucket,
            prefix,
            database_url,
            auth_dir: tempfile::tempdir().expect("tempdir"),
            instances: Vec::new(),
            nginx: Nginx {
                bin: nginx_bin,
                dir: tempfile::tempdir().expect("tempdir"),
                port: 0,
                child: None,
                upstreams: vec![],
            },
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..2 {
            let data = tempfile::tempdir().expect("tempdir");
            let mut instance = Instance { addr: "127.0.0.1:0".into(), data, child: None };
            let (child, addr) = stack.spawn(instance.data.path(), &instance.addr);
            instance.child = Some(child);
            instance.addr = addr;
            stack.instances.push(instance);
        }
        stack.nginx.upstreams = stack.instances.iter().map(|i| i.addr.clone()).collect();
        stack.nginx.start();
        stack
    }

    /// nginx's `127.0.0.1:PORT`: where clients go.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.nginx.port)
    }

    /// `127.0.0.1:PORT` of instance `i` (0 or 1), reached directly.
    pub fn instance_addr(&self, i: usize) -> String {
        self.instances[i].addr.clone()
    }

    /// `http://127.0.0.1:PORT` of instance `i`.
    pub fn instance_url(&self, i: usize) -> String {
        format!("http://{}", self.instances[i].addr)
    }

    /// The addresses of both instances.
    pub fn instance_addrs(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.addr.clone()).collect()
    }

    /// The process id of instance `i`, while it runs.
    pub fn instance_pid(&self, i: usize) -> Option<u32> {
        self.instances[i].child.as_ref().map(Child::id)
    }

    /// The data directory of instance `i` (blobs and metadata are elsewhere: S3 and PostgreSQL).
    pub fn instance_data_dir(&self, i: usize) -> &Path {
        self.instances[i].data.path()
    }

    /// SIGKILLs instance `i` (no clean shutdown); nginx keeps running and fails over to the other.
    pub fn kill_instance(&mut self, i: usize) {
        if let Some(mut c) = self.instances[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts instance `i` again (after [`Stack::kill_instance`]) on the same address and data directory.
    pub fn start_instance(&mut self, i: usize) {
        assert!(self.instances[i].child.is_none(), "instance {i} is running");
        let (child, addr) = self.spawn(self.instances[i].data.path(), &self.instances[i].addr);
        assert_eq!(addr, self.instances[i].addr, "instance {i} came back on its address");
        self.instances[i].child = Some(child);
    }

    /// Kills (SIGKILL) and starts instance `i` again.
    pub fn restart_instance(&mut self, i: usize) {
        self.kill_instance(i);
        self.start_instance(i);
    }

    /// Restarts both instances (one after the other, so one serves while the other starts), and nginx
    /// if it was stopped.
    pub fn restart(&mut self) {
        for i in 0..self.instances.len() {
            self.restart_instance(i);
        }
        if self.nginx.child.is_none() {
            self.nginx.start();
        }
    }

    /// Kills everything: both instances (SIGKILL) and nginx.
    pub fn kill(&mut self) {
        self.nginx.stop();
        for i in 0..self.instances.len() {
            self.kill_instance(i);
        }
    }

    /// The environment that points an `entrepot` maintenance command (`gc`, `scrub`, …) at this stack's
    /// bucket, prefix and database, as `serve` gets them from its flags.
    pub fn maintenance_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ENTREPOT_S3_ENDPOINT", self.s3_endpoint.clone()),
            ("ENTREPOT_S3_BUCKET", self.bucket.clone()),
            ("ENTREPOT_S3_PREFIX", self.prefix.clone()),
            ("ENTREPOT_S3_PATH_STYLE", "true".into()),
            ("ENTREPOT_DATABASE_URL", self.database_url.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// `entrepot <subcommand> --data-dir <instance i's data dir>` with [`Stack::maintenance_env`] set.
    pub fn maintenance_command(&self, subcommand: &str, i: usize) -> Command {
        let mut c = Command::new(super::entrepot_bin());
        c.arg(subcommand).arg("--data-dir").arg(self.instance_data_dir(i));
        for (k, v) in self.maintenance_env() {
            c.env(k, v);
        }
        c.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        c
    }

    /// A blob store on this stack's bucket and prefix, to look at what the registry stored.
    pub fn store(&self) -> S3BlobStore {
        let mut cfg = SeaweedFs::shared().config(&self.bucket);
        cfg.prefix = self.prefix.clone();
        S3BlobStore::new(cfg).expect("S3 store")
    }

    /// How many uploads are staged in the bucket under this stack's prefix (markers, multipart uploads,
    /// tails). Runs on a thread of its own, so it may be called from async tests too.
    pub fn staged_uploads(&self) -> usize {
        let store = self.store();
        std::thread::spawn(move || {
            use entrepot_storage::BlobStore;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(store.list_uploads()).expect("list the staged uploads").len()
        })
        .join()
        .expect("list thread")
    }

    /// nginx's error log so far (for failure messages).
    pub fn nginx_log(&self) -> String {
        std::fs::read_to_string(self.nginx.dir.path().join("error.log")).unwrap_or_default()
    }

    fn spawn(&self, data: &Path, listen: &str) -> (Child, String) {
        let auth_dir = self.auth_dir.path().to_str().expect("utf-8 temp path").to_string();
        let mut args: Vec<String> = [
            "--s3-endpoint",
            &self.s3_endpoint,
            "--s3-bucket",
            &self.bucket,
            "--s3-path-style",
            "--s3-prefix",
            &self.prefix,
            "--database-url",
            &self.database_url,
            "--auth-dir",
            &auth_dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra_args.iter().cloned());
        super::spawn_serve(
            data,
            listen,
            &args,
            &[("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)],
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------- nginx

/// nginx in front of the instances.
struct Nginx {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    /// The port, kept across restarts.
    port: u16,
    child: Option<Child>,
    upstreams: Vec<String>,
}

/// `ENTREPOT_NGINX`, else Debian's `/usr/sbin/nginx`, else `nginx` on `PATH`.
fn nginx_binary() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ENTREPOT_NGINX") {
        return Some(p.into());
    }
    super::e2e::which("/usr/sbin/nginx").or_else(|| super::e2e::which("nginx"))
}

fn require_nginx() -> std::path::PathBuf {
    nginx_binary()
        .unwrap_or_else(|| panic!("scale-out tests need nginx (Debian package nginx-light): run `.ci/install-clients`"))
}

/// The configuration. For a registry:
/// - bodies stream both ways (`proxy_request_buffering off`, `proxy_buffering off`, no size limit): a
///   layer is never spooled to nginx's disk, and the instance sees the client's chunks as they come;
/// - `Host` is passed on, so the `Location`s an instance builds point at the load balancer;
/// - keep-alive HTTP/1.1 upstreams, round robin;
/// - fail over (`proxy_next_upstream error timeout`, at most once) only where it cannot repeat a write:
///   nginx never replays a POST or PATCH that reached an instance (no `non_idempotent`), and with
///   unbuffered bodies it cannot replay any request whose body it started to send. So what fails over is
///   a request no instance received (connection refused: an instance down or restarting) and a body-less
///   GET/HEAD/PUT/DELETE whose instance died before answering — harmless for GET and HEAD; a repeated PUT
///   that closes an upload answers 404 BLOB_UPLOAD_UNKNOWN (the first one committed it), which a client
///   treats as it would the 502 it otherwise gets. A down instance is left out for 2 s (`fail_timeout`),
///   so a restarted one is used again quickly.
fn nginx_conf(dir: &Path, port: u16, upstreams: &[String]) -> String {
    let d = dir.display();
    let servers: String =
        upstreams.iter().map(|a| format!("        server {a} max_fails=1 fail_timeout=2s;\n")).collect();
    // Workers run as root when the tests do: the temp directory is private to root.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 { "user root root;\n" } else { "" };
    format!(
        "{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    upstream entrepot {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        client_body_timeout 600s;
        send_timeout 600s;
        large_client_header_buffers 4 32k;
        location / {{
            proxy_pass http://entrepot;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_connect_timeout 2s;
            proxy_send_timeout 600s;
            proxy_read_timeout 600s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl Nginx {
    /// Starts nginx (on its old port if it had one, else a free one) and waits until it accepts.
    fn start(&mut self) {
        let conf = self.dir.path().join("nginx.conf");
        let log = self.dir.path().join("error.log");
        let keep_port = self.port != 0;
        let mut last = String::new();
        for _ in 0..20 {
            if !keep_port {
                self.port = free_port();
            }
            std::fs::write(&conf, nginx_conf(self.dir.path(), self.port, &self.upstreams)).expect("nginx.conf");
            let prefix = format!("{}/", self.dir.path().display());
            let mut child = Command::new(&self.bin)
                .arg("-e")
                .arg(&log)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(&prefix)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    last =
                        format!("nginx exited ({status}): {err}{}", std::fs::read_to_string(&log).unwrap_or_default());
                    break;
                }
                if TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "nginx did not accept connections within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nginx did not start on 127.0.0.1:{}: {last}", self.port);
    }

    /// Fast shutdown (SIGTERM: the master stops its workers), then SIGKILL if it lingers.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------- shared services

/// The process's bucket on the shared SeaweedFS, created on first use (one bucket per run, prefixes per
/// stack: SeaweedFS gives every bucket volumes of its own).
fn shared_bucket(weed: &'static SeaweedFs) -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        let bucket = unique_bucket("entrepot-scaleout");
        let b = bucket.clone();
        // Its own runtime on its own thread: callers may be inside a runtime already.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(weed.store(weed.config(&b)));
        })
        .join()
        .expect("create the bucket");
        bucket
    })
}

/// The process's PostgreSQL, started on first use and stopped at process exit.
static PG: Mutex<Option<PgServer>> = Mutex::new(None);

extern "C" fn stop_pg() {
    let pg = PG.lock().map(|mut g| g.take()).unwrap_or(None);
    drop(pg);
}

/// A fresh database on the process's PostgreSQL.
fn create_database() -> String {
    let mut pg = PG.lock().unwrap_or_else(|p| p.into_inner());
    if pg.is_none() {
        *pg = Some(PgServer::start());
        // SAFETY: registering a plain `extern "C" fn` without arguments.
        unsafe {
            libc::atexit(stop_pg);
        }
    }
    pg.as_ref().expect("PostgreSQL started").create_database()
}
