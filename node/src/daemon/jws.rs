//! The node's signature on the agent cards it serves: when an agent's card carries JWS
//! `signatures`, the proxy serves the rewritten card (its URLs through the node) signed by the
//! node instead, as A2A's card signing has it: a JWS with a detached payload, EdDSA over the
//! JCS-canonical card (RFC 8785) without its `signatures`, `kid` the node's did:key and `jku`
//! its key set at `/.well-known/jwks.json`. The original, organisation-signed card stays in
//! the registry (`GET /api/v1/agents/ORG/NAME`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::http::NodeState;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `value` in RFC 8785 canonical form: object members sorted by their UTF-16 code units, no
/// whitespace, strings and numbers as JSON writes them (integers exactly; a card's rare
/// non-integer numbers in the shortest form, which is JCS's for all but exponents past 1e21).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (at, key) in keys.into_iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The bytes a card's signature covers: `BASE64URL(protected) "." BASE64URL(JCS(card))`, the
/// card without its `signatures`.
pub fn signing_input(protected_b64: &str, card: &Value) -> Vec<u8> {
    let mut unsigned = card.clone();
    if let Some(object) = unsigned.as_object_mut() {
        object.remove("signatures");
    }
    format!("{protected_b64}.{}", B64.encode(canonical(&unsigned))).into_bytes()
}

/// Replaces the card's `signatures` with the node's own over the card as it now is.
pub fn sign_card(state: &NodeState, card: &mut Value, base: &str) {
    let protected = json!({
        "alg": "EdDSA",
        "typ": "JOSE",
        "kid": state.node_did,
        "jku": format!("{base}/.well-known/jwks.json"),
    });
    let protected_b64 = B64.encode(protected.to_string());
    let signature = state.publisher.sign(&signing_input(&protected_b64, card));
    if let Some(object) = card.as_object_mut() {
        object.insert(
            "signatures".into(),
            json!([{ "protected": protected_b64, "signature": B64.encode(signature) }]),
        );
    }
}

/// The node's public keys as a JWK set: the Ed25519 key that signs the cards it serves (and its
/// snapshots), `kid` its did:key.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "a2a", responses((status = 200, description = "{keys: [{kty: OKP, crv: Ed25519, x, kid, alg: EdDSA, use: sig}]}", content_type = "application/json")))]
pub async fn jwks(State(state): State<Arc<NodeState>>) -> Response {
    let key = state.publisher.public();
    axum::Json(json!({ "keys": [{
        "kty": "OKP",
        "crv": "Ed25519",
        "x": B64.encode(key.as_bytes()),
        "kid": state.node_did,
        "alg": "EdDSA",
        "use": "sig",
    }] }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_members_by_utf16_and_drops_whitespace() {
        let value: Value = serde_json::from_str(
            r#"{ "b": [1, {"z": true, "a": null}], "a": "x\n", "\u20ac": 1, "\ud83d\ude00": 2 }"#,
        )
        .unwrap();
        // U+20AC sorts before U+1F600's surrogates (0xD83D) by UTF-16 code units.
        assert_eq!(
            canonical(&value),
            "{\"a\":\"x\\n\",\"b\":[1,{\"a\":null,\"z\":true}],\"\u{20ac}\":1,\"\u{1f600}\":2}"
        );
    }
}
