//! Test support: start a real `entrepot serve` process on an ephemeral loopback port with a fresh data
//! directory, and stop it (gracefully or with SIGKILL) when done.
//!
//! Set `ENTREPOT_TEST_REGISTRY=127.0.0.1:PORT` to run the client tests against an already running
//! registry instead (for example distribution, to compare behaviour); tests that need to restart or kill
//! the server skip that part then.
//!
//! Set `ENTREPOT_TEST_SCALEOUT=1` to run the same tests against the registry scaled out instead: two
//! instances on S3 (SeaweedFS) and PostgreSQL behind nginx, `addr` being nginx's (see [`scaleout`]).
#![allow(dead_code)]

pub mod e2e;
pub mod scaleout;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running registry under test.
pub struct Server {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The data directory (kept alive as long as the server).
    pub data: Option<tempfile::TempDir>,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// In scale-out mode: the instances, nginx, the bucket prefix and the database.
    stack: Option<scaleout::Stack>,
}

impl Server {
    /// Starts `entrepot serve` on a fresh data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts `entrepot serve` with extra command-line arguments (in scale-out mode, two instances with
    /// them, behind nginx).
    pub fn start_with(args: &[&str]) -> Server {
        if let Ok(addr) = std::env::var("ENTREPOT_TEST_REGISTRY") {
            return Server { addr, data: None, child: None, extra_args: vec![], stack: None };
        }
        if scaleout::enabled() {
            return Self::start_scaleout(args);
        }
        let data = tempfile::tempdir().expect("tempdir");
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(data.path(), "127.0.0.1:0", &extra_args);
        Server { addr, data: Some(data), child: Some(child), extra_args, stack: None }
    }

    /// Starts the scale-out stack (two instances on S3 + PostgreSQL behind nginx) whatever
    /// `ENTREPOT_TEST_SCALEOUT` says.
    pub fn start_scaleout(args: &[&str]) -> Server {
        let stack = scaleout::Stack::start(args);
        let extra_args = args.iter().map(|s| s.to_string()).collect();
        Server { addr: stack.addr(), data: None, child: None, extra_args, stack: Some(stack) }
    }

    /// The scale-out stack, in scale-out mode.
    pub fn stack(&self) -> Option<&scaleout::Stack> {
        self.stack.as_ref()
    }

    /// The scale-out stack, to kill or restart one instance.
    pub fn stack_mut(&mut self) -> Option<&mut scaleout::Stack> {
        self.stack.as_mut()
    }

    /// The address of a registry process itself, not of a load balancer: `addr`, or in scale-out mode the
    /// first instance's (for tests of the registry's own listener).
    pub fn backend_addr(&self) -> String {
        match &self.stack {
            Some(s) => s.instance_addr(0),
            None => self.addr.clone(),
        }
    }

    /// How many uploads have staged bytes: entries of `DATA_DIR/uploads`, or in scale-out mode the
    /// uploads staged in the stack's S3 prefix. Blocks (on a thread of its own in scale-out mode).
    pub fn staged_uploads(&self) -> usize {
        match &self.stack {
            Some(s) => s.staged_uploads(),
            None => std::fs::read_dir(self.data_dir().join("uploads")).expect("uploads dir").count(),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory. Panics in scale-out mode: blobs are in S3 and metadata in PostgreSQL there
    /// (see [`Server::staged_uploads`], [`scaleout::Stack::store`]).
    pub fn data_dir(&self) -> &Path {
        if self.stack.is_some() {
            panic!("scale-out mode (ENTREPOT_TEST_SCALEOUT): the registry keeps no data directory of its own");
        }
        self.data.as_ref().expect("managed server").path()
    }

    /// The server's process id, when this test manages the process (to send it signals); `None` in
    /// scale-out mode, where there are two (see [`scaleout::Stack::instance_pid`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether this test manages the server process (and so can kill or restart it).
    pub fn managed(&self) -> bool {
        self.child.is_some() || self.stack.is_some()
    }

    /// Kills the process with SIGKILL (no clean shutdown); in scale-out mode both instances and nginx.
    pub fn kill(&mut self) {
        if let Some(s) = &mut self.stack {
            s.kill();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the server on the same data directory and the same port; in scale-out mode both instances
    /// (one after the other) on their ports, and nginx if it was killed.
    pub fn restart(&mut self) {
        if let Some(s) = &mut self.stack {
            s.restart();
            return;
        }
        self.kill();
        let data = self.data.as_ref().expect("managed server").path().to_path_buf();
        let (child, addr) = spawn(&data, &self.addr.clone(), &self.extra_args);
        self.child = Some(child);
        self.addr = addr;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client for tests. reqwest is built with rustls but without a bundled crypto provider (the
/// S3 store's https support), so the process's provider (ring, as the server's TLS) is installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Path of the `entrepot` binary built by cargo for this test run.
pub fn entrepot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_entrepot"))
}

fn spawn(data: &Path, listen: &str, extra: &[String]) -> (Child, String) {
    spawn_serve(data, listen, extra, &[])
}

/// Starts `entrepot serve --listen LISTEN --data-dir DATA EXTRA…` with `env` set, and waits for the one
/// line it prints on stdout once it accepts connections (`listening on 127.0.0.1:PORT`). Returns the
/// process and that address.
fn spawn_serve(data: &Path, listen: &str, extra: &[String], env: &[(&str, &str)]) -> (Child, String) {
    let mut last_err = String::new();
    // Re-binding the same port right after a kill can briefly fail; retry a few times.
    for _ in 0..50 {
        let mut child = Command::new(entrepot_bin())
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn entrepot");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            return (child, addr.to_string());
        }
        last_err = line;
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("entrepot serve {extra:?} did not start: {last_err}");
}
