//! The searchable view of every agent the node holds: built from the store's heads, updated
//! after each import, and queried by the gateway. Plain data; no I/O of its own.

use std::collections::BTreeMap;

use meridian_registry::Cid;
use meridian_registry::manifest::Manifest;
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
    #[serde(skip)]
    text: String,
}

impl AgentRecord {
    /// A record from a verified manifest held in `publisher`'s snapshot `seq`.
    pub fn new(manifest: &Manifest, cid: &Cid, publisher: &str, seq: u64) -> Self {
        let card = manifest.card().ok();
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
            text: String::new(),
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
        record.text = format!(
            "{} {} {} {}",
            record.agent_id,
            record.name,
            record.description,
            record.skills.join(" ")
        )
        .to_lowercase();
        record
    }
}

/// A search: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Words that must all appear in the id, name, description or skill ids (case-insensitive).
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
    /// Return agents whose id sorts after this one (the previous page's `next_cursor`).
    pub after: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// All agents, by agent id (stable order for pagination).
#[derive(Debug, Clone, Default)]
pub struct AgentIndex {
    records: BTreeMap<String, AgentRecord>,
}

impl AgentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything `publisher` contributed with `records`; returns what changed as
    /// `(event kind, agent id)`.
    pub fn replace_publisher(
        &mut self,
        publisher: &str,
        records: Vec<AgentRecord>,
    ) -> Vec<(&'static str, String)> {
        let before: BTreeMap<String, String> = self
            .records
            .values()
            .filter(|r| r.publisher == publisher)
            .map(|r| (r.agent_id.clone(), r.manifest.clone()))
            .collect();
        let mut changes = Vec::new();
        for record in &records {
            match before.get(&record.agent_id) {
                None => changes.push(("agent.added", record.agent_id.clone())),
                Some(manifest) if *manifest != record.manifest => {
                    changes.push(("agent.changed", record.agent_id.clone()))
                }
                Some(_) => {}
            }
        }
        for agent_id in before.keys() {
            if !records.iter().any(|r| &r.agent_id == agent_id) {
                changes.push(("agent.removed", agent_id.clone()));
            }
        }
        self.records.retain(|_, r| r.publisher != publisher);
        for record in records {
            // When two publishers list one agent, the most recently updated manifest wins.
            match self.records.get(&record.agent_id) {
                Some(existing) if existing.updated_at > record.updated_at => {}
                _ => {
                    self.records.insert(record.agent_id.clone(), record);
                }
            }
        }
        changes
    }

    /// Adds or replaces one agent.
    pub fn upsert(&mut self, record: AgentRecord) {
        self.records.insert(record.agent_id.clone(), record);
    }

    /// Removes one agent if `publisher` is the one that listed it.
    pub fn remove(&mut self, agent_id: &str, publisher: &str) {
        if self
            .records
            .get(agent_id)
            .is_some_and(|r| r.publisher == publisher)
        {
            self.records.remove(agent_id);
        }
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

    /// One page of results and, if more follow, the cursor for the next page.
    pub fn search(&self, query: &Query) -> (Vec<&AgentRecord>, Option<String>) {
        let words: Vec<String> = query
            .text
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let has = |list: &[String], wanted: &Option<String>| {
            wanted.as_ref().is_none_or(|w| list.iter().any(|x| x == w))
        };
        let mut page = Vec::new();
        let mut more = false;
        for record in self
            .records
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
        {
            let matches = words.iter().all(|w| record.text.contains(w))
                && query.org.as_ref().is_none_or(|o| &record.org == o)
                && query.region.as_ref().is_none_or(|r| &record.region == r)
                && has(&record.skills, &query.skill)
                && has(&record.tags, &query.tag)
                && has(&record.input_modes, &query.input_mode)
                && has(&record.output_modes, &query.output_mode);
            if !matches {
                continue;
            }
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
