//! A peer that lies, over the real libp2p mesh: two honest `meridian node run` processes refuse
//! each lie, count it and penalise its sender, keep the equivocation proof and pass it on, and
//! still converge with each other.
//!
//! The liar is written here with the node's own swarm (`mesh::build_swarm`), so it speaks the
//! real transports and protocols; what it says is chosen by the test.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use libp2p::gossipsub::{IdentTopic, PublishError};
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use meridian_node::daemon::mesh::{self, MeshBehaviourEvent};
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, Snapshot};
use meridian_sync::SyncConfig;
use meridian_sync::wire::{GOSSIP_BYTES_MAX, Gossip, Request, Response};

use crate::daemon::Node;
use crate::federation::{mesh_addr, metric, org_token, publish, wait_for};
use crate::{card, expect};

/// What the liar answers requests with.
#[derive(Default)]
struct Serving {
    /// Commit blocks it claims as its heads.
    heads: Vec<Vec<u8>>,
    /// Blocks it serves.
    blocks: HashMap<Cid, Arc<[u8]>>,
    /// Flip a byte of every block it serves.
    tamper: bool,
}

impl Serving {
    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let response = match Request::decode(request, 1 << 20) {
            Ok(Request::Heads) => Response::Heads {
                commits: self.heads.clone(),
                governance: Vec::new(),
                equivocations: Vec::new(),
            },
            Ok(Request::Blocks(cids)) => Response::Blocks(
                cids.iter()
                    .filter_map(|cid| self.blocks.get(cid).map(|block| (*cid, block.clone())))
                    .map(|(cid, block)| {
                        if self.tamper {
                            let mut bytes = block.to_vec();
                            if let Some(last) = bytes.last_mut() {
                                *last ^= 0x01;
                            }
                            (cid, Arc::from(bytes))
                        } else {
                            (cid, block)
                        }
                    })
                    .collect(),
            ),
            // No deltas: askers fall back to fetching blocks, which is where the lies are.
            Ok(Request::Delta { .. }) => Response::Refused("no deltas here".into()),
            Err(error) => Response::Refused(error.to_string()),
        };
        response.encode()
    }
}

/// What the test tells the liar's swarm.
enum Command {
    /// Broadcast these bytes on the topic.
    Gossip(Vec<u8>),
    /// Close every connection, then answer.
    Close(std::sync::mpsc::Sender<()>),
}

/// A misbehaving peer: a libp2p swarm on its own runtime, connected to the given nodes. When
/// dropped it closes its connections first, so the nodes see it leave (a later liar with the
/// same identity is then a new connection, not a stale one).
struct Liar {
    runtime: Option<tokio::runtime::Runtime>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    published: Arc<AtomicUsize>,
    serving: Arc<Mutex<Serving>>,
}

impl Liar {
    fn start(identity: &Keypair, nodes: &[&str]) -> Liar {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (commands, mut queue) = tokio::sync::mpsc::unbounded_channel::<Command>();
        let published = Arc::new(AtomicUsize::new(0));
        let serving = Arc::new(Mutex::new(Serving::default()));
        let mut swarm = {
            let _entered = runtime.enter();
            mesh::build_swarm(identity, &SyncConfig::default(), 16).unwrap()
        };
        let topic = IdentTopic::new(mesh::TOPIC);
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        {
            let _entered = runtime.enter();
            swarm
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
                .unwrap();
            for node in nodes {
                swarm
                    .dial(node.parse::<libp2p::Multiaddr>().unwrap())
                    .unwrap();
            }
        }
        let (task_published, task_serving) = (published.clone(), serving.clone());
        let nodes_count = nodes.len();
        runtime.spawn(async move {
            let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut closing: Option<(std::sync::mpsc::Sender<()>, Instant)> = None;
            loop {
                if let Some((done, since)) = &closing
                    && (swarm.connected_peers().count() == 0
                        || since.elapsed() > Duration::from_secs(3))
                {
                    let _ = done.send(());
                    return;
                }
                tokio::select! {
                    Some(command) = queue.recv() => match command {
                        Command::Gossip(bytes) => pending.push_back(bytes),
                        Command::Close(done) => {
                            let peers: Vec<_> = swarm.connected_peers().copied().collect();
                            for peer in peers {
                                let _ = swarm.disconnect_peer_id(peer);
                            }
                            closing = Some((done, Instant::now()));
                        }
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(
                            request_response::Event::Message {
                                message: request_response::Message::Request { request, channel, .. },
                                ..
                            },
                        )) = event
                        {
                            let answer = task_serving.lock().unwrap().answer(&request);
                            let _ = swarm.behaviour_mut().sync.send_response(channel, answer);
                        }
                    }
                    _ = tick.tick() => {}
                }
                // Publish once every node has subscribed: gossipsub sends only to the peers it
                // knows are on the topic.
                let subscribed = swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.iter().any(|t| t.as_str() == mesh::TOPIC))
                    .count();
                while subscribed >= nodes_count
                    && let Some(bytes) = pending.front()
                {
                    match swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), bytes.clone())
                    {
                        Ok(_) | Err(PublishError::Duplicate) => {
                            pending.pop_front();
                            task_published.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        Liar {
            runtime: Some(runtime),
            commands,
            published,
            serving,
        }
    }

    /// Broadcasts `message` and waits until gossipsub has sent it.
    fn say(&self, message: Gossip) {
        let before = self.published.load(Ordering::SeqCst);
        self.commands
            .send(Command::Gossip(message.encode()))
            .unwrap();
        let started = Instant::now();
        while self.published.load(Ordering::SeqCst) == before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the liar found no one to gossip to"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn serve(&self, heads: &[&Snapshot], blocks: &[&Snapshot], tamper: bool) {
        let mut serving = self.serving.lock().unwrap();
        serving.heads = heads.iter().map(|s| s.commit.to_block()).collect();
        serving.blocks = blocks
            .iter()
            .flat_map(|s| s.blocks.iter().map(|(c, b)| (*c, b.clone())))
            .collect();
        serving.tamper = tamper;
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        let (done, closed) = std::sync::mpsc::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = closed.recv_timeout(Duration::from_secs(5));
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn liar_snapshot(publisher: &Keypair, agents: usize, previous: Option<&Snapshot>) -> Snapshot {
    let cards = (0..agents)
        .map(|i| CardInput {
            source_name: format!("card-{i}"),
            json: card(&format!("Tale {i}"), "lies"),
        })
        .collect();
    snapshot::build(BuildInput {
        node_key: publisher,
        org_key: &Keypair::from_secret(&[77; 32]),
        org: "liars",
        region: "eu-west",
        cards,
        previous,
        now: unix_now(),
        expires_in_secs: 3600,
        limits: Limits::DEFAULT,
    })
    .unwrap()
    .0
}

/// A second commit with `seq`, signed by the publisher, that differs from the first.
fn other_commit(publisher: &Keypair, of: &Snapshot) -> Vec<u8> {
    let mut body = of.commit.body.clone();
    body.created_at += 1;
    body.sign(publisher).unwrap().to_block()
}

fn head_seq(node: &Node, did: &str) -> Option<u64> {
    let (_, body) = node.get_json("/api/v1/registry/heads");
    body["heads"]
        .as_array()?
        .iter()
        .find(|head| head["publisher"] == did)
        .and_then(|head| head["seq"].as_u64())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invalid(node: &Node, kind: &str) -> u64 {
    metric(
        node,
        &format!("meridian_sync_invalid_total{{kind=\"{kind}\"}}"),
    )
}

#[test]
fn lies_over_the_mesh_are_refused_counted_and_penalised_and_the_honest_converge() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for data in ["a", "b"] {
        expect(dir, &["node", "init", "--data", data], 0);
    }
    let token_a = org_token(dir, "a", "acme");
    let token_b = org_token(dir, "b", "globex");
    let a = Node::start(dir, "a", &[]);
    let a_addr = mesh_addr(dir, "a");
    let b = Node::start(dir, "b", &[("MERIDIAN_MESH_BOOTSTRAP", a_addr.as_str())]);
    let b_addr = mesh_addr(dir, "b");
    let both = [a_addr.as_str(), b_addr.as_str()];

    // The liar's publisher key: first it publishes honestly, so the nodes hold its seq 2.
    let publisher = Keypair::from_secret(&[66; 32]);
    let did = publisher.did();
    let first = liar_snapshot(&publisher, 3, None);
    let second = liar_snapshot(&publisher, 4, Some(&first));
    let third = liar_snapshot(&publisher, 5, Some(&second));
    {
        let liar = Liar::start(&publisher, &both);
        liar.serve(&[&first], &[&first], false);
        liar.say(Gossip::Head(first.commit.to_block()));
        wait_until("both nodes mirror seq 1", || {
            head_seq(&a, &did) == Some(1) && head_seq(&b, &did) == Some(1)
        });
        liar.serve(&[&second], &[&first, &second], false);
        liar.say(Gossip::Head(second.commit.to_block()));
        wait_until("both nodes mirror seq 2", || {
            head_seq(&a, &did) == Some(2) && head_seq(&b, &did) == Some(2)
        });
    }
    for node in [&a, &b] {
        assert_eq!(metric(node, "meridian_sync_bans_total"), 0);
    }

    // Each lie from a peer of its own, so one ban does not hide the next lie.
    let lies: Vec<(&str, Gossip)> = vec![
        // A rolled-back head: a seq-1 commit after seq 2 was accepted.
        ("rollback", Gossip::Head(other_commit(&publisher, &first))),
        // A head whose signature is not the publisher's.
        ("bad_signature", {
            let mut forged = third.commit.clone();
            forged.sig = Keypair::from_secret(&[5; 32]).sign(&forged.body.signing_bytes());
            Gossip::Head(forged.to_block())
        }),
        // A message over the gossip limit.
        ("oversized", Gossip::Head(vec![0xa1; GOSSIP_BYTES_MAX + 1])),
    ];
    for (index, (kind, lie)) in lies.into_iter().enumerate() {
        let liar = Liar::start(&Keypair::from_secret(&[100 + index as u8; 32]), &both);
        liar.say(lie);
        wait_until(&format!("both nodes count a {kind} lie"), || {
            invalid(&a, kind) >= 1 && invalid(&b, kind) >= 1
        });
    }

    // Tampered blocks: a valid head whose blocks come back altered.
    {
        let liar = Liar::start(&Keypair::from_secret(&[110; 32]), &both);
        liar.serve(&[], &[&third], true);
        liar.say(Gossip::Head(third.commit.to_block()));
        wait_until("both nodes catch tampered blocks", || {
            invalid(&a, "tampered_block") >= 1 && invalid(&b, "tampered_block") >= 1
        });
    }

    // An equivocating publisher, told to a only: a keeps the proof, bans the sender, and the
    // proof reaches b.
    {
        let liar = Liar::start(&publisher, &[a_addr.as_str()]);
        liar.say(Gossip::Head(other_commit(&publisher, &second)));
        wait_until("a proves the equivocation and bans its sender", || {
            metric(&a, "meridian_sync_equivocations_total") >= 1
                && metric(&a, "meridian_sync_bans_total") >= 1
        });
        wait_until("the proof reaches b", || {
            metric(&b, "meridian_sync_equivocations_total") >= 1
        });
    }

    // Nothing the liars said was taken: both still hold the honest seq 2.
    assert_eq!(head_seq(&a, &did), Some(2));
    assert_eq!(head_seq(&b, &did), Some(2));
    let (status, _) = a.get_json("/api/v1/agents/liars/tale-4");
    assert_eq!(status, 404, "an agent of the tampered snapshot was taken");

    // And the honest nodes still converge with each other.
    publish(&a, &token_a, "acme", "Helper", "search");
    publish(&b, &token_b, "globex", "Planner", "plan");
    wait_for(&b, "acme/helper", "search");
    wait_for(&a, "globex/planner", "plan");
}

#[test]
fn connections_past_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    expect(dir, &["node", "init", "--data", "a"], 0);
    let a = Node::start(dir, "a", &[("MERIDIAN_MESH_CONNECTIONS_MAX", "2")]);
    let a_addr = mesh_addr(dir, "a");
    let peers: Vec<Liar> = (0..5)
        .map(|i| Liar::start(&Keypair::from_secret(&[200 + i; 32]), &[a_addr.as_str()]))
        .collect();
    // The gauge is refreshed once a second: wait for two refreshes after the dials settle.
    std::thread::sleep(Duration::from_millis(2500));
    let connected = metric(&a, "meridian_sync_peers");
    assert!(
        (1..=2).contains(&connected),
        "{connected} peers connected past a limit of 2"
    );
    drop(peers);
}
