//! Shared helpers for the reference-checked tests: a seeded generator, locating the reference tools, and running
//! a reference oracle once over a whole batch of pairs (one process, not one per pair).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// SplitMix64: deterministic, so a failure reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    pub fn digits(&mut self, max_len: usize) -> String {
        let n = 1 + self.below(max_len);
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }

    /// A small number: mostly 0-12 so that equal and adjacent values are common.
    pub fn small(&mut self) -> String {
        if self.chance(85) { self.below(13).to_string() } else { (self.next() % 10_000).to_string() }
    }

    /// Replaces, inserts or deletes one character from `alphabet`, to produce a near-equal version.
    pub fn mutate(&mut self, s: &str, alphabet: &[char]) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        let pos = if chars.is_empty() { 0 } else { self.below(chars.len() + 1) };
        match self.below(4) {
            0 if pos < chars.len() => chars[pos] = *self.pick(alphabet),
            1 => chars.insert(pos.min(chars.len()), *self.pick(alphabet)),
            2 if pos < chars.len() && chars.len() > 1 => {
                chars.remove(pos);
            }
            _ => chars.push(*self.pick(alphabet)),
        }
        chars.into_iter().collect()
    }
}

/// The first executable named `name` on PATH (or at an absolute path).
pub fn tool(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|c| c.is_file()))
        .unwrap_or(None)
}

/// The repository root (where `.venv` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Python with the pinned pip packages CI installs (`.ci/install-clients`).
pub fn venv_python() -> Option<PathBuf> {
    let p = repo_root().join(".venv/bin/python");
    p.is_file().then_some(p)
}

/// Says loudly that a reference test did not run (the tool is installed by `.ci/install-clients`, so CI runs it).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (run .ci/install-clients to install it)");
}

/// Runs `cmd` with `input` on stdin and returns stdout; panics (test failure) if the process fails.
pub fn run(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread").expect("write stdin");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Turns an oracle's "<", "=", ">" into an ordering.
pub fn ordering(s: &str) -> Option<std::cmp::Ordering> {
    match s.trim() {
        "<" | "-1" => Some(std::cmp::Ordering::Less),
        "=" | "0" => Some(std::cmp::Ordering::Equal),
        ">" | "1" => Some(std::cmp::Ordering::Greater),
        _ => None,
    }
}

/// Asserts no mismatches, listing the first ones.
pub fn assert_agree(what: &str, checked: usize, mismatches: &[String]) {
    eprintln!("{what}: {checked} comparisons checked against the reference, {} mismatches", mismatches.len());
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {checked} disagree with the reference, first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(25).cloned().collect::<Vec<_>>().join("\n")
    );
}
