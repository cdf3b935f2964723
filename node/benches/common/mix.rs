//! The search benchmarks' corpus and query mix: 100,000 cards of about 1 KiB, and queries of
//! one to three words taken from them, one word in ten misspelt.

/// The card of agent `i`: a name, a description repeating its words, one skill and two tags.
pub fn card(i: usize) -> String {
    let description = format!("Agent {i} answers questions about topic {i}. ").repeat(12);
    let skill = if i.is_multiple_of(1000) {
        "translate"
    } else {
        "search"
    };
    format!(
        r#"{{"name":"Agent {i}","description":"{description}","version":"1.0.{i}","supportedInterfaces":[{{"url":"https://agents.example/a2a/{i}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"{skill}","name":"{skill}","tags":["{skill}","t{}"],"inputModes":["text/plain"],"outputModes":["text/plain"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#,
        i % 100
    )
}

/// `count` queries of one to three words from the cards of `agents` agents (their numbers,
/// "answers", "questions", "topic", the skills and tags), one word in ten misspelt (two
/// letters swapped, or one replaced), from a fixed seed.
pub fn queries(count: usize, agents: usize) -> Vec<String> {
    let mut state: u64 = 0x4d45_5249_4449_414e;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let common = [
        "answers",
        "questions",
        "topic",
        "about",
        "search",
        "translate",
    ];
    (0..count)
        .map(|_| {
            let words = 1 + next() % 3;
            let picked: Vec<String> = (0..words)
                .map(|_| {
                    let word = match next() % 4 {
                        0 => (next() % agents).to_string(),
                        1 => format!("t{}", next() % 100),
                        _ => common[next() % common.len()].to_owned(),
                    };
                    if next() % 10 == 0 {
                        misspell(&word, next())
                    } else {
                        word
                    }
                })
                .collect();
            picked.join(" ")
        })
        .collect()
}

/// `word` with two neighbouring letters swapped, or (short words) its last letter replaced.
fn misspell(word: &str, roll: usize) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 3 {
        let at = roll % (chars.len() - 1);
        chars.swap(at, at + 1);
    } else if let Some(last) = chars.last_mut() {
        *last = 'x';
    }
    chars.into_iter().collect()
}
