//! Bearer tokens of the Docker token protocol: short-lived JWTs that we sign with ES256 (each with a
//! `kid`), the signing keys (generated and persisted as PKCS#8 PEM on first use, rotatable), and
//! strict verification — of our own tokens, and of an external issuer's given its JWKS (EC P-256 keys
//! for ES256, RSA keys of 2048 to 8192 bits for RS256).
//!
//! Verification, in order: size limit; three base64url parts; a header whose `alg` is on the
//! allow-list and that has no `crit`; a `kid` naming a known key *of that algorithm* (so `alg: none`,
//! HS256 signed with a public key, or an RSA signature presented to an EC key never verify); the
//! signature; then the claims — `iss` equal to the expected issuer, `aud` containing the expected
//! audience, `exp` required, `nbf` and `iat` not in the future, with a small clock-skew tolerance.
//! Claims are only parsed after the signature verifies.
//!
//! Must never: accept an algorithm not on the allow-list, verify with a key chosen by anything but
//! the `kid` and the algorithm bound to it, accept a token without `exp`, echo a token in an error, or
//! print a private key in `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::access::{AccessEntry, Grant};
use crate::secret::{Secret, random_token};

/// Longest token accepted (external issuers' tokens with many claims included).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Default tolerance for clocks that disagree.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A signature algorithm this crate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Es256,
    Rs256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "ES256" => Some(Algorithm::Es256),
            "RS256" => Some(Algorithm::Rs256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token is too long")]
    TooLong,
    #[error("token algorithm `{0}` is not allowed")]
    Algorithm(String),
    #[error("token header has critical extensions, which are not supported")]
    Critical,
    #[error("token header has no key id (kid)")]
    NoKeyId,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token issuer is not the expected one")]
    Issuer,
    #[error("token is not meant for this service (audience)")]
    Audience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("invalid key set: {0}")]
    KeySet(String),
}

/// The `aud` claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// A token's claims (the Docker token shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// What the token grants (anything not understood grants nothing).
    pub fn grant(&self) -> Grant {
        Grant::from_access_claim(&self.access)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// A public key that verifies one algorithm.
#[derive(Clone)]
pub enum VerifyKey {
    Es256(p256::ecdsa::VerifyingKey),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
}

impl VerifyKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyKey::Es256(_) => Algorithm::Es256,
            VerifyKey::Rs256(_) => Algorithm::Rs256,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyKey::Es256(k) => {
                // JWS ES256 signatures are the 64 bytes r || s, never DER.
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            VerifyKey::Rs256(k) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| rsa::signature::Verifier::verify(k.as_ref(), message, &s).is_ok()),
        }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.algorithm().as_str())
    }
}

/// Public keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyKey>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

fn b64(s: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)
}

impl KeySet {
    pub fn new() -> KeySet {
        KeySet::default()
    }

    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyKey) {
        self.keys.insert(kid.into(), key);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.get(kid)
    }

    /// Reads a JWKS document (`{"keys": [...]}`). Keys for signing (`use` absent or `sig`) of type EC
    /// (curve P-256) and RSA (2048–8192 bits) are kept; a key whose `alg` says something other than
    /// ES256 / RS256 respectively, and keys of other types or for encryption, are skipped. Each kept
    /// key needs a `kid`. An EC point not on the curve or an RSA key too small is an error.
    pub fn from_jwks(json: &str) -> Result<KeySet, TokenError> {
        let bad = |m: &str| TokenError::KeySet(m.to_string());
        let doc: Jwks = serde_json::from_str(json).map_err(|_| bad("not a JWKS document ({\"keys\": [...]})"))?;
        let mut set = KeySet::new();
        for value in doc.keys {
            let jwk: Jwk = serde_json::from_value(value).map_err(|_| bad("a key is not a JWK object"))?;
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
                ("EC", None | Some("ES256")) => {
                    if jwk.crv.as_deref() != Some("P-256") {
                        continue;
                    }
                    let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else { return Err(bad("EC key without x/y")) };
                    let (x, y) = (b64(x)?, b64(y)?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(bad("EC P-256 coordinates must be 32 bytes"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| bad("EC key is not a point on P-256"))?;
                    VerifyKey::Es256(vk)
                }
                ("RSA", None | Some("RS256")) => {
                    let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else { return Err(bad("RSA key without n/e")) };
                    let n = rsa::BoxedUint::from_be_slice_vartime(&b64(n)?);
                    let e = rsa::BoxedUint::from_be_slice_vartime(&b64(e)?);
                    let pk = rsa::PublicKey::new_with_size_limits(n, e, 2048..=8192)
                        .map_err(|_| bad("RSA key is invalid or outside 2048..=8192 bits"))?;
                    VerifyKey::Rs256(Box::new(rsa::pkcs1v15::VerifyingKey::new(pk)))
                }
                _ => continue,
            };
            let kid = jwk.kid.filter(|k| !k.is_empty()).ok_or_else(|| bad("a signing key has no kid"))?;
            set.insert(kid, key);
        }
        Ok(set)
    }

    /// The EC keys of the set as a JWKS document (what an external verifier of our tokens needs).
    pub fn to_jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter_map(|(kid, k)| match k {
                VerifyKey::Es256(vk) => {
                    let mut jwk = ec_jwk(vk);
                    jwk["kid"] = kid.clone().into();
                    jwk["use"] = "sig".into();
                    jwk["alg"] = "ES256".into();
                    Some(jwk)
                }
                VerifyKey::Rs256(_) => None,
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The required members of an EC public JWK, in the lexicographic order RFC 7638 needs.
fn ec_jwk(vk: &p256::ecdsa::VerifyingKey) -> serde_json::Value {
    let point = vk.to_sec1_point(false);
    let bytes = point.as_bytes();
    serde_json::json!({
        "crv": "P-256",
        "kty": "EC",
        "x": URL_SAFE_NO_PAD.encode(&bytes[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&bytes[33..65]),
    })
}

/// The RFC 7638 thumbprint of an EC public key: our `kid`.
pub fn thumbprint(vk: &p256::ecdsa::VerifyingKey) -> String {
    let j = ec_jwk(vk);
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        j["x"].as_str().unwrap_or_default(),
        j["y"].as_str().unwrap_or_default()
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// What a verifier expects of a token.
#[derive(Debug, Clone)]
pub struct Validation {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    pub algorithms: Vec<Algorithm>,
}

impl Validation {
    /// ES256 only, with [`DEFAULT_LEEWAY`] (our own tokens).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Validation {
        Validation {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            algorithms: vec![Algorithm::Es256],
        }
    }
}

/// Verifies a token and returns its claims (see the module doc for every check).
pub fn verify(token: &str, keys: &KeySet, v: &Validation, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| TokenError::Malformed)?;
    let alg = Algorithm::parse(&header.alg)
        .filter(|a| v.algorithms.contains(a))
        .ok_or_else(|| TokenError::Algorithm(header.alg.chars().take(16).collect()))?;
    if header.crit.is_some() {
        return Err(TokenError::Critical);
    }
    let kid = header.kid.ok_or(TokenError::NoKeyId)?;
    let key = keys.get(&kid).filter(|k| k.algorithm() == alg).ok_or(TokenError::UnknownKey)?;
    let signature = b64(s)?;
    let signed = &token[..h.len() + 1 + p.len()];
    if !key.verify(signed.as_bytes(), &signature) {
        return Err(TokenError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|_| TokenError::Malformed)?;
    if claims.iss != v.issuer {
        return Err(TokenError::Issuer);
    }
    if !claims.aud.contains(&v.audience) {
        return Err(TokenError::Audience);
    }
    let leeway = v.leeway.as_secs();
    if now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(leeway));
    if future(claims.nbf) || future(claims.iat) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// An ES256 signing key with its `kid`. `Debug` shows only the `kid`.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: p256::ecdsa::SigningKey,
}

impl SigningKey {
    pub fn generate() -> SigningKey {
        let key =
            p256::ecdsa::SigningKey::try_generate().expect("the operating system's random number generator failed");
        SigningKey::from_key(key)
    }

    fn from_key(key: p256::ecdsa::SigningKey) -> SigningKey {
        SigningKey { kid: thumbprint(key.verifying_key()), key }
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, TokenError> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| TokenError::KeySet("not a PKCS#8 PEM P-256 private key".into()))?;
        Ok(SigningKey::from_key(key))
    }

    pub fn to_pkcs8_pem(&self) -> Secret {
        let pem = self.key.to_pkcs8_pem(LineEnding::LF).expect("encoding a P-256 key");
        Secret::new(pem.as_str())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey::Es256(*self.key.verifying_key())
    }

    /// Signs `claims` into a compact JWT with header `{"alg":"ES256","typ":"JWT","kid":…}`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "ES256".into(), typ: Some("JWT".into()), kid: Some(self.kid.clone()), crit: None };
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes"));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize")));
        let sig: p256::ecdsa::Signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        token
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(ES256, kid {}, private key ***)", self.kid)
    }
}

/// A token just issued, with what the token endpoint answers.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Secret,
    pub claims: Claims,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Issues a token for `subject` (empty for anonymous), valid `ttl` from `now`, for `audience` (the
/// `service` of the token request), granting `grant`.
pub fn issue(
    key: &SigningKey,
    issuer: &str,
    subject: &str,
    audience: &str,
    grant: &Grant,
    ttl: Duration,
    now: u64,
) -> IssuedToken {
    let claims = Claims {
        iss: issuer.to_string(),
        sub: subject.to_string(),
        aud: Audience::One(audience.to_string()),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
        jti: random_token::<16>(),
        access: grant.to_access_claim(),
    };
    IssuedToken { token: Secret::new(key.sign(&claims)), claims, expires_in: ttl.as_secs() }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    active: String,
    #[serde(default)]
    retired: Vec<Retired>,
}

#[derive(Serialize, Deserialize)]
struct Retired {
    kid: String,
    retired_at: u64,
}

/// The signing keys persisted in a directory: `<kid>.pem` files (PKCS#8, mode 0600) and `keys.json`
/// naming the active key and the retired ones with the time they were retired.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    active: SigningKey,
    retired: Vec<(SigningKey, u64)>,
}

impl KeyStore {
    /// Loads the keys of `dir`, or creates the directory (mode 0700) and a first key.
    pub fn open_or_create(dir: &Path) -> io::Result<KeyStore> {
        let manifest = dir.join("keys.json");
        if !manifest.exists() {
            create_private_dir(dir)?;
            let store = KeyStore { dir: dir.to_path_buf(), active: SigningKey::generate(), retired: Vec::new() };
            store.write_key(&store.active)?;
            store.write_manifest()?;
            return Ok(store);
        }
        let m: Manifest = serde_json::from_slice(&std::fs::read(&manifest)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", manifest.display())))?;
        let active = Self::read_key(dir, &m.active)?;
        let retired =
            m.retired.iter().map(|r| Ok((Self::read_key(dir, &r.kid)?, r.retired_at))).collect::<io::Result<_>>()?;
        Ok(KeyStore { dir: dir.to_path_buf(), active, retired })
    }

    fn read_key(dir: &Path, kid: &str) -> io::Result<SigningKey> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || kid.is_empty() {
            return Err(invalid(format!("invalid key id in {}", dir.join("keys.json").display())));
        }
        let path = dir.join(format!("{kid}.pem"));
        let pem = Secret::new(std::fs::read_to_string(&path)?);
        let key = SigningKey::from_pkcs8_pem(pem.expose()).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        if key.kid != kid {
            return Err(invalid(format!("{}: the key does not match its name", path.display())));
        }
        Ok(key)
    }

    fn write_key(&self, key: &SigningKey) -> io::Result<()> {
        crate::htpasswd::write_private_file(
            &self.dir.join(format!("{}.pem", key.kid)),
            key.to_pkcs8_pem().expose().as_bytes(),
        )
    }

    fn write_manifest(&self) -> io::Result<()> {
        let m = Manifest {
            active: self.active.kid.clone(),
            retired: self.retired.iter().map(|(k, at)| Retired { kid: k.kid.clone(), retired_at: *at }).collect(),
        };
        let json = serde_json::to_vec_pretty(&m).map_err(io::Error::other)?;
        crate::htpasswd::write_private_file(&self.dir.join("keys.json"), &json)
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Makes a new key active; the old one still verifies until [`KeyStore::prune`] removes it.
    pub fn rotate(&mut self, now: u64) -> io::Result<()> {
        let new = SigningKey::generate();
        self.write_key(&new)?;
        let old = std::mem::replace(&mut self.active, new);
        self.retired.push((old, now));
        self.write_manifest()
    }

    /// Deletes the retired keys retired at least `keep_for` ago (the longest token lifetime plus the
    /// clock-skew tolerance: no token they signed can still be valid). Returns how many went.
    pub fn prune(&mut self, now: u64, keep_for: Duration) -> io::Result<usize> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(_, at)| now >= at.saturating_add(keep_for.as_secs()));
        self.retired = kept;
        self.write_manifest()?;
        for (k, _) in &gone {
            std::fs::remove_file(self.dir.join(format!("{}.pem", k.kid)))?;
        }
        Ok(gone.len())
    }

    /// The public keys that verify our tokens: the active key and the retired ones still kept.
    pub fn verification_keys(&self) -> KeySet {
        let mut set = KeySet::new();
        for k in std::iter::once(&self.active).chain(self.retired.iter().map(|(k, _)| k)) {
            set.insert(k.kid.clone(), k.verify_key());
        }
        set
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use entrepot_oci::RepoName;
    use hmac::{KeyInit as _, Mac as _};

    use super::*;
    use crate::access::{Action, Actions, Scope};

    const NOW: u64 = 1_800_000_000;
    const TTL: Duration = Duration::from_secs(300);

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn pull_a() -> Grant {
        Grant::intersect(&[Scope::parse("repository:a:pull").unwrap()], |_| Actions::ALL)
    }

    fn keys_of(k: &SigningKey) -> KeySet {
        let mut s = KeySet::new();
        s.insert(k.kid(), k.verify_key());
        s
    }

    fn v() -> Validation {
        Validation::new("entrepot", "registry.example")
    }

    fn b64j(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn issue_and_verify() {
        let k = SigningKey::generate();
        let t = issue(&k, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        assert_eq!(t.expires_in, 300);
        let c = verify(t.token.expose(), &keys_of(&k), &v(), NOW + 10).unwrap();
        assert_eq!(c, t.claims);
        assert_eq!(c.sub, "alice");
        assert_eq!(c.jti.len(), 22);
        assert!(c.grant().allows(&repo("a"), Action::Pull));
        // A pull token is not a push token, and a token for repository a is not one for b.
        assert!(!c.grant().allows(&repo("a"), Action::Push));
        assert!(!c.grant().allows(&repo("b"), Action::Pull));
        // The header names the key and the algorithm.
        let header: serde_json::Value =
            serde_json::from_slice(&b64(t.token.expose().split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": k.kid()}));
        // Tokens are unique.
        let t2 = issue(&k, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        assert_ne!(t.claims.jti, t2.claims.jti);
    }

    #[test]
    fn time_checks_with_leeway() {
        let k = SigningKey::generate();
        let keys = keys_of(&k);
        let t = issue(&k, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        let at = |now| verify(t.token.expose(), &keys, &v(), now);
        assert!(at(NOW + 300 + 59).is_ok(), "within the skew tolerance");
        assert_eq!(at(NOW + 300 + 60), Err(TokenError::Expired));
        assert_eq!(at(NOW + 100_000), Err(TokenError::Expired));
        assert!(at(NOW - 60).is_ok(), "issued slightly in the future by a fast clock");
        assert_eq!(at(NOW - 61), Err(TokenError::NotYetValid));
        let strict = Validation { leeway: Duration::ZERO, ..v() };
        assert_eq!(verify(t.token.expose(), &keys, &strict, NOW + 300), Err(TokenError::Expired));
    }

    #[test]
    fn issuer_audience_and_key_checks() {
        let k = SigningKey::generate();
        let keys = keys_of(&k);
        let t = issue(&k, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        let tok = t.token.expose();
        assert_eq!(verify(tok, &keys, &Validation::new("other", "registry.example"), NOW), Err(TokenError::Issuer));
        assert_eq!(verify(tok, &keys, &Validation::new("entrepot", "other.example"), NOW), Err(TokenError::Audience));
        // Signed by another key: its kid is unknown here.
        let other = SigningKey::generate();
        let forged = issue(&other, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        assert_eq!(verify(forged.token.expose(), &keys, &v(), NOW), Err(TokenError::UnknownKey));
        // Signed by another key but claiming our kid.
        let mut c = t.claims.clone();
        c.access = Grant::intersect(&[Scope::parse("repository:a:push").unwrap()], |_| Actions::ALL).to_access_claim();
        let impostor = SigningKey { kid: k.kid().to_string(), key: other.key.clone() };
        assert_eq!(verify(&impostor.sign(&c), &keys, &v(), NOW), Err(TokenError::Signature));
        // Claims changed after signing.
        let parts: Vec<&str> = tok.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64j(&serde_json::to_value(&c).unwrap()), parts[2]);
        assert_eq!(verify(&tampered, &keys, &v(), NOW), Err(TokenError::Signature));
        // An audience array containing ours is fine.
        let mut c = t.claims.clone();
        c.aud = Audience::Many(vec!["x".into(), "registry.example".into()]);
        assert!(verify(&k.sign(&c), &keys, &v(), NOW).is_ok());
    }

    #[test]
    fn algorithm_attacks() {
        let k = SigningKey::generate();
        let keys = keys_of(&k);
        let t = issue(&k, "entrepot", "alice", "registry.example", &pull_a(), TTL, NOW);
        let payload = t.token.expose().split('.').nth(1).unwrap().to_string();
        let header = |alg: &str| b64j(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": k.kid()}));

        // alg: none, with and without a signature part.
        for tok in [format!("{}.{payload}.", header("none")), format!("{}.{payload}", header("none"))] {
            assert!(matches!(verify(&tok, &keys, &v(), NOW), Err(TokenError::Algorithm(_) | TokenError::Malformed)));
        }
        assert_eq!(
            verify(&format!("{}.{payload}.", header("none")), &keys, &v(), NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        for alg in ["NONE", "None", "es256", "HS256", "ES384", "PS256", "EdDSA"] {
            assert_eq!(
                verify(&format!("{}.{payload}.AAAA", header(alg)), &keys, &v(), NOW),
                Err(TokenError::Algorithm(alg.into()))
            );
        }
        // HS256 with the public key (in every encoding an attacker might try) as the HMAC secret.
        let vk = *k.key.verifying_key();
        let public_forms: Vec<Vec<u8>> = vec![
            vk.to_sec1_point(false).as_bytes().to_vec(),
            vk.to_sec1_point(true).as_bytes().to_vec(),
            serde_json::to_vec(&keys.to_jwks()).unwrap(),
        ];
        for secret in public_forms {
            let signing_input = format!("{}.{payload}", header("HS256"));
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret).unwrap();
            mac.update(signing_input.as_bytes());
            let tok = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
            assert_eq!(verify(&tok, &keys, &v(), NOW), Err(TokenError::Algorithm("HS256".into())));
        }
        // RS256 header on our EC key: the key is bound to ES256.
        let rs = Validation { algorithms: vec![Algorithm::Es256, Algorithm::Rs256], ..v() };
        let sig = t.token.expose().split('.').nth(2).unwrap();
        assert_eq!(
            verify(&format!("{}.{payload}.{sig}", header("RS256")), &keys, &rs, NOW),
            Err(TokenError::UnknownKey)
        );
        // No kid; crit; garbage.
        let no_kid = b64j(&serde_json::json!({"alg": "ES256"}));
        assert_eq!(verify(&format!("{no_kid}.{payload}.{sig}"), &keys, &v(), NOW), Err(TokenError::NoKeyId));
        let crit = b64j(&serde_json::json!({"alg": "ES256", "kid": k.kid(), "crit": ["exp"]}));
        assert_eq!(verify(&format!("{crit}.{payload}.{sig}"), &keys, &v(), NOW), Err(TokenError::Critical));
        for junk in ["", "a", "a.b", "a.b.c.d", "....", "!!.!!.!!", &format!("{}=.{payload}.{sig}", header("ES256"))] {
            assert!(verify(junk, &keys, &v(), NOW).is_err(), "{junk}");
        }
        assert_eq!(verify(&"a".repeat(MAX_TOKEN_LEN + 1), &keys, &v(), NOW), Err(TokenError::TooLong));
        // A DER-encoded signature is refused even if it is a valid signature.
        let signing_input = t.token.expose().rsplit_once('.').unwrap().0;
        let sig: p256::ecdsa::Signature = k.key.sign(signing_input.as_bytes());
        let der = URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes());
        assert_eq!(verify(&format!("{signing_input}.{der}"), &keys, &v(), NOW), Err(TokenError::Signature));
    }

    #[test]
    fn claims_are_required() {
        let k = SigningKey::generate();
        let keys = keys_of(&k);
        let header = b64j(&serde_json::json!({"alg": "ES256", "kid": k.kid()}));
        let sign = |claims: serde_json::Value| {
            let input = format!("{header}.{}", b64j(&claims));
            let sig: p256::ecdsa::Signature = k.key.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        };
        let no_exp = sign(serde_json::json!({"iss": "entrepot", "aud": "registry.example"}));
        assert_eq!(verify(&no_exp, &keys, &v(), NOW), Err(TokenError::Malformed));
        let no_aud = sign(serde_json::json!({"iss": "entrepot", "exp": NOW + 10}));
        assert_eq!(verify(&no_aud, &keys, &v(), NOW), Err(TokenError::Malformed));
        let minimal = sign(serde_json::json!({"iss": "entrepot", "aud": "registry.example", "exp": NOW + 10}));
        let c = verify(&minimal, &keys, &v(), NOW).unwrap();
        assert!(c.grant().is_empty());
    }

    #[test]
    fn key_store_persists_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("keys");
        let mut store = KeyStore::open_or_create(&kdir).unwrap();
        let first = store.active().clone();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&kdir), 0o700);
            assert_eq!(mode(&kdir.join(format!("{}.pem", first.kid()))), 0o600);
        }
        let pem = std::fs::read_to_string(kdir.join(format!("{}.pem", first.kid()))).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // Reopening loads the same key.
        assert_eq!(KeyStore::open_or_create(&kdir).unwrap().active().kid(), first.kid());

        let old = issue(store.active(), "entrepot", "a", "registry.example", &pull_a(), TTL, NOW);
        store.rotate(NOW + 10).unwrap();
        assert_ne!(store.active().kid(), first.kid());
        let new = issue(store.active(), "entrepot", "a", "registry.example", &pull_a(), TTL, NOW + 10);
        // Both verify after rotation, also after reopening.
        let store2 = KeyStore::open_or_create(&kdir).unwrap();
        assert_eq!(store2.active().kid(), store.active().kid());
        for s in [&store, &store2] {
            let keys = s.verification_keys();
            assert_eq!(keys.len(), 2);
            assert!(verify(old.token.expose(), &keys, &v(), NOW + 20).is_ok());
            assert!(verify(new.token.expose(), &keys, &v(), NOW + 20).is_ok());
        }
        // Pruning too early keeps the old key; after its tokens expired it goes.
        let keep = TTL + DEFAULT_LEEWAY;
        assert_eq!(store.prune(NOW + 100, keep).unwrap(), 0);
        assert_eq!(store.prune(NOW + 10 + keep.as_secs(), keep).unwrap(), 1);
        assert!(!kdir.join(format!("{}.pem", first.kid())).exists());
        let keys = KeyStore::open_or_create(&kdir).unwrap().verification_keys();
        assert_eq!(verify(old.token.expose(), &keys, &v(), NOW + 20), Err(TokenError::UnknownKey));
        assert!(verify(new.token.expose(), &keys, &v(), NOW + 20).is_ok());
        // Debug output never holds the private key.
        let dbg = format!("{store:?}");
        assert!(!dbg.contains("PRIVATE") && dbg.contains(store.active().kid()), "{dbg}");
    }

    #[test]
    fn key_store_refuses_a_swapped_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open_or_create(dir.path()).unwrap();
        let other = SigningKey::generate();
        std::fs::write(dir.path().join(format!("{}.pem", store.active().kid())), other.to_pkcs8_pem().expose())
            .unwrap();
        assert!(KeyStore::open_or_create(dir.path()).is_err());
    }

    #[test]
    fn jwks_round_trip_of_our_keys() {
        let k = SigningKey::generate();
        let jwks = keys_of(&k).to_jwks();
        assert_eq!(jwks["keys"][0]["kid"], k.kid());
        let back = KeySet::from_jwks(&jwks.to_string()).unwrap();
        let t = issue(&k, "entrepot", "a", "registry.example", &pull_a(), TTL, NOW);
        assert!(verify(t.token.expose(), &back, &v(), NOW).is_ok());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example_shape() {
        let k = SigningKey::generate();
        let kid = thumbprint(k.key.verifying_key());
        assert_eq!(kid.len(), 43);
        assert_eq!(kid, k.kid());
    }

    fn rsa_key() -> &'static rsa::PrivateKey {
        static KEY: OnceLock<rsa::PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap())
    }

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        use rsa::traits::PublicKeyParts as _;
        let pk = rsa_key().to_public_key();
        serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(pk.n().to_be_bytes_trimmed_vartime()),
            "e": URL_SAFE_NO_PAD.encode(pk.e().to_be_bytes_trimmed_vartime()),
        })
    }

    fn rs256_token(kid: &str, claims: &serde_json::Value) -> String {
        let header = b64j(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
        let input = format!("{header}.{}", b64j(claims));
        let sk = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key().clone());
        let sig = rsa::signature::Signer::sign(&sk, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(rsa::signature::SignatureEncoding::to_vec(&sig)))
    }

    #[test]
    fn external_issuer_with_jwks() {
        let ec = SigningKey::generate();
        let mut ec_jwk = keys_of(&ec).to_jwks()["keys"][0].clone();
        ec_jwk["kid"] = "ec-1".into();
        let jwks = serde_json::json!({"keys": [
            rsa_jwk("rsa-1"),
            ec_jwk,
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ]});
        let keys = KeySet::from_jwks(&jwks.to_string()).unwrap();
        assert_eq!(keys.len(), 2, "only the P-256 and RSA signing keys are kept");
        let external = Validation {
            issuer: "https://keycloak.example/realms/dev".into(),
            audience: "registry.example".into(),
            leeway: Duration::from_secs(30),
            algorithms: vec![Algorithm::Rs256, Algorithm::Es256],
        };
        let claims = serde_json::json!({
            "iss": "https://keycloak.example/realms/dev", "sub": "bob", "aud": ["account", "registry.example"],
            "exp": NOW + 60, "iat": NOW, "jti": "x",
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
            "preferred_username": "bob",
        });
        let c = verify(&rs256_token("rsa-1", &claims), &keys, &external, NOW).unwrap();
        assert_eq!(c.sub, "bob");
        assert!(c.grant().allows(&repo("team/app"), Action::Push));
        // The EC key of the same set verifies ES256.
        let mut ours = Claims {
            iss: external.issuer.clone(),
            ..issue(&ec, "x", "bob", "registry.example", &pull_a(), TTL, NOW).claims
        };
        ours.sub = "carol".into();
        let ec_tok = SigningKey { kid: "ec-1".into(), key: ec.key.clone() }.sign(&ours);
        assert_eq!(verify(&ec_tok, &keys, &external, NOW).unwrap().sub, "carol");
        // RS256 is not allowed unless listed.
        let es_only = Validation { algorithms: vec![Algorithm::Es256], ..external.clone() };
        assert_eq!(
            verify(&rs256_token("rsa-1", &claims), &keys, &es_only, NOW),
            Err(TokenError::Algorithm("RS256".into()))
        );
        // An RS256 token naming the EC key's kid, and the reverse, are refused.
        assert_eq!(verify(&rs256_token("ec-1", &claims), &keys, &external, NOW), Err(TokenError::UnknownKey));
        // Expired, wrong audience, wrong issuer.
        let mut c2 = claims.clone();
        c2["exp"] = (NOW - 31).into();
        assert_eq!(verify(&rs256_token("rsa-1", &c2), &keys, &external, NOW), Err(TokenError::Expired));
        let mut c3 = claims.clone();
        c3["aud"] = "account".into();
        assert_eq!(verify(&rs256_token("rsa-1", &c3), &keys, &external, NOW), Err(TokenError::Audience));
        let mut c4 = claims.clone();
        c4["iss"] = "https://keycloak.example/realms/other".into();
        assert_eq!(verify(&rs256_token("rsa-1", &c4), &keys, &external, NOW), Err(TokenError::Issuer));
    }

    #[test]
    fn bad_jwks() {
        let err = |j: serde_json::Value| KeySet::from_jwks(&j.to_string()).unwrap_err();
        assert!(matches!(err(serde_json::json!({"nokeys": []})), TokenError::KeySet(_)));
        // A point off the curve.
        let off = serde_json::json!({"keys": [{"kty": "EC", "kid": "k", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])}]});
        assert!(matches!(err(off), TokenError::KeySet(m) if m.contains("not a point")));
        // A small RSA key.
        let small = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k",
            "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}]});
        assert!(matches!(err(small), TokenError::KeySet(m) if m.contains("2048")));
        // A signing key without kid.
        let mut no_kid = rsa_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(matches!(err(serde_json::json!({"keys": [no_kid]})), TokenError::KeySet(m) if m.contains("kid")));
        // An EC key claiming RS256 is skipped, not trusted for RS256.
        let ec = SigningKey::generate();
        let mut j = keys_of(&ec).to_jwks()["keys"][0].clone();
        j["alg"] = "RS256".into();
        assert!(KeySet::from_jwks(&serde_json::json!({"keys": [j]}).to_string()).unwrap().is_empty());
    }
}
