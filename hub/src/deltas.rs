//! Delta collapse, sans-IO: when a head arrives, every node of the region asks its hub for the
//! same delta at once; the first ask fetches it upstream, the others wait for that fetch, and
//! the answer is kept for later askers. One cross-region transfer instead of one per node.
//!
//! [`DeltaBoard`] holds the kept answers and the fetches in flight with their waiters; a
//! waiter is any token (the hub uses a oneshot sender: dropping it wakes the waiting ask). No
//! socket, no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use meridian_registry::Cid;

/// Delta answers kept (the oldest forgotten first).
pub const DELTAS_KEPT: usize = 64;

/// A delta's blocks, with their CIDs.
pub type DeltaBlocks = Vec<(Cid, Arc<[u8]>)>;

/// What an ask for a delta should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Answer with these kept blocks.
    Kept(DeltaBlocks),
    /// Fetch it upstream (no other ask is), then report with [`DeltaBoard::fetched`] or
    /// [`DeltaBoard::failed`].
    Fetch,
    /// Another ask is fetching it: the waiter was queued; look again with
    /// [`DeltaBoard::kept`] once it is woken.
    Wait,
}

/// Kept deltas and the fetches in flight, by `(from, to)`.
#[derive(Debug)]
pub struct DeltaBoard<W> {
    kept: VecDeque<((Cid, Cid), DeltaBlocks)>,
    inflight: HashMap<(Cid, Cid), Vec<W>>,
}

impl<W> Default for DeltaBoard<W> {
    fn default() -> Self {
        Self {
            kept: VecDeque::new(),
            inflight: HashMap::new(),
        }
    }
}

impl<W> DeltaBoard<W> {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// The kept answer for `(from, to)`, if any.
    pub fn kept(&self, from: Cid, to: Cid) -> Option<DeltaBlocks> {
        self.kept
            .iter()
            .find(|(key, _)| *key == (from, to))
            .map(|(_, blocks)| blocks.clone())
    }

    /// An ask for the delta `from -> to`; `waiter` makes the token to queue when another ask
    /// is already fetching it.
    pub fn ask(&mut self, from: Cid, to: Cid, waiter: impl FnOnce() -> W) -> Ask {
        if let Some(blocks) = self.kept(from, to) {
            return Ask::Kept(blocks);
        }
        match self.inflight.get_mut(&(from, to)) {
            Some(waiters) => {
                waiters.push(waiter());
                Ask::Wait
            }
            None => {
                self.inflight.insert((from, to), Vec::new());
                Ask::Fetch
            }
        }
    }

    /// The fetch of `from -> to` succeeded: the answer is kept, and the waiters to wake are
    /// returned.
    pub fn fetched(&mut self, from: Cid, to: Cid, blocks: DeltaBlocks) -> Vec<W> {
        if self.kept.len() >= DELTAS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(((from, to), blocks));
        self.inflight.remove(&(from, to)).unwrap_or_default()
    }

    /// The fetch of `from -> to` ended without an answer (failed, or abandoned): the waiters
    /// to wake are returned; they find nothing kept.
    pub fn failed(&mut self, from: Cid, to: Cid) -> Vec<W> {
        self.inflight.remove(&(from, to)).unwrap_or_default()
    }

    /// Fetches in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> Cid {
        meridian_registry::ids::dag_cbor_cid(&[n])
    }

    #[test]
    fn the_first_ask_fetches_the_others_wait_and_later_ones_are_answered_from_memory() {
        let mut board: DeltaBoard<u32> = DeltaBoard::new();
        let (from, to) = (cid(1), cid(2));
        assert_eq!(board.ask(from, to, || 0), Ask::Fetch);
        assert_eq!(board.ask(from, to, || 1), Ask::Wait);
        assert_eq!(board.ask(from, to, || 2), Ask::Wait);
        assert_eq!(board.in_flight(), 1);
        let blocks: DeltaBlocks = vec![(cid(3), Arc::from(&b"x"[..]))];
        assert_eq!(board.fetched(from, to, blocks.clone()), [1, 2]);
        assert_eq!(board.in_flight(), 0);
        assert_eq!(board.ask(from, to, || 3), Ask::Kept(blocks));
        // Another delta is its own fetch.
        assert_eq!(board.ask(to, cid(4), || 4), Ask::Fetch);
    }

    #[test]
    fn a_failed_fetch_wakes_its_waiters_with_nothing_kept_and_the_next_ask_fetches_again() {
        let mut board: DeltaBoard<&str> = DeltaBoard::new();
        let (from, to) = (cid(1), cid(2));
        assert_eq!(board.ask(from, to, || "first"), Ask::Fetch);
        assert_eq!(board.ask(from, to, || "second"), Ask::Wait);
        assert_eq!(board.failed(from, to), ["second"]);
        assert_eq!(board.kept(from, to), None);
        assert_eq!(board.ask(from, to, || "third"), Ask::Fetch);
    }

    #[test]
    fn at_most_the_newest_answers_are_kept() {
        let mut board: DeltaBoard<()> = DeltaBoard::new();
        for n in 0..=DELTAS_KEPT as u8 {
            board.fetched(cid(n), cid(n + 100), Vec::new());
        }
        assert_eq!(board.kept(cid(0), cid(100)), None);
        assert_eq!(board.kept(cid(1), cid(101)), Some(Vec::new()));
    }
}
