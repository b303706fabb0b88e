//! all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) forward pass with mean
//! pooling, written out here: ~150 lines against candle's or tract's weight
//! on the wasm32 build, and the matrix products can use the one integer dot
//! product WebAssembly SIMD has (`i32x4.dot_i16x8_s`).
//!
//! Numerics: the matrices are int8 with one scale per output row (built by
//! build.rs); activations entering a matrix product are quantized per token to
//! 7 bits over the token's own range (min..max in 128 steps, the kernel's
//! relaxed dot product's operand), the offset added back with each weight
//! row's sum. Layer norms,
//! attention, GELU and pooling are f32. A batch of sentences shares each pass
//! over the weights: the tokens of all sentences are one matrix, only the
//! attention is per sentence.
//!
//! Blob layout (little-endian, see build.rs): 8-byte magic; word embeddings
//! (matrix); position + token-type-0 embeddings (256×384 f32); embedding layer
//! norm (γ, β); then per layer: QKV matrix (1152×384) and bias, attention
//! output matrix and bias, layer norm, intermediate matrix (1536×384) and
//! bias, output matrix (384×1536) and bias, layer norm. A matrix is its rows
//! (int8, or f32 in the unquantized blob) followed by one f32 scale per row
//! (int8 only).

use std::fmt;

use crate::kernel::{self, Acts, Int8Rows};

pub const HIDDEN: usize = 384;
pub const INTER: usize = 1536;
pub const VOCAB: usize = 30522;
pub const LAYERS: usize = 6;
pub const HEADS: usize = 12;
pub const HEAD_DIM: usize = HIDDEN / HEADS;
/// sentence-transformers' max_seq_length for this model.
pub const MAX_TOKENS: usize = 256;
const LN_EPS: f32 = 1e-12;

/// The blob does not have the expected layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobError(pub String);

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "encoder weights: {}", self.0)
    }
}

impl std::error::Error for BlobError {}

/// Weights of one matrix, `rows` outputs × `cols` inputs, row-major.
enum Weights<'a> {
    /// int8 values, read in place from the blob, the scale of each row and
    /// each row's sum of int8 values times its scale.
    Int(Int8Rows<'a>, Vec<f32>, Vec<f32>),
    /// Unquantized: the native reference path of the tests.
    Float(Vec<f32>),
}

struct Linear<'a> {
    rows: usize,
    cols: usize,
    w: Weights<'a>,
    bias: Vec<f32>,
}

struct Layer<'a> {
    qkv: Linear<'a>,
    attn_out: Linear<'a>,
    ln1: (Vec<f32>, Vec<f32>),
    inter: Linear<'a>,
    out: Linear<'a>,
    ln2: (Vec<f32>, Vec<f32>),
}

/// Word embeddings stay in the blob (gathered row by row, never multiplied).
enum WordTable<'a> {
    Int(&'a [u8], Vec<f32>),
    Float(Vec<f32>),
}

pub struct Encoder<'a> {
    word: WordTable<'a>,
    pos: Vec<f32>,
    ln_emb: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer<'a>>,
}

impl fmt::Debug for Encoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BlobError> {
        let b = self
            .data
            .get(self.at..self.at + n)
            .ok_or_else(|| BlobError(format!("truncated at byte {}", self.at)))?;
        self.at += n;
        Ok(b)
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, BlobError> {
        Ok(self
            .bytes(4 * n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn linear(&mut self, int: bool, rows: usize, cols: usize) -> Result<Linear<'a>, BlobError> {
        let w = if int {
            let q = Int8Rows::new(self.bytes(rows * cols)?, cols)
                .ok_or_else(|| BlobError(format!("a matrix {cols} wide")))?;
            let scales = self.f32s(rows)?;
            let sums = q
                .row_sums()
                .iter()
                .zip(&scales)
                .map(|(&n, s)| n as f32 * s)
                .collect();
            Weights::Int(q, scales, sums)
        } else {
            Weights::Float(self.f32s(rows * cols)?)
        };
        Ok(Linear {
            rows,
            cols,
            w,
            bias: self.f32s(rows)?,
        })
    }

    fn norm(&mut self) -> Result<(Vec<f32>, Vec<f32>), BlobError> {
        Ok((self.f32s(HIDDEN)?, self.f32s(HIDDEN)?))
    }
}

impl<'a> Encoder<'a> {
    /// Read a blob written by build.rs (`encoder-i8.bin` or `encoder-f32.bin`).
    pub fn new(blob: &'a [u8]) -> Result<Encoder<'a>, BlobError> {
        let int = match blob.get(..8) {
            Some(b"MLM6I8\0\0") => true,
            Some(b"MLM6F32\0") => false,
            _ => return Err(BlobError("unknown format".into())),
        };
        let mut c = Cursor { data: blob, at: 8 };
        let word = if int {
            let q = c.bytes(VOCAB * HIDDEN)?;
            WordTable::Int(q, c.f32s(VOCAB)?)
        } else {
            WordTable::Float(c.f32s(VOCAB * HIDDEN)?)
        };
        let pos = c.f32s(MAX_TOKENS * HIDDEN)?;
        let ln_emb = c.norm()?;
        let mut layers = Vec::with_capacity(LAYERS);
        for _ in 0..LAYERS {
            layers.push(Layer {
                qkv: c.linear(int, 3 * HIDDEN, HIDDEN)?,
                attn_out: c.linear(int, HIDDEN, HIDDEN)?,
                ln1: c.norm()?,
                inter: c.linear(int, INTER, HIDDEN)?,
                out: c.linear(int, HIDDEN, INTER)?,
                ln2: c.norm()?,
            });
        }
        if c.at != blob.len() {
            return Err(BlobError(format!("{} bytes left over", blob.len() - c.at)));
        }
        Ok(Encoder {
            word,
            pos,
            ln_emb,
            layers,
        })
    }

    /// The sentence embedding sentence-transformers computes: the last hidden
    /// state mean-pooled over the tokens (`[CLS]` and `[SEP]` included) and
    /// L2-normalized. `sentences` are token ids from
    /// [`crate::tokenizer::Tokenizer::encode`] (at most [`MAX_TOKENS`] are read).
    pub fn embed(&self, sentences: &[Vec<u32>]) -> Vec<[f32; HIDDEN]> {
        self.pooled(sentences)
            .into_iter()
            .map(|p| {
                let mut e = [0f32; HIDDEN];
                e.copy_from_slice(&p[LAYERS * HIDDEN..]);
                let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                e.iter_mut().for_each(|v| *v /= norm);
                e
            })
            .collect()
    }

    /// Per sentence, the mean over its tokens of every layer's hidden state:
    /// the embedding layer's output then each transformer layer's, 7 × 384
    /// values (the text head reads them all: the lower layers keep lexical
    /// detail the last one has smoothed away).
    pub fn pooled(&self, sentences: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let spans = spans(sentences);
        let n = spans.last().map_or(0, |s| s.1);
        let mut pooled = vec![vec![0f32; (LAYERS + 1) * HIDDEN]; sentences.len()];
        let mut x = vec![0f32; n * HIDDEN];
        for (ids, &(start, _)) in sentences.iter().zip(&spans) {
            for (p, &id) in ids.iter().enumerate().take(MAX_TOKENS) {
                let row = &mut x[(start + p) * HIDDEN..(start + p + 1) * HIDDEN];
                let id = (id as usize).min(VOCAB - 1);
                match &self.word {
                    WordTable::Int(q, s) => {
                        let w = &q[id * HIDDEN..(id + 1) * HIDDEN];
                        for (r, &b) in row.iter_mut().zip(w) {
                            *r = f32::from(b as i8) * s[id];
                        }
                    }
                    WordTable::Float(w) => row.copy_from_slice(&w[id * HIDDEN..(id + 1) * HIDDEN]),
                }
                for (r, &e) in row.iter_mut().zip(&self.pos[p * HIDDEN..(p + 1) * HIDDEN]) {
                    *r += e;
                }
            }
        }
        layer_norm(&mut x, &self.ln_emb);
        pool(&x, &spans, 0, &mut pooled);
        let mut scratch = Scratch::default();
        for (l, layer) in self.layers.iter().enumerate() {
            layer.forward(&mut x, &spans, &mut scratch);
            pool(&x, &spans, l + 1, &mut pooled);
        }
        pooled
    }
}

/// Mean of each sentence's rows of x into its slot `layer` of `pooled`.
fn pool(x: &[f32], spans: &[(usize, usize)], layer: usize, pooled: &mut [Vec<f32>]) {
    for (&(a, b), out) in spans.iter().zip(pooled.iter_mut()) {
        let out = &mut out[layer * HIDDEN..(layer + 1) * HIDDEN];
        for row in x[a * HIDDEN..b * HIDDEN].chunks_exact(HIDDEN) {
            for (p, v) in out.iter_mut().zip(row) {
                *p += v;
            }
        }
        let k = 1.0 / (b - a).max(1) as f32;
        out.iter_mut().for_each(|p| *p *= k);
    }
}

/// Token range of each sentence in the stacked batch.
fn spans(sentences: &[Vec<u32>]) -> Vec<(usize, usize)> {
    let mut at = 0;
    sentences
        .iter()
        .map(|s| {
            let a = at;
            at += s.len().min(MAX_TOKENS);
            (a, at)
        })
        .collect()
}

#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    h: Vec<f32>,
    o: Vec<f32>,
    xq: Quantized,
    scores: Vec<f32>,
}

/// Scratch of a quantized product: the activations, each token's range, and
/// the integer dot products.
#[derive(Default)]
struct Quantized {
    q: Acts,
    ranges: Vec<(f32, f32)>,
    dots: Vec<i32>,
}

impl Layer<'_> {
    fn forward(&self, x: &mut [f32], spans: &[(usize, usize)], s: &mut Scratch) {
        let n = x.len() / HIDDEN;
        self.qkv.apply(x, n, &mut s.qkv, &mut s.xq);
        s.ctx.clear();
        s.ctx.resize(n * HIDDEN, 0.0);
        for &(a, b) in spans {
            attention(&s.qkv, a, b, &mut s.ctx, &mut s.scores);
        }
        self.attn_out.apply(&s.ctx, n, &mut s.o, &mut s.xq);
        add_norm(x, &s.o, &self.ln1);
        self.inter.apply(x, n, &mut s.h, &mut s.xq);
        s.h.iter_mut().for_each(|v| *v = gelu(*v));
        self.out.apply(&s.h, n, &mut s.o, &mut s.xq);
        add_norm(x, &s.o, &self.ln2);
    }
}

impl Linear<'_> {
    /// y = x·Wᵀ + b for `n` rows of x.
    fn apply(&self, x: &[f32], n: usize, y: &mut Vec<f32>, xq: &mut Quantized) {
        y.clear();
        y.resize(n * self.rows, 0.0);
        match &self.w {
            Weights::Float(w) => {
                for (xr, yr) in x.chunks_exact(self.cols).zip(y.chunks_exact_mut(self.rows)) {
                    for ((yo, wr), b) in
                        yr.iter_mut().zip(w.chunks_exact(self.cols)).zip(&self.bias)
                    {
                        *yo = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>() + b;
                    }
                }
            }
            Weights::Int(w, ws, sums) => {
                quantize(x, self.cols, &mut xq.q, &mut xq.ranges);
                let rows = self.rows;
                let d = &mut xq.dots;
                d.clear();
                d.resize(n * rows, 0);
                kernel::product(&xq.q, w, |t, o, v| d[t * rows + o] = v);
                // x ≈ min + scale · q, so x·w = scale · (q·w) + min · Σw; in a
                // second pass, row by row, so that it vectorizes (done in the
                // kernel's callback, per element, it cost ~20 % of the
                // plugin's speed: README, *Speed*).
                for ((yr, dr), &(scale, min)) in y
                    .chunks_exact_mut(rows)
                    .zip(d.chunks_exact(rows))
                    .zip(&xq.ranges)
                {
                    for ((((y, &d), ws), sw), b) in
                        yr.iter_mut().zip(dr).zip(ws).zip(sums).zip(&self.bias)
                    {
                        *y = d as f32 * scale * ws + (min * sw + b);
                    }
                }
            }
        }
    }
}

/// Each row of x to 0..=ACT_MAX over its own range: x ≈ min + scale · q.
/// Asymmetric because GELU's outputs (the widest product's input) are
/// nearly all positive: a symmetric code would spend half its steps on
/// values that do not occur. 7 bits lost 0.001 / 0.001 of dev r against the
/// 13-bit symmetric code before (README, *Speed*).
fn quantize(x: &[f32], cols: usize, q: &mut Acts, ranges: &mut Vec<(f32, f32)>) {
    q.clear(cols);
    ranges.clear();
    let steps = f32::from(kernel::ACT_MAX);
    for row in x.chunks_exact(cols) {
        // Comparisons, not `f32::max`/`min`, and ties to even, not `round`:
        // single WebAssembly instructions, the others calls into libm. In
        // eight lanes, and the conversion through i32 (`as u8` from a float
        // is a branchy scalar sequence), so that both loops vectorize: as
        // written before, quantizing was 8 % of the plugin's time.
        let (mut lo8, mut hi8) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
        for c in row.chunks_exact(8) {
            for ((lo, hi), &v) in lo8.iter_mut().zip(hi8.iter_mut()).zip(c) {
                *lo = if v < *lo { v } else { *lo };
                *hi = if v > *hi { v } else { *hi };
            }
        }
        let lo = lo8
            .into_iter()
            .fold(f32::INFINITY, |m, v| if v < m { v } else { m });
        let hi = hi8
            .into_iter()
            .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
        let scale = if hi > lo { (hi - lo) / steps } else { 1.0 };
        let inv = 1.0 / scale;
        // `as i32` saturates (a NaN becomes 0); `push` clamps to 0..=ACT_MAX.
        q.push(
            row.iter()
                .map(|&v| ((v - lo) * inv).round_ties_even() as i32),
        );
        ranges.push((scale, lo));
    }
}

/// Scaled dot-product attention of one sentence (tokens a..b), all heads.
fn attention(qkv: &[f32], a: usize, b: usize, ctx: &mut [f32], scores: &mut Vec<f32>) {
    let len = b - a;
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let row = |t: usize| &qkv[t * 3 * HIDDEN..(t + 1) * 3 * HIDDEN];
    for h in 0..HEADS {
        let (q0, k0, v0) = (
            h * HEAD_DIM,
            HIDDEN + h * HEAD_DIM,
            2 * HIDDEN + h * HEAD_DIM,
        );
        for i in a..b {
            let q = &row(i)[q0..q0 + HEAD_DIM];
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in a..b {
                let k = &row(j)[k0..k0 + HEAD_DIM];
                let s = dot(q, k) * scale;
                // A comparison, not `f32::max` (a libm call in WebAssembly).
                if s > max {
                    max = s;
                }
                scores.push(s);
            }
            // The exponentials first, then their sum in eight lanes: a
            // running sum in the same loop kept it scalar.
            for s in scores.iter_mut() {
                *s = exp_neg(*s - max);
            }
            let sum = sum_any(scores);
            let out = &mut ctx[i * HIDDEN + h * HEAD_DIM..i * HIDDEN + (h + 1) * HEAD_DIM];
            for (j, p) in (a..b).zip(scores.iter()) {
                let v = &row(j)[v0..v0 + HEAD_DIM];
                let p = p / sum;
                for (o, v) in out.iter_mut().zip(v) {
                    *o += p * v;
                }
            }
        }
    }
    debug_assert!(len <= MAX_TOKENS);
}

/// Σ a·b in eight interleaved sums, which LLVM turns into two f32x4 lanes
/// (a single running sum must be added in order, so it stays scalar: the
/// attention's dot products were half the encoder's time outside the int8
/// products). `a.len()` is a multiple of 8 (HEAD_DIM).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7])
}

/// Σ f(v) over `row` in eight interleaved sums, as [`dot`] (`row.len()` a
/// multiple of 8; HIDDEN is).
fn sum8(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    for c in row.chunks_exact(8) {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += f(v);
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7])
}

/// Σ of `v` (any length) in eight interleaved sums, then the rest.
fn sum_any(v: &[f32]) -> f32 {
    let whole = v.len() / 8 * 8;
    sum8(&v[..whole], |x| x) + v[whole..].iter().sum::<f32>()
}

fn add_norm(x: &mut [f32], o: &[f32], ln: &(Vec<f32>, Vec<f32>)) {
    for (x, o) in x.iter_mut().zip(o) {
        *x += o;
    }
    layer_norm(x, ln);
}

fn layer_norm(x: &mut [f32], (g, b): &(Vec<f32>, Vec<f32>)) {
    for row in x.chunks_exact_mut(HIDDEN) {
        let mean = sum8(row, |v| v) / HIDDEN as f32;
        let var = sum8(row, |v| (v - mean) * (v - mean)) / HIDDEN as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for ((v, g), b) in row.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// BERT's exact GELU, x·Φ(x), with erf from Abramowitz & Stegun 7.1.26
/// (|error| < 1.5e-7).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn erf(x: f32) -> f32 {
    let s = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t) + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t
            * exp_neg(-a * a);
    s * y
}

/// e^x for x ≤ 0, within 2 ulp of `f32::exp` (Cephes' `expf`: 2^n times a
/// degree-6 polynomial). `f32::exp` is a call into libm in WebAssembly, where
/// the GELU's 9,216 of them per token were 15 % of the plugin's time; this is
/// inlined and vectorizable. The attention's softmax uses it too.
pub(crate) fn exp_neg(x: f32) -> f32 {
    // Below, e^x < 1.7e-38: the GELU's erf is 1 there anyway.
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // x − n·ln 2 in two parts, exact for the n here.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * r
        * r
        + r
        + 1.0;
    // n ∈ [−125, 0]: 2^n is a normal f32.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}
