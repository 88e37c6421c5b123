//! Maven order checked against `org.apache.maven.artifact.versioning.ComparableVersion` from the maven-artifact jar
//! Debian's `maven` package ships, run once over all pairs.

mod support;

use std::process::Command;

use entrepot_vuln::version::maven::Version;
use support::{Rng, assert_agree, run};

const JAR: &str = "/usr/share/maven/lib/maven-artifact-3.x.jar";
const ALPHABET: &[char] = &['0', '1', '9', '.', '-', 'a', 'b', 'm', 'x', 'R', 'C'];

fn generate(r: &mut Rng) -> String {
    let mut v = r.small();
    for _ in 0..r.below(5) {
        let sep = *r.pick(&[".", ".", "-", "-", ""]);
        v.push_str(sep);
        match r.below(3) {
            0 | 1 => v.push_str(&r.small()),
            _ => {
                let q = *r.pick(&[
                    "alpha",
                    "beta",
                    "milestone",
                    "rc",
                    "cr",
                    "snapshot",
                    "SNAPSHOT",
                    "ga",
                    "final",
                    "Final",
                    "release",
                    "sp",
                    "a",
                    "b",
                    "m",
                    "RC",
                    "foo",
                    "jre",
                    "M",
                    "",
                ]);
                v.push_str(q)
            }
        }
    }
    v
}

#[test]
fn maven_order_matches_comparable_version() {
    if support::tool("java").is_none() || !std::path::Path::new(JAR).is_file() {
        return support::skip("maven_order_matches_comparable_version", "java or Debian's maven not installed");
    }
    let mut r = Rng::new(0x3A7E);
    let mut pairs: Vec<(String, String)> = [
        ("1.0-alpha", "1.0"),
        ("1.0-alpha-1", "1.0-alpha-2"),
        ("1.0-beta", "1.0-milestone"),
        ("1.0-rc1", "1.0-cr1"),
        ("1.0-SNAPSHOT", "1.0"),
        ("1.0", "1.0-ga"),
        ("1.0", "1.0-sp"),
        ("1.0-sp", "1.0-foo"),
        ("1.0-foo", "1.0-1"),
        ("1.0-1", "1.0.1"),
        ("1.0.0", "1"),
        ("1.0.0.RC1", "1.0.0-RC2"),
        ("1a1", "1-alpha-1"),
        ("1.0.Final", "1.0"),
        ("3.11.1.Final", "4.0.0"),
        ("2.0.0.M1", "2.0.0"),
        ("1-0", "1"),
        ("1..1", "1.0.1"),
        ("12345678901234567890", "12345678901234567891"),
        ("1234567890", "999999999"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    while pairs.len() < 3000 {
        let a = generate(&mut r);
        let b = if r.chance(40) { r.mutate(&a, ALPHABET) } else { generate(&mut r) };
        if !a.is_empty() && !b.is_empty() && !a.starts_with('-') && !b.starts_with('-') {
            pairs.push((a, b));
        }
    }
    let mut cmd = Command::new("java");
    cmd.args(["-cp", JAR, "org.apache.maven.artifact.versioning.ComparableVersion"]);
    for (a, b) in &pairs {
        cmd.arg(a).arg(b);
    }
    let out = run(&mut cmd, "");
    // ComparableVersion's main compares each argument with the next; the pairs are the even-numbered comparisons.
    let comparisons: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("   "))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        .collect();
    assert_eq!(comparisons.len(), pairs.len() * 2 - 1);
    let mut mismatches = Vec::new();
    for (k, (a, b)) in pairs.iter().enumerate() {
        let want = match comparisons[2 * k].as_str() {
            "==" => "=",
            other => other,
        };
        let mine = Version::parse(a).unwrap().cmp(&Version::parse(b).unwrap());
        if support::ordering(want) != Some(mine) {
            mismatches.push(format!("{a:?} vs {b:?}: maven {want}, mine {mine:?}"));
        }
    }
    assert_agree("maven order", pairs.len(), &mismatches);
}
