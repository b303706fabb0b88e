//! Salvage: find every intact frame in the raw files of a damaged store,
//! without the storage engine.
//!
//! sled keeps values as contiguous bytes inside its log segments and blob
//! files, so each of our frames (`record.rs`) sits somewhere in those files
//! with its marker, length and checksum. A scan for the markers, verified by
//! the checksums, recovers every frame the damage did not touch, even when
//! sled itself cannot open the files. The same value may appear several times
//! (sled rewrites pages); the copy with the highest generation (batches) or
//! version (metadata) wins.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use hashbrown::HashMap;

use crate::record::{
    self, BATCH_HEADER, BATCH_MAGIC, BatchHeader, META_HEADER, META_MAGIC, PACKED_HEADER,
    PACKED_MAGIC,
};

/// Largest frame we try to read (a batch of many large events).
const MAX_FRAME: usize = 256 << 20;
const CHUNK: usize = 8 << 20;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Newest intact copy of each batch: header and the whole frame.
    pub batches: BTreeMap<u64, (BatchHeader, Vec<u8>)>,
    /// Newest intact frame of each metadata key: version and value (`None`:
    /// removed).
    pub meta: HashMap<String, (u64, Option<Vec<u8>>)>,
    pub files: u64,
    pub bytes: u64,
}

/// Scan every file under `dir`.
pub fn scan_dir(dir: &Path) -> io::Result<Salvaged> {
    let mut out = Salvaged::default();
    visit(dir, &mut out)?;
    Ok(out)
}

fn visit(path: &Path, out: &mut Salvaged) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            visit(&entry?.path(), out)?;
        }
    } else if meta.is_file() {
        scan_file(path, out)?;
    }
    Ok(())
}

/// Scan one file in chunks for frame markers; each candidate is read and
/// verified from the file itself, so a frame may straddle chunks.
pub fn scan_file(path: &Path, out: &mut Salvaged) -> io::Result<()> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    out.files += 1;
    out.bytes += len;
    let mut chunk = vec![0u8; CHUNK + 3];
    let mut base: u64 = 0;
    // The last three bytes of the previous chunk, whose positions could not
    // be checked there (a marker is four bytes).
    let mut carried = 0usize;
    loop {
        let n = read_full(&mut file, &mut chunk[carried..])?;
        let filled = carried + n;
        let mut i = 0;
        while i + 4 <= filled {
            if chunk[i] == record::VERSION && chunk[i + 1] == b'E' && chunk[i + 2] == b'M' {
                let at = base + i as u64;
                let w = &chunk[i..i + 4];
                if w == BATCH_MAGIC {
                    try_batch(&file, at, len, out)?;
                } else if w == PACKED_MAGIC {
                    try_packed(&file, at, len, out)?;
                } else if w == META_MAGIC {
                    try_meta(&file, at, len, out)?;
                }
            }
            i += 1;
        }
        if n == 0 {
            break;
        }
        chunk.copy_within(i..filled, 0);
        base += i as u64;
        carried = filled - i;
    }
    Ok(())
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_at(file: &File, at: u64, len: usize, file_len: u64) -> io::Result<Option<Vec<u8>>> {
    if at.saturating_add(len as u64) > file_len || len > MAX_FRAME {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, at)?;
    Ok(Some(buf))
}

fn try_batch(file: &File, at: u64, file_len: u64, out: &mut Salvaged) -> io::Result<()> {
    let Some(head) = read_at(file, at, BATCH_HEADER, file_len)? else {
        return Ok(());
    };
    let body = u32::from_le_bytes([head[40], head[41], head[42], head[43]]) as usize;
    let Some(frame) = read_at(file, at, BATCH_HEADER + body, file_len)? else {
        return Ok(());
    };
    let Ok((header, _)) = record::check_batch_frame(&frame) else {
        return Ok(());
    };
    keep_batch(out, header, frame);
    Ok(())
}

/// A packed value: every frame in it that verifies.
fn try_packed(file: &File, at: u64, file_len: u64, out: &mut Salvaged) -> io::Result<()> {
    let Some(head) = read_at(file, at, PACKED_HEADER, file_len)? else {
        return Ok(());
    };
    let body = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let Some(value) = read_at(file, at, PACKED_HEADER + body, file_len)? else {
        return Ok(());
    };
    let Ok((frames, _)) = record::decode_packed(&value) else {
        return Ok(());
    };
    let mut rest = frames.as_slice();
    while let Ok((header, len)) = record::check_batch_frame(rest) {
        keep_batch(out, header, rest[..len].to_vec());
        rest = &rest[len..];
    }
    Ok(())
}

/// Keep the copy of a batch with the highest generation.
fn keep_batch(out: &mut Salvaged, header: BatchHeader, frame: Vec<u8>) {
    let keep = out
        .batches
        .get(&header.seq)
        .is_none_or(|(h, _)| header.generation > h.generation);
    if keep {
        out.batches.insert(header.seq, (header, frame));
    }
}

fn try_meta(file: &File, at: u64, file_len: u64, out: &mut Salvaged) -> io::Result<()> {
    let Some(head) = read_at(file, at, META_HEADER, file_len)? else {
        return Ok(());
    };
    let klen = usize::from(u16::from_le_bytes([head[16], head[17]]));
    let vlen = u32::from_le_bytes([head[18], head[19], head[20], head[21]]);
    let body = klen + if vlen == u32::MAX { 0 } else { vlen as usize };
    let Some(frame) = read_at(file, at, META_HEADER + body, file_len)? else {
        return Ok(());
    };
    let Ok((f, _)) = record::check_meta_frame(&frame) else {
        return Ok(());
    };
    let keep = out.meta.get(&f.key).is_none_or(|(v, _)| f.version > *v);
    if keep {
        out.meta.insert(f.key, (f.version, f.value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Slot, encode_batch, encode_meta};
    use crate::testing::sample_events;
    use chrono::Utc;

    fn frame(seq: u64, generation: u32, n: usize) -> Vec<u8> {
        let slots: Vec<Slot> = sample_events(n, "u").into_iter().map(Slot::Event).collect();
        let h = BatchHeader {
            seq,
            generation,
            cum_before: seq * 10,
            slots: n as u32,
            newest_ingest: Utc::now(),
        };
        encode_batch(&h, &slots).expect("encode")
    }

    #[test]
    fn frames_are_found_among_garbage_across_chunk_boundaries_newest_copy_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bytes = vec![0xAAu8; 100];
        bytes.extend_from_slice(&frame(1, 0, 3));
        bytes.extend_from_slice(b"\x02EM"); // a false start
        bytes.extend_from_slice(&frame(2, 0, 2));
        bytes.extend_from_slice(&frame(1, 1, 3)); // rewritten later
        let mut damaged = frame(3, 0, 2);
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        bytes.extend_from_slice(&damaged);
        bytes.extend_from_slice(&encode_meta(4, "consent/u", Some(b"yes")));
        bytes.extend_from_slice(&encode_meta(3, "consent/u", Some(b"old")));
        // Put a frame across the first chunk boundary.
        bytes.resize(CHUNK - 20, 0x55);
        bytes.extend_from_slice(&frame(9, 0, 5));
        bytes.extend_from_slice(&[0x11; 50]);
        // A packed value holding two frames, and a damaged one.
        let mut two = frame(10, 0, 2);
        two.extend_from_slice(&frame(11, 0, 1));
        bytes.extend_from_slice(&crate::record::encode_packed(&two));
        let mut bad = crate::record::encode_packed(&frame(12, 0, 2));
        let mid = bad.len() / 2;
        bad[mid] ^= 4;
        bytes.extend_from_slice(&bad);
        std::fs::write(dir.path().join("f"), &bytes).expect("write");
        let s = scan_dir(dir.path()).expect("scan");
        assert_eq!(
            s.batches.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 9, 10, 11]
        );
        assert_eq!(s.batches[&1].0.generation, 1);
        assert_eq!(s.meta["consent/u"], (4, Some(b"yes".to_vec())));
    }
}
