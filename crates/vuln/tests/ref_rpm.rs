//! RPM order checked against librpm through python3-rpm: the EVR split against `rpm.ver`, the order against
//! `rpm.labelCompare`, on random and curated pairs.

mod support;

use std::process::Command;

use entrepot_vuln::version::rpm::Evr;
use support::{Rng, assert_agree, run};

const PY: &str = "/usr/bin/python3";
const ALPHABET: &[char] = &['0', '1', '9', 'a', 'b', 'z', 'A', '.', '_', '~', '^', '+'];

fn segment(r: &mut Rng) -> String {
    let mut s = String::new();
    for i in 0..1 + r.below(4) {
        if i > 0 || r.chance(10) {
            let sep = *r.pick(&[".", ".", ".", "_", "+", "~", "^", ".."]);
            s.push_str(sep);
        }
        match r.below(5) {
            0 | 1 => s.push_str(&r.small()),
            2 => s.push_str(&r.digits(3)),
            3 => {
                let w = *r.pick(&["a", "b", "rc", "el9", "fc39", "git", "Z", "beta"]);
                s.push_str(w)
            }
            _ => {
                let n = r.small();
                s.push_str(&format!("{n}a"))
            }
        }
    }
    s
}

fn generate(r: &mut Rng) -> String {
    let mut v = String::new();
    if r.chance(20) {
        v.push_str(&format!("{}:", r.below(3)));
    }
    v.push_str(&segment(r));
    if r.chance(60) {
        v.push('-');
        v.push_str(&segment(r));
    }
    v
}

#[test]
fn rpm_order_matches_librpm() {
    let have_rpm = support::tool(PY).is_some()
        && Command::new(PY).args(["-c", "import rpm"]).status().map(|s| s.success()).unwrap_or(false);
    if !have_rpm {
        return support::skip("rpm_order_matches_librpm", "python3-rpm (librpm bindings) not installed");
    }
    let script = r#"
import sys, rpm
def show(x):
    return "~NONE~" if x is None else x
for line in sys.stdin:
    a, b = line.rstrip("\n").split("\t")
    va, vb = rpm.ver(a), rpm.ver(b)
    ta, tb = (va.e, va.v, va.r), (vb.e, vb.v, vb.r)
    print("\t".join([str(rpm.labelCompare(ta, tb))] + [show(x) for x in ta]))
"#;
    let mut r = Rng::new(0x5EED_0F23);
    let mut pairs: Vec<(String, String)> = [
        ("1.0~rc1-1", "1.0-1"),
        ("1.0^git1-1", "1.0-1"),
        ("1.0^git1-1", "1.0.1-1"),
        ("1:1.0-1", "2.0-1"),
        ("0:1.0-1", "1.0-1"),
        ("1.0", "1.0-1"),
        ("1.010-1", "1.9-1"),
        ("1_0-1", "1.0-1"),
        ("1.0a-1", "1.0-1"),
        ("2.4.57-5.el9", "2.4.57-11.el9_4.1"),
        ("1.1.1k-12.el8_9", "1.1.1k-9.el8_7"),
        ("a:1.0", "1.0"),
        ("1.0-", "1.0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    while pairs.len() < 4000 {
        let a = generate(&mut r);
        let b = if r.chance(40) { r.mutate(&a, ALPHABET) } else { generate(&mut r) };
        if Evr::parse(&a).is_ok() && Evr::parse(&b).is_ok() && !a.contains('\t') {
            pairs.push((a, b));
        }
    }
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run(Command::new(PY).arg("-c").arg(script), &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pairs.len());
    let mut mismatches = Vec::new();
    for ((a, b), line) in pairs.iter().zip(lines) {
        let f: Vec<&str> = line.split('\t').collect();
        let opt = |s: &str| if s == "~NONE~" { None } else { Some(s.to_owned()) };
        let ea = Evr::parse(a).unwrap();
        let split = (ea.epoch().map(str::to_owned), ea.version().to_owned(), ea.release().map(str::to_owned));
        let want_split = (opt(f[1]), f[2].to_owned(), opt(f[3]));
        if split != want_split {
            mismatches.push(format!("split {a:?}: rpm.ver {want_split:?}, mine {split:?}"));
        }
        let mine = ea.cmp(&Evr::parse(b).unwrap());
        if support::ordering(f[0]) != Some(mine) {
            mismatches.push(format!("{a:?} vs {b:?}: labelCompare {}, mine {mine:?}", f[0]));
        }
    }
    assert_agree("rpm order", pairs.len(), &mismatches);
}
