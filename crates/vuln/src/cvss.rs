//! CVSS base scores from vector strings — v3.0/v3.1 (the specification's formula, with each version's round-up)
//! and v4.0 (FIRST's MacroVector lookup and interpolation) — and the qualitative [`Severity`] scale.
//!
//! Pure functions over a string; an invalid vector is a typed [`CvssError`], never a panic.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Qualitative severity. `Unknown` (no rating available) sorts lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Unknown,
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The CVSS qualitative rating of a base score (0.0 None, 0.1–3.9 Low, 4.0–6.9 Medium, 7.0–8.9 High, 9.0+
    /// Critical).
    pub fn from_score(score: f64) -> Severity {
        if score <= 0.0 {
            Severity::None
        } else if score < 4.0 {
            Severity::Low
        } else if score < 7.0 {
            Severity::Medium
        } else if score < 9.0 {
            Severity::High
        } else {
            Severity::Critical
        }
    }

    /// Reads a database's own rating word (GHSA `MODERATE`, Debian/Ubuntu `negligible`/`unimportant`, …).
    pub fn from_word(word: &str) -> Option<Severity> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "none" => Severity::None,
            "negligible" | "unimportant" | "low" => Severity::Low,
            "medium" | "moderate" => Severity::Medium,
            "high" | "important" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::None => "NONE",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = CvssError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("unknown") {
            return Ok(Severity::Unknown);
        }
        Severity::from_word(s).ok_or_else(|| CvssError::Invalid(format!("unknown severity {s:?}")))
    }
}

/// A vector string that is not a valid CVSS v3.x / v4.0 base vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CvssError {
    #[error("invalid CVSS vector: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> CvssError {
    CvssError::Invalid(msg.into())
}

/// Splits `PREFIX/K:V/K:V…` into its prefix and metrics; a repeated metric is an error.
fn metrics(vector: &str) -> Result<(&str, HashMap<&str, &str>), CvssError> {
    let mut parts = vector.trim().split('/');
    let prefix = parts.next().unwrap_or("");
    let mut map = HashMap::new();
    for p in parts {
        let (k, v) = p.split_once(':').ok_or_else(|| invalid(format!("metric {p:?} has no value")))?;
        if map.insert(k, v).is_some() {
            return Err(invalid(format!("metric {k} repeated")));
        }
    }
    Ok((prefix, map))
}

/// The CVSS v3.0 or v3.1 base score of `vector` (`CVSS:3.x/AV:…/AC:…/PR:…/UI:…/S:…/C:…/I:…/A:…`; temporal and
/// environmental metrics may follow and do not change the base score).
pub fn base_score_v3(vector: &str) -> Result<f64, CvssError> {
    let (prefix, m) = metrics(vector)?;
    let v31 = match prefix {
        "CVSS:3.1" => true,
        "CVSS:3.0" => false,
        _ => return Err(invalid(format!("not a CVSS v3 vector: {prefix:?}"))),
    };
    let get = |k: &str| m.get(k).copied().ok_or_else(|| invalid(format!("missing base metric {k}")));
    let bad = |k: &str, v: &str| invalid(format!("bad value {v:?} for {k}"));
    let scope_changed = match get("S")? {
        "U" => false,
        "C" => true,
        v => return Err(bad("S", v)),
    };
    let av = match get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        v => return Err(bad("AV", v)),
    };
    let ac = match get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        v => return Err(bad("AC", v)),
    };
    let pr = match (get("PR")?, scope_changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        (v, _) => return Err(bad("PR", v)),
    };
    let ui = match get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        v => return Err(bad("UI", v)),
    };
    let cia = |k: &str| -> Result<f64, CvssError> {
        match get(k)? {
            "H" => Ok(0.56),
            "L" => Ok(0.22),
            "N" => Ok(0.0),
            v => Err(bad(k, v)),
        }
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);
    let iss = 1.0 - ((1.0 - c) * (1.0 - i) * (1.0 - a));
    let impact = if scope_changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let raw =
        if scope_changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    Ok(if v31 { roundup_v31(raw) } else { roundup_v30(raw) })
}

/// CVSS v3.1 Appendix A round-up, exact on floating-point inputs.
fn roundup_v31(x: f64) -> f64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 { int_input as f64 / 100_000.0 } else { ((int_input / 10_000) + 1) as f64 / 10.0 }
}

/// CVSS v3.0 round-up: the smallest one-decimal number not below `x`.
fn roundup_v30(x: f64) -> f64 {
    (x * 10.0).ceil() / 10.0
}

// ---- CVSS v4.0 ------------------------------------------------------------------------------------------------

/// FIRST's MacroVector scores (EQ1..EQ6 digits → score).
const V4_LOOKUP: &[(&str, f64)] = &[
    ("000000", 10.0),
    ("000001", 9.9),
    ("000010", 9.8),
    ("000011", 9.5),
    ("000020", 9.5),
    ("000021", 9.2),
    ("000100", 10.0),
    ("000101", 9.6),
    ("000110", 9.3),
    ("000111", 8.7),
    ("000120", 9.1),
    ("000121", 8.1),
    ("000200", 9.3),
    ("000201", 9.0),
    ("000210", 8.9),
    ("000211", 8.0),
    ("000220", 8.1),
    ("000221", 6.8),
    ("001000", 9.8),
    ("001001", 9.5),
    ("001010", 9.5),
    ("001011", 9.2),
    ("001020", 9.0),
    ("001021", 8.4),
    ("001100", 9.3),
    ("001101", 9.2),
    ("001110", 8.9),
    ("001111", 8.1),
    ("001120", 8.1),
    ("001121", 6.5),
    ("001200", 8.8),
    ("001201", 8.0),
    ("001210", 7.8),
    ("001211", 7.0),
    ("001220", 6.9),
    ("001221", 4.8),
    ("002001", 9.2),
    ("002011", 8.2),
    ("002021", 7.2),
    ("002101", 7.9),
    ("002111", 6.9),
    ("002121", 5.0),
    ("002201", 6.9),
    ("002211", 5.5),
    ("002221", 2.7),
    ("010000", 9.9),
    ("010001", 9.7),
    ("010010", 9.5),
    ("010011", 9.2),
    ("010020", 9.2),
    ("010021", 8.5),
    ("010100", 9.5),
    ("010101", 9.1),
    ("010110", 9.0),
    ("010111", 8.3),
    ("010120", 8.4),
    ("010121", 7.1),
    ("010200", 9.2),
    ("010201", 8.1),
    ("010210", 8.2),
    ("010211", 7.1),
    ("010220", 7.2),
    ("010221", 5.3),
    ("011000", 9.5),
    ("011001", 9.3),
    ("011010", 9.2),
    ("011011", 8.5),
    ("011020", 8.5),
    ("011021", 7.3),
    ("011100", 9.2),
    ("011101", 8.2),
    ("011110", 8.0),
    ("011111", 7.2),
    ("011120", 7.0),
    ("011121", 5.9),
    ("011200", 8.4),
    ("011201", 7.0),
    ("011210", 7.1),
    ("011211", 5.2),
    ("011220", 5.0),
    ("011221", 3.0),
    ("012001", 8.6),
    ("012011", 7.5),
    ("012021", 5.2),
    ("012101", 7.1),
    ("012111", 5.2),
    ("012121", 2.9),
    ("012201", 6.3),
    ("012211", 2.9),
    ("012221", 1.7),
    ("100000", 9.8),
    ("100001", 9.5),
    ("100010", 9.4),
    ("100011", 8.7),
    ("100020", 9.1),
    ("100021", 8.1),
    ("100100", 9.4),
    ("100101", 8.9),
    ("100110", 8.6),
    ("100111", 7.4),
    ("100120", 7.7),
    ("100121", 6.4),
    ("100200", 8.7),
    ("100201", 7.5),
    ("100210", 7.4),
    ("100211", 6.3),
    ("100220", 6.3),
    ("100221", 4.9),
    ("101000", 9.4),
    ("101001", 8.9),
    ("101010", 8.8),
    ("101011", 7.7),
    ("101020", 7.6),
    ("101021", 6.7),
    ("101100", 8.6),
    ("101101", 7.6),
    ("101110", 7.4),
    ("101111", 5.8),
    ("101120", 5.9),
    ("101121", 5.0),
    ("101200", 7.2),
    ("101201", 5.7),
    ("101210", 5.7),
    ("101211", 5.2),
    ("101220", 5.2),
    ("101221", 2.5),
    ("102001", 8.3),
    ("102011", 7.0),
    ("102021", 5.4),
    ("102101", 6.5),
    ("102111", 5.8),
    ("102121", 2.6),
    ("102201", 5.3),
    ("102211", 2.1),
    ("102221", 1.3),
    ("110000", 9.5),
    ("110001", 9.0),
    ("110010", 8.8),
    ("110011", 7.6),
    ("110020", 7.6),
    ("110021", 7.0),
    ("110100", 9.0),
    ("110101", 7.7),
    ("110110", 7.5),
    ("110111", 6.2),
    ("110120", 6.1),
    ("110121", 5.3),
    ("110200", 7.7),
    ("110201", 6.6),
    ("110210", 6.8),
    ("110211", 5.9),
    ("110220", 5.2),
    ("110221", 3.0),
    ("111000", 8.9),
    ("111001", 7.8),
    ("111010", 7.6),
    ("111011", 6.7),
    ("111020", 6.2),
    ("111021", 5.8),
    ("111100", 7.4),
    ("111101", 5.9),
    ("111110", 5.7),
    ("111111", 5.7),
    ("111120", 4.7),
    ("111121", 2.3),
    ("111200", 6.1),
    ("111201", 5.2),
    ("111210", 5.7),
    ("111211", 2.9),
    ("111220", 2.4),
    ("111221", 1.6),
    ("112001", 7.1),
    ("112011", 5.9),
    ("112021", 3.0),
    ("112101", 5.8),
    ("112111", 2.6),
    ("112121", 1.5),
    ("112201", 2.3),
    ("112211", 1.3),
    ("112221", 0.6),
    ("200000", 9.3),
    ("200001", 8.7),
    ("200010", 8.6),
    ("200011", 7.2),
    ("200020", 7.5),
    ("200021", 5.8),
    ("200100", 8.6),
    ("200101", 7.4),
    ("200110", 7.4),
    ("200111", 6.1),
    ("200120", 5.6),
    ("200121", 3.4),
    ("200200", 7.0),
    ("200201", 5.4),
    ("200210", 5.2),
    ("200211", 4.0),
    ("200220", 4.0),
    ("200221", 2.2),
    ("201000", 8.5),
    ("201001", 7.5),
    ("201010", 7.4),
    ("201011", 5.5),
    ("201020", 6.2),
    ("201021", 5.1),
    ("201100", 7.2),
    ("201101", 5.7),
    ("201110", 5.5),
    ("201111", 4.1),
    ("201120", 4.6),
    ("201121", 1.9),
    ("201200", 5.3),
    ("201201", 3.6),
    ("201210", 3.4),
    ("201211", 1.9),
    ("201220", 1.9),
    ("201221", 0.8),
    ("202001", 6.4),
    ("202011", 5.1),
    ("202021", 2.0),
    ("202101", 4.7),
    ("202111", 2.1),
    ("202121", 1.1),
    ("202201", 2.4),
    ("202211", 0.9),
    ("202221", 0.4),
    ("210000", 8.8),
    ("210001", 7.5),
    ("210010", 7.3),
    ("210011", 5.3),
    ("210020", 6.0),
    ("210021", 5.0),
    ("210100", 7.3),
    ("210101", 5.5),
    ("210110", 5.9),
    ("210111", 4.0),
    ("210120", 4.1),
    ("210121", 2.0),
    ("210200", 5.4),
    ("210201", 4.3),
    ("210210", 4.5),
    ("210211", 2.2),
    ("210220", 2.0),
    ("210221", 1.1),
    ("211000", 7.5),
    ("211001", 5.5),
    ("211010", 5.8),
    ("211011", 4.5),
    ("211020", 4.0),
    ("211021", 2.1),
    ("211100", 6.1),
    ("211101", 5.1),
    ("211110", 4.8),
    ("211111", 1.8),
    ("211120", 2.0),
    ("211121", 0.9),
    ("211200", 4.6),
    ("211201", 1.8),
    ("211210", 1.7),
    ("211211", 0.7),
    ("211220", 0.8),
    ("211221", 0.2),
    ("212001", 5.3),
    ("212011", 2.4),
    ("212021", 1.4),
    ("212101", 2.4),
    ("212111", 1.2),
    ("212121", 0.5),
    ("212201", 1.0),
    ("212211", 0.3),
    ("212221", 0.1),
];

fn v4_lookup(eq: [u8; 6]) -> Option<f64> {
    if eq.iter().any(|&d| d > 9) {
        return None;
    }
    let key: String = eq.iter().map(|d| char::from(b'0' + d)).collect();
    V4_LOOKUP.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
}

/// Allowed values per v4 metric, the first being the default when absent (only base metrics are mandatory).
const V4_METRICS: &[(&str, &[&str])] = &[
    ("AV", &["N", "A", "L", "P"]),
    ("AC", &["L", "H"]),
    ("AT", &["N", "P"]),
    ("PR", &["N", "L", "H"]),
    ("UI", &["N", "P", "A"]),
    ("VC", &["N", "L", "H"]),
    ("VI", &["N", "L", "H"]),
    ("VA", &["N", "L", "H"]),
    ("SC", &["N", "L", "H"]),
    ("SI", &["N", "L", "H"]),
    ("SA", &["N", "L", "H"]),
    ("E", &["X", "A", "P", "U"]),
    ("CR", &["X", "H", "M", "L"]),
    ("IR", &["X", "H", "M", "L"]),
    ("AR", &["X", "H", "M", "L"]),
    ("MAV", &["X", "N", "A", "L", "P"]),
    ("MAC", &["X", "L", "H"]),
    ("MAT", &["X", "N", "P"]),
    ("MPR", &["X", "N", "L", "H"]),
    ("MUI", &["X", "N", "P", "A"]),
    ("MVC", &["X", "H", "L", "N"]),
    ("MVI", &["X", "H", "L", "N"]),
    ("MVA", &["X", "H", "L", "N"]),
    ("MSC", &["X", "H", "L", "N"]),
    ("MSI", &["X", "S", "H", "L", "N"]),
    ("MSA", &["X", "S", "H", "L", "N"]),
    ("S", &["X", "N", "P"]),
    ("AU", &["X", "N", "Y"]),
    ("R", &["X", "A", "U", "I"]),
    ("V", &["X", "D", "C"]),
    ("RE", &["X", "L", "M", "H"]),
    ("U", &["X", "Clear", "Green", "Amber", "Red"]),
];

struct V4<'a> {
    m: HashMap<&'a str, &'a str>,
}

impl<'a> V4<'a> {
    fn parse(vector: &'a str) -> Result<Self, CvssError> {
        let (prefix, m) = metrics(vector)?;
        if prefix != "CVSS:4.0" {
            return Err(invalid(format!("not a CVSS v4.0 vector: {prefix:?}")));
        }
        for (k, v) in &m {
            let allowed =
                V4_METRICS.iter().find(|(name, _)| name == k).ok_or_else(|| invalid(format!("unknown metric {k}")))?.1;
            if !allowed.contains(v) {
                return Err(invalid(format!("bad value {v:?} for {k}")));
            }
        }
        for (k, _) in &V4_METRICS[..11] {
            if !m.contains_key(k) {
                return Err(invalid(format!("missing base metric {k}")));
            }
        }
        Ok(V4 { m })
    }

    fn raw(&self, k: &str) -> &str {
        self.m.get(k).copied().unwrap_or("X")
    }

    /// The effective value: E/CR/IR/AR default to their worst case, modified metrics override base ones.
    fn eff(&self, k: &str) -> &str {
        let v = self.raw(k);
        if v == "X" {
            match k {
                "E" => return "A",
                "CR" | "IR" | "AR" => return "H",
                _ => {}
            }
        }
        let modified = format!("M{k}");
        match self.m.get(modified.as_str()) {
            Some(&mv) if mv != "X" => mv,
            _ => v,
        }
    }

    fn macro_vector(&self) -> [u8; 6] {
        let (av, pr, ui) = (self.eff("AV"), self.eff("PR"), self.eff("UI"));
        let eq1 = if av == "N" && pr == "N" && ui == "N" {
            0
        } else if (av == "N" || pr == "N" || ui == "N") && av != "P" {
            1
        } else {
            2
        };
        let eq2 = if self.eff("AC") == "L" && self.eff("AT") == "N" { 0 } else { 1 };
        let (vc, vi, va) = (self.eff("VC"), self.eff("VI"), self.eff("VA"));
        let eq3 = if vc == "H" && vi == "H" {
            0
        } else if vc == "H" || vi == "H" || va == "H" {
            1
        } else {
            2
        };
        let eq4 = if self.eff("MSI") == "S" || self.eff("MSA") == "S" {
            0
        } else if self.eff("SC") == "H" || self.eff("SI") == "H" || self.eff("SA") == "H" {
            1
        } else {
            2
        };
        let eq5 = match self.eff("E") {
            "A" => 0,
            "P" => 1,
            _ => 2,
        };
        let eq6 = if (self.eff("CR") == "H" && vc == "H")
            || (self.eff("IR") == "H" && vi == "H")
            || (self.eff("AR") == "H" && va == "H")
        {
            0
        } else {
            1
        };
        [eq1, eq2, eq3, eq4, eq5, eq6]
    }
}

fn level(metric: &str, value: &str) -> f64 {
    match (metric, value) {
        ("AV", "N") | ("PR", "N") | ("UI", "N") | ("AC", "L") | ("AT", "N") => 0.0,
        ("AV", "A") | ("PR", "L") | ("UI", "P") | ("AC", "H") | ("AT", "P") => 0.1,
        ("AV", "L") | ("PR", "H") | ("UI", "A") => 0.2,
        ("AV", "P") => 0.3,
        ("VC" | "VI" | "VA", "H") => 0.0,
        ("VC" | "VI" | "VA", "L") => 0.1,
        ("VC" | "VI" | "VA", "N") => 0.2,
        ("SC" | "SI" | "SA", "S") => 0.0,
        ("SC" | "SI" | "SA", "H") => 0.1,
        ("SC" | "SI" | "SA", "L") => 0.2,
        ("SC" | "SI" | "SA", "N") => 0.3,
        ("CR" | "IR" | "AR", "H") => 0.0,
        ("CR" | "IR" | "AR", "M") => 0.1,
        ("CR" | "IR" | "AR", "L") => 0.2,
        ("E", "A") => 0.0,
        ("E", "P") => 0.1,
        ("E", "U") => 0.2,
        // Unreachable for validated vectors; a NaN distance makes a max vector unusable.
        _ => f64::NAN,
    }
}

/// The highest-severity vectors of each EQ level (FIRST's `MAX_COMPOSED`).
fn max_composed(eq: usize, level: u8, eq6: u8) -> &'static [&'static str] {
    match (eq, level) {
        (1, 0) => &["AV:N/PR:N/UI:N/"],
        (1, 1) => &["AV:A/PR:N/UI:N/", "AV:N/PR:L/UI:N/", "AV:N/PR:N/UI:P/"],
        (1, 2) => &["AV:P/PR:N/UI:N/", "AV:A/PR:L/UI:P/"],
        (2, 0) => &["AC:L/AT:N/"],
        (2, 1) => &["AC:H/AT:N/", "AC:L/AT:P/"],
        (3, 0) if eq6 == 0 => &["VC:H/VI:H/VA:H/CR:H/IR:H/AR:H/"],
        (3, 0) => &["VC:H/VI:H/VA:L/CR:M/IR:M/AR:H/", "VC:H/VI:H/VA:H/CR:M/IR:M/AR:M/"],
        (3, 1) if eq6 == 0 => &["VC:L/VI:H/VA:H/CR:H/IR:H/AR:H/", "VC:H/VI:L/VA:H/CR:H/IR:H/AR:H/"],
        (3, 1) => &[
            "VC:L/VI:H/VA:L/CR:H/IR:M/AR:H/",
            "VC:L/VI:H/VA:H/CR:H/IR:M/AR:M/",
            "VC:H/VI:L/VA:H/CR:M/IR:H/AR:M/",
            "VC:H/VI:L/VA:L/CR:M/IR:H/AR:H/",
            "VC:L/VI:L/VA:H/CR:H/IR:H/AR:M/",
        ],
        (3, 2) if eq6 == 1 => &["VC:L/VI:L/VA:L/CR:H/IR:H/AR:H/"],
        (4, 0) => &["SC:H/SI:S/SA:S/"],
        (4, 1) => &["SC:H/SI:H/SA:H/"],
        (4, 2) => &["SC:L/SI:L/SA:L/"],
        (5, 0) => &["E:A/"],
        (5, 1) => &["E:P/"],
        (5, 2) => &["E:U/"],
        _ => &[],
    }
}

/// FIRST's `MAX_SEVERITY` depths (in steps of 0.1).
fn max_severity(eq: usize, level: u8, eq6: u8) -> i64 {
    match (eq, level, eq6) {
        (1, 0, _) => 1,
        (1, 1, _) => 4,
        (1, 2, _) => 5,
        (2, 0, _) => 1,
        (2, 1, _) => 2,
        (3, 0, 0) => 7,
        (3, 0, 1) => 6,
        (3, 1, _) => 8,
        (3, 2, _) => 10,
        (4, 0, _) => 6,
        (4, 1, _) => 5,
        (4, 2, _) => 4,
        _ => 1,
    }
}

/// The CVSS v4.0 score of `vector` (CVSS-B, or CVSS-BT/BE/BTE when threat or environmental metrics are present),
/// computed as FIRST's reference calculator does.
pub fn score_v4(vector: &str) -> Result<f64, CvssError> {
    let v = V4::parse(vector)?;
    if ["VC", "VI", "VA", "SC", "SI", "SA"].iter().all(|k| v.eff(k) == "N") {
        return Ok(0.0);
    }
    let eq = v.macro_vector();
    let value = v4_lookup(eq).ok_or_else(|| invalid("macro vector outside the lookup table"))?;
    let [eq1, eq2, eq3, eq4, eq5, eq6] = eq;
    let lower = |d: [u8; 6]| v4_lookup(d);
    let next_eq1 = lower([eq1 + 1, eq2, eq3, eq4, eq5, eq6]);
    let next_eq2 = lower([eq1, eq2 + 1, eq3, eq4, eq5, eq6]);
    let next_eq3eq6 = match (eq3, eq6) {
        (1, 1) | (0, 1) => lower([eq1, eq2, eq3 + 1, eq4, eq5, eq6]),
        (1, 0) => lower([eq1, eq2, eq3, eq4, eq5, eq6 + 1]),
        (0, 0) => {
            let left = lower([eq1, eq2, eq3, eq4, eq5, eq6 + 1]);
            let right = lower([eq1, eq2, eq3 + 1, eq4, eq5, eq6]);
            match (left, right) {
                (Some(l), Some(r)) => Some(l.max(r)),
                // JavaScript's Math.max with an undefined operand is NaN.
                _ => None,
            }
        }
        _ => lower([eq1, eq2, eq3 + 1, eq4, eq5, eq6 + 1]),
    };
    let next_eq4 = lower([eq1, eq2, eq3, eq4 + 1, eq5, eq6]);
    let next_eq5 = lower([eq1, eq2, eq3, eq4, eq5 + 1, eq6]);

    // Find the first max vector that the scored vector does not exceed on any metric.
    let mut distances: Option<HashMap<&str, f64>> = None;
    'search: for a in max_composed(1, eq1, eq6) {
        for b in max_composed(2, eq2, eq6) {
            for c in max_composed(3, eq3, eq6) {
                for d in max_composed(4, eq4, eq6) {
                    for e in max_composed(5, eq5, eq6) {
                        let max_vector = format!("{a}{b}{c}{d}{e}");
                        let max: HashMap<&str, &str> =
                            max_vector.split('/').filter_map(|p| p.split_once(':')).collect();
                        let mut dist = HashMap::new();
                        for k in
                            ["AV", "PR", "UI", "AC", "AT", "VC", "VI", "VA", "SC", "SI", "SA", "CR", "IR", "AR", "E"]
                        {
                            let mv = max.get(k).copied().unwrap_or("");
                            dist.insert(k, level(k, v.eff(k)) - level(k, mv));
                        }
                        if dist.values().all(|d| *d >= 0.0) {
                            distances = Some(dist);
                            break 'search;
                        }
                    }
                }
            }
        }
    }
    let dist = distances.ok_or_else(|| invalid("no highest-severity vector dominates this vector"))?;
    // Exact arithmetic in tenths (every level, score and depth is a multiple of 0.1), so that a score exactly half
    // way (x.x5) rounds up as the specification's decimal arithmetic does, not down by a floating-point hair.
    let d = |k: &str| (dist.get(k).copied().unwrap_or(0.0) * 10.0).round() as i64;
    let current = [
        d("AV") + d("PR") + d("UI"),
        d("AC") + d("AT"),
        d("VC") + d("VI") + d("VA") + d("CR") + d("IR") + d("AR"),
        d("SC") + d("SI") + d("SA"),
        0, // EQ5's proportion is always 0, but an existing lower macro still counts towards the mean.
    ];
    let depth =
        [max_severity(1, eq1, eq6), max_severity(2, eq2, eq6), max_severity(3, eq3, eq6), max_severity(4, eq4, eq6), 1];
    let next = [next_eq1, next_eq2, next_eq3eq6, next_eq4, next_eq5];
    let tenths = |x: f64| (x * 10.0).round() as i64;
    let value_t = tenths(value);
    let common: i64 = depth.iter().product();
    let mut n_existing_lower = 0i64;
    let mut numerator = 0i64; // sum of available * current / depth, times `common`
    for i in 0..5 {
        if let Some(next) = next[i] {
            n_existing_lower += 1;
            numerator += (value_t - tenths(next)) * current[i] * (common / depth[i]);
        }
    }
    // score (in tenths) = value - numerator / (common * n), rounded half up, clamped to 0..=100.
    let den = common * n_existing_lower.max(1);
    let num = value_t * den - numerator;
    let rounded = (2 * num + den).div_euclid(2 * den);
    Ok(rounded.clamp(0, 100) as f64 / 10.0)
}

/// The base score of any supported CVSS vector (v3.0, v3.1, v4.0).
pub fn score(vector: &str) -> Result<f64, CvssError> {
    let v = vector.trim();
    if v.starts_with("CVSS:4.0/") {
        score_v4(v)
    } else if v.starts_with("CVSS:3.") {
        base_score_v3(v)
    } else {
        Err(invalid(format!("unsupported CVSS version in {v:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_published_scores() {
        // Scores as published by NVD for these vectors.
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:N", 6.5),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ];
        for (v, want) in cases {
            assert_eq!(base_score_v3(v).unwrap(), want, "{v}");
        }
        assert!(base_score_v3("CVSS:3.1/AV:N/AC:L").is_err());
        assert!(base_score_v3("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").is_err());
    }

    #[test]
    fn v4_reference_scores() {
        // Scores from the FIRST CVSS v4.0 calculator.
        let cases = [
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", 10.0),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N", 6.9),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:L/SC:N/SI:N/SA:N/E:A/MAV:A", 8.7),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0.0),
        ];
        for (v, want) in cases {
            assert_eq!(score_v4(v).unwrap(), want, "{v}");
        }
        assert!(score_v4("CVSS:4.0/AV:N").is_err());
    }

    #[test]
    fn severity_scale() {
        assert_eq!(Severity::from_score(0.0), Severity::None);
        assert_eq!(Severity::from_score(3.9), Severity::Low);
        assert_eq!(Severity::from_score(4.0), Severity::Medium);
        assert_eq!(Severity::from_score(8.9), Severity::High);
        assert_eq!(Severity::from_score(9.0), Severity::Critical);
        assert_eq!(Severity::from_word("MODERATE"), Some(Severity::Medium));
        assert!(Severity::Critical > Severity::Unknown);
    }
}
