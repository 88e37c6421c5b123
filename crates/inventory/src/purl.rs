//! Package URLs (github.com/package-url/purl-spec): `pkg:type/namespace/name@version?qualifiers`, with
//! percent-encoding of everything outside the unreserved set and qualifiers sorted by key. OS packages carry
//! `arch` and `distro` (`<os id>-<version id>`), rpm an `epoch`. Must never drop the version.

use crate::{OsRelease, Package, PackageKind};

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes each `/`-separated segment of a namespace or name.
fn encode_path(s: &str) -> String {
    s.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn build(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    mut qualifiers: Vec<(&str, String)>,
) -> String {
    let mut out = format!("pkg:{kind}/");
    if let Some(ns) = namespace.filter(|ns| !ns.is_empty()) {
        out.push_str(&encode_path(ns));
        out.push('/');
    }
    out.push_str(&encode(name));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&encode(version));
    }
    qualifiers.retain(|(_, v)| !v.is_empty());
    qualifiers.sort();
    for (i, (key, value)) in qualifiers.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

pub fn for_package(p: &Package, os: Option<&OsRelease>) -> String {
    let os_id = os.and_then(|o| o.id.as_deref());
    let distro = os
        .and_then(|o| {
            Some(format!("{}-{}", o.id.as_deref()?, o.version_id.as_deref().or(o.version_codename.as_deref())?))
        })
        .unwrap_or_default();
    let arch = p.arch.clone().unwrap_or_default();
    match p.kind {
        PackageKind::Deb => {
            build("deb", Some(os_id.unwrap_or("debian")), &p.name, &p.version, vec![("arch", arch), ("distro", distro)])
        }
        PackageKind::Apk => {
            build("apk", Some(os_id.unwrap_or("alpine")), &p.name, &p.version, vec![("arch", arch), ("distro", distro)])
        }
        PackageKind::Rpm => {
            let (epoch, version) = match p.version.split_once(':') {
                Some((e, v)) if e.chars().all(|c| c.is_ascii_digit()) => (e.to_string(), v),
                _ => (String::new(), p.version.as_str()),
            };
            build("rpm", os_id, &p.name, version, vec![("arch", arch), ("distro", distro), ("epoch", epoch)])
        }
        PackageKind::Python => build("pypi", None, &p.name, &p.version, vec![]),
        PackageKind::Npm => match p.name.rsplit_once('/') {
            Some((scope, name)) => build("npm", Some(scope), name, &p.version, vec![]),
            None => build("npm", None, &p.name, &p.version, vec![]),
        },
        PackageKind::Go => match p.name.rsplit_once('/') {
            Some((ns, name)) => build("golang", Some(ns), name, &p.version, vec![]),
            None => build("golang", None, &p.name, &p.version, vec![]),
        },
        PackageKind::Rust => build("cargo", None, &p.name, &p.version, vec![]),
        PackageKind::Maven => match p.name.split_once(':') {
            Some((group, artifact)) => build("maven", Some(group), artifact, &p.version, vec![]),
            None => build("maven", None, &p.name, &p.version, vec![]),
        },
        PackageKind::Gem => build("gem", None, &p.name, &p.version, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(kind: PackageKind, name: &str, version: &str, arch: Option<&str>) -> Package {
        let mut p = Package::new(kind, name, version, "x");
        p.arch = arch.map(str::to_string);
        p
    }

    #[test]
    fn purls() {
        let debian = OsRelease { id: Some("debian".into()), version_id: Some("12".into()), ..OsRelease::default() };
        let rocky = OsRelease { id: Some("rocky".into()), version_id: Some("9.3".into()), ..OsRelease::default() };
        let cases = [
            (
                pkg(PackageKind::Deb, "curl", "7.88.1-10", Some("amd64")),
                Some(&debian),
                "pkg:deb/debian/curl@7.88.1-10?arch=amd64&distro=debian-12",
            ),
            (
                pkg(PackageKind::Deb, "login", "1:4.13+dfsg1-1+b1", Some("amd64")),
                Some(&debian),
                "pkg:deb/debian/login@1%3A4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12",
            ),
            (
                pkg(PackageKind::Rpm, "bash", "2:5.1.8-9.el9", Some("x86_64")),
                Some(&rocky),
                "pkg:rpm/rocky/bash@5.1.8-9.el9?arch=x86_64&distro=rocky-9.3&epoch=2",
            ),
            (pkg(PackageKind::Npm, "@babel/core", "7.23.2", None), None, "pkg:npm/%40babel/core@7.23.2"),
            (
                pkg(PackageKind::Go, "github.com/google/uuid", "v1.6.0", None),
                None,
                "pkg:golang/github.com/google/uuid@v1.6.0",
            ),
            (
                pkg(PackageKind::Maven, "org.apache.logging.log4j:log4j-core", "2.14.1", None),
                None,
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
            ),
            (pkg(PackageKind::Python, "requests", "2.31.0", None), None, "pkg:pypi/requests@2.31.0"),
            (pkg(PackageKind::Rust, "serde", "1.0.190", None), None, "pkg:cargo/serde@1.0.190"),
            (pkg(PackageKind::Gem, "rack", "3.0.8", None), None, "pkg:gem/rack@3.0.8"),
            (
                pkg(PackageKind::Apk, "musl", "1.2.4-r2", Some("x86_64")),
                None,
                "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
            ),
        ];
        for (p, os, want) in cases {
            assert_eq!(for_package(&p, os), want);
        }
    }
}
