//! Path matchers: which tar entries are files of interest, and of what kind. Pure string work on normalised
//! paths (relative, `/`-separated, no `.`/`..`); must never read data or decide anything from file contents.

/// What a file of interest holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    OsRelease,
    DpkgStatus,
    DpkgStatusD,
    ApkInstalled,
    RpmSqlite,
    RpmBdb,
    RpmNdb,
    PythonMetadata,
    NpmPackageJson,
    NpmLock,
    Gemspec,
    JavaArchive,
}

/// Normalises a tar entry name: drops a leading `/` or `./`, `.` components and a trailing `/`.
/// Returns `None` for names that climb out of the root (`..`) or are empty.
pub fn normalise(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// Resolves a symlink target against the directory of `link` into a normalised path.
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(link.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// The kind of file at `path` (normalised), if it is one of interest by its path alone.
pub fn classify(path: &str) -> Option<FileKind> {
    match path {
        "etc/os-release" | "usr/lib/os-release" => return Some(FileKind::OsRelease),
        "var/lib/dpkg/status" => return Some(FileKind::DpkgStatus),
        "lib/apk/db/installed" => return Some(FileKind::ApkInstalled),
        "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite" => return Some(FileKind::RpmSqlite),
        "var/lib/rpm/Packages" | "usr/lib/sysimage/rpm/Packages" => return Some(FileKind::RpmBdb),
        "var/lib/rpm/Packages.db" | "usr/lib/sysimage/rpm/Packages.db" => return Some(FileKind::RpmNdb),
        _ => {}
    }
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    };
    if dir == "var/lib/dpkg/status.d" {
        // distroless writes `<pkg>` stanzas beside `<pkg>.md5sums` lists.
        return (!name.ends_with(".md5sums") && !name.starts_with('.')).then_some(FileKind::DpkgStatusD);
    }
    if (name == "METADATA" && dir.ends_with(".dist-info")) || (name == "PKG-INFO" && dir.ends_with(".egg-info")) {
        return Some(FileKind::PythonMetadata);
    }
    // distutils-era installs write the egg-info as a single file.
    if name.ends_with(".egg-info") && name.len() > ".egg-info".len() && is_python_lib_dir(dir) {
        return Some(FileKind::PythonMetadata);
    }
    if name == "package.json" && is_node_module_dir(dir) {
        return Some(FileKind::NpmPackageJson);
    }
    if name == "package-lock.json" && !dir.split('/').any(|p| p == "node_modules") {
        return Some(FileKind::NpmLock);
    }
    if name.ends_with(".gemspec") && (dir == "specifications" || dir.ends_with("/specifications")) {
        return Some(FileKind::Gemspec);
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".jar") || lower.ends_with(".war") || lower.ends_with(".ear") {
        return Some(FileKind::JavaArchive);
    }
    None
}

fn is_python_lib_dir(dir: &str) -> bool {
    let last = dir.rsplit('/').next().unwrap_or(dir);
    last == "site-packages" || last == "dist-packages"
}

/// `dir` is `.../node_modules/<name>` or `.../node_modules/@scope/<name>`.
fn is_node_module_dir(dir: &str) -> bool {
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        [.., "node_modules", name] => !name.starts_with('@') && !name.starts_with('.'),
        [.., "node_modules", scope, name] => scope.starts_with('@') && !name.starts_with('.'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_tar_names() {
        assert_eq!(normalise("./etc/os-release").as_deref(), Some("etc/os-release"));
        assert_eq!(normalise("/usr//lib/./x/").as_deref(), Some("usr/lib/x"));
        assert_eq!(normalise("./"), None);
        assert_eq!(normalise("a/../../etc/passwd"), None);
    }

    #[test]
    fn resolves_links() {
        assert_eq!(resolve_link("etc/os-release", "../usr/lib/os-release").as_deref(), Some("usr/lib/os-release"));
        assert_eq!(resolve_link("etc/os-release", "/usr/lib/os-release").as_deref(), Some("usr/lib/os-release"));
        assert_eq!(resolve_link("a/b", "c").as_deref(), Some("a/c"));
    }

    #[test]
    fn classifies() {
        use FileKind::*;
        let cases = [
            ("etc/os-release", Some(OsRelease)),
            ("var/lib/dpkg/status", Some(DpkgStatus)),
            ("var/lib/dpkg/status-old", None),
            ("var/lib/dpkg/status.d/base", Some(DpkgStatusD)),
            ("var/lib/dpkg/status.d/base.md5sums", None),
            ("lib/apk/db/installed", Some(ApkInstalled)),
            ("var/lib/rpm/rpmdb.sqlite", Some(RpmSqlite)),
            ("var/lib/rpm/Packages", Some(RpmBdb)),
            ("usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA", Some(PythonMetadata)),
            ("usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO", Some(PythonMetadata)),
            ("usr/lib/python3/dist-packages/six-1.16.0.egg-info", Some(PythonMetadata)),
            ("app/node_modules/lodash/package.json", Some(NpmPackageJson)),
            ("app/node_modules/@babel/core/package.json", Some(NpmPackageJson)),
            ("app/node_modules/lodash/fp/package.json", None),
            ("app/node_modules/a/node_modules/b/package.json", Some(NpmPackageJson)),
            ("app/package.json", None),
            ("app/package-lock.json", Some(NpmLock)),
            ("app/node_modules/x/package-lock.json", None),
            ("usr/local/bundle/specifications/rack-3.0.8.gemspec", Some(Gemspec)),
            ("usr/local/bundle/gems/rack-3.0.8/rack.gemspec", None),
            ("opt/app/app.jar", Some(JavaArchive)),
            ("opt/app/app.WAR", Some(JavaArchive)),
            ("usr/bin/ls", None),
        ];
        for (path, want) in cases {
            assert_eq!(classify(path), want, "{path}");
        }
    }
}
