//! The searchable view of every agent the node holds: built from the store's heads, updated
//! after each import, and queried by the gateway. Plain data; no I/O of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::manifest::{Lifecycle, Manifest};

use super::ranking::{NAME_BOOST, RankError, RankFilter, RankIndex, Weighed, WordCounts};
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
    /// The card's `version` (empty when it has none).
    #[serde(skip)]
    pub version: String,
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
            version: String::new(),
            words: Vec::new(),
            card: serde_json::value::RawValue::from_string(manifest.body.card.clone()).ok(),
            signer: manifest.signer.to_did(),
            commit: None,
            removed: manifest.body.removed,
        };
        if let Some(card) = card {
            record.name = card.name;
            record.description = card.description;
            record.version = card.version;
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

    /// The lowercase words search finds it by (id, name, description, skill ids), sorted,
    /// without repeats.
    pub fn indexed_words(&self) -> &[String] {
        &self.words
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

/// Whether `a` and `b` are one edit apart: a letter deleted, inserted or replaced, or two
/// neighbours swapped.
fn one_edit_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() - short.len() > 1 {
        return false;
    }
    let start = short
        .iter()
        .zip(long.iter())
        .take_while(|(x, y)| x == y)
        .count();
    if short.len() == long.len() {
        if start == short.len() {
            return false;
        }
        let rest = start + 1;
        let replaced = short[rest..] == long[rest..];
        let swapped = rest < short.len()
            && short[start] == long[rest]
            && short[rest] == long[start]
            && short[rest + 1..] == long[rest + 1..];
        return replaced || swapped;
    }
    short[start..] == long[start + 1..]
}

/// The lowercase words of `text` in the order they appear (repeats kept).
pub(crate) fn words_in_order(text: &str) -> Vec<String> {
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

impl WordCounts for AgentIndex {
    fn agents(&self) -> u64 {
        self.records.len() as u64
    }

    fn with_word(&self, word: &str) -> u64 {
        self.postings
            .get(&format!("w:{word}"))
            .map_or(0, |set| set.len() as u64)
    }
}

/// A page of ranked agents: each with its score from 1 to 100, and how many match in all.
#[derive(Debug, Clone)]
pub struct Ranked<'a> {
    /// The page, best first.
    pub hits: Vec<(&'a AgentRecord, u8)>,
    /// Agents matching the query and filter in all.
    pub total: usize,
}

/// The share of the query's weight `record` matches, from 1 to 100: each word's idf, half as
/// much again in the name, half for a typo or (the last word) a word it begins.
fn share_score(record: &AgentRecord, terms: &[Weighed], weight_all: f64) -> u8 {
    let words = record.indexed_words();
    let mut share = 0.0;
    for term in terms {
        let exact = words.binary_search(&term.word).is_ok()
            || record.tags.iter().any(|t| has_word(t, &term.word));
        if exact {
            let boost = if has_word(&record.name, &term.word) {
                f64::from(NAME_BOOST)
            } else {
                1.0
            };
            share += term.idf * boost;
            continue;
        }
        let letters = term.word.chars().count();
        let variant = !term.known
            && words.iter().any(|w| {
                (letters >= 5 && one_edit_apart(w, &term.word))
                    || (term.last && letters >= 3 && w.starts_with(term.word.as_str()))
            });
        if variant {
            share += term.idf * 0.5;
        }
    }
    let score = (100.0 * share / f64::max(weight_all, f64::MIN_POSITIVE)).round();
    score.clamp(1.0, 100.0) as u8
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
    /// The organisation is one of these (the `verified` filter: the organisations bound to a
    /// verified domain, or the others).
    pub orgs: Option<Vec<String>>,
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
#[derive(Debug, Default)]
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
    /// The same agents, ranked by relevance to a query.
    rank: RankIndex,
    /// How many agents each organisation has.
    orgs: BTreeMap<String, usize>,
    /// Whether the last ranked-index update failed (logged once until one succeeds).
    rank_failed: bool,
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
    /// Every public change ends here, so this is also where the ranked index commits.
    fn changes(
        &mut self,
        before: BTreeMap<String, Option<(String, bool)>>,
    ) -> Vec<(&'static str, String)> {
        let committed = self.rank.commit();
        self.note_rank(committed);
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
        let ranked = self.rank.upsert(&record);
        self.note_rank(ranked);
        *self.orgs.entry(record.org.clone()).or_default() += 1;
        self.records.insert(id, record);
    }

    fn remove_record(&mut self, agent_id: &str) -> Option<AgentRecord> {
        let record = self.records.remove(agent_id)?;
        let postings = &mut self.postings;
        record.for_each_term(|term| {
            if let Some(set) = postings.get_mut(term) {
                set.remove(agent_id);
                if set.is_empty() {
                    postings.remove(term);
                }
            }
        });
        let ranked = self.rank.remove(agent_id);
        self.note_rank(ranked);
        if let Some(count) = self.orgs.get_mut(&record.org) {
            *count -= 1;
            if *count == 0 {
                self.orgs.remove(&record.org);
            }
        }
        Some(record)
    }

    /// Logs a failed ranked-index update (once, until one succeeds again): the view itself is
    /// unaffected, and ranked search answers with the error.
    fn note_rank(&mut self, outcome: Result<(), RankError>) {
        match outcome {
            Ok(()) => self.rank_failed = false,
            Err(error) if !self.rank_failed => {
                tracing::error!(%error, "the ranked search index could not take a change");
                self.rank_failed = true;
            }
            Err(_) => {}
        }
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

    /// The agents ranked best for `text` that pass `filter`, from the `offset`-th, at most
    /// `limit`, each with a score from 1 to 100 (the share of the query's weight it matches:
    /// rarer words weigh more, a word in the name half as much again, a typo or an unfinished
    /// last word half), and how many match in all. What a query means is written in
    /// [`super::ranking`].
    pub fn rank(
        &self,
        text: &str,
        filter: &RankFilter,
        offset: usize,
        limit: usize,
    ) -> Result<Ranked<'_>, RankError> {
        let top = self
            .rank
            .top(text, filter, offset.saturating_add(limit), self)?;
        let weight_all: f64 = top
            .terms
            .iter()
            .map(|t| t.idf * f64::from(NAME_BOOST))
            .sum();
        let hits = top
            .hits
            .iter()
            .skip(offset)
            .filter_map(|(id, _)| {
                let record = self.records.get(&**id)?;
                Some((record, share_score(record, &top.terms, weight_all)))
            })
            .collect();
        Ok(Ranked {
            hits,
            total: top.total,
        })
    }

    /// Every agent `text` matches, by agent id (what ARD explore counts facets over).
    pub fn matching(&self, text: &str) -> Result<std::collections::HashSet<Arc<str>>, RankError> {
        self.rank.matching(text, self)
    }

    /// The organisations with at least one agent, in order.
    pub fn orgs(&self) -> impl Iterator<Item = &str> {
        self.orgs.keys().map(String::as_str)
    }

    /// The ranked index's size in RAM, in bytes.
    pub fn ranked_bytes(&self) -> u64 {
        self.rank.bytes()
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
        let of_orgs: Option<std::collections::BTreeSet<Arc<str>>> =
            query.orgs.as_ref().map(|orgs| {
                orgs.iter()
                    .filter_map(|org| self.postings.get(&format!("o:{org}")))
                    .flatten()
                    .cloned()
                    .collect()
            });
        if let Some(set) = &of_orgs {
            sets.push(set);
        }
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
    use crate::daemon::ranking::{FilterField, RELEVANCE_TERMS_MAX};
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
        // An organisation out of a list (the `verified` filter), with the other filters.
        let of = |orgs: &[&str]| Some(orgs.iter().map(|o| (*o).to_owned()).collect());
        assert_eq!(
            ids(&index, &q(&|q| q.orgs = of(&["globex", "initech"]))),
            ["globex/gamma"]
        );
        assert_eq!(
            ids(
                &index,
                &q(&|q| {
                    q.orgs = of(&["acme", "globex"]);
                    q.text = Some("finds".into());
                })
            ),
            ["acme/alpha", "globex/gamma"]
        );
        assert!(ids(&index, &q(&|q| q.orgs = of(&[]))).is_empty());
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

    fn ranked(index: &AgentIndex, text: &str) -> Vec<(String, u8)> {
        index
            .rank(text, &RankFilter::default(), 0, 100)
            .unwrap()
            .hits
            .into_iter()
            .map(|(record, score)| (record.agent_id.clone(), score))
            .collect()
    }

    #[test]
    fn relevance_ranks_exact_words_first_and_forgives_a_typo_or_an_unfinished_word() {
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
        // Removing an agent takes its words out of the ranked index.
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
        assert!(ranked(&index, &late).is_empty());
        assert!(!ranked(&index, "weather").is_empty());
        // A 100,000-letter word is not made into a typo automaton; the rest of the query works.
        let huge = "w".repeat(100_000);
        assert_eq!(
            ranked(&index, &format!("{huge} weather"))[0].0,
            "acme/weather"
        );
    }

    #[test]
    fn ranked_pages_filter_count_and_put_deprecated_agents_last() {
        let mut index = AgentIndex::new();
        for i in 0..30 {
            index.upsert(record(
                "acme",
                &format!("Echo {i}"),
                "echo",
                "repeats what it hears",
            ));
        }
        index.upsert(record("globex", "Echo", "echo", "repeats what it hears"));
        // The exact name ranks first; pages follow on without overlap, and count all matches.
        let first = index.rank("echo", &RankFilter::default(), 0, 10).unwrap();
        assert_eq!(first.total, 31);
        assert_eq!(first.hits[0].0.agent_id, "globex/echo");
        let second = index.rank("echo", &RankFilter::default(), 10, 10).unwrap();
        let seen: std::collections::HashSet<&str> = first
            .hits
            .iter()
            .chain(&second.hits)
            .map(|(r, _)| r.agent_id.as_str())
            .collect();
        assert_eq!(seen.len(), 20);
        // Filters must all hold, each by any of its values; an empty one matches nothing.
        let mut only_globex = RankFilter::default();
        only_globex.any(FilterField::Org, vec!["globex".into()]);
        let found = index.rank("echo", &only_globex, 0, 10).unwrap();
        assert_eq!(
            (found.total, found.hits[0].0.agent_id.as_str()),
            (1, "globex/echo")
        );
        let mut none = RankFilter::default();
        none.any(FilterField::Org, Vec::new());
        assert_eq!(index.rank("echo", &none, 0, 10).unwrap().total, 0);
        // Deprecated, the best match goes after every active one.
        let key = Keypair::from_secret(&[5; 32]);
        let card = r#"{"name":"Echo","description":"repeats what it hears","supportedInterfaces":[{"url":"https://x.example/a"}],"skills":[{"id":"echo","name":"echo"}]}"#;
        let manifest = ManifestBody::from_card(card, "globex", "eu", 2)
            .unwrap()
            .deprecate(None)
            .unwrap()
            .sign(&key);
        let cid = manifest.to_block_and_cid().0;
        index.upsert(AgentRecord::new(&manifest, &cid, "p1", 2));
        let all = index.rank("echo", &RankFilter::default(), 0, 100).unwrap();
        assert_eq!(all.total, 31);
        assert_eq!(all.hits.last().unwrap().0.agent_id, "globex/echo");
        let mut deprecated = RankFilter::default();
        deprecated.any(FilterField::Status, vec!["deprecated".into()]);
        assert_eq!(index.rank("echo", &deprecated, 0, 10).unwrap().total, 1);
    }
}
