//! Ranked search over the node's view of the federation: a tantivy index in RAM, kept in step
//! with the [`AgentIndex`](super::index::AgentIndex) that owns it (every record it serves is a
//! document here, replaced when the record changes), and asked for the top agents of a query
//! by BM25 with block-max WAND, so a query of words every agent has costs the top `k`, not a
//! score for each of 100,000 agents.
//!
//! What a query means is decided here, the same for `GET /api/v1/agents?sort=relevance` and
//! ARD search: its words (stop words and words more than half the agents have left out while
//! a rarer one remains; at most [`RELEVANCE_TERMS_MAX`] of at most
//! [`RELEVANCE_WORD_BYTES_MAX`] bytes), each matched in an agent's name (weighing
//! [`NAME_BOOST`] times more) and in its other words; a word no agent has, of five letters or
//! more, matches words one edit away instead (a typo), and as the last word of three letters or
//! more the words it begins (a word still being typed), each at half weight. Filters must all hold (any of a filter's values). Deprecated
//! agents come after every active one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::index::{AgentRecord, STOP_WORDS, words, words_in_order};

/// Most words of one query that relevance weighs (the first ones, stop words left out).
pub const RELEVANCE_TERMS_MAX: usize = 16;
/// Longest query word relevance weighs, in bytes (no indexed word of an agent card is longer in
/// practice; a longer one would only make typo variants expensive).
pub const RELEVANCE_WORD_BYTES_MAX: usize = 64;
/// How deep ranked pages reach: the offset of a page plus its size, at most.
pub const RANKED_DEPTH_MAX: usize = 10_000;
/// How much more a word in an agent's name weighs.
pub const NAME_BOOST: f32 = 1.5;
/// The weight of a typo or prefix match, against an exact word's.
const VARIANT_WEIGHT: f32 = 0.5;
/// What ranks a deprecated agent after every active one: more than any query's BM25 score.
const DEPRECATED_PENALTY: f64 = 1e9;
/// The indexing heap of the writer, in bytes (tantivy's minimum is 15 MB).
const WRITER_HEAP_BYTES: usize = 50_000_000;
/// The tokenizer of the word fields: the words are lowercased and split before they get here.
const WORDS_TOKENIZER: &str = "meridian_words";

/// A filter field of the ranked index and the record values it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterField {
    /// The organisation.
    Org,
    /// The region.
    Region,
    /// A skill id.
    Skill,
    /// A skill tag.
    Tag,
    /// An input media type.
    InputMode,
    /// An output media type.
    OutputMode,
    /// `active` or `deprecated`.
    Status,
    /// The card's `version`.
    Version,
}

/// Filters that must all hold, each by any of its values.
#[derive(Debug, Clone, Default)]
pub struct RankFilter {
    clauses: Vec<(FilterField, Vec<String>)>,
}

impl RankFilter {
    /// Adds a filter: the field must have one of `values` (none: nothing matches).
    pub fn any(&mut self, field: FilterField, values: Vec<String>) -> &mut Self {
        self.clauses.push((field, values));
        self
    }
}

/// A query word kept for ranking, with its inverse document frequency.
#[derive(Debug, Clone)]
pub struct Weighed {
    /// The word, lowercase.
    pub word: String,
    /// BM25's inverse document frequency of the word among the agents.
    pub idf: f64,
    /// Whether it is the query's last word (it may be unfinished).
    pub last: bool,
    /// Whether any agent has the word itself; only a word none has is matched by its typo
    /// and prefix variants (a known word is taken as meant, which keeps a query of common
    /// words to exact terms that top-k ranking can skip through).
    pub known: bool,
}

/// The best agents of a query.
#[derive(Debug, Clone, Default)]
pub struct TopHits {
    /// Agent ids, best first (deprecated agents after every active one), with their raw score.
    pub hits: Vec<(Arc<str>, f64)>,
    /// How many agents match in all.
    pub total: usize,
    /// The query words that ranked them.
    pub terms: Vec<Weighed>,
}

/// Why ranked search failed: tantivy's error, as text (it happens only when memory runs out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ranked search: {0}")]
pub struct RankError(String);

impl From<tantivy::TantivyError> for RankError {
    fn from(error: tantivy::TantivyError) -> Self {
        RankError(error.to_string())
    }
}

/// The fields of a ranked document.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// A number of ours naming the document (fast field): the agent id is looked up by it.
    key: Field,
    /// The agent id, to delete the document by.
    id: Field,
    /// Words of the name.
    name: Field,
    /// Words of the id, name, description, skills and tags.
    text: Field,
    /// 1 for a deprecated agent (fast field, read while ranking).
    deprecated: Field,
    org: Field,
    region: Field,
    skill: Field,
    tag: Field,
    input: Field,
    output: Field,
    status: Field,
    version: Field,
}

impl Fields {
    fn filter(&self, field: FilterField) -> Field {
        match field {
            FilterField::Org => self.org,
            FilterField::Region => self.region,
            FilterField::Skill => self.skill,
            FilterField::Tag => self.tag,
            FilterField::InputMode => self.input,
            FilterField::OutputMode => self.output,
            FilterField::Status => self.status,
            FilterField::Version => self.version,
        }
    }
}

/// The index, its writer and reader, and the agent id of each document key.
struct Engine {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    ids: HashMap<u64, Arc<str>>,
    keys: HashMap<Arc<str>, u64>,
    next_key: u64,
    dirty: bool,
}

/// The ranked index of the agents an [`AgentIndex`](super::index::AgentIndex) serves.
pub struct RankIndex {
    engine: Result<Engine, RankError>,
}

impl std::fmt::Debug for RankIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.engine {
            Ok(engine) => write!(f, "RankIndex({} agents)", engine.keys.len()),
            Err(error) => write!(f, "RankIndex({error})"),
        }
    }
}

impl Default for RankIndex {
    fn default() -> Self {
        Self {
            engine: Engine::new(),
        }
    }
}

impl Engine {
    fn new() -> Result<Self, RankError> {
        let mut schema = Schema::builder();
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            key: schema.add_u64_field("key", FAST),
            id: schema.add_text_field("id", STRING),
            name: schema.add_text_field("name", words.clone()),
            text: schema.add_text_field("text", words),
            deprecated: schema.add_u64_field("deprecated", FAST | INDEXED),
            org: schema.add_text_field("org", STRING),
            region: schema.add_text_field("region", STRING),
            skill: schema.add_text_field("skill", STRING),
            tag: schema.add_text_field("tag", STRING),
            input: schema.add_text_field("input", STRING),
            output: schema.add_text_field("output", STRING),
            status: schema.add_text_field("status", STRING),
            version: schema.add_text_field("version", STRING),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(
            WORDS_TOKENIZER,
            TextAnalyzer::builder(WhitespaceTokenizer::default()).build(),
        );
        let writer = index.writer_with_num_threads(1, WRITER_HEAP_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            writer,
            reader,
            fields,
            ids: HashMap::new(),
            keys: HashMap::new(),
            next_key: 0,
            dirty: false,
        })
    }

    fn document(&self, record: &AgentRecord, key: u64) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.key, key);
        doc.add_text(f.id, &record.agent_id);
        doc.add_text(f.name, words(&record.name).join(" "));
        let mut text = record.indexed_words().join(" ");
        for tag in &record.tags {
            for word in words(tag) {
                text.push(' ');
                text.push_str(&word);
            }
        }
        doc.add_text(f.text, text);
        doc.add_u64(f.deprecated, u64::from(record.is_deprecated()));
        doc.add_text(f.org, &record.org);
        doc.add_text(f.region, &record.region);
        doc.add_text(f.status, record.status);
        doc.add_text(f.version, &record.version);
        for (field, values) in [
            (f.skill, &record.skills),
            (f.tag, &record.tags),
            (f.input, &record.input_modes),
            (f.output, &record.output_modes),
        ] {
            for value in values {
                doc.add_text(field, value);
            }
        }
        doc
    }
}

impl RankIndex {
    /// Adds `record`, replacing the document of the same agent; searchable after
    /// [`RankIndex::commit`].
    pub fn upsert(&mut self, record: &AgentRecord) -> Result<(), RankError> {
        let engine = self.engine.as_mut().map_err(|e| e.clone())?;
        let id: Arc<str> = Arc::from(record.agent_id.as_str());
        if let Some(old) = engine.keys.remove(&id) {
            engine.ids.remove(&old);
            engine
                .writer
                .delete_term(Term::from_field_text(engine.fields.id, &id));
        }
        let key = engine.next_key;
        engine.next_key += 1;
        let doc = engine.document(record, key);
        engine.writer.add_document(doc)?;
        engine.ids.insert(key, id.clone());
        engine.keys.insert(id, key);
        engine.dirty = true;
        Ok(())
    }

    /// Removes the agent's document; gone after [`RankIndex::commit`].
    pub fn remove(&mut self, agent_id: &str) -> Result<(), RankError> {
        let engine = self.engine.as_mut().map_err(|e| e.clone())?;
        if let Some(old) = engine.keys.remove(agent_id) {
            engine.ids.remove(&old);
            engine
                .writer
                .delete_term(Term::from_field_text(engine.fields.id, agent_id));
            engine.dirty = true;
        }
        Ok(())
    }

    /// Makes every change since the last commit searchable.
    pub fn commit(&mut self) -> Result<(), RankError> {
        let engine = self.engine.as_mut().map_err(|e| e.clone())?;
        if engine.dirty {
            engine.writer.commit()?;
            engine.reader.reload()?;
            engine.dirty = false;
        }
        Ok(())
    }

    /// The best `k` agents for `text` that pass `filter`, and how many match in all. `counts`
    /// says how many agents there are and how many have a word (exactly: tantivy's own counts
    /// include replaced documents until segments merge).
    pub fn top(
        &self,
        text: &str,
        filter: &RankFilter,
        k: usize,
        counts: &dyn WordCounts,
    ) -> Result<TopHits, RankError> {
        let engine = self.engine.as_ref().map_err(|e| e.clone())?;
        let searcher = engine.reader.searcher();
        let terms = weigh(counts, text);
        let Some(query) = build_query(engine, &terms, filter) else {
            return Ok(TopHits {
                terms,
                ..TopHits::default()
            });
        };
        let collector =
            TopDocs::with_limit(k.max(1)).tweak_score(move |segment: &tantivy::SegmentReader| {
                let column = segment.fast_fields().u64("deprecated").ok();
                move |doc: tantivy::DocId, score: tantivy::Score| {
                    let penalty = column
                        .as_ref()
                        .and_then(|c| c.first(doc))
                        .map_or(0.0, |d| d as f64 * DEPRECATED_PENALTY);
                    f64::from(score) - penalty
                }
            });
        let (top, total) = searcher.search(&query, &(collector, Count))?;
        let mut hits = Vec::with_capacity(top.len().min(k));
        for (score, address) in top.into_iter().take(k) {
            if let Some(id) = id_of(engine, &searcher, address) {
                hits.push((id, score));
            }
        }
        // Equal scores come in document order (tantivy's), the same for every page size, so
        // pages follow on.
        Ok(TopHits { hits, total, terms })
    }

    /// Every agent `text` matches (for facet counts), unranked.
    pub fn matching(
        &self,
        text: &str,
        counts: &dyn WordCounts,
    ) -> Result<HashSet<Arc<str>>, RankError> {
        let engine = self.engine.as_ref().map_err(|e| e.clone())?;
        let searcher = engine.reader.searcher();
        let terms = weigh(counts, text);
        let Some(query) = build_query(engine, &terms, &RankFilter::default()) else {
            return Ok(HashSet::new());
        };
        let found = searcher.search(&query, &DocSetCollector)?;
        // Each segment's key column opened once, not once per matching document (which cost
        // half a second for a word all 100,000 agents have).
        let mut columns: Vec<Option<tantivy::columnar::Column<u64>>> =
            vec![None; searcher.segment_readers().len()];
        let mut ids = HashSet::with_capacity(found.len());
        for address in found {
            let slot = columns.get_mut(address.segment_ord as usize);
            let Some(slot) = slot else { continue };
            if slot.is_none() {
                *slot = searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64("key")
                    .ok();
            }
            let key = slot
                .as_ref()
                .and_then(|column| column.first(address.doc_id));
            if let Some(id) = key.and_then(|key| engine.ids.get(&key)) {
                ids.insert(id.clone());
            }
        }
        Ok(ids)
    }

    /// The bytes the index holds in RAM (postings, terms, fast fields, norms).
    pub fn bytes(&self) -> u64 {
        self.engine.as_ref().ok().map_or(0, |engine| {
            engine
                .reader
                .searcher()
                .space_usage()
                .map_or(0, |usage| usage.total().get_bytes())
        })
    }
}

/// The agent id of a matching document.
fn id_of(engine: &Engine, searcher: &tantivy::Searcher, address: DocAddress) -> Option<Arc<str>> {
    let key = searcher
        .segment_reader(address.segment_ord)
        .fast_fields()
        .u64("key")
        .ok()?
        .first(address.doc_id)?;
    engine.ids.get(&key).cloned()
}

/// How many agents there are, and how many have a word: what weighs a query's words.
pub trait WordCounts {
    /// Agents in all.
    fn agents(&self) -> u64;
    /// Agents with `word` among their words.
    fn with_word(&self, word: &str) -> u64;
}

/// The query's words that count, with their weight: stop words and words more than half the
/// agents have are left out while a rarer word remains.
fn weigh(counts: &dyn WordCounts, text: &str) -> Vec<Weighed> {
    let in_order = words_in_order(text);
    let last = in_order.last().cloned();
    let mut seen = HashSet::new();
    let mut terms: Vec<String> = in_order
        .into_iter()
        .filter(|w| w.len() <= RELEVANCE_WORD_BYTES_MAX && seen.insert(w.clone()))
        .collect();
    if terms.iter().any(|t| !STOP_WORDS.contains(&t.as_str())) {
        terms.retain(|t| !STOP_WORDS.contains(&t.as_str()));
    }
    terms.truncate(RELEVANCE_TERMS_MAX);
    let total = counts.agents();
    let counted: Vec<(String, u64)> = terms
        .into_iter()
        .map(|t| {
            let n = counts.with_word(&t);
            (t, n)
        })
        .collect();
    // A word no agent has (a typo, an unfinished word) does not count as rare: its variants
    // may be common.
    let rare = |n: u64| n > 0 && n <= total / 2;
    let any_rare = counted.iter().any(|(_, n)| rare(*n));
    counted
        .into_iter()
        .filter(|(_, n)| !any_rare || rare(*n) || *n == 0)
        .map(|(word, n)| Weighed {
            last: last.as_deref() == Some(word.as_str()),
            known: n > 0,
            idf: idf(total as f64, n as f64),
            word,
        })
        .collect()
}

/// BM25's inverse document frequency of a word `n` of `total` agents have.
pub fn idf(total: f64, n: f64) -> f64 {
    (1.0 + (total - n + 0.5) / (n + 0.5)).ln()
}

/// The query: any of the words (in the name, boosted, or in the other words; variants at half
/// weight), and every filter; `None` when nothing can match.
fn build_query(engine: &Engine, terms: &[Weighed], filter: &RankFilter) -> Option<Box<dyn Query>> {
    let f = &engine.fields;
    let mut words: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for term in terms {
        let exact = |field| {
            TermQuery::new(
                Term::from_field_text(field, &term.word),
                IndexRecordOption::WithFreqs,
            )
        };
        words.push((
            Occur::Should,
            Box::new(BoostQuery::new(Box::new(exact(f.name)), NAME_BOOST)),
        ));
        words.push((Occur::Should, Box::new(exact(f.text))));
        let letters = term.word.chars().count();
        let text_term = Term::from_field_text(f.text, &term.word);
        if term.known {
            continue;
        }
        if letters >= 5 {
            let typo = FuzzyTermQuery::new(text_term.clone(), 1, true);
            words.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(typo), VARIANT_WEIGHT)),
            ));
        }
        if term.last && letters >= 3 {
            let prefix = FuzzyTermQuery::new_prefix(text_term, 0, true);
            words.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(prefix), VARIANT_WEIGHT)),
            ));
        }
    }
    if words.is_empty() {
        return None;
    }
    let mut all: Vec<(Occur, Box<dyn Query>)> =
        vec![(Occur::Must, Box::new(BooleanQuery::new(words)))];
    for (field, values) in &filter.clauses {
        if values.is_empty() {
            return None;
        }
        let field = f.filter(*field);
        let terms = values.iter().map(|v| Term::from_field_text(field, v));
        let set: Box<dyn Query> = Box::new(TermSetQuery::new(terms));
        all.push((Occur::Must, Box::new(ConstScoreQuery::new(set, 0.0))));
    }
    Some(Box::new(BooleanQuery::new(all)))
}
