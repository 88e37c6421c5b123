//! Starting the two registries on fresh data directories, and reading their resource use from /proc.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::client::Conn;
use crate::{Result, err};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Entrepot,
    Distribution,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Entrepot => "entrepot",
            Kind::Distribution => "distribution",
        }
    }
}

pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    /// Holds the data directory (and logs) alive; removed on drop unless kept.
    pub dir: Option<tempfile::TempDir>,
    pub log: PathBuf,
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn new_dir(kind: Kind) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(&format!("entrepot-bench-{}-", kind.name())).tempdir()?)
}

impl Server {
    /// Starts `entrepot serve` and waits for its `listening on ADDR` line.
    pub async fn start_entrepot(bin: &Path) -> Result<Server> {
        let dir = new_dir(Kind::Entrepot)?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let log = dir.path().join("entrepot.log");
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", bin.display())))?;
        let pid = child.id().ok_or_else(|| err("entrepot exited at once"))?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| err(format!("entrepot did not print `listening on` in time (log: {})", log.display())))??
            .ok_or_else(|| err(format!("entrepot closed stdout before listening (log: {})", log.display())))?;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| err(format!("unexpected first stdout line from entrepot: {line:?}")))?
            .parse()?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let s = Server { kind: Kind::Entrepot, addr, pid, child, dir: Some(dir), log };
        s.wait_ready().await?;
        Ok(s)
    }

    /// Starts distribution's `registry serve config.yml` with the filesystem driver.
    pub async fn start_distribution(bin: &Path) -> Result<Server> {
        let dir = new_dir(Kind::Distribution)?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let log = dir.path().join("distribution.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = dir.path().join("config.yml");
        // As Debian's default config (in-memory blob descriptor cache, filesystem driver), minus auth
        // and health checks, with the access log off and background upload purging disabled so the
        // baseline does no work the benchmark does not ask for.
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n",
                data.display()
            ),
        )?;
        let logf = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", bin.display())))?;
        let pid = child.id().ok_or_else(|| err("distribution exited at once"))?;
        let s = Server { kind: Kind::Distribution, addr, pid, child, dir: Some(dir), log };
        s.wait_ready().await?;
        Ok(s)
    }

    /// Polls `GET /v2/` until it answers 200 (or 401).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut c) = Conn::connect(self.addr).await
                && let Ok(status) = c.ping().await
            {
                if status.is_success() || status.as_u16() == 401 {
                    return Ok(());
                }
                return Err(err(format!("{}: GET /v2/ answered {status}", self.kind.name())));
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "{} not answering on {} (log: {})",
                    self.kind.name(),
                    self.addr,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn stop(mut self, keep: bool) {
        // SIGTERM first so the server can shut down cleanly; SIGKILL if it has not exited in 5 s.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        if keep && let Some(d) = self.dir.take() {
            eprintln!("kept {} data in {}", self.kind.name(), d.keep().display());
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.pid)).unwrap_or(f64::NAN)
    }

    /// (VmRSS, VmHWM) in bytes.
    pub fn rss(&self) -> (f64, f64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        (status_kb(&s, "VmRSS:") * 1024.0, status_kb(&s, "VmHWM:") * 1024.0)
    }
}

fn status_kb(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in seconds.
pub fn proc_cpu_seconds(stat_path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_rss_are_readable() {
        let cpu = proc_cpu_seconds("/proc/self/stat").expect("readable");
        assert!(cpu >= 0.0);
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_kb(&s, "VmRSS:") > 0.0);
    }
}
