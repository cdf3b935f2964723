//! The attacks of docs/security.md, each reproduced against real processes and shown to fail:
//! refused, counted in a metric, and the honest state left intact.

mod crafted_block;
mod hijack;
mod http_edges;
mod ssrf;
mod starvation;
mod stolen_key;
