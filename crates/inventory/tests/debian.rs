//! Inventory accuracy on a real Debian 12 image: a `debootstrap --variant=minbase bookworm` root filesystem
//! (from the apt mirror this machine is configured with) packed as layer 1; layer 2 installs real packages with
//! `dpkg --root` (plus Python metadata); layer 3 purges one package and deletes files with whiteouts, one of them
//! an opaque directory. After each layer the deb packages must equal `dpkg-query -W` on that state.
//! The layers are built once (≈ 1–2 min) into `target/inventory-fixtures/debian12` and reused.

mod support;

use std::path::Path;
use std::process::Command;

use entrepot_inventory::PackageKind;
use support::debian12::fixture;
use support::*;

fn dpkg_query(admindir: &Path) -> Vec<String> {
    let out = run(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args([
        "-W",
        "-f",
        "${Package} ${Version} ${Architecture} ${source:Package} ${source:Version}\n",
    ]));
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn debian12_three_layers_match_dpkg_query() {
    let f = fixture();
    let gz = |i: usize| (f.layers[i].as_path(), GZIP);

    let one = scan(&[gz(0)]);
    let os = one.os.as_ref().expect("os-release (a symlink to usr/lib/os-release in Debian)");
    assert_eq!(os.id.as_deref(), Some("debian"));
    assert_eq!(os.version_id.as_deref(), Some("12"));
    assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
    let expected = dpkg_query(&f.dpkg[0]);
    assert!(expected.len() > 50, "minbase has ~90 packages, got {}", expected.len());
    assert_eq!(deb_lines(&one), expected);
    let libc = one.packages.iter().find(|p| p.name == "libc6").unwrap();
    assert_eq!(libc.source_name.as_deref(), Some("glibc"));
    assert!(libc.purl.starts_with("pkg:deb/debian/libc6@") && libc.purl.ends_with("?arch=amd64&distro=debian-12"));
    assert!(one.packages.iter().all(|p| p.kind == PackageKind::Deb), "only debs in minbase");

    let two = scan(&[gz(0), gz(1)]);
    assert_eq!(deb_lines(&two), dpkg_query(&f.dpkg[1]));
    let debs = names(&two, PackageKind::Deb);
    assert!(debs.iter().any(|l| l.starts_with("hello ")) && debs.iter().any(|l| l.starts_with("jq ")));
    assert!(deb_lines(&two).iter().any(|l| l.starts_with("libonig5 ") && l.contains(" libonig ")));
    assert_eq!(names(&two, PackageKind::Python), vec!["alpha 1.0", "beta-pkg 2.0", "delta 4.0"]);

    let three = scan(&[gz(0), gz(1), gz(2)]);
    assert_eq!(deb_lines(&three), dpkg_query(&f.dpkg[2]));
    assert!(!names(&three, PackageKind::Deb).iter().any(|l| l.starts_with("hello ")), "purged");
    // Opaque directory: alpha and Beta_Pkg are gone from below, gamma came in the same layer; delta: whiteout.
    assert_eq!(names(&three, PackageKind::Python), vec!["gamma 3.0"]);
    assert!(three.warnings.is_empty(), "{:?}", three.warnings);
}
