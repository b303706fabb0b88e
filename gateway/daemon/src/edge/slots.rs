//! Connection slots: how many connections are open, in all and per source
//! address, and the small overflow lane beyond them.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashMap;
use parking_lot::Mutex;

/// Which lane a connection was given.
#[derive(Debug)]
pub enum Lane {
    /// A full connection, holding its slot until dropped.
    Normal(Slot),
    /// Beyond a limit: answered `/health` or 503, then closed.
    Overflow(Slot),
}

/// Counts open connections; hands out [`Slot`]s that give theirs back when
/// dropped (an upgraded WebSocket keeps its connection's slot).
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_source: usize,
    max_overflow: usize,
    total: AtomicUsize,
    overflow: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection got no full slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Source,
}

impl Full {
    pub fn as_str(self) -> &'static str {
        match self {
            Full::Total => "max_connections",
            Full::Source => "max_connections_per_source",
        }
    }
}

impl Slots {
    pub fn new(max_total: usize, max_per_source: usize, max_overflow: usize) -> Arc<Self> {
        Arc::new(Slots {
            max_total,
            max_per_source,
            max_overflow,
            total: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        })
    }

    /// A lane for a new connection from `ip`, or `Err` (with the limit that
    /// was hit) when even the overflow lane is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Lane, Full> {
        let full = match self.try_normal(ip) {
            Ok(slot) => return Ok(Lane::Normal(slot)),
            Err(full) => full,
        };
        let taken = self
            .overflow
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_overflow).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Lane::Overflow(Slot {
                slots: self.clone(),
                kind: SlotKind::Overflow,
            })),
            Err(_) => Err(full),
        }
    }

    fn try_normal(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut per = self.per_source.lock();
        if self.total.load(Ordering::Acquire) >= self.max_total {
            return Err(Full::Total);
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Full::Source);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            slots: self.clone(),
            kind: SlotKind::Normal(ip),
        })
    }

    /// Full connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum SlotKind {
    Normal(IpAddr),
    Overflow,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    kind: SlotKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.kind {
            SlotKind::Overflow => {
                self.slots.overflow.fetch_sub(1, Ordering::AcqRel);
            }
            SlotKind::Normal(ip) => {
                let mut per = self.slots.per_source.lock();
                if let Some(n) = per.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        per.remove(&ip);
                    }
                }
                self.slots.total.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_source_and_in_all_then_overflow_then_refusal() {
        let s = Slots::new(3, 2, 1);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = s.admit(a).expect("a1");
        let a2 = s.admit(a).expect("a2");
        assert!(matches!((&a1, &a2), (Lane::Normal(_), Lane::Normal(_))));
        // The third from `a` is over its source's limit: overflow lane.
        let a3 = s.admit(a).expect("overflow");
        assert!(matches!(a3, Lane::Overflow(_)));
        // The overflow lane is full: refused, naming the limit hit.
        assert_eq!(s.admit(a).err(), Some(Full::Source));
        let b1 = s.admit(b).expect("b1");
        assert!(matches!(b1, Lane::Normal(_)));
        assert_eq!(s.open(), 3);
        assert_eq!(s.admit(b).err(), Some(Full::Total));
        drop(a3);
        drop(a1);
        assert_eq!(s.open(), 2);
        assert!(matches!(s.admit(b), Ok(Lane::Normal(_))));
        drop((a2, b1));
        assert!(s.per_source.lock().len() <= 1);
    }
}
