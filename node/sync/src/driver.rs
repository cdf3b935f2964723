//! The one driver of the sync engine: an async loop generic over its [`Transport`], used by the
//! node's libp2p mesh (`meridian node run`) and by the turmoil simulations alike, so every
//! simulated seed runs the loop production runs.
//!
//! The loop is the engine's contract written once: hand every [`Output`] to the transport,
//! sleep until the engine's (or the transport's) next deadline, and feed each [`Event`] the
//! transport produces back into the engine with the current time. What differs between
//! production and simulation (sockets, gossip propagation, where imports run, what is counted)
//! is the transport's business.
//!
//! This module is the sync crate's only asynchronous code: it waits on tokio's timers (which
//! turmoil drives in the simulations) but opens no socket and reads the clock only through
//! [`Transport::now`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use meridian_registry::snapshot::CarContents;

use crate::engine::{Engine, ImportReport, Now, Offense, Output, PeerInfo, Verdict};
use crate::wire::{Gossip, Request};

/// Why a transport could not send a request ([`Transport::request`]); the engine hears it at
/// once as a failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// There is no connection to the peer.
    #[error("not connected to the peer")]
    NotConnected,
    /// The peer is not one blocks are fetched from.
    #[error("not a fetch source")]
    NotAFetchSource,
}

/// What a transport tells the driver.
#[derive(Debug)]
pub enum Event<P, G, R> {
    /// A peer connected (a replaced connection is a [`Event::PeerDown`] first).
    PeerUp(P, PeerInfo),
    /// A peer's last connection closed.
    PeerDown(P),
    /// A gossip message from `from`; `token` comes back with the verdict
    /// ([`Transport::verdict`]), at once or when a deferred one is decided.
    Gossip {
        /// The peer it came from.
        from: P,
        /// The encoded message.
        bytes: Vec<u8>,
        /// The transport's handle on the message.
        token: G,
    },
    /// A request from `from`; the answer goes back through `reply` ([`Transport::respond`]).
    Request {
        /// The asker.
        from: P,
        /// The encoded request.
        bytes: Vec<u8>,
        /// The transport's handle on the answer.
        reply: R,
    },
    /// The answer (or failure) of a request the driver sent with [`Transport::request`].
    Response {
        /// The peer asked.
        from: P,
        /// The request id the engine gave.
        id: u64,
        /// The answer's bytes, or why none came.
        result: Result<Vec<u8>, String>,
    },
    /// A heads answer that arrived unasked (a hub's long-poll).
    Heads {
        /// Its source.
        from: P,
        /// Signed commit blocks.
        commits: Vec<Vec<u8>>,
        /// Governance documents.
        governance: Vec<Vec<u8>>,
        /// Equivocation proofs.
        equivocations: Vec<Vec<u8>>,
    },
    /// An import the transport ran in the background ([`Transport::import`] gave `None`).
    Imported(Box<ImportReport>),
    /// This node published a new head of its own (the commit block).
    Announce(Vec<u8>),
    /// A governance document an operator handed this node, to spread.
    Govern(Vec<u8>),
    /// The transport handled something of its own (a tick, a bookkeeping message).
    Idle,
    /// Stop the loop.
    Stopped,
}

/// How the engine's effects reach the world, and the world's events reach the engine.
///
/// `P` is the engine's peer type; `Gossip` is the transport's handle on a received gossip
/// message (to report its verdict), `Reply` its handle on a request to answer.
pub trait Transport<P> {
    /// Handle on a received gossip message.
    type Gossip;
    /// Handle on a request to answer.
    type Reply;

    /// The time now: milliseconds on the transport's monotonic clock, and unix seconds.
    fn now(&self) -> Now;

    /// Waits for the next event.
    fn next_event(&mut self) -> impl Future<Output = Event<P, Self::Gossip, Self::Reply>>;

    /// Sends `request` to `peer`, answering later with [`Event::Response`] and `id`; `Err`
    /// when it cannot be sent (the engine hears at once).
    fn request(&mut self, peer: &P, id: u64, request: Request) -> Result<(), SendError>;

    /// Publishes `gossip` to the peers.
    fn broadcast(&mut self, gossip: Gossip);

    /// The verdict on a received gossip message: forward it (`Accept`), drop it, or blame its
    /// sender (`Reject`).
    fn verdict(&mut self, token: Self::Gossip, verdict: Verdict);

    /// Sends the answer to a request.
    fn respond(&mut self, reply: Self::Reply, answer: Vec<u8>);

    /// Verifies and imports a fetched snapshot: `Some` when done at once, `None` when it runs in
    /// the background and comes back as [`Event::Imported`].
    fn import(&mut self, publisher: String, contents: CarContents) -> Option<ImportReport>;

    /// Closes the connection to a banned peer; true when the peer is gone at once (the engine
    /// hears of it now), false when a later [`Event::PeerDown`] will say so.
    fn disconnect(&mut self, peer: &P) -> bool;

    /// A peer misbehaved (for metrics and logs).
    fn penalised(&mut self, _peer: &P, _offense: Offense) {}

    /// A new equivocation proof was kept.
    fn equivocation(&mut self, _publisher: String, _seq: u64) {}

    /// A governance document was accepted: the federated view needs checking again.
    fn governance_changed(&mut self) {}

    /// Called after each round of effects, to copy the engine's figures out.
    fn observe(&mut self, _engine: &Engine<P>) {}

    /// The transport's own next deadline (ms on [`Transport::now`]'s clock), if any.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// The transport's deadline (or the engine's) passed.
    fn on_timer(&mut self, _now_ms: u64) {}
}

/// Drives `engine` over `transport` until the transport says [`Event::Stopped`].
pub async fn drive<P, T>(engine: &mut Engine<P>, transport: &mut T)
where
    P: Clone + Eq + Hash + Ord + Debug,
    T: Transport<P>,
{
    let mut deferred: HashMap<u64, T::Gossip> = HashMap::new();
    loop {
        apply_outputs(engine, transport, &mut deferred);
        transport.observe(engine);
        let engine_due = engine.next_deadline();
        let deadline = match (engine_due, transport.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = deadline.map(|at| Duration::from_millis(at.saturating_sub(transport.now().ms)));
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending::<()>().await,
            }
        };
        let event = tokio::select! {
            event = transport.next_event() => Some(event),
            () = sleep => None,
        };
        match event {
            Some(event) => {
                if !handle(engine, transport, &mut deferred, event) {
                    return;
                }
            }
            None => {
                let now = transport.now();
                if engine_due.is_some_and(|at| at <= now.ms) {
                    engine.on_timer(now);
                }
                transport.on_timer(now.ms);
            }
        }
    }
}

/// Feeds one event to the engine; false on [`Event::Stopped`].
fn handle<P, T>(
    engine: &mut Engine<P>,
    transport: &mut T,
    deferred: &mut HashMap<u64, T::Gossip>,
    event: Event<P, T::Gossip, T::Reply>,
) -> bool
where
    P: Clone + Eq + Hash + Ord + Debug,
    T: Transport<P>,
{
    let now = transport.now();
    match event {
        Event::PeerUp(peer, info) => engine.peer_up(peer, info, now),
        Event::PeerDown(peer) => engine.peer_down(&peer, now),
        Event::Gossip { from, bytes, token } => match engine.on_gossip(&from, &bytes, now) {
            Verdict::Defer(id) => {
                deferred.insert(id, token);
            }
            verdict => transport.verdict(token, verdict),
        },
        Event::Request { from, bytes, reply } => {
            let answer = engine.on_request(&from, &bytes, now);
            transport.respond(reply, answer);
        }
        Event::Response { from, id, result } => {
            engine.on_response(&from, id, result.as_deref().map_err(Clone::clone), now);
        }
        Event::Heads {
            from,
            commits,
            governance,
            equivocations,
        } => engine.on_heads(&from, &commits, &governance, &equivocations, now),
        Event::Imported(report) => engine.import_finished(*report, now),
        Event::Announce(block) => engine.announce(block),
        Event::Govern(block) => engine.announce_governance(block),
        Event::Idle => {}
        Event::Stopped => return false,
    }
    true
}

/// Hands every pending output of the engine to the transport.
fn apply_outputs<P, T>(
    engine: &mut Engine<P>,
    transport: &mut T,
    deferred: &mut HashMap<u64, T::Gossip>,
) where
    P: Clone + Eq + Hash + Ord + Debug,
    T: Transport<P>,
{
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Request { peer, id, request } => {
                if let Err(why) = transport.request(&peer, id, request) {
                    engine.on_response(&peer, id, Err(why.to_string()), transport.now());
                }
            }
            Output::Broadcast(gossip) => transport.broadcast(gossip),
            Output::Forward { id, verdict } => {
                if let Some(token) = deferred.remove(&id) {
                    transport.verdict(token, verdict);
                }
            }
            Output::Import {
                publisher,
                contents,
            } => {
                if let Some(report) = transport.import(publisher, contents) {
                    engine.import_finished(report, transport.now());
                }
            }
            Output::Disconnect { peer } => {
                if transport.disconnect(&peer) {
                    engine.peer_down(&peer, transport.now());
                }
            }
            Output::Penalise { peer, offense } => transport.penalised(&peer, offense),
            Output::Equivocation { publisher, seq } => transport.equivocation(publisher, seq),
            Output::GovernanceChanged => transport.governance_changed(),
        }
    }
}
