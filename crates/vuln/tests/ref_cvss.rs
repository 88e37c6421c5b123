//! CVSS v3.0/v3.1 base scores and v4.0 scores checked against the Python `cvss` library (Red Hat's reference
//! implementation, pinned in `.ci/install-clients`) on thousands of random vectors.

mod support;

use std::process::Command;

use entrepot_vuln::cvss;
use support::{Rng, assert_agree, run};

fn v3(r: &mut Rng) -> String {
    let ver = *r.pick(&["3.0", "3.1"]);
    let mut v = format!("CVSS:{ver}");
    for (k, vals) in [
        ("AV", &["N", "A", "L", "P"][..]),
        ("AC", &["L", "H"][..]),
        ("PR", &["N", "L", "H"][..]),
        ("UI", &["N", "R"][..]),
        ("S", &["U", "C"][..]),
        ("C", &["H", "L", "N"][..]),
        ("I", &["H", "L", "N"][..]),
        ("A", &["H", "L", "N"][..]),
    ] {
        let val = *r.pick(vals);
        v.push_str(&format!("/{k}:{val}"));
    }
    if r.chance(10) {
        let e = *r.pick(&["X", "U", "P", "F", "H"]);
        v.push_str(&format!("/E:{e}"));
    }
    v
}

fn v4(r: &mut Rng) -> String {
    let mut v = "CVSS:4.0".to_owned();
    let base: &[(&str, &[&str])] = &[
        ("AV", &["N", "A", "L", "P"]),
        ("AC", &["L", "H"]),
        ("AT", &["N", "P"]),
        ("PR", &["N", "L", "H"]),
        ("UI", &["N", "P", "A"]),
        ("VC", &["H", "L", "N"]),
        ("VI", &["H", "L", "N"]),
        ("VA", &["H", "L", "N"]),
        ("SC", &["H", "L", "N"]),
        ("SI", &["H", "L", "N"]),
        ("SA", &["H", "L", "N"]),
    ];
    for (k, vals) in base {
        let val = *r.pick(vals);
        v.push_str(&format!("/{k}:{val}"));
    }
    let optional: &[(&str, &[&str])] = &[
        ("E", &["A", "P", "U"]),
        ("CR", &["H", "M", "L"]),
        ("IR", &["H", "M", "L"]),
        ("AR", &["H", "M", "L"]),
        ("MAV", &["N", "A", "L", "P"]),
        ("MPR", &["N", "L", "H"]),
        ("MVC", &["H", "L", "N"]),
        ("MSI", &["S", "H", "L", "N"]),
        ("MSA", &["S", "H", "L", "N"]),
    ];
    for (k, vals) in optional {
        if r.chance(20) {
            let val = *r.pick(vals);
            v.push_str(&format!("/{k}:{val}"));
        }
    }
    v
}

#[test]
fn cvss_scores_match_python_cvss() {
    let Some(py) = support::venv_python() else {
        return support::skip("cvss_scores_match_python_cvss", "no .venv with the pinned `cvss`");
    };
    if !Command::new(&py).args(["-c", "import cvss"]).status().map(|s| s.success()).unwrap_or(false) {
        return support::skip("cvss_scores_match_python_cvss", "`cvss` missing from .venv");
    }
    let script = r#"
import sys
from cvss import CVSS3, CVSS4
for line in sys.stdin:
    v = line.strip()
    s = CVSS4(v).base_score if v.startswith("CVSS:4.0/") else CVSS3(v).scores()[0]
    print(format(float(s), ".1f"))
"#;
    let mut r = Rng::new(0xC555);
    let mut vectors: Vec<String> = Vec::new();
    while vectors.len() < 4000 {
        let v = if r.chance(50) { v3(&mut r) } else { v4(&mut r) };
        vectors.push(v);
    }
    let input: String = vectors.iter().map(|v| format!("{v}\n")).collect();
    let out = run(Command::new(&py).arg("-c").arg(script), &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), vectors.len());
    let mut mismatches = Vec::new();
    for (v, want) in vectors.iter().zip(lines) {
        let mine = cvss::score(v).map(|s| format!("{s:.1}"));
        if mine.as_deref() != Ok(want) {
            mismatches.push(format!("{v}: cvss {want}, mine {mine:?}"));
        }
    }
    assert_agree("cvss scores", vectors.len(), &mismatches);
}
