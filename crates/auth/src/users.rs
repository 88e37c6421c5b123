//! Local users: logging in against an htpasswd file, and the operations behind
//! `entrepot user add | passwd | remove | list`.
//!
//! Login takes the same time whether the user exists or not (an unknown user is checked against a
//! dummy bcrypt hash), so response times do not tell which names exist.
//!
//! Must never: return a different error for an unknown user and a wrong password, log or print a
//! password, or store anything but a bcrypt hash.

use std::path::Path;
use std::sync::OnceLock;

use crate::htpasswd::{self, Htpasswd, LoadError, PasswordError, PasswordHash};
use crate::policy::Subject;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name: use 1 to 64 of [A-Za-z0-9._@-], starting with a letter or digit")]
    InvalidName,
    #[error("user `{0}` already exists")]
    Exists(String),
    #[error("no user `{0}`")]
    NoSuchUser(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot write the htpasswd file: {0}")]
    Io(#[from] std::io::Error),
}

/// Names `user add` accepts: 1–64 of `[A-Za-z0-9._@-]`, starting with a letter or digit. (An
/// existing file may hold other names htpasswd allows; they still log in.)
pub fn valid_new_user_name(u: &str) -> bool {
    let b = u.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'@' | b'-'))
}

fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        PasswordHash::create(&Secret::new(crate::secret::random_token::<16>()), htpasswd::DEFAULT_COST)
            .expect("hashing a random password")
    })
}

/// The users of an htpasswd file.
#[derive(Debug, Clone, Default)]
pub struct Users {
    file: Htpasswd,
}

impl Users {
    pub fn new(file: Htpasswd) -> Users {
        Users { file }
    }

    pub fn load(path: &Path) -> Result<Users, UserError> {
        Ok(Users { file: Htpasswd::load(path)? })
    }

    pub fn save(&self, path: &Path) -> Result<(), UserError> {
        Ok(self.file.save(path)?)
    }

    pub fn file(&self) -> &Htpasswd {
        &self.file
    }

    /// Checks a user's password: `Some(Subject::User)` if it matches, `None` for a wrong password
    /// and an unknown user alike (which costs one bcrypt verification too).
    pub fn authenticate(&self, user: &str, password: &Secret) -> Option<Subject> {
        match self.file.get(user) {
            Some(h) => h.verify(password).then(|| Subject::User(user.to_string())),
            None => {
                let _ = dummy_hash().verify(password);
                None
            }
        }
    }

    /// `user add`: a new user (error if the name exists).
    pub fn add(&mut self, user: &str, password: &Secret, cost: u32) -> Result<(), UserError> {
        if !valid_new_user_name(user) {
            return Err(UserError::InvalidName);
        }
        if self.file.get(user).is_some() {
            return Err(UserError::Exists(user.to_string()));
        }
        self.file.set(user, PasswordHash::create(password, cost)?);
        Ok(())
    }

    /// `user passwd`: a new password for an existing user.
    pub fn set_password(&mut self, user: &str, password: &Secret, cost: u32) -> Result<(), UserError> {
        if self.file.get(user).is_none() {
            return Err(UserError::NoSuchUser(user.to_string()));
        }
        self.file.set(user, PasswordHash::create(password, cost)?);
        Ok(())
    }

    /// `user remove`.
    pub fn remove(&mut self, user: &str) -> Result<(), UserError> {
        if self.file.remove(user) { Ok(()) } else { Err(UserError::NoSuchUser(user.to_string())) }
    }

    /// `user list`: names in file order.
    pub fn list(&self) -> Vec<&str> {
        self.file.users().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_login_passwd_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let mut users = Users::default();
        users.add("alice", &"correct horse".into(), 4).unwrap();
        users.add("bob.smith@example", &"pw".into(), 4).unwrap();
        assert!(matches!(users.add("alice", &"x".into(), 4), Err(UserError::Exists(_))));
        for bad in ["", "-x", "a:b", "a b", "é", &"a".repeat(65)] {
            assert!(matches!(users.add(bad, &"x".into(), 4), Err(UserError::InvalidName)), "{bad}");
        }
        assert!(matches!(users.add("carol", &"".into(), 4), Err(UserError::Password(PasswordError::Empty))));
        users.save(&path).unwrap();

        let mut users = Users::load(&path).unwrap();
        assert_eq!(users.list(), ["alice", "bob.smith@example"]);
        assert_eq!(users.authenticate("alice", &"correct horse".into()), Some(Subject::user("alice")));
        assert_eq!(users.authenticate("alice", &"wrong".into()), None);
        assert_eq!(users.authenticate("Alice", &"correct horse".into()), None, "case-sensitive");
        assert_eq!(users.authenticate("nobody", &"correct horse".into()), None);

        users.set_password("alice", &"new one".into(), 4).unwrap();
        assert_eq!(users.authenticate("alice", &"correct horse".into()), None);
        assert!(users.authenticate("alice", &"new one".into()).is_some());
        assert!(matches!(users.set_password("nobody", &"x".into(), 4), Err(UserError::NoSuchUser(_))));

        users.remove("alice").unwrap();
        assert!(matches!(users.remove("alice"), Err(UserError::NoSuchUser(_))));
        assert_eq!(users.authenticate("alice", &"new one".into()), None);
        assert_eq!(users.list(), ["bob.smith@example"]);
    }

    #[test]
    fn unknown_user_costs_a_verification() {
        // The dummy hash is real bcrypt at the default cost; an unknown user is checked against it.
        assert_eq!(dummy_hash().cost(), htpasswd::DEFAULT_COST);
        let users = Users::default();
        let t = std::time::Instant::now();
        assert!(users.authenticate("ghost", &"pw".into()).is_none());
        assert!(t.elapsed() > std::time::Duration::from_millis(1));
    }

    #[test]
    fn errors_hold_no_secret() {
        let mut users = Users::default();
        let e = users.add("x", &"a".repeat(80).into(), 4).unwrap_err().to_string();
        assert!(!e.contains("aaaa"), "{e}");
        assert!(!format!("{users:?}").contains("$2y$04$"));
    }
}
