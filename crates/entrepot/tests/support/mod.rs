//! Test support: start a real `entrepot serve` process on an ephemeral loopback port with a fresh data
//! directory, and stop it (gracefully or with SIGKILL) when done.
//!
//! Set `ENTREPOT_TEST_REGISTRY=127.0.0.1:PORT` to run the client tests against an already running
//! registry instead (for example distribution, to compare behaviour); tests that need to restart or kill
//! the server skip that part then.
#![allow(dead_code)]

pub mod e2e;

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
}

impl Server {
    /// Starts `entrepot serve` on a fresh data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts `entrepot serve` with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Server {
        if let Ok(addr) = std::env::var("ENTREPOT_TEST_REGISTRY") {
            return Server { addr, data: None, child: None, extra_args: vec![] };
        }
        let data = tempfile::tempdir().expect("tempdir");
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(data.path(), "127.0.0.1:0", &extra_args);
        Server { addr, data: Some(data), child: Some(child), extra_args }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.as_ref().expect("managed server").path()
    }

    /// The server's process id, when this test manages the process (to send it signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether this test manages the server process (and so can kill or restart it).
    pub fn managed(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the server on the same data directory and the same port.
    pub fn restart(&mut self) {
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
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn entrepot");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        // The server prints exactly one line on stdout once it accepts connections:
        // `listening on 127.0.0.1:PORT`
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            return (child, addr.to_string());
        }
        last_err = line;
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("entrepot did not start: {last_err}");
}
