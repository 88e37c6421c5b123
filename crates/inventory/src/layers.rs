//! Layer walking: decompress each layer as a stream (gzip, zstd or plain tar, told by magic bytes and checked
//! against the media type), iterate its tar entries, read only files of interest under their caps, parse them
//! right away, and keep the parsed results in an overlay view where later layers replace earlier ones and
//! whiteouts (`.wh.<name>`, `.wh..wh..opq`) remove from the layers below. Must never unpack to disk nor hold
//! more than one file of interest in memory at a time.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

use tar::EntryType;

use crate::paths::{FileKind, classify, normalise, resolve_link};
use crate::{
    Inventory, InventoryError, Layer, Limits, OsRelease, Package, ScanStats, apk, dpkg, elf, golang, java, npm,
    os_release, purl, python, rpm, ruby, rust_audit,
};

/// What the final view holds at a path of interest.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Os(OsRelease),
    Packages(Vec<Package>),
    Lock(Vec<npm::LockEntry>),
    Symlink(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "tar",
        }
    }
}

/// Counts the uncompressed bytes the tar reader pulls.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads concatenated zstd frames one after another (ruzstd's decoder stops after one frame).
struct ZstdFrames<R: BufRead> {
    decoder: ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if self.decoder.get_mut().fill_buf()?.is_empty() {
                return Ok(0);
            }
            let ZstdFrames { decoder } = self;
            let source = decoder.get_mut();
            let mut frame = ruzstd::decoding::FrameDecoder::new();
            frame.init(&mut *source).map_err(io::Error::other)?;
            decoder.decoder = frame;
        }
    }
}

/// The overlay of all layers applied so far.
pub(crate) struct View {
    limits: Limits,
    files: BTreeMap<String, Record>,
    warnings: Vec<String>,
    stats: ScanStats,
}

/// One layer's changes before they are merged: entries (None = shadows a lower file) and whiteouts.
#[derive(Default)]
struct Changes {
    entries: BTreeMap<String, Option<Record>>,
    whiteouts: Vec<String>,
    opaque: Vec<String>,
}

impl View {
    pub fn new(limits: Limits) -> Self {
        View { limits, files: BTreeMap::new(), warnings: Vec::new(), stats: ScanStats::default() }
    }

    pub fn stats(&self) -> ScanStats {
        self.stats.clone()
    }

    /// Streams one layer and merges its changes into the view.
    pub fn apply_layer(&mut self, index: usize, layer: Layer) -> Result<(), InventoryError> {
        self.stats.layers += 1;
        let media_type = layer.media_type;
        let mut input = BufReader::with_capacity(256 * 1024, layer.reader);
        let head = input.fill_buf().map_err(|source| InventoryError::Read { layer: index, source })?;
        let found = if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        };
        if let Some(expected) = expected_compression(index, &media_type)?
            && expected != found
        {
            self.warnings.push(format!(
                "layer {index}: media type {media_type} says {} but the bytes are {}; read as {}",
                expected.name(),
                found.name(),
                found.name()
            ));
        }
        let reader: Box<dyn Read> = match found {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| {
                    InventoryError::Decompress { layer: index, compression: "zstd", message: e.to_string() }
                })?;
                Box::new(ZstdFrames { decoder })
            }
            Compression::None => Box::new(input),
        };
        let mut archive = tar::Archive::new(Counting { inner: reader, count: 0 });
        let changes = self.read_entries(index, &mut archive)?;
        self.stats.tar_bytes += archive.into_inner().count;
        self.merge(changes);
        Ok(())
    }

    fn read_entries<R: Read>(
        &mut self,
        index: usize,
        archive: &mut tar::Archive<R>,
    ) -> Result<Changes, InventoryError> {
        let tar_err = |source| InventoryError::Tar { layer: index, source };
        let mut changes = Changes::default();
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            self.stats.entries += 1;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalise(&raw) else { continue };
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (dir.to_string(), name.to_string()),
                None => (String::new(), path.clone()),
            };
            if let Some(hidden) = name.strip_prefix(".wh.") {
                if hidden == ".wh..opq" {
                    changes.opaque.push(dir);
                } else if !hidden.starts_with(".wh.") && !hidden.is_empty() {
                    changes.whiteouts.push(if dir.is_empty() { hidden.to_string() } else { format!("{dir}/{hidden}") });
                }
                continue;
            }
            let entry_type = entry.header().entry_type();
            let record = match entry_type {
                EntryType::Regular | EntryType::Continuous => self.read_file(&path, &mut entry),
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned());
                    match (classify(&path), target) {
                        (Some(FileKind::OsRelease), Some(target)) => Some(Record::Symlink(target)),
                        _ => None,
                    }
                }
                EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .and_then(|t| normalise(&String::from_utf8_lossy(&t)))
                        .unwrap_or_default();
                    let found = match changes.entries.get(&target) {
                        Some(in_layer) => in_layer.clone(),
                        None => self.files.get(&target).cloned(),
                    };
                    found.map(|record| relocate(record, &target, &path))
                }
                _ => None,
            };
            match record {
                Some(record) => {
                    changes.entries.insert(path, Some(record));
                }
                None => {
                    // A directory, device or uninteresting file now sits where a file of interest was.
                    if self.files.contains_key(&path) || changes.entries.contains_key(&path) {
                        changes.entries.insert(path, None);
                    }
                }
            }
        }
        Ok(changes)
    }

    /// Whiteouts and opaque directories remove from the layers below; then this layer's entries land on top.
    fn merge(&mut self, changes: Changes) {
        for dir in &changes.opaque {
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            self.remove_prefix(&prefix);
        }
        for path in &changes.whiteouts {
            self.files.remove(path);
            self.remove_prefix(&format!("{path}/"));
        }
        for (path, record) in changes.entries {
            match record {
                Some(record) => {
                    self.files.insert(path, record);
                }
                None => {
                    self.files.remove(&path);
                }
            }
        }
    }

    fn remove_prefix(&mut self, prefix: &str) {
        let doomed: Vec<String> = self
            .files
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            self.files.remove(&key);
        }
    }

    /// Reads and parses one regular file if it is of interest; `None` if it holds nothing for the inventory.
    fn read_file<R: Read>(&mut self, path: &str, entry: &mut tar::Entry<'_, R>) -> Option<Record> {
        let size = entry.header().size().unwrap_or(0);
        let mode = entry.header().mode().unwrap_or(0);
        let Some(kind) = classify(path) else {
            if self.limits.scan_binaries && mode & 0o111 != 0 && size >= 64 {
                return self.read_executable(path, size, entry);
            }
            return None;
        };
        let cap = match kind {
            FileKind::DpkgStatus
            | FileKind::DpkgStatusD
            | FileKind::ApkInstalled
            | FileKind::RpmSqlite
            | FileKind::RpmBdb
            | FileKind::RpmNdb => self.limits.max_database,
            FileKind::NpmLock => self.limits.max_lockfile,
            FileKind::JavaArchive => self.limits.max_archive,
            FileKind::OsRelease | FileKind::PythonMetadata | FileKind::NpmPackageJson | FileKind::Gemspec => {
                self.limits.max_metadata
            }
        };
        if size > cap {
            self.warnings
                .push(format!("{path}: {size} bytes is over the {cap}-byte cap for this kind of file; skipped"));
            return None;
        }
        self.stats.files_read += 1;
        self.stats.peak_buffer = self.stats.peak_buffer.max(size);
        if kind == FileKind::RpmSqlite {
            // Deserialised straight from the tar stream into SQLite's own memory.
            return match rpm::read_sqlite(entry, size, path) {
                Ok(packages) => Some(Record::Packages(packages)),
                Err(message) => self.warn(path, message),
            };
        }
        let mut data = Vec::with_capacity(size as usize);
        if let Err(e) = entry.take(cap).read_to_end(&mut data) {
            return self.warn(path, format!("read failed: {e}"));
        }
        let text = || String::from_utf8_lossy(&data);
        let packages = match kind {
            FileKind::OsRelease => return Some(Record::Os(os_release::parse(&text()))),
            FileKind::DpkgStatus | FileKind::DpkgStatusD => dpkg::parse_status(&text(), path),
            FileKind::ApkInstalled => apk::parse_installed(&text(), path),
            FileKind::RpmBdb => match rpm::read_bdb(&data, path) {
                Ok(packages) => packages,
                Err(message) => return self.warn(path, message),
            },
            FileKind::RpmNdb => {
                return self.warn(
                    path,
                    "the rpm ndb format (Packages.db) is not supported; its packages are not listed".into(),
                );
            }
            FileKind::RpmSqlite => Vec::new(),
            FileKind::PythonMetadata => python::parse_metadata(&text(), path).into_iter().collect(),
            FileKind::NpmPackageJson => npm::parse_package_json(&data, path).into_iter().collect(),
            FileKind::NpmLock => match npm::parse_lock(&data, path) {
                Ok(entries) => return Some(Record::Lock(entries)),
                Err(message) => return self.warn(path, message),
            },
            FileKind::Gemspec => ruby::parse_gemspec(&text(), path).into_iter().collect(),
            FileKind::JavaArchive => java::scan_archive(&data, path, self.limits.max_archive, &mut self.warnings),
        };
        if packages.is_empty() { None } else { Some(Record::Packages(packages)) }
    }

    fn read_executable<R: Read>(&mut self, path: &str, size: u64, entry: &mut tar::Entry<'_, R>) -> Option<Record> {
        let mut head = [0u8; 4];
        if entry.read_exact(&mut head).is_err() || head != *b"\x7fELF" {
            return None;
        }
        let packages = if size <= self.limits.max_binary {
            self.stats.files_read += 1;
            self.stats.peak_buffer = self.stats.peak_buffer.max(size);
            let mut data = Vec::with_capacity(size as usize);
            data.extend_from_slice(&head);
            if let Err(e) = entry.take(self.limits.max_binary).read_to_end(&mut data) {
                return self.warn(path, format!("read failed: {e}"));
            }
            let Some(elf) = elf::Elf::parse(&data) else {
                return self.warn(path, "not a well-formed ELF file".into());
            };
            let mut packages = golang::from_elf(&elf, path);
            match rust_audit::from_elf(&elf, path, self.limits.max_metadata) {
                Ok(found) => packages.extend(found),
                Err(message) => self.warnings.push(format!("{path}: {message}")),
            }
            packages
        } else {
            match golang::scan_stream(io::Cursor::new(head).chain(entry), path) {
                Ok(Some(packages)) => packages,
                Ok(None) => {
                    self.warnings.push(format!(
                        "{path}: executable of {size} bytes is over the {}-byte cap; only scanned for Go 1.18+ build info",
                        self.limits.max_binary
                    ));
                    Vec::new()
                }
                Err(e) => return self.warn(path, format!("read failed: {e}")),
            }
        };
        if packages.is_empty() { None } else { Some(Record::Packages(packages)) }
    }

    fn warn(&mut self, path: &str, message: String) -> Option<Record> {
        self.warnings.push(format!("{path}: {message}"));
        None
    }

    /// The final view parsed into an inventory: OS, packages with purls, sorted.
    pub fn finish(self) -> Inventory {
        let os = self.os_release();
        let mut packages = Vec::new();
        for (path, record) in &self.files {
            match record {
                Record::Packages(found) => packages.extend(found.iter().cloned()),
                Record::Lock(entries) => {
                    let dir = path.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
                    for entry in entries {
                        // Installed modules are reported from their own package.json; the lock adds the rest.
                        let installed = format!("{dir}{}/package.json", entry.key);
                        if !entry.key.is_empty() && self.files.contains_key(&installed) {
                            continue;
                        }
                        packages.push(entry.package.clone());
                    }
                }
                Record::Os(_) | Record::Symlink(_) => {}
            }
        }
        for package in &mut packages {
            package.purl = purl::for_package(package, os.as_ref());
        }
        packages.sort_by(|a, b| {
            (a.kind, &a.name, &a.version, &a.path, &a.arch).cmp(&(b.kind, &b.name, &b.version, &b.path, &b.arch))
        });
        Inventory { os, packages, warnings: self.warnings }
    }

    fn os_release(&self) -> Option<OsRelease> {
        for start in ["etc/os-release", "usr/lib/os-release"] {
            let mut path = start.to_string();
            for _ in 0..8 {
                match self.files.get(&path) {
                    Some(Record::Os(os)) => return Some(os.clone()),
                    Some(Record::Symlink(target)) => match resolve_link(&path, target) {
                        Some(next) => path = next,
                        None => break,
                    },
                    _ => break,
                }
            }
        }
        None
    }
}

/// A hard link carries its target's record; packages found there are reported at the link's path too.
fn relocate(record: Record, from: &str, to: &str) -> Record {
    match record {
        Record::Packages(mut packages) => {
            for package in &mut packages {
                if package.path == from {
                    package.path = to.to_string();
                } else if let Some(rest) = package.path.strip_prefix(from)
                    && rest.starts_with('!')
                {
                    package.path = format!("{to}{rest}");
                }
            }
            Record::Packages(packages)
        }
        other => other,
    }
}

/// The compression a layer media type promises; `Err` for media types that are not layers at all.
fn expected_compression(index: usize, media_type: &str) -> Result<Option<Compression>, InventoryError> {
    let m = media_type.trim();
    if m.is_empty() {
        return Ok(None);
    }
    let is_layer = m.contains(".layer.") || m.contains(".rootfs.") || m.ends_with("tar") || m.contains(".tar");
    if !is_layer && (m.ends_with("json") || m.starts_with("text/")) {
        return Err(InventoryError::UnsupportedMediaType { layer: index, media_type: m.to_string() });
    }
    Ok(if m.ends_with("gzip") {
        Some(Compression::Gzip)
    } else if m.ends_with("zstd") {
        Some(Compression::Zstd)
    } else if m.ends_with("tar") {
        Some(Compression::None)
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use entrepot_oci::media;
        assert_eq!(
            expected_compression(0, "application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            expected_compression(0, "application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Some(Compression::Zstd)
        );
        assert_eq!(expected_compression(0, "application/vnd.oci.image.layer.v1.tar").unwrap(), Some(Compression::None));
        assert_eq!(
            expected_compression(0, "application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Some(Compression::Gzip)
        );
        assert_eq!(expected_compression(0, "").unwrap(), None);
        assert!(expected_compression(1, media::OCI_CONFIG).is_err());
    }
}
