//! Domain binding: an organisation proves it controls a DNS domain, the way ACME's HTTP-01
//! challenge and the MCP Registry do, so names can be anchored to it (ARD identifiers are
//! `urn:air:<domain>:<namespace>:<agent>`, and ARD requires that domain to be a verified
//! identity of the publisher).
//!
//! The organisation serves a [`DomainProof`] at `https://<domain>/.well-known/meridian-org.json`
//! ([`DOMAIN_PROOF_PATH`]): its organisation id, its current key set and an expiry, signed by a
//! threshold of that key set. Whoever checks it ([`DomainProof::verify`]) knows the
//! organisation's current keys from governance (its `org.verified` attestation and key
//! rotations) or from a node's first-come name binding; the proof must list exactly that set.
//! With governance on, an admin who checked it issues an [`KIND_ORG_DOMAIN`] attestation
//! ([`DomainProof::attestation`]) that travels like the others.
//!
//! Sans-IO: fetching the file over HTTPS is the caller's job; this module checks bytes.

use std::collections::BTreeMap;

use base64::Engine as _;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::manifest::check_name;

use crate::attestation::{Attestation, Subject};
use crate::document::{DocumentError, KeySet, SignedDocument, text_array, text_list};

/// Where an organisation serves its proof on its domain (HTTPS only).
pub const DOMAIN_PROOF_PATH: &str = "/.well-known/meridian-org.json";
/// The `$type` of the signed proof document.
pub const DOMAIN_PROOF_TYPE: &str = "meridian.org-domain.v1";
/// An attestation that an organisation controls a domain; claims `domain` (text) and `proof`
/// (the proof document's id, text). Issued by the `attest` role after checking the proof.
pub const KIND_ORG_DOMAIN: &str = "org.domain";
/// Largest proof file read, in bytes.
pub const DOMAIN_PROOF_BYTES_MAX: usize = 64 * 1024;
/// Longest a proof may be valid for, in seconds (a year and a day): a binding is re-checked at
/// least that often.
pub const DOMAIN_PROOF_VALID_MAX_SECS: i64 = 366 * 86_400;
/// How far ahead of the checker's clock a proof's `issued_at` may be, in seconds.
pub const DOMAIN_PROOF_SKEW_SECS: i64 = 300;
/// Longest domain name accepted (RFC 1035).
pub const DOMAIN_BYTES_MAX: usize = 253;

/// Why a domain proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The domain is not a lowercase DNS name of at least two labels.
    #[error("`{domain}` is not a domain name: {why}")]
    BadDomain {
        /// What was given.
        domain: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file is larger than [`DOMAIN_PROOF_BYTES_MAX`].
    #[error("the proof file is {size} bytes; at most {DOMAIN_PROOF_BYTES_MAX} are read")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The file is not the JSON a proof is served as.
    #[error("the proof file is not a Meridian domain proof: {0}")]
    Malformed(String),
    /// The signed document does not decode or its signatures fall short.
    #[error("{0}")]
    Document(#[from] DocumentError),
    /// The file's readable fields say something the signed proof does not.
    #[error("the file's `{field}` does not match the signed proof")]
    Mismatch {
        /// The field.
        field: &'static str,
    },
    /// The proof is for another domain (served where it should not be).
    #[error("the proof is for `{found}`, not `{expected}`")]
    WrongDomain {
        /// The domain checked.
        expected: String,
        /// The domain it names.
        found: String,
    },
    /// The proof is for another organisation.
    #[error("the proof is for organisation `{found}`, not `{expected}`")]
    WrongOrg {
        /// The organisation checked.
        expected: String,
        /// The organisation it names.
        found: String,
    },
    /// It lists a key set other than the organisation's current one.
    #[error(
        "the proof lists keys other than the organisation's current key set (sign a new proof with `meridian org bind-domain`)"
    )]
    StaleKeys,
    /// It has expired.
    #[error("the proof expired at {expires_at} (now {now})")]
    Expired {
        /// Its expiry.
        expires_at: i64,
        /// The checker's clock.
        now: i64,
    },
    /// It was issued ahead of the checker's clock, or for longer than allowed.
    #[error(
        "the proof's validity ({issued_at} to {expires_at}) is in the future or longer than {DOMAIN_PROOF_VALID_MAX_SECS} s"
    )]
    BadWindow {
        /// When it was issued.
        issued_at: i64,
        /// When it expires.
        expires_at: i64,
    },
}

/// Checks that `domain` is a DNS name Meridian binds: lowercase ASCII letters, digits and
/// hyphens in dot-separated labels of 1 to 63 bytes, at least two labels, no label starting
/// or ending with a hyphen, at most [`DOMAIN_BYTES_MAX`] bytes, no trailing dot.
pub fn check_domain(domain: &str) -> Result<(), DomainError> {
    let bad = |why| {
        Err(DomainError::BadDomain {
            domain: domain.chars().take(80).collect(),
            why,
        })
    };
    if domain.is_empty() || domain.len() > DOMAIN_BYTES_MAX {
        return bad("it must be 1 to 253 bytes");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels (example.com)");
    }
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return bad("every label is 1 to 63 bytes (no empty label, no trailing dot)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("only lowercase letters, digits and hyphens (punycode for others)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
    }
    Ok(())
}

/// An organisation's signed claim that it controls a domain, as served on that domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainProof {
    /// The organisation.
    pub org: String,
    /// The domain.
    pub domain: String,
    /// The organisation's key set when it signed.
    pub keys: Vec<PublicKey>,
    /// When it was signed (unix seconds).
    pub issued_at: i64,
    /// When it stops being valid (unix seconds).
    pub expires_at: i64,
    /// The signed document.
    pub document: SignedDocument,
}

impl DomainProof {
    /// A proof that `org` controls `domain`, listing `keys` (the organisation's current key
    /// set) and signed by each of `signers` (at least the organisation's threshold of it).
    pub fn create(
        org: &str,
        domain: &str,
        keys: &[PublicKey],
        signers: &[&Keypair],
        issued_at: i64,
        expires_at: i64,
    ) -> Result<Self, DomainError> {
        check_name("org", org).map_err(|e| DomainError::Malformed(e.to_string()))?;
        check_domain(domain)?;
        if keys.is_empty() || signers.is_empty() {
            return Err(DomainError::Malformed(
                "a proof lists at least one key and is signed by at least one".into(),
            ));
        }
        if expires_at <= issued_at || expires_at - issued_at > DOMAIN_PROOF_VALID_MAX_SECS {
            return Err(DomainError::BadWindow {
                issued_at,
                expires_at,
            });
        }
        let dids: Vec<String> = keys.iter().map(PublicKey::to_did).collect();
        let body = cbor::map([
            ("org", Value::Text(org.to_owned())),
            ("domain", Value::Text(domain.to_owned())),
            ("keys", text_array(&dids)),
            ("issued_at", Value::Integer(i128::from(issued_at))),
            ("expires_at", Value::Integer(i128::from(expires_at))),
        ]);
        let mut document = SignedDocument::new(DOMAIN_PROOF_TYPE, body);
        for signer in signers {
            document.sign(signer);
        }
        Ok(Self {
            org: org.to_owned(),
            domain: domain.to_owned(),
            keys: keys.to_vec(),
            issued_at,
            expires_at,
            document,
        })
    }

    /// Decodes the signed document (signatures are checked by [`DomainProof::verify`]).
    pub fn decode(block: &[u8]) -> Result<Self, DomainError> {
        let document = SignedDocument::decode(block, DOMAIN_PROOF_TYPE)?;
        let mut reader = MapReader::new(document.body.clone()).map_err(DocumentError::from)?;
        let org = reader.text("org").map_err(DocumentError::from)?;
        let domain = reader.text("domain").map_err(DocumentError::from)?;
        let dids = text_list(reader.take("keys").map_err(DocumentError::from)?, "keys")?;
        let issued_at = reader.i64("issued_at").map_err(DocumentError::from)?;
        let expires_at = reader.i64("expires_at").map_err(DocumentError::from)?;
        reader.finish().map_err(DocumentError::from)?;
        let keys = dids
            .iter()
            .map(|d| PublicKey::from_did(d).map_err(|e| DomainError::Malformed(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            org,
            domain,
            keys,
            issued_at,
            expires_at,
            document,
        })
    }

    /// The file to serve at [`DOMAIN_PROOF_PATH`]: the signed proof in base64 (`proof`),
    /// with its fields repeated for people reading it.
    pub fn to_json(&self) -> String {
        let body = serde_json::json!({
            "org": self.org,
            "domain": self.domain,
            "keys": self.keys.iter().map(PublicKey::to_did).collect::<Vec<_>>(),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "proof": base64::engine::general_purpose::STANDARD.encode(self.document.to_block()),
        });
        serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
    }

    /// Reads the served file: the signed `proof` decides; the readable fields, where present,
    /// must agree with it (so what a person reads is what is signed).
    pub fn from_json(bytes: &[u8]) -> Result<Self, DomainError> {
        if bytes.len() > DOMAIN_PROOF_BYTES_MAX {
            return Err(DomainError::TooLarge { size: bytes.len() });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DomainError::Malformed(e.to_string()))?;
        let proof = value["proof"]
            .as_str()
            .ok_or_else(|| DomainError::Malformed("no `proof` (base64 text)".into()))?;
        let block = base64::engine::general_purpose::STANDARD
            .decode(proof.trim())
            .map_err(|e| DomainError::Malformed(format!("`proof`: {e}")))?;
        let decoded = Self::decode(&block)?;
        let dids: Vec<String> = decoded.keys.iter().map(PublicKey::to_did).collect();
        let readable = [
            ("org", serde_json::json!(decoded.org)),
            ("domain", serde_json::json!(decoded.domain)),
            ("keys", serde_json::json!(dids)),
            ("issued_at", serde_json::json!(decoded.issued_at)),
            ("expires_at", serde_json::json!(decoded.expires_at)),
        ];
        for (field, signed) in readable {
            if let Some(shown) = value.get(field)
                && *shown != signed
            {
                return Err(DomainError::Mismatch { field });
            }
        }
        Ok(decoded)
    }

    /// Checks the proof for `org` and `domain` at `now` against the organisation's current
    /// key set (`current`, with its threshold): same domain and organisation, within its
    /// validity window, listing exactly the current keys, signed by a threshold of them.
    pub fn verify(
        &self,
        domain: &str,
        org: &str,
        current: &KeySet,
        now: i64,
    ) -> Result<(), DomainError> {
        if self.domain != domain {
            return Err(DomainError::WrongDomain {
                expected: domain.to_owned(),
                found: self.domain.clone(),
            });
        }
        if self.org != org {
            return Err(DomainError::WrongOrg {
                expected: org.to_owned(),
                found: self.org.clone(),
            });
        }
        check_domain(&self.domain)?;
        if self.issued_at > now + DOMAIN_PROOF_SKEW_SECS
            || self.expires_at <= self.issued_at
            || self.expires_at - self.issued_at > DOMAIN_PROOF_VALID_MAX_SECS
        {
            return Err(DomainError::BadWindow {
                issued_at: self.issued_at,
                expires_at: self.expires_at,
            });
        }
        if now >= self.expires_at {
            return Err(DomainError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        let mut listed = self.keys.clone();
        let mut expected = current.keys.clone();
        listed.sort_by_key(PublicKey::to_did);
        listed.dedup();
        expected.sort_by_key(PublicKey::to_did);
        expected.dedup();
        if listed != expected {
            return Err(DomainError::StaleKeys);
        }
        self.document
            .verify_threshold(current, "a threshold of the organisation's current keys")?;
        Ok(())
    }

    /// The unsigned `org.domain` attestation an admin issues after checking this proof: about
    /// the organisation, claiming the domain and naming the proof, valid from `issued_at`
    /// until the proof expires.
    pub fn attestation(&self, issued_at: i64) -> Result<Attestation, DocumentError> {
        let claims = BTreeMap::from([
            ("domain".to_owned(), Value::Text(self.domain.clone())),
            (
                "proof".to_owned(),
                Value::Text(self.document.id().to_string()),
            ),
        ]);
        Attestation::new(
            Subject::Org(self.org.clone()),
            KIND_ORG_DOMAIN,
            claims,
            issued_at,
            self.expires_at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn key(seed: u8) -> Keypair {
        Keypair::from_secret(&[seed; 32])
    }

    fn set(seeds: &[u8], threshold: usize) -> KeySet {
        KeySet {
            keys: seeds.iter().map(|s| key(*s).public()).collect(),
            threshold,
        }
    }

    fn proof(seeds: &[u8], signers: &[u8]) -> DomainProof {
        let keys: Vec<PublicKey> = seeds.iter().map(|s| key(*s).public()).collect();
        let signers: Vec<Keypair> = signers.iter().map(|s| key(*s)).collect();
        let signers: Vec<&Keypair> = signers.iter().collect();
        DomainProof::create(
            "acme",
            "acme.example",
            &keys,
            &signers,
            NOW - 10,
            NOW + 90 * DAY,
        )
        .unwrap()
    }

    #[test]
    fn a_served_proof_reads_back_and_verifies_against_the_current_keys() {
        let served = proof(&[1, 2], &[1]).to_json();
        let read = DomainProof::from_json(served.as_bytes()).unwrap();
        assert_eq!(read.domain, "acme.example");
        assert_eq!(
            read.verify("acme.example", "acme", &set(&[1, 2], 1), NOW),
            Ok(())
        );
        // A threshold of two needs both keys.
        assert!(matches!(
            read.verify("acme.example", "acme", &set(&[1, 2], 2), NOW),
            Err(DomainError::Document(DocumentError::ThresholdNotMet {
                valid: 1,
                threshold: 2,
                ..
            }))
        ));
        let attestation = read.attestation(NOW).unwrap();
        assert_eq!(attestation.body.kind, KIND_ORG_DOMAIN);
        assert_eq!(attestation.body.expires_at, NOW + 90 * DAY);
    }

    #[test]
    fn the_wrong_domain_org_keys_or_time_are_refused_with_their_reason() {
        let good = proof(&[1], &[1]);
        let current = set(&[1], 1);
        assert!(matches!(
            good.verify("evil.example", "acme", &current, NOW),
            Err(DomainError::WrongDomain { .. })
        ));
        assert!(matches!(
            good.verify("acme.example", "globex", &current, NOW),
            Err(DomainError::WrongOrg { .. })
        ));
        // The organisation rotated its keys since: the proof must be signed again.
        assert_eq!(
            good.verify("acme.example", "acme", &set(&[1, 3], 1), NOW),
            Err(DomainError::StaleKeys)
        );
        assert!(matches!(
            good.verify("acme.example", "acme", &current, NOW + 91 * DAY),
            Err(DomainError::Expired { .. })
        ));
        assert!(matches!(
            good.verify("acme.example", "acme", &current, NOW - 3_600),
            Err(DomainError::BadWindow { .. })
        ));
        // Signed by a key the organisation does not hold (a thief's proof listing its keys).
        let forged = proof(&[1], &[9]);
        assert!(matches!(
            forged.verify("acme.example", "acme", &current, NOW),
            Err(DomainError::Document(DocumentError::ThresholdNotMet {
                valid: 0,
                ..
            }))
        ));
    }

    #[test]
    fn a_tampered_file_is_refused() {
        let served = proof(&[1], &[1]).to_json();
        // The readable domain changed: it must match what is signed.
        let edited = served.replace(
            "\"domain\": \"acme.example\"",
            "\"domain\": \"evil.example\"",
        );
        assert_ne!(edited, served);
        assert_eq!(
            DomainProof::from_json(edited.as_bytes()),
            Err(DomainError::Mismatch { field: "domain" })
        );
        // The signed bytes changed: the signature no longer holds.
        let mut value: serde_json::Value = serde_json::from_str(&served).unwrap();
        let mut block = base64::engine::general_purpose::STANDARD
            .decode(value["proof"].as_str().unwrap())
            .unwrap();
        let at = block
            .windows(12)
            .position(|w| w == b"acme.example")
            .unwrap();
        block[at] = b'x';
        value["proof"] =
            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&block));
        value.as_object_mut().unwrap().remove("domain");
        let tampered = DomainProof::from_json(value.to_string().as_bytes()).unwrap();
        assert!(matches!(
            tampered.verify("xcme.example", "acme", &set(&[1], 1), NOW),
            Err(DomainError::Document(DocumentError::ThresholdNotMet { .. }))
        ));
        assert!(matches!(
            DomainProof::from_json(b"not json"),
            Err(DomainError::Malformed(_))
        ));
        let huge = vec![b' '; DOMAIN_PROOF_BYTES_MAX + 1];
        assert!(matches!(
            DomainProof::from_json(&huge),
            Err(DomainError::TooLarge { .. })
        ));
    }

    #[test]
    fn only_plain_lowercase_domain_names_are_bound() {
        for good in ["acme.example", "a-b.c0.example", "xn--bcher-kva.example"] {
            assert_eq!(check_domain(good), Ok(()), "{good}");
        }
        for bad in [
            "localhost",
            "Acme.example",
            "acme.example.",
            "-acme.example",
            "acme..example",
            "acme.example/path",
            "acme.example:443",
            "",
        ] {
            assert!(
                matches!(check_domain(bad), Err(DomainError::BadDomain { .. })),
                "{bad}"
            );
        }
    }
}
