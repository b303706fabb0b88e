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

/// `run(n)`: sums over i in 0..n of i as f64, i·0.5 and, in a vector, i in
/// each lane; returns the three sums added.
const WAT: &str = r#"
(module
  (func (export "run") (param $n i32) (result f64)
    (local $i i32) (local $a f64) (local $b f64) (local $v v128)
    (loop $l
      (local.set $a (f64.add (local.get $a) (f64.convert_i32_s (local.get $i))))
      (local.set $b (f64.add (local.get $b)
                             (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 0.5))))
      (local.set $v (i32x4.add (local.get $v) (i32x4.splat (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_s (local.get $i) (local.get $n))))
    (f64.add (f64.add (local.get $a) (local.get $b))
             (f64.convert_i32_s (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v))
                                                  (i32x4.extract_lane 1 (local.get $v)))
                                         (i32.add (i32x4.extract_lane 2 (local.get $v))
                                                  (i32x4.extract_lane 3 (local.get $v))))))))
"#;

const N: i32 = 20_000_000;

/// The sums `run(N)` returns, computed here (the vector lanes wrap as i32).
fn expected() -> f64 {
    let (mut a, mut b, mut lane) = (0f64, 0f64, 0i32);
    for i in 0..N {
        a += f64::from(i);
        b += f64::from(i) * 0.5;
        lane = lane.wrapping_add(i);
    }
    a + b + f64::from(lane.wrapping_mul(4))
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
    assert!(
        *store.data() > 0,
        "the deadline was never reached: the slow path did not run"
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
