//! `ParsedManifest::parse` on arbitrary bytes and content types never panics, and what it accepts is
//! internally consistent (an index has no config or layers, an image lists no manifests).
#![no_main]

use entrepot_oci::{ManifestKind, ParsedManifest, media};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
    media::DOCKER_SCHEMA1,
    media::DOCKER_SCHEMA1_SIGNED,
    "application/vnd.oci.artifact.manifest.v1+json",
    "application/json",
    "application/octet-stream",
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
    "",
];

fuzz_target!(|input: (u8, &str, &[u8])| {
    let (pick, custom, bytes) = input;
    let content_type = match pick as usize % (CONTENT_TYPES.len() + 2) {
        i if i < CONTENT_TYPES.len() => Some(CONTENT_TYPES[i]),
        i if i == CONTENT_TYPES.len() => Some(custom),
        _ => None,
    };
    let Ok(m) = ParsedManifest::parse(bytes, content_type) else { return };
    assert!(!m.media_type.is_empty());
    assert!(!media::is_schema1(&m.media_type), "schema 1 accepted: {}", m.media_type);
    match m.kind {
        ManifestKind::Index => assert!(m.config.is_none() && m.layers.is_empty(), "{m:?}"),
        ManifestKind::Image => assert!(m.manifests.is_empty(), "{m:?}"),
    }
    if media::is_image_manifest(&m.media_type) {
        assert!(m.config.is_some(), "{m:?}");
    }
    for d in m.required_blobs() {
        assert!(d.urls.is_empty() || m.config.as_ref() == Some(d));
        let _ = d.digest.to_string();
    }
    let _ = m.effective_artifact_type();
});
