//! RTP/RTCP port pairs from `VOXGATE_RTP_PORTS`: RTP on the even port, RTCP on the next
//! odd one (RFC 3550 §11). O(1) allocate and release; a released pair goes to the back
//! of the queue so a port is not reused while stray packets for the old call may still
//! be in flight.

use std::collections::VecDeque;

use crate::config::PortRange;

/// An allocated pair: `rtp` is even, RTCP is `rtp + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    pub rtp: u16,
}

impl PortPair {
    #[must_use]
    pub fn rtcp(self) -> u16 {
        self.rtp + 1
    }
}

/// Free list of even base ports plus an in-use bitmap (to refuse double frees).
#[derive(Debug)]
pub struct PortAllocator {
    lo: u16,
    free: VecDeque<u16>,
    in_use: Vec<bool>,
}

impl PortAllocator {
    #[must_use]
    pub fn new(range: PortRange) -> PortAllocator {
        // Pairs (p, p+1) with p even, both inside [lo, hi].
        let lo = range.lo + range.lo % 2;
        let mut free = VecDeque::new();
        let mut p = u32::from(lo);
        while p < u32::from(range.hi) {
            // p + 1 <= hi <= u16::MAX, so p fits.
            free.push_back(u16::try_from(p).unwrap_or(u16::MAX));
            p += 2;
        }
        let n = free.len();
        PortAllocator {
            lo,
            free,
            in_use: vec![false; n],
        }
    }

    /// Pairs in the range.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    /// Pairs currently allocated.
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// Takes the least recently released pair.
    pub fn alloc(&mut self) -> Option<PortPair> {
        let p = self.free.pop_front()?;
        let i = self.index(p)?;
        self.in_use[i] = true;
        Some(PortPair { rtp: p })
    }

    /// Returns a pair; `false` if it was not allocated (double free or foreign pair).
    pub fn release(&mut self, pair: PortPair) -> bool {
        match self.index(pair.rtp) {
            Some(i) if self.in_use[i] => {
                self.in_use[i] = false;
                self.free.push_back(pair.rtp);
                true
            }
            _ => false,
        }
    }

    fn index(&self, p: u16) -> Option<usize> {
        let off = p.checked_sub(self.lo)?;
        if off % 2 != 0 {
            return None;
        }
        let i = usize::from(off / 2);
        (i < self.in_use.len()).then_some(i)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allocate_everything_free_and_reallocate() {
        let mut a = PortAllocator::new(PortRange {
            lo: 30000,
            hi: 30099,
        });
        assert_eq!(a.capacity(), 50);
        let mut got: Vec<PortPair> = std::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|p| p.rtp % 2 == 0 && p.rtcp() <= 30099));
        let mut uniq = got.clone();
        uniq.sort_by_key(|p| p.rtp);
        uniq.dedup();
        assert_eq!(uniq.len(), 50);
        assert_eq!(a.allocated(), 50);
        assert!(a.alloc().is_none());
        for p in got.drain(..) {
            assert!(a.release(p));
        }
        assert_eq!(a.allocated(), 0);
        assert!(!a.release(PortPair { rtp: 30000 }), "double free refused");
        assert!(!a.release(PortPair { rtp: 30001 }), "odd base refused");
        assert!(!a.release(PortPair { rtp: 40000 }), "foreign refused");
        let again: Vec<PortPair> = std::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(again.len(), 50);
    }

    #[test]
    fn released_pair_goes_to_the_back() {
        let mut a = PortAllocator::new(PortRange {
            lo: 20000,
            hi: 20005,
        });
        let first = a.alloc().unwrap();
        assert!(a.release(first));
        assert_ne!(a.alloc().unwrap(), first);
    }

    #[test]
    fn odd_high_end_and_top_of_range() {
        let a = PortAllocator::new(PortRange {
            lo: 20000,
            hi: 20004,
        });
        assert_eq!(a.capacity(), 2, "20004 has no odd partner");
        let mut a = PortAllocator::new(PortRange {
            lo: 65532,
            hi: 65535,
        });
        assert_eq!(a.capacity(), 2);
        assert_eq!(a.alloc().unwrap().rtcp(), 65533);
    }
}
