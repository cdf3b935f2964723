//! Sample data: agent cards the demo, the tests, the simulations and the benchmarks build
//! registries from. Nothing in a running node or hub reads it.

use crate::snapshot::CardInput;

/// A sample A2A card for agent `index` of `org` with one skill: demo, tests and simulations use it.
pub fn sample_card(org: &str, index: usize, skill: &str) -> CardInput {
    let json = format!(
        r#"{{"name":"{org} agent {index}","description":"Sample agent {index} of {org}; answers {skill} requests.","version":"1.0.0","provider":{{"organization":"{org}"}},"supportedInterfaces":[{{"url":"https://agents.{org}.example/a2a/{index}","protocolBinding":"JSONRPC"}}],"capabilities":{{"streaming":true}},"skills":[{{"id":"{skill}","name":"{skill}","tags":["{skill}","demo"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
    );
    CardInput {
        source_name: format!("{org}/card-{index}"),
        json,
    }
}
