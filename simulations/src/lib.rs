//! Deterministic simulations of a Meridian federation under turmoil: regions, latency, loss,
//! partitions, churn and misbehaving peers, each run reproducible from one seed.
//!
//! The simulations sit beside the node at the top of the crate graph, without it or libp2p:
//! they use the protocol crate's (`meridian-sync`) sans-IO sync engine and governance state and
//! `hub`'s whole hub (cache, head mirror, limiter, breakers, HTTP API
//! and QUIC trunk) and drive them over simulated sockets, so the code under test is the code
//! that runs in production; only the transport differs ([`transport`]: framed messages over
//! turmoil TCP instead of libp2p; quinn runs over turmoil UDP).
//!
//! - [`federation`]: simulated nodes (engine + in-memory store + framed transport);
//! - [`gossip`]: how a simulated node spreads gossip (eager to a few peers, announced to the
//!   rest, as gossipsub does in the daemon);
//! - [`scenarios`]: the scenario table, topologies, shared registries and publish-converge;
//! - [`runner`]: runs a world under a schedule of faults, and the checks scenarios share;
//! - [`faults`]: partition-heal, churn, byzantine and swarm;
//! - [`governance`]: documents issued during a run take effect everywhere;
//! - [`hubs`]: hub, echo agent and A2A caller hosts; [`hub_scenarios`]: hub-latency,
//!   hub-churn and rate-limit;
//! - [`report`]: JSON, markdown and SVG reports of many runs; [`results`]: the file a long
//!   run records its runs in, so it can stop and go on.

pub mod faults;
pub mod federation;
pub mod gossip;
pub mod governance;
pub mod hub_scenarios;
pub mod hubs;
pub mod report;
pub mod results;
pub mod runner;
pub mod scenarios;
pub mod transport;

pub use meridian_hub as hub;
pub use meridian_sync as sync;
