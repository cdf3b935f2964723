//! A borrowed view of a JSON document, for reading agent cards without copying them.
//!
//! `serde_json::Value` copies every string and builds an ordered hash map per object; reading a
//! 100,000-agent snapshot parses 100,000 cards, and those copies were a sixth of the work. A
//! [`JsonView`] borrows every string that has no escapes from the text and keeps objects as
//! vectors of pairs. Lookups take the last value of a repeated key, as `serde_json::Value` does,
//! so a card reads the same either way. Nesting is bounded by `serde_json`'s recursion limit.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value, its strings borrowed from the parsed text where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonView<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number (cards read no numbers, only their presence).
    Number,
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<JsonView<'a>>),
    /// An object, in document order, repeated keys kept.
    Object(Vec<(Cow<'a, str>, JsonView<'a>)>),
}

impl<'a> JsonView<'a> {
    /// Parses `text` as one JSON value.
    pub(crate) fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The member `key` of an object (the last one if repeated), or `None`.
    pub(crate) fn get(&self, key: &str) -> Option<&JsonView<'a>> {
        match self {
            JsonView::Object(members) => members
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            JsonView::String(text) => Some(text),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub(crate) fn as_array(&self) -> Option<&[JsonView<'a>]> {
        match self {
            JsonView::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub(crate) fn is_object(&self) -> bool {
        matches!(self, JsonView::Object(_))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ViewVisitor(std::marker::PhantomData))
    }
}

struct ViewVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ViewVisitor<'a> {
    type Value = JsonView<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonView::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(JsonView::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(JsonView::Bool(value))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(JsonView::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(JsonView::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(JsonView::Number)
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(JsonView::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<JsonView<'a>>()? {
            let JsonView::String(name) = key else {
                return Err(serde::de::Error::custom("object key is not a string"));
            };
            members.push((name, map.next_value()?));
        }
        Ok(JsonView::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_reads_like_serde_json() {
        let text = r#"{"a":"plain","b":"esc\"aped","c":[1,true,null,{"d":2.5}],"a":"last"}"#;
        let view = JsonView::parse(text).unwrap();
        assert!(matches!(view.get("b"), Some(JsonView::String(Cow::Owned(s))) if s == "esc\"aped"));
        // A repeated key reads as its last value, as in serde_json::Value.
        assert_eq!(view.get("a").and_then(JsonView::as_str), Some("last"));
        let reference: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(reference["a"], "last");
        assert_eq!(
            view.get("c").and_then(JsonView::as_array).map(<[_]>::len),
            Some(4)
        );
        assert!(view.get("missing").is_none());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in ["", "{", r#"{"a":}"#, "[1,]", r#"{"a":1}x"#, "nul"] {
            assert!(JsonView::parse(bad).is_err(), "{bad:?} was accepted");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(JsonView::parse(&deep).is_err(), "nesting must stay bounded");
    }
}
