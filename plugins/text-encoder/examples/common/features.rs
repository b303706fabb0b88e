//! The encoder's pooled features of every EmoBank sentence, computed with the
//! embedded int8 encoder (two threads) and cached in the system's temporary
//! directory, keyed by a hash of the encoder blob and of the texts.

use std::path::PathBuf;

use emotion_plugin_text_encoder::head::ENCODER_FEATURES;
use emotion_plugin_text_encoder::{ENCODER_BLOB, Model};

use crate::common::{Row, fail};

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub fn features(model: &Model, rows: &[Row]) -> Vec<Vec<f32>> {
    let mut key = fnv(ENCODER_BLOB, 0xcbf2_9ce4_8422_2325);
    for r in rows {
        key = fnv(r.text.as_bytes(), key);
    }
    let cache = std::env::temp_dir().join(format!("emotion-text-encoder-features-{key:016x}.bin"));
    if let Some(f) = read_cache(&cache, rows.len()) {
        eprintln!("features: cached in {}", cache.display());
        return f;
    }
    let ids: Vec<Vec<u32>> = rows.iter().map(|r| model.tokenize(&r.text).ids).collect();
    let start = std::time::Instant::now();
    let half = ids.len().div_ceil(2);
    let out: Vec<Vec<f32>> = std::thread::scope(|s| {
        let jobs: Vec<_> = ids
            .chunks(half.max(1))
            .map(|part| {
                s.spawn(move || {
                    part.chunks(16)
                        .flat_map(|c| model.encoder.pooled(c))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter()
            .flat_map(|j| j.join().unwrap_or_else(|_| fail("encoder thread panicked")))
            .collect()
    });
    eprintln!(
        "features: {} sentences in {:.0} s",
        rows.len(),
        start.elapsed().as_secs_f64()
    );
    let mut bytes = Vec::with_capacity(out.len() * ENCODER_FEATURES * 4);
    for f in &out {
        for v in f {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Err(e) = std::fs::write(&cache, bytes) {
        eprintln!("features: cannot cache in {}: {e}", cache.display());
    }
    out
}

fn read_cache(path: &PathBuf, n: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != n * ENCODER_FEATURES * 4 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(ENCODER_FEATURES * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .collect(),
    )
}
