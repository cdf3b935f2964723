//! Several engines in one thread over an in-memory network with virtual time: convergence,
//! deltas, and every kind of misbehaving peer.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::commit::{Commit, CommitBody};
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, Snapshot};
use meridian_registry::store::{BlockStore, Head, MemoryStore, StoreBatch};

use crate::engine::*;
use crate::wire::{Gossip, Request, Response};

const T0: i64 = 1_800_000_000;

/// How a test node answers requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Serves every block with one byte flipped.
    Tamper,
    /// Never answers.
    Silent,
}

struct TestNode {
    engine: Engine<usize>,
    store: MemoryStore,
    behaviour: Behaviour,
    verdicts: Vec<Verdict>,
    disconnected: Vec<usize>,
    governance_changes: usize,
}

enum Message {
    Gossip(usize, usize, Vec<u8>),
    Request(usize, usize, u64, Vec<u8>),
    Response(usize, usize, u64, Vec<u8>),
}

struct Net {
    nodes: Vec<TestNode>,
    links: Vec<Vec<usize>>,
    queue: VecDeque<Message>,
    now: Now,
    keys: Vec<Keypair>,
    /// Gossip waiting for its verdict: (node, id) -> (sender, bytes).
    deferred: std::collections::HashMap<(usize, u64), (usize, Vec<u8>)>,
}

fn key(i: usize) -> Keypair {
    let mut secret = [0u8; 32];
    secret[0] = i as u8 + 1;
    secret[1] = 0x5a;
    Keypair::from_secret(&secret)
}

impl Net {
    fn new(n: usize, config: SyncConfig) -> Self {
        Self::with_governance(n, config, |_| Box::new(NoGovernance))
    }

    fn with_governance(
        n: usize,
        config: SyncConfig,
        governance: impl Fn(usize) -> Box<dyn GovernanceHooks>,
    ) -> Self {
        // The periodic resync would keep the network from ever settling; it has its own test
        // (`a_resync_asks_each_peer_in_turn`), and the simulations run with it.
        let config = SyncConfig {
            resync_ms: 0,
            ..config
        };
        let nodes = (0..n)
            .map(|i| {
                let store = MemoryStore::new();
                TestNode {
                    engine: Engine::new(config.clone(), Arc::new(store.clone()), governance(i)),
                    store,
                    behaviour: Behaviour::Honest,
                    verdicts: Vec::new(),
                    disconnected: Vec::new(),
                    governance_changes: 0,
                }
            })
            .collect();
        Self {
            nodes,
            links: vec![Vec::new(); n],
            queue: VecDeque::new(),
            now: Now { ms: 0, unix: T0 },
            keys: (0..n).map(key).collect(),
            deferred: std::collections::HashMap::new(),
        }
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links[a].push(b);
        self.links[b].push(a);
        let now = self.now;
        let info = |i: usize, keys: &[Keypair]| PeerInfo {
            did: Some(keys[i].did()),
            region: None,
        };
        let (ia, ib) = (info(a, &self.keys), info(b, &self.keys));
        self.nodes[a].engine.peer_up(b, ib, now);
        self.nodes[b].engine.peer_up(a, ia, now);
    }

    fn full_mesh(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.link(a, b);
            }
        }
    }

    fn drain_outputs(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(output) = self.nodes[i].engine.poll_output() {
                match output {
                    Output::Request { peer, id, request } => {
                        self.queue
                            .push_back(Message::Request(i, peer, id, request.encode()));
                    }
                    Output::Broadcast(gossip) => {
                        let bytes = gossip.encode();
                        for &peer in &self.links[i] {
                            self.queue
                                .push_back(Message::Gossip(i, peer, bytes.clone()));
                        }
                    }
                    Output::Import {
                        publisher,
                        contents,
                    } => {
                        let node = &mut self.nodes[i];
                        let config = node.engine.config().clone();
                        let result = import(&node.store, &contents, self.now.unix, &config)
                            .map(|v| v.commit.body.seq);
                        node.engine.import_finished(
                            ImportReport {
                                publisher,
                                commit: contents.root,
                                result,
                            },
                            self.now,
                        );
                    }
                    Output::Disconnect { peer } => self.nodes[i].disconnected.push(peer),
                    Output::Forward { id, verdict } => {
                        if let Some((from, bytes)) = self.deferred.remove(&(i, id))
                            && verdict == Verdict::Accept
                        {
                            self.forward(i, from, bytes);
                        }
                    }
                    Output::GovernanceChanged => self.nodes[i].governance_changes += 1,
                    Output::Penalise { .. } | Output::Equivocation { .. } => {}
                }
            }
        }
    }

    fn deliver(&mut self, message: Message) {
        let now = self.now;
        match message {
            Message::Gossip(from, to, bytes) => {
                if self.nodes[to].behaviour != Behaviour::Honest {
                    return;
                }
                let verdict = self.nodes[to].engine.on_gossip(&from, &bytes, now);
                self.nodes[to].verdicts.push(verdict);
                match verdict {
                    Verdict::Accept => self.forward(to, from, bytes),
                    Verdict::Defer(id) => {
                        self.deferred.insert((to, id), (from, bytes));
                    }
                    Verdict::Ignore | Verdict::Reject => {}
                }
            }
            Message::Request(from, to, id, bytes) => match self.nodes[to].behaviour {
                Behaviour::Silent => {}
                Behaviour::Honest => {
                    let answer = self.nodes[to].engine.on_request(&from, &bytes, now);
                    self.queue
                        .push_back(Message::Response(to, from, id, answer));
                }
                Behaviour::Tamper => {
                    let answer = self.nodes[to].engine.on_request(&from, &bytes, now);
                    let answer = match Response::decode(&answer, usize::MAX).unwrap() {
                        Response::Blocks(blocks) => Response::Blocks(
                            blocks
                                .into_iter()
                                .map(|(cid, block)| {
                                    let mut bytes = block.to_vec();
                                    let last = bytes.len() - 1;
                                    bytes[last] ^= 1;
                                    (cid, Arc::from(bytes))
                                })
                                .collect(),
                        )
                        .encode(),
                        _ => answer,
                    };
                    self.queue
                        .push_back(Message::Response(to, from, id, answer));
                }
            },
            Message::Response(from, to, id, bytes) => {
                self.nodes[to]
                    .engine
                    .on_response(&from, id, Ok(&bytes), now);
            }
        }
    }

    fn forward(&mut self, node: usize, from: usize, bytes: Vec<u8>) {
        for &peer in &self.links[node] {
            if peer != from {
                self.queue
                    .push_back(Message::Gossip(node, peer, bytes.clone()));
            }
        }
    }

    /// Runs until nothing is queued and no timer is due; timers advance virtual time.
    fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the network did not settle");
    }

    /// Delivers one message, or fires the next timers; false once the network has settled.
    fn step(&mut self) -> bool {
        self.drain_outputs();
        if let Some(message) = self.queue.pop_front() {
            self.deliver(message);
            return true;
        }
        let next = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.next_deadline())
            .min();
        let Some(deadline) = next else {
            return false;
        };
        let busy = self.nodes.iter().any(|n| !n.engine.is_idle());
        if !busy && deadline > self.now.ms + 60_000 {
            return false;
        }
        self.now.ms = self.now.ms.max(deadline);
        let now = self.now;
        for node in &mut self.nodes {
            node.engine.on_timer(now);
        }
        true
    }

    fn head(&self, node: usize, publisher: usize) -> Option<Head> {
        self.nodes[node]
            .store
            .head(&self.keys[publisher].did())
            .unwrap()
    }
}

/// A registry of `n` agents of `acme`, those in `changed` with another skill, following
/// `previous`.
fn build(
    key: &Keypair,
    n: usize,
    changed: std::ops::Range<usize>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let cards = (0..n)
        .map(|i| {
            let skill = if changed.contains(&i) {
                "translate"
            } else {
                "search"
            };
            meridian_registry::samples::sample_card("acme", i, skill)
        })
        .collect();
    snapshot::build(BuildInput {
        node_key: key,
        org_key: key,
        org: "acme",
        region: "eu-west",
        cards,
        previous,
        now: T0 + previous.map_or(0, |p| p.commit.body.seq as i64),
        expires_in_secs: 7 * 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap()
    .0
}

/// Stores a node's own snapshot and announces it.
fn publish(net: &mut Net, node: usize, snapshot: &Snapshot) {
    net.nodes[node].store.apply(snapshot.store_batch()).unwrap();
    net.nodes[node].engine.announce(snapshot.commit.to_block());
}

#[test]
fn nodes_converge_and_a_change_moves_only_the_delta() {
    converge_then_change(SyncConfig::default(), 1);
}

#[test]
fn a_delta_too_large_for_one_message_falls_back_to_the_walk() {
    // 16 KiB messages and 40 changed agents: the delta does not fit in one answer, so the walk
    // fetches the changed blocks level by level.
    let config = SyncConfig {
        message_bytes_max: 16 * 1024,
        blocks_per_request: 8,
        ..SyncConfig::default()
    };
    converge_then_change(config, 40);
}

#[test]
fn peers_still_fetching_a_head_are_not_failures_of_its_blocks() {
    // A fresh snapshot too large for the one source's request slots: the walk also asks the
    // other nodes, which are fetching the same head and answer with nothing. Those empty
    // answers must not count as failed attempts on the blocks (eight of them gave the sync
    // up, so large snapshots never converged over the real mesh).
    let config = SyncConfig {
        blocks_per_request: 8,
        requests_per_peer: 2,
        ..SyncConfig::default()
    };
    let mut net = Net::new(5, config);
    net.full_mesh();
    let first = build(&net.keys[0], 600, 0..0, None);
    publish(&mut net, 0, &first);
    net.run();
    for node in 1..5 {
        assert_eq!(
            net.head(node, 0).map(|h| h.commit),
            Some(first.commit_cid),
            "node {node} did not converge"
        );
        assert_eq!(net.nodes[node].engine.stats().syncs_abandoned, 0);
    }
}

/// Five nodes converge on 400 agents; then `changed` agents change. With one change every
/// node takes in at most 8 KiB in one delta request; with many, the walk takes several
/// requests and moves about one manifest and its path per change.
fn converge_then_change(config: SyncConfig, changed: usize) {
    let mut net = Net::new(5, config);
    net.full_mesh();
    let first = build(&net.keys[0], 400, 0..0, None);
    publish(&mut net, 0, &first);
    net.run();
    for node in 1..5 {
        assert_eq!(net.head(node, 0).unwrap().commit, first.commit_cid);
        let loaded = Snapshot::load(&net.nodes[node].store, &first.commit_cid, Limits::DEFAULT);
        assert_eq!(loaded.unwrap().tree.len(), 400);
    }
    let before: Vec<u64> = (0..5)
        .map(|i| net.nodes[i].engine.stats().bytes_fetched)
        .collect();
    let requests_before: Vec<u64> = (0..5)
        .map(|i| net.nodes[i].engine.stats().requests_sent)
        .collect();
    let second = build(&net.keys[0], 400, 0..changed, Some(&first));
    publish(&mut net, 0, &second);
    net.run();
    for node in 1..5 {
        assert_eq!(net.head(node, 0).unwrap().commit, second.commit_cid);
        let stats = net.nodes[node].engine.stats();
        let fetched = stats.bytes_fetched - before[node];
        let requests = stats.requests_sent - requests_before[node];
        if changed == 1 {
            assert!(fetched < 8 * 1024, "node {node} fetched {fetched} bytes");
            assert_eq!(requests, 1, "node {node}: one delta request");
        } else {
            let per_change = fetched / changed as u64;
            assert!(
                per_change < 3 * 1024,
                "node {node}: {per_change} bytes per change"
            );
            assert!(requests > 2, "node {node}: {requests} requests");
        }
        assert_eq!(stats.imports, 2);
        assert!(stats.offenses.is_empty(), "{:?}", stats.offenses);
    }
}

#[test]
fn a_late_joiner_and_a_restarted_node_catch_up_through_heads() {
    let mut net = Net::new(3, SyncConfig::default());
    net.link(0, 1);
    let first = build(&net.keys[0], 50, 0..0, None);
    publish(&mut net, 0, &first);
    net.run();
    assert!(net.head(1, 0).is_some());
    assert!(net.head(2, 0).is_none());
    // Node 2 joins later, knowing only node 1: it learns the head from 1's Heads answer.
    net.link(1, 2);
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    // A restarted engine over the same store serves and syncs like before.
    let store = net.nodes[2].store.clone();
    net.nodes[2].engine = Engine::new(
        SyncConfig {
            resync_ms: 0,
            ..SyncConfig::default()
        },
        Arc::new(store),
        Box::new(NoGovernance),
    );
    let second = build(&net.keys[0], 50, 3..4, Some(&first));
    publish(&mut net, 0, &second);
    net.run();
    // Node 2's new engine has no peers until it reconnects.
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    let now = net.now;
    net.nodes[2].engine.peer_up(1, PeerInfo::default(), now);
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, second.commit_cid);
    assert!(net.nodes[2].engine.stats().bytes_fetched < 8 * 1024);
}

#[test]
fn tampered_blocks_are_refused_and_the_liar_is_avoided() {
    let mut net = Net::new(3, SyncConfig::default());
    net.full_mesh();
    net.nodes[1].behaviour = Behaviour::Tamper;
    let first = build(&net.keys[0], 100, 0..0, None);
    // Node 1 holds the snapshot too, and is the first to tell node 2 about it.
    publish(&mut net, 0, &first);
    let store = &net.nodes[1].store;
    store
        .apply(StoreBatch {
            blocks: first.blocks.iter().map(|(c, b)| (*c, b.clone())).collect(),
            ..StoreBatch::default()
        })
        .unwrap();
    let _ = net.nodes[0].engine.poll_output(); // drop the honest announcement
    let now = net.now;
    let head = Gossip::Head(first.commit.to_block()).encode();
    assert!(matches!(
        net.nodes[2].engine.on_gossip(&1, &head, now),
        Verdict::Defer(_)
    ));
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    let stats = net.nodes[2].engine.stats();
    assert!(stats.offenses.get("tampered_block").copied().unwrap_or(0) >= 1);
    assert!(net.nodes[2].engine.peer_score(&1).unwrap() < 0);
    assert_eq!(net.nodes[2].engine.peer_score(&0), Some(0));
    // No tampered block reached the store: every block there hashes right.
    let loaded = Snapshot::load(&net.nodes[2].store, &first.commit_cid, Limits::DEFAULT).unwrap();
    assert_eq!(loaded.tree.len(), 100);
}

#[test]
fn a_silent_peer_times_out_and_another_source_is_used() {
    let mut net = Net::new(3, SyncConfig::default());
    net.full_mesh();
    net.nodes[1].behaviour = Behaviour::Silent;
    let first = build(&net.keys[0], 30, 0..0, None);
    publish(&mut net, 0, &first);
    let _ = net.nodes[0].engine.poll_output();
    let now = net.now;
    let head = Gossip::Head(first.commit.to_block()).encode();
    assert!(matches!(
        net.nodes[2].engine.on_gossip(&1, &head, now),
        Verdict::Defer(_)
    ));
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    assert!(net.now.ms >= SyncConfig::default().request_timeout_ms);
    // The Heads request at connection and the first block request both timed out.
    assert_eq!(
        net.nodes[2].engine.stats().offenses.get("timeout"),
        Some(&2)
    );
}

#[test]
fn an_unanswered_delta_question_is_asked_of_another_source_not_walked() {
    let mut net = Net::new(3, SyncConfig::default());
    net.full_mesh();
    let first = build(&net.keys[0], 400, 0..0, None);
    publish(&mut net, 0, &first);
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    let second = build(&net.keys[0], 400, 0..1, Some(&first));
    // Node 1 tells node 2 about the change first, then falls silent (cut off, say).
    net.nodes[1].store.apply(second.store_batch()).unwrap();
    net.nodes[1].behaviour = Behaviour::Silent;
    let requests_before = net.nodes[2].engine.stats().requests_sent;
    let now = net.now;
    let head = Gossip::Head(second.commit.to_block()).encode();
    net.nodes[2].engine.on_gossip(&1, &head, now);
    publish(&mut net, 0, &second);
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, second.commit_cid);
    let stats = net.nodes[2].engine.stats();
    // The delta to node 1 timed out and the delta was asked of node 0: two requests, where
    // falling back to the walk would have taken one per tree level.
    assert_eq!(stats.requests_sent - requests_before, 2);
    assert_eq!(stats.offenses.get("timeout"), Some(&1));
}

#[test]
fn a_peer_back_from_a_partition_is_asked_at_once_despite_the_backoff() {
    let config = SyncConfig {
        retry_backoff_ms: 30_000,
        retry_backoff_max_ms: 60_000,
        ..SyncConfig::default()
    };
    let mut net = Net::new(2, config);
    net.full_mesh();
    let first = build(&net.keys[0], 30, 0..0, None);
    publish(&mut net, 0, &first);
    while net.nodes[0].engine.poll_output().is_some() {}
    let now = net.now;
    let head = Gossip::Head(first.commit.to_block()).encode();
    net.nodes[1].engine.on_gossip(&0, &head, now);
    // The first block request is lost with the connection: the block backs off for 30 s.
    while net.nodes[1].engine.poll_output().is_some() {}
    net.nodes[1].engine.peer_down(&0, now);
    while net.nodes[1].engine.poll_output().is_some() {}
    // One second later the peer is back: it is asked again at once, not in 29 s.
    net.now.ms += 1_000;
    let now = net.now;
    net.nodes[1].engine.peer_up(0, PeerInfo::default(), now);
    let mut blocks_asked = false;
    while let Some(output) = net.nodes[1].engine.poll_output() {
        if let Output::Request {
            peer: 0,
            request: Request::Blocks(_),
            ..
        } = output
        {
            blocks_asked = true;
        }
    }
    assert!(blocks_asked, "the returning source was not asked");
}

#[test]
fn a_dropped_connection_mid_fetch_is_retried_elsewhere() {
    let mut net = Net::new(3, SyncConfig::default());
    net.full_mesh();
    let first = build(&net.keys[0], 30, 0..0, None);
    publish(&mut net, 1, &first);
    // Node 1 has it, node 0 (the publisher) too.
    publish(&mut net, 0, &first);
    while net.nodes[0].engine.poll_output().is_some() {}
    while net.nodes[1].engine.poll_output().is_some() {}
    let now = net.now;
    let head = Gossip::Head(first.commit.to_block()).encode();
    net.nodes[2].engine.on_gossip(&1, &head, now);
    // The request to node 1 is sent, then node 1 goes away before answering.
    let mut sent = Vec::new();
    while let Some(output) = net.nodes[2].engine.poll_output() {
        sent.push(output);
    }
    assert!(
        sent.iter()
            .any(|o| matches!(o, Output::Request { peer: 1, .. }))
    );
    net.nodes[2].engine.peer_down(&1, now);
    net.links[2].retain(|&p| p != 1);
    net.run();
    assert_eq!(net.head(2, 0).unwrap().commit, first.commit_cid);
    assert!(net.nodes[2].engine.stats().requests_failed >= 1);
}

fn forged(commit: &Commit) -> Vec<u8> {
    let mut forged = commit.clone();
    forged.sig[0] ^= 0xff;
    forged.to_block()
}

#[test]
fn rollback_forgery_expiry_and_oversize_are_rejected_and_penalised() {
    let config = SyncConfig {
        ban_score: -1000,
        ..SyncConfig::default()
    };
    let mut net = Net::new(2, config);
    net.link(0, 1);
    let first = build(&net.keys[0], 10, 0..0, None);
    publish(&mut net, 0, &first);
    net.run();
    let second = build(&net.keys[0], 10, 1..2, Some(&first));
    publish(&mut net, 0, &second);
    net.run();
    assert_eq!(net.head(1, 0).unwrap().seq, 2);
    let now = net.now;
    let engine = &mut net.nodes[1].engine;
    // A replayed old head.
    let old = Gossip::Head(first.commit.to_block()).encode();
    assert_eq!(engine.on_gossip(&0, &old, now), Verdict::Reject);
    // A forged signature.
    let bad = Gossip::Head(forged(&second.commit)).encode();
    assert_eq!(engine.on_gossip(&0, &bad, now), Verdict::Reject);
    // Garbage and oversized messages.
    assert_eq!(engine.on_gossip(&0, b"\x01garbage", now), Verdict::Reject);
    let huge = Gossip::Head(vec![0; 100 * 1024]).encode();
    assert_eq!(engine.on_gossip(&0, &huge, now), Verdict::Reject);
    // An expired head: valid signature, seq above, but past its expiry.
    let expired = Commit {
        body: CommitBody {
            seq: 9,
            created_at: now.unix - 100,
            expires_at: now.unix - 1,
            ..second.commit.body.clone()
        },
        sig: [0; 64],
    };
    let expired = CommitBody::sign(expired.body, &net.keys[0]).unwrap();
    let engine = &mut net.nodes[1].engine;
    let message = Gossip::Head(expired.to_block()).encode();
    assert_eq!(engine.on_gossip(&0, &message, now), Verdict::Reject);
    // A duplicate is ignored without blame.
    let again = Gossip::Head(second.commit.to_block()).encode();
    assert_eq!(engine.on_gossip(&0, &again, now), Verdict::Ignore);
    let offenses = engine.stats().offenses.clone();
    let expected: BTreeMap<&str, u64> = [
        ("rollback", 1),
        ("bad_signature", 1),
        ("malformed", 1),
        ("oversized", 1),
        ("expired", 1),
    ]
    .into();
    assert_eq!(offenses, expected);
    let penalty = [
        Offense::Rollback,
        Offense::BadSignature,
        Offense::Malformed,
        Offense::Oversized,
        Offense::Expired,
    ]
    .iter()
    .map(|o| o.penalty())
    .sum::<i64>();
    assert_eq!(engine.peer_score(&0), Some(-penalty));
    assert_eq!(net.head(1, 0).unwrap().seq, 2, "nothing bad was accepted");
    // The same old head in a list the driver asked for (a hub's long-poll) is merely behind:
    // ignored, not blamed.
    let engine = &mut net.nodes[1].engine;
    engine.on_heads(&0, &[first.commit.to_block()], &[], &[], now);
    assert_eq!(engine.peer_score(&0), Some(-penalty));
    assert_eq!(net.head(1, 0).unwrap().seq, 2);
}

#[test]
fn a_peer_that_keeps_lying_is_banned() {
    let mut net = Net::new(2, SyncConfig::default());
    net.link(0, 1);
    let first = build(&net.keys[0], 3, 0..0, None);
    let bad = Gossip::Head(forged(&first.commit)).encode();
    let now = net.now;
    let engine = &mut net.nodes[1].engine;
    for _ in 0..2 {
        assert_eq!(engine.on_gossip(&0, &bad, now), Verdict::Reject);
    }
    net.drain_outputs();
    assert_eq!(net.nodes[1].disconnected, vec![0]);
    let engine = &mut net.nodes[1].engine;
    assert!(engine.is_banned(&0, now));
    // Banned: even a valid head from it is ignored until the ban ends.
    let good = Gossip::Head(first.commit.to_block()).encode();
    assert_eq!(engine.on_gossip(&0, &good, now), Verdict::Ignore);
    let later = Now {
        ms: now.ms + SyncConfig::default().ban_ms + 1,
        unix: now.unix,
    };
    assert!(matches!(
        engine.on_gossip(&0, &good, later),
        Verdict::Defer(_)
    ));
}

#[test]
fn an_equivocation_is_proven_and_the_proof_reaches_everyone() {
    // 0 is the equivocating publisher; 1 sees one fork, 2 the other; 3 only talks to 2.
    let mut net = Net::new(4, SyncConfig::default());
    net.link(0, 1);
    net.link(0, 2);
    net.link(1, 2);
    net.link(2, 3);
    let base = build(&net.keys[0], 10, 0..0, None);
    publish(&mut net, 0, &base);
    net.run();
    let fork_a = build(&net.keys[0], 10, 1..2, Some(&base));
    let fork_b = build(&net.keys[0], 10, 2..3, Some(&base));
    assert_eq!(fork_a.commit.body.seq, fork_b.commit.body.seq);
    assert_ne!(fork_a.commit_cid, fork_b.commit_cid);
    // The publisher's store serves both forks' blocks.
    for fork in [&fork_a, &fork_b] {
        net.nodes[0]
            .store
            .apply(StoreBatch {
                blocks: fork.blocks.iter().map(|(c, b)| (*c, b.clone())).collect(),
                ..StoreBatch::default()
            })
            .unwrap();
    }
    let a = Gossip::Head(fork_a.commit.to_block()).encode();
    let b = Gossip::Head(fork_b.commit.to_block()).encode();
    net.queue.push_back(Message::Gossip(0, 1, a));
    net.run();
    assert_eq!(net.head(1, 0).unwrap().commit, fork_a.commit_cid);
    assert_eq!(net.head(2, 0).unwrap().commit, fork_a.commit_cid);
    // Then the other fork arrives straight from the publisher.
    net.queue.push_back(Message::Gossip(0, 2, b));
    net.run();
    assert_eq!(net.nodes[2].verdicts.last(), Some(&Verdict::Ignore));
    assert_eq!(net.head(2, 0).unwrap().commit, fork_a.commit_cid);
    let did = net.keys[0].did();
    for node in 1..4 {
        let proofs = net.nodes[node].store.equivocations(&did).unwrap();
        assert_eq!(proofs.len(), 1, "node {node} has the proof");
        let proof = meridian_registry::commit::EquivocationProof::decode(&proofs[0].1).unwrap();
        assert_eq!(proof.verify().unwrap().1, fork_a.commit.body.seq);
    }
    // The publisher sent the conflicting head itself: penalised as an equivocator.
    assert!(net.nodes[2].engine.peer_score(&0).unwrap() <= -Offense::Equivocation.penalty());
    // Another valid proof about the same publisher (seq 9) adds nothing and is not kept: a
    // publisher cannot fill our store with proofs against itself.
    let sign = |data: Cid| {
        CommitBody::sign(
            CommitBody {
                seq: 9,
                data,
                ..fork_a.commit.body.clone()
            },
            &net.keys[0],
        )
        .unwrap()
        .to_block()
    };
    let proof = meridian_registry::commit::EquivocationProof {
        first: sign(fork_a.commit.body.data),
        second: sign(fork_b.commit.body.data),
    };
    let message = Gossip::Equivocation(proof.to_block()).encode();
    let now = net.now;
    assert_eq!(
        net.nodes[3].engine.on_gossip(&2, &message, now),
        Verdict::Ignore
    );
    assert_eq!(net.nodes[3].store.equivocations(&did).unwrap().len(), 1);
}

/// A proof against a publisher none of whose heads was taken still reaches a node that was
/// away when it was gossiped: heads answers carry it (found by the long swarm run, where a
/// node that restarted never learnt of the equivocator).
#[test]
fn an_equivocation_proof_reaches_a_node_that_missed_its_gossip() {
    let mut net = Net::new(3, SyncConfig::default());
    net.link(0, 1);
    let fork_a = build(&net.keys[2], 5, 1..2, None);
    let fork_b = build(&net.keys[2], 5, 2..3, None);
    let proof = meridian_registry::commit::EquivocationProof {
        first: fork_a.commit.to_block(),
        second: fork_b.commit.to_block(),
    };
    net.queue.push_back(Message::Gossip(
        99,
        1,
        Gossip::Equivocation(proof.to_block()).encode(),
    ));
    net.run();
    let did = net.keys[2].did();
    assert!(net.head(1, 2).is_none());
    assert_eq!(net.nodes[0].store.equivocations(&did).unwrap().len(), 1);
    // Node 2 was not linked when it spread; it learns it when it connects.
    assert!(net.nodes[2].store.equivocations(&did).unwrap().is_empty());
    net.link(1, 2);
    net.run();
    assert_eq!(net.nodes[2].store.equivocations(&did).unwrap().len(), 1);
}

#[test]
fn an_invalid_snapshot_is_refused_and_not_fetched_again() {
    let mut net = Net::new(2, SyncConfig::default());
    net.link(0, 1);
    let good = build(&net.keys[0], 5, 0..0, None);
    // A commit, validly signed by the publisher, whose tree points at a manifest that is not a
    // manifest: every block hashes right, but the snapshot is invalid.
    let junk: Arc<[u8]> = Arc::from(meridian_registry::cbor::encode(
        &meridian_registry::cbor::Value::Text("not a manifest".into()),
    ));
    let junk_cid = meridian_registry::ids::dag_cbor_cid(&junk);
    let mut tree = snapshot::RegistryTree::new();
    tree.insert(b"acme/x", junk_cid);
    let body = CommitBody {
        data: tree.root_cid(),
        ..good.commit.body.clone()
    };
    let commit = CommitBody::sign(body, &net.keys[0]).unwrap();
    let mut blocks: Vec<(Cid, Arc<[u8]>)> = tree.blocks();
    blocks.push((junk_cid, junk));
    net.nodes[0]
        .store
        .apply(StoreBatch {
            blocks,
            ..StoreBatch::default()
        })
        .unwrap();
    net.nodes[0].engine.announce(commit.to_block());
    net.run();
    assert!(net.head(1, 0).is_none());
    let stats = net.nodes[1].engine.stats().clone();
    assert_eq!(stats.imports_failed, 1);
    assert_eq!(stats.offenses.get("invalid_snapshot"), Some(&1));
    // Announced again: refused at once, nothing fetched.
    let now = net.now;
    let again = Gossip::Head(commit.to_block()).encode();
    assert_eq!(
        net.nodes[1].engine.on_gossip(&0, &again, now),
        Verdict::Ignore
    );
    net.run();
    assert_eq!(
        net.nodes[1].engine.stats().blocks_fetched,
        stats.blocks_fetched
    );
}

/// Accepts documents that start with `gov:` once each; one of the form `gov:needs:DOC` only
/// once `DOC` is known (as a policy signed under a newer root needs that root).
struct TestGovernance {
    known: Vec<Vec<u8>>,
}

impl GovernanceHooks for TestGovernance {
    fn offer(&mut self, block: &[u8], _unix: i64) -> GovernanceOutcome {
        if !block.starts_with(b"gov:") {
            return GovernanceOutcome::Malformed("not a document".into());
        }
        if self.known.iter().any(|k| k == block) {
            return GovernanceOutcome::Known;
        }
        if let Some(needed) = block.strip_prefix(b"gov:needs:")
            && !self.known.iter().any(|k| k == needed)
        {
            return GovernanceOutcome::Refused("signed under a root not known yet".into());
        }
        self.known.push(block.to_vec());
        GovernanceOutcome::New
    }
    fn documents(&self) -> Vec<Vec<u8>> {
        self.known.clone()
    }
    fn publisher_allowed(&self, _did: &str) -> bool {
        true
    }
}

#[test]
fn governance_documents_spread_through_gossip_and_to_late_joiners() {
    let mut net = Net::with_governance(4, SyncConfig::default(), |_| {
        Box::new(TestGovernance { known: Vec::new() })
    });
    net.link(0, 1);
    net.link(1, 2);
    let doc = Gossip::Governance(b"gov: revoke key K".to_vec()).encode();
    // From a peer outside the test network to node 1, which forwards it.
    net.queue.push_back(Message::Gossip(99, 1, doc));
    net.run();
    assert_eq!(net.nodes[1].verdicts, vec![Verdict::Accept]);
    for node in 0..3 {
        assert_eq!(net.nodes[node].governance_changes, 1, "node {node}");
    }
    net.link(2, 3);
    net.run();
    assert_eq!(net.nodes[3].governance_changes, 1);
    let now = net.now;
    let junk = Gossip::Governance(b"junk".to_vec()).encode();
    assert_eq!(
        net.nodes[3].engine.on_gossip(&2, &junk, now),
        Verdict::Reject
    );
}

/// A document learnt from a peer's heads answer (not from gossip) is passed on: found by the
/// long swarm run, where nodes that caught up after a cut kept a policy to themselves and a
/// neighbour whose links had stayed up never got it.
#[test]
fn a_governance_document_learnt_on_connect_is_passed_on() {
    let doc = b"gov: policy v2".to_vec();
    let held = doc.clone();
    let mut net = Net::with_governance(3, SyncConfig::default(), move |i| {
        Box::new(TestGovernance {
            known: if i == 0 {
                vec![held.clone()]
            } else {
                Vec::new()
            },
        })
    });
    net.link(1, 2);
    net.run();
    assert_eq!(net.nodes[2].governance_changes, 0);
    // Node 1 meets node 0 and learns the document from its heads answer; node 2, which
    // never meets node 0, gets it from node 1.
    net.link(0, 1);
    net.run();
    assert_eq!(net.nodes[1].governance_changes, 1);
    assert_eq!(net.nodes[2].governance_changes, 1);
}

/// Gossip may deliver a document before the one it depends on (found by the swarm
/// simulation: a policy signed under root v2 reached nodes before root v2 did, was refused,
/// and never offered again). The refused one is kept and taken once the other arrives, and
/// passed on to peers.
#[test]
fn a_governance_document_that_arrives_before_its_root_is_taken_after_it() {
    let mut net = Net::with_governance(3, SyncConfig::default(), |_| {
        Box::new(TestGovernance { known: Vec::new() })
    });
    net.link(0, 1);
    net.link(1, 2);
    let root = b"gov:root v2".to_vec();
    let mut policy = b"gov:needs:".to_vec();
    policy.extend_from_slice(&root);
    // The policy reaches node 1 first: refused, not forwarded.
    net.queue.push_back(Message::Gossip(
        99,
        1,
        Gossip::Governance(policy.clone()).encode(),
    ));
    net.run();
    assert_eq!(net.nodes[1].verdicts, vec![Verdict::Ignore]);
    assert_eq!(net.nodes[1].governance_changes, 0);
    // Then the root: node 1 takes both and passes both on.
    net.queue
        .push_back(Message::Gossip(99, 1, Gossip::Governance(root).encode()));
    net.run();
    for node in 0..3 {
        assert_eq!(net.nodes[node].governance_changes, 2, "node {node}");
    }
    // A document that never becomes acceptable is not kept forever: the waiting list is
    // bounded, oldest dropped first.
    let now = net.now;
    for i in 0..GOVERNANCE_WAITING_MAX + 5 {
        let orphan = format!("gov:needs:gov:never {i}").into_bytes();
        let gossip = Gossip::Governance(orphan).encode();
        assert_eq!(
            net.nodes[2].engine.on_gossip(&1, &gossip, now),
            Verdict::Ignore
        );
    }
    assert_eq!(
        net.nodes[2].engine.governance_waiting(),
        GOVERNANCE_WAITING_MAX
    );
    // A refused document bigger than a gossip message (a heads answer may carry one) is not
    // kept: what waits is bounded in bytes as well as in count.
    let mut lone = Engine::new(
        SyncConfig {
            resync_ms: 0,
            ..SyncConfig::default()
        },
        Arc::new(MemoryStore::new()),
        Box::new(TestGovernance { known: Vec::new() }),
    );
    lone.peer_up(1, PeerInfo::default(), now);
    let mut huge = b"gov:needs:gov:never".to_vec();
    huge.resize(SyncConfig::default().gossip_bytes_max + 1, b'x');
    let answer = Response::Heads {
        commits: Vec::new(),
        governance: vec![huge],
        equivocations: Vec::new(),
    };
    let id = match lone.poll_output() {
        Some(Output::Request { id, .. }) => id,
        other => panic!("expected the heads request, got {other:?}"),
    };
    lone.on_response(&1, id, Ok(&answer.encode()), now);
    assert_eq!(lone.governance_waiting(), 0);
}

#[test]
fn block_requests_are_bounded_and_absent_blocks_are_left_out() {
    let mut net = Net::new(2, SyncConfig::default());
    let first = build(&net.keys[0], 5, 0..0, None);
    publish(&mut net, 0, &first);
    let now = net.now;
    let present = first.commit_cid;
    let absent = meridian_registry::ids::dag_cbor_cid(b"\xa0");
    let answer =
        net.nodes[0]
            .engine
            .on_request(&1, &Request::Blocks(vec![absent, present]).encode(), now);
    match Response::decode(&answer, usize::MAX).unwrap() {
        Response::Blocks(blocks) => {
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].0, present);
        }
        other => panic!("{other:?}"),
    }
    let too_many = Request::Blocks(vec![present; 5000]).encode();
    let answer = net.nodes[0].engine.on_request(&1, &too_many, now);
    assert!(matches!(
        Response::decode(&answer, usize::MAX).unwrap(),
        Response::Refused(_)
    ));
    let answer = net.nodes[0].engine.on_request(&1, b"junk", now);
    assert!(matches!(
        Response::decode(&answer, usize::MAX).unwrap(),
        Response::Refused(_)
    ));
}

fn lone_engine(config: SyncConfig) -> Engine<usize> {
    Engine::new(config, Arc::new(MemoryStore::new()), Box::new(NoGovernance))
}

/// Heads requests sent, by peer, among the engine's outputs (drained).
fn heads_requests(engine: &mut Engine<usize>) -> Vec<usize> {
    let mut asked = Vec::new();
    while let Some(output) = engine.poll_output() {
        if let Output::Request { peer, request, .. } = output
            && request == Request::Heads
        {
            asked.push(peer);
        }
    }
    asked
}

/// Every `resync_ms` one connected peer, each in turn, is asked for its heads again: what a
/// lost gossip message left out is repaired even when no connection breaks.
#[test]
fn a_resync_asks_each_peer_in_turn() {
    let mut engine = lone_engine(SyncConfig {
        resync_ms: 1_000,
        ..SyncConfig::default()
    });
    let mut now = Now { ms: 10, unix: T0 };
    engine.peer_up(1, PeerInfo::default(), now);
    engine.peer_up(2, PeerInfo::default(), now);
    assert_eq!(heads_requests(&mut engine), vec![1, 2]);
    assert_eq!(engine.next_deadline(), Some(1_010));
    let mut asked = Vec::new();
    for _ in 0..4 {
        now.ms = engine.next_deadline().unwrap();
        engine.on_timer(now);
        asked.extend(heads_requests(&mut engine));
    }
    assert_eq!(asked, vec![1, 2, 1, 2]);
    // A peer that left is not asked; with nobody connected, nobody is.
    engine.peer_down(&1, now);
    engine.peer_down(&2, now);
    now.ms += 1_000;
    engine.on_timer(now);
    assert!(heads_requests(&mut engine).is_empty());
    // Off: only the heads request on connecting.
    let mut off = lone_engine(SyncConfig {
        resync_ms: 0,
        ..SyncConfig::default()
    });
    off.peer_up(1, PeerInfo::default(), now);
    assert_eq!(heads_requests(&mut off), vec![1]);
    now.ms += 1_000;
    off.on_timer(now);
    assert!(heads_requests(&mut off).is_empty());
}

#[test]
fn remembered_peers_are_bounded_against_fresh_identities() {
    let mut engine = lone_engine(SyncConfig {
        peers_remembered_max: 10,
        ..SyncConfig::default()
    });
    let now = Now { ms: 1, unix: T0 };
    for peer in 0..50 {
        engine.peer_up(peer, PeerInfo::default(), now);
        for _ in 0..4 {
            assert_eq!(engine.on_gossip(&peer, b"garbage", now), Verdict::Reject);
        }
        assert!(engine.is_banned(&peer, now));
        engine.peer_down(&peer, now);
    }
    assert_eq!(engine.remembered_peers(), 10);
    assert_eq!(engine.peer_count(), 0);
    // The newest bans are the ones kept (they end last).
    assert!(engine.is_banned(&49, now));
}

#[test]
fn a_bad_score_survives_a_reconnect_and_recovers_with_time() {
    let mut engine = lone_engine(SyncConfig::default());
    let mut now = Now { ms: 1, unix: T0 };
    engine.peer_up(7, PeerInfo::default(), now);
    for _ in 0..2 {
        engine.on_gossip(&7, b"garbage", now);
    }
    assert_eq!(engine.peer_score(&7), Some(-50));
    engine.peer_down(&7, now);
    engine.peer_up(7, PeerInfo::default(), now);
    assert_eq!(
        engine.peer_score(&7),
        Some(-50),
        "leaving did not wipe the record"
    );
    // 100 s later it has earned back 10 points before the next offense costs 25.
    now.ms += 100_000;
    engine.on_gossip(&7, b"garbage", now);
    assert_eq!(engine.peer_score(&7), Some(-65));
    // A clean peer is forgotten when it leaves.
    engine.peer_up(8, PeerInfo::default(), now);
    engine.peer_down(&8, now);
    assert_eq!(engine.peer_score(&8), None);
}

/// Nodes 0 and 1 each linked to node 2, whose held-bytes cap is `cap`, and a fresh 300-agent
/// snapshot of each of them (not published yet).
fn two_publishers_one_mirror(cap: u64) -> (Net, Snapshot, Snapshot) {
    let config = SyncConfig {
        blocks_per_request: 16,
        held_bytes_max: cap,
        ..SyncConfig::default()
    };
    let mut net = Net::new(3, config);
    net.link(0, 2);
    net.link(1, 2);
    let a = build(&net.keys[0].clone(), 300, 0..0, None);
    let b = build(&net.keys[1].clone(), 300, 0..0, None);
    (net, a, b)
}

/// Node 2 mirrors two fresh 300-agent snapshots (nodes 0 and 1 publish one each) with the
/// held-bytes cap `cap`; returns the most bytes it held at once and whether a sync ever waited
/// for memory.
fn mirror_two_snapshots(cap: u64) -> (u64, bool) {
    let (mut net, a, b) = two_publishers_one_mirror(cap);
    publish(&mut net, 0, &a);
    publish(&mut net, 1, &b);
    let (mut peak, mut waited) = (0, false);
    for _ in 0..100_000 {
        if !net.step() {
            break;
        }
        let stats = net.nodes[2].engine.stats();
        peak = peak.max(stats.held_bytes);
        waited |= stats.syncs_waiting_memory > 0;
    }
    assert_eq!(net.head(2, 0).map(|h| h.commit), Some(a.commit_cid));
    assert_eq!(net.head(2, 1).map(|h| h.commit), Some(b.commit_cid));
    assert_eq!(net.nodes[2].engine.stats().held_bytes, 0, "all let go");
    (peak, waited)
}

#[test]
fn past_the_memory_cap_one_sync_at_a_time_fetches() {
    let (free_peak, free_waited) = mirror_two_snapshots(u64::MAX);
    assert!(!free_waited);
    // A cap far below one snapshot: the second sync waits for the first to be imported,
    // and both still complete.
    let (capped_peak, capped_waited) = mirror_two_snapshots(1);
    assert!(capped_waited, "a sync waited for memory");
    eprintln!("peak held bytes: {free_peak} without a cap, {capped_peak} with");
    assert!(
        capped_peak * 4 < free_peak * 3,
        "capped {capped_peak} against {free_peak}"
    );
}

#[test]
fn a_leading_sync_that_loses_every_source_does_not_stall_the_others() {
    let (mut net, a, b) = two_publishers_one_mirror(1);
    // Node 2 starts on A first, so A leads once the cap is reached ...
    publish(&mut net, 0, &a);
    while net.nodes[2].engine.stats().held_bytes == 0 {
        assert!(net.step(), "node 2 never fetched any of A");
    }
    publish(&mut net, 1, &b);
    while net.nodes[2].engine.stats().syncs_waiting_memory == 0 {
        assert!(net.step(), "B never waited for memory");
    }
    // ... then node 0, A's only source, goes away for good.
    let now = net.now;
    net.nodes[2].engine.peer_down(&0, now);
    net.links[0].clear();
    net.links[2].retain(|&peer| peer != 0);
    net.queue.retain(|message| {
        let (Message::Gossip(from, to, _)
        | Message::Request(from, to, _, _)
        | Message::Response(from, to, _, _)) = message;
        *from != 0 && *to != 0
    });
    net.run();
    assert_eq!(net.head(2, 1).map(|h| h.commit), Some(b.commit_cid));
    assert_eq!(net.head(2, 0), None);
}

#[test]
fn a_sync_left_without_sources_moves_on_when_a_newer_head_comes() {
    let mut net = Net::new(3, SyncConfig::default());
    net.link(0, 1);
    net.link(1, 2);
    let key = net.keys[0].clone();
    let v1 = build(&key, 50, 0..0, None);
    let v2 = build(&key, 50, 0..1, Some(&v1));
    // Node 1 hears of v1 from node 0, which then goes away for good before answering.
    net.nodes[0].store.apply(v1.store_batch()).unwrap();
    let now = net.now;
    let head = Gossip::Head(v1.commit.to_block()).encode();
    net.nodes[1].engine.on_gossip(&0, &head, now);
    while net.nodes[1].engine.poll_output().is_some() {}
    net.nodes[1].engine.peer_down(&0, now);
    net.links[0].clear();
    net.links[1].retain(|&peer| peer != 0);
    // It asks node 2, which holds nothing yet and says so.
    net.run();
    assert_eq!(net.head(1, 0), None);
    // Node 2 takes in v1 and v2 from elsewhere and announces v2 (only v2: gossip does not
    // repeat a head to a peer known to have seen it). Node 1 must not stay stuck on v1.
    net.nodes[2].store.apply(v1.store_batch()).unwrap();
    net.nodes[2].store.apply(v2.store_batch()).unwrap();
    net.nodes[2].engine.announce(v2.commit.to_block());
    net.run();
    assert_eq!(net.head(1, 0).map(|h| h.commit), Some(v2.commit_cid));
}
