//! Authentication and authorization against a real `entrepot serve` with `--htpasswd` and an access
//! policy: the login flows that must work (Basic, token GET, OAuth2 POST with refresh tokens, robots,
//! anonymous pulls of public repositories, external issuers) and the attempts that must fail, each
//! with its exact status and error code.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entrepot_auth::token::{self, KeyStore, SigningKey};
use entrepot_auth::{Actions, Grant, Resource};
use entrepot_oci::RepoName;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::{Server, entrepot_bin};

const PASSWORDS: &[(&str, &str)] = &[("root", "root-pw"), ("bob", "bob-pw"), ("carol", "carol-pw"), ("eve", "eve-pw")];

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn add_user(htpasswd: &Path, user: &str, password: &str) {
    let mut child = Command::new(entrepot_bin())
        .args(["user", "add", user, "--cost", "4", "--htpasswd"])
        .arg(htpasswd)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("user add");
    use std::io::Write;
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    assert!(child.wait().expect("wait").success(), "user add {user}");
}

struct Env {
    server: Server,
    http: Client,
    _dir: tempfile::TempDir,
    external_key: SigningKey,
}

fn policy_config(jwks: &Path) -> String {
    format!(
        r#"
[auth]
service = "entrepot-test"

[auth.policy]
admins = ["root"]
[auth.policy.groups]
devs = ["bob"]

[[auth.policy.rule]]
repository = "public/**"
pull = ["anonymous"]
push = ["group:devs"]

[[auth.policy.rule]]
repository = "team/**"
pull = ["group:devs"]
push = ["group:devs"]

[[auth.policy.rule]]
repository = "secret/**"
pull = ["carol"]
push = ["carol"]
delete = ["carol"]

[[auth.external]]
issuer = "https://issuer.example"
audience = "entrepot-test"
jwks_file = "{}"
algorithms = ["ES256"]
leeway_secs = 0
"#,
        jwks.display()
    )
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        for (u, p) in PASSWORDS {
            add_user(&htpasswd, u, p);
        }
        let external_key = SigningKey::generate();
        let mut set = token::KeySet::new();
        set.insert(external_key.kid(), external_key.verify_key());
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, set.to_jwks().to_string()).expect("jwks");
        let config = dir.path().join("entrepot.toml");
        std::fs::write(&config, policy_config(&jwks)).expect("config");
        let server = Server::start_with(&[
            "--htpasswd",
            htpasswd.to_str().expect("utf8"),
            "--config",
            config.to_str().expect("utf8"),
        ]);
        Env { server, http: support::http_client(), _dir: dir, external_key }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    async fn token(&self, user: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let mut req = self.http.get(self.url("/auth/token")).query(&[("service", "entrepot-test")]);
        for s in scopes {
            req = req.query(&[("scope", s)]);
        }
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.expect("token");
        assert_eq!(r.status(), StatusCode::OK, "token request");
        let body: Value = r.json().await.expect("json");
        body["token"].as_str().expect("token field").to_string()
    }

    async fn push_blob(&self, repo: &str, data: &[u8], user: (&str, &str)) -> Response {
        self.http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data))))
            .basic_auth(user.0, Some(user.1))
            .body(data.to_vec())
            .send()
            .await
            .expect("push")
    }

    /// Pushes a tiny image as `user`; returns the manifest digest.
    async fn push_image(&self, repo: &str, tag: &str, user: (&str, &str)) -> String {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#);
        let layer = format!("layer of {repo}");
        for b in [config.as_bytes(), layer.as_bytes()] {
            let r = self.push_blob(repo, b, user).await;
            assert_eq!(r.status(), StatusCode::CREATED, "blob into {repo}");
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer.as_bytes()), "size": layer.len()}],
        });
        let body = serde_json::to_vec(&m).expect("json");
        let r = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .basic_auth(user.0, Some(user.1))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(r.status(), StatusCode::CREATED, "manifest into {repo}");
        sha256(&body)
    }

    /// The server's own signing key, as an attacker who stole it would have it (for crafting tokens
    /// with chosen claims).
    fn server_key(&self) -> SigningKey {
        let keys = KeyStore::open_or_create(&self.server.data_dir().join("auth").join("keys")).expect("keys");
        keys.active().clone()
    }
}

async fn error(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let challenge = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no error envelope: {body}")).to_string();
    (status, code, challenge)
}

fn grant(repo: &str, actions: &str) -> Grant {
    let mut g = Grant::new();
    g.add(Resource::Repository(RepoName::parse(repo).expect("name")), Actions::parse_list(actions).expect("actions"));
    g
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), msg].concat());
    Sha256::digest([opad.as_slice(), inner.as_slice()].concat()).to_vec()
}

async fn status_with_bearer(env: &Env, path: &str, token: &str) -> (StatusCode, String, String) {
    let r = env.http.get(env.url(path)).bearer_auth(token).send().await.expect("get");
    error(r).await
}

#[tokio::test]
async fn logins_that_must_work() {
    let env = Env::start();
    let bob = ("bob", "bob-pw");
    let d = env.push_image("team/app", "1.0", bob).await;

    // Basic on every endpoint.
    let r = env.http.get(env.url("/v2/team/app/manifests/1.0")).basic_auth("bob", Some("bob-pw")).send().await;
    assert_eq!(r.expect("get").status(), StatusCode::OK);

    // The token dance a client does: challenge, then the realm with Basic, then Bearer.
    let r = env.http.get(env.url("/v2/team/app/manifests/1.0")).send().await.expect("get");
    let (status, code, challenge) = error(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(challenge.starts_with("Bearer realm=\"http://"), "{challenge}");
    assert!(challenge.contains("/auth/token\""), "{challenge}");
    assert!(challenge.contains("service=\"entrepot-test\""), "{challenge}");
    assert!(challenge.contains("scope=\"repository:team/app:pull\""), "{challenge}");
    let t = env.token(Some(bob), &["repository:team/app:pull"]).await;
    let r = env.http.get(env.url(&format!("/v2/team/app/manifests/{d}"))).bearer_auth(&t).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);

    // A partial grant is not an error: bob asks for delete too and gets only pull,push.
    let r = env
        .http
        .get(env.url("/auth/token?service=entrepot-test&scope=repository:team/app:pull,push,delete"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .expect("token");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    assert!(body["expires_in"].as_u64().is_some_and(|e| e > 0));
    assert!(body["issued_at"].as_str().is_some_and(|s| s.ends_with('Z')));

    // OAuth2 POST with a refresh token, then the refresh grant.
    let r = env
        .http
        .post(env.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-pw"),
            ("service", "entrepot-test"),
            ("client_id", "test"),
            ("access_type", "offline"),
            ("scope", "repository:team/app:pull"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    let refresh = body["refresh_token"].as_str().expect("refresh token").to_string();
    // A refresh token is not an access token.
    let (status, code, _) = status_with_bearer(&env, "/v2/team/app/tags/list", &refresh).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let r = env
        .http
        .post(env.url("/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "entrepot-test"),
            ("client_id", "test"),
            ("scope", "repository:team/app:pull"),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    let t = body["access_token"].as_str().expect("access token");
    let r = env.http.get(env.url("/v2/team/app/tags/list")).bearer_auth(t).send().await.expect("tags");
    assert_eq!(r.status(), StatusCode::OK);

    // Anonymous pulls of a public repository, directly and with an anonymous token.
    env.push_image("public/base", "latest", bob).await;
    let r = env.http.get(env.url("/v2/public/base/manifests/latest")).send().await.expect("anon");
    assert_eq!(r.status(), StatusCode::OK);
    let t = env.token(None, &["repository:public/base:pull,push"]).await;
    let r = env.http.get(env.url("/v2/public/base/tags/list")).bearer_auth(&t).send().await.expect("anon token");
    assert_eq!(r.status(), StatusCode::OK);

    // A token of the trusted external issuer.
    let ext = token::issue(
        &env.external_key,
        "https://issuer.example",
        "ci",
        "entrepot-test",
        &grant("team/app", "pull"),
        Duration::from_secs(60),
        token::now_unix(),
    );
    let r = env.http.get(env.url("/v2/team/app/tags/list")).bearer_auth(ext.token.expose()).send().await;
    assert_eq!(r.expect("ext").status(), StatusCode::OK);

    // A user added while the server runs can log in within a couple of seconds.
    let htpasswd = env._dir.path().join("htpasswd");
    add_user(&htpasswd, "dave", "dave-pw");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = env.http.get(env.url("/v2/")).basic_auth("dave", Some("dave-pw")).send().await.expect("dave");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn attempts_that_must_fail() {
    let env = Env::start();
    let bob = ("bob", "bob-pw");
    let carol = ("carol", "carol-pw");
    env.push_image("team/app", "1.0", bob).await;
    let secret_digest = env.push_image("secret/app", "1.0", carol).await;

    // No credentials.
    let r = env.http.get(env.url("/v2/team/app/tags/list")).send().await.expect("get");
    let (s, c, ch) = error(r).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(ch.contains("scope=\"repository:team/app:pull\""), "{ch}");
    let r = env.http.post(env.url("/v2/team/app/blobs/uploads/")).send().await.expect("post");
    let (s, c, ch) = error(r).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(ch.contains("scope=\"repository:team/app:pull,push\""), "{ch}");

    // Wrong password, and the token endpoint refuses it too.
    let r = env.http.get(env.url("/v2/team/app/tags/list")).basic_auth("bob", Some("nope")).send().await;
    let (s, c, _) = error(r.expect("get")).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let r = env.http.get(env.url("/auth/token?scope=repository:team/app:pull")).basic_auth("bob", Some("x")).send();
    let (s, c, _) = error(r.await.expect("token")).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // A logged-in user without the right: 403 DENIED, whether the repository exists or not.
    for path in ["/v2/secret/app/tags/list", "/v2/secret/none/tags/list", "/v2/secret/app/manifests/1.0"] {
        let r = env.http.get(env.url(path)).basic_auth("bob", Some("bob-pw")).send().await.expect("get");
        let (s, c, _) = error(r).await;
        assert_eq!((s, c.as_str()), (StatusCode::FORBIDDEN, "DENIED"), "{path}");
    }
    // Referrers obey pull.
    let r = env.http.get(env.url(&format!("/v2/secret/app/referrers/{secret_digest}"))).basic_auth(bob.0, Some(bob.1));
    let (s, c, _) = error(r.send().await.expect("referrers")).await;
    assert_eq!((s, c.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // bob may push to team/ but not delete there.
    let r = env.http.delete(env.url("/v2/team/app/manifests/1.0")).basic_auth(bob.0, Some(bob.1)).send().await;
    let (s, c, _) = error(r.expect("delete")).await;
    assert_eq!((s, c.as_str()), (StatusCode::FORBIDDEN, "DENIED"));

    // Token scope checks: a pull token used to push, a token for A used on B.
    let pull = env.token(Some(bob), &["repository:team/app:pull"]).await;
    let r = env.http.post(env.url("/v2/team/app/blobs/uploads/")).bearer_auth(&pull).send().await.expect("post");
    let (s, c, ch) = error(r).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(ch.contains("error=\"insufficient_scope\""), "{ch}");
    let (s, _, ch) = status_with_bearer(&env, "/v2/team/other/tags/list", &pull).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(ch.contains("insufficient_scope"), "{ch}");
    // bob asking for secret/app gets a token that grants nothing there.
    let t = env.token(Some(bob), &["repository:secret/app:pull"]).await;
    let (s, _, ch) = status_with_bearer(&env, "/v2/secret/app/tags/list", &t).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(ch.contains("insufficient_scope"), "{ch}");

    // Crafted tokens.
    let key = env.server_key();
    let now = token::now_unix();
    let g = grant("team/app", "pull");
    let expired = token::issue(&key, "entrepot", "bob", "entrepot-test", &g, Duration::from_secs(60), now - 7200);
    let other_aud = token::issue(&key, "entrepot", "bob", "another-service", &g, Duration::from_secs(60), now);
    let other_iss = token::issue(&key, "someone-else", "bob", "entrepot-test", &g, Duration::from_secs(60), now);
    let foreign = SigningKey::generate();
    let foreign_tok = token::issue(&foreign, "entrepot", "bob", "entrepot-test", &g, Duration::from_secs(60), now);
    // Signed by another key while claiming ours: swap the header's kid (the signature no longer matches).
    let ft = foreign_tok.token.expose().to_string();
    let parts: Vec<&str> = ft.split('.').collect();
    let forged_kid =
        format!("{}.{}.{}", b64(&json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()})), parts[1], parts[2]);
    let claims = json!({
        "iss": "entrepot", "sub": "bob", "aud": "entrepot-test", "exp": now + 60, "iat": now, "nbf": now,
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}],
    });
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": key.kid()})), b64(&claims));
    let hs_head = format!("{}.{}", b64(&json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()})), b64(&claims));
    let jwks = KeyStore::open_or_create(&env.server.data_dir().join("auth").join("keys"))
        .expect("keys")
        .verification_keys()
        .to_jwks()
        .to_string();
    let hs256 = format!("{hs_head}.{}", URL_SAFE_NO_PAD.encode(hmac_sha256(jwks.as_bytes(), hs_head.as_bytes())));
    let ext_expired = token::issue(
        &env.external_key,
        "https://issuer.example",
        "ci",
        "entrepot-test",
        &g,
        Duration::from_secs(5),
        now - 60,
    );
    let ext_wrong_aud =
        token::issue(&env.external_key, "https://issuer.example", "ci", "other", &g, Duration::from_secs(60), now);
    let cases: Vec<(&str, String)> = vec![
        ("expired", expired.token.expose().to_string()),
        ("audience of another service", other_aud.token.expose().to_string()),
        ("another issuer", other_iss.token.expose().to_string()),
        ("signed by an unknown key", ft.clone()),
        ("signed by another key, claiming ours", forged_kid),
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256),
        ("external issuer, expired", ext_expired.token.expose().to_string()),
        ("external issuer, wrong audience", ext_wrong_aud.token.expose().to_string()),
        ("garbage", "not-a-jwt".to_string()),
    ];
    for (what, t) in cases {
        let (s, c, ch) = status_with_bearer(&env, "/v2/team/app/tags/list", &t).await;
        assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{what}");
        assert!(ch.contains("error=\"invalid_token\""), "{what}: {ch}");
    }

    // A mount from a repository without pull starts a plain upload instead (202), linking nothing.
    let secret_layer = b"layer of secret/app";
    let r = env
        .http
        .post(env.url(&format!("/v2/team/app/blobs/uploads/?mount={}&from=secret/app", sha256(secret_layer))))
        .basic_auth(bob.0, Some(bob.1))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r =
        env.http.head(env.url(&format!("/v2/team/app/blobs/{}", sha256(secret_layer)))).basic_auth(bob.0, Some(bob.1));
    assert_eq!(r.send().await.expect("head").status(), StatusCode::NOT_FOUND);
    // And without `from` (any blob of the registry) only for admins.
    let r = env
        .http
        .post(env.url(&format!("/v2/team/app/blobs/uploads/?mount={}", sha256(secret_layer))))
        .basic_auth(bob.0, Some(bob.1))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Names crafted to escape a pattern never reach the policy.
    // (Sent raw: an HTTP client would normalise `..` away before sending.)
    for path in [
        "/v2/team/../secret/app/tags/list",
        "/v2/team/%2e%2e/secret/app/tags/list",
        "/v2/team%2F..%2Fsecret/app/tags/list",
        "/v2/team/app%2F..%2F..%2Fsecret%2Fapp/tags/list",
        "/v2/Team/app/tags/list",
        "/v2/TEAM/APP/tags/list",
    ] {
        let (s, text) = raw(&env.server.addr, path, Some("Basic Ym9iOmJvYi1wdw=="));
        assert_eq!(s, 400, "{path}: {text}");
        assert!(text.contains("NAME_INVALID"), "{path}: {text}");
    }
    let r =
        env.http.get(env.url("/auth/token?scope=repository:team/../secret/app:pull")).basic_auth(bob.0, Some(bob.1));
    assert_eq!(r.send().await.expect("token").status(), StatusCode::BAD_REQUEST);

    // Catalog: filtered to what the caller may pull; a token without the catalog scope gets nothing.
    let r = env.http.get(env.url("/v2/_catalog")).basic_auth(bob.0, Some(bob.1)).send().await.expect("catalog");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["team/app"]));
    let r = env.http.get(env.url("/v2/_catalog")).basic_auth("root", Some("root-pw")).send().await.expect("catalog");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["secret/app", "team/app"]));
    let t = env.token(Some(bob), &["registry:catalog:*"]).await;
    let r = env.http.get(env.url("/v2/_catalog")).bearer_auth(&t).send().await.expect("catalog");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["team/app"]));
    let (s, c, ch) = status_with_bearer(&env, "/v2/_catalog", &pull).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(ch.contains("registry:catalog:*"), "{ch}");
    let r = env.http.get(env.url("/v2/_catalog")).send().await.expect("catalog");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Failed logins are rate-limited per user: TOOMANYREQUESTS with Retry-After.
    let mut limited = None;
    for _ in 0..15 {
        let r = env.http.get(env.url("/v2/")).basic_auth("eve", Some("guess")).send().await.expect("guess");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("rate limited after repeated failures");
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After {retry}");
    let (_, c, _) = error(r).await;
    assert_eq!(c, "TOOMANYREQUESTS");
    // ...even with the right password, until the wait is over.
    let r = env.http.get(env.url("/v2/")).basic_auth("eve", Some("eve-pw")).send().await.expect("eve");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A user whose password was checked a moment ago is not locked out by someone guessing at others.
    let r = env.http.get(env.url("/v2/")).basic_auth(carol.0, Some(carol.1)).send().await.expect("carol");
    assert_eq!(r.status(), StatusCode::OK);
}

fn robot_cmd(data_dir: &Path, args: &[&str]) -> String {
    let out =
        Command::new(entrepot_bin()).arg("robot").args(args).arg("--data-dir").arg(data_dir).output().expect("robot");
    assert!(out.status.success(), "robot {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test]
async fn robot_tokens() {
    let env = Env::start();
    env.push_image("team/app", "1.0", ("bob", "bob-pw")).await;
    let dir = env.server.data_dir().to_path_buf();
    let token = robot_cmd(&dir, &["create", "ci", "--scope", "team/**:pull"]).trim().to_string();
    assert!(token.starts_with("ert_"), "{token}");
    let short =
        robot_cmd(&dir, &["create", "short", "--scope", "team/**:pull", "--expires-in", "1s"]).trim().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let get = |user: &str, pw: &str| {
        env.http.get(env.url("/v2/team/app/tags/list")).basic_auth(user.to_string(), Some(pw.to_string())).send()
    };
    assert_eq!(get("ci", &token).await.expect("robot").status(), StatusCode::OK);
    // The token is the robot's: another name with it fails.
    assert_eq!(get("bob", &token).await.expect("robot").status(), StatusCode::UNAUTHORIZED);
    // Scoped: no push.
    let r = env.http.post(env.url("/v2/team/app/blobs/uploads/")).basic_auth("ci", Some(&token)).send().await;
    assert_eq!(error(r.expect("post")).await.1, "DENIED");
    // Through the token endpoint as well (what podman/docker do with a Bearer challenge).
    let t = env.token(Some(("ci", &token)), &["repository:team/app:pull,push"]).await;
    let r = env.http.get(env.url("/v2/team/app/tags/list")).bearer_auth(&t).send().await.expect("bearer");
    assert_eq!(r.status(), StatusCode::OK);

    // Past its expiry.
    let (s, c, _) = error(get("short", &short).await.expect("expired")).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // After revocation (picked up by the running server within a second or so).
    robot_cmd(&dir, &["revoke", "ci"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, c, _) = error(get("ci", &token).await.expect("revoked")).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let list = robot_cmd(&dir, &["list"]);
    assert!(list.contains("revoked") && list.contains("expired"), "{list}");
    assert!(!list.contains("ert_"), "a listing never shows a token");
}

#[test]
fn explain_names_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = dir.path().join("htpasswd");
    add_user(&htpasswd, "bob", "pw");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).expect("jwks");
    let config = dir.path().join("entrepot.toml");
    std::fs::write(&config, policy_config(&jwks)).expect("config");
    let run = |args: &[&str]| {
        Command::new(entrepot_bin())
            .arg("explain")
            .args(args)
            .arg("--config")
            .arg(&config)
            .arg("--htpasswd")
            .arg(&htpasswd)
            .output()
            .expect("explain")
    };
    let out = run(&["bob", "team/app", "push"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("allowed by rule 2 (repository = \"team/**\")"), "{text}");
    let out = run(&["bob", "secret/x", "pull"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("denied by rule 3 (repository = \"secret/**\")"), "{text}");
    let out = run(&["anonymous", "public/base", "pull"]);
    assert!(out.status.success());
    let out = run(&["anonymous", "other/x", "pull"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no rule matches"));
}

/// A GET sent byte for byte (no URL normalisation by the client).
fn raw(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[tokio::test]
async fn only_admins_switch_read_only_mode() {
    let env = Env::start();
    let url = env.url("/_entrepot/admin/read-only");
    let r = env.http.put(&url).body(r#"{"read_only": true}"#).send().await.expect("anon");
    assert_eq!(error(r).await.0, StatusCode::UNAUTHORIZED);
    let r = env.http.put(&url).basic_auth("bob", Some("bob-pw")).body(r#"{"read_only": true}"#).send().await;
    let (s, c, _) = error(r.expect("bob")).await;
    assert_eq!((s, c.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // A token of an admin works as well as Basic credentials.
    let t = env.token(Some(("root", "root-pw")), &[]).await;
    let r = env.http.put(&url).bearer_auth(&t).body(r#"{"read_only": true}"#).send().await.expect("root");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["read_only"], true);
    // Writes are refused, reads still work.
    let r = env.push_blob("team/app", b"during maintenance", ("bob", "bob-pw")).await;
    let (s, c, _) = error(r).await;
    assert_eq!((s, c.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let r = env.http.get(env.url("/v2/team/app/tags/list")).basic_auth("bob", Some("bob-pw")).send().await;
    assert_ne!(r.expect("read").status(), StatusCode::FORBIDDEN);
    let r = env.http.put(&url).basic_auth("root", Some("root-pw")).body(r#"{"read_only": false}"#).send().await;
    assert_eq!(r.expect("off").status(), StatusCode::OK);
    let r = env.push_blob("team/app", b"after maintenance", ("bob", "bob-pw")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
