//! Serial frames written to a real pty by the simulator are read back with
//! tokio-serial on the other end (as the gateway does) and decoded by
//! emotion-wire: every frame arrives; injected junk is counted and skipped
//! without losing anything else; an unplugged port is reopened and reading
//! resumes; a device that reboots while unplugged comes back numbering from
//! 0 under a new boot id, and its retransmits keep boot id and number.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emotion_wire::{Frame, FrameDecoder, FrameError, Payload, SeqOutcome, SeqTrackers};
use firmware_sim::devices::{Script, SerialDevice, StepData};
use firmware_sim::journey::Journey;
use firmware_sim::serial::{self, PtyPort, SerialProgress, SerialRunOptions};
use tokio::io::AsyncReadExt;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

/// Open a port the way the gateway should: open, clear the input buffer.
fn open_port(path: &Path) -> std::io::Result<SerialStream> {
    let port = tokio_serial::new(path.to_string_lossy(), 115_200)
        .open_native_async()
        .map_err(std::io::Error::other)?;
    port.clear(tokio_serial::ClearBuffer::Input)
        .map_err(std::io::Error::other)?;
    Ok(port)
}

#[derive(Default)]
struct Received {
    frames: Vec<Frame>,
    errors: Vec<FrameError>,
    opens: u32,
    reopens: u32,
    /// How many frames had arrived at each (re)open.
    frames_at_open: Vec<usize>,
}

/// Read `path` until `stop`, decoding frames; reopen with back-off when the
/// port fails or closes (an unplug).
async fn reader(path: PathBuf, stop: CancellationToken, out: Arc<Mutex<Received>>) -> FrameDecoder {
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 512];
    let mut delay = Duration::from_millis(10);
    'outer: while !stop.is_cancelled() {
        let mut port = match open_port(&path) {
            Ok(p) => {
                delay = Duration::from_millis(10);
                p
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(20));
                continue;
            }
        };
        // A reopened port may start mid-frame.
        decoder.reset();
        {
            let mut o = out.lock().expect("lock");
            o.opens += 1;
            let n = o.frames.len();
            o.frames_at_open.push(n);
        }
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => {
                    // Drain what is already there, then stop.
                    match tokio::time::timeout(Duration::from_millis(100), port.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => break 'outer,
                    }
                }
                r = port.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        out.lock().expect("lock").reopens += 1;
                        break;
                    }
                    Ok(n) => n,
                },
            };
            decoder.feed(&buf[..n], |item| {
                let mut o = out.lock().expect("lock");
                match item {
                    Ok(f) => o.frames.push(f),
                    Err(e) => o.errors.push(e),
                }
            });
        }
    }
    decoder
}

struct Run {
    sent: Vec<Frame>,
    /// Retransmitted copies, in order.
    resent: Vec<Frame>,
    steps: Vec<StepData>,
    received: Received,
    decoder: FrameDecoder,
    stats: serial::SerialStats,
}

async fn run(opts: SerialRunOptions, link: Option<&Path>) -> Run {
    let script = Script::new(Journey::CalmStressRecovery, Duration::from_secs(60));
    run_with(SerialDevice::strap(11, script, 3), opts, link).await
}

async fn run_with(mut strap: SerialDevice, opts: SerialRunOptions, link: Option<&Path>) -> Run {
    let port = PtyPort::open(link).expect("pty");
    let path = port.port_path().to_path_buf();
    let stop = CancellationToken::new();
    let received = Arc::new(Mutex::new(Received::default()));
    // Open the reader first, as a gateway already running would be.
    let first = open_port(&path).expect("open the slave with tokio-serial");
    drop(first);
    let reader_task = tokio::spawn(reader(path, stop.clone(), received.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while received.lock().expect("lock").opens == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader opens the port"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut sent = Vec::new();
    let mut resent = Vec::new();
    let mut steps = Vec::new();
    let mut unplugged = 0u64;
    let (stats, port) = serial::run_device(
        &mut strap,
        port,
        &opts,
        &CancellationToken::new(),
        |p| match p {
            SerialProgress::Frame { frame, written } => {
                if written {
                    sent.push(frame.clone());
                } else {
                    unplugged += 1;
                }
            }
            SerialProgress::Step(d) => steps.push(d.clone()),
            SerialProgress::Retransmitted(frame) => resent.push(frame.clone()),
            SerialProgress::Rebooted { .. } | SerialProgress::Reopened(_) => {}
        },
    )
    .await
    .expect("device runs");
    // Wait until the last frame written has been decoded (junk written after
    // it is read by the reader's drain on stop; a retransmit of it arrives
    // right after it).
    let last = sent
        .last()
        .map(|f| (f.boot_id, f.seq, resent.last() == Some(f)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let arrived = |r: &Received| {
        let mut tail = r.frames.iter().rev().map(|f| (f.boot_id, f.seq));
        match last {
            Some((boot, seq, true)) => {
                tail.next() == Some((boot, seq)) && tail.next() == Some((boot, seq))
            }
            Some((boot, seq, false)) => tail.next() == Some((boot, seq)),
            None => true,
        }
    };
    while !arrived(&received.lock().expect("lock")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last frame written never arrived"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    let decoder = reader_task.await.expect("reader");
    drop(port);
    assert_eq!(unplugged, stats.frames_dropped);
    if opts.unplug.is_none() {
        assert_eq!(unplugged, 0, "a reader is attached: nothing is dropped");
    }
    let received = std::mem::take(&mut *received.lock().expect("lock"));
    Run {
        sent,
        resent,
        steps,
        received,
        decoder,
        stats,
    }
}

#[tokio::test]
async fn every_frame_written_to_the_pty_decodes_on_the_other_end() {
    let r = run(
        SerialRunOptions {
            speed: 400.0,
            duration_s: 60.0,
            ..SerialRunOptions::default()
        },
        None,
    )
    .await;
    assert!(r.sent.len() > 60, "{} frames", r.sent.len());
    assert_eq!(r.received.frames, r.sent);
    assert!(r.received.errors.is_empty(), "{:?}", r.received.errors);
    assert_eq!(r.decoder.stats().dropped(), 0);
    // The heart rate and RR series sent are exactly what decodes.
    let sent_rr: Vec<f64> = r
        .steps
        .iter()
        .flat_map(|s| match s {
            StepData::Heart(h) => h.iter().flat_map(|x| x.rr_intervals_ms.clone()).collect(),
            StepData::Eda(_) => Vec::new(),
        })
        .collect();
    let got_rr: Vec<f64> = r
        .received
        .frames
        .iter()
        .filter_map(|f| match &f.payload {
            Payload::HeartRateMeasurement(b) => Some(
                emotion_wire::HeartRateMeasurement::decode(b)
                    .expect("valid 0x2A37")
                    .rr_intervals_ms()
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(got_rr, sent_rr);
    // In order, no gaps, no duplicates.
    let mut seq = SeqTrackers::new();
    for f in &r.received.frames {
        let o = seq.observe_frame(f);
        assert!(
            matches!(o, SeqOutcome::First | SeqOutcome::InOrder),
            "{o:?}"
        );
    }
    assert_eq!(r.stats.frames_sent, r.sent.len() as u64);
}

#[tokio::test]
async fn injected_corruption_is_counted_and_nothing_else_is_lost() {
    let r = run(
        SerialRunOptions {
            speed: 400.0,
            duration_s: 60.0,
            corrupt_every: Some(7),
            ..SerialRunOptions::default()
        },
        None,
    )
    .await;
    assert!(r.stats.corrupt_injected >= 8, "{:?}", r.stats);
    assert_eq!(r.received.frames, r.sent, "every real frame arrives");
    assert_eq!(r.decoder.stats().corrupt, r.stats.corrupt_injected);
    assert_eq!(r.received.errors.len() as u64, r.stats.corrupt_injected);
}

#[tokio::test]
async fn an_unplugged_port_is_reopened_and_reading_resumes() {
    let dir = std::env::temp_dir().join(format!("fwsim-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let link = dir.join("strap");
    let r = run(
        SerialRunOptions {
            speed: 100.0,
            duration_s: 60.0,
            // Unplug every 20 simulated seconds for 100 ms.
            unplug: Some((20.0, Duration::from_millis(100))),
            ..SerialRunOptions::default()
        },
        Some(&link),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.stats.unplugs, 2);
    assert!(r.received.reopens >= 2, "reopens {}", r.received.reopens);
    // Frames written to the new pty before the reader reopened it (it
    // retries every 20 ms, frames come every 10 ms) are cleared on open;
    // everything after arrives, and the sequence numbers say what is missing.
    let got: Vec<u32> = r.received.frames.iter().map(|f| f.seq).collect();
    let last_sent = r.sent.last().map(|f| f.seq).expect("frames");
    assert_eq!(
        got.last().copied(),
        Some(last_sent),
        "reading resumed to the end"
    );
    assert!(
        r.stats.frames_dropped > 0,
        "frames made while unplugged are lost"
    );
    // (Loose: how many are lost depends on scheduling; the exact check is
    // the gap accounting below.)
    assert!(
        got.len() * 2 >= r.sent.len(),
        "received {} of {}",
        got.len(),
        r.sent.len()
    );
    for f in &r.received.frames {
        assert!(r.sent.contains(f), "{f:?} was sent");
    }
    let mut seq = SeqTrackers::new();
    for f in &r.received.frames {
        assert!(seq.observe_frame(f).is_new());
    }
    let s = seq.stats();
    let generated = r.sent.len() + r.stats.frames_dropped as usize;
    assert_eq!(
        s.missed as usize,
        generated - got.len(),
        "gap markers count the loss"
    );
    assert_eq!(s.duplicates, 0);
}

/// Rebooted while unplugged: the frames after each replug come under a new
/// boot id, numbered from where the new boot had got to (its hello and first
/// frames went nowhere), and a tracker that knows boot ids restarts on them
/// instead of taking them for retransmits. Retransmits keep boot id and
/// number and are the only duplicates.
#[tokio::test]
async fn a_device_rebooted_while_unplugged_numbers_from_0_under_a_new_boot_id() {
    let dir = std::env::temp_dir().join(format!("fwsim-reboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let link = dir.join("strap");
    let r = run(
        SerialRunOptions {
            speed: 100.0,
            duration_s: 60.0,
            unplug: Some((20.0, Duration::from_millis(100))),
            reboot_on_unplug: true,
            retransmit_every: Some(4),
            ..SerialRunOptions::default()
        },
        Some(&link),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((r.stats.unplugs, r.stats.reboots), (2, 2));
    assert!(r.stats.retransmitted > 5, "{:?}", r.stats);
    assert_eq!(r.resent.len() as u64, r.stats.retransmitted);
    // Three boots, each numbering from 0 (the first from its hello).
    let mut boots: Vec<Option<u32>> = r.sent.iter().map(|f| f.boot_id).collect();
    boots.dedup();
    assert_eq!(boots.len(), 3, "{boots:?}");
    assert!(boots.iter().all(Option::is_some));
    assert_eq!(r.sent[0].seq, 0);
    for pair in r.sent.windows(2) {
        if pair[0].boot_id != pair[1].boot_id {
            // Written after the replug: the new boot's hello and first
            // frames were lost while unplugged.
            assert!(pair[1].seq > 0 && pair[1].seq < pair[0].seq, "{pair:?}");
        }
    }
    // A tracker told of each reopen restarts on the new boot ids and drops
    // exactly the copies: every frame it drops was read before (a
    // retransmit), every other frame is new.
    let mut seq = SeqTrackers::new();
    let mut reopens = r.received.frames_at_open.iter().skip(1).peekable();
    let mut restarts = 0;
    let mut read: std::collections::HashSet<(Option<u32>, u32)> = Default::default();
    for (i, f) in r.received.frames.iter().enumerate() {
        while reopens.next_if(|&&at| at <= i).is_some() {
            seq.reconnected();
        }
        let copy = !read.insert((f.boot_id, f.seq));
        let o = seq.observe_frame(f);
        assert_eq!(o == SeqOutcome::Duplicate, copy, "{o:?} for {f:?}");
        if copy {
            assert!(r.resent.contains(f), "only retransmits are copies: {f:?}");
        }
        match o {
            SeqOutcome::Restart { .. } => restarts += 1,
            o => assert!(
                matches!(
                    o,
                    SeqOutcome::First | SeqOutcome::InOrder | SeqOutcome::Duplicate
                ),
                "{o:?} for {f:?}"
            ),
        }
    }
    assert_eq!(restarts, 2);
    let s = seq.stats();
    assert!(s.duplicates > 0, "retransmits arrived: {s:?}");
    // Every frame made is read, counted missing by a restart (made while
    // unplugged, or cleared when the reader reopened), or is the end of a
    // boot that the unplug cut off before the reader got to it.
    let cut_off = r
        .sent
        .iter()
        .filter(|f| {
            let newest = r
                .received
                .frames
                .iter()
                .filter(|g| g.boot_id == f.boot_id)
                .map(|g| g.seq)
                .max();
            newest.is_some_and(|n| f.seq > n)
        })
        .count();
    assert_eq!(
        read.len() + s.missed as usize + cut_off,
        r.sent.len() + r.stats.frames_dropped as usize,
        "every frame made is accounted for: {s:?}, {cut_off} cut off"
    );
}
