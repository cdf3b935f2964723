//! Agent manifests: an A2A Agent Card in a signed envelope.
//!
//! The card is kept as the exact JSON text the agent published, so what an agent publishes is what
//! a reader gets back. Around it, the envelope names the agent (`{org}/{agent}`), its organisation,
//! region and update time, the organisation key that signed it, and the signature. The envelope is
//! a DAG-CBOR block; its CID is what the registry tree stores.
//!
//! Which organisation keys count is the verifier's decision (governance), never the card's:
//! nothing inside a card (such as a `jku` URL) selects a key.

use cid::Cid;

use crate::cbor::{self, Value};
use crate::ids;
use crate::json_view::JsonView;
use crate::keys::{KeyCache, KeyError, Keypair, PublicKey};

/// The `$type` of a manifest block.
pub const MANIFEST_TYPE: &str = "meridian.manifest.v1";
/// Largest card JSON accepted, in bytes.
pub const CARD_BYTES_MAX: usize = 64 * 1024;
/// Largest manifest block accepted, in bytes (the card plus the envelope).
pub const MANIFEST_BYTES_MAX: usize = CARD_BYTES_MAX + 4 * 1024;
/// Longest organisation id or agent name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
const _: () = assert!(MANIFEST_BYTES_MAX > CARD_BYTES_MAX);

/// Why a card or manifest was refused. Validation reports every problem it finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The card is not acceptable; every problem found is listed.
    #[error("invalid agent card: {}", problems.join("; "))]
    InvalidCard {
        /// Each problem, naming the field.
        problems: Vec<String>,
    },
    /// The manifest block is not canonical DAG-CBOR.
    #[error("not canonical dag-cbor: {0}")]
    NonCanonical(cbor::DecodeError),
    /// The manifest block has the wrong shape.
    #[error("{0}")]
    Shape(cbor::ShapeError),
    /// The envelope's fields contradict each other or break the naming rules.
    #[error("{0}")]
    Invalid(String),
    /// The manifest is larger than [`MANIFEST_BYTES_MAX`].
    #[error("manifest is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The size found.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The signer's key or signature is bad.
    #[error("{0}")]
    Key(KeyError),
}

impl From<cbor::DecodeError> for ManifestError {
    fn from(error: cbor::DecodeError) -> Self {
        Self::NonCanonical(error)
    }
}

impl From<cbor::ShapeError> for ManifestError {
    fn from(error: cbor::ShapeError) -> Self {
        Self::Shape(error)
    }
}

impl From<KeyError> for ManifestError {
    fn from(error: KeyError) -> Self {
        Self::Key(error)
    }
}

/// Why an organisation id or agent name breaks the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or longer than [`NAME_BYTES_MAX`] bytes.
    #[error("{kind} `{name}` must be 1 to {NAME_BYTES_MAX} bytes")]
    Length {
        /// What the name names (`org`, `agent name`, `region`).
        kind: String,
        /// The name given.
        name: String,
    },
    /// A character other than `a-z`, `0-9` and inner `-`.
    #[error("{kind} `{name}` may hold only a-z, 0-9 and inner `-`")]
    Characters {
        /// What the name names.
        kind: String,
        /// The name given.
        name: String,
    },
}

impl From<NameError> for ManifestError {
    fn from(error: NameError) -> Self {
        Self::Invalid(error.to_string())
    }
}

/// Checks an organisation id or agent name: 1 to 64 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-`.
pub fn check_name(kind: &str, name: &str) -> Result<(), NameError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(NameError::Length {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
    }
    if !valid_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Characters {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Derives an agent name from a card's display name: lowercase, every run of other characters
/// becomes one `-`, trimmed, at most 64 bytes.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            out.push(c);
            dash = false;
        } else {
            dash = true;
        }
    }
    out.truncate(NAME_BYTES_MAX);
    out.trim_end_matches('-').to_owned()
}

/// One way to reach an agent: an endpoint URL and the A2A protocol binding it speaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentInterface {
    /// The endpoint URL.
    pub url: String,
    /// `JSONRPC`, `GRPC` or `HTTP+JSON`.
    pub protocol_binding: String,
}

/// One skill an agent offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentSkill {
    /// The skill's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Tags for search.
    pub tags: Vec<String>,
    /// Input media types (empty means the card's defaults).
    pub input_modes: Vec<String>,
    /// Output media types (empty means the card's defaults).
    pub output_modes: Vec<String>,
}

/// The parts of an A2A Agent Card that Meridian reads, normalised to A2A v1.0 whatever version
/// the card was written in. The card text itself is kept unchanged beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentCard {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The agent's own version string.
    pub version: String,
    /// `1.0` for cards with `supportedInterfaces`, `0.3` for older cards with a top-level `url`.
    pub card_version: String,
    /// Where to reach the agent, preferred first.
    pub interfaces: Vec<AgentInterface>,
    /// The agent's skills.
    pub skills: Vec<AgentSkill>,
    /// Default input media types.
    pub default_input_modes: Vec<String>,
    /// Default output media types.
    pub default_output_modes: Vec<String>,
    /// The explicit agent name (the card's `agent_id`, a Meridian extension), if it has one.
    pub explicit_name: Option<String>,
}

impl AgentCard {
    /// Parses and validates card JSON, reporting every problem found.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let invalid = |problem: String| ManifestError::InvalidCard {
            problems: vec![problem],
        };
        if text.len() > CARD_BYTES_MAX {
            return Err(invalid(format!(
                "card is {} bytes, over the limit of {CARD_BYTES_MAX}",
                text.len()
            )));
        }
        let object =
            JsonView::parse(text).map_err(|error| invalid(format!("not valid json: {error}")))?;
        if !object.is_object() {
            return Err(invalid("card is not a json object".into()));
        }
        let mut problems = Vec::new();
        let name = text_field(&object, "name", &mut problems, true);
        if object.get("name").is_some() && name.trim().is_empty() {
            problems.push("`name` is empty".into());
        }
        let description = text_field(&object, "description", &mut problems, false);
        let version = text_field(&object, "version", &mut problems, false);
        let (card_version, interfaces) = card_interfaces(&object, &mut problems);
        let skills = card_skills(&object, &mut problems);
        let default_input_modes = string_list(
            "defaultInputModes",
            object.get("defaultInputModes"),
            &mut problems,
        );
        let default_output_modes = string_list(
            "defaultOutputModes",
            object.get("defaultOutputModes"),
            &mut problems,
        );
        let explicit_name = card_agent_id(&object, &mut problems);
        if !problems.is_empty() {
            return Err(ManifestError::InvalidCard { problems });
        }
        Ok(Self {
            name,
            description,
            version,
            card_version,
            interfaces,
            skills,
            default_input_modes,
            default_output_modes,
            explicit_name,
        })
    }

    /// The agent key `{org}/{agent}` this card gets under `org`: the explicit `agent_id` if the
    /// card has one, otherwise the slug of its name.
    pub fn agent_id(&self, org: &str) -> Result<String, ManifestError> {
        let agent = match &self.explicit_name {
            Some(id) => match id.split_once('/') {
                Some((id_org, agent)) if id_org == org => agent.to_owned(),
                Some((id_org, _)) => {
                    return Err(ManifestError::Invalid(format!(
                        "card `agent_id` names org `{id_org}` but is published by `{org}`"
                    )));
                }
                None => id.clone(),
            },
            None => slug(&self.name),
        };
        check_name("agent name", &agent)?;
        Ok(format!("{org}/{agent}"))
    }
}

/// A card's text field; a problem when it is not a string, or missing and `required`.
fn text_field(
    object: &JsonView<'_>,
    field: &str,
    problems: &mut Vec<String>,
    required: bool,
) -> String {
    match object.get(field) {
        Some(JsonView::String(s)) => s.to_string(),
        None if !required => String::new(),
        None => {
            problems.push(format!("`{field}` is missing"));
            String::new()
        }
        Some(_) => {
            problems.push(format!("`{field}` is not a string"));
            String::new()
        }
    }
}

/// A card's list of strings (absent: empty); a problem for anything else.
fn string_list(
    field: &str,
    value: Option<&JsonView<'_>>,
    problems: &mut Vec<String>,
) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(JsonView::Array(items)) => items
            .iter()
            .filter_map(|item| match item.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    problems.push(format!("`{field}` holds a non-string"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(format!("`{field}` is not an array"));
            Vec::new()
        }
    }
}

/// The A2A version a card follows and its interfaces: `supportedInterfaces` (1.0), or `url`,
/// `preferredTransport` and `additionalInterfaces` (0.3); every URL must be http(s).
fn card_interfaces(
    object: &JsonView<'_>,
    problems: &mut Vec<String>,
) -> (String, Vec<AgentInterface>) {
    let mut interfaces = Vec::new();
    let card_version;
    if let Some(list) = object.get("supportedInterfaces") {
        card_version = "1.0".to_owned();
        match list.as_array() {
            Some(items) if !items.is_empty() => {
                for (index, item) in items.iter().enumerate() {
                    let url = item.get("url").and_then(|u| u.as_str());
                    let binding = item
                        .get("protocolBinding")
                        .and_then(|b| b.as_str())
                        .unwrap_or("JSONRPC");
                    match url {
                        Some(url) => interfaces.push(AgentInterface {
                            url: url.to_owned(),
                            protocol_binding: binding.to_owned(),
                        }),
                        None => problems.push(format!(
                            "`supportedInterfaces[{index}].url` is missing or not a string"
                        )),
                    }
                }
            }
            _ => problems.push("`supportedInterfaces` must be a non-empty array".into()),
        }
    } else if let Some(url) = object.get("url") {
        card_version = "0.3".to_owned();
        v03_interfaces(object, url, &mut interfaces, problems);
    } else {
        card_version = String::new();
        problems
            .push("card has neither `supportedInterfaces` (A2A 1.0) nor `url` (A2A 0.3)".into());
    }
    for interface in &interfaces {
        if !(interface.url.starts_with("https://") || interface.url.starts_with("http://")) {
            problems.push(format!("interface url `{}` is not http(s)", interface.url));
        }
    }
    (card_version, interfaces)
}

/// A2A v0.3 interfaces: `url` + `preferredTransport`, then `additionalInterfaces`.
fn v03_interfaces(
    object: &JsonView<'_>,
    url: &JsonView<'_>,
    interfaces: &mut Vec<AgentInterface>,
    problems: &mut Vec<String>,
) {
    match url.as_str() {
        Some(url) => interfaces.push(AgentInterface {
            url: url.to_owned(),
            protocol_binding: object
                .get("preferredTransport")
                .and_then(|t| t.as_str())
                .unwrap_or("JSONRPC")
                .to_owned(),
        }),
        None => problems.push("`url` is not a string".into()),
    }
    let Some(extra) = object
        .get("additionalInterfaces")
        .and_then(|a| a.as_array())
    else {
        return;
    };
    for item in extra {
        if let Some(url) = item.get("url").and_then(|u| u.as_str())
            && !interfaces.iter().any(|i| i.url == url)
        {
            interfaces.push(AgentInterface {
                url: url.to_owned(),
                protocol_binding: item
                    .get("transport")
                    .and_then(|t| t.as_str())
                    .unwrap_or("JSONRPC")
                    .to_owned(),
            });
        }
    }
}

/// A card's skills, each with an id; a problem for each that is not an object or has none.
fn card_skills(object: &JsonView<'_>, problems: &mut Vec<String>) -> Vec<AgentSkill> {
    let items = match object.get("skills") {
        None => return Vec::new(),
        Some(JsonView::Array(items)) => items,
        Some(_) => {
            problems.push("`skills` is not an array".into());
            return Vec::new();
        }
    };
    let mut skills = Vec::new();
    for (index, skill) in items.iter().enumerate() {
        if !skill.is_object() {
            problems.push(format!("`skills[{index}]` is not an object"));
            continue;
        }
        let id = skill.get("id").and_then(|i| i.as_str());
        if id.is_none() {
            problems.push(format!("`skills[{index}].id` is missing or not a string"));
        }
        skills.push(AgentSkill {
            id: id.unwrap_or_default().to_owned(),
            name: skill
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned(),
            tags: string_list("skills[].tags", skill.get("tags"), problems),
            input_modes: string_list("skills[].inputModes", skill.get("inputModes"), problems),
            output_modes: string_list("skills[].outputModes", skill.get("outputModes"), problems),
        });
    }
    skills
}

/// A card's own `agent_id` (`name` or `org/name`; the org part is checked against the
/// envelope later), if it has one.
fn card_agent_id(object: &JsonView<'_>, problems: &mut Vec<String>) -> Option<String> {
    match object.get("agent_id") {
        None => None,
        Some(JsonView::String(id)) => {
            let agent = id.rsplit('/').next().unwrap_or(id).to_owned();
            if let Err(problem) = check_name("agent name", &agent) {
                problems.push(format!("`agent_id`: {problem}"));
            }
            Some(id.to_string())
        }
        Some(_) => {
            problems.push("`agent_id` is not a string".into());
            None
        }
    }
}

/// The unsigned part of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBody {
    /// `{org}/{agent}`.
    pub agent_id: String,
    /// The organisation id.
    pub org: String,
    /// The region the agent is served from.
    pub region: String,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// The card JSON, exactly as published; empty in a removal.
    pub card: String,
    /// Whether this is a signed removal (a tombstone): the organisation withdraws the agent as
    /// of `updated_at`. A tombstone has no card; it beats every manifest of the agent with an
    /// older or equal `updated_at`, whoever publishes that, so a removed agent cannot be
    /// replayed. Encoded as `removed: true`, and absent from ordinary manifests (whose blocks
    /// are unchanged by its introduction).
    pub removed: bool,
    /// Set when the organisation deprecated the agent: it still answers and is still listed,
    /// but ranks below active agents and points callers to its successor, when it names one.
    /// Encoded as `deprecated: true` (and `superseded_by` with a successor), absent from
    /// active manifests, whose blocks are unchanged by its introduction.
    pub deprecation: Option<Deprecation>,
}

/// An agent's deprecation, signed into its manifest by the organisation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deprecation {
    /// The agent that replaces it (`{org}/{name}`, any organisation's), when there is one.
    pub superseded_by: Option<String>,
}

/// Where an agent is in its life, as its newest signed manifest says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Published and current.
    Active,
    /// Still published and answering, but withdrawn from new use by its organisation.
    Deprecated,
    /// Withdrawn: a signed removal (tombstone) stands in its place.
    Removed,
}

impl Lifecycle {
    /// The state's name in the API: `active`, `deprecated` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Removed => "removed",
        }
    }
}

/// A signed agent manifest and its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// What was signed.
    pub body: ManifestBody,
    /// The organisation key that signed it.
    pub signer: PublicKey,
    /// The ed25519 signature over [`Manifest::signing_bytes`].
    pub sig: [u8; 64],
}

impl ManifestBody {
    /// Builds a body from card JSON, deriving the agent id; reports every card problem.
    pub fn from_card(
        card: &str,
        org: &str,
        region: &str,
        updated_at: i64,
    ) -> Result<Self, ManifestError> {
        check_name("org", org)?;
        let parsed = AgentCard::parse(card)?;
        Ok(Self {
            agent_id: parsed.agent_id(org)?,
            org: org.to_owned(),
            region: region.to_owned(),
            updated_at,
            card: card.to_owned(),
            removed: false,
            deprecation: None,
        })
    }

    /// This body, deprecated by its organisation (pointing to `superseded_by` when given).
    /// A removal cannot be deprecated, and an agent cannot succeed itself.
    pub fn deprecate(mut self, superseded_by: Option<&str>) -> Result<Self, ManifestError> {
        if self.removed {
            return Err(ManifestError::Invalid(format!(
                "`{}` is a removal: only a published agent can be deprecated",
                self.agent_id
            )));
        }
        if let Some(successor) = superseded_by {
            check_successor(&self.agent_id, successor)?;
        }
        self.deprecation = Some(Deprecation {
            superseded_by: superseded_by.map(str::to_owned),
        });
        Ok(self)
    }

    /// Where the agent is in its life, as this body says.
    pub fn lifecycle(&self) -> Lifecycle {
        match (self.removed, &self.deprecation) {
            (true, _) => Lifecycle::Removed,
            (false, Some(_)) => Lifecycle::Deprecated,
            (false, None) => Lifecycle::Active,
        }
    }

    /// The body of a signed removal of `agent_id` (`{org}/{name}`) as of `updated_at`.
    pub fn tombstone(agent_id: &str, region: &str, updated_at: i64) -> Result<Self, ManifestError> {
        let (org, _) = split_agent_id(agent_id)?;
        Ok(Self {
            agent_id: agent_id.to_owned(),
            org: org.to_owned(),
            region: region.to_owned(),
            updated_at,
            card: String::new(),
            removed: true,
            deprecation: None,
        })
    }

    fn fields(&self, signer: &PublicKey) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("$type", Value::Text(MANIFEST_TYPE.into())),
            ("agent_id", Value::Text(self.agent_id.clone())),
            ("org", Value::Text(self.org.clone())),
            ("region", Value::Text(self.region.clone())),
            ("updated_at", Value::Integer(i128::from(self.updated_at))),
            ("card", Value::Text(self.card.clone())),
            ("signer", Value::Text(signer.to_did())),
        ];
        if self.removed {
            fields.push(("removed", Value::Bool(true)));
        }
        if let Some(deprecation) = &self.deprecation {
            fields.push(("deprecated", Value::Bool(true)));
            if let Some(successor) = &deprecation.superseded_by {
                fields.push(("superseded_by", Value::Text(successor.clone())));
            }
        }
        fields
    }

    /// Signs the body with an organisation key.
    pub fn sign(self, key: &Keypair) -> Manifest {
        let signer = key.public();
        let sig = key.sign(&signing_bytes(&self, &signer));
        Manifest {
            body: self,
            signer,
            sig,
        }
    }
}

/// Splits `{org}/{name}` and checks both parts against the naming rules.
pub fn split_agent_id(agent_id: &str) -> Result<(&str, &str), ManifestError> {
    let (org, name) = agent_id.split_once('/').ok_or_else(|| {
        ManifestError::Invalid(format!("agent id `{agent_id}` is not `org/name`"))
    })?;
    check_name("org", org)?;
    check_name("agent name", name)?;
    Ok((org, name))
}

/// Checks a successor's agent id: well formed, and not the deprecated agent itself.
fn check_successor(agent_id: &str, successor: &str) -> Result<(), ManifestError> {
    split_agent_id(successor)
        .map_err(|e| ManifestError::Invalid(format!("`superseded_by`: {e}")))?;
    if successor == agent_id {
        return Err(ManifestError::Invalid(format!(
            "`superseded_by` names `{agent_id}` itself"
        )));
    }
    Ok(())
}

fn signing_bytes(body: &ManifestBody, signer: &PublicKey) -> Vec<u8> {
    let map = body
        .fields(signer)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    cbor::encode(&Value::Map(map))
}

/// A manifest block's fields, borrowed from the block: what snapshot verification reads from
/// each of a registry's manifests without copying their cards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ManifestFields<'a> {
    pub(crate) agent_id: &'a str,
    pub(crate) org: &'a str,
    pub(crate) region: &'a str,
    pub(crate) updated_at: i64,
    pub(crate) card: &'a str,
    pub(crate) removed: bool,
    pub(crate) deprecated: bool,
    pub(crate) superseded_by: Option<&'a str>,
    pub(crate) signer: PublicKey,
    pub(crate) sig: [u8; 64],
}

impl<'a> ManifestFields<'a> {
    /// Decodes a manifest block and checks everything but the signature: size, canonical
    /// encoding, shape, naming rules, the card, and that the card gives the stated agent id.
    /// A removal (tombstone) has no card: `None` in its place, and its agent id is checked
    /// against the naming rules alone.
    pub(crate) fn decode(
        block: &'a [u8],
        keys: &mut KeyCache,
    ) -> Result<(Self, Option<AgentCard>), ManifestError> {
        if block.len() > MANIFEST_BYTES_MAX {
            return Err(ManifestError::TooLarge {
                size: block.len(),
                max: MANIFEST_BYTES_MAX,
            });
        }
        let mut reader = cbor::MapRefReader::new(cbor::decode_ref(block)?)?;
        let kind = reader.text("$type")?;
        if kind != MANIFEST_TYPE {
            return Err(ManifestError::Invalid(format!(
                "`$type` is `{kind}`, expected `{MANIFEST_TYPE}`"
            )));
        }
        let agent_id = reader.text("agent_id")?;
        let org = reader.text("org")?;
        let region = reader.text("region")?;
        let updated_at = reader.i64("updated_at")?;
        let card_text = reader.text("card")?;
        let signer = keys.parse(reader.text("signer")?)?;
        let sig: [u8; 64] = reader
            .bytes("sig")?
            .try_into()
            .map_err(|_| ManifestError::Invalid("`sig` is not 64 bytes".into()))?;
        // Present only in a removal, and then `true`: one encoding per document.
        let removed = match reader.take_optional("removed") {
            None => false,
            Some(cbor::ValueRef::Bool(true)) => true,
            Some(_) => {
                return Err(ManifestError::Invalid(
                    "`removed` must be `true` when present".into(),
                ));
            }
        };
        let (deprecated, superseded_by) = Self::decode_deprecation(&mut reader, removed)?;
        reader.finish()?;
        check_name("org", org)?;
        let card = if removed {
            if !card_text.is_empty() {
                return Err(ManifestError::Invalid(
                    "a removal carries no card: `card` must be empty".into(),
                ));
            }
            let (id_org, _) = split_agent_id(agent_id)?;
            if id_org != org {
                return Err(ManifestError::Invalid(format!(
                    "`agent_id` `{agent_id}` is not under org `{org}`"
                )));
            }
            None
        } else {
            let card = AgentCard::parse(card_text)?;
            let expected = card.agent_id(org)?;
            if expected != agent_id {
                return Err(ManifestError::Invalid(format!(
                    "`agent_id` is `{agent_id}` but the card under org `{org}` gives `{expected}`"
                )));
            }
            Some(card)
        };
        let fields = Self {
            agent_id,
            org,
            region,
            updated_at,
            card: card_text,
            removed,
            deprecated,
            superseded_by,
            signer,
            sig,
        };
        if let Some(successor) = superseded_by {
            check_successor(agent_id, successor)?;
        }
        Ok((fields, card))
    }

    /// Reads `deprecated` (present only as `true`) and `superseded_by` (only with it), and
    /// refuses them on a removal.
    fn decode_deprecation(
        reader: &mut cbor::MapRefReader<'a>,
        removed: bool,
    ) -> Result<(bool, Option<&'a str>), ManifestError> {
        let deprecated = match reader.take_optional("deprecated") {
            None => false,
            Some(cbor::ValueRef::Bool(true)) => true,
            Some(_) => {
                return Err(ManifestError::Invalid(
                    "`deprecated` must be `true` when present".into(),
                ));
            }
        };
        let superseded_by = match reader.take_optional("superseded_by") {
            None => None,
            Some(cbor::ValueRef::Text(successor)) if deprecated => Some(successor),
            Some(cbor::ValueRef::Text(_)) => {
                return Err(ManifestError::Invalid(
                    "`superseded_by` without `deprecated`".into(),
                ));
            }
            Some(_) => {
                return Err(ManifestError::Invalid(
                    "`superseded_by` is not a string".into(),
                ));
            }
        };
        if removed && deprecated {
            return Err(ManifestError::Invalid(
                "a removal cannot also be deprecated".into(),
            ));
        }
        Ok((deprecated, superseded_by))
    }

    /// The owned manifest.
    pub(crate) fn to_manifest(self) -> Manifest {
        Manifest {
            body: ManifestBody {
                agent_id: self.agent_id.to_owned(),
                org: self.org.to_owned(),
                region: self.region.to_owned(),
                updated_at: self.updated_at,
                card: self.card.to_owned(),
                removed: self.removed,
                deprecation: self.deprecated.then(|| Deprecation {
                    superseded_by: self.superseded_by.map(str::to_owned),
                }),
            },
            signer: self.signer,
            sig: self.sig,
        }
    }

    /// The signed bytes, cut from `block` (the block these fields were decoded from) instead
    /// of encoded again. In canonical key order (length first, then bytewise) the top-level map
    /// starts with `org` and then `sig`, so the signed map is the block with its header's count
    /// lowered by one and the 70-byte `sig` entry removed (8 entries in a manifest, one more
    /// for each of `removed`, `deprecated` and `superseded_by` present). Falls back to encoding the fields again if the block does not have that layout.
    pub(crate) fn signing_bytes(&self, block: &[u8]) -> Vec<u8> {
        // Header of the org value: 1 byte below 24 bytes of text, 2 bytes otherwise (names are
        // at most 64 bytes).
        let org_header = if self.org.len() < 24 { 1 } else { 2 };
        let sig_start = 1 + 4 + org_header + self.org.len();
        let sig_len = 4 + 2 + 64;
        let expected_entry: &[u8] = &[0x63, b's', b'i', b'g', 0x58, 0x40];
        let optional = [self.removed, self.deprecated, self.superseded_by.is_some()];
        let header = 0xa8 + optional.iter().filter(|present| **present).count() as u8;
        if block.first() != Some(&header)
            || block.get(sig_start..sig_start + expected_entry.len()) != Some(expected_entry)
            || block.len() < sig_start + sig_len
        {
            return self.to_manifest().signing_bytes();
        }
        let mut out = Vec::with_capacity(block.len() - sig_len);
        out.push(header - 1);
        out.extend_from_slice(&block[1..sig_start]);
        out.extend_from_slice(&block[sig_start + sig_len..]);
        out
    }
}

impl Manifest {
    /// The bytes the signature covers: the canonical encoding of every field but `sig`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(&self.body, &self.signer)
    }

    /// The manifest's block.
    pub fn to_block(&self) -> Vec<u8> {
        let mut map: std::collections::BTreeMap<String, Value> = self
            .body
            .fields(&self.signer)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        map.insert("sig".into(), Value::Bytes(self.sig.to_vec()));
        cbor::encode(&Value::Map(map))
    }

    /// The manifest's block and CID.
    pub fn to_block_and_cid(&self) -> (Cid, Vec<u8>) {
        let block = self.to_block();
        (ids::dag_cbor_cid(&block), block)
    }

    /// Decodes a manifest block and checks everything but the signature: canonical encoding,
    /// shape, naming rules, and the card. Signatures are checked separately (in batches).
    pub fn decode(block: &[u8]) -> Result<Self, ManifestError> {
        Self::decode_with(block, &mut KeyCache::new())
    }

    /// [`Manifest::decode`] with a cache of parsed signer keys, for decoding many manifests.
    pub fn decode_with(block: &[u8], keys: &mut KeyCache) -> Result<Self, ManifestError> {
        Self::decode_with_card(block, keys).map(|(manifest, _)| manifest)
    }

    /// [`Manifest::decode_with`], also returning the card it parsed to check the manifest, so a
    /// caller that needs the card does not parse it again (`None` for a removal).
    pub fn decode_with_card(
        block: &[u8],
        keys: &mut KeyCache,
    ) -> Result<(Self, Option<AgentCard>), ManifestError> {
        let (fields, card) = ManifestFields::decode(block, keys)?;
        Ok((fields.to_manifest(), card))
    }

    /// Checks the signature alone.
    pub fn verify_signature(&self) -> Result<(), ManifestError> {
        self.signer
            .verify(&self.signing_bytes(), &self.sig)
            .map_err(ManifestError::from)
    }

    /// The parsed, normalised card; a removal has none and gives an error saying so.
    pub fn card(&self) -> Result<AgentCard, ManifestError> {
        if self.body.removed {
            return Err(ManifestError::Invalid(format!(
                "`{}` is a removal: it has no card",
                self.body.agent_id
            )));
        }
        AgentCard::parse(&self.body.card)
    }

    /// Whether this is a signed removal (tombstone).
    pub fn is_removal(&self) -> bool {
        self.body.removed
    }

    /// Where the agent is in its life, as this manifest says.
    pub fn lifecycle(&self) -> Lifecycle {
        self.body.lifecycle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"name":"Travel Planner!","description":"plans","version":"1.2.0",
      "supportedInterfaces":[{"url":"https://agents.example/travel","protocolBinding":"JSONRPC"}],
      "skills":[{"id":"plan","name":"Plan","tags":["travel"]}],
      "defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}"#;
    const V03: &str = r#"{"name":"Old Agent","url":"https://old.example/a2a","preferredTransport":"JSONRPC",
      "additionalInterfaces":[{"url":"https://old.example/grpc","transport":"GRPC"}],"skills":[]}"#;

    #[test]
    fn slug_rules() {
        assert_eq!(slug("Travel Planner!"), "travel-planner");
        assert_eq!(slug("  --A__b  C-- "), "a-b-c");
        assert_eq!(slug("Ünïcode 42"), "n-code-42");
        assert_eq!(slug("!!!"), "");
    }

    #[test]
    fn v1_and_v03_cards_normalise() {
        let card = AgentCard::parse(V1).unwrap();
        assert_eq!(card.card_version, "1.0");
        assert_eq!(card.agent_id("acme").unwrap(), "acme/travel-planner");
        let old = AgentCard::parse(V03).unwrap();
        assert_eq!(old.card_version, "0.3");
        assert_eq!(old.interfaces.len(), 2);
        assert_eq!(old.interfaces[1].protocol_binding, "GRPC");
    }

    #[test]
    fn invalid_card_lists_every_problem() {
        let err = AgentCard::parse(r#"{"name": 5, "skills": "x", "defaultInputModes": [1]}"#)
            .unwrap_err();
        let ManifestError::InvalidCard { problems } = err else {
            panic!("wrong error")
        };
        assert!(problems.len() >= 4, "{problems:?}");
        assert!(AgentCard::parse("[]").is_err());
        assert!(AgentCard::parse(&"x".repeat(CARD_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn signed_manifest_round_trips_and_keeps_card_text() {
        let key = Keypair::from_secret(&[9; 32]);
        let manifest = ManifestBody::from_card(V1, "acme", "eu-west", 1_700_000_000)
            .unwrap()
            .sign(&key);
        let (_, block) = manifest.to_block_and_cid();
        let decoded = Manifest::decode(&block).unwrap();
        assert_eq!(decoded, manifest);
        assert_eq!(decoded.body.card, V1);
        decoded.verify_signature().unwrap();
        let mut keys = KeyCache::new();
        let cut = |block: &[u8], keys: &mut KeyCache| {
            ManifestFields::decode(block, keys)
                .unwrap()
                .0
                .signing_bytes(block)
        };
        assert_eq!(cut(&block, &mut keys), decoded.signing_bytes());
        let long_org = "o".repeat(NAME_BYTES_MAX);
        let body = ManifestBody::from_card(V1, &long_org, "eu-west", 1).unwrap();
        let manifest = body.sign(&key);
        assert_eq!(
            cut(&manifest.to_block(), &mut keys),
            manifest.signing_bytes()
        );
    }

    #[test]
    fn tampered_manifest_fails_signature() {
        let key = Keypair::from_secret(&[9; 32]);
        let mut manifest = ManifestBody::from_card(V1, "acme", "eu-west", 1)
            .unwrap()
            .sign(&key);
        manifest.body.region = "us-east".into();
        assert!(manifest.verify_signature().is_err());
    }

    /// A manifest block's top-level map.
    type Fields = std::collections::BTreeMap<String, Value>;

    /// `block` with its map edited, encoded canonically again and decoded.
    fn reencoded(block: &[u8], edit: &dyn Fn(&mut Fields)) -> Result<Manifest, ManifestError> {
        let Value::Map(mut map) = cbor::decode(block).unwrap() else {
            unreachable!()
        };
        edit(&mut map);
        Manifest::decode(&cbor::encode(&Value::Map(map)))
    }

    /// Asserts `result` is `ManifestError::Invalid` with a message containing `needle`.
    fn expect_invalid<T: std::fmt::Debug>(result: Result<T, ManifestError>, needle: &str) {
        match result {
            Err(ManifestError::Invalid(message)) => {
                assert!(message.contains(needle), "{message}")
            }
            other => panic!("expected Invalid({needle}), got {other:?}"),
        }
    }

    #[test]
    fn a_removal_is_signed_without_a_card_and_checked_on_decode() {
        let key = Keypair::from_secret(&[9; 32]);
        let removal = ManifestBody::tombstone("acme/travel-planner", "eu-west", 1_700_000_100)
            .unwrap()
            .sign(&key);
        assert!(removal.is_removal());
        let block = removal.to_block();
        assert_eq!(block[0], 0xa9, "nine entries: `removed` is encoded");
        let (decoded, card) = Manifest::decode_with_card(&block, &mut KeyCache::new()).unwrap();
        assert_eq!(decoded, removal);
        assert!(card.is_none());
        decoded.verify_signature().unwrap();
        assert!(matches!(decoded.card(), Err(ManifestError::Invalid(m)) if m.contains("removal")));
        let (fields, _) = ManifestFields::decode(&block, &mut KeyCache::new()).unwrap();
        assert_eq!(fields.signing_bytes(&block), removal.signing_bytes());
        // An ordinary manifest's block does not mention `removed` at all.
        let manifest = ManifestBody::from_card(V1, "acme", "eu-west", 1)
            .unwrap()
            .sign(&key);
        assert_eq!(manifest.to_block()[0], 0xa8);
        // Turning a removal into a manifest (or back) breaks the signature.
        let mut flipped = removal.clone();
        flipped.body.removed = false;
        flipped.body.card = V1.into();
        assert!(flipped.verify_signature().is_err());

        let reencode = |edit: &dyn Fn(&mut Fields)| reencoded(&block, edit);
        let invalid = expect_invalid::<Manifest>;
        invalid(
            reencode(&|m| {
                m.insert("removed".into(), Value::Bool(false));
            }),
            "must be `true`",
        );
        invalid(
            reencode(&|m| {
                m.insert("card".into(), Value::Text(V1.into()));
            }),
            "no card",
        );
        invalid(
            reencode(&|m| {
                m.insert(
                    "agent_id".into(),
                    Value::Text("globex/travel-planner".into()),
                );
            }),
            "not under org",
        );
        invalid(
            reencode(&|m| {
                m.insert("agent_id".into(), Value::Text("acme/Bad Name".into()));
            }),
            "agent name",
        );
        assert!(matches!(
            ManifestBody::tombstone("no-slash", "eu", 1),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn a_deprecation_is_signed_into_the_manifest_and_checked_on_decode() {
        let key = Keypair::from_secret(&[9; 32]);
        let body = ManifestBody::from_card(V1, "acme", "eu-west", 2).unwrap();
        assert_eq!(body.lifecycle(), Lifecycle::Active);
        for (successor, entries) in [(None, 0xa9), (Some("globex/planner-2"), 0xaa)] {
            let deprecated = body.clone().deprecate(successor).unwrap().sign(&key);
            assert_eq!(deprecated.lifecycle(), Lifecycle::Deprecated);
            let block = deprecated.to_block();
            assert_eq!(
                block[0], entries,
                "`deprecated` and `superseded_by` are encoded"
            );
            let (decoded, card) = Manifest::decode_with_card(&block, &mut KeyCache::new()).unwrap();
            assert_eq!(decoded, deprecated);
            assert!(card.is_some(), "a deprecated agent keeps its card");
            decoded.verify_signature().unwrap();
            let (fields, _) = ManifestFields::decode(&block, &mut KeyCache::new()).unwrap();
            assert_eq!(fields.signing_bytes(&block), deprecated.signing_bytes());
            // Undoing the deprecation, or changing the successor, breaks the signature.
            let mut undone = deprecated.clone();
            undone.body.deprecation = None;
            assert!(undone.verify_signature().is_err());
            let mut redirected = deprecated.clone();
            redirected.body.deprecation = Some(Deprecation {
                superseded_by: Some("mallory/trap".into()),
            });
            assert!(redirected.verify_signature().is_err());
        }
        let invalid = expect_invalid::<ManifestBody>;
        invalid(
            body.clone().deprecate(Some("acme/travel-planner")),
            "itself",
        );
        invalid(body.clone().deprecate(Some("no-slash")), "superseded_by");
        let removal = ManifestBody::tombstone("acme/travel-planner", "eu", 3).unwrap();
        invalid(removal.deprecate(None), "only a published agent");

        let block = body.deprecate(None).unwrap().sign(&key).to_block();
        let reencode = |edit: &dyn Fn(&mut Fields)| reencoded(&block, edit);
        let refused = expect_invalid::<Manifest>;
        refused(
            reencode(&|m| {
                m.insert("deprecated".into(), Value::Bool(false));
            }),
            "`deprecated` must be `true`",
        );
        refused(
            reencode(&|m| {
                m.remove("deprecated");
                m.insert("superseded_by".into(), Value::Text("acme/next".into()));
            }),
            "without `deprecated`",
        );
        refused(
            reencode(&|m| {
                m.insert("superseded_by".into(), Value::Integer(7));
            }),
            "not a string",
        );
        refused(
            reencode(&|m| {
                m.insert(
                    "superseded_by".into(),
                    Value::Text("acme/travel-planner".into()),
                );
            }),
            "itself",
        );
        refused(
            reencode(&|m| {
                m.insert("removed".into(), Value::Bool(true));
                m.insert("card".into(), Value::Text(String::new()));
            }),
            "cannot also be deprecated",
        );
    }

    #[test]
    fn agent_id_must_match_card() {
        let key = Keypair::from_secret(&[9; 32]);
        let mut body = ManifestBody::from_card(V1, "acme", "eu-west", 1).unwrap();
        body.agent_id = "acme/other".into();
        let block = body.sign(&key).to_block();
        assert!(matches!(
            Manifest::decode(&block),
            Err(ManifestError::Invalid(_))
        ));
    }
}
