//! The Apache htpasswd file format, bcrypt only: parsing (with an error per bad line), bcrypt hashing
//! and verification, and writing the file back.
//!
//! Only `$2y$`, `$2b$` and `$2a$` hashes are accepted. MD5 (`$apr1$`), SHA-1 (`{SHA}`), crypt(3),
//! SHA-256/512 crypt and plain text are refused with a message saying how to re-create the entry
//! (`htpasswd -B`); the file is never loaded with some entries silently ignored.
//!
//! Must never: accept a non-bcrypt entry, put a hash or a password in an error message or a `Debug`
//! output, or leave a half-written file (writes go to a temporary file renamed over the old one).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::secret::Secret;

/// bcrypt cost for new hashes. Each Basic-authenticated request that is not cached pays for one
/// verification at this cost (about 50–100 ms at 10).
pub const DEFAULT_COST: u32 = 10;

/// bcrypt reads at most 72 bytes of a password.
pub const MAX_PASSWORD_LEN: usize = 72;

/// A bcrypt hash from an htpasswd file. `Debug` shows only the variant and cost.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts a well-formed bcrypt hash (`$2y$`, `$2b$`, `$2a$`, cost 4–31, 60 characters).
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        if let Some(kind) = foreign_format(s) {
            return Err(format!(
                "{kind} hashes are not accepted; only bcrypt — re-create the entry with `htpasswd -B`"
            ));
        }
        let b = s.as_bytes();
        let prefix_ok = s.len() == 60
            && s.is_ascii()
            && (s.starts_with("$2y$") || s.starts_with("$2b$") || s.starts_with("$2a$"))
            && b[6] == b'$';
        let cost_ok = prefix_ok && s[4..6].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c));
        let chars_ok = prefix_ok && b[7..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/');
        if !(prefix_ok && cost_ok && chars_ok) {
            return Err("not a well-formed bcrypt hash ($2y$NN$ and 53 characters)".to_string());
        }
        Ok(PasswordHash(s.to_string()))
    }

    /// Hashes a password with bcrypt (`$2y$`, as `htpasswd -B` writes).
    pub fn create(password: &Secret, cost: u32) -> Result<PasswordHash, PasswordError> {
        check_password(password)?;
        let parts = bcrypt::hash_with_result(password.expose(), cost).map_err(|e| match e {
            bcrypt::BcryptError::CostNotAllowed(c) => PasswordError::Cost(c),
            _ => PasswordError::Random,
        })?;
        Ok(PasswordHash(parts.format_for_version(bcrypt::Version::TwoY)))
    }

    /// Whether `password` matches; bcrypt compares the digests in constant time.
    pub fn verify(&self, password: &Secret) -> bool {
        bcrypt::verify(password.expose(), &self.0).unwrap_or(false)
    }

    pub fn cost(&self) -> u32 {
        self.0[4..6].parse().unwrap_or(0)
    }

    /// The hash as written in the file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}cost {}, ***)", &self.0[..4], self.cost())
    }
}

/// Names the hash formats people find in old htpasswd files.
fn foreign_format(s: &str) -> Option<&'static str> {
    if s.starts_with("$apr1$") {
        Some("MD5 ($apr1$)")
    } else if s.starts_with("{SHA}") {
        Some("SHA-1 ({SHA})")
    } else if s.starts_with("$1$") {
        Some("MD5-crypt ($1$)")
    } else if s.starts_with("$5$") {
        Some("SHA-256-crypt ($5$)")
    } else if s.starts_with("$6$") {
        Some("SHA-512-crypt ($6$)")
    } else if s.starts_with("$2x$") {
        Some("buggy bcrypt ($2x$)")
    } else if s.len() == 13 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/') {
        Some("DES crypt(3) (or 13 characters of plain text)")
    } else if !s.starts_with('$') {
        Some("plain-text or unknown")
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than 72 bytes, which bcrypt would silently cut")]
    TooLong,
    #[error("the password contains a NUL byte")]
    Nul,
    #[error("bcrypt cost {0} is outside 4..=31")]
    Cost(u32),
    #[error("the operating system's random number generator failed")]
    Random,
}

fn check_password(p: &Secret) -> Result<(), PasswordError> {
    let b = p.expose().as_bytes();
    if b.is_empty() {
        Err(PasswordError::Empty)
    } else if b.len() > MAX_PASSWORD_LEN {
        Err(PasswordError::TooLong)
    } else if b.contains(&0) {
        Err(PasswordError::Nul)
    } else {
        Ok(())
    }
}

/// One refused line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub user: Option<String>,
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(u) => write!(f, "line {}: user `{u}`: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Every refused line of a file (the file is not loaded if there is any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ParseError(pub Vec<LineError>);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: ParseError },
}

/// Whether a name can be stored in an htpasswd file (no `:`, no whitespace or control character).
pub fn storable_user_name(u: &str) -> bool {
    !u.is_empty() && u.len() <= 255 && !u.contains(':') && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The entries of an htpasswd file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    entries: Vec<(String, PasswordHash)>,
}

impl Htpasswd {
    /// Parses a file's text. Blank lines and `#` comments are skipped; each other line must be
    /// `user:bcrypt-hash`, and a user may appear once.
    pub fn parse(text: &str) -> Result<Htpasswd, ParseError> {
        let mut entries: Vec<(String, PasswordHash)> = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.strip_suffix('\r').unwrap_or(raw);
            if l.trim().is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = l.split_once(':') else {
                errors.push(LineError { line, user: None, reason: "expected `user:hash`".into() });
                continue;
            };
            if !storable_user_name(user) {
                errors.push(LineError {
                    line,
                    user: None,
                    reason: "invalid user name (empty, or with whitespace or control characters)".into(),
                });
                continue;
            }
            let user_err = |reason: String| LineError { line, user: Some(user.to_string()), reason };
            if entries.iter().any(|(u, _)| u == user) {
                errors.push(user_err("appears more than once".into()));
                continue;
            }
            match PasswordHash::parse(hash) {
                Ok(h) => entries.push((user.to_string(), h)),
                Err(reason) => errors.push(user_err(reason)),
            }
        }
        if errors.is_empty() { Ok(Htpasswd { entries }) } else { Err(ParseError(errors)) }
    }

    pub fn load(path: &Path) -> Result<Htpasswd, LoadError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: p.clone(), source })?;
        Htpasswd::parse(&text).map_err(|source| LoadError::Parse { path: p, source })
    }

    /// The file's text: one `user:hash` line per entry, in order.
    pub fn to_file_string(&self) -> String {
        self.entries.iter().map(|(u, h)| format!("{u}:{}\n", h.0)).collect()
    }

    /// Writes the file atomically (temporary file in the same directory, fsync, rename), readable
    /// only by its owner.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_private_file(path, self.to_file_string().as_bytes())
    }

    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.entries.iter().find(|(u, _)| u == user).map(|(_, h)| h)
    }

    /// Adds a user, or replaces the hash of an existing one (keeping its place in the file).
    /// Returns whether the user was new.
    pub fn set(&mut self, user: &str, hash: PasswordHash) -> bool {
        assert!(storable_user_name(user), "user names are checked before they are stored");
        match self.entries.iter_mut().find(|(u, _)| u == user) {
            Some(e) => {
                e.1 = hash;
                false
            }
            None => {
                self.entries.push((user.to_string(), hash));
                true
            }
        }
    }

    /// Removes a user; `false` if there was none.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        self.entries.len() != before
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(u, _)| u.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Replaces `path` atomically with `bytes`, mode 0600 on Unix.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), crate::secret::random_token::<9>()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // A well-formed bcrypt hash (its password does not matter here).
    const ALICE: &str = "$2y$05$cL4mPbOmO1vR4Gx0pmD9W.6y4VHuWvS0H6kWzDhwlIfzjJO03G/uO";

    fn fast_hash(p: &str) -> PasswordHash {
        PasswordHash::create(&Secret::from(p), 4).unwrap()
    }

    #[test]
    fn parses_bcrypt_entries_and_verifies() {
        let h = fast_hash("s3cret");
        let text = format!("# team\n\nbob:{}\r\ncarol:{}\n", h.as_str(), h.as_str().replacen("$2y$", "$2b$", 1));
        let f = Htpasswd::parse(&text).unwrap();
        assert_eq!(f.users().collect::<Vec<_>>(), ["bob", "carol"]);
        assert!(f.get("bob").unwrap().verify(&"s3cret".into()));
        assert!(f.get("carol").unwrap().verify(&"s3cret".into()), "$2b$ reads the same");
        assert!(!f.get("bob").unwrap().verify(&"S3cret".into()));
        assert!(!f.get("bob").unwrap().verify(&"".into()));
        assert!(f.get("Bob").is_none(), "user names are case-sensitive");
        assert!(PasswordHash::parse(ALICE).is_ok());
        let a2 = fast_hash("x").as_str().replacen("$2y$", "$2a$", 1);
        assert!(PasswordHash::parse(&a2).unwrap().verify(&"x".into()));
    }

    #[test]
    fn other_formats_are_refused_per_line() {
        let text = "\
ok:$2y$04$abcdefghijklmnopqrstuu5Ikdi/SDQ7UsVuKmNd1i8hWnDqnB2wG
md5:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/
sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
des:rqXexS6ZhobKA
plain:hunter2xyz
nocolon
:$2y$04$abcdefghijklmnopqrstuu5Ikdi/SDQ7UsVuKmNd1i8hWnDqnB2wG
short:$2y$04$abc
cost:$2y$99$abcdefghijklmnopqrstuu5Ikdi/SDQ7UsVuKmNd1i8hWnDqnB2wG
ok:$2y$04$abcdefghijklmnopqrstuu5Ikdi/SDQ7UsVuKmNd1i8hWnDqnB2wG
sha512:$6$salt$hash
";
        let err = Htpasswd::parse(text).unwrap_err();
        let lines: Vec<(usize, Option<&str>)> = err.0.iter().map(|e| (e.line, e.user.as_deref())).collect();
        assert_eq!(
            lines,
            [
                (2, Some("md5")),
                (3, Some("sha")),
                (4, Some("des")),
                (5, Some("plain")),
                (6, None),
                (7, None),
                (8, Some("short")),
                (9, Some("cost")),
                (10, Some("ok")),
                (11, Some("sha512")),
            ]
        );
        let msg = err.to_string();
        assert!(msg.contains("line 2: user `md5`: MD5 ($apr1$) hashes are not accepted; only bcrypt"), "{msg}");
        assert!(msg.contains("htpasswd -B"));
        assert!(msg.contains("line 10: user `ok`: appears more than once"));
        // No secret material in errors: neither hashes nor the plain-text password.
        assert!(!msg.contains("HqJZimc") && !msg.contains("W6ph5Mm5") && !msg.contains("rqXexS6Z"));
        assert!(!msg.contains("hunter2xyz"), "{msg}");
    }

    #[test]
    fn write_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let mut f = Htpasswd::default();
        assert!(f.set("bob", fast_hash("one")));
        assert!(f.set("carol", fast_hash("two")));
        assert!(!f.set("bob", fast_hash("three")), "replaces");
        f.save(&path).unwrap();
        let back = Htpasswd::load(&path).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.users().collect::<Vec<_>>(), ["bob", "carol"], "order kept");
        assert!(back.get("bob").unwrap().verify(&"three".into()));
        assert!(!back.get("bob").unwrap().verify(&"one".into()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let mut back = back;
        assert!(back.remove("bob"));
        assert!(!back.remove("bob"));
        back.save(&path).unwrap();
        assert_eq!(Htpasswd::load(&path).unwrap().users().collect::<Vec<_>>(), ["carol"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        assert!(matches!(Htpasswd::load(&dir.path().join("missing")), Err(LoadError::Io { .. })));
    }

    #[test]
    fn password_rules() {
        assert_eq!(PasswordHash::create(&"".into(), 4), Err(PasswordError::Empty));
        assert_eq!(PasswordHash::create(&"a".repeat(73).into(), 4), Err(PasswordError::TooLong));
        assert_eq!(PasswordHash::create(&"a\0b".into(), 4), Err(PasswordError::Nul));
        assert_eq!(PasswordHash::create(&"a".into(), 3), Err(PasswordError::Cost(3)));
        let h = PasswordHash::create(&"a".repeat(72).into(), 4).unwrap();
        assert!(h.as_str().starts_with("$2y$04$"));
        assert_eq!(h.cost(), 4);
    }

    #[test]
    fn no_secret_in_debug() {
        let h = fast_hash("pw");
        let dbg = format!("{h:?}");
        assert_eq!(dbg, "PasswordHash($2y$cost 4, ***)");
        let mut f = Htpasswd::default();
        f.set("bob", h.clone());
        let dbg = format!("{f:?}");
        assert!(!dbg.contains(&h.as_str()[7..]), "{dbg}");
    }
}
