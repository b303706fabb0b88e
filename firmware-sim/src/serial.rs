//! Serial devices on a pseudo-terminal.
//!
//! [`PtyPort::open`] creates a pty pair: the simulator writes frames to the
//! master side; the slave side (`/dev/pts/N`, printed for the gateway's
//! `[[serial]] path`) behaves like a serial port for whoever opens it
//! (tokio-serial included: it accepts and ignores the baud rate). With a
//! `link` path, a symlink to the slave is kept there, so a configuration can
//! name a fixed path and survive [`unplug`](PtyPort::unplug) + reopen (a new
//! pty gets a new number).
//!
//! The simulator holds the slave open itself and sets it to raw mode, so the
//! line discipline neither echoes nor translates bytes before the gateway
//! opens it. Like a real UART with nobody listening, a frame that cannot be
//! written promptly (the pty's buffer is full because nobody reads) is
//! dropped, not queued.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::devices::{SerialDevice, StepData};
use crate::physio::rng;
use emotion_wire::Frame;

/// How often a full pty is tried again.
const FULL_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("creating a pty: {0}")]
    Pty(nix::Error),
    #[error("pty I/O: {0}")]
    Io(#[from] io::Error),
    #[error("linking {link} to the pty: {source}")]
    Link { link: PathBuf, source: io::Error },
    #[error("encoding a frame: {0}")]
    Encode(#[from] emotion_wire::FrameError),
}

/// The master side of a pty pair, with the slave held open.
#[derive(Debug)]
pub struct PtyPort {
    /// Non-blocking. (Not through tokio's `AsyncFd`: registering a raw fd
    /// is `unsafe` there, and the workspace forbids unsafe code. A full pty
    /// is rare — nobody reading — so polling it is cheap.)
    master: OwnedFd,
    _slave: OwnedFd,
    path: PathBuf,
    link: Option<PathBuf>,
}

impl PtyPort {
    /// Create a pty pair (and the symlink `link` to its slave, replacing
    /// whatever is there). Needs a tokio runtime.
    pub fn open(link: Option<&Path>) -> Result<Self, SerialError> {
        let pty = nix::pty::openpty(None, None).map_err(SerialError::Pty)?;
        let mut t = tcgetattr(&pty.slave).map_err(SerialError::Pty)?;
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).map_err(SerialError::Pty)?;
        let flags = fcntl(&pty.master, FcntlArg::F_GETFL).map_err(SerialError::Pty)?;
        fcntl(
            &pty.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(SerialError::Pty)?;
        let path = nix::unistd::ttyname(&pty.slave).map_err(SerialError::Pty)?;
        if let Some(link) = link {
            match std::fs::remove_file(link) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SerialError::Link {
                        link: link.into(),
                        source,
                    });
                }
            }
            std::os::unix::fs::symlink(&path, link).map_err(|source| SerialError::Link {
                link: link.into(),
                source,
            })?;
        }
        Ok(Self {
            master: pty.master,
            _slave: pty.slave,
            path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// The slave's own path (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.path
    }

    /// The path to configure: the link if there is one, else the slave.
    pub fn port_path(&self) -> &Path {
        self.link.as_deref().unwrap_or(&self.path)
    }

    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// One non-blocking write: `Ok(None)` when the pty is full.
    fn try_write(&self, bytes: &[u8]) -> Result<Option<usize>, SerialError> {
        match nix::unistd::write(&self.master, bytes) {
            Ok(n) => Ok(Some(n)),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(None),
            Err(e) => Err(SerialError::Io(io::Error::from(e))),
        }
    }

    /// Write all of `bytes`, waiting while the pty is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> Result<(), SerialError> {
        while !bytes.is_empty() {
            match self.try_write(bytes)? {
                Some(n) => bytes = &bytes[n..],
                None => tokio::time::sleep(FULL_POLL).await,
            }
        }
        Ok(())
    }

    /// Write one encoded frame, or drop it (returning false) if the pty does
    /// not take its first byte within `wait`: nobody is reading.
    pub async fn write_frame(&self, bytes: &[u8], wait: Duration) -> Result<bool, SerialError> {
        let deadline = later(wait);
        loop {
            match self.try_write(bytes)? {
                Some(n) => {
                    // Started: finish the frame, or the reader sees half of it.
                    self.write_all(&bytes[n..]).await?;
                    return Ok(true);
                }
                None if Instant::now() >= deadline => return Ok(false),
                None => tokio::time::sleep(FULL_POLL).await,
            }
        }
    }

    /// Close the pty, as unplugging a USB serial adapter does: the reader's
    /// port fails. Returns the link path (to reopen with).
    pub fn unplug(self) -> Option<PathBuf> {
        self.link.clone()
        // Drop closes both sides and removes the link.
    }
}

impl Drop for PtyPort {
    fn drop(&mut self) {
        // Remove the link only if it still points at this pty.
        if let Some(link) = &self.link
            && std::fs::read_link(link).is_ok_and(|target| target == self.path)
        {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// How a serial device run goes.
#[derive(Debug, Clone)]
pub struct SerialRunOptions {
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated seconds per step (one notification's worth).
    pub step_s: f64,
    /// Simulated length of the run, s.
    pub duration_s: f64,
    /// After every n-th frame, inject a junk block (counted as corrupt by the
    /// receiver; no real frame is lost).
    pub corrupt_every: Option<u64>,
    /// Unplug every `.0` simulated seconds for `.1` real seconds.
    pub unplug: Option<(f64, Duration)>,
    /// The device reboots while unplugged (its battery ran out, a watchdog
    /// fired): at each unplug its numbering starts over at 0 with a new boot
    /// id, and its boot hello is lost with the other frames made meanwhile.
    pub reboot_on_unplug: bool,
    /// After every n-th frame written, write it again as firmware retransmits
    /// a frame (same boot id, same number): the receiver must drop the copy.
    pub retransmit_every: Option<u64>,
    /// How long a frame may wait for room before it is dropped.
    pub write_wait: Duration,
    pub seed: u64,
}

impl Default for SerialRunOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            step_s: 1.0,
            duration_s: 60.0,
            corrupt_every: None,
            unplug: None,
            reboot_on_unplug: false,
            retransmit_every: None,
            write_wait: Duration::from_millis(200),
            seed: 1,
        }
    }
}

/// What a serial run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SerialStats {
    pub frames_sent: u64,
    /// Dropped because nobody read the port.
    pub frames_dropped: u64,
    pub corrupt_injected: u64,
    pub unplugs: u64,
    /// Reboots while unplugged (numbering restarted, new boot id).
    pub reboots: u64,
    /// Frames written a second time (not in `frames_sent`).
    pub retransmitted: u64,
}

/// Something the run reports as it goes.
#[derive(Debug)]
pub enum SerialProgress<'a> {
    /// A frame, whether it was written, and what its step measured.
    Frame {
        frame: &'a Frame,
        written: bool,
    },
    Step(&'a StepData),
    /// A frame written again, as a retransmit.
    Retransmitted(&'a Frame),
    /// The device rebooted (while unplugged); `boot_id` is its new boot's.
    Rebooted {
        boot_id: Option<u32>,
    },
    /// The port was reopened at a new path.
    Reopened(&'a Path),
}

/// Run `device` on `port` for the configured duration (or until `cancel`):
/// a hello, then a step's frames every `step_s / speed` real seconds.
///
/// Returns the port (the current one, after any unplugs) still open: closing
/// a pty discards what the reader has not read yet, so the caller decides
/// when the device is "unplugged" for good.
pub async fn run_device(
    device: &mut SerialDevice,
    port: PtyPort,
    opts: &SerialRunOptions,
    cancel: &CancellationToken,
    mut progress: impl FnMut(SerialProgress<'_>),
) -> Result<(SerialStats, PtyPort), SerialError> {
    let mut stats = SerialStats::default();
    let mut rng = rng(opts.seed ^ device.device_id);
    let speed = if opts.speed.is_finite() && opts.speed > 0.0 {
        opts.speed
    } else {
        1.0
    };
    let step_real = crate::secs(opts.step_s / speed);
    let steps = (opts.duration_s / opts.step_s).ceil().max(0.0) as u64;
    let start = Instant::now();
    let mut since_unplug_s = 0.0;

    let hello = device.hello();
    let written = port
        .write_frame(&emotion_wire::encode(&hello)?, opts.write_wait)
        .await?;
    count(&mut stats, written);
    progress(SerialProgress::Frame {
        frame: &hello,
        written,
    });

    // While unplugged: (link to reopen at, when). The device keeps
    // measuring and numbering frames meanwhile; those frames are lost, as
    // they would be on a real unplugged cable.
    let mut unplugged: Option<(Option<PathBuf>, Instant)> = None;
    let mut port = Some(port);
    for k in 1..=steps {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(step_real.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX)).saturating_sub(start.elapsed())) => {}
        }
        if let Some((link, at)) = &unplugged
            && Instant::now() >= *at
        {
            let p = PtyPort::open(link.as_deref())?;
            progress(SerialProgress::Reopened(p.port_path()));
            port = Some(p);
            unplugged = None;
        }
        let (frames, data) = device.step(opts.step_s);
        progress(SerialProgress::Step(&data));
        for frame in &frames {
            let bytes = emotion_wire::encode(frame)?;
            let written = match &port {
                Some(p) => p.write_frame(&bytes, opts.write_wait).await?,
                None => false,
            };
            count(&mut stats, written);
            progress(SerialProgress::Frame { frame, written });
            if let Some(p) = &port
                && written
                && opts
                    .retransmit_every
                    .is_some_and(|n| n > 0 && stats.frames_sent % n == 0)
            {
                p.write_all(&bytes).await?;
                stats.retransmitted += 1;
                progress(SerialProgress::Retransmitted(frame));
            }
            if let Some(p) = &port
                && written
                && opts
                    .corrupt_every
                    .is_some_and(|n| n > 0 && stats.frames_sent % n == 0)
            {
                // A junk block between two delimiters: no zero inside, so it
                // is exactly one bad block to the receiver.
                let len = 8 + (rng.next_u64() % 24) as usize;
                let mut junk = vec![0u8];
                junk.extend((0..len).map(|_| (rng.next_u64() % 255 + 1) as u8));
                junk.push(0);
                p.write_all(&junk).await?;
                stats.corrupt_injected += 1;
            }
        }
        since_unplug_s += opts.step_s;
        if let Some((every_s, down)) = opts.unplug
            && since_unplug_s >= every_s
            && k < steps
            && let Some(p) = port.take()
        {
            since_unplug_s = 0.0;
            stats.unplugs += 1;
            unplugged = Some((p.unplug(), later(down)));
            if opts.reboot_on_unplug {
                // Rebooted on battery, cable out: the boot hello goes nowhere.
                device.reboot();
                stats.reboots += 1;
                progress(SerialProgress::Rebooted {
                    boot_id: device.boot_id(),
                });
                let hello = device.hello();
                count(&mut stats, false);
                progress(SerialProgress::Frame {
                    frame: &hello,
                    written: false,
                });
            }
        }
    }
    let port = match port {
        Some(p) => p,
        // Ended while unplugged: plug back in, so the caller gets a port.
        None => {
            let link = unplugged.and_then(|(link, _)| link);
            PtyPort::open(link.as_deref())?
        }
    };
    Ok((stats, port))
}

/// `now + d`, saturating (a huge option must not panic).
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

fn count(stats: &mut SerialStats, written: bool) {
    if written {
        stats.frames_sent += 1;
    } else {
        stats.frames_dropped += 1;
    }
}
