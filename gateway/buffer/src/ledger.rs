//! The acknowledgement ledger: a tiny file, fsynced on its own after every
//! group commit, that says how many events the gateway has acknowledged.
//!
//! The storage engine's files may be damaged or cut short; this file is what
//! makes the loss countable. It holds one record, written alternately into two
//! 64-byte slots (a torn write leaves the other slot intact), with:
//!
//! - `next_seq`: the first batch number never handed out, so numbers are
//!   never reused, even when the batches that had them are lost;
//! - `acked_total`: slots acknowledged in all batches below `next_seq`;
//! - `floor_seq` / `floor_cum`: batches below `floor_seq` were removed on
//!   purpose (retention), and held `floor_cum` slots between them.
//!
//! Lost = (acked_total − floor_cum) − slots present at or above `floor_seq`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SLOT: usize = 64;
const MAGIC: [u8; 4] = *b"EMLG";

/// What the ledger knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub next_seq: u64,
    pub acked_total: u64,
    pub floor_seq: u64,
    pub floor_cum: u64,
    /// Length of the engine's main file after the last commit: a shorter
    /// file at open was cut, and is salvaged before the engine touches it.
    pub engine_len: u64,
}

/// How the ledger was found at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerFound {
    /// No ledger file: a new store, or one written before the ledger existed.
    Missing,
    Intact,
    /// One slot was unreadable; the other (one commit older, at most) was used.
    OneSlotDamaged,
    /// Neither slot was readable: acknowledgements are unknown.
    Unreadable,
}

#[derive(Debug)]
pub struct Ledger {
    file: File,
    writes: u64,
    state: LedgerState,
}

fn encode(writes: u64, s: &LedgerState) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[..4].copy_from_slice(&MAGIC);
    for (i, v) in [
        writes,
        s.next_seq,
        s.acked_total,
        s.floor_seq,
        s.floor_cum,
        s.engine_len,
    ]
    .into_iter()
    .enumerate()
    {
        b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, LedgerState)> {
    if b.len() < SLOT || b[..4] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if crc32fast::hash(&b[8..SLOT]) != stored {
        return None;
    }
    let at = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[8 + i * 8..16 + i * 8]);
        u64::from_le_bytes(x)
    };
    Some((
        at(0),
        LedgerState {
            next_seq: at(1),
            acked_total: at(2),
            floor_seq: at(3),
            floor_cum: at(4),
            engine_len: at(5),
        },
    ))
}

impl Ledger {
    /// Open (or create) the ledger at `path`.
    pub fn open(path: &Path) -> io::Result<(Ledger, LedgerFound)> {
        let existed = path.exists();
        let file = crate::fsperm::private_file(path)?;
        if !existed {
            return Ok((
                Ledger {
                    file,
                    writes: 0,
                    state: LedgerState::default(),
                },
                LedgerFound::Missing,
            ));
        }
        let mut buf = Vec::new();
        {
            use std::io::Read;
            (&file).read_to_end(&mut buf)?;
        }
        let a = buf.get(..SLOT).and_then(decode);
        let b = buf.get(SLOT..2 * SLOT).and_then(decode);
        let (found, best) = match (a, b) {
            (Some(x), Some(y)) => (LedgerFound::Intact, if x.0 >= y.0 { x } else { y }),
            (Some(x), None) | (None, Some(x)) => {
                // A ledger that only ever had one write has one slot by design.
                let found = if buf.len() <= SLOT && x.0 == 1 {
                    LedgerFound::Intact
                } else {
                    LedgerFound::OneSlotDamaged
                };
                (found, x)
            }
            (None, None) => (LedgerFound::Unreadable, (0, LedgerState::default())),
        };
        Ok((
            Ledger {
                file,
                writes: best.0,
                state: best.1,
            },
            found,
        ))
    }

    pub fn state(&self) -> LedgerState {
        self.state
    }

    /// Write `state` durably (the slot not holding the newest record, then
    /// fdatasync) before returning.
    pub fn commit(&mut self, state: LedgerState) -> io::Result<()> {
        let writes = self.writes + 1;
        // Odd writes go to the first slot, even ones to the second.
        let slot = ((writes + 1) % 2) * SLOT as u64;
        self.file.write_all_at(&encode(writes, &state), slot)?;
        self.file.sync_data()?;
        self.writes = writes;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(n: u64) -> LedgerState {
        LedgerState {
            next_seq: n,
            acked_total: n * 10,
            floor_seq: 1,
            floor_cum: 7,
            engine_len: n * 100,
        }
    }

    #[test]
    fn newest_record_wins_and_a_damaged_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ledger");
        {
            let (mut l, found) = Ledger::open(&path).expect("open");
            assert_eq!(found, LedgerFound::Missing);
            l.commit(st(1)).expect("commit");
        }
        {
            let (mut l, found) = Ledger::open(&path).expect("open");
            assert_eq!((found, l.state()), (LedgerFound::Intact, st(1)));
            l.commit(st(2)).expect("commit");
            l.commit(st(3)).expect("commit");
        }
        let (l, found) = Ledger::open(&path).expect("open");
        assert_eq!((found, l.state()), (LedgerFound::Intact, st(3)));
        drop(l);
        // Damage the newest slot (write 3 went to the first slot).
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let (l, found) = Ledger::open(&path).expect("open");
        assert_eq!((found, l.state()), (LedgerFound::OneSlotDamaged, st(2)));
        drop(l);
        std::fs::write(&path, [0u8; 3]).expect("write");
        let (_, found) = Ledger::open(&path).expect("open");
        assert_eq!(found, LedgerFound::Unreadable);
    }
}
