//! Alpine order checked against apk-tools' own test vectors (tests/data/apk-version.data): `apk-tools` is not
//! packaged for Debian, so its test table stands in for the binary.

mod support;

use std::cmp::Ordering;

use entrepot_vuln::version::apk;

#[test]
fn apk_order_matches_apk_tools_vectors() {
    let data = include_str!("data/apk-version.data");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in data.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "malformed vector line {line:?}");
        let want = support::ordering(f[1]).expect("operator");
        checked += 2;
        let got = apk::compare(f[0], f[2]);
        if got != want {
            mismatches.push(format!("{} {} {}: got {got:?}", f[0], f[1], f[2]));
        }
        if apk::compare(f[2], f[0]) != want.reverse() {
            mismatches.push(format!("{} {} {} (reversed)", f[0], f[1], f[2]));
        }
    }
    support::assert_agree("apk vectors", checked, &mismatches);
    assert!(checked > 1400);
    // Every vector operand is valid except the deliberately invalid ones upstream marks.
    assert!(!apk::is_valid("1.0bc") && !apk::is_valid("23_foo") && apk::is_valid("2.2.39-r1"));
    assert_eq!(apk::compare("1.0", "1.0"), Ordering::Equal);
}
