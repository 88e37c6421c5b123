//! Names, tags, references and upload ids: whatever the parsers accept is safe to put in a path or a
//! query (no `..`, no leading or doubled `/`, bounded length, a restricted alphabet) and prints back as
//! given.
#![no_main]

use entrepot_oci::{Reference, RepoName, Tag, UploadId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 255, "length {}", s.len());
        assert!(!s.contains(".."), "{s:?}");
        assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)), "{s:?}");
        for component in s.split('/') {
            assert!(component != "." && component != "..", "{s:?}");
            let first = component.as_bytes()[0];
            assert!(first.is_ascii_lowercase() || first.is_ascii_digit(), "{s:?}");
        }
    }
    if let Ok(tag) = Tag::parse(s) {
        assert_eq!(tag.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 128, "length {}", s.len());
        assert!(!s.starts_with(['.', '-']), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{s:?}");
        assert!(!s.contains('/') && s != "." && s != "..", "{s:?}");
    }
    match Reference::parse(s) {
        Ok(Reference::Tag(t)) => {
            assert_eq!(t.as_str(), s);
            assert!(Tag::parse(s).is_ok());
        }
        Ok(Reference::Digest(d)) => {
            assert_eq!(d.to_string(), s);
            assert!(s.contains(':'));
        }
        Err(_) => assert!(Tag::parse(s).is_err() || s.contains(':')),
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s, "round trip");
    }
    if let Some(id) = UploadId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 64);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{s:?}");
    }
});
