//! `os-release(5)` parser: `KEY=value` lines, values optionally in single or double quotes with backslash
//! escapes. Keeps the fields a scanner needs to pick advisories; must never fail on odd lines (they are skipped).

use serde::{Deserialize, Serialize};

/// The distribution an image is built on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `ubuntu`, `alpine`, `rhel`, `fedora`.
    pub id: Option<String>,
    /// `VERSION_ID`, e.g. `12`, `22.04`, `3.19.1`.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
    /// `ID_LIKE`, split on spaces, e.g. `["rhel", "centos", "fedora"]`.
    pub id_like: Vec<String>,
}

pub fn parse(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else { continue };
        let value = unquote(raw.trim());
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "ID" => os.id = Some(value),
            "VERSION_ID" => os.version_id = Some(value),
            "VERSION_CODENAME" => os.version_codename = Some(value),
            "PRETTY_NAME" => os.pretty_name = Some(value),
            "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    os
}

fn unquote(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if bytes.len() >= 2 && (bytes[0] == b'"' || bytes[0] == b'\'') && bytes[bytes.len() - 1] == bytes[0] {
        let inner = &raw[1..raw.len() - 1];
        if bytes[0] == b'\'' {
            return inner.to_string();
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        raw.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_12() {
        // /usr/lib/os-release of Debian 12 (base-files 12.4+deb12u5).
        let text = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
        let os = parse(text);
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
        assert_eq!(os.pretty_name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert!(os.id_like.is_empty());
    }

    #[test]
    fn rocky_and_quotes() {
        let text = "NAME=\"Rocky Linux\"\nID='rocky'\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n# c\nbogus\nPRETTY_NAME=\"say \\\"hi\\\"\"\n";
        let os = parse(text);
        assert_eq!(os.id.as_deref(), Some("rocky"));
        assert_eq!(os.id_like, vec!["rhel", "centos", "fedora"]);
        assert_eq!(os.version_id.as_deref(), Some("9.3"));
        assert_eq!(os.pretty_name.as_deref(), Some("say \"hi\""));
        assert_eq!(os.version_codename, None);
    }
}
