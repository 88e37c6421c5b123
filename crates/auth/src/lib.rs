//! Who may do what in Entrepôt: the building blocks of authentication and authorization, with no
//! HTTP in them.
//!
//! - [`access`]: the Docker token protocol's vocabulary (actions, scopes, grants) and the rule that a
//!   grant is what was asked for intersected with what is allowed.
//! - [`policy`]: access policies by repository pattern, read from the config file, and the decision
//!   (with the rule that made it) for a subject, a repository and an action.
//! - [`htpasswd`] and [`users`]: local users with bcrypt passwords in an Apache htpasswd file.
//! - [`token`]: short-lived ES256 JWTs that we issue, their signing keys, and strict verification of
//!   ours and of an external issuer's (JWKS with EC P-256 and RSA keys).
//! - [`robot`]: robot accounts (API tokens): long random secrets, stored hashed, scoped, expiring,
//!   revocable.
//! - [`ratelimit`]: failed-login limiting per user and per client address.
//! - [`service`]: the [`Authenticator`] a server consults on every request, tying the above together.
//!
//! Inputs are strings, validated names (`entrepot_oci::RepoName`) and this crate's own types; the
//! server translates requests into them. No type holding a secret prints it in `Debug` or `Display`.

pub mod access;
pub mod htpasswd;
pub mod policy;
pub mod ratelimit;
pub mod robot;
pub mod secret;
pub mod service;
pub mod token;
pub mod users;

pub use access::{AccessEntry, Action, Actions, Grant, Resource, Scope, ScopeError};
pub use policy::{Decision, Pattern, Policy, PolicyError, Subject};
pub use secret::Secret;
pub use service::{AuthError, AuthSettings, Authenticator, ExternalIssuer, Identity};
