//! The searchable view of every agent the node holds: built from the store's heads, updated
//! after each import, and queried by the gateway. Plain data; no I/O of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::manifest::{Lifecycle, Manifest};
use serde::Serialize;

/// One agent as search sees it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRecord {
    /// `{org}/{agent}`.
    pub agent_id: String,
    /// The organisation.
    pub org: String,
    /// The region it is served from.
    pub region: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Skill ids.
    pub skills: Vec<String>,
    /// Skill tags.
    pub tags: Vec<String>,
    /// Input media types (defaults and per skill).
    pub input_modes: Vec<String>,
    /// Output media types (defaults and per skill).
    pub output_modes: Vec<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// The manifest's CID.
    pub manifest: String,
    /// The publishing node.
    pub publisher: String,
    /// The publisher's snapshot seq that holds it.
    pub seq: u64,
    /// `active`, or `deprecated` by its organisation (a removed agent has no record here).
    pub status: &'static str,
    /// The agent that replaces a deprecated one, when its organisation named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Lowercase words of the id, name, description and skill ids, for text search.
    #[serde(skip)]
    words: Vec<String>,
    /// The card exactly as published (valid JSON), so a lookup needs no store read or decode.
    #[serde(skip)]
    pub card: Option<Box<serde_json::value::RawValue>>,
    /// The manifest's signer.
    #[serde(skip)]
    pub signer: String,
    /// The commit of the snapshot it was indexed from.
    #[serde(skip)]
    pub commit: Option<String>,
    /// Whether this is a signed removal (tombstone) rather than an agent: kept apart from the
    /// agents, it hides every manifest of the agent that is not newer.
    #[serde(skip)]
    pub removed: bool,
}

impl AgentRecord {
    /// A record from a verified manifest held in `publisher`'s snapshot `seq`.
    pub fn new(manifest: &Manifest, cid: &Cid, publisher: &str, seq: u64) -> Self {
        Self::with_card(manifest, manifest.card().ok(), cid, publisher, seq)
    }

    /// [`AgentRecord::new`] with the card already parsed (as [`Manifest::decode_with_card`] gives it).
    pub fn with_card(
        manifest: &Manifest,
        card: Option<meridian_registry::manifest::AgentCard>,
        cid: &Cid,
        publisher: &str,
        seq: u64,
    ) -> Self {
        let mut record = AgentRecord {
            agent_id: manifest.body.agent_id.clone(),
            org: manifest.body.org.clone(),
            region: manifest.body.region.clone(),
            name: String::new(),
            description: String::new(),
            skills: Vec::new(),
            tags: Vec::new(),
            input_modes: Vec::new(),
            output_modes: Vec::new(),
            updated_at: manifest.body.updated_at,
            manifest: cid.to_string(),
            publisher: publisher.to_owned(),
            seq,
            status: manifest.lifecycle().as_str(),
            superseded_by: manifest
                .body
                .deprecation
                .as_ref()
                .and_then(|d| d.superseded_by.clone()),
            words: Vec::new(),
            card: serde_json::value::RawValue::from_string(manifest.body.card.clone()).ok(),
            signer: manifest.signer.to_did(),
            commit: None,
            removed: manifest.body.removed,
        };
        if let Some(card) = card {
            record.name = card.name;
            record.description = card.description;
            record.input_modes = card.default_input_modes;
            record.output_modes = card.default_output_modes;
            for skill in card.skills {
                record.skills.push(skill.id);
                record.tags.extend(skill.tags);
                record.input_modes.extend(skill.input_modes);
                record.output_modes.extend(skill.output_modes);
            }
            for list in [
                &mut record.tags,
                &mut record.input_modes,
                &mut record.output_modes,
            ] {
                list.sort();
                list.dedup();
            }
        }
        let text = format!(
            "{} {} {} {}",
            record.agent_id,
            record.name,
            record.description,
            record.skills.join(" ")
        );
        record.words = words(&text);
        record
    }

    /// Whether its organisation deprecated it.
    pub fn is_deprecated(&self) -> bool {
        self.status == Lifecycle::Deprecated.as_str()
    }

    /// Sets the commit of the snapshot this record comes from.
    pub fn with_commit(mut self, commit: &Cid) -> Self {
        self.commit = Some(commit.to_string());
        self
    }

    /// Calls `f` with every `field:term` this record is found under (a term may come twice),
    /// built in one reused buffer: indexing 100,000 agents makes millions of these.
    fn for_each_term(&self, mut f: impl FnMut(&str)) {
        let mut term = String::new();
        let mut emit = |field: &str, value: &str| {
            term.clear();
            term.push_str(field);
            term.push(':');
            term.push_str(value);
            f(&term);
        };
        for word in &self.words {
            emit("w", word);
        }
        emit("o", &self.org);
        emit("r", &self.region);
        emit("l", self.status);
        for (field, list) in [
            ("s", &self.skills),
            ("t", &self.tags),
            ("i", &self.input_modes),
            ("m", &self.output_modes),
        ] {
            for value in list {
                emit(field, value);
            }
        }
    }
}

/// BM25's term-frequency saturation.
const RELEVANCE_K1: f64 = 1.2;
/// BM25's length normalisation.
const RELEVANCE_B: f64 = 0.75;
/// How much more a word in an agent's name weighs.
const RELEVANCE_NAME_BOOST: f64 = 1.5;
/// Most words of one query that relevance weighs (the first ones, stop words left out).
pub const RELEVANCE_TERMS_MAX: usize = 16;
/// Longest query word relevance weighs, in bytes (no indexed word of an agent card is longer
/// in practice; a longer one would only make typo variants expensive).
pub const RELEVANCE_WORD_BYTES_MAX: usize = 64;
/// Most indexed words one query prefix stands for.
pub const PREFIX_EXPANSIONS_MAX: usize = 50;

/// Inverse document frequency of a word `n` of `total` agents have (BM25's).
fn idf(total: f64, n: f64) -> f64 {
    (1.0 + (total - n + 0.5) / (n + 0.5)).ln()
}

/// Every string one edit (a letter deleted, replaced, inserted, or two neighbours swapped) from
/// `word`, over lowercase ASCII letters and digits.
fn one_edit(word: &str) -> Vec<String> {
    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    for at in 0..=chars.len() {
        if at < chars.len() {
            let mut deleted = chars.clone();
            deleted.remove(at);
            out.push(deleted.iter().collect());
            if at + 1 < chars.len() {
                let mut swapped = chars.clone();
                swapped.swap(at, at + 1);
                out.push(swapped.iter().collect());
            }
        }
        for letter in ALPHABET.chars() {
            if at < chars.len() {
                let mut replaced = chars.clone();
                replaced[at] = letter;
                out.push(replaced.iter().collect());
            }
            let mut inserted = chars.clone();
            inserted.insert(at, letter);
            out.push(inserted.iter().collect());
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The lowercase words of `text` in the order they appear (repeats kept).
fn words_in_order(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `text` has `word` (lowercase) as a whole word, case-insensitively, without
/// allocating for ASCII text.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).any(|w| {
        if w.is_ascii() {
            w.eq_ignore_ascii_case(word)
        } else {
            w.to_lowercase() == word
        }
    })
}

/// Words too common in requests to say what is wanted ("find me an agent for ..."), left out
/// of relevance unless a query has nothing else.
pub const STOP_WORDS: &[&str] = &[
    "a", "agent", "agents", "an", "and", "any", "are", "can", "do", "find", "for", "from", "get",
    "help", "i", "in", "is", "it", "me", "my", "need", "of", "on", "or", "please", "some", "that",
    "the", "this", "to", "want", "what", "which", "with",
];

/// Lowercase alphanumeric words of `text`, without repeats. Repeats are dropped before any is
/// lowercased (a description repeats most of its words), and a word already in lowercase
/// ASCII is not copied until it is known to be new.
pub fn words(text: &str) -> Vec<String> {
    let mut slices: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    slices.sort_unstable();
    slices.dedup();
    let mut words: Vec<String> = slices
        .into_iter()
        .map(|w| {
            if w.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
                w.to_lowercase()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// A search: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Words that must all appear (as whole words) in the id, name, description or skill ids,
    /// case-insensitive.
    pub text: Option<String>,
    /// A skill id.
    pub skill: Option<String>,
    /// A skill tag.
    pub tag: Option<String>,
    /// An organisation.
    pub org: Option<String>,
    /// A region.
    pub region: Option<String>,
    /// An input media type.
    pub input_mode: Option<String>,
    /// An output media type.
    pub output_mode: Option<String>,
    /// A life-cycle state: `active` or `deprecated`.
    pub status: Option<String>,
    /// Return agents whose id sorts after this one (the previous page's `next_cursor`).
    pub after: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// All agents, by agent id (stable order for pagination), with posting sets for every searchable
/// term, so a query walks only the agents of its rarest term.
///
/// Which manifest of an agent is served, when several publishers list one (every one of them
/// already accepted: signed by the organisation's bound or verified keys): a signed removal
/// beats every manifest with an older or equal `updated_at`, whoever lists either; between
/// manifests the newest `updated_at` wins; a publisher's newer commit replaces what that
/// publisher listed before.
#[derive(Debug, Clone, Default)]
pub struct AgentIndex {
    records: BTreeMap<Arc<str>, AgentRecord>,
    /// Signed removals by agent id, and by the publisher that lists each.
    removals: std::collections::HashMap<String, BTreeMap<String, AgentRecord>>,
    /// Manifests of other publishers kept out (or taken out) because a signed removal is as new
    /// or newer, since start.
    hidden_by_removal: u64,
    /// Agent ids by `field:term`; the ids share the records' keys.
    postings: std::collections::HashMap<String, std::collections::BTreeSet<Arc<str>>>,
    /// The commit of each publisher's snapshot that the index reflects, so a new head can be
    /// taken in by its difference from this one.
    indexed: std::collections::HashMap<String, Cid>,
    /// Words of all records together (their average length weighs relevance).
    word_count: usize,
    /// Every indexed word, with how many agents have it (typo and prefix matching).
    vocabulary: BTreeMap<String, usize>,
}

impl AgentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The commit of `publisher`'s snapshot that the index reflects, if any.
    pub fn indexed_commit(&self, publisher: &str) -> Option<Cid> {
        self.indexed.get(publisher).copied()
    }

    /// Records that the index reflects `publisher`'s snapshot `commit`.
    pub fn set_indexed_commit(&mut self, publisher: &str, commit: Cid) {
        self.indexed.insert(publisher.to_owned(), commit);
    }

    /// Takes in what changed in `publisher`'s registry between the indexed snapshot and its
    /// snapshot `seq` at `commit`: `upserts` are the agents (and removals) added or changed that
    /// are accepted, `removals` the entries gone or no longer accepted. Every record of the
    /// publisher then names the new seq and commit. Returns what changed in the served view as
    /// `(event kind, agent id)`.
    pub fn apply_publisher_changes(
        &mut self,
        publisher: &str,
        seq: u64,
        commit: &Cid,
        upserts: Vec<AgentRecord>,
        removals: Vec<String>,
    ) -> Vec<(&'static str, String)> {
        let touched: Vec<String> = removals
            .iter()
            .cloned()
            .chain(upserts.iter().map(|r| r.agent_id.clone()))
            .collect();
        let before = self.served(&touched);
        for agent_id in &removals {
            self.withdraw(agent_id, publisher);
        }
        for record in upserts {
            self.offer(record);
        }
        let commit_text = commit.to_string();
        for record in self.records.values_mut() {
            if record.publisher == publisher {
                record.seq = seq;
                record.commit = Some(commit_text.clone());
            }
        }
        self.set_indexed_commit(publisher, *commit);
        self.changes(before)
    }

    /// Replaces everything `publisher` contributed with `records` from its snapshot `commit`;
    /// returns what changed in the served view as `(event kind, agent id)`.
    pub fn replace_publisher(
        &mut self,
        publisher: &str,
        commit: &Cid,
        records: Vec<AgentRecord>,
    ) -> Vec<(&'static str, String)> {
        self.set_indexed_commit(publisher, *commit);
        let mut touched: Vec<String> = self
            .records
            .values()
            .filter(|r| r.publisher == publisher)
            .map(|r| r.agent_id.clone())
            .collect();
        touched.extend(
            self.removals
                .iter()
                .filter(|(_, by)| by.contains_key(publisher))
                .map(|(agent_id, _)| agent_id.clone()),
        );
        touched.extend(records.iter().map(|r| r.agent_id.clone()));
        let before = self.served(&touched);
        for agent_id in &touched {
            self.withdraw(agent_id, publisher);
        }
        for record in records {
            self.offer(record);
        }
        self.changes(before)
    }

    /// The served manifest of each agent id (deduplicated) and whether it is deprecated, to
    /// compare after a change.
    fn served(&self, agent_ids: &[String]) -> BTreeMap<String, Option<(String, bool)>> {
        agent_ids
            .iter()
            .map(|id| {
                let served = self.records.get(id.as_str());
                (
                    id.clone(),
                    served.map(|r| (r.manifest.clone(), r.is_deprecated())),
                )
            })
            .collect()
    }

    /// What changed in the served view since `before` (from [`AgentIndex::served`]): an
    /// agent added, removed, changed, or deprecated (changed into a deprecated manifest).
    fn changes(
        &self,
        before: BTreeMap<String, Option<(String, bool)>>,
    ) -> Vec<(&'static str, String)> {
        before
            .into_iter()
            .filter_map(|(agent_id, old)| {
                let new = self.records.get(agent_id.as_str());
                let kind = match (old, new) {
                    (None, Some(_)) => "agent.added",
                    (Some(_), None) => "agent.removed",
                    (Some((old, false)), Some(new))
                        if old != new.manifest && new.is_deprecated() =>
                    {
                        "agent.deprecated"
                    }
                    (Some((old, _)), Some(new)) if old != new.manifest => "agent.changed",
                    _ => return None,
                };
                Some((kind, agent_id))
            })
            .collect()
    }

    /// Forgets what `publisher` listed under `agent_id` (agent or removal). Another
    /// publisher's older copy does not come back by itself: it returns with that publisher's
    /// next change or the next rebuild.
    fn withdraw(&mut self, agent_id: &str, publisher: &str) {
        if self
            .records
            .get(agent_id)
            .is_some_and(|r| r.publisher == publisher)
        {
            self.remove_record(agent_id);
        }
        if let Some(by) = self.removals.get_mut(agent_id) {
            by.remove(publisher);
            if by.is_empty() {
                self.removals.remove(agent_id);
            }
        }
    }

    /// Takes in one accepted entry of its publisher's registry (an agent or a removal),
    /// replacing what that publisher listed under the id before.
    fn offer(&mut self, record: AgentRecord) {
        let agent_id = record.agent_id.clone();
        let publisher = record.publisher.clone();
        let existing = self.records.get(agent_id.as_str());
        if record.removed {
            if let Some(existing) = existing
                && (existing.publisher == publisher || existing.updated_at <= record.updated_at)
            {
                if existing.publisher != publisher {
                    self.hidden_by_removal += 1;
                }
                self.remove_record(&agent_id);
            }
            self.removals
                .entry(agent_id)
                .or_default()
                .insert(publisher, record);
            return;
        }
        if let Some(by) = self.removals.get_mut(agent_id.as_str()) {
            by.remove(&publisher);
            if by.is_empty() {
                self.removals.remove(agent_id.as_str());
            }
        }
        let own = existing.is_some_and(|e| e.publisher == publisher);
        let removed = self
            .removal(&agent_id)
            .is_some_and(|removal| removal.updated_at >= record.updated_at);
        let older = existing.is_some_and(|e| !own && e.updated_at > record.updated_at);
        if removed {
            self.hidden_by_removal += 1;
        }
        if removed || older {
            if own {
                // This publisher's earlier copy is gone from its registry.
                self.remove_record(&agent_id);
            }
            return;
        }
        self.insert_record(record);
    }

    /// The newest signed removal of `agent_id` any publisher lists, if one does.
    pub fn removal(&self, agent_id: &str) -> Option<&AgentRecord> {
        self.removals
            .get(agent_id)?
            .values()
            .max_by_key(|r| r.updated_at)
    }

    /// The signed removals `publisher` lists, dated before `before` (Unix seconds): the ones
    /// whose retention has run out when `publisher` is this node.
    pub fn removals_before(&self, publisher: &str, before: i64) -> Vec<String> {
        let mut expired: Vec<String> = self
            .removals
            .iter()
            .filter(|(_, by)| by.get(publisher).is_some_and(|r| r.updated_at < before))
            .map(|(agent_id, _)| agent_id.clone())
            .collect();
        expired.sort();
        expired
    }

    /// Number of agents with a signed removal listed.
    pub fn removals_len(&self) -> usize {
        self.removals.len()
    }

    /// Manifests kept out of the view because a signed removal is as new or newer, since start.
    pub fn hidden_by_removal(&self) -> u64 {
        self.hidden_by_removal
    }

    fn insert_record(&mut self, record: AgentRecord) {
        self.remove_record(&record.agent_id);
        let id: Arc<str> = Arc::from(record.agent_id.as_str());
        let postings = &mut self.postings;
        record.for_each_term(|term| match postings.get_mut(term) {
            Some(set) => {
                set.insert(id.clone());
            }
            None => {
                postings.insert(term.to_owned(), [id.clone()].into());
            }
        });
        self.word_count += record.words.len();
        for word in &record.words {
            match self.vocabulary.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    self.vocabulary.insert(word.clone(), 1);
                }
            }
        }
        self.records.insert(id, record);
    }

    fn remove_record(&mut self, agent_id: &str) -> Option<AgentRecord> {
        let record = self.records.remove(agent_id)?;
        self.word_count -= record.words.len();
        for word in &record.words {
            if let Some(count) = self.vocabulary.get_mut(word) {
                *count -= 1;
                if *count == 0 {
                    self.vocabulary.remove(word);
                }
            }
        }
        let postings = &mut self.postings;
        record.for_each_term(|term| {
            if let Some(set) = postings.get_mut(term) {
                set.remove(agent_id);
                if set.is_empty() {
                    postings.remove(term);
                }
            }
        });
        Some(record)
    }

    /// Takes in one accepted agent or removal of its publisher (the node's own publish),
    /// by the rules above; returns what changed in the served view.
    pub fn upsert(&mut self, record: AgentRecord) -> Option<&'static str> {
        let before = self.served(std::slice::from_ref(&record.agent_id));
        self.offer(record);
        self.changes(before).pop().map(|(kind, _)| kind)
    }

    /// Forgets what `publisher` listed under `agent_id`; returns what changed in the served view.
    pub fn remove(&mut self, agent_id: &str, publisher: &str) -> Option<&'static str> {
        let before = self.served(&[agent_id.to_owned()]);
        self.withdraw(agent_id, publisher);
        self.changes(before).pop().map(|(kind, _)| kind)
    }

    /// The agent with this id.
    pub fn get(&self, agent_id: &str) -> Option<&AgentRecord> {
        self.records.get(agent_id)
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every agent, in agent id order.
    pub fn iter(&self) -> impl Iterator<Item = &AgentRecord> {
        self.records.values()
    }

    /// How relevant each agent is to `text`, by agent id: agents matching at least one of
    /// its words, each with a score from 1 to 100 (the share of the query's weight it
    /// matches: rare words weigh more, a word in the name counts half as much again) and the
    /// BM25 score to rank by. Words in [`STOP_WORDS`], and words more than half the agents
    /// have, are left out unless nothing else is left. A word of five letters or more also matches words one edit away (a typo), and the
    /// query's last word of three letters or more also matches words it begins (a word still
    /// being typed), each at half weight.
    pub fn relevance(&self, text: &str) -> std::collections::HashMap<&str, (u8, f64)> {
        let in_order = words_in_order(text);
        // The word typed last, before any is dropped.
        let last = in_order.last().cloned();
        let mut seen = std::collections::HashSet::new();
        let mut terms: Vec<String> = in_order
            .into_iter()
            .filter(|w| w.len() <= RELEVANCE_WORD_BYTES_MAX && seen.insert(w.clone()))
            .collect();
        if terms.iter().any(|t| !STOP_WORDS.contains(&t.as_str())) {
            terms.retain(|t| !STOP_WORDS.contains(&t.as_str()));
        }
        // A query is a few words: the first ones count, the rest cannot make it expensive.
        terms.truncate(RELEVANCE_TERMS_MAX);
        // Words more than half the agents have say next to nothing (BM25 gives them almost no
        // weight) and would make every agent a candidate: left out when a rarer word remains.
        let df = |term: &str| {
            self.postings
                .get(&format!("w:{term}"))
                .map_or(0, std::collections::BTreeSet::len)
        };
        let half = self.records.len() / 2;
        if terms.iter().any(|t| df(t) <= half) {
            terms.retain(|t| df(t) <= half);
        }
        let total = self.records.len().max(1) as f64;
        let average = (self.word_count as f64 / total).max(1.0);
        let mut scores: std::collections::HashMap<&str, (f64, f64)> =
            std::collections::HashMap::new();
        let mut weight_all = 0.0;
        for term in &terms {
            let variants = self.variants(term, last.as_deref() == Some(term.as_str()));
            // The term's full weight, as if it matched exactly (a word no agent has still
            // counts against every agent's share).
            let exact_n = self
                .postings
                .get(&format!("w:{term}"))
                .map_or(0.0, |set| set.len() as f64);
            weight_all += idf(total, exact_n) * RELEVANCE_NAME_BOOST;
            let mut best: std::collections::HashMap<&str, (f64, f64)> =
                std::collections::HashMap::new();
            for (word, weight) in variants {
                let Some(set) = self.postings.get(&format!("w:{word}")) else {
                    continue;
                };
                let idf = idf(total, set.len() as f64) * weight;
                for id in set {
                    let Some(record) = self.records.get(&**id) else {
                        continue;
                    };
                    let length = record.words.len() as f64;
                    let mut bm25 = idf * (RELEVANCE_K1 + 1.0)
                        / (1.0
                            + RELEVANCE_K1 * (1.0 - RELEVANCE_B + RELEVANCE_B * length / average));
                    let mut share = idf;
                    if has_word(&record.name, &word) {
                        bm25 *= RELEVANCE_NAME_BOOST;
                        share *= RELEVANCE_NAME_BOOST;
                    }
                    let entry = best.entry(&**id).or_default();
                    if bm25 > entry.1 {
                        *entry = (share, bm25);
                    }
                }
            }
            for (id, (share, bm25)) in best {
                let entry = scores.entry(id).or_default();
                entry.0 += share;
                entry.1 += bm25;
            }
        }
        scores
            .into_iter()
            .map(|(id, (share, bm25))| {
                let score = (100.0 * share / f64::max(weight_all, f64::MIN_POSITIVE)).round();
                (id, (score.clamp(1.0, 100.0) as u8, bm25))
            })
            .collect()
    }

    /// The indexed words a query word stands for, with their weight: itself (1); for five
    /// letters or more, the words one edit away (½); when it is the query's last word of
    /// three letters or more, the words it begins (½, at most [`PREFIX_EXPANSIONS_MAX`]).
    fn variants(&self, term: &str, last: bool) -> Vec<(String, f64)> {
        let mut variants: Vec<(String, f64)> = vec![(term.to_owned(), 1.0)];
        let letters = term.chars().count();
        if letters >= 5 {
            for near in one_edit(term) {
                if near != term && self.vocabulary.contains_key(&near) {
                    variants.push((near, 0.5));
                }
            }
        }
        if last && letters >= 3 {
            let longer = self
                .vocabulary
                .range::<str, _>((std::ops::Bound::Excluded(term), std::ops::Bound::Unbounded))
                .take_while(|(word, _)| word.starts_with(term))
                .take(PREFIX_EXPANSIONS_MAX)
                .map(|(word, _)| (word.clone(), 0.5));
            variants.extend(longer);
        }
        variants.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        variants.dedup_by(|a, b| a.0 == b.0);
        variants
    }

    /// One page of results and, if more follow, the cursor for the next page.
    pub fn search(&self, query: &Query) -> (Vec<&AgentRecord>, Option<String>) {
        let mut terms: Vec<String> = words(query.text.as_deref().unwrap_or(""))
            .into_iter()
            .map(|w| format!("w:{w}"))
            .collect();
        for (prefix, value) in [
            ("o", &query.org),
            ("r", &query.region),
            ("s", &query.skill),
            ("t", &query.tag),
            ("i", &query.input_mode),
            ("m", &query.output_mode),
            ("l", &query.status),
        ] {
            if let Some(value) = value {
                terms.push(format!("{prefix}:{value}"));
            }
        }
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        let range: (std::ops::Bound<&str>, std::ops::Bound<&str>) =
            (start, std::ops::Bound::Unbounded);
        let empty = std::collections::BTreeSet::new();
        let mut sets: Vec<&std::collections::BTreeSet<Arc<str>>> = terms
            .iter()
            .map(|t| self.postings.get(t).unwrap_or(&empty))
            .collect();
        sets.sort_by_key(|set| set.len());
        let candidates: Box<dyn Iterator<Item = &AgentRecord>> = match sets.split_first() {
            None => Box::new(self.records.range::<str, _>(range).map(|(_, r)| r)),
            Some((rarest, rest)) => {
                let rest: Vec<_> = rest.to_vec();
                Box::new(
                    rarest
                        .range::<str, _>(range)
                        .filter(move |id| rest.iter().all(|set| set.contains(&***id)))
                        .filter_map(|id| self.records.get(&**id)),
                )
            }
        };
        let mut page = Vec::new();
        let mut more = false;
        for record in candidates {
            if page.len() == query.limit {
                more = true;
                break;
            }
            page.push(record);
        }
        let cursor = if more {
            page.last().map(|r| r.agent_id.clone())
        } else {
            None
        };
        (page, cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_registry::keys::Keypair;
    use meridian_registry::manifest::ManifestBody;

    fn record(org: &str, name: &str, skill: &str, description: &str) -> AgentRecord {
        let card = format!(
            r#"{{"name":"{name}","description":"{description}","supportedInterfaces":[{{"url":"https://x.example/a"}}],"skills":[{{"id":"{skill}","name":"s","tags":["tag-{skill}"]}}]}}"#
        );
        let manifest = ManifestBody::from_card(&card, org, "eu", 1)
            .unwrap()
            .sign(&Keypair::from_secret(&[1; 32]));
        let cid = manifest.to_block_and_cid().0;
        AgentRecord::new(&manifest, &cid, "p1", 1)
    }

    fn ids(index: &AgentIndex, query: &Query) -> Vec<String> {
        index
            .search(query)
            .0
            .iter()
            .map(|r| r.agent_id.clone())
            .collect()
    }

    #[test]
    fn postings_follow_every_change_and_pages_stay_in_order() {
        let mut index = AgentIndex::new();
        let commit = meridian_registry::ids::dag_cbor_cid(b"commit");
        let changes = index.replace_publisher(
            "p1",
            &commit,
            vec![
                record("acme", "Alpha", "search", "finds flights"),
                record("acme", "Beta", "translate", "translates text"),
                record("globex", "Gamma", "search", "finds hotels"),
            ],
        );
        assert_eq!(changes.len(), 3);
        let q = |edit: &dyn Fn(&mut Query)| {
            let mut q = Query {
                limit: 10,
                ..Query::default()
            };
            edit(&mut q);
            q
        };
        assert_eq!(
            ids(&index, &q(&|q| q.text = Some("FINDS".into()))),
            ["acme/alpha", "globex/gamma"]
        );
        assert_eq!(
            ids(&index, &q(&|q| q.text = Some("finds hotels".into()))),
            ["globex/gamma"]
        );
        assert_eq!(
            ids(&index, &q(&|q| q.skill = Some("search".into()))),
            ["acme/alpha", "globex/gamma"]
        );
        assert_eq!(
            ids(
                &index,
                &q(&|q| {
                    q.skill = Some("search".into());
                    q.org = Some("acme".into());
                })
            ),
            ["acme/alpha"]
        );
        assert_eq!(
            ids(&index, &q(&|q| q.tag = Some("tag-translate".into()))),
            ["acme/beta"]
        );
        assert!(ids(&index, &q(&|q| q.text = Some("nothing".into()))).is_empty());
        // Pages: limit 1 walks every agent in id order.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let query = Query {
                limit: 1,
                after: after.clone(),
                ..Query::default()
            };
            let (page, next) = index.search(&query);
            seen.extend(page.iter().map(|r| r.agent_id.clone()));
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, ["acme/alpha", "acme/beta", "globex/gamma"]);
        // A change and a removal leave no stale postings.
        let changes = index.replace_publisher(
            "p1",
            &commit,
            vec![
                record("acme", "Alpha", "search", "books trains"),
                record("globex", "Gamma", "search", "finds hotels"),
            ],
        );
        assert!(changes.contains(&("agent.changed", "acme/alpha".into())));
        assert!(changes.contains(&("agent.removed", "acme/beta".into())));
        assert_eq!(
            ids(&index, &q(&|q| q.text = Some("finds".into()))),
            ["globex/gamma"]
        );
        assert_eq!(
            ids(&index, &q(&|q| q.text = Some("trains".into()))),
            ["acme/alpha"]
        );
        assert!(ids(&index, &q(&|q| q.skill = Some("translate".into()))).is_empty());
        index.remove("globex/gamma", "p1");
        assert!(ids(&index, &q(&|q| q.org = Some("globex".into()))).is_empty());
        assert!(index.postings.keys().all(|t| !t.contains("gamma")));
    }

    fn entry(publisher: &str, updated_at: i64, removed: bool) -> AgentRecord {
        let key = Keypair::from_secret(&[1; 32]);
        let body = if removed {
            ManifestBody::tombstone("acme/echo", "eu", updated_at).unwrap()
        } else {
            let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://x.example/a"}]}"#;
            ManifestBody::from_card(card, "acme", "eu", updated_at).unwrap()
        };
        let manifest = body.sign(&key);
        let cid = manifest.to_block_and_cid().0;
        AgentRecord::new(&manifest, &cid, publisher, 1)
    }

    #[test]
    fn a_deprecation_is_its_own_change_and_a_status_to_filter_on() {
        let commit = meridian_registry::ids::dag_cbor_cid(b"c");
        let key = Keypair::from_secret(&[1; 32]);
        let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://x.example/a"}]}"#;
        let body = ManifestBody::from_card(card, "acme", "eu", 100).unwrap();
        let record = |body: ManifestBody| {
            let manifest = body.sign(&key);
            let cid = manifest.to_block_and_cid().0;
            AgentRecord::new(&manifest, &cid, "origin", 1)
        };
        let mut index = AgentIndex::new();
        index.replace_publisher("origin", &commit, vec![record(body.clone())]);
        let status = |index: &AgentIndex, status: &str| {
            index
                .search(&Query {
                    status: Some(status.into()),
                    limit: 10,
                    ..Query::default()
                })
                .0
                .len()
        };
        assert_eq!(
            (status(&index, "active"), status(&index, "deprecated")),
            (1, 0)
        );
        let mut later = body.clone();
        later.updated_at = 101;
        let deprecated = record(later.deprecate(Some("acme/echo-2")).unwrap());
        assert!(deprecated.is_deprecated());
        let changes = index.replace_publisher("origin", &commit, vec![deprecated]);
        assert_eq!(changes, [("agent.deprecated", "acme/echo".to_owned())]);
        assert_eq!(
            (status(&index, "active"), status(&index, "deprecated")),
            (0, 1)
        );
        let shown = serde_json::to_value(index.get("acme/echo").unwrap()).unwrap();
        assert_eq!(shown["status"], "deprecated");
        assert_eq!(shown["superseded_by"], "acme/echo-2");
        // A newer version brings it back: an ordinary change, active again.
        let mut newer = body;
        newer.updated_at = 102;
        let changes = index.replace_publisher("origin", &commit, vec![record(newer)]);
        assert_eq!(changes, [("agent.changed", "acme/echo".to_owned())]);
        assert_eq!(
            (status(&index, "active"), status(&index, "deprecated")),
            (1, 0)
        );
    }

    #[test]
    fn a_signed_removal_beats_every_older_manifest_in_either_order() {
        let commit = meridian_registry::ids::dag_cbor_cid(b"c");
        // The replayed copy arrives first, then the removal: the agent goes.
        let mut index = AgentIndex::new();
        index.replace_publisher("replayer", &commit, vec![entry("replayer", 100, false)]);
        assert!(index.get("acme/echo").is_some());
        let changes = index.replace_publisher("origin", &commit, vec![entry("origin", 200, true)]);
        assert_eq!(changes, [("agent.removed", "acme/echo".to_owned())]);
        assert!(index.get("acme/echo").is_none());
        assert_eq!(index.removal("acme/echo").unwrap().updated_at, 200);
        assert!(
            index
                .search(&Query {
                    limit: 10,
                    ..Query::default()
                })
                .0
                .is_empty()
        );
        // The replayer lists its copy again (a new commit): still hidden, and counted.
        let changes = index.apply_publisher_changes(
            "replayer",
            2,
            &commit,
            vec![entry("replayer", 100, false)],
            vec![],
        );
        assert!(changes.is_empty());
        assert!(index.get("acme/echo").is_none());
        assert_eq!(
            index.hidden_by_removal(),
            2,
            "taken out once, kept out once"
        );
        // A copy as new as the removal loses too: ties go to the removal.
        index.upsert(entry("replayer", 200, false));
        assert!(index.get("acme/echo").is_none());

        // The removal first, then the copy: never served.
        let mut index = AgentIndex::new();
        index.replace_publisher("origin", &commit, vec![entry("origin", 200, true)]);
        let changes =
            index.replace_publisher("replayer", &commit, vec![entry("replayer", 100, false)]);
        assert!(changes.is_empty());
        assert!(index.get("acme/echo").is_none());

        // A newer manifest (from anyone already accepted) brings the agent back.
        assert_eq!(
            index.upsert(entry("origin", 300, false)),
            Some("agent.added")
        );
        assert_eq!(index.get("acme/echo").unwrap().updated_at, 300);
        assert!(
            index.removal("acme/echo").is_none(),
            "the origin's removal was replaced"
        );
        // An older removal does not remove a newer manifest of another publisher...
        assert_eq!(index.upsert(entry("replayer", 250, true)), None);
        assert!(index.get("acme/echo").is_some());
        // ...but a publisher's own removal replaces its own listing, whatever its date.
        assert_eq!(
            index.upsert(entry("origin", 250, true)),
            Some("agent.removed")
        );
        // Withdrawing every removal forgets them.
        index.remove("acme/echo", "origin");
        index.remove("acme/echo", "replayer");
        assert!(index.removal("acme/echo").is_none());
        assert_eq!(index.removals_len(), 0);
    }

    #[test]
    fn relevance_ranks_exact_words_first_and_forgives_a_typo_or_an_unfinished_word() {
        fn ranked(index: &AgentIndex, text: &str) -> Vec<(String, u8)> {
            let mut ranked: Vec<(&str, (u8, f64))> = index.relevance(text).into_iter().collect();
            ranked.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
            ranked
                .into_iter()
                .map(|(id, (score, _))| (id.to_owned(), score))
                .collect()
        }
        let mut index = AgentIndex::new();
        for (name, skill, description) in [
            (
                "Translator",
                "translate",
                "translates documents between languages",
            ),
            ("Flights", "book-flight", "books flights and finds fares"),
            ("Weather", "forecast", "weather forecasts for any city"),
        ] {
            index.upsert(record("acme", name, skill, description));
        }
        // Stop words are left out; a name word weighs more.
        let exact = ranked(&index, "find me a flight booking agent for weather");
        assert_eq!(exact.len(), 2, "{exact:?}");
        assert_eq!(exact[0].0, "acme/weather");
        // A typo (two letters swapped) still finds the translator, at a lower score.
        let typo = ranked(&index, "tarnslates");
        assert_eq!(typo.first().map(|t| t.0.as_str()), Some("acme/translator"));
        assert!(typo[0].1 < 100, "{typo:?}");
        assert!(ranked(&index, "translates")[0].1 > typo[0].1);
        // The last word still being typed completes to the words it begins.
        assert_eq!(ranked(&index, "forec")[0].0, "acme/weather");
        assert!(ranked(&index, "fo").is_empty(), "too short to complete");
        assert!(ranked(&index, "zzzzzz").is_empty());
        // Removing an agent takes its words out of the vocabulary.
        index.replace_publisher(
            "p1",
            &meridian_registry::ids::dag_cbor_cid(b"c"),
            Vec::new(),
        );
        assert!(ranked(&index, "forec").is_empty());
    }

    #[test]
    fn a_query_of_many_or_huge_words_weighs_only_a_few_short_ones() {
        let mut index = AgentIndex::new();
        index.upsert(record("acme", "Weather", "forecast", "weather forecasts"));
        // The matching word comes after RELEVANCE_TERMS_MAX others: it is not weighed.
        let filler: Vec<String> = (0..RELEVANCE_TERMS_MAX)
            .map(|i| format!("filler{i}"))
            .collect();
        let late = format!("{} weather", filler.join(" "));
        assert!(index.relevance(&late).is_empty());
        assert!(!index.relevance("weather").is_empty());
        // A 100,000-letter word is not expanded into typo variants (millions of copies of it).
        let huge = "w".repeat(100_000);
        assert!(
            index
                .relevance(&format!("{huge} weather"))
                .contains_key("acme/weather")
        );
    }
}
