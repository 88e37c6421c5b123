//! Webhook endpoints as configured (`[[webhooks]]` in the configuration file) and their checked,
//! ready-to-use form.
//!
//! [`compile`] validates every endpoint and reports *all* problems, each naming its key
//! (`webhooks[1].url: expected …, got '…'`), so `entrepot config check` can list them at once. Defaults
//! are filled in when the file is read, so the effective configuration printed shows them. The secret
//! never appears in `Debug` output.

use std::time::Duration;

use entrepot_oci::{RepoName, RepoPattern};
use entrepot_registry::EventKind;
use serde::{Deserialize, Serialize};

/// One `[[webhooks]]` table.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name; the queue of the endpoint in the outbox is kept under it. Defaults to the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http://HOST[:PORT]/PATH` receiving a POST per event.
    pub url: String,
    /// Key of the HMAC-SHA256 signature (`X-Entrepot-Signature`); no signature without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Kinds of events sent: `push`, `pull`, `delete`, `gc`.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Repository patterns (`team/*`, `public/**`); an event is sent if one matches.
    #[serde(default = "default_repositories")]
    pub repositories: Vec<String>,
    /// Time allowed for one delivery attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before a delivery is given up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest wait between two attempts.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_events() -> Vec<String> {
    EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect()
}
fn default_repositories() -> Vec<String> {
    vec!["**".into()]
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    12
}
fn default_backoff_initial_ms() -> u64 {
    1_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("events", &self.events)
            .field("repositories", &self.repositories)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .finish()
    }
}

/// A checked endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    pub(crate) secret: Option<Vec<u8>>,
    kinds: [bool; 4],
    repositories: Vec<RepoPattern>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("name", &self.name).field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Whether this endpoint wants events of `kind` in `repo`.
    pub fn matches(&self, kind: EventKind, repo: &RepoName) -> bool {
        self.kinds[kind as usize] && self.repositories.iter().any(|p| p.matches(repo))
    }

    /// The wait after the `failures`-th failed attempt (1-based): the initial wait, doubled each time,
    /// capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.backoff_initial.saturating_mul(1u32 << doublings.min(31)).min(self.backoff_max)
    }
}

/// The name of an endpoint without one: its URL without user, password, query or fragment (names
/// appear in logs and metrics).
fn default_name(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Checks every endpoint; either all of them, ready, or every problem found.
pub fn compile(hooks: &[WebhookConfig]) -> Result<Vec<Endpoint>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        let url = match reqwest::Url::parse(&h.url) {
            Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()) => Some(u),
            Ok(u) if u.scheme() == "https" => {
                problems.push(format!(
                    "{}: https is not supported by this build (deliveries are plain HTTP); expected http://HOST[:PORT]/PATH, got '{}'",
                    key("url"),
                    h.url
                ));
                None
            }
            _ => {
                problems.push(format!("{}: expected http://HOST[:PORT]/PATH, got '{}'", key("url"), h.url));
                None
            }
        };
        let name = h.name.clone().unwrap_or_else(|| default_name(&h.url));
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            problems.push(format!(
                "{}: expected 1 to 200 printable characters, got '{}'",
                key("name"),
                name.escape_default()
            ));
        } else if let Some(j) =
            hooks[..i].iter().position(|o| o.name.clone().unwrap_or_else(|| default_name(&o.url)) == name)
        {
            problems.push(format!("{}: expected a unique name, but '{name}' is also webhooks[{j}]'s", key("name")));
        }
        if h.secret.as_deref() == Some("") {
            problems.push(format!(
                "{}: expected a non-empty secret (or no `secret` key for unsigned deliveries)",
                key("secret")
            ));
        }
        let mut kinds = [false; 4];
        if h.events.is_empty() {
            problems.push(format!("{}: expected at least one of push, pull, delete, gc, got []", key("events")));
        }
        for (j, e) in h.events.iter().enumerate() {
            match EventKind::parse(e) {
                Some(k) => kinds[k as usize] = true,
                None => {
                    problems.push(format!("{}[{j}]: expected one of push, pull, delete, gc, got '{e}'", key("events")))
                }
            }
        }
        if h.repositories.is_empty() {
            problems.push(format!(
                "{}: expected at least one repository pattern (\"**\" for all), got []",
                key("repositories")
            ));
        }
        let mut repositories = Vec::new();
        for (j, p) in h.repositories.iter().enumerate() {
            match RepoPattern::parse(p) {
                Ok(p) => repositories.push(p),
                Err(e) => problems.push(format!(
                    "{}[{j}]: expected a repository pattern, got '{p}': {}",
                    key("repositories"),
                    e.reason
                )),
            }
        }
        if h.timeout_ms == 0 {
            problems.push(format!("{}: expected a number of milliseconds greater than 0, got 0", key("timeout_ms")));
        }
        if h.max_attempts == 0 {
            problems.push(format!("{}: expected at least 1, got 0", key("max_attempts")));
        }
        if h.backoff_initial_ms == 0 {
            problems.push(format!(
                "{}: expected a number of milliseconds greater than 0, got 0",
                key("backoff_initial_ms")
            ));
        }
        if h.backoff_max_ms < h.backoff_initial_ms {
            problems.push(format!(
                "{}: expected at least backoff_initial_ms ({}), got {}",
                key("backoff_max_ms"),
                h.backoff_initial_ms,
                h.backoff_max_ms
            ));
        }
        if let Some(url) = url {
            out.push(Endpoint {
                name,
                url,
                secret: h.secret.as_ref().map(|s| s.as_bytes().to_vec()),
                kinds,
                repositories,
                timeout: Duration::from_millis(h.timeout_ms),
                max_attempts: h.max_attempts,
                backoff_initial: Duration::from_millis(h.backoff_initial_ms),
                backoff_max: Duration::from_millis(h.backoff_max_ms),
            });
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(toml_text: &str) -> WebhookConfig {
        toml::from_str(toml_text).expect("webhook table")
    }

    #[test]
    fn defaults_and_filters() {
        let h = hook("url = \"http://127.0.0.1:9/hook\"\n");
        assert_eq!(h.events, ["push", "pull", "delete", "gc"]);
        assert_eq!(h.repositories, ["**"]);
        let eps = compile(&[
            h,
            hook("name = \"ci\"\nurl = \"http://h/x\"\nevents = [\"push\"]\nrepositories = [\"team/*\", \"lib/**\"]\n"),
        ])
        .expect("valid");
        assert_eq!(eps[0].name, "http://127.0.0.1:9/hook");
        let r = |s| RepoName::parse(s).expect("name");
        assert!(eps[0].matches(EventKind::Pull, &r("any/thing/deep")));
        let ci = &eps[1];
        assert!(ci.matches(EventKind::Push, &r("team/app")));
        assert!(ci.matches(EventKind::Push, &r("lib/a/b")));
        assert!(!ci.matches(EventKind::Push, &r("team/app/sub")), "* is one component");
        assert!(!ci.matches(EventKind::Push, &r("other")));
        assert!(!ci.matches(EventKind::Delete, &r("team/app")), "kind filter");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let h = hook("url = \"http://h/\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n");
        let e = &compile(&[h]).expect("valid")[0];
        let ms = |n| e.backoff(n).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(4), ms(5), ms(100)), (100, 200, 400, 800, 1000, 1000));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let bad = hook(
            "url = \"ftp://x\"\nsecret = \"\"\nevents = [\"push\", \"pushed\"]\nrepositories = [\"team/app-*\"]\ntimeout_ms = 0\nmax_attempts = 0\nbackoff_initial_ms = 10\nbackoff_max_ms = 5\n",
        );
        let tls = hook("name = \"a\"\nurl = \"https://example.invalid/\"\n");
        let dup = hook("name = \"a\"\nurl = \"http://h/\"\n");
        let problems = compile(&[bad, tls, dup]).expect_err("invalid");
        let expect = [
            "webhooks[0].url: expected http://HOST[:PORT]/PATH, got 'ftp://x'",
            "webhooks[0].secret: expected a non-empty secret",
            "webhooks[0].events[1]: expected one of push, pull, delete, gc, got 'pushed'",
            "webhooks[0].repositories[0]: expected a repository pattern, got 'team/app-*'",
            "webhooks[0].timeout_ms: expected a number of milliseconds greater than 0, got 0",
            "webhooks[0].max_attempts: expected at least 1, got 0",
            "webhooks[0].backoff_max_ms: expected at least backoff_initial_ms (10), got 5",
            "webhooks[1].url: https is not supported",
            "webhooks[2].name: expected a unique name, but 'a' is also webhooks[1]'s",
        ];
        for e in expect {
            assert!(problems.iter().any(|p| p.starts_with(e)), "missing {e:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn default_name_has_no_credentials() {
        let e = compile(&[hook("url = \"http://u:pw@h:81/p?token=x\"\n")]).expect("valid");
        assert_eq!(e[0].name, "http://h:81/p");
    }

    #[test]
    fn debug_hides_the_secret() {
        let h = hook("url = \"http://h/\"\nsecret = \"hunter2\"\n");
        assert!(!format!("{h:?}").contains("hunter2"));
        let e = compile(&[h]).expect("valid");
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
