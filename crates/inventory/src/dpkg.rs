//! dpkg database parser: `var/lib/dpkg/status` and distroless `status.d/*` files, RFC 822-style stanzas
//! separated by blank lines with continuation lines starting with a space or tab. Lists installed packages
//! only (`Status: install ok installed`); must never guess a version it was not given.

use crate::{Package, PackageKind};

/// Fields of one stanza that the inventory uses.
#[derive(Default)]
struct Stanza<'a> {
    package: Option<&'a str>,
    version: Option<&'a str>,
    architecture: Option<&'a str>,
    source: Option<&'a str>,
    status: Option<&'a str>,
}

pub fn parse_status(text: &str, path: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut stanza = Stanza::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(package) = finish(&stanza, path) {
                packages.push(package);
            }
            stanza = Stanza::default();
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue; // continuation of a multi-line field (Description, Conffiles, ...)
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Package" => stanza.package = Some(value),
            "Version" => stanza.version = Some(value),
            "Architecture" => stanza.architecture = Some(value),
            "Source" => stanza.source = Some(value),
            "Status" => stanza.status = Some(value),
            _ => {}
        }
    }
    packages
}

fn finish(stanza: &Stanza<'_>, path: &str) -> Option<Package> {
    let name = stanza.package?;
    let version = stanza.version?;
    // distroless status.d stanzas carry a Status too; a missing one there means installed.
    if let Some(status) = stanza.status
        && status.split_whitespace().last() != Some("installed")
    {
        return None;
    }
    if stanza.status.is_none() && !path.contains("status.d/") {
        return None;
    }
    let mut package = Package::new(PackageKind::Deb, name, version, path);
    package.arch = stanza.architecture.map(str::to_string);
    let (source_name, source_version) = match stanza.source {
        Some(source) => match source.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.trim_end().trim_end_matches(')').trim()),
            None => (source.trim(), version),
        },
        None => (name, version),
    };
    package.source_name = Some(source_name.to_string());
    package.source_version = Some(source_version.to_string());
    Some(package)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Stanzas as dpkg writes them on Debian 12.
    const STATUS: &str = "Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u10
Replaces: libc6-amd64
Depends: libgcc-s1
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
Conffiles:
 /etc/foo 0123456789abcdef

Package: tzdata
Status: deinstall ok config-files
Architecture: all
Version: 2025b-0+deb12u1

Package: login
Status: install ok installed
Architecture: amd64
Version: 1:4.13+dfsg1-1+b1
Source: shadow (1:4.13+dfsg1-1)
";

    #[test]
    fn installed_only_with_sources() {
        let packages = parse_status(STATUS, "var/lib/dpkg/status");
        let got: Vec<_> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.arch.as_deref().unwrap_or(""),
                    p.source_name.as_deref().unwrap_or(""),
                    p.source_version.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("libc6", "2.36-9+deb12u10", "amd64", "glibc", "2.36-9+deb12u10"),
                ("libgcc-s1", "12.2.0-14", "amd64", "gcc-12", "12.2.0-14"),
                ("login", "1:4.13+dfsg1-1+b1", "amd64", "shadow", "1:4.13+dfsg1-1"),
            ]
        );
        assert!(packages.iter().all(|p| p.kind == PackageKind::Deb && p.path == "var/lib/dpkg/status"));
    }

    #[test]
    fn distroless_status_d() {
        // gcr.io/distroless/base writes one stanza per file; some carry no Status line.
        let text = "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n";
        let packages = parse_status(text, "var/lib/dpkg/status.d/base-files");
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].source_name.as_deref(), Some("base-files"));
        // ...but in the main status file a stanza without Status is not installed.
        assert!(parse_status(text, "var/lib/dpkg/status").is_empty());
    }
}
