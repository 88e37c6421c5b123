//! Package inventory of a container image, read from its layers.
//!
//! Input: the image's layers in order (bottom first), each an `impl Read` of the layer blob as stored
//! (gzip, zstd or plain tar) with its media type. The crate does not know where blobs live and never
//! touches the network or the disk: entries are streamed, only the files of interest are read (each under
//! a size cap, see [`Limits`]), whiteouts are applied layer by layer, and the final view is parsed.
//! Synchronous `std::io` code: async callers run it in `spawn_blocking`.
//!
//! Output ([`Inventory`], serialisable with serde; packages in a stable order):
//!
//! ```text
//! Inventory { os: Option<OsRelease>, packages: Vec<Package>, warnings: Vec<String> }
//! OsRelease { id, version_id, version_codename, pretty_name, id_like }      (all Option<String> but id_like: Vec)
//! Package   { name, version, kind, arch, source_name, source_version, path, purl }
//! kind      = deb | apk | rpm | python | npm | go | rust | maven | gem
//! ```
//!
//! Where each kind comes from (paths relative to the image root):
//!
//! | kind   | files                                                                                 |
//! |--------|---------------------------------------------------------------------------------------|
//! | OS     | `etc/os-release` (symlinks followed), fallback `usr/lib/os-release`                   |
//! | deb    | `var/lib/dpkg/status`, `var/lib/dpkg/status.d/*` (distroless); installed packages only |
//! | apk    | `lib/apk/db/installed`                                                                |
//! | rpm    | `var/lib/rpm/rpmdb.sqlite`, Berkeley DB `var/lib/rpm/Packages` (hash database)       |
//! | python | `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, `*.egg-info` files; names per PEP 503   |
//! | npm    | `node_modules/[@scope/]name/package.json`, `package-lock.json` (v1, v2, v3)          |
//! | go     | ELF executables: build info (`\xff Go buildinf:`; Go ≥ 1.18 inline and older pointer form) |
//! | rust   | ELF executables: `cargo auditable`'s `.dep-v0` section (zlib-compressed JSON)          |
//! | maven  | `META-INF/maven/**/pom.properties` in `*.jar`/`*.war`/`*.ear` (and jars nested one level) |
//! | gem    | `specifications/*.gemspec`                                                            |
//!
//! Versions are kept as the ecosystem writes them (dpkg `epoch:upstream-revision`, rpm `[epoch:]version-release`,
//! Go `v1.2.3`; the Go toolchain is reported as the package `stdlib` with version `v1.x.y`). A file that cannot
//! be parsed, or that is over its cap, becomes a warning, never an error: an error means a layer itself could not be
//! read (bad compression, truncated tar).
//!
//! This crate must never write to disk, reach the network, or hold a whole layer in memory.

mod apk;
mod dpkg;
mod elf;
mod error;
mod golang;
mod java;
mod layers;
mod npm;
mod os_release;
mod paths;
mod purl;
mod python;
mod rpm;
mod ruby;
mod rust_audit;
mod zip;

use std::io::Read;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use error::InventoryError;
pub use os_release::OsRelease;

/// What an image has installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The distribution, from `etc/os-release` or `usr/lib/os-release`.
    pub os: Option<OsRelease>,
    /// Every package found, sorted by (kind, name, version, path).
    pub packages: Vec<Package>,
    /// Files skipped or not understood (over a cap, corrupt, unsupported format), in the order met.
    pub warnings: Vec<String>,
}

/// The ecosystem a package belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
    Go,
    Rust,
    Maven,
    Gem,
}

impl PackageKind {
    /// The lowercase name used in JSON and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Apk => "apk",
            PackageKind::Rpm => "rpm",
            PackageKind::Python => "python",
            PackageKind::Npm => "npm",
            PackageKind::Go => "go",
            PackageKind::Rust => "rust",
            PackageKind::Maven => "maven",
            PackageKind::Gem => "gem",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Name as the ecosystem spells it (Python: normalised per PEP 503; Maven: `groupId:artifactId`).
    pub name: String,
    pub version: String,
    pub kind: PackageKind,
    /// Architecture for OS packages (`amd64`, `x86_64`, `noarch`, ...).
    pub arch: Option<String>,
    /// Source package (dpkg `Source:`, apk origin, rpm `SOURCERPM` name).
    pub source_name: Option<String>,
    /// Source package version (dpkg: from `Source: name (version)`, else the binary version).
    pub source_version: Option<String>,
    /// Where it was found, relative to the image root (`!` separates an archive from a path inside it).
    pub path: String,
    /// Package URL, e.g. `pkg:deb/debian/curl@7.88.1-10?arch=amd64&distro=debian-12`.
    pub purl: String,
}

impl Package {
    /// A package without source information and with its purl still to compute.
    pub(crate) fn new(kind: PackageKind, name: impl Into<String>, version: impl Into<String>, path: &str) -> Self {
        Package {
            name: name.into(),
            version: version.into(),
            kind,
            arch: None,
            source_name: None,
            source_version: None,
            path: path.to_string(),
            purl: String::new(),
        }
    }
}

/// One layer blob: its media type as written in the manifest (may be empty) and its bytes as stored.
pub struct Layer {
    pub media_type: String,
    pub reader: Box<dyn Read + Send>,
}

impl Layer {
    pub fn new(media_type: impl Into<String>, reader: impl Read + Send + 'static) -> Self {
        Layer { media_type: media_type.into(), reader: Box::new(reader) }
    }
}

/// Caps on what is read into memory. A file over its cap is skipped with a warning.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Package databases: dpkg status, apk installed, rpmdb.
    pub max_database: u64,
    /// Small metadata files: os-release, METADATA, package.json, gemspec, pom.properties.
    pub max_metadata: u64,
    /// Lock files (`package-lock.json`).
    pub max_lockfile: u64,
    /// ELF executables read whole (Go pointer-form build info, Rust `.dep-v0`). Larger executables are still
    /// streamed through a scanner that finds Go ≥ 1.18 build info without holding the file.
    pub max_binary: u64,
    /// Java archives (jar/war/ear) read whole; nested jars are held under the same cap.
    pub max_archive: u64,
    /// Whether to look inside executables at all.
    pub scan_binaries: bool,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        Limits {
            max_database: 32 * MIB,
            max_metadata: 8 * MIB,
            max_lockfile: 32 * MIB,
            max_binary: 128 * MIB,
            max_archive: 64 * MIB,
            scan_binaries: true,
        }
    }
}

/// What a scan cost: for benchmarks and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    pub layers: usize,
    /// Tar entries seen, all layers together.
    pub entries: u64,
    /// Uncompressed tar bytes streamed.
    pub tar_bytes: u64,
    /// Files read because they matched (before whiteouts removed any).
    pub files_read: u64,
    /// The largest single buffer this crate held (one file read whole).
    pub peak_buffer: u64,
    pub elapsed: Duration,
}

/// Reads `layers` in order and returns what the final filesystem has installed.
pub fn inventory_from_layers<I: IntoIterator<Item = Layer>>(
    layers: I,
    limits: &Limits,
) -> Result<Inventory, InventoryError> {
    scan_layers(layers, limits).map(|(inventory, _)| inventory)
}

/// Like [`inventory_from_layers`], also returning what the scan cost (time, bytes, the largest buffer held).
/// Peak process memory is the caller's to measure (e.g. `VmHWM` in `/proc/self/status` around this call).
pub fn scan_layers<I: IntoIterator<Item = Layer>>(
    layers: I,
    limits: &Limits,
) -> Result<(Inventory, ScanStats), InventoryError> {
    let started = Instant::now();
    let mut view = layers::View::new(limits.clone());
    for (index, layer) in layers.into_iter().enumerate() {
        view.apply_layer(index, layer)?;
    }
    let mut stats = view.stats();
    let inventory = view.finish();
    stats.elapsed = started.elapsed();
    Ok((inventory, stats))
}
