//! RPM databases made by the real tools: two noarch packages built with `rpmbuild` and installed with
//! `rpm -i --root` into a fresh `rpmdb.sqlite` (Debian's rpm 4.18 defaults to the sqlite backend); the inventory
//! must equal `rpm -qa`. The same header blobs are then loaded into a Berkeley DB hash `Packages` file with
//! `db5.3_load`, which rpm's own `bdb_ro` backend reads back; the inventory must equal that too.

mod support;

use std::fs;
use std::process::Command;

use entrepot_inventory::PackageKind;
use support::*;

const SPEC: &str = "Name: NAME
Version: VERSION
Release: RELEASE
EPOCHLINE
Summary: inventory fixture
License: MIT
BuildArch: noarch
%description
inventory fixture
%install
mkdir -p %{buildroot}/usr/share/NAME
echo hi > %{buildroot}/usr/share/NAME/hello.txt
%files
/usr/share/NAME/hello.txt
";

const QF: &str = "%{NAME} %|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE} %{ARCH} %{SOURCERPM}\\n";

fn rpm_lines(inv: &entrepot_inventory::Inventory) -> Vec<String> {
    let mut lines: Vec<String> = inv
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Rpm)
        .map(|p| {
            let (name, version) = (p.source_name.as_deref().unwrap(), p.source_version.as_deref().unwrap());
            // Source version carries the binary's epoch; SOURCERPM does not.
            let version = version.split_once(':').map(|(_, v)| v).unwrap_or(version);
            format!("{} {} {} {name}-{version}.src.rpm", p.name, p.version, p.arch.as_deref().unwrap())
        })
        .collect();
    lines.sort();
    lines
}

fn sorted(out: String) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn rpmdb_sqlite_and_berkeley_db_match_rpm() {
    let dir = cache_dir("rpm");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root");
    run(Command::new("rpm").arg("--root").arg(&root).args(["--dbpath", "/var/lib/rpm", "--initdb"]));
    for (name, version, release, epoch) in
        [("entrepot-one", "1.2.3", "4", Some(2)), ("entrepot-two", "0.9", "1.fc39", None)]
    {
        let spec = SPEC
            .replace("NAME", name)
            .replace("VERSION", version)
            .replace("RELEASE", release)
            .replace("EPOCHLINE", &epoch.map(|e| format!("Epoch: {e}")).unwrap_or_default());
        let spec_path = dir.join(format!("{name}.spec"));
        fs::write(&spec_path, spec).unwrap();
        run(Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg("-bb")
            .arg(&spec_path));
        let rpm = dir.join(format!("top/RPMS/noarch/{name}-{version}-{release}.noarch.rpm"));
        run(Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
            .arg(&rpm));
    }
    let expected =
        sorted(run(Command::new("rpm").arg("--root").arg(&root).args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", QF])));
    assert_eq!(expected.len(), 2);

    // A plain (uncompressed) tar layer.
    let layer = dir.join("layer.tar");
    run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&layer).arg("."));
    let inv = scan(&[(&layer, TAR)]);
    assert_eq!(rpm_lines(&inv), expected);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let one = inv.packages.iter().find(|p| p.name == "entrepot-one").unwrap();
    assert_eq!(one.version, "2:1.2.3-4");
    assert_eq!(one.purl, "pkg:rpm/entrepot-one@1.2.3-4?arch=noarch&epoch=2");

    // Berkeley DB: the same blobs keyed by header number (native-endian u32), as rpm < 4.16 stored them.
    let bdb_dir = dir.join("bdb");
    fs::create_dir_all(&bdb_dir).unwrap();
    let dump = bdb_dir.join("dump.txt");
    sh(&format!(
        r#"python3 - '{db}' '{dump}' <<'PY'
import sqlite3, struct, sys
con = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
esc = lambda b: "".join("\\%02x" % c for c in b)
with open(sys.argv[2], "w") as out:
    for hnum, blob in con.execute("SELECT hnum, blob FROM Packages ORDER BY hnum"):
        out.write(esc(struct.pack("<I", hnum)) + "\n" + esc(blob) + "\n")
PY"#,
        db = root.join("var/lib/rpm/rpmdb.sqlite").display(),
        dump = dump.display()
    ));
    let packages = bdb_dir.join("var/lib/rpm/Packages");
    fs::create_dir_all(packages.parent().unwrap()).unwrap();
    run(Command::new("db5.3_load").args(["-T", "-t", "hash", "-f"]).arg(&dump).arg(&packages));
    let from_bdb = sorted(run(Command::new("rpm").arg("--dbpath").arg(packages.parent().unwrap()).args([
        "--define",
        "_db_backend bdb_ro",
        "-qa",
        "--qf",
        QF,
    ])));
    assert_eq!(from_bdb, expected, "rpm's bdb_ro backend reads the Berkeley DB file");
    fs::remove_file(&dump).unwrap();
    let layer = dir.join("bdb.tar");
    run(Command::new("tar").arg("-C").arg(&bdb_dir).arg("-cf").arg(&layer).arg("."));
    let gz = compress(&layer, "gzip");
    let inv = scan(&[(&gz, GZIP)]);
    assert_eq!(rpm_lines(&inv), expected);
    assert!(inv.packages.iter().all(|p| p.path == "var/lib/rpm/Packages"));
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
}
