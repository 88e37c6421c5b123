//! SBOM documents from a scan report: SPDX 2.3 JSON (the format attached to images as a referrer, artifact type
//! `application/spdx+json`) and CycloneDX 1.5 JSON (with the findings as its `vulnerabilities`).
//!
//! Every required field of both schemas is filled; each package carries its purl (SPDX: an external reference of
//! category `PACKAGE-MANAGER`, type `purl`; CycloneDX: `purl`). Documents are deterministic for a given report
//! (identifiers derive from the repository and digest; times are the scan's), so re-rendering gives the same
//! bytes. Pure functions: no I/O.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::report::Report;

/// The artifact type (and layer media type) of the attached SBOM.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
/// The media type of a CycloneDX JSON document.
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

const TOOL: &str = concat!("entrepot-", env!("CARGO_PKG_VERSION"));

/// SPDX identifiers allow letters, digits, `.` and `-` only.
fn spdx_id(prefix: &str, i: usize, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    format!("SPDXRef-{prefix}-{i}-{clean}")
}

fn image_purl(r: &Report) -> String {
    // pkg:oci/<last name component>@<digest, ':' encoded>?repository_url=<repository>
    let last = r.repository.rsplit('/').next().unwrap_or(&r.repository);
    format!("pkg:oci/{last}@{}?repository_url={}", r.digest.replace(':', "%3A"), r.repository.replace('/', "%2F"))
}

/// The SPDX 2.3 JSON document of a report.
pub fn spdx(r: &Report) -> Value {
    let image_id = "SPDXRef-Image";
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": r.repository,
        "versionInfo": r.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": image_purl(r),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for (i, p) in r.packages.iter().enumerate() {
        let id = spdx_id("Package", i + 1, &p.name);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": if matches!(p.kind.as_str(), "deb" | "apk" | "rpm") { "INSTALL" } else { "LIBRARY" },
        });
        if !p.purl.is_empty() {
            pkg["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }]);
        }
        if let Some(src) = &p.source_name {
            let v = p.source_version.as_deref().unwrap_or(&p.version);
            pkg["sourceInfo"] = json!(format!("built package from: {src} {v}"));
        }
        let mut comment = format!("type: {}; found at: {}", p.kind, p.path);
        if let Some(platform) = &p.platform {
            comment.push_str(&format!("; platform: {platform}"));
        }
        pkg["comment"] = json!(comment);
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", r.repository, r.digest),
        "documentNamespace": format!(
            "https://entrepot.invalid/spdx/{}/{}",
            r.repository,
            r.digest.replace(':', "-")
        ),
        "creationInfo": {
            "created": r.scanned_at,
            "creators": [format!("Tool: {TOOL}")],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// A name-based UUID (version 5 layout, SHA-256 of the input) for CycloneDX's `serialNumber`.
fn uuid_of(input: &str) -> String {
    let h = Sha256::digest(input.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn cdx_severity(s: entrepot_vuln::Severity) -> &'static str {
    use entrepot_vuln::Severity as S;
    match s {
        S::Critical => "critical",
        S::High => "high",
        S::Medium => "medium",
        S::Low => "low",
        S::None => "none",
        S::Unknown => "unknown",
    }
}

/// The CycloneDX 1.5 JSON document of a report (components and vulnerabilities).
pub fn cyclonedx(r: &Report) -> Value {
    let mut components = Vec::new();
    let mut refs = Vec::new();
    // bom-ref of each (package, installed, platform), for the vulnerabilities' `affects`.
    let mut by_key = std::collections::HashMap::new();
    for (i, p) in r.packages.iter().enumerate() {
        let bom_ref = format!("pkg-{}", i + 1);
        let mut c = json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": p.name,
            "version": p.version,
            "properties": [
                {"name": "entrepot:package:type", "value": p.kind},
                {"name": "entrepot:package:path", "value": p.path},
            ],
        });
        if !p.purl.is_empty() {
            c["purl"] = json!(p.purl);
        }
        if let Some(platform) = &p.platform
            && let Some(props) = c["properties"].as_array_mut()
        {
            props.push(json!({"name": "entrepot:platform", "value": platform}));
        }
        by_key.entry((p.name.clone(), p.platform.clone())).or_insert_with(Vec::new).push(bom_ref.clone());
        refs.push(bom_ref);
        components.push(c);
    }
    let vulnerabilities: Vec<Value> = r
        .vulnerabilities
        .iter()
        .map(|v| {
            let affects: Vec<Value> = by_key
                .get(&(v.package.clone(), v.platform.clone()))
                .map(|c| c.iter().map(|r| json!({"ref": r})).collect())
                .unwrap_or_default();
            let mut rating = json!({"severity": cdx_severity(v.severity)});
            if let Some(score) = v.score {
                rating["score"] = json!(score);
            }
            let mut out = json!({
                "id": v.id,
                "ratings": [rating],
                "affects": affects,
            });
            if !v.aliases.is_empty() {
                out["references"] =
                    json!(v.aliases.iter().map(|a| json!({"id": a, "source": {"name": "alias"}})).collect::<Vec<_>>());
            }
            if let Some(s) = &v.summary {
                out["description"] = json!(s);
            }
            if let Some(f) = &v.fixed {
                out["recommendation"] = json!(format!("upgrade {} to {f}", v.advisory_package));
            }
            out
        })
        .collect();
    let image_ref = "image";
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_of(&format!("{}@{}", r.repository, r.digest))),
        "version": 1,
        "metadata": {
            "timestamp": r.scanned_at,
            "tools": {"components": [{"type": "application", "name": "entrepot", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": r.repository,
                "version": r.digest,
                "purl": image_purl(r),
            },
        },
        "components": components,
        "dependencies": [{"ref": image_ref, "dependsOn": refs}],
        "vulnerabilities": vulnerabilities,
    })
}
