//! `auth_dir` shared by several instances: two `entrepot serve` processes, each with its own data
//! directory, the same htpasswd file and `--auth-dir` on one directory. A token issued by one is
//! accepted by the other, a robot created once with `entrepot robot create --auth-dir` logs in on both,
//! and a key rotated with `entrepot token rotate-key --auth-dir` is used by both — while a third
//! instance with its own (default) auth directory refuses the shared tokens.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use support::{Server, entrepot_bin};

fn add_user(htpasswd: &Path, user: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(entrepot_bin())
        .args(["user", "add", user, "--cost", "4", "--htpasswd"])
        .arg(htpasswd)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("user add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    assert!(child.wait().expect("wait").success(), "user add {user}");
}

/// A token for `scope` from the server at `base`, logging in with Basic `user:password`.
async fn token(c: &Client, base: &str, user: &str, password: &str) -> String {
    let r = c
        .get(format!("{base}/auth/token?service=entrepot&scope=repository:team/app:pull,push"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), StatusCode::OK, "token from {base} for {user}");
    let v: serde_json::Value = r.json().await.expect("json");
    v["token"].as_str().expect("token").to_string()
}

/// The status of a pull of `team/app`'s tag list with `token`: 404 (`NAME_UNKNOWN`: authorized, the
/// repository is empty) or 401 (the token is not accepted).
async fn pull_with(c: &Client, base: &str, token: &str) -> StatusCode {
    c.get(format!("{base}/v2/team/app/tags/list")).bearer_auth(token).send().await.expect("tags").status()
}

/// The `kid` in a JWT's header.
fn kid(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["kid"].as_str().expect("kid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_auth_dir_accept_each_others_tokens_and_robots() {
    let shared = tempfile::tempdir().expect("tempdir");
    let htpasswd = shared.path().join("htpasswd");
    add_user(&htpasswd, "alice", "alice-pw");
    let auth_dir = shared.path().join("auth");
    let h = htpasswd.to_str().expect("utf8");
    let d = auth_dir.to_str().expect("utf8");
    let a = Server::start_with(&["--htpasswd", h, "--auth-dir", d]);
    if !a.managed() {
        return; // ENTREPOT_TEST_REGISTRY: not our server
    }
    let b = Server::start_with(&["--htpasswd", h, "--auth-dir", d]);
    let alone = Server::start_with(&["--htpasswd", h]);
    let c = support::http_client();

    // The keys and robots live in the shared directory, not in the data directories.
    let t = token(&c, &a.url(), "alice", "alice-pw").await;
    assert!(auth_dir.join("keys").is_dir(), "signing keys in the shared auth_dir");
    assert!(!a.data_dir().join("auth").join("keys").exists(), "nothing under DATA_DIR/auth");
    assert!(alone.data_dir().join("auth").join("keys").is_dir(), "the default stays DATA_DIR/auth");

    // A's token works on B (same keys), not on the instance with its own auth directory.
    assert_eq!(pull_with(&c, &a.url(), &t).await, StatusCode::NOT_FOUND);
    assert_eq!(pull_with(&c, &b.url(), &t).await, StatusCode::NOT_FOUND);
    assert_eq!(pull_with(&c, &alone.url(), &t).await, StatusCode::UNAUTHORIZED);
    let from_b = token(&c, &b.url(), "alice", "alice-pw").await;
    assert_eq!(kid(&from_b), kid(&t), "both instances sign with the one active key");

    // A robot created once, with the CLI on the shared directory, logs in on both instances.
    let out = Command::new(entrepot_bin())
        .args(["robot", "create", "ci", "--scope", "team/**:pull,push", "--auth-dir", d, "--data-dir"])
        .arg(shared.path().join("unused-data-dir"))
        .output()
        .expect("robot create");
    assert!(out.status.success(), "robot create: {}", String::from_utf8_lossy(&out.stderr));
    let robot_token = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
    assert!(auth_dir.join("robots.json").is_file());
    for base in [a.url(), b.url()] {
        // Servers re-read robots.json within a second of a change.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = c
                .get(format!("{base}/auth/token?service=entrepot&scope=repository:team/app:pull"))
                .basic_auth("ci", Some(&robot_token))
                .send()
                .await
                .expect("robot token");
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "robot refused by {base}: {}", r.status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A key rotated once is picked up by both instances.
    let out = Command::new(entrepot_bin()).args(["token", "rotate-key", "--auth-dir", d]).output().expect("rotate-key");
    assert!(out.status.success(), "rotate-key: {}", String::from_utf8_lossy(&out.stderr));
    for base in [a.url(), b.url()] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = token(&c, &base, "alice", "alice-pw").await;
            if kid(&fresh) != kid(&t) {
                // Signed with the new key by one instance, accepted by the other once it has re-read the
                // keys too (within a second of the change, like the instance that signed).
                let other = if base == a.url() { b.url() } else { a.url() };
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let status = pull_with(&c, &other, &fresh).await;
                    if status == StatusCode::NOT_FOUND {
                        break;
                    }
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "only a key not yet read may refuse it");
                    assert!(Instant::now() < deadline, "{other} never accepted the new key");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                break;
            }
            assert!(Instant::now() < deadline, "{base} still signs with the old key");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The old key still verifies what it signed, on both.
    assert_eq!(pull_with(&c, &b.url(), &t).await, StatusCode::NOT_FOUND);
}

/// Robots and users created at the same moment (say from two hosts sharing the directory) are all kept:
/// each command's read-modify-write of robots.json or the htpasswd file holds a lock beside it.
#[test]
fn concurrent_cli_changes_are_all_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth_dir = dir.path().join("auth");
    let htpasswd = dir.path().join("htpasswd");
    let robots: Vec<_> = (0..8)
        .map(|i| {
            Command::new(entrepot_bin())
                .args(["robot", "create", &format!("bot{i}"), "--scope", "team/**:pull", "--auth-dir"])
                .arg(&auth_dir)
                .arg("--data-dir")
                .arg(dir.path().join("unused"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("robot create")
        })
        .collect();
    let users: Vec<_> = (0..6)
        .map(|i| {
            let mut child = Command::new(entrepot_bin())
                .args(["user", "add", &format!("user{i}"), "--cost", "4", "--htpasswd"])
                .arg(&htpasswd)
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("user add");
            {
                use std::io::Write;
                writeln!(child.stdin.take().expect("stdin"), "pw-{i}").expect("password");
            }
            child
        })
        .collect();
    for child in robots.into_iter().chain(users) {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = Command::new(entrepot_bin())
        .args(["robot", "list", "--auth-dir"])
        .arg(&auth_dir)
        .arg("--data-dir")
        .arg(dir.path().join("unused"))
        .output()
        .expect("robot list");
    let listed = String::from_utf8_lossy(&list.stdout);
    for i in 0..8 {
        assert!(listed.lines().any(|l| l.starts_with(&format!("bot{i} "))), "bot{i} kept:\n{listed}");
    }
    let file = std::fs::read_to_string(&htpasswd).expect("htpasswd");
    for i in 0..6 {
        assert!(file.lines().any(|l| l.starts_with(&format!("user{i}:"))), "user{i} kept:\n{file}");
    }
}
