//! The attacks of docs/security.md, each reproduced against real processes and shown to fail:
//! refused, counted in a metric, and the honest state left intact.

mod a2a_buckets;
mod crafted_block;
mod gossip_flood;
mod hijack;
mod http_edges;
mod key_log;
mod removal_replay;
mod ssrf;
mod starvation;
mod stolen_key;
