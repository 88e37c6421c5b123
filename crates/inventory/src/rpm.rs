//! RPM database readers. Both backends store the same thing, one RPM header blob per installed package:
//! - `rpmdb.sqlite` (rpm ≥ 4.16: RHEL 9, Fedora, SUSE): table `Packages(hnum, blob)`. The file is deserialised
//!   straight from the tar stream into SQLite's memory with `sqlite3_deserialize` (rusqlite `serialize`): no
//!   temporary file. A WAL-mode header is switched to rollback mode first (an in-memory database cannot do WAL).
//! - Berkeley DB `Packages` (rpm < 4.16: RHEL ≤ 8, CentOS 7): a hash database; the blobs sit in overflow page
//!   chains (or inline for small ones), read here page by page without libdb.
//!
//! The header blob ("index entries + data store"): `il` and `dl` (u32 BE), `il` entries of 16 bytes
//! (tag, type, offset, count; BE), then `dl` bytes of data. Tags read: NAME 1000, VERSION 1001, RELEASE 1002,
//! EPOCH 1003, ARCH 1022, SOURCERPM 1044. Must never trust an offset or length it has not bounds-checked.

use std::io::{Cursor, Read};

use crate::{Package, PackageKind};

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The fields of one header the inventory needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub epoch: Option<u32>,
    pub arch: Option<String>,
    pub source_rpm: Option<String>,
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses a header blob as stored in the rpmdb (no leading 8-byte magic).
pub fn parse_header(blob: &[u8]) -> Result<Header, String> {
    let il = be32(blob, 0).ok_or("header shorter than 8 bytes")? as usize;
    let dl = be32(blob, 4).ok_or("header shorter than 8 bytes")? as usize;
    if il == 0 || il > 0xffff || dl > 256 * 1024 * 1024 {
        return Err(format!("implausible header sizes (il {il}, dl {dl})"));
    }
    let store_at = 8 + il * 16;
    let store = blob.get(store_at..store_at + dl).ok_or("header truncated")?;
    let mut header = Header::default();
    for i in 0..il {
        let at = 8 + i * 16;
        let (Some(tag), Some(kind), Some(offset), Some(count)) =
            (be32(blob, at), be32(blob, at + 4), be32(blob, at + 8), be32(blob, at + 12))
        else {
            return Err("header index truncated".into());
        };
        let offset = offset as usize;
        let string = || -> Option<String> {
            if !matches!(kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || count == 0 {
                return None;
            }
            let rest = store.get(offset..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        match tag {
            TAG_NAME => header.name = string(),
            TAG_VERSION => header.version = string(),
            TAG_RELEASE => header.release = string(),
            TAG_ARCH => header.arch = string(),
            TAG_SOURCERPM => header.source_rpm = string(),
            TAG_EPOCH if kind == TYPE_INT32 && count >= 1 => header.epoch = be32(store, offset),
            _ => {}
        }
    }
    Ok(header)
}

/// `name-version-release.src.rpm` → (`name`, `version-release`).
fn split_source_rpm(source: &str) -> Option<(String, String)> {
    let base = source.strip_suffix(".src.rpm").or_else(|| source.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some((name.to_string(), format!("{version}-{release}")))
}

/// Turns a header into a package; `None` for headers without NAME/VERSION and for imported `gpg-pubkey`s.
fn to_package(header: Header, path: &str) -> Option<Package> {
    let name = header.name?;
    if name == "gpg-pubkey" {
        return None;
    }
    let epoch = header.epoch.map(|e| format!("{e}:")).unwrap_or_default();
    let version = match header.release {
        Some(release) => format!("{epoch}{}-{release}", header.version?),
        None => format!("{epoch}{}", header.version?),
    };
    let mut package = Package::new(PackageKind::Rpm, name, version, path);
    package.arch = header.arch;
    if let Some((source_name, source_version)) = header.source_rpm.as_deref().and_then(split_source_rpm) {
        package.source_name = Some(source_name);
        package.source_version = Some(format!("{epoch}{source_version}"));
    }
    Some(package)
}

fn packages_from_blobs(blobs: impl IntoIterator<Item = Vec<u8>>, path: &str) -> Result<Vec<Package>, String> {
    let mut packages = Vec::new();
    let mut bad = 0usize;
    for blob in blobs {
        match parse_header(&blob) {
            Ok(header) => packages.extend(to_package(header, path)),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 && packages.is_empty() {
        return Err(format!("{bad} rpm headers could not be parsed"));
    }
    Ok(packages)
}

/// Reads `rpmdb.sqlite` of `size` bytes from `reader` into an in-memory SQLite database.
pub fn read_sqlite(reader: impl Read, size: u64, path: &str) -> Result<Vec<Package>, String> {
    let size = usize::try_from(size).map_err(|_| "database too large".to_string())?;
    let mut reader = reader;
    let mut head = vec![0u8; size.min(100)];
    reader.read_exact(&mut head).map_err(|e| format!("read failed: {e}"))?;
    if !head.starts_with(b"SQLite format 3\0") {
        return Err("not an SQLite database".into());
    }
    // Bytes 18/19 are the write/read format versions: 2 means WAL, which deserialised databases cannot open.
    if head.len() >= 20 {
        for byte in &mut head[18..20] {
            if *byte == 2 {
                *byte = 1;
            }
        }
    }
    let mut conn = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    conn.deserialize_read_exact(rusqlite::MAIN_DB, Cursor::new(head).chain(reader), size, true)
        .map_err(|e| format!("cannot load the database: {e}"))?;
    let mut statement = conn.prepare("SELECT blob FROM Packages").map_err(|e| format!("not an rpmdb: {e}"))?;
    let blobs = statement
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    packages_from_blobs(blobs, path)
}

/// Reads a Berkeley DB hash `Packages` file held in memory.
pub fn read_bdb(data: &[u8], path: &str) -> Result<Vec<Package>, String> {
    packages_from_blobs(bdb::values(data)?, path)
}

mod bdb {
    //! Berkeley DB hash database, read only as far as rpm uses it: the metadata page, hash pages
    //! (`P_HASH`, `P_HASH_UNSORTED`) holding key/data pairs, and overflow page chains for big data items.

    const HASH_MAGIC: u32 = 0x0006_1561;
    const PAGE_HEADER: usize = 26;
    const P_HASH_UNSORTED: u8 = 2;
    const P_OVERFLOW: u8 = 7;
    const P_HASH: u8 = 13;
    const H_KEYDATA: u8 = 1;
    const H_OFFPAGE: u8 = 3;

    struct Db<'a> {
        data: &'a [u8],
        little: bool,
        page_size: usize,
    }

    impl Db<'_> {
        fn u32(&self, at: usize) -> Option<u32> {
            let b = self.data.get(at..at + 4)?;
            let b = [b[0], b[1], b[2], b[3]];
            Some(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
        }
        fn u16(&self, at: usize) -> Option<u16> {
            let b = self.data.get(at..at + 2)?;
            Some(if self.little { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) })
        }
        fn page(&self, pgno: u32) -> Option<&[u8]> {
            let start = (pgno as usize).checked_mul(self.page_size)?;
            self.data.get(start..start + self.page_size)
        }

        /// Follows an overflow chain from `pgno`, collecting `total` bytes.
        fn overflow(&self, mut pgno: u32, total: usize) -> Result<Vec<u8>, String> {
            let mut out = Vec::with_capacity(total.min(self.data.len()));
            let mut hops = 0usize;
            while pgno != 0 && out.len() < total {
                let page = self.page(pgno).ok_or("overflow page out of range")?;
                let start = pgno as usize * self.page_size;
                if page[25] != P_OVERFLOW {
                    return Err(format!("page {pgno} is not an overflow page"));
                }
                let used = self.u16(start + 22).ok_or("bad page")? as usize;
                let chunk = page.get(PAGE_HEADER..PAGE_HEADER + used).ok_or("overflow length out of range")?;
                out.extend_from_slice(chunk);
                pgno = self.u32(start + 16).ok_or("bad page")?;
                hops += 1;
                if hops > self.data.len() / self.page_size {
                    return Err("overflow chain loops".into());
                }
            }
            out.truncate(total);
            Ok(out)
        }
    }

    /// Every data item (the odd items of each hash page) in page order.
    pub fn values(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let magic_le = data.get(12..16).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let little = match magic_le {
            Some(HASH_MAGIC) => true,
            Some(m) if m.swap_bytes() == HASH_MAGIC => false,
            _ => return Err("not a Berkeley DB hash database".into()),
        };
        let mut db = Db { data, little, page_size: 0 };
        db.page_size = db.u32(20).ok_or("truncated metadata page")? as usize;
        if !(512..=65536).contains(&db.page_size) || !db.page_size.is_power_of_two() {
            return Err(format!("implausible page size {}", db.page_size));
        }
        let last = db.u32(32).ok_or("truncated metadata page")?;
        let mut values = Vec::new();
        for pgno in 1..=last {
            let Some(page) = db.page(pgno) else { break };
            if page[25] != P_HASH && page[25] != P_HASH_UNSORTED {
                continue;
            }
            let start = pgno as usize * db.page_size;
            let entries = db.u16(start + 20).ok_or("bad page")? as usize;
            let offsets: Vec<usize> = (0..entries)
                .map(|i| db.u16(start + PAGE_HEADER + 2 * i).map(usize::from))
                .collect::<Option<_>>()
                .ok_or("bad item index")?;
            for i in (1..entries).step_by(2) {
                let off = offsets[i];
                let end = offsets[i - 1].min(db.page_size);
                let item = page.get(off..).ok_or("item offset out of range")?;
                match item.first() {
                    Some(&H_OFFPAGE) => {
                        let pgno = db.u32(start + off + 4).ok_or("bad off-page item")?;
                        let total = db.u32(start + off + 8).ok_or("bad off-page item")? as usize;
                        values.push(db.overflow(pgno, total)?);
                    }
                    Some(&H_KEYDATA) if end > off => values.push(page[off + 1..end].to_vec()),
                    _ => {}
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a header blob the way rpm lays it out: index entries, then the data store.
    fn blob(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store = Vec::new();
        for (tag, kind, value) in entries {
            while *kind == TYPE_INT32 && store.len() % 4 != 0 {
                store.push(0);
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(store.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            store.extend_from_slice(value);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn header_fields() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, s("bash")),
            (TAG_VERSION, TYPE_STRING, s("5.1.8")),
            (TAG_RELEASE, TYPE_STRING, s("9.el9")),
            (TAG_EPOCH, TYPE_INT32, 2u32.to_be_bytes().to_vec()),
            (TAG_ARCH, TYPE_STRING, s("x86_64")),
            (TAG_SOURCERPM, TYPE_STRING, s("bash-5.1.8-9.el9.src.rpm")),
        ]);
        let p = to_package(parse_header(&b).unwrap(), "var/lib/rpm/rpmdb.sqlite").unwrap();
        assert_eq!(p.name, "bash");
        assert_eq!(p.version, "2:5.1.8-9.el9");
        assert_eq!(p.arch.as_deref(), Some("x86_64"));
        assert_eq!(p.source_name.as_deref(), Some("bash"));
        assert_eq!(p.source_version.as_deref(), Some("2:5.1.8-9.el9"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_header(&[0, 0]).is_err());
        assert!(parse_header(&[0, 0, 0, 200, 0, 0, 0, 10]).is_err());
        assert!(bdb::values(b"definitely not a database").is_err());
        assert_eq!(
            split_source_rpm("python3.11-3.11.5-1.el9.src.rpm"),
            Some(("python3.11".into(), "3.11.5-1.el9".into()))
        );
    }
}
