//! How a simulated node spreads gossip over its links: a small model of what gossipsub does for
//! the daemon, so the simulated bytes and times are those of production and not of flooding.
//!
//! - **Eager push to a few peers.** A message goes in full to at most [`EAGER_PEERS`] peers
//!   (gossipsub's mesh degree D), peers in other regions first (a copy that has to be asked
//!   for costs them an inter-region round trip), then in an order fixed by the pair of nodes,
//!   so that two neighbours tend to pick each other, as in gossipsub's symmetric mesh.
//! - **Lazy push to the rest.** Every other peer is told the message's id (IHAVE); a peer that
//!   has not received the message [`IWANT_WAIT_MS`] later asks one announcer for it (IWANT),
//!   and the next announcer every [`IWANT_RETRY_MS`] until a copy arrives.
//! - **Don't want.** On first sight of a message of at least
//!   [`DONT_WANT_BYTES_MIN`](meridian_sync::wire::DONT_WANT_BYTES_MIN) bytes, the node
//!   tells its other peers it has it (gossipsub v1.2's IDONTWANT), and nobody sends a peer a
//!   message the peer is known to have.
//!
//! The router is sans-IO like the engine: it is told what arrived and what time it is, and
//! returns the frames to send. Everything it keeps is bounded.

use std::collections::{HashMap, HashSet, VecDeque};

use meridian_sync::wire::{DONT_WANT_BYTES_MIN, gossip_id};

use crate::transport::Frame;

/// A gossip message's id ([`gossip_id`]).
pub type GossipId = [u8; 32];

/// Peers a message is pushed to in full (gossipsub's default mesh degree D).
pub const EAGER_PEERS: usize = 6;
/// How long an announced message may take to arrive in full before the node asks for it: a
/// few round trips inside a region, so eager copies already on their way are not doubled.
pub const IWANT_WAIT_MS: u64 = 10;
/// How long an asked announcer has to answer before the next one is asked: more than a round
/// trip between regions.
pub const IWANT_RETRY_MS: u64 = 250;
/// Most ids remembered per peer, and for the node's own record of what it has seen; the
/// oldest is forgotten first (a forgotten id costs at most one extra copy).
pub const IDS_KEPT: usize = 256;
/// Most messages kept to answer IWANTs (gossipsub's message cache).
pub const MESSAGES_KEPT: usize = 64;
/// Most messages announced to the node and not yet received that it keeps asking for.
pub const WANTS_MAX: usize = 256;
/// Most of those one peer may have announced (a peer announcing ids it never serves cannot
/// crowd out the others' announcements).
pub const WANTS_PER_PEER_MAX: usize = 32;

/// A bounded set that forgets its oldest member first.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<GossipId>,
    members: HashSet<GossipId>,
}

impl Recent {
    /// Adds `id`; true if it was not there.
    fn insert(&mut self, id: GossipId) -> bool {
        if !self.members.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > IDS_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        true
    }

    fn contains(&self, id: &GossipId) -> bool {
        self.members.contains(id)
    }
}

/// What the router knows of one linked peer.
#[derive(Debug, Default)]
struct Peer {
    /// In another region than this node.
    across: bool,
    /// Takes every message in full and speaks neither IHAVE nor IWANT (a hub).
    full_only: bool,
    /// Messages the peer is known to have: it sent them, said it does not want them, or was
    /// sent them.
    has: Recent,
}

/// A message announced to this node and not received yet.
#[derive(Debug)]
struct Want {
    /// Announcers not asked yet, first announcer first.
    sources: VecDeque<usize>,
    /// When to ask the next one.
    ask_at_ms: u64,
}

/// One node's gossip router: see the [module docs](self).
#[derive(Debug)]
pub struct GossipRouter {
    node: usize,
    peers: HashMap<usize, Peer>,
    seen: Recent,
    cache: VecDeque<(GossipId, Vec<u8>)>,
    wants: HashMap<GossipId, Want>,
}

impl GossipRouter {
    /// The router of node `node` (the index orders its choice of eager peers).
    pub fn new(node: usize) -> Self {
        Self {
            node,
            peers: HashMap::new(),
            seen: Recent::default(),
            cache: VecDeque::new(),
            wants: HashMap::new(),
        }
    }

    /// A link to `peer` is up (a new connection forgets what an earlier one learnt: the peer
    /// may have restarted). `across`: the peer is in another region; `full_only`: the peer
    /// takes every message in full (a hub).
    pub fn peer_up(&mut self, peer: usize, across: bool, full_only: bool) {
        self.peers.insert(
            peer,
            Peer {
                across,
                full_only,
                has: Recent::default(),
            },
        );
    }

    /// The link to `peer` is gone.
    pub fn peer_down(&mut self, peer: usize) {
        self.peers.remove(&peer);
        for want in self.wants.values_mut() {
            want.sources.retain(|p| *p != peer);
        }
    }

    /// Sends `bytes` (an encoded gossip message) on, to every peer but `except` that is not
    /// known to have it: in full to the eager few, as an announcement to the rest.
    pub fn send(&mut self, except: Option<usize>, bytes: &[u8]) -> Vec<(usize, Frame)> {
        let id = gossip_id(bytes);
        self.seen.insert(id);
        self.wants.remove(&id);
        self.keep(id, bytes);
        let mut targets: Vec<(bool, u64, usize)> = self
            .peers
            .iter()
            .filter(|(peer, state)| Some(**peer) != except && !state.has.contains(&id))
            .map(|(&peer, state)| (!state.across, pair_rank(self.node, peer), peer))
            .collect();
        targets.sort_unstable();
        let mut frames = Vec::with_capacity(targets.len());
        let mut eager = 0;
        for (_, _, peer) in targets {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            if state.full_only {
                state.has.insert(id);
                frames.push((peer, Frame::Gossip(bytes.to_vec())));
            } else if eager < EAGER_PEERS {
                eager += 1;
                state.has.insert(id);
                frames.push((peer, Frame::Gossip(bytes.to_vec())));
            } else {
                frames.push((peer, Frame::IHave(id)));
            }
        }
        frames
    }

    /// A gossip message arrived from `peer`. Returns whether this is the node's first sight of
    /// it, and the "don't want" notices to send (on first sight of a big message).
    pub fn on_gossip(&mut self, peer: usize, bytes: &[u8]) -> (bool, Vec<(usize, Frame)>) {
        let id = gossip_id(bytes);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.has.insert(id);
        }
        self.wants.remove(&id);
        if !self.seen.insert(id) {
            return (false, Vec::new());
        }
        let mut frames = Vec::new();
        if bytes.len() >= DONT_WANT_BYTES_MIN {
            for (&other, state) in &self.peers {
                if other != peer && !state.full_only {
                    frames.push((other, Frame::DontWant(id)));
                }
            }
            // In a fixed order: the map's is not.
            frames.sort_unstable_by_key(|(other, _)| *other);
        }
        (true, frames)
    }

    /// `peer` says it has the message `id`.
    pub fn on_dont_want(&mut self, peer: usize, id: GossipId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.has.insert(id);
        }
    }

    /// `peer` announces the message `id`: if the node lacks it, it will ask for it unless a
    /// copy arrives first.
    pub fn on_ihave(&mut self, peer: usize, id: GossipId, now_ms: u64) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.has.insert(id);
        if self.seen.contains(&id) {
            return;
        }
        let announced = self
            .wants
            .values()
            .filter(|want| want.sources.contains(&peer))
            .count();
        if announced >= WANTS_PER_PEER_MAX {
            return;
        }
        if let Some(want) = self.wants.get_mut(&id) {
            if !want.sources.contains(&peer) {
                want.sources.push_back(peer);
            }
        } else if self.wants.len() < WANTS_MAX {
            self.wants.insert(
                id,
                Want {
                    sources: VecDeque::from([peer]),
                    ask_at_ms: now_ms + IWANT_WAIT_MS,
                },
            );
        }
    }

    /// `peer` asks for the message `id`: the full message if the node still keeps it.
    pub fn on_iwant(&mut self, peer: usize, id: GossipId) -> Option<Frame> {
        let bytes = self
            .cache
            .iter()
            .find(|(kept, _)| *kept == id)
            .map(|(_, bytes)| bytes.clone())?;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.has.insert(id);
        }
        Some(Frame::Gossip(bytes))
    }

    /// The IWANTs due at `now_ms`; wants with nobody left to ask are dropped.
    pub fn on_timer(&mut self, now_ms: u64) -> Vec<(usize, Frame)> {
        let mut asks = Vec::new();
        self.wants.retain(|id, want| {
            if want.ask_at_ms > now_ms {
                return true;
            }
            match want.sources.pop_front() {
                Some(peer) => {
                    asks.push((peer, *id));
                    want.ask_at_ms = now_ms + IWANT_RETRY_MS;
                    true
                }
                None => false,
            }
        });
        // In a fixed order: the map's is not.
        asks.sort_unstable();
        asks.into_iter()
            .map(|(peer, id)| (peer, Frame::IWant(id)))
            .collect()
    }

    /// When [`on_timer`](Self::on_timer) next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.wants.values().map(|want| want.ask_at_ms).min()
    }

    fn keep(&mut self, id: GossipId, bytes: &[u8]) {
        if self.cache.iter().any(|(kept, _)| *kept == id) {
            return;
        }
        if self.cache.len() >= MESSAGES_KEPT {
            self.cache.pop_front();
        }
        self.cache.push_back((id, bytes.to_vec()));
    }
}

/// The same number for both ends of a link, so two neighbours rank their link alike.
fn pair_rank(a: usize, b: usize) -> u64 {
    let (low, high) = (a.min(b) as u64, a.max(b) as u64);
    let mut z = low
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(high)
        .wrapping_add(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u8) -> Vec<u8> {
        vec![n; 300]
    }

    fn router_with(peers: usize) -> GossipRouter {
        let mut router = GossipRouter::new(0);
        for peer in 1..=peers {
            router.peer_up(peer, false, false);
        }
        router
    }

    fn full_copies(frames: &[(usize, Frame)]) -> usize {
        frames
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Gossip(_)))
            .count()
    }

    #[test]
    fn a_few_peers_get_the_message_and_the_rest_an_announcement() {
        let mut router = router_with(12);
        let frames = router.send(None, &head(1));
        assert_eq!(frames.len(), 12);
        assert_eq!(full_copies(&frames), EAGER_PEERS);
        let id = gossip_id(&head(1));
        let announced = frames
            .iter()
            .filter(|(_, f)| *f == Frame::IHave(id))
            .count();
        assert_eq!(announced, 12 - EAGER_PEERS);
        // Sending it again reaches only those that were merely told of it.
        let again = router.send(None, &head(1));
        assert_eq!(full_copies(&again), 12 - EAGER_PEERS);
    }

    #[test]
    fn peers_in_other_regions_and_hubs_get_it_in_full() {
        let mut router = router_with(10);
        router.peer_up(20, true, false);
        router.peer_up(21, true, false);
        router.peer_up(30, false, true);
        let frames = router.send(Some(1), &head(2));
        let full: Vec<usize> = frames
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Gossip(_)))
            .map(|(p, _)| *p)
            .collect();
        assert!(full.contains(&20) && full.contains(&21) && full.contains(&30));
        assert_eq!(full.len(), EAGER_PEERS + 1);
        assert!(frames.iter().all(|(p, _)| *p != 1));
    }

    #[test]
    fn peers_that_have_a_message_are_not_sent_it() {
        let mut router = router_with(3);
        let bytes = head(3);
        let id = gossip_id(&bytes);
        // First sight from peer 1: peers 2 and 3 are told "don't send it to me".
        let (first, notices) = router.on_gossip(1, &bytes);
        assert!(first);
        assert_eq!(
            notices,
            vec![(2, Frame::DontWant(id)), (3, Frame::DontWant(id))]
        );
        assert!(!router.on_gossip(2, &bytes).0);
        // Peer 3 said it has it; peer 1 and 2 sent it: nobody is sent it again.
        router.on_dont_want(3, id);
        assert!(router.send(None, &bytes).is_empty());
        // Small messages are not worth a notice.
        assert!(router.on_gossip(1, b"small").1.is_empty());
    }

    #[test]
    fn an_announced_message_is_asked_for_unless_it_arrives_and_then_from_the_next_announcer() {
        let mut router = router_with(3);
        let bytes = head(4);
        let id = gossip_id(&bytes);
        router.on_ihave(1, id, 100);
        router.on_ihave(2, id, 101);
        assert_eq!(router.next_deadline(), Some(100 + IWANT_WAIT_MS));
        assert!(router.on_timer(100 + IWANT_WAIT_MS - 1).is_empty());
        assert_eq!(
            router.on_timer(100 + IWANT_WAIT_MS),
            vec![(1, Frame::IWant(id))]
        );
        // Peer 1 does not answer: peer 2 is asked next.
        let retry = 100 + IWANT_WAIT_MS + IWANT_RETRY_MS;
        assert_eq!(router.on_timer(retry), vec![(2, Frame::IWant(id))]);
        // Nobody left to ask: the want is dropped.
        assert!(router.on_timer(retry + IWANT_RETRY_MS).is_empty());
        assert_eq!(router.next_deadline(), None);

        // A copy arriving in time cancels the want.
        let other = head(5);
        router.on_ihave(3, gossip_id(&other), 200);
        router.on_gossip(1, &other);
        assert_eq!(router.next_deadline(), None);
        // An announcement of a message already held is not a want.
        router.on_ihave(2, gossip_id(&other), 300);
        assert_eq!(router.next_deadline(), None);
    }

    #[test]
    fn iwants_are_answered_from_the_cache_and_the_cache_is_bounded() {
        let mut router = router_with(1);
        for n in 0..=MESSAGES_KEPT as u8 {
            router.send(None, &head(n));
        }
        assert_eq!(
            router.on_iwant(1, gossip_id(&head(MESSAGES_KEPT as u8))),
            Some(Frame::Gossip(head(MESSAGES_KEPT as u8)))
        );
        assert_eq!(router.on_iwant(1, gossip_id(&head(0))), None);
        assert_eq!(router.cache.len(), MESSAGES_KEPT);
    }

    #[test]
    fn wants_and_remembered_ids_are_bounded() {
        let mut router = GossipRouter::new(0);
        let peers = WANTS_MAX / WANTS_PER_PEER_MAX + 2;
        for peer in 1..=peers {
            router.peer_up(peer, false, false);
        }
        for n in 0..(WANTS_MAX + 10) as u32 {
            router.on_ihave(1, gossip_id(&n.to_be_bytes()), 0);
        }
        // One peer alone gets no more than its share.
        assert_eq!(router.wants.len(), WANTS_PER_PEER_MAX);
        for peer in 2..=peers {
            for n in 0..(WANTS_MAX + 10) as u32 {
                let id = gossip_id(&[&(peer as u32).to_be_bytes()[..], &n.to_be_bytes()].concat());
                router.on_ihave(peer, id, 0);
            }
        }
        assert_eq!(router.wants.len(), WANTS_MAX);
        let peer = &router.peers[&1];
        assert_eq!(peer.has.order.len(), IDS_KEPT);
        assert_eq!(peer.has.members.len(), IDS_KEPT);
        // A peer gone is no longer a source.
        router.peer_down(1);
        let asks = router.on_timer(IWANT_WAIT_MS);
        assert!(!asks.is_empty() && asks.iter().all(|(peer, _)| *peer != 1));
    }
}
