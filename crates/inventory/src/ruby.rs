//! RubyGems specifications (`specifications/<name>-<version>[-<platform>].gemspec`, written by `gem install`):
//! name and version from the `s.name = ...` / `s.version = ...` lines, else from the file name. Must never
//! evaluate Ruby.

use crate::{Package, PackageKind};

/// The first quoted string on a `<var>.<field> = ...` line, e.g. `s.name = "rack".freeze`.
fn assignment(text: &str, field: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let Some((lhs, rhs)) = line.split_once('=') else { continue };
        let lhs = lhs.trim();
        if !lhs.ends_with(&format!(".{field}")) || lhs.contains(' ') {
            continue;
        }
        let rhs = rhs.trim();
        // "x", 'x', %q{x}, Gem::Version.new("x")
        let (open, close) = if let Some(at) = rhs.find(['"', '\'']) {
            let q = rhs.as_bytes()[at] as char;
            (at + 1, rhs[at + 1..].find(q).map(|e| at + 1 + e)?)
        } else if let Some(at) = rhs.find("%q{") {
            (at + 3, rhs[at + 3..].find('}').map(|e| at + 3 + e)?)
        } else {
            continue;
        };
        let value = rhs[open..close].trim();
        if !value.is_empty() {
            return Some(value.to_string());
        }
    }
    None
}

/// `nokogiri-1.15.4-x86_64-linux` → (`nokogiri`, `1.15.4`): the version is the first `-`-part starting with a digit.
fn from_file_name(stem: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = stem.split('-').collect();
    let at = parts.iter().skip(1).position(|p| p.starts_with(|c: char| c.is_ascii_digit()))? + 1;
    Some((parts[..at].join("-"), parts[at].to_string()))
}

pub fn parse_gemspec(text: &str, path: &str) -> Option<Package> {
    let stem = path.rsplit('/').next()?.strip_suffix(".gemspec")?;
    let from_name = from_file_name(stem);
    let name = assignment(text, "name").or_else(|| from_name.as_ref().map(|(n, _)| n.clone()))?;
    let version = assignment(text, "version").or_else(|| from_name.map(|(_, v)| v))?;
    Some(Package::new(PackageKind::Gem, name, version, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_gemspec() {
        // The head of a specification `gem install` writes (RubyGems 3.4).
        let text = "# -*- encoding: utf-8 -*-\n# stub: rack 3.0.8 ruby lib\n\nGem::Specification.new do |s|\n  \
                    s.name = \"rack\".freeze\n  s.version = \"3.0.8\"\n\n  s.required_rubygems_version = \
                    Gem::Requirement.new(\">= 0\".freeze) if s.respond_to? :required_rubygems_version=\n  \
                    s.require_paths = [\"lib\".freeze]\nend\n";
        let p = parse_gemspec(text, "usr/local/bundle/specifications/rack-3.0.8.gemspec").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("rack", "3.0.8"));
        let p = parse_gemspec("", "var/lib/gems/3.1.0/specifications/nokogiri-1.15.4-x86_64-linux.gemspec").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("nokogiri", "1.15.4"));
        let p = parse_gemspec("", "specifications/net-http-0.4.1.gemspec").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("net-http", "0.4.1"));
    }
}
