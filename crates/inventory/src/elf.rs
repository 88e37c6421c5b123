//! A minimal ELF reader over bytes in memory: class (32/64), byte order, section headers with names, and
//! program headers to map virtual addresses to file offsets. Enough to find `.go.buildinfo` and `.dep-v0`;
//! must never index the file without a bounds check (every read returns `Option`).

pub struct Section {
    pub name: String,
    pub kind: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

pub struct Elf<'a> {
    pub data: &'a [u8],
    pub sections: Vec<Section>,
    segments: Vec<Segment>,
}

const SHT_NOBITS: u32 = 8;
const PT_LOAD: u32 = 1;

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..4)? != b"\x7fELF" {
            return None;
        }
        let is64 = match *data.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match *data.get(5)? {
            1 => true,
            2 => false,
            _ => return None,
        };
        let r = Reader { data, little };
        let word = |at: usize| if is64 { r.u64(at) } else { r.u32(at).map(u64::from) };
        let (phoff, shoff) = if is64 { (r.u64(0x20)?, r.u64(0x28)?) } else { (word(0x1c)?, word(0x20)?) };
        let base = if is64 { 0x36 } else { 0x2a };
        let (phentsize, phnum, shentsize, shnum, shstrndx) =
            (r.u16(base)?, r.u16(base + 2)?, r.u16(base + 4)?, r.u16(base + 6)?, r.u16(base + 8)?);
        let mut segments = Vec::new();
        for i in 0..phnum as usize {
            let at = usize::try_from(phoff).ok()? + i * phentsize as usize;
            let seg = if is64 {
                (r.u32(at)?, r.u64(at + 8)?, r.u64(at + 16)?, r.u64(at + 32)?)
            } else {
                (r.u32(at)?, word(at + 4)?, word(at + 8)?, word(at + 16)?)
            };
            if seg.0 == PT_LOAD {
                segments.push(Segment { offset: seg.1, vaddr: seg.2, filesz: seg.3 });
            }
        }
        let mut raw = Vec::new();
        for i in 0..shnum as usize {
            let at = usize::try_from(shoff).ok()? + i * shentsize as usize;
            let sec = if is64 {
                (r.u32(at)?, r.u32(at + 4)?, r.u64(at + 16)?, r.u64(at + 24)?, r.u64(at + 32)?)
            } else {
                (r.u32(at)?, r.u32(at + 4)?, word(at + 12)?, word(at + 16)?, word(at + 20)?)
            };
            raw.push(sec);
        }
        let names = raw.get(shstrndx as usize).and_then(|&(_, _, _, off, size)| slice(data, off, size));
        let sections = raw
            .into_iter()
            .map(|(name_off, kind, addr, offset, size)| {
                let name = names
                    .and_then(|n| n.get(name_off as usize..))
                    .and_then(|n| {
                        n.iter().position(|&b| b == 0).map(|end| String::from_utf8_lossy(&n[..end]).into_owned())
                    })
                    .unwrap_or_default();
                Section { name, kind, addr, offset, size }
            })
            .collect();
        Some(Elf { data, sections, segments })
    }

    /// The file bytes of the named section (not for `SHT_NOBITS`).
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.name == name && s.kind != SHT_NOBITS)?;
        slice(self.data, s.offset, s.size)
    }

    /// `len` bytes at virtual address `addr`, through the loadable segments (or sections when there are none).
    pub fn at_vaddr(&self, addr: u64, len: u64) -> Option<&'a [u8]> {
        for seg in &self.segments {
            if addr >= seg.vaddr && addr.checked_add(len)? <= seg.vaddr + seg.filesz {
                return slice(self.data, seg.offset + (addr - seg.vaddr), len);
            }
        }
        for s in &self.sections {
            if s.kind != SHT_NOBITS && s.addr != 0 && addr >= s.addr && addr.checked_add(len)? <= s.addr + s.size {
                return slice(self.data, s.offset + (addr - s.addr), len);
            }
        }
        None
    }
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

struct Reader<'a> {
    data: &'a [u8],
    little: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.data.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        let b = self.bytes::<2>(at)?;
        Some(if self.little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let b = self.bytes::<4>(at)?;
        Some(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
    fn u64(&self, at: usize) -> Option<u64> {
        let b = self.bytes::<8>(at)?;
        Some(if self.little { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    }
}

/// Reads an unsigned integer of `size` bytes (4 or 8) in the given byte order.
pub fn read_uint(data: &[u8], size: usize, little: bool) -> Option<u64> {
    let r = Reader { data, little };
    match size {
        4 => r.u32(0).map(u64::from),
        8 => r.u64(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_truncated() {
        assert!(Elf::parse(b"#!/bin/sh\necho hi\n").is_none());
        assert!(Elf::parse(b"\x7fELF\x02\x01\x01").is_none());
    }

    #[test]
    fn reads_this_test_binary() {
        // The test executable itself is a real ELF file with the usual sections.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = Elf::parse(&exe).unwrap();
        assert!(elf.section(".text").is_some_and(|t| !t.is_empty()));
        let text = elf.sections.iter().find(|s| s.name == ".text").unwrap();
        assert_eq!(elf.at_vaddr(text.addr, 16), elf.section(".text").map(|t| &t[..16]));
    }
}
