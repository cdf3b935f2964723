//! Agent card JSON from publishers: parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_registry::manifest::AgentCard;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(card) = AgentCard::parse(text)
    {
        let _ = card.agent_id("acme");
    }
});
