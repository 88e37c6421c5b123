//! SemVer checked against node-semver (Debian's `node-semver`, run by `node`) for npm, and against the test table
//! of `golang.org/x/mod/semver` for Go's flavour.

mod support;

use std::cmp::Ordering;
use std::process::Command;

use entrepot_vuln::version::semver::{Flavor, Version};
use support::{Rng, assert_agree, run};

const ALPHABET: &[char] = &['0', '1', '9', '.', '-', '+', 'a', 'b', 'z', 'A', 'v', ' '];

fn ident(r: &mut Rng) -> String {
    match r.below(4) {
        0 | 1 => r.small(),
        2 => (*r.pick(&["alpha", "beta", "rc", "x-y", "a1", "0a", "Z", "-"])).to_owned(),
        _ => r.digits(3),
    }
}

fn generate(r: &mut Rng) -> String {
    let mut v = String::new();
    if r.chance(5) {
        v.push('v');
    }
    v.push_str(&format!("{}.{}.{}", r.small(), r.small(), r.small()));
    if r.chance(50) {
        v.push('-');
        for i in 0..1 + r.below(3) {
            if i > 0 {
                v.push('.');
            }
            v.push_str(&ident(r));
        }
    }
    if r.chance(15) {
        v.push('+');
        v.push_str(&ident(r));
    }
    v
}

#[test]
fn npm_semver_matches_node_semver() {
    let node_path = "/usr/share/nodejs";
    let have = support::tool("node").is_some()
        && Command::new("node")
            .env("NODE_PATH", node_path)
            .args(["-e", "require('semver')"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !have {
        return support::skip("npm_semver_matches_node_semver", "node or Debian's node-semver not installed");
    }
    let script = r#"
const semver = require('semver');
const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(l => l.length > 0);
const out = [];
for (const line of lines) {
  const [a, b] = line.split('\t');
  const va = semver.valid(a) !== null, vb = semver.valid(b) !== null;
  out.push([va && vb ? String(semver.compare(a, b)) : 'E', va ? 'ok' : 'E', vb ? 'ok' : 'E'].join('\t'));
}
process.stdout.write(out.join('\n') + '\n');
"#;
    let mut r = Rng::new(0x5E5E);
    let mut pairs: Vec<(String, String)> = [
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0+build", "1.0.0"),
        ("v1.2.3", "1.2.3"),
        (" 1.2.3 ", "1.2.3"),
        ("01.2.3", "1.2.3"),
        ("1.2.3-01", "1.2.3"),
        ("=1.2.3", "1.2.3"),
        ("1.2", "1.2.0"),
        ("1.2.3-a-b", "1.2.3-a"),
        ("9007199254740991.0.0", "9007199254740992.0.0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    while pairs.len() < 4000 {
        let a = generate(&mut r);
        let b = if r.chance(40) { r.mutate(&a, ALPHABET) } else { generate(&mut r) };
        pairs.push((a, b));
    }
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run(Command::new("node").env("NODE_PATH", node_path).arg("-e").arg(script), &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pairs.len());
    let mut mismatches = Vec::new();
    for ((a, b), line) in pairs.iter().zip(lines) {
        let f: Vec<&str> = line.split('\t').collect();
        let (pa, pb) = (Version::parse(a, Flavor::Npm), Version::parse(b, Flavor::Npm));
        for (s, p, want) in [(a, &pa, f[1]), (b, &pb, f[2])] {
            if p.is_ok() != (want == "ok") {
                mismatches.push(format!("{s:?}: node-semver valid={want}, mine {:?}", p.as_ref().err()));
            }
        }
        if let (Ok(x), Ok(y)) = (&pa, &pb) {
            let mine = x.cmp(y);
            if support::ordering(f[0]) != Some(mine) {
                mismatches.push(format!("{a:?} vs {b:?}: node-semver {}, mine {mine:?}", f[0]));
            }
        }
    }
    assert_agree("npm semver", pairs.len(), &mismatches);
}

/// The table of `golang.org/x/mod/semver`'s tests: invalid inputs, then valid ones in ascending order, with the
/// canonical form deciding equality.
const GO_TABLE: &[(&str, &str)] = &[
    ("bad", ""),
    ("v1-alpha.beta.gamma", ""),
    ("v1-pre", ""),
    ("v1+meta", ""),
    ("v1-pre+meta", ""),
    ("v1.2-pre", ""),
    ("v1.2+meta", ""),
    ("v1.2-pre+meta", ""),
    ("v1.0.0-alpha", "v1.0.0-alpha"),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
    ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
    ("v1.0.0-beta", "v1.0.0-beta"),
    ("v1.0.0-beta.2", "v1.0.0-beta.2"),
    ("v1.0.0-beta.11", "v1.0.0-beta.11"),
    ("v1.0.0-rc.1", "v1.0.0-rc.1"),
    ("v1", "v1.0.0"),
    ("v1.0", "v1.0.0"),
    ("v1.0.0", "v1.0.0"),
    ("v1.2", "v1.2.0"),
    ("v1.2.0", "v1.2.0"),
    ("v1.2.3-456", "v1.2.3-456"),
    ("v1.2.3-456.789", "v1.2.3-456.789"),
    ("v1.2.3-456-789", "v1.2.3-456-789"),
    ("v1.2.3-456a", "v1.2.3-456a"),
    ("v1.2.3-pre", "v1.2.3-pre"),
    ("v1.2.3-pre+meta", "v1.2.3-pre"),
    ("v1.2.3-pre.1", "v1.2.3-pre.1"),
    ("v1.2.3-zzz", "v1.2.3-zzz"),
    ("v1.2.3", "v1.2.3"),
    ("v1.2.3+meta", "v1.2.3"),
    ("v1.2.3+meta-pre", "v1.2.3"),
    ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
];

#[test]
fn go_semver_matches_x_mod_semver_table() {
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (i, (a, ca)) in GO_TABLE.iter().enumerate() {
        let pa = Version::parse(a, Flavor::Go);
        let valid = !ca.is_empty();
        if pa.is_ok() != valid {
            mismatches.push(format!("{a:?}: valid should be {}", !ca.is_empty()));
            continue;
        }
        let Ok(pa) = pa else { continue };
        for (j, (b, cb)) in GO_TABLE.iter().enumerate() {
            let Ok(pb) = Version::parse(b, Flavor::Go) else { continue };
            let want = if ca == cb { Ordering::Equal } else { i.cmp(&j) };
            checked += 1;
            if pa.cmp(&pb) != want {
                mismatches.push(format!("{a:?} vs {b:?}: want {want:?}"));
            }
        }
    }
    for (a, b, want) in
        [("v1", "v1", Ordering::Equal), ("v2", "v1", Ordering::Greater), ("v1.19", "v1.2", Ordering::Greater)]
    {
        checked += 1;
        if Version::parse(a, Flavor::Go).unwrap().cmp(&Version::parse(b, Flavor::Go).unwrap()) != want {
            mismatches.push(format!("{a:?} vs {b:?}: want {want:?}"));
        }
    }
    assert_agree("go semver", checked, &mismatches);
}
