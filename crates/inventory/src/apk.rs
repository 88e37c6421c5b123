//! Alpine `lib/apk/db/installed` parser. The format (apk-tools' "installed database", documented at
//! wiki.alpinelinux.org/wiki/Apk_spec) is one block per package separated by blank lines, each line a one-letter
//! key, a colon and a value: `P` name, `V` version, `A` architecture, `o` origin (source package), plus file lists
//! (`F`, `R`, `a`, `Z`) that are ignored. Must never report a block without both name and version.

use crate::{Package, PackageKind};

pub fn parse_installed(text: &str, path: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let (mut name, mut version, mut arch, mut origin) = (None, None, None, None);
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(n), Some(v)) = (name.take(), version.take()) {
                let mut package = Package::new(PackageKind::Apk, n, v, path);
                package.arch = arch.take();
                package.source_name = Some(origin.take().unwrap_or_else(|| package.name.clone()));
                package.source_version = Some(package.version.clone());
                packages.push(package);
            }
            (name, version, arch, origin) = (None, None, None, None);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_string();
        match key {
            "P" => name = Some(value),
            "V" => version = Some(value),
            "A" => arch = Some(value),
            "o" => origin = Some(value),
            _ => {}
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two blocks in the shape apk-tools 2.14 writes (alpine:3.19), checksums shortened.
    const INSTALLED: &str = "C:Q1Ox9hN6Ehf4f1XRnK9R7Bc8QHsHc=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407904
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705083215
c:fd4bc16fd5a8dc3fbb3d6b3fe3b6a4be1d5e8dc3
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1bm2PqjAgqPHvUqTJo5Cl0w0xBcQ=
R:libc.musl-x86_64.so.1

C:Q1QKB5bkkLp7bVqd5KvXSCeESvP8c=
P:libcrypto3
V:3.1.4-r5
A:x86_64
o:openssl
F:usr/lib
R:libcrypto.so.3
";

    #[test]
    fn two_packages() {
        let packages = parse_installed(INSTALLED, "lib/apk/db/installed");
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].name, "musl");
        assert_eq!(packages[0].version, "1.2.4_git20230717-r4");
        assert_eq!(packages[0].arch.as_deref(), Some("x86_64"));
        assert_eq!(packages[1].name, "libcrypto3");
        assert_eq!(packages[1].source_name.as_deref(), Some("openssl"));
        assert_eq!(packages[1].source_version.as_deref(), Some("3.1.4-r5"));
    }
}
