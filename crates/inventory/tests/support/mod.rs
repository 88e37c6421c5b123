//! Test support: running real tools, a fixture cache under `target/`, and turning directories into image layers
//! (whole trees, or the difference between two trees with whiteouts, as a container build writes them).
#![allow(dead_code)]

pub mod debian12;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use entrepot_inventory::{Inventory, Layer, Limits, PackageKind, inventory_from_layers};

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `target/inventory-fixtures/<name>`, created.
pub fn cache_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/inventory-fixtures").join(name);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command, panics with its output unless it succeeds, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/install-clients)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run(Command::new("bash").arg("-euo").arg("pipefail").arg("-c").arg(script))
}

/// Packs a whole directory as a gzip layer with GNU tar.
pub fn tar_gz_dir(dir: &Path, out: &Path) {
    run(Command::new("tar").arg("--numeric-owner").arg("-C").arg(dir).arg("-czf").arg(out).arg("."));
}

/// Compresses a plain tar file with a real tool (`gzip` or `zstd`) next to it; returns the new path.
pub fn compress(tar: &Path, tool: &str) -> PathBuf {
    let ext = if tool == "zstd" { "zst" } else { "gz" };
    let out = tar.with_extension(format!("tar.{ext}"));
    sh(&format!("{tool} -c -q '{}' > '{}'", tar.display(), out.display()));
    out
}

pub fn layer(path: &Path, media_type: &str) -> Layer {
    Layer::new(media_type, fs::File::open(path).unwrap())
}

pub fn scan(layers: &[(&Path, &str)]) -> Inventory {
    inventory_from_layers(layers.iter().map(|(p, m)| layer(p, m)), &Limits::default()).unwrap()
}

/// `name version arch source source-version` lines of the deb packages, sorted.
pub fn deb_lines(inv: &Inventory) -> Vec<String> {
    let mut lines: Vec<String> = inv
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Deb)
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p.name,
                p.version,
                p.arch.as_deref().unwrap_or(""),
                p.source_name.as_deref().unwrap_or(""),
                p.source_version.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.sort();
    lines
}

pub fn names(inv: &Inventory, kind: PackageKind) -> Vec<String> {
    inv.packages.iter().filter(|p| p.kind == kind).map(|p| format!("{} {}", p.name, p.version)).collect()
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else { return };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.insert(rel.clone());
        if is_dir {
            walk(root, &rel, out);
        }
    }
}

fn changed(lower: &Path, upper: &Path) -> bool {
    let (Ok(a), Ok(b)) = (fs::symlink_metadata(lower), fs::symlink_metadata(upper)) else { return true };
    if a.file_type() != b.file_type() || a.mode() != b.mode() {
        return true;
    }
    if b.file_type().is_symlink() {
        return fs::read_link(lower).ok() != fs::read_link(upper).ok();
    }
    if b.is_file() {
        return a.len() != b.len() || a.mtime() != b.mtime() || fs::read(lower).ok() != fs::read(upper).ok();
    }
    false
}

/// Writes the layer that turns `lower` into `upper`, as an image build would: changed and new entries, a
/// `.wh.<name>` for each removed path (the top-most only), and for each of `opaque` (relative directories) a
/// `.wh..wh..opq` marker with the directory's whole new content instead of per-file whiteouts.
pub fn diff_layer(lower: &Path, upper: &Path, opaque: &[&str], out_tar: &Path) {
    let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
    walk(lower, Path::new(""), &mut before);
    walk(upper, Path::new(""), &mut after);
    let under_opaque = |p: &Path| opaque.iter().any(|o| p.starts_with(o) && p != Path::new(o));
    let mut builder = tar::Builder::new(fs::File::create(out_tar).unwrap());
    builder.follow_symlinks(false);
    let empty = tempfile::NamedTempFile::new().unwrap();
    for dir in opaque {
        builder.append_path_with_name(upper.join(dir), dir).unwrap();
        builder.append_path_with_name(empty.path(), Path::new(dir).join(".wh..wh..opq")).unwrap();
    }
    for rel in &after {
        if opaque.iter().any(|o| rel == Path::new(o)) {
            continue;
        }
        if under_opaque(rel) || !before.contains(rel) || changed(&lower.join(rel), &upper.join(rel)) {
            builder.append_path_with_name(upper.join(rel), rel).unwrap();
        }
    }
    for rel in &before {
        let parent_gone = rel.parent().is_some_and(|p| p != Path::new("") && !after.contains(p));
        if after.contains(rel) || parent_gone || under_opaque(rel) {
            continue;
        }
        let name = format!(".wh.{}", rel.file_name().unwrap().to_string_lossy());
        let wh = rel.parent().map(|p| p.join(&name)).unwrap_or_else(|| PathBuf::from(&name));
        builder.append_path_with_name(empty.path(), wh).unwrap();
    }
    builder.finish().unwrap();
}

/// Writes `content` at `root/rel`, creating parents.
pub fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}
