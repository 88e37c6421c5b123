//! Debian order checked against `dpkg --compare-versions` on random and curated pairs, and parse errors against
//! dpkg's own refusals.

mod support;

use std::cmp::Ordering;
use std::process::Command;

use entrepot_vuln::version::dpkg::Version;
use support::{Rng, assert_agree, run};

const ALPHABET: &[char] = &['0', '1', '2', '9', 'a', 'b', 'z', 'A', 'Z', '.', '+', '~', '-', ':'];

fn part(r: &mut Rng, upstream: bool) -> String {
    let mut s = String::new();
    if upstream {
        s.push_str(&r.small());
    }
    for _ in 0..r.below(5) {
        match r.below(6) {
            0 | 1 => s.push_str(&r.small()),
            2 => {
                let w = *r.pick(&["a", "b", "rc", "Z", "dfsg", "deb", "ubuntu", "git"]);
                s.push_str(w)
            }
            3 => {
                let c = *r.pick(&['.', '.', '+', '~']);
                s.push(c)
            }
            4 => s.push_str(&r.digits(3)),
            _ => {
                let c = *r.pick(&['~', '.']);
                s.push(c)
            }
        }
    }
    if s.is_empty() { "0".into() } else { s }
}

fn generate(r: &mut Rng) -> String {
    let mut v = String::new();
    if r.chance(15) {
        v.push_str(&format!("{}:", r.below(3)));
    }
    let upstream_digit = !r.chance(3);
    v.push_str(&part(r, upstream_digit));
    if r.chance(50) {
        v.push('-');
        v.push_str(&part(r, false));
    }
    v
}

/// One bash process runs dpkg for every pair: "<", "=", ">" or "E<rc>" per line.
fn dpkg_oracle(pairs: &[(String, String)]) -> Vec<String> {
    let script = r#"while IFS=$'\t' read -r a b; do
  if dpkg --compare-versions -- "$a" lt "$b" 2>/dev/null; then echo '<'
  else rc=$?
    if [ "$rc" -ne 1 ]; then echo "E$rc"; continue; fi
    if dpkg --compare-versions -- "$a" eq "$b" 2>/dev/null; then echo '='; else echo '>'; fi
  fi
done"#;
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run(Command::new("bash").arg("-c").arg(script), &input);
    out.lines().map(str::to_owned).collect()
}

#[test]
fn dpkg_order_matches_dpkg_compare_versions() {
    if support::tool("dpkg").is_none() {
        return support::skip("dpkg_order_matches_dpkg_compare_versions", "dpkg not found");
    }
    let mut r = Rng::new(0xDEB1A2);
    let mut pairs: Vec<(String, String)> = [
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0+b1"),
        ("1a", "1a0"),
        ("1.0~~a", "1.0~"),
        ("2:1.0", "1:9.9"),
        ("0:1.0-1", "1.0-1"),
        ("1.0-1", "1.0-1~bpo12+1"),
        ("1.2.3-4+deb12u1", "1.2.3-4+deb12u2"),
        ("1.02", "1.2"),
        ("1.0a", "1.0+"),
        ("1.0.", "1.0"),
        ("a1", "1"),
        ("1.0-0", "1.0"),
        ("1:2:3-4", "1:2:3"),
        ("3.0.11-1~deb12u2", "3.0.11-1"),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    while pairs.len() < 2500 {
        let a = generate(&mut r);
        let b = if r.chance(40) { r.mutate(&a, ALPHABET) } else { generate(&mut r) };
        if Version::parse(&a).is_ok() && Version::parse(&b).is_ok() {
            pairs.push((a, b));
        }
    }
    let expected = dpkg_oracle(&pairs);
    assert_eq!(expected.len(), pairs.len());
    let mut mismatches = Vec::new();
    for ((a, b), want) in pairs.iter().zip(&expected) {
        let mine = Version::parse(a).unwrap().cmp(&Version::parse(b).unwrap());
        if support::ordering(want) != Some(mine) {
            mismatches.push(format!("{a:?} vs {b:?}: dpkg {want}, mine {mine:?}"));
        }
    }
    assert_agree("dpkg order", pairs.len(), &mismatches);
}

#[test]
fn dpkg_refuses_what_dpkg_refuses() {
    if support::tool("dpkg").is_none() {
        return support::skip("dpkg_refuses_what_dpkg_refuses", "dpkg not found");
    }
    let mut r = Rng::new(7);
    let alphabet = ['0', '1', 'a', ':', '-', '~', '.', ' ', '+', '_', 'x', '9'];
    let mut inputs: Vec<String> =
        ["1 0", ":1", "a:1", "1:", "1.0-", "-1", "-1:1.0", "1-", "99999999999:1", "0:", "1::1", "+1:2", "1.0_1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    while inputs.len() < 600 {
        let n = 1 + r.below(6);
        let s: String = (0..n).map(|_| *r.pick(&alphabet)).collect();
        // dpkg --compare-versions treats an empty or all-blank argument as the blank version, not an error.
        if !s.trim().is_empty() && !s.starts_with(' ') && !s.ends_with(' ') {
            inputs.push(s);
        }
    }
    let pairs: Vec<(String, String)> = inputs.iter().map(|s| (s.clone(), s.clone())).collect();
    let out = dpkg_oracle(&pairs);
    let mut mismatches = Vec::new();
    for (s, res) in inputs.iter().zip(&out) {
        let dpkg_ok = !res.starts_with('E');
        let mine_ok = Version::parse(s).is_ok();
        if dpkg_ok != mine_ok {
            mismatches.push(format!("{s:?}: dpkg {res}, mine {:?}", Version::parse(s).err()));
        }
        if dpkg_ok && mine_ok {
            assert_eq!(support::ordering(res), Some(Ordering::Equal), "{s:?} equals itself");
        }
    }
    assert_agree("dpkg syntax", inputs.len(), &mismatches);
}
