//! Go build info embedded in executables (what `go version -m` prints). The `.go.buildinfo` blob starts with
//! the 14-byte magic `\xff Go buildinf:`, 16-byte aligned, then the pointer size and a flags byte:
//! - Go ≥ 1.18 (flag bit 2): the version and module info follow inline at offset 32 as uvarint-length strings;
//! - older: two pointers (version, module info) to Go string headers, resolved through the ELF segments.
//!
//! Module info lines: `path`, `mod` (main module), `dep` (dependencies), `=>` (replacement of the line
//! above), `build` (settings). Must never read past a bound or follow a pointer outside the file.

use std::io::{self, Read};

use crate::elf::{Elf, read_uint};
use crate::{Package, PackageKind};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const ALIGN: usize = 16;

/// What the build info says, before it becomes packages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    pub go_version: String,
    pub main: Option<(String, String)>,
    pub deps: Vec<(String, String)>,
}

fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn inline_strings(data: &[u8]) -> Option<(String, String)> {
    let mut at = 32;
    let mut next = || -> Option<String> {
        let (len, used) = uvarint(data.get(at..)?)?;
        let start = at + used;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        at = end;
        Some(String::from_utf8_lossy(data.get(start..end)?).into_owned())
    };
    let version = next()?;
    let modinfo = next()?;
    Some((version, modinfo))
}

/// Reads a Go string header (data pointer, length) at `addr` and the bytes it points to.
fn go_string(elf: &Elf<'_>, addr: u64, ptr_size: usize, little: bool) -> Option<String> {
    let header = elf.at_vaddr(addr, 2 * ptr_size as u64)?;
    let data_ptr = read_uint(header, ptr_size, little)?;
    let len = read_uint(&header[ptr_size..], ptr_size, little)?;
    if len > 16 * 1024 * 1024 {
        return None;
    }
    Some(String::from_utf8_lossy(elf.at_vaddr(data_ptr, len)?).into_owned())
}

/// Parses the blob that starts with the magic; `elf` resolves the pointers of the pre-1.18 form.
fn parse_blob(blob: &[u8], elf: Option<&Elf<'_>>) -> Option<BuildInfo> {
    let ptr_size = *blob.get(14)? as usize;
    let flags = *blob.get(15)?;
    let (version, modinfo) = if flags & 2 != 0 {
        inline_strings(blob)?
    } else {
        let elf = elf?;
        let little = flags & 1 == 0;
        if ptr_size != 4 && ptr_size != 8 {
            return None;
        }
        let version_ptr = read_uint(blob.get(16..)?, ptr_size, little)?;
        let modinfo_ptr = read_uint(blob.get(16 + ptr_size..)?, ptr_size, little)?;
        (
            go_string(elf, version_ptr, ptr_size, little)?,
            go_string(elf, modinfo_ptr, ptr_size, little).unwrap_or_default(),
        )
    };
    if !version.starts_with("go") && !version.starts_with("devel") {
        return None;
    }
    Some(parse_modinfo(&version, &modinfo))
}

/// Module info is wrapped in 16-byte sentinels when it comes from the binary.
fn parse_modinfo(version: &str, modinfo: &str) -> BuildInfo {
    let bytes = modinfo.as_bytes();
    let modinfo = if bytes.len() >= 33 && bytes[bytes.len() - 17] == b'\n' {
        String::from_utf8_lossy(&bytes[16..bytes.len() - 16]).into_owned()
    } else {
        modinfo.to_string()
    };
    let mut info =
        BuildInfo { go_version: version.split_whitespace().next().unwrap_or("").to_string(), ..Default::default() };
    let mut last_was_dep = false;
    for line in modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["mod", path, version, ..] => {
                info.main = Some((path.to_string(), version.to_string()));
                last_was_dep = false;
            }
            ["dep", path, version, ..] => {
                info.deps.push((path.to_string(), version.to_string()));
                last_was_dep = true;
            }
            ["=>", path, version, ..] if last_was_dep && !version.is_empty() && *version != "(devel)" => {
                // A module replacement with a version: that module is what was built in.
                if let Some(dep) = info.deps.last_mut() {
                    *dep = (path.to_string(), version.to_string());
                }
            }
            _ => {}
        }
    }
    info
}

fn to_packages(info: BuildInfo, path: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    if let Some(v) = info.go_version.strip_prefix("go") {
        packages.push(Package::new(PackageKind::Go, "stdlib", format!("v{v}"), path));
    }
    if let Some((name, version)) = info.main {
        packages.push(Package::new(PackageKind::Go, name, version, path));
    }
    for (name, version) in info.deps {
        packages.push(Package::new(PackageKind::Go, name, version, path));
    }
    packages
}

fn find_magic(data: &[u8], base_offset: usize) -> Option<usize> {
    let mut at = (ALIGN - base_offset % ALIGN) % ALIGN;
    while at + MAGIC.len() <= data.len() {
        if data[at] == 0xff && &data[at..at + MAGIC.len()] == MAGIC {
            return Some(at);
        }
        at += ALIGN;
    }
    None
}

/// Build info of an ELF executable in memory, as packages (empty when it is not a Go binary).
pub fn from_elf(elf: &Elf<'_>, path: &str) -> Vec<Package> {
    let (area, base) = match elf.sections.iter().find(|s| s.name == ".go.buildinfo") {
        Some(s) => (elf.section(".go.buildinfo").unwrap_or(&[]), s.offset as usize),
        None => (elf.data, 0),
    };
    let Some(at) = find_magic(area, base) else { return Vec::new() };
    parse_blob(&area[at..], Some(elf)).map(|info| to_packages(info, path)).unwrap_or_default()
}

/// Streams an executable too big to hold, looking for Go ≥ 1.18 inline build info with bounded memory
/// (one chunk plus what follows the magic). `Ok(None)` when there is none (or only the pointer form).
pub fn scan_stream(mut reader: impl Read, path: &str) -> io::Result<Option<Vec<Package>>> {
    const CHUNK: usize = 1 << 20;
    const AFTER: usize = 1 << 20;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + AFTER);
    let mut base = 0usize;
    let mut eof = false;
    let mut fill = |buf: &mut Vec<u8>, want: usize, eof: &mut bool| -> io::Result<()> {
        while !*eof && buf.len() < want {
            let start = buf.len();
            buf.resize(want, 0);
            let n = reader.read(&mut buf[start..])?;
            buf.truncate(start + n);
            if n == 0 {
                *eof = true;
            }
        }
        Ok(())
    };
    loop {
        fill(&mut buf, CHUNK, &mut eof)?;
        if let Some(at) = find_magic(&buf, base) {
            fill(&mut buf, at + AFTER, &mut eof)?;
            return Ok(parse_blob(&buf[at..], None).map(|info| to_packages(info, path)));
        }
        if eof {
            return Ok(None);
        }
        let keep_from = buf.len().saturating_sub(MAGIC.len());
        let keep_from = keep_from - (base + keep_from) % ALIGN;
        buf.drain(..keep_from);
        base += keep_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline_blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.push(8);
        blob.push(2);
        blob.resize(32, 0);
        for s in [version, modinfo] {
            let mut len = s.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                blob.push(if len > 0 { b | 0x80 } else { b });
                if len == 0 {
                    break;
                }
            }
            blob.extend_from_slice(s.as_bytes());
        }
        blob
    }

    const MODINFO: &str = "0123456789abcdef\
path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\n\
dep\tgolang.org/x/text\tv0.3.7\th1:abc=\n\
dep\texample.com/lib\tv1.0.0\t\n=>\t../lib\t(devel)\t\n\
dep\tgithub.com/old/mod\tv1.0.0\t\n=>\tgithub.com/new/mod\tv1.2.0\th1:x=\n\
build\tGOARCH=amd64\n\
0123456789abcdef";

    #[test]
    fn inline_form_in_a_stream() {
        let mut file = vec![0u8; 3 * (1 << 20) + 48];
        let blob = inline_blob("go1.21.5", MODINFO);
        file.extend_from_slice(&blob);
        file.extend_from_slice(&[0u8; 100]);
        let packages = scan_stream(io::Cursor::new(&file), "bin/hello").unwrap().unwrap();
        let got: Vec<_> = packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
        assert_eq!(
            got,
            vec![
                "stdlib v1.21.5",
                "example.com/hello (devel)",
                "golang.org/x/text v0.3.7",
                "example.com/lib v1.0.0",
                "github.com/new/mod v1.2.0"
            ]
        );
        // Unaligned magic is not build info.
        let mut shifted = vec![0u8; 3];
        shifted.extend_from_slice(&blob);
        assert_eq!(scan_stream(io::Cursor::new(&shifted), "x").unwrap(), None);
    }
}
