//! Content digests (`algorithm:hex`) and a streaming hasher whose state can be saved and restored.
//!
//! Only `sha256` and `sha512` are accepted; the encoded part must be lowercase hex of the exact length.
//! A `Digest` is therefore always safe to use as a file-name component or a query parameter.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name (`sha256`, `sha512`).
    pub fn parse(s: &str) -> Result<Algorithm, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => Err(DigestError::UnsupportedAlgorithm(truncate(other))),
            _ => Err(DigestError::Malformed),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest: expected <algorithm>:<hex>")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (supported: sha256, sha512)")]
    UnsupportedAlgorithm(String),
    #[error("invalid digest encoding: {0} needs {1} lowercase hex characters")]
    BadEncoding(Algorithm, usize),
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// `algorithm-component (algorithm-separator algorithm-component)*` from the image spec.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A validated content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and validates `algorithm:hex`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (algo, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm = Algorithm::parse(algo)?;
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::BadEncoding(algorithm, algorithm.hex_len()));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut d = Digester::new(algorithm);
        d.update(data);
        d.finish()
    }

    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher for one of the supported algorithms. Its state (including the bytes of a
/// partial block) can be exported with [`Digester::save`] and restored with [`Digester::restore`], so an
/// upload can be resumed after a restart or on another instance.
#[derive(Clone)]
pub enum Digester {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Digester {
    pub fn new(algorithm: Algorithm) -> Digester {
        match algorithm {
            Algorithm::Sha256 => Digester::Sha256(Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything written so far (the hasher itself is left untouched).
    pub fn peek(&self) -> Digest {
        self.clone().finish()
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes): (Algorithm, Vec<u8>) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Digester::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest { algorithm, hex: to_hex(&bytes) }
    }

    /// The serialized internal state (stable within sha2 0.11.x).
    pub fn save(&self) -> Vec<u8> {
        match self {
            Digester::Sha256(h) => h.serialize().to_vec(),
            Digester::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Restores a state produced by [`Digester::save`]. A state whose block counter is implausibly large
    /// (a corrupted row) is rejected: finishing it would overflow the message length in bits (a panic
    /// with overflow checks, a wrong digest without).
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Digester> {
        // sha2 0.11 serializes the compression state (32 / 64 bytes), then the little-endian count of
        // compressed blocks (u64 / u128), then the partial block.
        const MAX_BLOCKS: u128 = 1 << 48;
        let (at, width) = match algorithm {
            Algorithm::Sha256 => (32, 8),
            Algorithm::Sha512 => (64, 16),
        };
        let mut count = [0u8; 16];
        count[..width].copy_from_slice(state.get(at..at + width)?);
        if u128::from_le_bytes(count) > MAX_BLOCKS {
            return None;
        }
        match algorithm {
            Algorithm::Sha256 => {
                let s = SerializedState::<Sha256>::try_from(state).ok()?;
                Sha256::deserialize(&s).ok().map(Digester::Sha256)
            }
            Algorithm::Sha512 => {
                let s = SerializedState::<Sha512>::try_from(state).ok()?;
                Sha512::deserialize(&s).ok().map(Digester::Sha512)
            }
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!(Digest::parse("sha256"), Err(DigestError::Malformed));
        assert!(matches!(Digest::parse("md5:abc"), Err(DigestError::UnsupportedAlgorithm(_))));
        assert!(matches!(Digest::parse("sha256:bogus"), Err(DigestError::BadEncoding(..))));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(Digest::parse(&upper).is_err());
        assert!(Digest::parse(&format!("sha256:{}/..", "a".repeat(62))).is_err());
        assert!(Digest::parse("SHA256:x").is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&ok).map(|d| d.to_string()), Ok(ok));
    }

    #[test]
    fn state_roundtrip_continues_the_hash() {
        for algo in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
            let mut a = Digester::new(algo);
            a.update(&data[..333]);
            let saved = a.save();
            let mut b = Digester::restore(algo, &saved).expect("restore");
            b.update(&data[333..]);
            assert_eq!(b.finish(), Digest::of(algo, &data));
            assert!(Digester::restore(algo, &saved[1..]).is_none());
        }
    }

    #[test]
    fn restore_rejects_a_block_count_that_would_overflow() {
        // Found by the `digest` fuzz target: finishing this state overflowed the bit length in sha2.
        let mut state = Digester::new(Algorithm::Sha256).save();
        state[39] = 0xde;
        assert!(Digester::restore(Algorithm::Sha256, &state).is_none());
        let mut state = Digester::new(Algorithm::Sha512).save();
        state[79] = 0x01;
        assert!(Digester::restore(Algorithm::Sha512, &state).is_none());
        // A real counter restores.
        let mut h = Digester::new(Algorithm::Sha512);
        h.update(&[7; 1000]);
        assert!(Digester::restore(Algorithm::Sha512, &h.save()).is_some());
    }
}
