//! Strict DAG-CBOR: the one byte encoding of every Meridian document.
//!
//! Encoding always produces the canonical form (map keys sorted length-first then bytewise,
//! smallest integer and length encodings, CIDs as tag 42, definite lengths only). Decoding accepts
//! only that form, so one document has exactly one byte string and therefore one CID. The
//! CBOR header layer (major types and arguments) is `ciborium-ll`; the strictness checks are ours,
//! because ciborium's value type forgets how wide an argument was on the wire.
//!
//! Meridian follows the atproto data model: no floats, integers in `[-2^64, 2^64 - 1]`,
//! map keys are text.

use std::collections::BTreeMap;
use std::fmt;

use ciborium_io::Write as _;
use ciborium_ll::{Decoder, Encoder, Header, simple};
use cid::Cid;

/// Deepest nesting of arrays and maps that [`decode`] accepts, so hostile input cannot exhaust
/// the stack.
pub const NESTING_DEPTH_MAX: usize = 64;

/// Items an array or map reserves room for before any of them is read. A header may claim up to
/// one item per remaining input byte; reserving that much at every nesting level let a 1 MiB
/// block make the decoder reserve gigabytes, so the rest grows as items actually arrive.
pub const PREALLOCATED_ITEMS_MAX: usize = 64;

/// The CBOR tag for a CID link in DAG-CBOR.
const TAG_CID: u64 = 42;

/// A value of the DAG-CBOR data model as Meridian uses it.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// CBOR `null`.
    Null,
    /// CBOR `true` or `false`.
    Bool(bool),
    /// An integer in `[-2^64, 2^64 - 1]`.
    Integer(i128),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A UTF-8 text string.
    Text(String),
    /// An array.
    Array(Vec<Value>),
    /// A map with text keys; encoded in canonical key order whatever the insertion order.
    Map(BTreeMap<String, Value>),
    /// A CID link (tag 42).
    Link(Cid),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "bytes({})", b.len()),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Map(m) => f.debug_map().entries(m).finish(),
            Value::Link(c) => write!(f, "link({c})"),
        }
    }
}

/// Why bytes were refused as DAG-CBOR. Every variant names the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside an item.
    #[error("truncated input at byte {offset}")]
    Truncated {
        /// Byte offset where more input was expected.
        offset: usize,
    },
    /// The bytes are not CBOR at all.
    #[error("malformed cbor at byte {offset}")]
    Malformed {
        /// Byte offset of the bad header.
        offset: usize,
    },
    /// An integer, length or tag used more bytes than needed.
    #[error("non-minimal integer or length encoding at byte {offset}")]
    NonMinimal {
        /// Byte offset of the header.
        offset: usize,
    },
    /// An indefinite-length string, array or map.
    #[error("indefinite-length item at byte {offset}")]
    IndefiniteLength {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A floating point number; the Meridian data model has none.
    #[error("floating point number at byte {offset} (not allowed)")]
    Float {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A simple value other than true, false and null.
    #[error("unsupported simple value {value} at byte {offset}")]
    UnsupportedSimple {
        /// The simple value.
        value: u8,
        /// Byte offset of the header.
        offset: usize,
    },
    /// A tag other than 42.
    #[error("unsupported tag {tag} at byte {offset}")]
    UnsupportedTag {
        /// The tag number.
        tag: u64,
        /// Byte offset of the header.
        offset: usize,
    },
    /// Tag 42 whose content is not a 0x00-prefixed canonical binary CID.
    #[error("invalid cid link at byte {offset}: {reason}")]
    InvalidLink {
        /// Byte offset of the link's bytes.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// A text string that is not UTF-8.
    #[error("text at byte {offset} is not valid utf-8")]
    InvalidUtf8 {
        /// Byte offset of the string.
        offset: usize,
    },
    /// A map key that is not a text string.
    #[error("map key at byte {offset} is not a text string")]
    NonTextKey {
        /// Byte offset of the key.
        offset: usize,
    },
    /// Map keys not in canonical order (length first, then bytewise), or repeated.
    #[error("map key {key:?} at byte {offset} is out of canonical order or repeated")]
    KeyOrder {
        /// The offending key.
        key: String,
        /// Byte offset of the key.
        offset: usize,
    },
    /// Arrays and maps nested deeper than [`NESTING_DEPTH_MAX`].
    #[error("nesting deeper than {max} at byte {offset}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Byte offset where it was exceeded.
        offset: usize,
    },
    /// A declared length larger than what is left of the input.
    #[error("declared length {declared} at byte {offset} exceeds the {remaining} bytes left")]
    LengthExceedsInput {
        /// The declared length or count.
        declared: u64,
        /// Bytes left in the input.
        remaining: usize,
        /// Byte offset of the header.
        offset: usize,
    },
    /// Bytes left after the single top-level item.
    #[error("{extra} trailing bytes after the item")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Encodes a value in canonical DAG-CBOR.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_into(value, &mut out);
    out
}

/// Appends the canonical DAG-CBOR encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    let mut encoder = Encoder::from(&mut *out);
    write_value(&mut encoder, value);
}

fn write_value(encoder: &mut Encoder<&mut Vec<u8>>, value: &Value) {
    // Writing into a Vec cannot fail; `ciborium-io`'s Vec writer is infallible.
    let push = |encoder: &mut Encoder<&mut Vec<u8>>, header: Header| {
        let _ = encoder.push(header);
    };
    match value {
        Value::Null => push(encoder, Header::Simple(simple::NULL)),
        Value::Bool(false) => push(encoder, Header::Simple(simple::FALSE)),
        Value::Bool(true) => push(encoder, Header::Simple(simple::TRUE)),
        Value::Integer(n) => {
            if *n >= 0 {
                push(encoder, Header::Positive(*n as u64));
            } else {
                push(encoder, Header::Negative((-1 - *n) as u64));
            }
        }
        Value::Bytes(bytes) => {
            push(encoder, Header::Bytes(Some(bytes.len())));
            let _ = encoder.write_all(bytes);
        }
        Value::Text(text) => {
            push(encoder, Header::Text(Some(text.len())));
            let _ = encoder.write_all(text.as_bytes());
        }
        Value::Array(items) => {
            push(encoder, Header::Array(Some(items.len())));
            for item in items {
                write_value(encoder, item);
            }
        }
        Value::Map(map) => {
            push(encoder, Header::Map(Some(map.len())));
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| canonical_key_order(a, b));
            for key in keys {
                push(encoder, Header::Text(Some(key.len())));
                let _ = encoder.write_all(key.as_bytes());
                write_value(encoder, &map[key]);
            }
        }
        Value::Link(cid) => {
            let bytes = cid.to_bytes();
            push(encoder, Header::Tag(TAG_CID));
            push(encoder, Header::Bytes(Some(bytes.len() + 1)));
            let _ = encoder.write_all(&[0u8]);
            let _ = encoder.write_all(&bytes);
        }
    }
}

/// DAG-CBOR's map key order: shorter keys first, then bytewise.
pub fn canonical_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A decoded value that borrows its strings and byte strings from the input: what
/// [`decode_ref`] returns, so hot decoders (manifests, tree nodes) read fields without copying.
#[derive(Clone, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// CBOR `null`.
    Null,
    /// CBOR `true` or `false`.
    Bool(bool),
    /// An integer in `[-2^64, 2^64 - 1]`.
    Integer(i128),
    /// A byte string.
    Bytes(&'a [u8]),
    /// A UTF-8 text string.
    Text(&'a str),
    /// An array.
    Array(Vec<ValueRef<'a>>),
    /// A map, its keys in canonical order (the decoder refuses any other).
    Map(Vec<(&'a str, ValueRef<'a>)>),
    /// A CID link (tag 42).
    Link(Cid),
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_owned_value(), f)
    }
}

impl ValueRef<'_> {
    /// The owned [`Value`] with the same content.
    pub fn to_owned_value(&self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(*b),
            ValueRef::Integer(n) => Value::Integer(*n),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::Text(t) => Value::Text((*t).to_owned()),
            ValueRef::Array(items) => {
                Value::Array(items.iter().map(ValueRef::to_owned_value).collect())
            }
            ValueRef::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_owned_value()))
                    .collect(),
            ),
            ValueRef::Link(cid) => Value::Link(*cid),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Bool(_) => "bool",
            ValueRef::Integer(_) => "integer",
            ValueRef::Bytes(_) => "bytes",
            ValueRef::Text(_) => "text",
            ValueRef::Array(_) => "array",
            ValueRef::Map(_) => "map",
            ValueRef::Link(_) => "link",
        }
    }
}

/// Decodes exactly one canonical DAG-CBOR item from `bytes`, refusing anything non-canonical.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    decode_ref(bytes).map(|value| value.to_owned_value())
}

/// [`decode`] without copying: strings and byte strings borrow from `bytes`. The same checks
/// apply (the two share one reader).
pub fn decode_ref(bytes: &[u8]) -> Result<ValueRef<'_>, DecodeError> {
    let mut reader = StrictReader {
        input: bytes,
        position: 0,
    };
    let value = reader.read_value(0)?;
    if reader.position != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - reader.position,
        });
    }
    Ok(value)
}

/// The strict reader: `ciborium-ll` parses each header; the canonical-form checks are ours, and
/// bodies are sliced out of the input rather than copied.
struct StrictReader<'a> {
    input: &'a [u8],
    position: usize,
}

/// Bytes a header with argument `n` takes in its minimal form.
fn minimal_header_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

impl<'a> StrictReader<'a> {
    fn remaining(&self) -> usize {
        self.input.len() - self.position
    }

    fn pull(&mut self) -> Result<(Header, usize, usize), DecodeError> {
        let start = self.position;
        let mut decoder = Decoder::from(&self.input[start..]);
        let header = decoder.pull().map_err(|error| match error {
            ciborium_ll::Error::Io(_) => DecodeError::Truncated { offset: start },
            ciborium_ll::Error::Syntax(offset) => DecodeError::Malformed {
                offset: start + offset,
            },
        })?;
        let used = decoder.offset();
        self.position += used;
        Ok((header, start, used))
    }

    fn check_minimal(argument: u64, used: usize, offset: usize) -> Result<(), DecodeError> {
        if used == minimal_header_len(argument) {
            Ok(())
        } else {
            Err(DecodeError::NonMinimal { offset })
        }
    }

    fn read_body(&mut self, len: usize, offset: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if len > remaining {
            return Err(DecodeError::LengthExceedsInput {
                declared: len as u64,
                remaining,
                offset,
            });
        }
        let body = &self.input[self.position..self.position + len];
        self.position += len;
        Ok(body)
    }

    fn read_text(&mut self, len: usize, offset: usize) -> Result<&'a str, DecodeError> {
        let body = self.read_body(len, offset)?;
        std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8 { offset })
    }

    fn check_count(&self, count: usize, offset: usize) -> Result<(), DecodeError> {
        // Every item takes at least one byte, so a count above what is left is a lie.
        let remaining = self.remaining();
        if count > remaining {
            return Err(DecodeError::LengthExceedsInput {
                declared: count as u64,
                remaining,
                offset,
            });
        }
        Ok(())
    }

    fn read_value(&mut self, depth: usize) -> Result<ValueRef<'a>, DecodeError> {
        let (header, offset, used) = self.pull()?;
        match header {
            Header::Positive(n) => {
                Self::check_minimal(n, used, offset)?;
                Ok(ValueRef::Integer(i128::from(n)))
            }
            Header::Negative(n) => {
                Self::check_minimal(n, used, offset)?;
                Ok(ValueRef::Integer(-1 - i128::from(n)))
            }
            Header::Float(_) => Err(DecodeError::Float { offset }),
            Header::Simple(value) => {
                if used != 1 {
                    return Err(DecodeError::NonMinimal { offset });
                }
                match value {
                    simple::FALSE => Ok(ValueRef::Bool(false)),
                    simple::TRUE => Ok(ValueRef::Bool(true)),
                    simple::NULL => Ok(ValueRef::Null),
                    other => Err(DecodeError::UnsupportedSimple {
                        value: other,
                        offset,
                    }),
                }
            }
            Header::Break => Err(DecodeError::IndefiniteLength { offset }),
            Header::Bytes(None) | Header::Text(None) | Header::Array(None) | Header::Map(None) => {
                Err(DecodeError::IndefiniteLength { offset })
            }
            Header::Bytes(Some(len)) => {
                Self::check_minimal(len as u64, used, offset)?;
                Ok(ValueRef::Bytes(self.read_body(len, offset)?))
            }
            Header::Text(Some(len)) => {
                Self::check_minimal(len as u64, used, offset)?;
                Ok(ValueRef::Text(self.read_text(len, offset)?))
            }
            Header::Array(Some(count)) => {
                Self::check_minimal(count as u64, used, offset)?;
                self.check_depth(depth, offset)?;
                self.check_count(count, offset)?;
                let mut items = Vec::with_capacity(count.min(PREALLOCATED_ITEMS_MAX));
                for _ in 0..count {
                    items.push(self.read_value(depth + 1)?);
                }
                Ok(ValueRef::Array(items))
            }
            Header::Map(Some(count)) => {
                Self::check_minimal(count as u64, used, offset)?;
                self.read_map(count, depth, offset)
            }
            Header::Tag(tag) => {
                Self::check_minimal(tag, used, offset)?;
                if tag != TAG_CID {
                    return Err(DecodeError::UnsupportedTag { tag, offset });
                }
                self.read_link()
            }
        }
    }

    /// The `count` entries of a map at `offset`: text keys, each in canonical order after the
    /// one before, and their values.
    fn read_map(
        &mut self,
        count: usize,
        depth: usize,
        offset: usize,
    ) -> Result<ValueRef<'a>, DecodeError> {
        self.check_depth(depth, offset)?;
        self.check_count(count.saturating_mul(2), offset)?;
        let mut entries: Vec<(&'a str, ValueRef<'a>)> =
            Vec::with_capacity(count.min(PREALLOCATED_ITEMS_MAX));
        for _ in 0..count {
            let (key_header, key_offset, key_used) = self.pull()?;
            let key = match key_header {
                Header::Text(Some(len)) => {
                    Self::check_minimal(len as u64, key_used, key_offset)?;
                    self.read_text(len, key_offset)?
                }
                Header::Text(None) => {
                    return Err(DecodeError::IndefiniteLength { offset: key_offset });
                }
                _ => return Err(DecodeError::NonTextKey { offset: key_offset }),
            };
            if let Some((previous, _)) = entries.last()
                && canonical_key_order(previous, key) != std::cmp::Ordering::Less
            {
                return Err(DecodeError::KeyOrder {
                    key: key.to_owned(),
                    offset: key_offset,
                });
            }
            let value = self.read_value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(ValueRef::Map(entries))
    }

    /// The byte string inside a tag 42, as a CID link.
    fn read_link(&mut self) -> Result<ValueRef<'a>, DecodeError> {
        let (inner, inner_offset, inner_used) = self.pull()?;
        let len = match inner {
            Header::Bytes(Some(len)) => len,
            _ => {
                return Err(DecodeError::InvalidLink {
                    offset: inner_offset,
                    reason: "tag 42 must wrap a byte string".into(),
                });
            }
        };
        Self::check_minimal(len as u64, inner_used, inner_offset)?;
        let body = self.read_body(len, inner_offset)?;
        parse_link(body)
            .map(ValueRef::Link)
            .map_err(|reason| DecodeError::InvalidLink {
                offset: inner_offset,
                reason,
            })
    }

    fn check_depth(&self, depth: usize, offset: usize) -> Result<(), DecodeError> {
        if depth >= NESTING_DEPTH_MAX {
            Err(DecodeError::TooDeep {
                max: NESTING_DEPTH_MAX,
                offset,
            })
        } else {
            Ok(())
        }
    }
}

fn parse_link(body: &[u8]) -> Result<Cid, String> {
    let Some((&0, cid_bytes)) = body.split_first() else {
        return Err("missing the 0x00 multibase prefix".into());
    };
    let cid = Cid::try_from(cid_bytes).map_err(|error| format!("not a cid: {error}"))?;
    if cid.version() != cid::Version::V1 {
        return Err("only cid version 1 is allowed".into());
    }
    if cid.to_bytes() != cid_bytes {
        return Err("cid bytes are not in canonical form".into());
    }
    Ok(cid)
}

/// Why a decoded document does not have the shape its type needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The top level is not a map.
    #[error("expected a map")]
    NotAMap,
    /// A required field is absent.
    #[error("missing field `{field}`")]
    Missing {
        /// The field name.
        field: &'static str,
    },
    /// A field has the wrong type or an out-of-range value.
    #[error("field `{field}`: {problem}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A field the document type does not define.
    #[error("unknown field `{field}`")]
    Unknown {
        /// The field name.
        field: String,
    },
}

/// Takes typed fields out of a decoded map, so document decoders read like their schema and
/// report the field at fault.
pub struct MapReader {
    map: BTreeMap<String, Value>,
}

impl MapReader {
    /// Starts reading a decoded value that must be a map.
    pub fn new(value: Value) -> Result<Self, ShapeError> {
        match value {
            Value::Map(map) => Ok(Self { map }),
            _ => Err(ShapeError::NotAMap),
        }
    }

    /// Removes and returns a field, or `None` when it is absent.
    pub fn take_optional(&mut self, field: &'static str) -> Option<Value> {
        self.map.remove(field)
    }

    /// Removes and returns a required field.
    pub fn take(&mut self, field: &'static str) -> Result<Value, ShapeError> {
        self.map.remove(field).ok_or(ShapeError::Missing { field })
    }

    /// Removes a required text field.
    pub fn text(&mut self, field: &'static str) -> Result<String, ShapeError> {
        match self.take(field)? {
            Value::Text(text) => Ok(text),
            other => Err(invalid(field, "text", &other)),
        }
    }

    /// Removes a required byte-string field.
    pub fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, ShapeError> {
        match self.take(field)? {
            Value::Bytes(bytes) => Ok(bytes),
            other => Err(invalid(field, "bytes", &other)),
        }
    }

    /// Removes a required unsigned integer field.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ShapeError> {
        match self.take(field)? {
            Value::Integer(n) => u64::try_from(n).map_err(|_| ShapeError::Invalid {
                field,
                problem: format!("{n} is not an unsigned 64-bit integer"),
            }),
            other => Err(invalid(field, "integer", &other)),
        }
    }

    /// Removes a required signed integer field.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, ShapeError> {
        match self.take(field)? {
            Value::Integer(n) => i64::try_from(n).map_err(|_| ShapeError::Invalid {
                field,
                problem: format!("{n} is not a signed 64-bit integer"),
            }),
            other => Err(invalid(field, "integer", &other)),
        }
    }

    /// Removes a required link field.
    pub fn link(&mut self, field: &'static str) -> Result<Cid, ShapeError> {
        match self.take(field)? {
            Value::Link(cid) => Ok(cid),
            other => Err(invalid(field, "link", &other)),
        }
    }

    /// Removes a field that is a link or null (which must be present).
    pub fn nullable_link(&mut self, field: &'static str) -> Result<Option<Cid>, ShapeError> {
        match self.take(field)? {
            Value::Link(cid) => Ok(Some(cid)),
            Value::Null => Ok(None),
            other => Err(invalid(field, "link or null", &other)),
        }
    }

    /// Removes a required array field.
    pub fn array(&mut self, field: &'static str) -> Result<Vec<Value>, ShapeError> {
        match self.take(field)? {
            Value::Array(items) => Ok(items),
            other => Err(invalid(field, "array", &other)),
        }
    }

    /// Finishes reading: any field left over is an error, so documents cannot smuggle data.
    pub fn finish(self) -> Result<(), ShapeError> {
        match self.map.into_keys().next() {
            None => Ok(()),
            Some(field) => Err(ShapeError::Unknown { field }),
        }
    }
}

fn invalid(field: &'static str, expected: &str, got: &Value) -> ShapeError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Integer(_) => "integer",
        Value::Bytes(_) => "bytes",
        Value::Text(_) => "text",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Link(_) => "link",
    };
    invalid_kind(field, expected, kind)
}

fn invalid_kind(field: &'static str, expected: &str, kind: &str) -> ShapeError {
    ShapeError::Invalid {
        field,
        problem: format!("expected {expected}, found {kind}"),
    }
}

/// [`MapReader`] for a borrowed map from [`decode_ref`]: fields come out as slices of the
/// input. Fields are taken in any order; [`MapRefReader::finish`] refuses what is left.
pub struct MapRefReader<'a> {
    entries: Vec<(&'a str, Option<ValueRef<'a>>)>,
}

impl<'a> MapRefReader<'a> {
    /// Starts reading a decoded value that must be a map.
    pub fn new(value: ValueRef<'a>) -> Result<Self, ShapeError> {
        match value {
            ValueRef::Map(entries) => Ok(Self {
                entries: entries.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            }),
            _ => Err(ShapeError::NotAMap),
        }
    }

    /// Removes and returns a required field.
    pub fn take(&mut self, field: &'static str) -> Result<ValueRef<'a>, ShapeError> {
        // The decoder accepts keys only in canonical order, so a binary search finds the field.
        self.entries
            .binary_search_by(|(key, _)| canonical_key_order(key, field))
            .ok()
            .and_then(|index| self.entries[index].1.take())
            .ok_or(ShapeError::Missing { field })
    }

    /// Removes a field that may be absent.
    pub fn take_optional(&mut self, field: &'static str) -> Option<ValueRef<'a>> {
        self.take(field).ok()
    }

    /// Removes a required text field.
    pub fn text(&mut self, field: &'static str) -> Result<&'a str, ShapeError> {
        match self.take(field)? {
            ValueRef::Text(text) => Ok(text),
            other => Err(invalid_kind(field, "text", other.kind())),
        }
    }

    /// Removes a required byte-string field.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], ShapeError> {
        match self.take(field)? {
            ValueRef::Bytes(bytes) => Ok(bytes),
            other => Err(invalid_kind(field, "bytes", other.kind())),
        }
    }

    /// Removes a required unsigned integer field.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ShapeError> {
        match self.take(field)? {
            ValueRef::Integer(n) => u64::try_from(n).map_err(|_| ShapeError::Invalid {
                field,
                problem: format!("{n} is not an unsigned 64-bit integer"),
            }),
            other => Err(invalid_kind(field, "integer", other.kind())),
        }
    }

    /// Removes a required signed integer field.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, ShapeError> {
        match self.take(field)? {
            ValueRef::Integer(n) => i64::try_from(n).map_err(|_| ShapeError::Invalid {
                field,
                problem: format!("{n} is not a signed 64-bit integer"),
            }),
            other => Err(invalid_kind(field, "integer", other.kind())),
        }
    }

    /// Removes a required link field.
    pub fn link(&mut self, field: &'static str) -> Result<Cid, ShapeError> {
        match self.take(field)? {
            ValueRef::Link(cid) => Ok(cid),
            other => Err(invalid_kind(field, "link", other.kind())),
        }
    }

    /// Removes a field that is a link or null (which must be present).
    pub fn nullable_link(&mut self, field: &'static str) -> Result<Option<Cid>, ShapeError> {
        match self.take(field)? {
            ValueRef::Link(cid) => Ok(Some(cid)),
            ValueRef::Null => Ok(None),
            other => Err(invalid_kind(field, "link or null", other.kind())),
        }
    }

    /// Removes a required array field.
    pub fn array(&mut self, field: &'static str) -> Result<Vec<ValueRef<'a>>, ShapeError> {
        match self.take(field)? {
            ValueRef::Array(items) => Ok(items),
            other => Err(invalid_kind(field, "array", other.kind())),
        }
    }

    /// Finishes reading: any field left over is an error, so documents cannot smuggle data.
    pub fn finish(self) -> Result<(), ShapeError> {
        match self.entries.into_iter().find(|(_, value)| value.is_some()) {
            None => Ok(()),
            Some((field, _)) => Err(ShapeError::Unknown {
                field: field.to_owned(),
            }),
        }
    }
}

/// Builds a map value from `(key, value)` pairs; a convenience for document encoders.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// The atproto JSON form of the data model (`$link`, `$bytes`), used by the conformance
/// vectors and by tools that show documents to people.
pub mod json {
    use super::Value;
    use base64::Engine as _;
    use cid::Cid;

    /// Why a JSON document does not map onto the data model.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum JsonError {
        /// A record must be a JSON object at the top level.
        #[error("top level is not an object")]
        TopLevelNotObject,
        /// A number with a fraction or exponent, or outside the integer range.
        #[error("number {number} at {path} is not an integer in range")]
        NotAnInteger {
            /// The number as written.
            number: String,
            /// JSON path of the value.
            path: String,
        },
        /// A `$link`, `$bytes`, `$type` or blob object that breaks the data model's rules.
        #[error("{path}: {problem}")]
        Invalid {
            /// JSON path of the value.
            path: String,
            /// What is wrong.
            problem: String,
        },
    }

    fn invalid(path: &str, problem: impl Into<String>) -> JsonError {
        JsonError::Invalid {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }

    /// Converts an atproto-style JSON record (top-level object) into a data-model value.
    pub fn record_from_json(json: &serde_json::Value) -> Result<Value, JsonError> {
        if !json.is_object() {
            return Err(JsonError::TopLevelNotObject);
        }
        from_json(json, "$")
    }

    /// Converts any JSON value into a data-model value.
    pub fn from_json(json: &serde_json::Value, path: &str) -> Result<Value, JsonError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(number) => {
                if let Some(n) = number.as_i64() {
                    Value::Integer(i128::from(n))
                } else if let Some(n) = number.as_u64() {
                    Value::Integer(i128::from(n))
                } else {
                    return Err(JsonError::NotAnInteger {
                        number: number.to_string(),
                        path: path.to_owned(),
                    });
                }
            }
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| from_json(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(object) => {
                if let Some(link) = object.get("$link") {
                    if object.len() != 1 {
                        return Err(invalid(path, "$link object has extra fields"));
                    }
                    let text = link
                        .as_str()
                        .ok_or_else(|| invalid(path, "$link is not a string"))?;
                    let cid = Cid::try_from(text)
                        .map_err(|error| invalid(path, format!("$link is not a cid: {error}")))?;
                    return Ok(Value::Link(cid));
                }
                if let Some(bytes) = object.get("$bytes") {
                    if object.len() != 1 {
                        return Err(invalid(path, "$bytes object has extra fields"));
                    }
                    let text = bytes
                        .as_str()
                        .ok_or_else(|| invalid(path, "$bytes is not a string"))?;
                    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(text.trim_end_matches('='))
                        .map_err(|error| invalid(path, format!("$bytes is not base64: {error}")))?;
                    return Ok(Value::Bytes(decoded));
                }
                if let Some(kind) = object.get("$type") {
                    match kind.as_str() {
                        Some("") => return Err(invalid(path, "$type is empty")),
                        Some(_) => {}
                        None => return Err(invalid(path, "$type is not a string")),
                    }
                    if kind.as_str() == Some("blob") {
                        check_blob(object, path)?;
                    }
                }
                let mut map = std::collections::BTreeMap::new();
                for (key, value) in object {
                    map.insert(key.clone(), from_json(value, &format!("{path}.{key}"))?);
                }
                Value::Map(map)
            }
        })
    }

    fn check_blob(
        object: &serde_json::Map<String, serde_json::Value>,
        path: &str,
    ) -> Result<(), JsonError> {
        match object.get("ref") {
            Some(reference) if reference.get("$link").is_some() => {}
            Some(_) => return Err(invalid(path, "blob ref is not a link")),
            None => return Err(invalid(path, "blob without ref")),
        }
        if !object.get("mimeType").is_some_and(|m| m.is_string()) {
            return Err(invalid(path, "blob mimeType missing or not a string"));
        }
        if !object.get("size").is_some_and(|s| s.is_u64()) {
            return Err(invalid(path, "blob size missing or not an integer"));
        }
        Ok(())
    }

    /// Converts a data-model value into its atproto JSON form.
    pub fn to_json(value: &Value) -> serde_json::Value {
        match value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Integer(n) => {
                if let Ok(n) = i64::try_from(*n) {
                    serde_json::Value::from(n)
                } else if let Ok(n) = u64::try_from(*n) {
                    serde_json::Value::from(n)
                } else {
                    serde_json::Value::String(n.to_string())
                }
            }
            Value::Bytes(bytes) => serde_json::json!({
                "$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
            }),
            Value::Text(text) => serde_json::Value::String(text.clone()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
            Value::Map(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), to_json(value)))
                    .collect(),
            ),
            Value::Link(cid) => serde_json::json!({ "$link": cid.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_minimal_integer() {
        // 1 encoded in two bytes.
        assert!(matches!(
            decode(&[0x18, 0x01]),
            Err(DecodeError::NonMinimal { .. })
        ));
        assert_eq!(decode(&[0x01]), Ok(Value::Integer(1)));
    }

    #[test]
    fn rejects_unsorted_keys_and_duplicates() {
        // {"b": 1, "a": 2}
        let unsorted = [0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02];
        assert!(matches!(
            decode(&unsorted),
            Err(DecodeError::KeyOrder { .. })
        ));
        let duplicated = [0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02];
        assert!(matches!(
            decode(&duplicated),
            Err(DecodeError::KeyOrder { .. })
        ));
        // Length-first: "b" before "aa".
        let canonical = [0xa2, 0x61, b'b', 0x01, 0x62, b'a', b'a', 0x02];
        assert!(decode(&canonical).is_ok());
    }

    #[test]
    fn rejects_indefinite_floats_tags_and_huge_lengths() {
        assert!(matches!(
            decode(&[0x9f, 0xff]),
            Err(DecodeError::IndefiniteLength { .. })
        ));
        assert!(matches!(
            decode(&[0xf9, 0x3c, 0x00]),
            Err(DecodeError::Float { .. })
        ));
        assert!(matches!(
            decode(&[0xc1, 0x01]),
            Err(DecodeError::UnsupportedTag { tag: 1, .. })
        ));
        // A byte string claiming 2^32 bytes.
        assert!(matches!(
            decode(&[0x5b, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(DecodeError::LengthExceedsInput { .. })
        ));
        // An array claiming 2^32 items.
        assert!(matches!(
            decode(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(DecodeError::LengthExceedsInput { .. })
        ));
        assert!(matches!(
            decode(&[0x01, 0x02]),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = vec![0x81u8; NESTING_DEPTH_MAX + 1];
        deep.push(0x01);
        assert!(matches!(decode(&deep), Err(DecodeError::TooDeep { .. })));
        let mut ok = vec![0x81u8; NESTING_DEPTH_MAX - 1];
        ok.push(0x01);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn integer_extremes_round_trip() {
        for n in [
            0i128,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as i128,
            u64::MAX as i128,
            -1,
            -24,
            -25,
            -(u64::MAX as i128) - 1,
        ] {
            let bytes = encode(&Value::Integer(n));
            assert_eq!(decode(&bytes), Ok(Value::Integer(n)), "{n}");
        }
    }
}
