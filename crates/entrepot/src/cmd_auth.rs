//! The account commands: `entrepot user add|passwd|remove|list` (an htpasswd file), `entrepot robot
//! create|list|revoke` (robot accounts under the data directory), `entrepot explain` (why a policy
//! allows or denies) and `entrepot token rotate-key`. A running server picks up every change within a
//! second, without a restart.
//!
//! Must never: print a password or a stored hash, take a password from a command-line argument (it
//! would show in `ps` and shell history), or print a robot token more than once.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use entrepot_auth::htpasswd::{DEFAULT_COST, Htpasswd};
use entrepot_auth::policy::Subject;
use entrepot_auth::robot::RobotScope;
use entrepot_auth::token::{KeyStore, now_unix};
use entrepot_auth::users::Users;
use entrepot_auth::{Action, Secret};
use entrepot_oci::RepoName;
use entrepot_server::time::rfc3339;

use crate::config::{Config, ServeArgs};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user (the password is read from standard input).
    Add(UserArgs),
    /// Change a user's password (read from standard input).
    Passwd(UserArgs),
    /// Remove a user.
    Remove(UserArgs),
    /// List the users.
    List(HtpasswdArg),
}

#[derive(Args)]
pub struct HtpasswdArg {
    /// The htpasswd file (created by `user add` if missing).
    #[arg(long, env = "ENTREPOT_HTPASSWD")]
    pub htpasswd: PathBuf,
}

#[derive(Args)]
pub struct UserArgs {
    pub name: String,
    #[command(flatten)]
    pub file: HtpasswdArg,
    /// bcrypt cost (4 to 31).
    #[arg(long, default_value_t = DEFAULT_COST)]
    pub cost: u32,
}

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create a robot account and print its token (shown once).
    Create(RobotCreateArgs),
    /// List robot accounts (never their tokens).
    List(DataDirArg),
    /// Revoke a robot's token.
    Revoke(RobotNameArgs),
}

#[derive(Args)]
pub struct DataDirArg {
    /// The registry's data directory.
    #[arg(long, env = "ENTREPOT_DATA_DIR", default_value = "./entrepot-data")]
    pub data_dir: PathBuf,
    /// The auth directory the servers use (`auth_dir`) [default: DATA_DIR/auth].
    #[arg(long, env = "ENTREPOT_AUTH_DIR")]
    pub auth_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// Where robots and signing keys are: `--auth-dir`, else `DATA_DIR/auth`.
    fn auth_dir(&self) -> PathBuf {
        self.auth_dir.clone().unwrap_or_else(|| crate::auth_config::default_auth_dir(&self.data_dir))
    }
}

#[derive(Args)]
pub struct RobotCreateArgs {
    pub name: String,
    /// `<repository pattern>:<actions>`, e.g. `team/**:pull,push`; repeatable.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// Lifetime, e.g. `90d`, `12h`, `3600s`; none: never expires.
    #[arg(long)]
    pub expires_in: Option<String>,
    #[command(flatten)]
    pub dir: DataDirArg,
}

#[derive(Args)]
pub struct RobotNameArgs {
    pub name: String,
    #[command(flatten)]
    pub dir: DataDirArg,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// A user name, or `anonymous`.
    pub user: String,
    pub repository: String,
    /// pull, push or delete.
    pub action: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a new signing key active (tokens signed by the old one stay valid until they expire).
    RotateKey(DataDirArg),
}

fn read_password(prompt: &str) -> Result<Secret, String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
    }
    let _echo = tty.then(EchoOff::new);
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    if tty {
        eprintln!();
    }
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(Secret::new(password))
}

/// Turns terminal echo off while a password is typed.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a properly sized, zero-initialised termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

fn load_users(path: &Path, create: bool) -> Result<Users, String> {
    if create && !path.exists() {
        return Ok(Users::new(Htpasswd::default()));
    }
    Users::load(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Takes an exclusive lock on `<file>.lock` next to `file`, held until the returned handle is dropped:
/// every read-modify-write of the htpasswd file or robots.json holds it, so that commands run at the
/// same time (on several hosts sharing the directory) never lose each other's changes. The files
/// themselves are still replaced atomically, so servers reading them never need the lock.
fn lock_beside(file: &Path) -> Result<std::fs::File, String> {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    let lock = file.with_file_name(name);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let handle = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| format!("cannot open the lock file {}: {e}", lock.display()))?;
    handle.lock().map_err(|e| format!("cannot lock {}: {e}", lock.display()))?;
    Ok(handle)
}

pub fn user(cmd: UserCommand) -> Result<(), String> {
    match cmd {
        UserCommand::Add(a) => {
            load_users(&a.file.htpasswd, true)?;
            let pw = read_password("password")?;
            let _lock = lock_beside(&a.file.htpasswd)?;
            let mut users = load_users(&a.file.htpasswd, true)?;
            users.add(&a.name, &pw, a.cost).map_err(|e| e.to_string())?;
            users.save(&a.file.htpasswd).map_err(|e| e.to_string())?;
            eprintln!("added user `{}` to {}", a.name, a.file.htpasswd.display());
        }
        UserCommand::Passwd(a) => {
            load_users(&a.file.htpasswd, false)?;
            let pw = read_password("new password")?;
            let _lock = lock_beside(&a.file.htpasswd)?;
            let mut users = load_users(&a.file.htpasswd, false)?;
            users.set_password(&a.name, &pw, a.cost).map_err(|e| e.to_string())?;
            users.save(&a.file.htpasswd).map_err(|e| e.to_string())?;
            eprintln!("changed the password of `{}`", a.name);
        }
        UserCommand::Remove(a) => {
            let _lock = lock_beside(&a.file.htpasswd)?;
            let mut users = load_users(&a.file.htpasswd, false)?;
            users.remove(&a.name).map_err(|e| e.to_string())?;
            users.save(&a.file.htpasswd).map_err(|e| e.to_string())?;
            eprintln!("removed user `{}`", a.name);
        }
        UserCommand::List(f) => {
            let users = load_users(&f.htpasswd, false)?;
            for u in users.list() {
                println!("{u}");
            }
        }
    }
    Ok(())
}

/// Parses `90d`, `12h`, `30m`, `45s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration `{s}` (e.g. 90d, 12h, 30m, 45s)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("invalid duration unit in `{s}` (use s, m, h, d or w)")),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(|| format!("invalid duration `{s}`"))
}

pub fn robot(cmd: RobotCommand) -> Result<(), String> {
    use entrepot_auth::service::{read_robots, write_robots};
    match cmd {
        RobotCommand::Create(a) => {
            let path = crate::auth_config::robots_file(&a.dir.auth_dir());
            let _lock = lock_beside(&path)?;
            let mut robots = read_robots(&path)?;
            let scopes = a
                .scopes
                .iter()
                .map(|s| RobotScope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let now = now_unix();
            let expires_at = a.expires_in.as_deref().map(parse_duration).transpose()?.map(|d| now + d);
            let (record, token) = robots.create(&a.name, scopes, expires_at, now).map_err(|e| e.to_string())?;
            write_robots(&path, &robots).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "created robot `{}` ({}); its token is shown once — log in with `-u {} -p <token>`:",
                record.name,
                record.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                record.name
            );
            println!("{}", token.expose());
        }
        RobotCommand::List(d) => {
            let robots = read_robots(&crate::auth_config::robots_file(&d.auth_dir()))?;
            let now = now_unix();
            println!("{:<24} {:<18} {:<10} {:<11} SCOPES", "NAME", "ID", "STATE", "EXPIRES");
            for r in robots.list() {
                let state = if r.revoked_at.is_some() {
                    "revoked"
                } else if r.is_active(now) {
                    "active"
                } else {
                    "expired"
                };
                let expires = r.expires_at.map_or_else(|| "never".to_string(), |t| rfc3339(t)[..10].to_string());
                let scopes = r.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
                println!("{:<24} {:<18} {:<10} {:<11} {scopes}", r.name, r.id, state, expires);
            }
        }
        RobotCommand::Revoke(a) => {
            let path = crate::auth_config::robots_file(&a.dir.auth_dir());
            let _lock = lock_beside(&path)?;
            let mut robots = read_robots(&path)?;
            robots.revoke(&a.name, now_unix()).map_err(|e| e.to_string())?;
            write_robots(&path, &robots).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("revoked robot `{}`", a.name);
        }
    }
    Ok(())
}

pub fn explain(a: ExplainArgs) -> Result<bool, String> {
    let repo = RepoName::parse(&a.repository).map_err(|e| format!("repository: {e}"))?;
    let action = match a.action.as_str() {
        "pull" => Action::Pull,
        "push" => Action::Push,
        "delete" => Action::Delete,
        other => return Err(format!("action: expected pull, push or delete, got `{other}`")),
    };
    let config = Config::load(a.serve)?;
    let Some(auth) = config.auth else {
        println!("allowed: authentication is off (no htpasswd and no [auth] section), so everybody may do everything");
        return Ok(true);
    };
    let subject = if a.user == "anonymous" { Subject::Anonymous } else { Subject::user(&a.user) };
    let decision = auth.settings.policy.decide(&subject, &repo, action);
    let who = if a.user == "anonymous" { "anonymous".to_string() } else { format!("user `{}`", a.user) };
    println!("{who} {} on `{repo}`: {decision}", action.as_str());
    Ok(decision.allowed)
}

pub fn token(cmd: TokenCommand) -> Result<(), String> {
    match cmd {
        TokenCommand::RotateKey(d) => {
            let dir = crate::auth_config::keys_dir(&d.auth_dir());
            let mut keys = KeyStore::open_or_create(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let old = keys.active().kid().to_string();
            keys.rotate(now_unix()).map_err(|e| e.to_string())?;
            eprintln!("new signing key {} is active; {old} still verifies the tokens it signed", keys.active().kid());
        }
    }
    Ok(())
}
