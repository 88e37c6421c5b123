//! A small read-only zip reader over bytes in memory, for Java archives: the end-of-central-directory record
//! (with ZIP64), central directory entries, and stored or deflated members. Tolerates data prepended to the
//! archive (executable Spring Boot jars start with a shell script). Must never inflate past a cap.

use std::io::Read;

const EOCD: u32 = 0x0605_4b50;
const EOCD64_LOCATOR: u32 = 0x0706_4b50;
const EOCD64: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    method: u16,
    compressed: u64,
    pub size: u64,
    local_offset: u64,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    d.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

pub struct Archive<'a> {
    data: &'a [u8],
    /// Bytes before the archive proper (offsets in the directory are relative to its start).
    prefix: u64,
    pub entries: Vec<Entry>,
}

impl<'a> Archive<'a> {
    pub fn open(data: &'a [u8]) -> Result<Self, String> {
        let lowest = data.len().saturating_sub(22 + 65535);
        let eocd = (lowest..=data.len().saturating_sub(22))
            .rev()
            .find(|&at| u32_at(data, at) == Some(EOCD))
            .ok_or("no end of central directory: not a zip archive")?;
        let mut count = u64::from(u16_at(data, eocd + 10).ok_or("truncated")?);
        let mut cd_size = u64::from(u32_at(data, eocd + 12).ok_or("truncated")?);
        let mut cd_offset = u64::from(u32_at(data, eocd + 16).ok_or("truncated")?);
        let mut directory_end = eocd as u64;
        if (count == 0xffff || cd_offset == 0xffff_ffff)
            && eocd >= 20
            && u32_at(data, eocd - 20) == Some(EOCD64_LOCATOR)
        {
            let at = u64_at(data, eocd - 20 + 8).ok_or("truncated zip64 locator")? as usize;
            // The locator's offset is relative to the archive start; find the record just before the locator.
            let record = (0..=eocd - 20).rev().take(1 << 16).find(|&p| u32_at(data, p) == Some(EOCD64)).unwrap_or(at);
            count = u64_at(data, record + 32).ok_or("truncated zip64 record")?;
            cd_size = u64_at(data, record + 40).ok_or("truncated zip64 record")?;
            cd_offset = u64_at(data, record + 48).ok_or("truncated zip64 record")?;
            directory_end = record as u64;
        }
        let prefix = directory_end.checked_sub(cd_size).and_then(|start| start.checked_sub(cd_offset)).unwrap_or(0);
        let mut at = usize::try_from(prefix + cd_offset).map_err(|_| "bad offset")?;
        let mut entries = Vec::new();
        for _ in 0..count {
            if u32_at(data, at) != Some(CENTRAL) {
                return Err("corrupt central directory".into());
            }
            let method = u16_at(data, at + 10).ok_or("truncated")?;
            let mut compressed = u64::from(u32_at(data, at + 20).ok_or("truncated")?);
            let mut size = u64::from(u32_at(data, at + 24).ok_or("truncated")?);
            let name_len = u16_at(data, at + 28).ok_or("truncated")? as usize;
            let extra_len = u16_at(data, at + 30).ok_or("truncated")? as usize;
            let comment_len = u16_at(data, at + 32).ok_or("truncated")? as usize;
            let mut local_offset = u64::from(u32_at(data, at + 42).ok_or("truncated")?);
            let name = data.get(at + 46..at + 46 + name_len).ok_or("truncated")?;
            let extra = data.get(at + 46 + name_len..at + 46 + name_len + extra_len).ok_or("truncated")?;
            // ZIP64 extra field: 64-bit values for those fields that are 0xffffffff, in this order.
            let mut e = 0;
            while e + 4 <= extra.len() {
                let (id, len) = (u16_at(extra, e).unwrap_or(0), u16_at(extra, e + 2).unwrap_or(0) as usize);
                if id == 1 {
                    let mut v = e + 4;
                    for field in [&mut size, &mut compressed, &mut local_offset] {
                        if *field == 0xffff_ffff {
                            *field = u64_at(extra, v).ok_or("truncated zip64 field")?;
                            v += 8;
                        }
                    }
                }
                e += 4 + len;
            }
            entries.push(Entry {
                name: String::from_utf8_lossy(name).into_owned(),
                method,
                compressed,
                size,
                local_offset,
            });
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(Archive { data, prefix, entries })
    }

    /// The contents of `entry`, refusing anything that would exceed `cap` bytes.
    pub fn read(&self, entry: &Entry, cap: u64) -> Result<Vec<u8>, String> {
        if entry.size > cap {
            return Err(format!("{} is {} bytes, over the {cap}-byte cap", entry.name, entry.size));
        }
        let at = usize::try_from(self.prefix + entry.local_offset).map_err(|_| "bad offset")?;
        if u32_at(self.data, at) != Some(LOCAL) {
            return Err(format!("{}: bad local header", entry.name));
        }
        let name_len = u16_at(self.data, at + 26).ok_or("truncated")? as usize;
        let extra_len = u16_at(self.data, at + 28).ok_or("truncated")? as usize;
        let start = at + 30 + name_len + extra_len;
        let end = start.checked_add(usize::try_from(entry.compressed).map_err(|_| "bad size")?).ok_or("bad size")?;
        let raw = self.data.get(start..end).ok_or_else(|| format!("{}: data past the end", entry.name))?;
        match entry.method {
            0 => Ok(raw.to_vec()),
            8 => {
                let mut out = Vec::with_capacity(entry.size as usize);
                flate2::read::DeflateDecoder::new(raw)
                    .take(cap + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("{}: {e}", entry.name))?;
                if out.len() as u64 > cap {
                    return Err(format!("{} inflates past the {cap}-byte cap", entry.name));
                }
                Ok(out)
            }
            m => Err(format!("{}: unsupported compression method {m}", entry.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_zip() {
        assert!(Archive::open(b"PK but not really").is_err());
        assert!(Archive::open(&[]).is_err());
    }
}
