//! Deterministic simulations of a Meridian federation under turmoil: regions, latency, loss,
//! partitions, churn and misbehaving publishers, each run reproducible from one seed.
//!
//! Uses `node` and `hub` and drives their sans-IO cores over simulated sockets. Not built yet
//! (issues 5 and 7); until then it only names its dependencies so the crate graph is in place.

pub use meridian_hub as hub;
pub use meridian_node as node;
