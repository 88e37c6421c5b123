//! Byte ranges: an upload's `Content-Range` parses into `start <= end` with a length that cannot
//! overflow, and a blob `Range` header resolves only to a non-empty range inside the blob.
#![no_main]

use entrepot_oci::{ByteRange, ContentRange, RangeError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64, u8)| {
    let (header, size, shape) = input;
    // Small sizes are where the edge cases are; keep some of them.
    let size = match shape % 4 {
        0 => size % 16,
        1 => size % 4096,
        _ => size,
    };

    if let Ok(r) = ContentRange::parse(header) {
        assert!(r.start <= r.end, "{header:?} -> {r:?}");
        let len = r.end.checked_sub(r.start).and_then(|n| n.checked_add(1)).expect("length fits in u64");
        assert_eq!(r.len(), len);
        assert!(!r.is_empty());
    }

    match ByteRange::resolve(header, size) {
        Ok(r) => {
            assert!(size > 0, "{header:?} resolved against an empty blob: {r:?}");
            assert!(r.len >= 1, "{header:?} / {size} -> empty {r:?}");
            assert!(r.start < size, "{header:?} / {size} -> {r:?}");
            let end = r.start.checked_add(r.len).expect("start + len overflows");
            assert!(end <= size, "{header:?} / {size} -> {r:?} ends past the blob");
            assert_eq!(r.end_inclusive(), end - 1);
        }
        Err(RangeError::Malformed | RangeError::Unsatisfiable) => {}
    }
});
