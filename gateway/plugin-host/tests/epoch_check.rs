//! The epoch check as the gateway's patched Cranelift glue compiles it
//! (`vendor/wasmtime-internal-cranelift/PATCHED.md`): its slow path calls
//! `new_epoch` with `preserve_all` and reloads the new deadline from the
//! store. A loop keeps float and vector values in registers around its
//! header while the epoch passes the deadline again and again; each time the
//! deadline is extended, the loop must go on with its values intact, and a
//! deadline that is not extended must still stop it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, Instance, Module, Store, Trap, UpdateDeadline};

/// `run(n)`: over i in 0..n, six f64 sums of i·k, four vector sums of i + k
/// in each i32 lane and three i64 sums of i·k, all live around the loop's
/// header (more than the registers a call may clobber without saving);
/// returns them added as f64.
const WAT: &str = r#"
(module
  (func (export "run") (param $n i32) (result f64)
    (local $i i32) (local $f0 f64) (local $f1 f64) (local $f2 f64) (local $f3 f64) (local $f4 f64) (local $f5 f64) (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $j0 i64) (local $j1 i64) (local $j2 i64)
    (loop $l
      (local.set $f0 (f64.add (local.get $f0) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 1.0))))
      (local.set $f1 (f64.add (local.get $f1) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 2.0))))
      (local.set $f2 (f64.add (local.get $f2) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 3.0))))
      (local.set $f3 (f64.add (local.get $f3) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 4.0))))
      (local.set $f4 (f64.add (local.get $f4) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 5.0))))
      (local.set $f5 (f64.add (local.get $f5) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 6.0))))
      (local.set $v0 (i32x4.add (local.get $v0) (i32x4.splat (i32.add (local.get $i) (i32.const 1)))))
      (local.set $v1 (i32x4.add (local.get $v1) (i32x4.splat (i32.add (local.get $i) (i32.const 2)))))
      (local.set $v2 (i32x4.add (local.get $v2) (i32x4.splat (i32.add (local.get $i) (i32.const 3)))))
      (local.set $v3 (i32x4.add (local.get $v3) (i32x4.splat (i32.add (local.get $i) (i32.const 4)))))
      (local.set $j0 (i64.add (local.get $j0) (i64.mul (i64.extend_i32_s (local.get $i)) (i64.const 2))))
      (local.set $j1 (i64.add (local.get $j1) (i64.mul (i64.extend_i32_s (local.get $i)) (i64.const 3))))
      (local.set $j2 (i64.add (local.get $j2) (i64.mul (i64.extend_i32_s (local.get $i)) (i64.const 4))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_s (local.get $i) (local.get $n))))
    (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (f64.add (local.get $f0) (local.get $f1)) (local.get $f2)) (local.get $f3)) (local.get $f4)) (local.get $f5)) (f64.convert_i32_s (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v0)) (i32x4.extract_lane 1 (local.get $v0))) (i32.add (i32x4.extract_lane 2 (local.get $v0)) (i32x4.extract_lane 3 (local.get $v0)))))) (f64.convert_i32_s (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v1)) (i32x4.extract_lane 1 (local.get $v1))) (i32.add (i32x4.extract_lane 2 (local.get $v1)) (i32x4.extract_lane 3 (local.get $v1)))))) (f64.convert_i32_s (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v2)) (i32x4.extract_lane 1 (local.get $v2))) (i32.add (i32x4.extract_lane 2 (local.get $v2)) (i32x4.extract_lane 3 (local.get $v2)))))) (f64.convert_i32_s (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v3)) (i32x4.extract_lane 1 (local.get $v3))) (i32.add (i32x4.extract_lane 2 (local.get $v3)) (i32x4.extract_lane 3 (local.get $v3)))))) (f64.convert_i64_s (local.get $j0))) (f64.convert_i64_s (local.get $j1))) (f64.convert_i64_s (local.get $j2)))))
"#;

const N: i32 = 20_000_000;

/// What `run(N)` returns, computed here in the same order (the f64 sums
/// are exact: every partial sum is a multiple of 1 below 2^53; the lanes
/// wrap as i32).
fn expected() -> f64 {
    let mut f = [0f64; 6];
    let mut v = [0i32; 4];
    let mut j = [0i64; 3];
    for i in 0..N {
        for (k, f) in f.iter_mut().enumerate() {
            *f += f64::from(i) * (k + 1) as f64;
        }
        for (k, v) in v.iter_mut().enumerate() {
            *v = v.wrapping_add(i.wrapping_add(k as i32 + 1));
        }
        for (k, j) in j.iter_mut().enumerate() {
            *j += i64::from(i) * (k as i64 + 2);
        }
    }
    let mut r = f[0];
    for f in &f[1..] {
        r += f;
    }
    for v in v {
        r += f64::from(v.wrapping_mul(4));
    }
    for j in j {
        r += j as f64;
    }
    r
}

/// An engine with epoch interruption, the module, and a thread moving the
/// epoch on until the returned flag is set.
fn setup() -> (Engine, Module, Arc<AtomicBool>) {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).expect("engine");
    let module = Module::new(&engine, wat::parse_str(WAT).expect("wat")).expect("module");
    let done = Arc::new(AtomicBool::new(false));
    let (ticker, stop) = (engine.clone(), done.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            ticker.increment_epoch();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    (engine, module, done)
}

#[test]
fn a_loop_keeps_its_values_across_extended_deadlines() {
    let (engine, module, done) = setup();
    let mut store = Store::new(&engine, 0u32);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        *cx.data_mut() += 1;
        Ok(UpdateDeadline::Continue(1))
    });
    let instance = Instance::new(&mut store, &module, &[]).expect("instance");
    let run = instance
        .get_typed_func::<i32, f64>(&mut store, "run")
        .expect("run");
    let got = run.call(&mut store, N).expect("runs to the end");
    done.store(true, Ordering::Relaxed);
    assert_eq!(got, expected());
    // More than the check at the function's entry: the loop's own.
    assert!(
        *store.data() > 1,
        "the deadline was reached {} times: the loop's slow path did not run",
        store.data()
    );
}

#[test]
fn a_deadline_not_extended_stops_the_loop() {
    let (engine, module, done) = setup();
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let instance = Instance::new(&mut store, &module, &[]).expect("instance");
    let run = instance
        .get_typed_func::<i32, f64>(&mut store, "run")
        .expect("run");
    let err = run.call(&mut store, i32::MAX).expect_err("stopped");
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        err.downcast_ref::<Trap>(),
        Some(&Trap::Interrupt),
        "{err:?}"
    );
}

#[test]
fn the_patched_glue_is_the_one_built() {
    // `[patch.crates-io]` applies only while the versions match: after an
    // upgrade of wasmtime cargo would warn and build the unpatched glue, and
    // the tests above would still pass. The compiled loop must call
    // `new_epoch` with `preserve_all`.
    let clif = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.emit_clif(clif.path());
    let engine = Engine::new(&config).expect("engine");
    Module::new(&engine, wat::parse_str(WAT).expect("wat")).expect("module");
    let mut text = String::new();
    for entry in std::fs::read_dir(clif.path()).expect("clif files") {
        let path = entry.expect("entry").path();
        text += &std::fs::read_to_string(&path).expect("clif text");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("sig") && l.contains("preserve_all")),
        "no preserve_all call in the compiled loop:\n{text}"
    );
}
