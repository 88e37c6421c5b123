//! Test support (feature `testsupport`): a throwaway PostgreSQL 15 server for tests — this crate's and
//! other crates' (`entrepot-meta = { features = ["testsupport"] }` in their dev-dependencies).
//!
//! [`PgServer::start`] runs `initdb` into a fresh temporary directory and starts the server with
//! `pg_ctl` on a free loopback port (Unix socket in the same directory; `fsync=off`: tests need no
//! durability across power cuts); [`PgServer::create_database`] makes one database per test; dropping
//! the server stops it (`pg_ctl stop -m immediate`) and removes the directory. PostgreSQL refuses to run
//! as root, so when the tests run as root every PostgreSQL command runs as the `postgres` user
//! (`runuser -u postgres --`), which owns the directory. A missing PostgreSQL is a test failure, never a
//! skip: `.ci/install-clients` installs `postgresql-15`. Binaries are looked up in
//! `$ENTREPOT_PG_BIN`, else `/usr/lib/postgresql/15/bin`. Never binds anything but 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running PostgreSQL server, stopped when dropped.
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    databases: AtomicU32,
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Makes `path` (a file or directory the test wrote, e.g. a TLS key) readable by the server as
/// PostgreSQL wants: owned by the server's user (`postgres` when the tests run as root), mode 0600
/// (0700 for a directory). Call it before [`PgServer::start_with_options`].
pub fn give_to_server(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if running_as_root() {
        let status = Command::new("chown").arg("postgres:postgres").arg(path).status().expect("chown");
        assert!(status.success(), "chown postgres {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgServer {
    /// Initialises and starts a server; panics (failing the test) when PostgreSQL is not installed or
    /// does not start, with its log.
    pub fn start() -> PgServer {
        PgServer::start_with_options("")
    }

    /// As [`PgServer::start`], with more server settings (`-c name=value …`), e.g. to turn TLS on.
    pub fn start_with_options(extra: &str) -> PgServer {
        let bin = std::env::var_os("ENTREPOT_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert!(
            bin.join("initdb").exists() && bin.join("pg_ctl").exists(),
            "PostgreSQL 15 is not installed ({} has no initdb / pg_ctl): install the Debian package postgresql-15 \
             (.ci/install-clients does) or point ENTREPOT_PG_BIN at its bin directory",
            bin.display()
        );
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("entrepot-pg-").tempdir().expect("temporary directory");
        if as_postgres {
            let status = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let mut server = PgServer { bin, dir, port: 0, as_postgres, databases: AtomicU32::new(0) };
        let data = server.data_dir();
        server.run_ok(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A port taken between choosing and binding makes pg_ctl fail: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 {extra}",
                server.port,
                server.dir.path().display()
            );
            let log = server.dir.path().join("log");
            let (ok, out) = server.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "start".as_ref(),
                ],
            );
            if ok {
                return server;
            }
            last = format!("{out}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> (bool, String) {
        match self.command(program).args(args).output() {
            Ok(o) => (
                o.status.success(),
                format!("{program}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            ),
            Err(e) => (false, format!("cannot run {program}: {e}")),
        }
    }

    fn run_ok(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let (ok, out) = self.run(program, args);
        assert!(ok, "{out}");
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's Unix socket (and its data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `name` (which must exist) for the superuser `postgres`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("test{}", self.databases.fetch_add(1, Ordering::SeqCst));
        let port = self.port.to_string();
        self.run_ok(
            "createdb",
            &[
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                name.as_ref(),
            ],
        );
        self.url(&name)
    }

    /// Runs one SQL statement (as the superuser, through `psql`) in database `name`; returns its output
    /// as unaligned rows. For tests that inspect or break the database behind the store's back.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                name,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "immediate".as_ref(), "-w".as_ref(), "stop".as_ref()],
        );
    }
}
