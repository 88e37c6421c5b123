//! End-to-end logins with the real clients against `entrepot serve --htpasswd` over HTTPS, with a
//! development CA made by `entrepot tls dev-ca`: `podman login`, `buildah login`, `skopeo login`,
//! `docker login` (with the CA in the engine's `certs.d`), oras with its basic and token backends, and
//! a robot token used as a password; then push and pull through each of them.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::e2e::*;
use support::{Server, entrepot_bin};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// A registry with authentication and HTTPS, and the files to trust and log in to it.
struct Secure {
    server: Server,
    dir: tempfile::TempDir,
}

impl Secure {
    fn start() -> Secure {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let mut child = Command::new(entrepot_bin())
            .args(["user", "add", USER, "--cost", "4", "--htpasswd"])
            .arg(&htpasswd)
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("user add");
        writeln!(child.stdin.take().expect("stdin"), "{PASSWORD}").expect("password");
        assert!(child.wait().expect("user add").success());
        let tls = dir.path().join("tls");
        let out = Command::new(entrepot_bin())
            .args(["tls", "dev-ca", "--host", "127.0.0.1", "--host", "localhost", "--out"])
            .arg(&tls)
            .output()
            .expect("dev-ca");
        assert!(out.status.success(), "dev-ca: {}", String::from_utf8_lossy(&out.stderr));
        let s = |p: PathBuf| p.display().to_string();
        let server = Server::start_with(&[
            "--htpasswd",
            &s(htpasswd),
            "--tls-cert",
            &s(tls.join("server.crt")),
            "--tls-key",
            &s(tls.join("server.key")),
        ]);
        Secure { server, dir }
    }

    fn host(&self) -> &str {
        &self.server.addr
    }

    /// A directory holding only `ca.crt`, for `--cert-dir` (containers/image reads every `*.key` there
    /// as a client key, so the CA's own directory will not do).
    fn cert_dir(&self) -> String {
        let trust = self.dir.path().join("trust");
        std::fs::create_dir_all(&trust).expect("trust dir");
        std::fs::copy(self.ca(), trust.join("ca.crt")).expect("ca.crt");
        trust.display().to_string()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.crt")
    }

    /// `curl` over HTTPS, verifying with the CA: status code and body.
    fn curl(&self, path: &str, user: Option<(&str, &str)>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}", "--cacert"]).arg(self.ca());
        if let Some((u, p)) = user {
            c.args(["-u", &format!("{u}:{p}")]);
        }
        c.arg(format!("https://{}{path}", self.host()));
        let out = run(&mut c);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn scratch_context(dir: &Path, text: &str) {
    std::fs::write(dir.join("greeting.txt"), text).expect("greeting");
    std::fs::write(dir.join("data.bin"), pseudo_random(64 * 1024, text.len() as u64)).expect("data");
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY greeting.txt /greeting.txt\nCOPY data.bin /data.bin\n",
    )
    .expect("Containerfile");
}

#[test]
fn podman_buildah_skopeo_log_in_push_and_pull_over_https() {
    require(&["podman", "buildah", "skopeo", "curl"]);
    let reg = Secure::start();
    let host = reg.host().to_string();
    let certs = reg.cert_dir();
    let c = Containers::new();

    // Plain HTTPS works and is verified against the development CA; without credentials: 401.
    let (code, _) = reg.curl("/v2/", None);
    assert_eq!(code, 401);
    let (code, _) = reg.curl("/v2/", Some((USER, PASSWORD)));
    assert_eq!(code, 200);

    // podman: a wrong password is refused, the right one accepted; push and pull an image.
    let bad = try_run(&mut c.podman(&["login", "--cert-dir", &certs, "-u", USER, "-p", "wrong", &host]));
    assert!(!bad.ok(), "wrong password accepted");
    run(&mut c.podman(&["login", "--cert-dir", &certs, "-u", USER, "-p", PASSWORD, &host]));
    let ctx = tempfile::tempdir().expect("ctx");
    scratch_context(ctx.path(), "hello from podman over https\n");
    let image = format!("{host}/{}:1.0", unique_repo("auth", "podman"));
    run(&mut c.podman(&["build", "--isolation", "chroot", "--quiet", "-t", &image, &ctx.path().display().to_string()]));
    run(&mut c.podman(&["push", "--cert-dir", &certs, &image]));
    let fresh = Containers::new();
    let denied = try_run(&mut fresh.podman(&["pull", "--cert-dir", &certs, &image]));
    assert!(!denied.ok(), "pulled without logging in");
    run(&mut fresh.podman(&["login", "--cert-dir", &certs, "-u", USER, "-p", PASSWORD, &host]));
    run(&mut fresh.podman(&["pull", "--cert-dir", &certs, &image]));

    // buildah: log in and push the same image under another name.
    let image2 = format!("{host}/{}:2.0", unique_repo("auth", "buildah"));
    run(&mut c.buildah(&["login", "--cert-dir", &certs, "-u", USER, "-p", PASSWORD, &host]));
    run(&mut c.buildah(&["tag", &image, &image2]));
    run(&mut c.buildah(&["push", "--cert-dir", &certs, &image2]));

    // skopeo: log in, copy to an OCI layout and back under a new tag, list tags.
    let auth = tempfile::tempdir().expect("auth dir");
    let authfile = auth.path().join("auth.json");
    let skopeo = |args: &[&str]| {
        let mut cmd = Command::new("skopeo");
        cmd.args(args).env("REGISTRY_AUTH_FILE", &authfile);
        cmd
    };
    run(&mut skopeo(&["login", "--cert-dir", &certs, "-u", USER, "-p", PASSWORD, &host]));
    let layout = tempfile::tempdir().expect("layout");
    let oci = format!("oci:{}:copy", layout.path().display());
    run(&mut skopeo(&["copy", "--src-cert-dir", &certs, &format!("docker://{image2}"), &oci]));
    let image3 = image2.replace(":2.0", ":3.0");
    run(&mut skopeo(&["copy", "--dest-cert-dir", &certs, &oci, &format!("docker://{image3}")]));
    let tags = run(&mut skopeo(&[
        "list-tags",
        "--cert-dir",
        &certs,
        &format!("docker://{}", image2.trim_end_matches(":2.0")),
    ]));
    let tags: Value = serde_json::from_str(&tags).expect("tags json");
    assert_eq!(tags["Tags"], serde_json::json!(["2.0", "3.0"]));

    // A robot token as the password: pull allowed by its scope, push refused.
    let robot = Command::new(entrepot_bin())
        .args(["robot", "create", "ci", "--scope", "e2e/**:pull", "--data-dir"])
        .arg(reg.server.data_dir())
        .output()
        .expect("robot create");
    assert!(robot.status.success());
    let token = String::from_utf8(robot.stdout).expect("utf8").trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1200)); // the server re-reads the robot file
    let r = Containers::new();
    run(&mut r.podman(&["login", "--cert-dir", &certs, "-u", "ci", "-p", &token, &host]));
    run(&mut r.podman(&["pull", "--cert-dir", &certs, &image]));
    run(&mut r.podman(&["tag", &image, &image.replace(":1.0", ":robot")]));
    let push = try_run(&mut r.podman(&["push", "--cert-dir", &certs, &image.replace(":1.0", ":robot")]));
    assert!(!push.ok(), "a pull-only robot pushed");
}

#[test]
fn docker_login_push_pull_over_https() {
    require(&["docker", "gcc"]);
    let reg = Secure::start();
    let host = reg.host().to_string();
    // The engine trusts a registry's CA from certs.d/<host:port>/ca.crt (read per connection).
    let certs_d = PathBuf::from(format!("/etc/docker/certs.d/{host}"));
    std::fs::create_dir_all(&certs_d).expect("certs.d (the docker e2e tests run as root)");
    std::fs::copy(reg.ca(), certs_d.join("ca.crt")).expect("ca.crt");
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(certs_d);

    let config = tempfile::tempdir().expect("docker config");
    std::fs::write(config.path().join("config.json"), "{\"auths\":{}}").expect("config.json");
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.args(args).env("DOCKER_CONFIG", config.path()).env("DOCKER_BUILDKIT", "0");
        c
    };
    let ctx = tempfile::tempdir().expect("ctx");
    static_hello(ctx.path(), "hello over https");
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY hello /hello\nCMD [\"/hello\"]\n").expect("df");
    let image = format!("{host}/{}:1.0", unique_repo("auth", "docker"));
    run(&mut docker(&["build", "--quiet", "-t", &image, &ctx.path().display().to_string()]));
    struct Rmi<'a>(&'a str, &'a Path);
    impl Drop for Rmi<'_> {
        fn drop(&mut self) {
            let _ =
                Command::new("docker").args(["image", "rm", "--force", self.0]).env("DOCKER_CONFIG", self.1).output();
        }
    }
    let _rmi = Rmi(&image, config.path());

    let denied = try_run(&mut docker(&["push", &image]));
    assert!(!denied.ok(), "pushed without logging in");
    let mut login = docker(&["login", "-u", USER, "--password-stdin", &host]);
    login.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = login.spawn().expect("docker login");
    writeln!(child.stdin.take().expect("stdin"), "{PASSWORD}").expect("password");
    let out = child.wait_with_output().expect("docker login");
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let pushed = run(&mut docker(&["push", &image]));
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    run(&mut docker(&["image", "rm", &image]));
    run(&mut docker(&["pull", &image]));
    let out = run(&mut docker(&["run", "--rm", &image]));
    assert!(out.contains("hello over https"), "{out}");
    run(&mut docker(&["logout", &host]));
    run(&mut docker(&["image", "rm", &image]));
    let denied = try_run(&mut docker(&["pull", &image]));
    assert!(!denied.ok(), "pulled after logout");
}

#[test]
fn oras_basic_and_token_backends_over_https() {
    let reg = Secure::start();
    let repo = unique_repo("auth", "oras");
    for backend in ["basic", "token"] {
        let work = tempfile::tempdir().expect("work");
        std::fs::write(work.path().join("artifact.txt"), format!("an artifact pushed with the {backend} backend\n"))
            .expect("file");
        std::fs::write(work.path().join("blob.bin"), pseudo_random(300 * 1024, 7)).expect("file");
        let out = work.path().join("out.json");
        run(Command::new(venv_python())
            .arg(clients_dir().join("oras_auth.py"))
            .args([backend, reg.host(), &repo])
            .arg(reg.ca())
            .args([USER, PASSWORD])
            .arg(work.path())
            .arg(&out));
        let result: Value = serde_json::from_slice(&std::fs::read(&out).expect("out")).expect("json");
        assert_eq!(result["push_status"], 201, "{backend}: {result}");
        assert_eq!(result["pulled"], result["files"], "{backend}: pulled bytes differ");
        assert!(result["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == backend)), "{backend}: {result}");
        if backend == "token" {
            assert!(result["wrong_password"].as_str().is_some_and(|s| s.starts_with("refused")), "{result}");
        }
    }
}

#[test]
fn certificate_is_reloaded_without_a_restart() {
    require(&["curl"]);
    let reg = Secure::start();
    let port = reg.host().rsplit(':').next().expect("port").to_string();
    let curl_as = |name: &str| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(reg.ca()).args([
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
            &format!("https://{name}:{port}/v2/"),
        ]);
        try_run(&mut c).stdout_str()
    };
    // The first certificate does not name `renewed.test`: verification fails (curl prints 000).
    assert_eq!(curl_as("localhost"), "401");
    assert_eq!(curl_as("renewed.test"), "000");
    // Renew it in place (same CA), as certbot or cert-manager would.
    let out = Command::new(entrepot_bin())
        .args(["tls", "dev-ca", "--host", "127.0.0.1", "--host", "renewed.test", "--out"])
        .arg(reg.dir.path().join("tls"))
        .output()
        .expect("dev-ca");
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while curl_as("renewed.test") != "401" {
        assert!(std::time::Instant::now() < deadline, "the renewed certificate was not picked up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(curl_as("localhost"), "000", "the old certificate is still served");
}
