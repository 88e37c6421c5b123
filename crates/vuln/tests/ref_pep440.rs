//! PEP 440 checked against Python's `packaging` (pinned in `.ci/install-clients`): validity, normalized form and
//! order on random and curated pairs, spelling variants included.

mod support;

use std::process::Command;

use entrepot_vuln::version::pep440::Version;
use support::{Rng, assert_agree, run};

const ALPHABET: &[char] = &['0', '1', '9', '.', '-', '_', '+', 'a', 'b', 'c', 'r', 'v', '!', 'p', 'o', 's', 't'];

const SEPARATORS: [&str; 6] = ["", "", "", ".", "-", "_"];
const PREFIXES: [&str; 3] = ["v", "V", " "];

fn sep(r: &mut Rng) -> &'static str {
    SEPARATORS[r.below(SEPARATORS.len())]
}

fn generate(r: &mut Rng) -> String {
    let mut v = String::new();
    if r.chance(5) {
        v.push_str(PREFIXES[r.below(PREFIXES.len())]);
    }
    if r.chance(10) {
        v.push_str(&format!("{}!", r.below(3)));
    }
    v.push_str(&r.small());
    for _ in 0..r.below(4) {
        v.push('.');
        v.push_str(&r.small());
    }
    if r.chance(35) {
        let s1 = sep(r);
        let label = *r.pick(&["a", "b", "rc", "c", "alpha", "beta", "pre", "preview", "A", "RC"]);
        let s2 = sep(r);
        let n = if r.chance(80) { r.small() } else { String::new() };
        v.push_str(&format!("{s1}{label}{s2}{n}"));
    }
    if r.chance(25) {
        if r.chance(30) {
            v.push_str(&format!("-{}", r.small()));
        } else {
            let s1 = sep(r);
            let label = *r.pick(&["post", "rev", "r", "POST"]);
            let s2 = sep(r);
            let n = if r.chance(80) { r.small() } else { String::new() };
            v.push_str(&format!("{s1}{label}{s2}{n}"));
        }
    }
    if r.chance(25) {
        let s1 = sep(r);
        let s2 = sep(r);
        let n = if r.chance(80) { r.small() } else { String::new() };
        v.push_str(&format!("{s1}dev{s2}{n}"));
    }
    if r.chance(15) {
        v.push('+');
        for i in 0..1 + r.below(3) {
            if i > 0 {
                let s = *r.pick(&[".", "-", "_"]);
                v.push_str(s);
            }
            let seg = if r.chance(50) { r.small() } else { (*r.pick(&["abc", "ubuntu", "Z9", "x", "0a"])).to_owned() };
            v.push_str(&seg);
        }
    }
    v
}

#[test]
fn pep440_matches_packaging() {
    let Some(py) = support::venv_python() else {
        return support::skip("pep440_matches_packaging", "no .venv with the pinned `packaging`");
    };
    if !Command::new(&py).args(["-c", "import packaging.version"]).status().map(|s| s.success()).unwrap_or(false) {
        return support::skip("pep440_matches_packaging", "`packaging` missing from .venv");
    }
    let script = r#"
import sys
from packaging.version import Version, InvalidVersion
def parse(s):
    try:
        return Version(s)
    except InvalidVersion:
        return None
for line in sys.stdin:
    a, b = line.rstrip("\n").split("\t")
    va, vb = parse(a), parse(b)
    c = "E" if va is None or vb is None else str((va > vb) - (va < vb))
    print("\t".join([c, "E" if va is None else str(va), "E" if vb is None else str(vb)]))
"#;
    let mut r = Rng::new(440);
    let mut pairs: Vec<(String, String)> = [
        ("1.0.dev0", "1.0a0"),
        ("1.0a1", "1.0a1.post1"),
        ("1.0", "1.0+local"),
        ("1.0+abc", "1.0+1"),
        ("1.0+1.a", "1.0+1"),
        ("1.0.post1.dev1", "1.0.post1"),
        ("1!0.1", "2.0"),
        ("1.0-1", "1.0.post1"),
        ("1.0c1", "1.0rc1"),
        ("v1.0", "1.0.0"),
        ("1.0a-", "1.0a0"),
        ("1.0-", "1.0"),
        ("1.0.", "1"),
        ("1.0+", "1"),
        ("01.0", "1.0"),
        ("1.0.0.0.0", "1"),
        ("2012.10", "2012.9.1"),
        ("1.0.post", "1.0.post0"),
        ("1.0-dev", "1.0.dev0"),
        ("1.0rev3", "1.0.post3"),
        ("1.0a.1", "1.0a1"),
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
    let out = run(Command::new(&py).arg("-c").arg(script), &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pairs.len());
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for ((a, b), line) in pairs.iter().zip(lines) {
        let f: Vec<&str> = line.split('\t').collect();
        let (pa, pb) = (Version::parse(a), Version::parse(b));
        for (s, p, want) in [(a, &pa, f[1]), (b, &pb, f[2])] {
            let mine = p.as_ref().map(|v| v.to_string()).unwrap_or_else(|_| "E".into());
            if mine != want {
                mismatches.push(format!("{s:?}: packaging {want:?}, mine {mine:?}"));
            }
        }
        if let (Ok(x), Ok(y)) = (&pa, &pb) {
            compared += 1;
            let mine = x.cmp(y);
            if support::ordering(f[0]) != Some(mine) {
                mismatches.push(format!("{a:?} vs {b:?}: packaging {}, mine {mine:?}", f[0]));
            }
        }
    }
    eprintln!("pep440: {compared} valid pairs ordered, {} strings checked for validity", pairs.len() * 2);
    assert_agree("pep440", pairs.len(), &mismatches);
}
