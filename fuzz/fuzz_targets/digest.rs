//! `Digest::parse` accepts exactly `sha256:<64 hex>` / `sha512:<128 hex>` (lowercase), and whatever it
//! accepts prints back unchanged. `Digester::restore` on arbitrary (e.g. corrupted database) state never
//! panics, and a restored hasher keeps working.
#![no_main]

use entrepot_oci::{Algorithm, Digest, Digester};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = Digest::parse(s) {
            assert_eq!(d.to_string(), s, "round trip");
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
            assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(!s.contains(['/', '\\', '.', '\0']), "a digest must be safe in a path: {s:?}");
            assert_eq!(s.parse::<Digest>().ok(), Some(d.clone()), "FromStr agrees with parse");
        }
        if let Ok(a) = Algorithm::parse(s) {
            assert_eq!(a.as_str(), s);
        }
    }
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        if let Some(mut h) = Digester::restore(algorithm, data) {
            assert_eq!(h.algorithm(), algorithm);
            let saved = h.save();
            let again = Digester::restore(algorithm, &saved).expect("a saved state restores");
            assert_eq!(again.peek(), h.peek(), "save/restore keeps the state");
            h.update(data);
            let d = h.finish();
            assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
        }
    }
});
