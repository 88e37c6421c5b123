//! `entrepot config check` and `entrepot config print`, and the checks they share with `serve`:
//! reading the configuration file key by key (so every mistake is reported, not only the first), and
//! validating the observability keys (`listen`, `log`, `log_format`, `event_source`, `[[webhooks]]`)
//! with messages that name the key, what was expected and what was found.
//!
//! `print` shows the effective configuration — defaults, then the file, then `ENTREPOT_*`, then flags —
//! as TOML, with every secret-looking string (`secret`, `password`, `token`, … keys, and passwords in
//! URLs) replaced by `<redacted>`. Sections this module does not know are shown as the file has them.
//! Must never print a secret.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use entrepot_events::WebhookConfig;
use toml::{Table, Value};

use crate::config::{Config, FileConfig, ServeArgs};
use crate::observe::LogFormat;

/// `entrepot config …`
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment and flags); exit 0 with "configuration OK", or
    /// non-zero listing every problem.
    Check(ServeArgs),
    /// Print the effective configuration as TOML, secrets redacted.
    Print(ServeArgs),
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check(args) => match Config::load(args) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&e);
                ExitCode::from(2)
            }
        },
        ConfigCommand::Print(args) => {
            let path = args.config.clone();
            let config = match Config::load(args) {
                Ok(c) => c,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(2);
                }
            };
            match effective(path.as_deref(), &config).and_then(|t| toml::to_string(&t).map_err(|e| e.to_string())) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("entrepot: cannot print the configuration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(problems: &str) {
    let lines: Vec<&str> = problems.lines().collect();
    let s = if lines.len() == 1 { "" } else { "s" };
    eprintln!("entrepot: {} configuration problem{s}:", lines.len());
    for l in lines {
        eprintln!("  {l}");
    }
}

/// Reads the configuration file, checking each top-level key (and each `[[webhooks]]` table) on its
/// own; all problems are reported together, one per line.
pub(crate) fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: Table = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), one_line(&e)))?;
    let mut problems = Vec::new();
    for (key, value) in &table {
        if key == "webhooks"
            && let Value::Array(hooks) = value
        {
            for (i, h) in hooks.iter().enumerate() {
                if let Err(e) = h.clone().try_into::<WebhookConfig>() {
                    problems.push(format!("{}: webhooks[{i}]: {}", path.display(), one_line(&e)));
                }
            }
            continue;
        }
        let mut one = Table::new();
        one.insert(key.clone(), value.clone());
        if let Err(e) = one.try_into::<FileConfig>() {
            problems.push(format!("{}: {key}: {}", path.display(), one_line(&e)));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    table.try_into::<FileConfig>().map_err(|e| format!("{}: {}", path.display(), one_line(&e)))
}

/// A parser's message on one line (serde's may add `in `key`` on a line of its own).
fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The observability keys as the sources give them (flag, else environment, else file).
pub(crate) struct Sources<'a> {
    pub listen: Option<&'a str>,
    pub log: Option<&'a str>,
    pub log_format: Option<&'a str>,
    pub event_source: Option<&'a str>,
    pub webhooks: Option<&'a [WebhookConfig]>,
}

/// The checked observability settings.
pub(crate) struct Observability {
    pub log_format: LogFormat,
    pub event_source: String,
    pub webhooks: Vec<WebhookConfig>,
}

/// Checks the observability keys, adding one line per problem to `problems`.
pub(crate) fn observability(s: Sources<'_>, problems: &mut Vec<String>) -> Observability {
    let listen = s.listen.unwrap_or("127.0.0.1:5000");
    if !is_listen_address(listen) {
        problems.push(format!("listen: expected ADDR:PORT (e.g. 127.0.0.1:5000, [::]:5000), got '{listen}'"));
    }
    let log = s.log.unwrap_or("info");
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(log) {
        problems.push(format!(
            "log: expected a log filter (error, warn, info, debug, trace, or target=level,…), got '{log}': {e}"
        ));
    }
    let format = s.log_format.unwrap_or("text");
    let log_format = LogFormat::parse(format).unwrap_or_else(|| {
        problems.push(format!("log_format: expected 'text' or 'json', got '{format}'"));
        LogFormat::Text
    });
    let event_source = s.event_source.unwrap_or("/entrepot").to_string();
    if event_source.is_empty() || event_source.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(format!(
            "event_source: expected a URI reference without spaces (e.g. https://registry.example.com), got '{}'",
            event_source.escape_default()
        ));
    }
    let webhooks = s.webhooks.map(<[WebhookConfig]>::to_vec).unwrap_or_default();
    if let Err(p) = entrepot_events::config::compile(&webhooks) {
        problems.extend(p);
    }
    Observability { log_format, event_source, webhooks }
}

/// `HOST:PORT`, `IPv4:PORT` or `[IPv6]:PORT`, with a port number (0 picks a free port).
fn is_listen_address(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The effective configuration as a TOML table, secrets redacted.
fn effective(path: Option<&Path>, c: &Config) -> Result<Table, String> {
    let mut t = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            toml::from_str::<Table>(&text).map_err(|e| e.to_string())?
        }
        None => Table::new(),
    };
    let mut set = |k: &str, v: Value| {
        t.insert(k.to_string(), v);
    };
    set("listen", c.listen.clone().into());
    set("data_dir", c.data_dir.display().to_string().into());
    set("max_manifest_bytes", int(c.registry.max_manifest_bytes));
    set("max_blob_bytes", int(c.registry.max_blob_bytes));
    set("allow_sparse_index", c.registry.allow_sparse_index.into());
    set("mount_without_from", c.registry.mount_without_from.into());
    set("upload_expiry_secs", int(c.registry.upload_expiry.as_secs()));
    set("log", c.log.clone().into());
    set("log_format", c.log_format.as_str().into());
    set("event_source", c.event_source.clone().into());
    set("scan_on_push", c.scan.on_push.into());
    set("vulndb", c.scan.vulndb.display().to_string().into());
    set("attach_sbom", c.scan.attach_sbom.into());
    if let Some((cert, key)) = &c.tls {
        set("tls_cert", cert.display().to_string().into());
        set("tls_key", key.display().to_string().into());
    }
    if !c.webhooks.is_empty() {
        set("webhooks", Value::try_from(&c.webhooks).map_err(|e| e.to_string())?);
    }
    redact_table(&mut t);
    Ok(t)
}

/// Key names whose string values are never printed.
const SECRET_KEYS: &[&str] = &["secret", "password", "passwd", "token", "credential", "private_key", "access_key"];

const REDACTED: &str = "<redacted>";

fn redact_table(t: &mut Table) {
    for (k, v) in t.iter_mut() {
        let lower = k.to_ascii_lowercase();
        if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
            redact_strings(v);
        } else {
            redact_value(v);
        }
    }
}

fn redact_strings(v: &mut Value) {
    match v {
        Value::String(s) => *s = REDACTED.to_string(),
        Value::Array(a) => a.iter_mut().for_each(redact_strings),
        Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_strings(v)),
        _ => {}
    }
}

fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Ok(mut u) = reqwest::Url::parse(s)
                && u.password().is_some()
                && u.set_password(Some("redacted")).is_ok()
            {
                *s = u.to_string();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Table(t) => redact_table(t),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        for ok in ["127.0.0.1:5000", "[::1]:0", "0.0.0.0:80", "localhost:5000", "registry.internal:443"] {
            assert!(is_listen_address(ok), "{ok}");
        }
        for bad in ["x", "5000", ":5000", "127.0.0.1:", "127.0.0.1:70000", "host name:5", "a..b:1"] {
            assert!(!is_listen_address(bad), "{bad}");
        }
    }

    #[test]
    fn redaction() {
        let mut t: Table = toml::from_str(
            r#"
            listen = "127.0.0.1:5000"
            [[webhooks]]
            url = "http://user:pw@h/x"
            secret = "hunter2"
            [auth]
            admin_password = "p"
            token_ttl_secs = 300
            [s3]
            secret_access_key = "k"
            "#,
        )
        .expect("toml");
        redact_table(&mut t);
        let text = toml::to_string(&t).expect("print");
        for secret in ["hunter2", "pw@", "\"p\"", "\"k\""] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        assert!(text.contains("token_ttl_secs = 300"), "numbers stay:\n{text}");
        assert!(text.contains("listen = \"127.0.0.1:5000\""), "{text}");
    }
}
