//! The reader end to end over a real pty: firmware-sim's strap writes
//! frames, the reader turns them into readings whose heart rate and RR
//! intervals are exactly what was sent; injected junk is counted and costs
//! nothing else; an unplugged port is reopened and reading resumes, with a
//! gap marker for what was lost; a device that rebooted while unplugged
//! (with boot ids or without) has every frame after the replug delivered,
//! none taken for a retransmit, while its real retransmits are dropped; an
//! unbound port forwards no readings.

use std::time::Duration;

use emotion_core::reading::ReadingPayload;
use emotion_serial::{PortConfig, PortStats, SerialEvent, SerialReader};
use firmware_sim::devices::{Script, SerialDevice, StepData};
use firmware_sim::journey::Journey;
use firmware_sim::serial::{self, PtyPort, SerialProgress, SerialRunOptions, SerialStats};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Outcome {
    events: Vec<SerialEvent>,
    sent_rr: Vec<f64>,
    sent_hr: Vec<u16>,
    sim: SerialStats,
    reader: SerialReader,
}

/// Whether the reader has taken in everything the device made (see
/// [`run`]).
type CaughtUp = fn(&PortStats, &SerialStats, &[SerialEvent], &[f64]) -> bool;

/// Frames read plus frames its sequence numbers say were lost (dropped
/// while unplugged, or discarded with a closed pty) account for every frame,
/// and the junk is counted. The gap behind a loss shows only once a later
/// frame is read, so this holds only after the last frame.
fn all_frames_accounted(s: &PortStats, sim: &SerialStats, _: &[SerialEvent], _: &[f64]) -> bool {
    s.frames + s.missed >= sim.frames_sent + sim.frames_dropped && s.corrupt >= sim.corrupt_injected
}

async fn run(user: Option<&str>, opts: SerialRunOptions, tag: &str) -> Outcome {
    run_until(user, opts, tag, all_frames_accounted).await
}

async fn run_until(
    user: Option<&str>,
    opts: SerialRunOptions,
    tag: &str,
    caught_up: CaughtUp,
) -> Outcome {
    let dir = std::env::temp_dir().join(format!("emotion-serial-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("strap");
    let port = PtyPort::open(Some(&link)).expect("pty");
    let reader = SerialReader::new(PortConfig {
        user_id: user.map(str::to_owned),
        device_id: Some("strap-1".into()),
        reopen_initial: Duration::from_millis(5),
        reopen_max: Duration::from_millis(20),
        ..PortConfig::new(&link)
    });
    let (tx, mut rx) = mpsc::channel(100_000);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (r, c) = (reader.clone(), cancel.clone());
        async move { r.run(c, tx).await }
    });
    // Wait until the reader has the port.
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("opens")
        .expect("event");
    assert!(matches!(first, SerialEvent::PortOpened { .. }), "{first:?}");

    let mut device = SerialDevice::strap(
        1,
        Script::new(Journey::CalmStressRecovery, Duration::from_secs(60)),
        9,
    );
    let (mut sent_rr, mut sent_hr) = (Vec::new(), Vec::new());
    let (sim, port) =
        serial::run_device(&mut device, port, &opts, &CancellationToken::new(), |p| {
            if let SerialProgress::Step(StepData::Heart(h)) = p {
                for s in h {
                    sent_hr.push(s.heart_rate_bpm);
                    sent_rr.extend(s.rr_intervals_ms.iter().copied());
                }
            }
        })
        .await
        .expect("device runs");
    // Wait until the reader has taken in everything the device made.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    loop {
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        let s = reader.stats();
        if caught_up(&s, &sim, &events, &sent_rr) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader never caught up: {s:?} of {sim:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    task.await.expect("reader stops");
    drop(port);
    let _ = std::fs::remove_dir_all(&dir);
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    Outcome {
        events,
        sent_rr,
        sent_hr,
        sim,
        reader,
    }
}

fn readings(events: &[SerialEvent]) -> (Vec<f64>, Vec<f64>) {
    let (mut hr, mut rr) = (Vec::new(), Vec::new());
    for ev in events {
        if let SerialEvent::Reading(r) = ev {
            assert_eq!(r.user_id, "42");
            assert_eq!(r.device_id.as_deref(), Some("strap-1"));
            let ReadingPayload::Physiological(p) = &r.payload else {
                panic!("physiological")
            };
            hr.extend(p.heart_rate);
            rr.extend(p.rr_intervals_ms.iter().copied());
        }
    }
    (hr, rr)
}

#[tokio::test]
async fn heart_rate_and_rr_arrive_exactly_as_sent() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 300.0,
            duration_s: 60.0,
            ..SerialRunOptions::default()
        },
        "exact",
    )
    .await;
    let (hr, rr) = readings(&o.events);
    assert_eq!(rr, o.sent_rr);
    assert_eq!(
        hr,
        o.sent_hr.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()
    );
    let s = o.reader.stats();
    assert_eq!((s.corrupt, s.gaps, s.duplicates), (0, 0, 0));
    assert!(
        o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Hello { .. }))
    );
    assert!(
        o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Battery { .. }))
    );
    assert_eq!(s.frames, o.sim.frames_sent);
}

#[tokio::test]
async fn corrupt_bytes_are_counted_and_nothing_else_is_lost() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 300.0,
            duration_s: 60.0,
            corrupt_every: Some(5),
            ..SerialRunOptions::default()
        },
        "corrupt",
    )
    .await;
    let (_, rr) = readings(&o.events);
    assert_eq!(rr, o.sent_rr, "no real frame lost");
    let s = o.reader.stats();
    assert!(o.sim.corrupt_injected >= 10);
    assert_eq!(s.corrupt, o.sim.corrupt_injected);
    assert_eq!(s.gaps, 0);
}

#[tokio::test]
async fn an_unplugged_port_is_reopened_and_gaps_are_marked() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 100.0,
            duration_s: 60.0,
            unplug: Some((20.0, Duration::from_millis(80))),
            ..SerialRunOptions::default()
        },
        "unplug",
    )
    .await;
    let s = o.reader.stats();
    assert_eq!(o.sim.unplugs, 2);
    assert!(s.losses >= 2 && s.opens >= 3, "{s:?}");
    let gaps: u32 = o
        .events
        .iter()
        .filter_map(|e| match e {
            SerialEvent::Gap { missed, .. } => Some(*missed),
            _ => None,
        })
        .sum();
    assert!(
        gaps as u64 >= o.sim.frames_dropped,
        "gap markers cover the loss"
    );
    assert_eq!(u64::from(gaps), s.missed);
    let (_, rr) = readings(&o.events);
    assert!(!rr.is_empty());
    // Reading resumed: the last RR sent is the last received.
    assert_eq!(rr.last(), o.sent_rr.last());
}

#[tokio::test]
async fn an_unbound_port_forwards_no_readings() {
    let o = run(
        None,
        SerialRunOptions {
            speed: 300.0,
            duration_s: 20.0,
            ..SerialRunOptions::default()
        },
        "unbound",
    )
    .await;
    assert!(
        !o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Reading(_)))
    );
    assert!(o.reader.stats().unbound_dropped > 10);
}

/// The RR intervals of a reading event, if it is one.
fn reading_rr(ev: &SerialEvent) -> Option<Vec<f64>> {
    match ev {
        SerialEvent::Reading(r) => match &r.payload {
            ReadingPayload::Physiological(p) => Some(p.rr_intervals_ms.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Poll until `done`, failing with `what` after 20 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 14, item 7: the device reboots while unplugged. Its hello and first
/// frames go nowhere (the cable is out); after the replug its frames carry
/// numbers the reader saw from the old boot. Every one of them must be
/// delivered (none dropped as a retransmit), and its real retransmits must
/// still be dropped. The frames after the replug are written once the reader
/// has reopened the port, so that none is lost to the input buffer it
/// clears on open: every frame written after that point must arrive.
async fn rebooted_while_unplugged(boot_ids: bool, tag: &str) {
    let dir = std::env::temp_dir().join(format!("emotion-serial-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("strap");
    let port = PtyPort::open(Some(&link)).expect("pty");
    let reader = SerialReader::new(PortConfig {
        user_id: Some("42".into()),
        device_id: Some("strap-1".into()),
        reopen_initial: Duration::from_millis(5),
        reopen_max: Duration::from_millis(20),
        ..PortConfig::new(&link)
    });
    let (tx, mut rx) = mpsc::channel(100_000);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (r, c) = (reader.clone(), cancel.clone());
        async move { r.run(c, tx).await }
    });
    until("the reader opens the port", || reader.stats().opens == 1).await;

    let script = Script::new(Journey::CalmStressRecovery, Duration::from_secs(600));
    let mut device = SerialDevice::strap(1, script, 9);
    if !boot_ids {
        device = device.without_boot_ids();
    }
    let old_boot = device.boot_id();
    // The first boot: a hello and about a hundred frames, all read.
    let mut written = 1u64;
    port.write_all(&emotion_wire::encode(&device.hello()).expect("encodes"))
        .await
        .expect("write");
    while written < 100 {
        for f in device.step(1.0).0 {
            port.write_all(&emotion_wire::encode(&f).expect("encodes"))
                .await
                .expect("write");
            written += 1;
        }
    }
    until("the first boot is read", || {
        reader.stats().frames == written
    })
    .await;

    // Unplugged; the device reboots meanwhile: its hello and the frames of
    // its first seconds go nowhere.
    drop(port);
    device.reboot();
    assert_eq!(device.boot_id().is_some(), boot_ids);
    if boot_ids {
        assert_ne!(device.boot_id(), old_boot);
    }
    let mut lost = 1u32;
    let _hello = device.hello();
    for _ in 0..3 {
        lost += device.step(1.0).0.len() as u32;
    }
    // Plugged back in; from the moment the reader has the port again, every
    // frame written must arrive.
    let port = PtyPort::open(Some(&link)).expect("pty");
    until("the reader reopens the port", || reader.stats().opens == 2).await;
    let (mut after_rr, mut after, mut resent) = (Vec::new(), 0u64, 0u64);
    for _ in 0..40 {
        let (frames, data) = device.step(1.0);
        if let StepData::Heart(h) = &data {
            after_rr.extend(h.iter().flat_map(|s| s.rr_intervals_ms.iter().copied()));
        }
        for f in frames {
            let bytes = emotion_wire::encode(&f).expect("encodes");
            port.write_all(&bytes).await.expect("write");
            after += 1;
            // Every fourth frame twice, as firmware retransmits it.
            if after % 4 == 0 {
                port.write_all(&bytes).await.expect("write");
                resent += 1;
            }
        }
    }
    assert!(after > 30 && resent > 5, "{after} frames, {resent} resent");
    until("the reader reads the frames after the replug", || {
        reader.stats().frames == written + after + resent
    })
    .await;
    cancel.cancel();
    task.await.expect("reader stops");
    drop(port);
    let _ = std::fs::remove_dir_all(&dir);
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }

    // The readings after the second PortOpened are exactly the frames
    // written after the replug, each once.
    let reopened = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, SerialEvent::PortOpened { .. }))
        .map(|(i, _)| i)
        .nth(1)
        .expect("reopened");
    let got: Vec<f64> = events[reopened..]
        .iter()
        .filter_map(reading_rr)
        .flatten()
        .collect();
    assert_eq!(got, after_rr, "every frame after the replug, once");
    let s = reader.stats();
    assert_eq!(s.duplicates, resent, "only the retransmits are dropped");
    assert_eq!(s.restarts, 1, "{s:?}");
    // The new boot's lost start is a gap marker.
    let gaps: Vec<u32> = events[reopened..]
        .iter()
        .filter_map(|e| match e {
            SerialEvent::Gap { missed, .. } => Some(*missed),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [lost]);
    assert_eq!((s.gaps, s.missed), (1, u64::from(lost)));
}

#[tokio::test]
async fn a_device_rebooted_while_unplugged_loses_nothing_after_the_replug() {
    rebooted_while_unplugged(true, "reboot").await;
}

#[tokio::test]
async fn firmware_without_boot_ids_rebooted_while_unplugged_loses_nothing_either() {
    rebooted_while_unplugged(false, "reboot-legacy").await;
}

/// firmware-sim's unplug mode with reboots and retransmits: the reader sees
/// every reboot, drops nothing but retransmits, and stores no frame twice.
#[tokio::test]
async fn the_unplug_mode_with_reboots_and_retransmits() {
    fn last_rr_arrived(
        _: &PortStats,
        _: &SerialStats,
        events: &[SerialEvent],
        sent_rr: &[f64],
    ) -> bool {
        let last = events.iter().rev().find_map(reading_rr);
        last.as_ref().and_then(|rr| rr.last()) == sent_rr.last()
    }
    let o = run_until(
        Some("42"),
        SerialRunOptions {
            speed: 100.0,
            duration_s: 60.0,
            unplug: Some((20.0, Duration::from_millis(80))),
            reboot_on_unplug: true,
            retransmit_every: Some(4),
            ..SerialRunOptions::default()
        },
        "unplug-reboot",
        last_rr_arrived,
    )
    .await;
    let s = o.reader.stats();
    assert_eq!((o.sim.unplugs, o.sim.reboots), (2, 2));
    assert_eq!(s.restarts, 2, "every reboot seen: {s:?}");
    assert!(
        s.duplicates >= 1 && s.duplicates <= o.sim.retransmitted,
        "only retransmits are dropped: {s:?} of {:?}",
        o.sim
    );
    // What was read is what was sent, in order, nothing twice.
    let (_, rr) = readings(&o.events);
    let mut sent = o.sent_rr.iter();
    for x in &rr {
        assert!(
            sent.any(|y| y == x),
            "{x} read out of order or twice ({} read of {} sent)",
            rr.len(),
            o.sent_rr.len()
        );
    }
    assert_eq!(rr.last(), o.sent_rr.last());
}
