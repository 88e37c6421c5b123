//! npm packages: an installed module's own `package.json` (name, version) and `package-lock.json`
//! (lockfileVersion 2/3: the `packages` map keyed by `node_modules/...` paths; version 1: the nested
//! `dependencies` map). Must never execute or resolve anything; links (`"link": true`) are not packages.

use serde_json::Value;

use crate::{Package, PackageKind};

/// One lock entry, with its key (`node_modules/a/node_modules/b`) so installed copies can be told apart.
#[derive(Debug, Clone)]
pub struct LockEntry {
    pub key: String,
    pub package: Package,
}

pub fn parse_package_json(data: &[u8], path: &str) -> Option<Package> {
    let value: Value = serde_json::from_slice(data).ok()?;
    let name = value.get("name")?.as_str()?;
    let version = value.get("version")?.as_str()?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    Some(Package::new(PackageKind::Npm, name, version, path))
}

/// The name a lock key installs: the part after the last `node_modules/`.
fn name_from_key(key: &str) -> Option<&str> {
    let name = match key.rfind("node_modules/") {
        Some(at) => &key[at + "node_modules/".len()..],
        None => return None,
    };
    (!name.is_empty()).then_some(name)
}

pub fn parse_lock(data: &[u8], path: &str) -> Result<Vec<LockEntry>, String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let mut entries = Vec::new();
    if let Some(packages) = value.get("packages").and_then(Value::as_object) {
        for (key, entry) in packages {
            if key.is_empty() || entry.get("link").and_then(Value::as_bool) == Some(true) {
                continue; // the project itself, or a symlink to a workspace package
            }
            let Some(version) = entry.get("version").and_then(Value::as_str) else { continue };
            let name = entry.get("name").and_then(Value::as_str).or_else(|| name_from_key(key));
            let Some(name) = name else { continue };
            entries.push(LockEntry { key: key.clone(), package: Package::new(PackageKind::Npm, name, version, path) });
        }
    } else if let Some(deps) = value.get("dependencies").and_then(Value::as_object) {
        let mut stack: Vec<(String, &serde_json::Map<String, Value>)> = vec![(String::new(), deps)];
        while let Some((prefix, deps)) = stack.pop() {
            for (name, dep) in deps {
                let key = format!("{prefix}node_modules/{name}");
                if let Some(version) = dep.get("version").and_then(Value::as_str)
                    && !version.starts_with("file:")
                {
                    entries.push(LockEntry {
                        key: key.clone(),
                        package: Package::new(PackageKind::Npm, name.as_str(), version, path),
                    });
                }
                if let Some(nested) = dep.get("dependencies").and_then(Value::as_object) {
                    stack.push((format!("{key}/"), nested));
                }
            }
        }
    } else {
        return Err("neither `packages` nor `dependencies` in the lock file".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_json() {
        let p = parse_package_json(br#"{"name":"@babel/core","version":"7.23.2","main":"lib/index.js"}"#, "p").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("@babel/core", "7.23.2"));
        assert!(parse_package_json(br#"{"name":"x"}"#, "p").is_none());
        assert!(parse_package_json(b"{not json", "p").is_none());
    }

    #[test]
    fn lock_v3_and_v1() {
        let v3 = br#"{"name":"app","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{
            "":{"name":"app","version":"1.0.0","dependencies":{"express":"^4.18.2"}},
            "node_modules/express":{"version":"4.18.2","resolved":"r","integrity":"i"},
            "node_modules/express/node_modules/debug":{"version":"2.6.9"},
            "node_modules/@types/node":{"version":"20.8.0","dev":true},
            "node_modules/mylib":{"resolved":"libs/mylib","link":true},
            "node_modules/aliased":{"name":"real-name","version":"1.2.3"}}}"#;
        let mut got: Vec<_> = parse_lock(v3, "app/package-lock.json")
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.package.name, e.package.version))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("node_modules/@types/node".into(), "@types/node".into(), "20.8.0".into()),
                ("node_modules/aliased".into(), "real-name".into(), "1.2.3".into()),
                ("node_modules/express".into(), "express".into(), "4.18.2".into()),
                ("node_modules/express/node_modules/debug".into(), "debug".into(), "2.6.9".into()),
            ]
        );
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#;
        let mut got: Vec<_> = parse_lock(v1, "l").unwrap().into_iter().map(|e| e.key).collect();
        got.sort();
        assert_eq!(got, vec!["node_modules/a", "node_modules/a/node_modules/b"]);
        assert!(parse_lock(b"{}", "l").is_err());
    }
}
