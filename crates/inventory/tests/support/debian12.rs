//! The Debian 12 image fixture: a `debootstrap --variant=minbase bookworm` root filesystem (from the apt mirror
//! this machine is configured with) as layer 1; layer 2 installs real packages with `dpkg --root` (plus Python
//! metadata); layer 3 purges one package and deletes files with whiteouts, one of them an opaque directory.
//! Built once (≈ 1–2 min) into `target/inventory-fixtures/debian12` and reused; also used by the end-to-end scan
//! test of `crates/entrepot` (which includes this support module by path).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

pub const PY: &str = "usr/local/lib/python3.11/dist-packages";

/// The Debian mirror apt is configured with (suite `bookworm`), from `/etc/apt/sources.list*`.
pub fn configured_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(s) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(s);
    }
    for entry in fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten() {
        texts.push(fs::read_to_string(entry.path()).unwrap_or_default());
    }
    for text in &texts {
        for paragraph in text.split("\n\n") {
            let field = |k: &str| {
                paragraph.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string())).unwrap_or_default()
            };
            if field("Suites:").split_whitespace().any(|s| s == "bookworm")
                && field("Types:").contains("deb")
                && let Some(uri) = field("URIs:").split_whitespace().next()
            {
                return uri.to_string();
            }
        }
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().filter(|w| !w.starts_with('[')).collect();
            if words.first() == Some(&"deb") && words.get(2) == Some(&"bookworm") {
                return words[1].to_string();
            }
        }
    }
    panic!("no apt source for bookworm in /etc/apt/sources.list*");
}

pub struct Fixture {
    /// The three gzip layers, bottom first.
    pub layers: [PathBuf; 3],
    /// `var/lib/dpkg` after each layer (for `dpkg-query --admindir`).
    pub dpkg: [PathBuf; 3],
}

fn build(dir: &Path) {
    let work = dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let (r1, r2, r3) = (work.join("r1"), work.join("r2"), work.join("r3"));
    run(Command::new("debootstrap").args(["--variant=minbase", "bookworm"]).arg(&r1).arg(configured_mirror()));
    tar_gz_dir(&r1, &dir.join("layer1.tar.gz"));
    sh(&format!("cp -a '{}/var/lib/dpkg' '{}/dpkg1'", r1.display(), dir.display()));

    // Layer 2: install real packages (jq pulls libjq1 and libonig5, whose source names differ).
    sh(&format!("cp -a '{}' '{}'", r1.display(), r2.display()));
    let debs = work.join("debs");
    fs::create_dir_all(&debs).unwrap();
    run(Command::new("apt-get").args(["download", "hello", "jq", "libjq1", "libonig5"]).current_dir(&debs));
    sh(&format!("dpkg --root='{}' -i '{}'/*.deb", r2.display(), debs.display()));
    write(&r2, &format!("{PY}/alpha-1.0.dist-info/METADATA"), "Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n");
    write(
        &r2,
        &format!("{PY}/Beta_Pkg-2.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: Beta_Pkg\nVersion: 2.0\n",
    );
    write(&r2, "opt/py/delta-4.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: delta\nVersion: 4.0\n");
    let l2 = work.join("layer2.tar");
    diff_layer(&r1, &r2, &[], &l2);
    fs::rename(compress(&l2, "gzip"), dir.join("layer2.tar.gz")).unwrap();
    sh(&format!("cp -a '{}/var/lib/dpkg' '{}/dpkg2'", r2.display(), dir.display()));
    fs::remove_dir_all(&r1).unwrap();

    // Layer 3: purge hello; replace the Python directory (opaque) and delete delta's metadata (whiteout).
    sh(&format!("cp -a '{}' '{}'", r2.display(), r3.display()));
    run(Command::new("dpkg").arg(format!("--root={}", r3.display())).args(["--purge", "hello"]));
    fs::remove_dir_all(r3.join(PY)).unwrap();
    write(&r3, &format!("{PY}/gamma-3.0.dist-info/METADATA"), "Metadata-Version: 2.1\nName: gamma\nVersion: 3.0\n");
    fs::remove_dir_all(r3.join("opt/py/delta-4.0.dist-info")).unwrap();
    let l3 = work.join("layer3.tar");
    diff_layer(&r2, &r3, &[PY], &l3);
    fs::rename(compress(&l3, "gzip"), dir.join("layer3.tar.gz")).unwrap();
    sh(&format!("cp -a '{}/var/lib/dpkg' '{}/dpkg3'", r3.display(), dir.display()));
    fs::remove_dir_all(&work).unwrap();
    fs::write(dir.join(".complete"), "").unwrap();
}

/// The fixture, built on first use. Tests running at once (threads of one test binary, or other test
/// binaries) wait on a file lock for the one that builds it.
pub fn fixture() -> Fixture {
    let dir = cache_dir("debian12");
    if !dir.join(".complete").exists() {
        let lock = fs::File::create(dir.join(".lock")).unwrap();
        lock.lock().unwrap();
        if !dir.join(".complete").exists() {
            build(&dir);
        }
        drop(lock);
    }
    Fixture {
        layers: [1, 2, 3].map(|i| dir.join(format!("layer{i}.tar.gz"))),
        dpkg: [1, 2, 3].map(|i| dir.join(format!("dpkg{i}"))),
    }
}
