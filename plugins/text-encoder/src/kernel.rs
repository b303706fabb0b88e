//! The integer matrix product, the encoder's hot loop.
//!
//! The weights stay int8 where build.rs put them, in the embedded blob (no
//! widened copy: half the bytes to stream and 21 MiB less linear memory);
//! activations are 7-bit unsigned (0..=127, see `encoder::quantize`). On
//! wasm32 the product uses WebAssembly's relaxed SIMD explicitly:
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` multiplies sixteen int8 weights by
//! sixteen 7-bit activations and adds the products, four at a time, into four
//! 32-bit lanes. On x86 wasmtime compiles it to one `vpdpbusd` where the CPU
//! has AVX-512 VNNI or AVX-VNNI (the gateway's patched Cranelift glue,
//! `vendor/wasmtime-internal-cranelift/PATCHED.md`), else to `pmaddubsw`,
//! `pmaddwd` and an add; elsewhere to the exact product of widened operands.
//! Its result is exact for these operands on every engine: the "i7" operand
//! (the activations) never exceeds 127, and the pair sums `pmaddubsw`
//! saturates stay within i16 (2 · 127 · 128). LLVM does not find these
//! instructions from plain loops.
//!
//! Register blocking: each step loads the vectors of 4 tokens and 2 weight
//! rows and does the 8 products between them into 8 accumulators, so a load
//! feeds 2–4 multiplies instead of the 1.25 of one row against four tokens.
//! The accumulators stay in registers only because the gateway's Cranelift
//! glue calls the epoch check's slow path without clobbering them
//! (`vendor/wasmtime-internal-cranelift/PATCHED.md`). Cache blocking: the
//! weight rows are taken in blocks of ~12 KiB that stay in L1 while every
//! token of the pass goes over them. The kernel is built for the encoder's
//! two widths (384 and 1536); other widths take the portable loop.
//!
//! `scripts/build-plugins.sh` builds the plugins with `+simd128`, but the
//! functions also enable it and `relaxed-simd` themselves
//! (`#[target_feature]`), so a build without the flags keeps the fast kernel
//! (on wasm32 such functions are safe to call: an engine without them rejects
//! the module at load). Elsewhere (the native tests and examples) a plain
//! loop LLVM vectorizes; the sums are exact integers, so both give the same
//! results (`gateway/plugin-host/tests/text_encoder.rs` compares them).

/// Quantized activations: rows (tokens) of 7-bit unsigned integers
/// (0..=127), each `cols` long (`cols` a multiple of 16), row-major.
#[derive(Debug, Clone, Default)]
pub struct Acts {
    cols: usize,
    data: Vec<u8>,
}

/// The largest activation: the relaxed dot product's "i7" operand.
pub const ACT_MAX: u8 = 127;

impl Acts {
    /// Empty, with rows `cols` long.
    pub fn clear(&mut self, cols: usize) {
        debug_assert!(cols.is_multiple_of(16));
        self.cols = cols;
        self.data.clear();
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Append one row (`values.len() == cols`), each value clamped to
    /// 0..=[`ACT_MAX`] (over it the relaxed product is engine-defined).
    pub fn push(&mut self, values: impl ExactSizeIterator<Item = i32>) {
        debug_assert_eq!(values.len(), self.cols);
        self.data
            .extend(values.map(|v| v.clamp(0, i32::from(ACT_MAX)) as u8));
    }
}

/// int8 weights, `rows` rows each `cols` long (a multiple of 16), row-major,
/// as bytes (two's complement): borrowed from the embedded blob.
#[derive(Debug, Clone, Copy)]
pub struct Int8Rows<'a> {
    cols: usize,
    data: &'a [u8],
}

impl<'a> Int8Rows<'a> {
    /// `None` unless `data` is whole rows and `cols` a multiple of 16 (the
    /// kernel's step).
    pub fn new(data: &'a [u8], cols: usize) -> Option<Int8Rows<'a>> {
        (cols > 0 && cols.is_multiple_of(16) && data.len().is_multiple_of(cols))
            .then_some(Int8Rows { cols, data })
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.cols
    }

    /// Each row's sum of weights: the product's correction for activations
    /// stored with an offset (`encoder::quantize`).
    pub fn row_sums(&self) -> Vec<i32> {
        self.data
            .chunks_exact(self.cols)
            .map(|r| r.iter().map(|&b| i32::from(b as i8)).sum())
            .collect()
    }
}

/// For every token t of `x` and row o of `w`: `out(t, o, Σₖ x[t][k]·w[o][k])`.
/// Exact: |sum| ≤ 127 · 128 · cols, within i32 for any width up to 132,000.
pub fn product(x: &Acts, w: &Int8Rows<'_>, mut out: impl FnMut(usize, usize, i32)) {
    assert_eq!(x.cols, w.cols, "operands of different widths");
    #[cfg(target_arch = "wasm32")]
    if simd::product(&x.data, w.data, w.cols, &mut out) {
        return;
    }
    portable(&x.data, w.data, w.cols, &mut out);
}

/// The product without SIMD intrinsics, for other targets (and to check the
/// wasm kernel against: the sums are exact, so they must be equal).
pub fn portable(x: &[u8], w: &[u8], cols: usize, out: &mut impl FnMut(usize, usize, i32)) {
    // Both operands widened to 16 bits (the tokens once, each weight row once
    // for every token): LLVM turns a 16 × 16-bit dot product into `pmaddwd`,
    // a 16 × 8-bit one into slower code (the native examples ran 30 % slower
    // with it).
    let x: Vec<i16> = x.iter().map(|&v| i16::from(v)).collect();
    let mut row = vec![0i16; cols];
    for (o, wr) in w.chunks_exact(cols).enumerate() {
        for (r, &b) in row.iter_mut().zip(wr) {
            *r = i16::from(b as i8);
        }
        for (t, xr) in x.chunks_exact(cols).enumerate() {
            out(t, o, dot(xr, &row));
        }
    }
}

#[inline(never)]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

#[cfg(target_arch = "wasm32")]
mod simd {
    use core::arch::wasm32::*;

    /// Bytes of weight rows per cache block (L1 is 32–48 KiB; the 4 token
    /// rows read with it take up to 6 KiB more).
    const BLOCK_BYTES: usize = 12 * 1024;

    /// The product for rows `k` long; false (nothing done) for a width the
    /// kernel is not built for, which the caller then computes portably.
    /// The width is a constant so that every token and weight row of a
    /// register block is a constant offset from one address: two pointers
    /// in the inner loop instead of six (which did not fit in the registers
    /// left beside the epoch check's and were reloaded from the stack in
    /// every step).
    #[target_feature(enable = "simd128,relaxed-simd")]
    pub fn product(x: &[u8], w: &[u8], k: usize, out: &mut impl FnMut(usize, usize, i32)) -> bool {
        match k {
            384 => product_k::<384>(x, w, out),
            1536 => product_k::<1536>(x, w, out),
            _ => return false,
        }
        true
    }

    #[target_feature(enable = "simd128,relaxed-simd")]
    fn product_k<const K: usize>(x: &[u8], w: &[u8], out: &mut impl FnMut(usize, usize, i32)) {
        let n = x.len() / K;
        let m = w.len() / K;
        // Rows per block, even (the register block takes rows in pairs).
        let block = (BLOCK_BYTES / K).max(2) & !1;
        let mut o0 = 0;
        while o0 < m {
            let o1 = (o0 + block).min(m);
            let mut t = 0;
            while t + 4 <= n {
                tokens::<4, K>(x, w, t, o0, o1, out);
                t += 4;
            }
            match n - t {
                3 => tokens::<3, K>(x, w, t, o0, o1, out),
                2 => tokens::<2, K>(x, w, t, o0, o1, out),
                1 => tokens::<1, K>(x, w, t, o0, o1, out),
                _ => {}
            }
            o0 = o1;
        }
    }

    /// Tokens t0..t0+T against weight rows o0..o1.
    #[target_feature(enable = "simd128,relaxed-simd")]
    #[inline]
    fn tokens<const T: usize, const K: usize>(
        x: &[u8],
        w: &[u8],
        t0: usize,
        o0: usize,
        o1: usize,
        out: &mut impl FnMut(usize, usize, i32),
    ) {
        let xs = &x[t0 * K..(t0 + T) * K];
        let mut o = o0;
        while o + 2 <= o1 {
            let s = block::<T, 2, K>(xs, &w[o * K..(o + 2) * K]);
            for (i, s) in s.iter().enumerate() {
                for (r, &s) in s.iter().enumerate() {
                    out(t0 + i, o + r, s);
                }
            }
            o += 2;
        }
        if o < o1 {
            let s = block::<T, 1, K>(xs, &w[o * K..(o + 1) * K]);
            for (i, s) in s.iter().enumerate() {
                out(t0 + i, o, s[0]);
            }
        }
    }

    /// The T × R dot products of T consecutive token rows (`x`) and R
    /// consecutive weight rows (`w`), each `K` long, a multiple of 16.
    ///
    /// Unsafe code: the loads take raw pointers (`v128_load` has no slice
    /// form); the lengths are checked once at the top, which per-load slicing
    /// would do on every load.
    #[allow(unsafe_code)]
    #[target_feature(enable = "simd128,relaxed-simd")]
    #[inline]
    fn block<const T: usize, const R: usize, const K: usize>(x: &[u8], w: &[u8]) -> [[i32; R]; T] {
        assert!(K.is_multiple_of(16) && x.len() == T * K && w.len() == R * K);
        let (x, w) = (x.as_ptr(), w.as_ptr());
        let mut acc = [[i32x4_splat(0); R]; T];
        let mut i = 0;
        // One step of 16 per iteration: its 6 operands and the 8
        // accumulators fit in the 16 vector registers (two steps per
        // iteration spilled the accumulators of the 16-bit kernel before).
        while i < K {
            // SAFETY: r * K + i + 16 <= R * K = w.len() and t * K + i + 16
            // <= T * K = x.len() (asserted above); the load accepts any
            // alignment.
            let wv: [v128; R] =
                core::array::from_fn(|r| unsafe { v128_load(w.add(r * K + i).cast()) });
            for (t, acc) in acc.iter_mut().enumerate() {
                let xv = unsafe { v128_load(x.add(t * K + i).cast()) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    // Weights (int8) first, activations (0..=127) second.
                    *a = i32x4_relaxed_dot_i8x16_i7x16_add(wv, xv, *a);
                }
            }
            i += 16;
        }
        acc.map(|a| a.map(|v| sum(v)))
    }

    #[target_feature(enable = "simd128")]
    fn sum(a: v128) -> i32 {
        i32x4_extract_lane::<0>(a)
            + i32x4_extract_lane::<1>(a)
            + i32x4_extract_lane::<2>(a)
            + i32x4_extract_lane::<3>(a)
    }
}
