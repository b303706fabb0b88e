//! The integer matrix product, the encoder's hot loop (≈ 98 % of its time).
//!
//! On wasm32 it uses WebAssembly SIMD explicitly: `i32x4.dot_i16x8_s`
//! multiplies eight 16-bit pairs and adds them pairwise into four 32-bit
//! lanes, and four tokens share each weight vector loaded. LLVM does not find
//! that instruction from plain loops (it widens to 32-bit multiplies, about
//! half the speed). `scripts/build-plugins.sh` builds the plugins with
//! `+simd128`, but the functions also enable it themselves
//! (`#[target_feature]`), so a build without the flag keeps the fast kernel
//! (on wasm32 such functions are safe to call: an engine without SIMD rejects
//! the module at load). Elsewhere (the native tests and examples) a plain loop LLVM turns
//! into `pmaddwd`.

/// Rows of 16-bit integers, each `cols` long (`cols` a multiple of 8),
/// stored in the layout the product reads.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub cols: usize,
    #[cfg(target_arch = "wasm32")]
    data: Vec<core::arch::wasm32::v128>,
    #[cfg(not(target_arch = "wasm32"))]
    data: Vec<i16>,
}

impl Rows {
    pub fn new(cols: usize) -> Rows {
        debug_assert!(cols.is_multiple_of(8));
        Rows {
            cols,
            data: Vec::new(),
        }
    }

    /// Empty, with room for `rows` rows: the weights are allocated exactly
    /// (growing by doubling would need up to twice their 21 MB at once).
    pub fn with_capacity(rows: usize, cols: usize) -> Rows {
        let mut r = Rows::new(cols);
        #[cfg(target_arch = "wasm32")]
        r.data.reserve_exact(rows * cols / 8);
        #[cfg(not(target_arch = "wasm32"))]
        r.data.reserve_exact(rows * cols);
        r
    }

    pub fn clear(&mut self, cols: usize) {
        self.cols = cols;
        self.data.clear();
    }

    pub fn len(&self) -> usize {
        if self.cols == 0 {
            return 0;
        }
        #[cfg(target_arch = "wasm32")]
        return self.data.len() * 8 / self.cols;
        #[cfg(not(target_arch = "wasm32"))]
        return self.data.len() / self.cols;
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Append one row (`values.len() == cols`).
    pub fn push(&mut self, values: impl ExactSizeIterator<Item = i16>) {
        debug_assert_eq!(values.len(), self.cols);
        #[cfg(target_arch = "wasm32")]
        {
            let mut buf = [0i16; 8];
            let mut n = 0;
            for v in values {
                buf[n] = v;
                n += 1;
                if n == 8 {
                    self.data.push(simd::pack(&buf));
                    n = 0;
                }
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.data.extend(values);
    }
}

/// For every token t of `x` and row o of `w`: `out(t, o, Σₖ x[t][k]·w[o][k])`.
/// Sums must fit in i32 (the caller bounds the operands).
pub fn product(x: &Rows, w: &Rows, mut out: impl FnMut(usize, usize, i32)) {
    debug_assert_eq!(x.cols, w.cols);
    #[cfg(target_arch = "wasm32")]
    simd::product(x, w, &mut out);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let cols = x.cols;
        for (t, xr) in x.data.chunks_exact(cols).enumerate() {
            for (o, wr) in w.data.chunks_exact(cols).enumerate() {
                out(t, o, dot(xr, wr));
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
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

    use super::Rows;

    #[target_feature(enable = "simd128")]
    pub fn pack(c: &[i16; 8]) -> v128 {
        i16x8(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    }

    #[target_feature(enable = "simd128")]
    fn sum(a: v128) -> i32 {
        i32x4_extract_lane::<0>(a)
            + i32x4_extract_lane::<1>(a)
            + i32x4_extract_lane::<2>(a)
            + i32x4_extract_lane::<3>(a)
    }

    /// Weight rows are taken in blocks of ~24 KiB that stay in L1 while every
    /// token passes over them (going over all rows per token block would
    /// stream the whole matrix, up to 1.2 MB, from L3 for every four tokens).
    #[target_feature(enable = "simd128")]
    pub fn product(x: &Rows, w: &Rows, out: &mut impl FnMut(usize, usize, i32)) {
        let k = x.cols / 8;
        if k == 0 {
            return;
        }
        let xs: Vec<&[v128]> = x.data.chunks_exact(k).collect();
        let ws: Vec<&[v128]> = w.data.chunks_exact(k).collect();
        let block = (24 * 1024 / (k * 16)).max(1);
        for (b, wb) in ws.chunks(block).enumerate() {
            let o0 = b * block;
            let mut t = 0;
            while t + 4 <= xs.len() {
                let (x0, x1, x2, x3) = (xs[t], xs[t + 1], xs[t + 2], xs[t + 3]);
                for (o, wr) in wb.iter().enumerate() {
                    let (mut a0, mut a1, mut a2, mut a3) = (
                        i32x4_splat(0),
                        i32x4_splat(0),
                        i32x4_splat(0),
                        i32x4_splat(0),
                    );
                    for ((((&wv, &v0), &v1), &v2), &v3) in wr.iter().zip(x0).zip(x1).zip(x2).zip(x3)
                    {
                        a0 = i32x4_add(a0, i32x4_dot_i16x8(v0, wv));
                        a1 = i32x4_add(a1, i32x4_dot_i16x8(v1, wv));
                        a2 = i32x4_add(a2, i32x4_dot_i16x8(v2, wv));
                        a3 = i32x4_add(a3, i32x4_dot_i16x8(v3, wv));
                    }
                    out(t, o0 + o, sum(a0));
                    out(t + 1, o0 + o, sum(a1));
                    out(t + 2, o0 + o, sum(a2));
                    out(t + 3, o0 + o, sum(a3));
                }
                t += 4;
            }
            for (t, xr) in xs.iter().enumerate().skip(t) {
                for (o, wr) in wb.iter().enumerate() {
                    let mut a = i32x4_splat(0);
                    for (&wv, &v) in wr.iter().zip(xr.iter()) {
                        a = i32x4_add(a, i32x4_dot_i16x8(v, wv));
                    }
                    out(t, o0 + o, sum(a));
                }
            }
        }
    }
}
