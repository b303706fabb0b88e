//! The relaxed int8 dot product as the gateway's patched Cranelift glue
//! compiles it (`vendor/wasmtime-internal-cranelift/PATCHED.md`, the second
//! change): `i32x4.relaxed_dot_i8x16_i7x16_add_s` is one `vpdpbusd` when the
//! CPU has AVX-512 VNNI (with VL) or AVX-VNNI, and the `pmaddubsw` form
//! otherwise; either way it gives the exact sum for the operands the spec
//! makes deterministic (the second one in 0..=127). The text-encoder plugin's
//! kernel is built on it. The instructions are read from the compiled
//! function's machine code, so a wasmtime upgrade that leaves the patch
//! unused fails here on a VNNI machine.
#![cfg(target_arch = "x86_64")]

use emotion_plugin_sdk::common::SplitMix64;
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use wasmtime::{Config, Engine, Instance, Module, Store};

/// `dot()`: the lanes of a (bytes 0..16), b (16..32) and c (32..48) in
/// memory, the result stored at 48..64.
const WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "dot")
    (v128.store (i32.const 48)
      (i32x4.relaxed_dot_i8x16_i7x16_add_s
        (v128.load (i32.const 0))
        (v128.load (i32.const 16))
        (v128.load (i32.const 32))))))
"#;

/// What the patch looks for (`use_x86_vnni_for_dot`).
fn has_vnni() -> bool {
    (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
        || (is_x86_feature_detected!("avx") && is_x86_feature_detected!("avxvnni"))
}

/// The mnemonics of the module's one function, as compiled.
fn mnemonics(module: &Module) -> Vec<Mnemonic> {
    let text = module.text();
    let mut out = Vec::new();
    for f in module.functions() {
        let code = &text[f.offset..f.offset + f.len];
        let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
        while decoder.can_decode() {
            out.push(decoder.decode().mnemonic());
        }
    }
    out
}

#[test]
fn the_relaxed_dot_is_one_vpdpbusd_with_vnni_and_exact_either_way() {
    let mut config = Config::new();
    config.wasm_relaxed_simd(true);
    let engine = Engine::new(&config).expect("engine");
    let wasm = wat::parse_str(WAT).expect("wat");
    let module = Module::new(&engine, wasm).expect("module");

    let ops = mnemonics(&module);
    assert!(!ops.is_empty(), "no machine code found");
    let vnni = ops.contains(&Mnemonic::Vpdpbusd);
    let madd = ops
        .iter()
        .any(|m| matches!(m, Mnemonic::Pmaddubsw | Mnemonic::Vpmaddubsw));
    if has_vnni() {
        assert!(
            vnni && !madd,
            "VNNI CPU: expected one vpdpbusd and no pmaddubsw, got {ops:?}"
        );
    } else {
        assert!(
            madd && !vnni,
            "no VNNI: expected the pmaddubsw form, got {ops:?}"
        );
    }

    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).expect("instance");
    let memory = instance
        .get_memory(&mut store, "memory")
        .expect("memory export");
    let dot = instance
        .get_typed_func::<(), ()>(&mut store, "dot")
        .expect("dot export");
    // Operands that are the same on every run.
    let mut mix = SplitMix64::new(17);
    for case in 0..2000 {
        // The extremes first (the largest products of either sign), then
        // random bytes, the second operand in its deterministic range.
        let (a, b): (Vec<i8>, Vec<u8>) = match case {
            0 => (vec![-128; 16], vec![127; 16]),
            1 => (vec![127; 16], vec![127; 16]),
            _ => (
                (0..16).map(|_| mix.next_u64() as i8).collect(),
                (0..16).map(|_| (mix.next_u64() % 128) as u8).collect(),
            ),
        };
        let c: Vec<i32> = (0..4).map(|_| mix.next_u64() as i32).collect();
        let mut input = Vec::with_capacity(48);
        input.extend(a.iter().map(|&x| x as u8));
        input.extend(&b);
        input.extend(c.iter().flat_map(|x| x.to_le_bytes()));
        memory.write(&mut store, 0, &input).expect("write");
        dot.call(&mut store, ()).expect("call");
        let mut out = [0u8; 16];
        memory.read(&store, 48, &mut out).expect("read");
        for lane in 0..4 {
            let got = i32::from_le_bytes([
                out[4 * lane],
                out[4 * lane + 1],
                out[4 * lane + 2],
                out[4 * lane + 3],
            ]);
            let sum: i32 = (0..4)
                .map(|k| i32::from(a[4 * lane + k]) * i32::from(b[4 * lane + k]))
                .sum();
            let want = c[lane].wrapping_add(sum);
            assert_eq!(
                got, want,
                "case {case}, lane {lane}: a {a:?}, b {b:?}, c {c:?}"
            );
        }
    }
}
