//! Parsing manifests and indexes into what a registry must know about them.
//!
//! The registry stores manifest bytes exactly as pushed and hashes those bytes; parsing only extracts
//! the descriptors it must check and track: the config and layers (blobs), the child manifests of an
//! index, the `subject`, the `artifactType` and the annotations. Unknown fields are ignored.

use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::media;

/// A content descriptor, as far as the registry needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// `urls` of a non-distributable ("foreign") layer; such layers need not be in the registry.
    pub urls: Vec<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

/// Whether a manifest lists blobs (an image or artifact manifest) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What a registry needs to know about a pushed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// The media type it is stored and served with.
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    /// `layers` of an image manifest, or `blobs` of a legacy artifact manifest.
    pub layers: Vec<Descriptor>,
    /// `manifests` of an index.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("manifest must be a JSON object")]
    NotObject,
    #[error(
        "Docker schema 1 manifests are not supported: push with a current client or convert to schema 2 / OCI (e.g. skopeo copy --format v2s2)"
    )]
    Schema1,
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(String),
    #[error("Content-Type {content_type:?} does not match the manifest's mediaType {media_type:?}")]
    MediaTypeMismatch { content_type: String, media_type: String },
    #[error("cannot tell the manifest's media type: send a Content-Type or a mediaType field")]
    UnknownMediaType,
    #[error("invalid field {field}: {reason}")]
    Field { field: String, reason: String },
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.into(), reason: reason.into() }
}

impl ParsedManifest {
    /// Parses manifest bytes sent with `content_type` (the essence of the header, or `None`).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
        let content_type = content_type.map(media::essence).filter(|c| !c.is_empty());
        if content_type.is_some_and(|c| c == media::DOCKER_SCHEMA1 || c == media::DOCKER_SCHEMA1_SIGNED) {
            return Err(ManifestError::Schema1);
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
        let obj = value.as_object().ok_or(ManifestError::NotObject)?;

        match obj.get("schemaVersion") {
            Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => return Err(ManifestError::Schema1),
            Some(other) => return Err(ManifestError::SchemaVersion(other.to_string())),
            // The legacy OCI artifact manifest had no schemaVersion.
            None if obj.get("mediaType").and_then(Value::as_str) == Some(LEGACY_ARTIFACT) => {}
            None => return Err(field_err("schemaVersion", "missing")),
        }

        let declared = match obj.get("mediaType") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(field_err("mediaType", "must be a string")),
        };
        let media_type = match (content_type, declared) {
            (Some(c), Some(d)) if c != d => {
                return Err(ManifestError::MediaTypeMismatch { content_type: c.into(), media_type: d.into() });
            }
            (_, Some(d)) => d.to_string(),
            (Some(c), None) if c != "application/json" && c != "application/octet-stream" => c.to_string(),
            _ => guess_media_type(obj).ok_or(ManifestError::UnknownMediaType)?.to_string(),
        };
        if media::is_schema1(&media_type) {
            return Err(ManifestError::Schema1);
        }

        let kind = if media::is_index(&media_type) {
            ManifestKind::Index
        } else if media::is_image_manifest(&media_type) || media_type == LEGACY_ARTIFACT {
            ManifestKind::Image
        } else if obj.contains_key("manifests") {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        };

        let config = obj.get("config").map(|v| descriptor(v, "config")).transpose()?;
        let mut layers = descriptors(obj, "layers")?;
        layers.extend(descriptors(obj, "blobs")?);
        let manifests = descriptors(obj, "manifests")?;
        let subject = match obj.get("subject") {
            None | Some(Value::Null) => None,
            Some(v) => Some(descriptor(v, "subject")?),
        };
        let artifact_type = optional_string(obj, "artifactType")?;
        let annotations = annotations(obj.get("annotations"), "annotations")?;

        match kind {
            ManifestKind::Index => {
                if !obj.contains_key("manifests") {
                    return Err(field_err("manifests", "missing in an index"));
                }
                if config.is_some() || !layers.is_empty() {
                    return Err(field_err("manifests", "an index must not have config or layers"));
                }
            }
            ManifestKind::Image => {
                if media::is_image_manifest(&media_type) {
                    if config.is_none() {
                        return Err(field_err("config", "missing in an image manifest"));
                    }
                    if !obj.contains_key("layers") {
                        return Err(field_err("layers", "missing in an image manifest"));
                    }
                }
                if !manifests.is_empty() {
                    return Err(field_err("manifests", "an image manifest must not list manifests"));
                }
            }
        }
        if media_type == media::DOCKER_MANIFEST && subject.is_some() {
            return Err(field_err("subject", "not allowed in a Docker schema 2 manifest"));
        }

        Ok(ParsedManifest { media_type, kind, config, layers, manifests, subject, artifact_type, annotations })
    }

    /// The blobs this manifest requires to exist: the config and every distributable layer.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|d| d.urls.is_empty()))
    }

    /// The artifact type reported by the referrers API: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| {
            if self.kind == ManifestKind::Image { self.config.as_ref().map(|c| c.media_type.as_str()) } else { None }
        })
    }
}

const LEGACY_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

fn guess_media_type(obj: &Map<String, Value>) -> Option<&'static str> {
    if obj.contains_key("manifests") {
        Some(media::OCI_INDEX)
    } else if obj.contains_key("config") {
        Some(media::OCI_MANIFEST)
    } else {
        None
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_err(key, "must be a string")),
    }
}

fn annotations(v: Option<&Value>, field: &str) -> Result<Option<Map<String, Value>>, ManifestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.values().all(Value::is_string) {
                Ok(Some(m.clone()))
            } else {
                Err(field_err(field, "values must be strings"))
            }
        }
        Some(_) => Err(field_err(field, "must be an object")),
    }
}

fn descriptors(obj: &Map<String, Value>, key: &str) -> Result<Vec<Descriptor>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, v)| descriptor(v, &format!("{key}[{i}]"))).collect()
        }
        Some(_) => Err(field_err(key, "must be an array")),
    }
}

fn descriptor(v: &Value, field: &str) -> Result<Descriptor, ManifestError> {
    let o = v.as_object().ok_or_else(|| field_err(field, "must be an object"))?;
    let media_type = match o.get("mediaType") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(field_err(format!("{field}.mediaType"), "missing or not a string")),
    };
    let digest = match o.get("digest") {
        Some(Value::String(s)) => Digest::parse(s).map_err(|e| field_err(format!("{field}.digest"), e.to_string()))?,
        _ => return Err(field_err(format!("{field}.digest"), "missing or not a string")),
    };
    let size = match o.get("size") {
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| field_err(format!("{field}.size"), "must be a non-negative integer"))?
        }
        _ => return Err(field_err(format!("{field}.size"), "missing or not a number")),
    };
    let urls = match o.get("urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| {
                u.as_str().map(str::to_string).ok_or_else(|| field_err(format!("{field}.urls"), "must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(field_err(format!("{field}.urls"), "must be an array")),
    };
    let artifact_type = optional_string(o, "artifactType")
        .map_err(|_| field_err(format!("{field}.artifactType"), "must be a string"))?;
    let annotations = annotations(o.get("annotations"), &format!("{field}.annotations"))?;
    Ok(Descriptor { media_type, digest, size, urls, artifact_type, annotations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}},
                      {{"mediaType":"x","digest":"{}","size":1,"urls":["http://example.invalid/x"]}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":5}},"annotations":{{"a":"b"}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            d('a'),
            d('b'),
            d('c'),
            media::OCI_MANIFEST,
            d('d')
        );
        let p = ParsedManifest::parse(m.as_bytes(), Some(media::OCI_MANIFEST)).expect("parse");
        assert_eq!(p.kind, ManifestKind::Image);
        assert_eq!(p.required_blobs().count(), 2);
        assert_eq!(p.subject.as_ref().map(|s| s.digest.to_string()), Some(d('d')));
        assert_eq!(p.effective_artifact_type(), Some(media::OCI_CONFIG));
        // A mismatching Content-Type is refused.
        assert!(matches!(
            ParsedManifest::parse(m.as_bytes(), Some(media::OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
    }

    #[test]
    fn index_and_errors() {
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":7,"platform":{{"os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST,
            d('e')
        );
        let p = ParsedManifest::parse(i.as_bytes(), Some(media::OCI_INDEX)).expect("parse");
        assert_eq!(p.kind, ManifestKind::Index);
        assert_eq!(p.manifests.len(), 1);
        assert_eq!(p.media_type, media::OCI_INDEX);

        assert_eq!(ParsedManifest::parse(br#"{"schemaVersion":1}"#, None), Err(ManifestError::Schema1));
        assert!(matches!(ParsedManifest::parse(b"nope", None), Err(ManifestError::NotJson(_))));
        assert_eq!(ParsedManifest::parse(b"[]", None), Err(ManifestError::NotObject));
        let bad = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:x","size":1},"layers":[]}"#;
        assert!(matches!(ParsedManifest::parse(bad.as_bytes(), None), Err(ManifestError::Field { .. })));
        let no_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a","digest":"{}","size":1}}}}"#,
            media::DOCKER_MANIFEST,
            d('a')
        );
        assert!(ParsedManifest::parse(no_layers.as_bytes(), None).is_err());
    }
}
