//! RubyGems order checked against `Gem::Version` from Debian's `ruby`: validity and order, one ruby process.

mod support;

use std::process::Command;

use entrepot_vuln::version::rubygems::Version;
use support::{Rng, assert_agree, run};

const ALPHABET: &[char] = &['0', '1', '9', '.', '-', 'a', 'b', 'p', 'r', 'Z', ' '];

fn generate(r: &mut Rng) -> String {
    let mut v = r.small();
    for _ in 0..r.below(4) {
        v.push('.');
        if r.chance(75) {
            v.push_str(&r.small());
        } else {
            let w = *r.pick(&["a", "b", "pre", "rc", "beta2", "RC1", "alpha", "0a"]);
            v.push_str(w);
        }
    }
    if r.chance(20) {
        v.push('-');
        let w = *r.pick(&["1", "pre", "rc.1", "beta-2", "x"]);
        v.push_str(w);
    }
    v
}

#[test]
fn rubygems_order_matches_gem_version() {
    if support::tool("ruby").is_none() {
        return support::skip("rubygems_order_matches_gem_version", "ruby not installed");
    }
    let script = r#"
def parse(s)
  Gem::Version.new(s)
rescue ArgumentError
  nil
end
STDIN.each_line do |line|
  a, b = line.chomp("\n").split("\t", -1)
  va, vb = parse(a), parse(b)
  c = (va.nil? || vb.nil?) ? "E" : (va <=> vb).to_s
  puts [c, va.nil? ? "E" : "ok", vb.nil? ? "E" : "ok"].join("\t")
end
"#;
    let mut r = Rng::new(0x6E35);
    let mut pairs: Vec<(String, String)> = [
        ("1.0.a", "1.0"),
        ("1.0.b1", "1.0.a2"),
        ("1.0.0", "1"),
        ("1-1", "1.pre.1"),
        ("", "0"),
        ("  1.2  ", "1.2"),
        ("1.0.A", "1.0.a"),
        ("2.3.11", "2.3.9"),
        ("3.0.4", "3.0.4.rc1"),
        ("1.0.0.0.1", "1.0.0.1"),
        ("1..2", "1.2"),
        ("1.2-", "1.2"),
        ("a", "1"),
        ("1.0_1", "1.0"),
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
    let out = run(Command::new("ruby").arg("-e").arg(script), &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pairs.len());
    let mut mismatches = Vec::new();
    for ((a, b), line) in pairs.iter().zip(lines) {
        let f: Vec<&str> = line.split('\t').collect();
        let (pa, pb) = (Version::parse(a), Version::parse(b));
        for (s, p, want) in [(a, &pa, f[1]), (b, &pb, f[2])] {
            if p.is_ok() != (want == "ok") {
                mismatches.push(format!("{s:?}: Gem::Version valid={want}, mine {:?}", p.as_ref().err()));
            }
        }
        if let (Ok(x), Ok(y)) = (&pa, &pb) {
            let mine = x.cmp(y);
            if support::ordering(f[0]) != Some(mine) {
                mismatches.push(format!("{a:?} vs {b:?}: Gem::Version {}, mine {mine:?}", f[0]));
            }
        }
    }
    assert_agree("rubygems order", pairs.len(), &mismatches);
}
