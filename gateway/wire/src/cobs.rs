//! Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): removes every
//! 0x00 from a frame so that 0x00 can delimit frames on a byte stream and a
//! receiver can resynchronize at the next 0x00 after any damage.
//!
//! Written here rather than taken from a crate so the exact behaviour on
//! malformed input (always an error, never a panic) is ours to test.

use alloc::vec::Vec;

/// Why a COBS block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CobsError {
    /// A 0x00 inside the encoded data (the caller should have split there).
    #[error("zero byte inside a COBS block")]
    ZeroByte,
    /// A code byte points past the end of the data.
    #[error("COBS block truncated")]
    Truncated,
}

/// Largest encoded length of `n` data bytes (no delimiter).
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Append the COBS encoding of `data` to `out` (no delimiter).
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(max_encoded_len(data.len()));
    let mut code_at = out.len();
    out.push(0); // placeholder for the first code byte
    let mut code: u8 = 1;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
}

/// Decode one COBS block (without its delimiter), appending to `out`.
pub fn decode_into(data: &[u8], out: &mut Vec<u8>) -> Result<(), CobsError> {
    let mut i = 0;
    while i < data.len() {
        let code = data[i];
        if code == 0 {
            return Err(CobsError::ZeroByte);
        }
        let run = usize::from(code) - 1;
        let end = i + 1 + run;
        let Some(block) = data.get(i + 1..end) else {
            return Err(CobsError::Truncated);
        };
        if block.contains(&0) {
            return Err(CobsError::ZeroByte);
        }
        out.extend_from_slice(block);
        i = end;
        // A code of 0xFF means "254 bytes, no zero follows"; any other code
        // implies a zero, except at the very end of the block.
        if code != 0xFF && i < data.len() {
            out.push(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn round_trip(data: &[u8]) {
        let mut enc = Vec::new();
        encode_into(data, &mut enc);
        assert!(!enc.contains(&0), "{data:?} -> {enc:?}");
        assert!(enc.len() <= max_encoded_len(data.len()));
        let mut dec = Vec::new();
        decode_into(&enc, &mut dec).expect("decodes");
        assert_eq!(dec, data);
    }

    #[test]
    fn known_vectors() {
        // From the Wikipedia article's examples.
        let cases: [(&[u8], &[u8]); 5] = [
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
        ];
        for (raw, enc) in cases {
            let mut out = Vec::new();
            encode_into(raw, &mut out);
            assert_eq!(out, enc);
            round_trip(raw);
        }
    }

    #[test]
    fn long_runs_round_trip() {
        for n in [0, 1, 253, 254, 255, 508, 509, 1000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 255 + 1) as u8).collect();
            round_trip(&data);
            let mut with_zeros = data.clone();
            with_zeros.push(0);
            round_trip(&with_zeros);
        }
        round_trip(&vec![0u8; 600]);
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut out = Vec::new();
        assert_eq!(
            decode_into(&[0x05, 1, 2], &mut out),
            Err(CobsError::Truncated)
        );
        assert_eq!(
            decode_into(&[0x03, 1, 0], &mut out),
            Err(CobsError::ZeroByte)
        );
        assert_eq!(decode_into(&[0x00], &mut out), Err(CobsError::ZeroByte));
    }
}
