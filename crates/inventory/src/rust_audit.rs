//! Rust binaries built with `cargo auditable`: the `.dep-v0` ELF section holds zlib-compressed JSON
//! `{"packages":[{"name","version","source","kind","dependencies","root"}]}` (format of the `auditable-serde`
//! crate). Every listed crate becomes a package. Decompression is capped; must never inflate without a bound.

use std::io::Read;

use serde::Deserialize;

use crate::elf::Elf;
use crate::{Package, PackageKind};

#[derive(Deserialize)]
struct Audit {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
}

/// The crates recorded in `.dep-v0`; `Ok(empty)` when the binary has no such section.
pub fn from_elf(elf: &Elf<'_>, path: &str, cap: u64) -> Result<Vec<Package>, String> {
    let Some(section) = elf.section(".dep-v0") else { return Ok(Vec::new()) };
    parse_section(section, path, cap)
}

pub fn parse_section(section: &[u8], path: &str, cap: u64) -> Result<Vec<Package>, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(cap + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!(".dep-v0 is not zlib data: {e}"))?;
    if json.len() as u64 > cap {
        return Err(format!(".dep-v0 inflates past the {cap}-byte cap; skipped"));
    }
    let audit: Audit =
        serde_json::from_slice(&json).map_err(|e| format!(".dep-v0 is not cargo-auditable JSON: {e}"))?;
    Ok(audit.packages.into_iter().map(|p| Package::new(PackageKind::Rust, p.name, p.version, path)).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn section_round_trip() {
        let json = br#"{"packages":[{"name":"hello","version":"0.1.0","source":"local","root":true,"dependencies":[1]},
            {"name":"itoa","version":"1.0.9","source":"crates.io"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let section = z.finish().unwrap();
        let packages = parse_section(&section, "usr/bin/hello", 1 << 20).unwrap();
        let got: Vec<_> = packages.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(got, vec![("hello", "0.1.0"), ("itoa", "1.0.9")]);
        assert!(parse_section(&section, "x", 10).unwrap_err().contains("cap"));
        assert!(parse_section(b"plain", "x", 100).is_err());
    }
}
