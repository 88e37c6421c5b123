//! Starting the two registries on fresh data directories, and reading their resource use from /proc.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::client::Conn;
use crate::{Result, err};

/// An S3 bucket on an S3-compatible server reached over plain HTTP, with its credentials.
#[derive(Clone, Debug)]
pub struct S3Target {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

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
        Server::start_entrepot_with(bin, &[], &[]).await
    }

    /// Starts `entrepot serve` with extra flags and environment variables (e.g. the S3 and PostgreSQL
    /// backends) and waits for its `listening on ADDR` line.
    pub async fn start_entrepot_with(bin: &Path, args: &[String], envs: &[(String, String)]) -> Result<Server> {
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
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
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
        let fs = |data: &Path| format!("  filesystem:\n    rootdirectory: {}\n", data.display());
        Server::start_distribution_with(bin, fs, &[]).await
    }

    /// Starts distribution with its `s3` storage driver on `s3` (an S3-compatible server over plain
    /// HTTP). Distribution 2.8 addresses the bucket path-style whenever `regionendpoint` is set (it has
    /// no `forcepathstyle` key). Redirects of blob GETs to presigned URLs are turned off, so it serves
    /// the bytes itself as Entrepôt does by default.
    pub async fn start_distribution_s3(bin: &Path, s3: &S3Target) -> Result<Server> {
        let section = format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    \
             bucket: {}\n    secure: false\n    v4auth: true\n    rootdirectory: /distribution\n  \
             redirect:\n    disable: true\n",
            s3.access_key, s3.secret_key, s3.region, s3.endpoint, s3.bucket
        );
        // The AWS SDK inside distribution panics at start when AWS_CA_BUNDLE is set and its HTTP
        // transport is not the default one (and the endpoint is plain HTTP anyway).
        Server::start_distribution_with(bin, move |_| section, &["AWS_CA_BUNDLE"]).await
    }

    /// Starts distribution with the `storage:` driver section that `driver(data_dir)` returns, without
    /// the environment variables `env_remove`.
    async fn start_distribution_with(
        bin: &Path,
        driver: impl FnOnce(&Path) -> String,
        env_remove: &[&str],
    ) -> Result<Server> {
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
                 storage:\n  cache:\n    blobdescriptor: inmemory\n{}  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n",
                driver(&data)
            ),
        )?;
        let logf = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        for k in env_remove {
            cmd.env_remove(k);
        }
        let child = cmd
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
                // The log goes away with the data directory: quote its end.
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(err(format!(
                    "{} not answering on {} (log: {}):\n{tail}",
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

/// Busy CPU seconds of the whole machine since boot, all CPUs together (from `/proc/stat`: every
/// state but idle and iowait).
pub fn machine_busy_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else { return f64::NAN };
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / clock_ticks()
}

/// CPU seconds of the process `root` and all its live descendants (utime + stime of each), plus the
/// CPU of the children it has already reaped (cutime + cstime): e.g. PostgreSQL's postmaster and its
/// backends, nginx's master and its workers. 0 when `root` is gone.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    // (pid, ppid, own CPU ticks, reaped children's CPU ticks) of every process.
    let mut procs: Vec<(u32, u32, f64, f64)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some(close) = s.rfind(')') else { continue };
            let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            procs.push((pid, num(1) as u32, num(11) + num(12), num(13) + num(14)));
        }
    }
    let mut ticks = 0.0;
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        for &(p, ppid, own, reaped) in &procs {
            if p == pid {
                ticks += own + if pid == root { reaped } else { 0.0 };
            } else if ppid == pid {
                stack.push(p);
            }
        }
    }
    ticks / clock_ticks()
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

    #[test]
    fn tree_cpu_counts_live_and_reaped_children() {
        let busy0 = machine_busy_seconds();
        // A child shell that burns CPU, then sleeps until killed.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; sleep 60")
            .spawn()
            .expect("spawn sh");
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while proc_cpu_seconds(&stat).unwrap_or(0.0) < 0.2 {
            assert!(Instant::now() < deadline, "the child never used 0.2 CPU-s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let own = proc_cpu_seconds("/proc/self/stat").expect("own stat");
        let child_cpu = proc_cpu_seconds(&stat).expect("child stat");
        let tree = tree_cpu_seconds(std::process::id());
        assert!(tree >= own + child_cpu, "tree {tree} < own {own} + child {child_cpu}");
        // Once reaped, the child's time is in our cutime/cstime and still counted.
        child.kill().expect("kill the child");
        child.wait().expect("reap the child");
        let tree = tree_cpu_seconds(std::process::id());
        assert!(tree >= own + child_cpu, "after reaping: tree {tree} < own {own} + child {child_cpu}");
        assert!(machine_busy_seconds() - busy0 >= child_cpu - 0.05, "machine busy time grew less than the child's");
        assert_eq!(tree_cpu_seconds(u32::MAX), 0.0, "no such process");
    }
}
