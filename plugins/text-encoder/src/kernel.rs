//! The integer matrix product, the encoder's hot loop.
//!
//! The weights stay int8 where build.rs put them, in the embedded blob (no
//! widened copy: half the bytes to stream and 21 MiB less linear memory);
//! activations are 16-bit. On wasm32 the product uses WebAssembly SIMD
//! explicitly: `v128.load8x8_s` widens eight weights to 16 bits as it loads
//! them, and `i32x4.dot_i16x8_s` multiplies eight 16-bit pairs and adds them
//! pairwise into four 32-bit lanes. LLVM does not find that instruction from
//! plain loops (it widens to 32-bit multiplies, about half the speed).
//!
//! Register blocking: each step loads the vectors of 4 tokens and 2 weight
//! rows and does the 8 products between them into 8 accumulators (15 of the
//! 16 SSE registers wasmtime's x86 backend uses, with the loaded operands and
//! a product), so a load feeds 2–4 multiplies instead of the 1.25 of one row
//! against four tokens. The accumulators stay in registers only because the
//! gateway's Cranelift glue calls the epoch check's slow path without
//! clobbering them (`vendor/wasmtime-internal-cranelift/PATCHED.md`). Cache blocking: the weight rows are taken in blocks of ~12 KiB that
//! stay in L1 while every token of the pass goes over them.
//!
//! `scripts/build-plugins.sh` builds the plugins with `+simd128`, but the
//! functions also enable it themselves (`#[target_feature]`), so a build
//! without the flag keeps the fast kernel (on wasm32 such functions are safe
//! to call: an engine without SIMD rejects the module at load). Elsewhere (the
//! native tests and examples) a plain loop LLVM vectorizes; the sums are exact
//! integers, so both give the same results.

/// Quantized activations: rows (tokens) of 16-bit integers, each `cols` long
/// (`cols` a multiple of 16), row-major.
#[derive(Debug, Clone, Default)]
pub struct Acts {
    cols: usize,
    data: Vec<i16>,
}

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

    /// Append one row (`values.len() == cols`).
    pub fn push(&mut self, values: impl ExactSizeIterator<Item = i16>) {
        debug_assert_eq!(values.len(), self.cols);
        self.data.extend(values);
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
}

/// For every token t of `x` and row o of `w`: `out(t, o, Σₖ x[t][k]·w[o][k])`.
/// Sums must fit in i32 (the caller bounds the operands).
pub fn product(x: &Acts, w: &Int8Rows<'_>, mut out: impl FnMut(usize, usize, i32)) {
    assert_eq!(x.cols, w.cols, "operands of different widths");
    #[cfg(target_arch = "wasm32")]
    simd::product(&x.data, w.data, w.cols, &mut out);
    #[cfg(not(target_arch = "wasm32"))]
    portable(&x.data, w.data, w.cols, &mut out);
}

/// The product without SIMD intrinsics, for other targets (and to check the
/// wasm kernel against: the sums are exact, so they must be equal).
pub fn portable(x: &[i16], w: &[u8], cols: usize, out: &mut impl FnMut(usize, usize, i32)) {
    // Each weight row widened once and used by every token: LLVM turns a
    // 16 × 16-bit dot product into `pmaddwd`, a 16 × 8-bit one into slower code
    // (the native examples ran 30 % slower with it).
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
    /// rows read with it take up to 12 KiB more).
    const BLOCK_BYTES: usize = 12 * 1024;

    #[target_feature(enable = "simd128")]
    pub fn product(x: &[i16], w: &[u8], k: usize, out: &mut impl FnMut(usize, usize, i32)) {
        let n = x.len() / k;
        let m = w.len() / k;
        // Rows per block, even (the register block takes rows in pairs).
        let block = (BLOCK_BYTES / k).max(2) & !1;
        let mut o0 = 0;
        while o0 < m {
            let o1 = (o0 + block).min(m);
            let mut t = 0;
            while t + 4 <= n {
                tokens::<4>(x, w, k, t, o0, o1, out);
                t += 4;
            }
            match n - t {
                3 => tokens::<3>(x, w, k, t, o0, o1, out),
                2 => tokens::<2>(x, w, k, t, o0, o1, out),
                1 => tokens::<1>(x, w, k, t, o0, o1, out),
                _ => {}
            }
            o0 = o1;
        }
    }

    /// Tokens t0..t0+T against weight rows o0..o1.
    #[target_feature(enable = "simd128")]
    #[inline]
    fn tokens<const T: usize>(
        x: &[i16],
        w: &[u8],
        k: usize,
        t0: usize,
        o0: usize,
        o1: usize,
        out: &mut impl FnMut(usize, usize, i32),
    ) {
        let xs: [&[i16]; T] = core::array::from_fn(|i| &x[(t0 + i) * k..(t0 + i + 1) * k]);
        let mut o = o0;
        while o + 2 <= o1 {
            let s = block::<T, 2>(xs, [&w[o * k..(o + 1) * k], &w[(o + 1) * k..(o + 2) * k]]);
            for (i, s) in s.iter().enumerate() {
                for (r, &s) in s.iter().enumerate() {
                    out(t0 + i, o + r, s);
                }
            }
            o += 2;
        }
        if o < o1 {
            let s = block::<T, 1>(xs, [&w[o * k..(o + 1) * k]]);
            for (i, s) in s.iter().enumerate() {
                out(t0 + i, o, s[0]);
            }
        }
    }

    /// The T × R dot products of T token rows and R weight rows, all of the
    /// same length, a multiple of 16.
    ///
    /// Unsafe code: the loads take raw pointers (`v128_load`,
    /// `i16x8_load_extend_i8x8` have no slice forms); the lengths are checked
    /// once at the top, which per-load slicing would do on every load.
    #[allow(unsafe_code)]
    #[target_feature(enable = "simd128")]
    #[inline]
    fn block<const T: usize, const R: usize>(x: [&[i16]; T], w: [&[u8]; R]) -> [[i32; R]; T] {
        let k = w[0].len();
        assert!(k.is_multiple_of(16) && x.iter().all(|r| r.len() == k));
        assert!(w.iter().all(|r| r.len() == k));
        let mut acc = [[i32x4_splat(0); R]; T];
        let mut i = 0;
        // One step of 8 per iteration: its 6 operands, the 8 accumulators and
        // a product fit in the 16 vector registers. Cranelift emits all of an
        // iteration's loads before its arithmetic, so two steps per iteration
        // (half the loop-header epoch checks) had 12 operands live and spilled
        // the accumulators to the stack (0.88-0.95x the speed of one step).
        while i < k {
            // SAFETY: i + 8 <= k, the length of every row (asserted above);
            // both loads accept any alignment.
            let wv: [v128; R] = core::array::from_fn(|r| unsafe {
                i16x8_load_extend_i8x8(w[r].as_ptr().add(i).cast())
            });
            for (t, acc) in acc.iter_mut().enumerate() {
                let xv = unsafe { v128_load(x[t].as_ptr().add(i).cast()) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = i32x4_add(*a, i32x4_dot_i16x8(xv, wv));
                }
            }
            i += 8;
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
