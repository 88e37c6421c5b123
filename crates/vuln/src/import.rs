//! Reading OSV JSON out of a directory tree (`*.json`, recursive) or an OSV `all.zip` archive.
//!
//! Each file may hold one record or an array of records. A file that is not JSON, or a record that does not fit the
//! schema, is reported as [`Malformed`] and skipped, never fatal; only failing to read the directory or the archive
//! itself is an error. Entries are read one at a time with a size cap, so memory stays bounded by the largest
//! record, not by the archive.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::osv::Advisory;

/// The largest single JSON file accepted (a guard against zip bombs and runaway files).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A record (or file) that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Malformed {
    /// The file (and index within it, for arrays).
    pub source: String,
    pub reason: String,
}

/// Errors that stop an import: the input itself cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading zip archive {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
}

/// Parses one JSON document into records; problems go to `malformed`.
pub fn parse_document(source: &str, bytes: &[u8], malformed: &mut Vec<Malformed>) -> Vec<Advisory> {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            malformed.push(Malformed { source: source.to_owned(), reason: format!("not JSON: {e}") });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut one = |v: Value, src: String| match serde_json::from_value::<Advisory>(v) {
        Ok(a) if a.id.trim().is_empty() => malformed.push(Malformed { source: src, reason: "empty id".into() }),
        Ok(a) => out.push(a),
        Err(e) => malformed.push(Malformed { source: src, reason: format!("not an OSV record: {e}") }),
    };
    match value {
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                one(item, format!("{source}[{i}]"));
            }
        }
        v => one(v, source.to_owned()),
    }
    out
}

/// Calls `sink` with every `*.json` file under `dir` (recursively, in sorted order) as (path, bytes); files over
/// [`MAX_FILE_BYTES`] go to `malformed`.
pub fn walk_dir(
    dir: &Path,
    sink: &mut dyn FnMut(String, Vec<u8>),
    malformed: &mut Vec<Malformed>,
) -> Result<(), ImportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d).map_err(io(&d))?.collect::<Result<Vec<_>, _>>().map_err(io(&d))?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let path = e.path();
            let ft = e.file_type().map_err(io(&path))?;
            if ft.is_dir() {
                subdirs.push(path);
            } else if ft.is_file() && path.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")) {
                let len = e.metadata().map_err(io(&path))?.len();
                let shown = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                if len > MAX_FILE_BYTES {
                    malformed.push(Malformed { source: shown, reason: format!("larger than {MAX_FILE_BYTES} bytes") });
                    continue;
                }
                let bytes = fs::read(&path).map_err(io(&path))?;
                sink(shown, bytes);
            }
        }
        // Depth-first in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Calls `sink` with every `*.json` entry of the zip archive at `path`; unreadable entries go to `malformed`.
pub fn walk_zip(
    path: &Path,
    sink: &mut dyn FnMut(String, Vec<u8>),
    malformed: &mut Vec<Malformed>,
) -> Result<(), ImportError> {
    let file = fs::File::open(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|source| ImportError::Zip { path: path.to_path_buf(), source })?;
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                malformed.push(Malformed { source: format!("entry #{i}"), reason: format!("unreadable entry: {e}") });
                continue;
            }
        };
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(e) => {
                malformed.push(Malformed { source: format!("entry #{i}"), reason: format!("bad entry name: {e}") });
                continue;
            }
        };
        if !entry.is_file() || !name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        if entry.size() > MAX_FILE_BYTES {
            malformed.push(Malformed { source: name, reason: format!("larger than {MAX_FILE_BYTES} bytes") });
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        match (&mut entry).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            Ok(n) if n as u64 > MAX_FILE_BYTES => {
                malformed.push(Malformed { source: name, reason: format!("larger than {MAX_FILE_BYTES} bytes") });
            }
            Ok(_) => sink(name, bytes),
            Err(e) => malformed.push(Malformed { source: name, reason: format!("cannot decompress: {e}") }),
        }
    }
    Ok(())
}
