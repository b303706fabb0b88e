//! Serial wearables: one reader per configured port.
//!
//! [`SerialReader::run`] owns a port for the daemon's lifetime:
//!
//! - opens it with tokio-serial, clears the input buffer (stale bytes, or
//!   bytes the tty mangled before anyone opened it) and resets the frame
//!   decoder, which resynchronizes at the next delimiter;
//! - decodes `emotion-wire` frames from whatever chunks arrive; corrupt or
//!   truncated frames are counted and skipped;
//! - tracks sequence numbers per device: a gap becomes a
//!   [`SerialEvent::Gap`] marker, a duplicate after a retransmit is dropped
//!   (stored once), and a device that rebooted starts the numbering over
//!   (a new boot id in its frames; for firmware without boot ids a hello at
//!   0, or, first thing after a reopen, numbers that went back near 0: a
//!   device that rebooted while unplugged lost its hello). The trackers live
//!   as long as the reader, so a device that did *not* reboot keeps its
//!   numbering across a reopen and its resends stay duplicates; the frames a
//!   rebooted device made before the reopen are reported as a gap;
//! - turns measurement frames into physiological [`RawReading`]s for the
//!   port's bound user (a port with no user binding forwards nothing but
//!   hellos, battery and gaps: readings of unbound devices are not stored);
//! - when the port disappears (unplugged: read error or end of stream) or
//!   cannot be opened, retries with exponential back-off until it is back.
//!
//! ```no_run
//! # async fn demo() {
//! use emotion_serial::{PortConfig, SerialEvent, SerialReader};
//! let reader = SerialReader::new(PortConfig {
//!     user_id: Some("42".into()),
//!     ..PortConfig::new("/dev/ttyUSB0")
//! });
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! tokio::spawn({ let (r, c) = (reader.clone(), cancel.clone()); async move { r.run(c, tx).await } });
//! while let Some(ev) = rx.recv().await {
//!     if let SerialEvent::Reading(reading) = ev { /* to the physiological plugin */ }
//! }
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emotion_core::reading::RawReading;
use emotion_wire::{Frame, FrameDecoder, FrameError, Payload, SeqOutcome, SeqTrackers};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

/// One `[[serial]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PortConfig {
    pub path: PathBuf,
    /// Ignored by ptys; real UARTs need the device's rate.
    pub baud: u32,
    /// The device id readings carry; default: the frame's device id in
    /// decimal.
    pub device_id: Option<String>,
    /// The user this port's readings belong to; `None`: readings are not
    /// forwarded.
    pub user_id: Option<String>,
    /// First delay before reopening a port that failed; doubles up to
    /// `reopen_max`.
    pub reopen_initial: Duration,
    pub reopen_max: Duration,
}

impl PortConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            baud: 115_200,
            device_id: None,
            user_id: None,
            reopen_initial: Duration::from_millis(200),
            reopen_max: Duration::from_secs(10),
        }
    }
}

/// What a reader reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SerialEvent {
    /// A physiological reading for the port's user.
    Reading(RawReading),
    /// A gap marker: `missed` frames of `device_id` never arrived.
    Gap {
        path: PathBuf,
        device_id: String,
        user_id: Option<String>,
        missed: u32,
        at: DateTime<Utc>,
    },
    Hello {
        path: PathBuf,
        device_id: String,
        firmware: String,
        capabilities: u32,
        model: String,
    },
    Battery {
        path: PathBuf,
        device_id: String,
        percent: u8,
    },
    PortOpened {
        path: PathBuf,
    },
    /// The port failed or closed (unplugged); it will be reopened.
    PortLost {
        path: PathBuf,
        reason: String,
    },
}

/// Counters of one port since its reader was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PortStats {
    pub opens: u64,
    pub open_failures: u64,
    pub losses: u64,
    pub bytes: u64,
    pub frames: u64,
    /// Damaged frames dropped (bad COBS, CRC, body, oversized, unknown version).
    pub corrupt: u64,
    /// Partial frames at the start of a (re)opened stream.
    pub partial: u64,
    pub readings: u64,
    pub gaps: u64,
    pub missed: u64,
    pub duplicates: u64,
    /// Devices seen to start their numbering over (they rebooted).
    pub restarts: u64,
    /// Measurements dropped because the port has no user binding.
    pub unbound_dropped: u64,
    /// Measurement frames with nothing usable (e.g. no skin contact).
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("{0}")]
    Serial(#[from] tokio_serial::Error),
}

/// A reader for one port. Cheap to clone (shared statistics).
#[derive(Debug, Clone)]
pub struct SerialReader {
    config: PortConfig,
    stats: Arc<Mutex<PortStats>>,
}

impl SerialReader {
    pub fn new(config: PortConfig) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    pub fn config(&self) -> &PortConfig {
        &self.config
    }

    pub fn stats(&self) -> PortStats {
        *self.stats.lock()
    }

    fn open(&self) -> Result<SerialStream, OpenError> {
        let port = tokio_serial::new(self.config.path.to_string_lossy(), self.config.baud)
            .open_native_async()?;
        port.clear(tokio_serial::ClearBuffer::Input)?;
        Ok(port)
    }

    /// Read the port until `cancel` fires or `out` closes.
    pub async fn run(&self, cancel: CancellationToken, out: mpsc::Sender<SerialEvent>) {
        let path = self.config.path.clone();
        let mut decoder = FrameDecoder::new();
        let mut seq = SeqTrackers::new();
        let mut delay = self.config.reopen_initial;
        let mut buf = vec![0u8; 4096];
        let mut last_error: Option<String> = None;
        loop {
            let port = match self.open() {
                Ok(p) => p,
                Err(e) => {
                    self.stats.lock().open_failures += 1;
                    let msg = e.to_string();
                    // Say it once per outage, not once per retry.
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(path = %path.display(), "serial port unavailable: {msg}; retrying");
                        last_error = Some(msg);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = delay.saturating_mul(2).min(self.config.reopen_max);
                    continue;
                }
            };
            let mut port = port;
            last_error = None;
            delay = self.config.reopen_initial;
            self.stats.lock().opens += 1;
            decoder.reset();
            // The device may have rebooted while the port was away, its
            // hello lost (sent while unplugged, or cleared just now).
            seq.reconnected();
            if !send(
                &out,
                &cancel,
                SerialEvent::PortOpened { path: path.clone() },
            )
            .await
            {
                return;
            }
            let reason = loop {
                let n = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = port.read(&mut buf) => match r {
                        Ok(0) => break "end of stream".to_owned(),
                        Ok(n) => n,
                        Err(e) => break e.to_string(),
                    },
                };
                self.stats.lock().bytes += n as u64;
                let mut events = Vec::new();
                decoder.feed(&buf[..n], |item| self.on_item(item, &mut seq, &mut events));
                for ev in events {
                    if !send(&out, &cancel, ev).await {
                        return;
                    }
                }
            };
            self.stats.lock().losses += 1;
            tracing::warn!(path = %path.display(), "serial port lost: {reason}; reopening");
            let lost = SerialEvent::PortLost {
                path: path.clone(),
                reason,
            };
            if !send(&out, &cancel, lost).await {
                return;
            }
            drop(port);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn device_id(&self, frame: &Frame) -> String {
        self.config
            .device_id
            .clone()
            .unwrap_or_else(|| frame.device_id.to_string())
    }

    fn on_item(
        &self,
        item: Result<Frame, FrameError>,
        seq: &mut SeqTrackers,
        events: &mut Vec<SerialEvent>,
    ) {
        let mut stats = self.stats.lock();
        let frame = match item {
            Ok(f) => f,
            Err(FrameError::PartialAtStart) => {
                stats.partial += 1;
                return;
            }
            Err(e) => {
                stats.corrupt += 1;
                tracing::debug!(path = %self.config.path.display(), "corrupt frame skipped: {e}");
                return;
            }
        };
        stats.frames += 1;
        let path = self.config.path.clone();
        let device_id = self.device_id(&frame);
        let now = Utc::now();
        let outcome = seq.observe_frame(&frame);
        match outcome {
            SeqOutcome::Duplicate => {
                stats.duplicates += 1;
                return;
            }
            SeqOutcome::Restart { missed } => {
                stats.restarts += 1;
                tracing::info!(
                    path = %path.display(),
                    %device_id,
                    boot_id = ?frame.boot_id,
                    seq = frame.seq,
                    missed,
                    "serial device restarted its numbering (rebooted)"
                );
            }
            SeqOutcome::First | SeqOutcome::InOrder | SeqOutcome::Gap { .. } | SeqOutcome::Late => {
            }
        }
        // A gap, or the start of a new boot that never arrived.
        let missed = outcome.missed();
        if missed > 0 {
            stats.gaps += 1;
            stats.missed += u64::from(missed);
            events.push(SerialEvent::Gap {
                path: path.clone(),
                device_id: device_id.clone(),
                user_id: self.config.user_id.clone(),
                missed,
                at: now,
            });
        }
        match &frame.payload {
            Payload::Hello(h) => events.push(SerialEvent::Hello {
                path,
                device_id,
                firmware: h.firmware.to_string(),
                capabilities: h.capabilities.0,
                model: h.model.clone(),
            }),
            Payload::Battery { percent } => events.push(SerialEvent::Battery {
                path,
                device_id,
                percent: *percent,
            }),
            payload => match emotion_ble::convert::frame_payload(payload) {
                Ok(Some(p)) => match &self.config.user_id {
                    Some(user) => {
                        stats.readings += 1;
                        events.push(SerialEvent::Reading(emotion_ble::convert::reading(
                            user, &device_id, now, p,
                        )));
                    }
                    None => stats.unbound_dropped += 1,
                },
                Ok(None) | Err(_) => stats.skipped += 1,
            },
        }
    }
}

/// Send unless cancelled; false when the receiver is gone or cancelled.
async fn send(
    out: &mpsc::Sender<SerialEvent>,
    cancel: &CancellationToken,
    ev: SerialEvent,
) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        r = out.send(ev) => r.is_ok(),
    }
}
