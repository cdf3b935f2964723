//! Ed25519 keys and their `did:key` names.
//!
//! Node keys sign snapshot commits; organisation keys sign agent manifests. A public key is
//! always named by its `did:key` (multicodec `ed25519-pub` 0xed01, base58btc), which is also
//! what libp2p derives its PeerId from, so one key has one name everywhere.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// The `did:key` method prefix.
const DID_KEY_PREFIX: &str = "did:key:";
/// Multicodec varint for an ed25519 public key.
const ED25519_PUB_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// The `kind` a key file must declare.
const KEY_FILE_KIND: &str = "meridian-ed25519-secret-key";

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not a `did:key` for an ed25519 key.
    #[error("invalid did:key `{did}`: {reason}")]
    InvalidDid {
        /// The text given.
        did: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file that cannot be read as a Meridian key.
    #[error("invalid key file: {reason}")]
    InvalidKeyFile {
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("no randomness available: {reason}")]
    Randomness {
        /// The error from the operating system.
        reason: String,
    },
    /// A signature that does not verify under the key.
    #[error("bad signature by {did}")]
    BadSignature {
        /// The key the signature claimed.
        did: String,
    },
}

/// A public ed25519 key, named by its `did:key`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_did())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_did())
    }
}

impl PublicKey {
    /// Parses a `did:key:z6Mk…` ed25519 key.
    pub fn from_did(did: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::InvalidDid {
            did: did.chars().take(128).collect(),
            reason: reason.to_owned(),
        };
        let encoded = did
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or_else(|| bad("does not start with did:key:"))?;
        if !encoded.starts_with('z') {
            return Err(bad("not base58btc (must start with z)"));
        }
        let (_, bytes) = multibase::decode(encoded).map_err(|_| bad("not valid base58btc"))?;
        let raw = bytes
            .strip_prefix(&ED25519_PUB_MULTICODEC[..])
            .ok_or_else(|| bad("not an ed25519 key"))?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&raw)
            .map(PublicKey)
            .map_err(|_| bad("not a valid ed25519 point"))
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(raw)
            .map(PublicKey)
            .map_err(|_| KeyError::InvalidDid {
                did: String::new(),
                reason: "not a valid ed25519 point".into(),
            })
    }

    /// The key's `did:key` name.
    pub fn to_did(&self) -> String {
        let mut bytes = ED25519_PUB_MULTICODEC.to_vec();
        bytes.extend_from_slice(self.0.as_bytes());
        format!(
            "{DID_KEY_PREFIX}{}",
            multibase::encode(multibase::Base::Base58Btc, bytes)
        )
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The dalek key, for batch verification.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Checks `signature` over `message` (strict: no malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), KeyError> {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| KeyError::BadSignature { did: self.to_did() })
    }
}

/// A secret ed25519 key.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.public().to_did())
    }
}

impl Keypair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|error| KeyError::Randomness {
            reason: error.to_string(),
        })?;
        Ok(Self::from_secret(&secret))
    }

    /// The key with this 32-byte secret (seed). Tests and simulations derive keys this way.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The public key's `did:key`.
    pub fn did(&self) -> String {
        self.public().to_did()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The key file text: JSON naming the kind, the did and the hex secret.
    pub fn to_key_file(&self) -> String {
        let secret: String = self
            .0
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let document = serde_json::json!({
            "kind": KEY_FILE_KIND,
            "did": self.did(),
            "secret_hex": secret,
        });
        format!("{document:#}\n")
    }

    /// Reads a key file written by [`Keypair::to_key_file`]; the did must match the secret.
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::InvalidKeyFile {
            reason: reason.to_owned(),
        };
        let document: serde_json::Value =
            serde_json::from_str(text).map_err(|error| bad(&format!("not json: {error}")))?;
        if document.get("kind").and_then(|k| k.as_str()) != Some(KEY_FILE_KIND) {
            return Err(bad(&format!("`kind` is not {KEY_FILE_KIND}")));
        }
        let hex = document
            .get("secret_hex")
            .and_then(|s| s.as_str())
            .ok_or_else(|| bad("missing `secret_hex`"))?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad("`secret_hex` is not 64 hex digits"));
        }
        let mut secret = [0u8; 32];
        for (index, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16)
                .map_err(|_| bad("`secret_hex` is not 64 hex digits"))?;
        }
        let keypair = Self::from_secret(&secret);
        if let Some(did) = document.get("did").and_then(|d| d.as_str())
            && did != keypair.did()
        {
            return Err(bad("`did` does not match the secret key"));
        }
        Ok(keypair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_round_trips_and_rejects_garbage() {
        let key = Keypair::from_secret(&[7; 32]);
        let did = key.did();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(PublicKey::from_did(&did), Ok(key.public()));
        for bad in ["", "did:key:", "did:web:x", "did:key:zzzz", "did:key:m123"] {
            assert!(PublicKey::from_did(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_bind_message_and_key() {
        let key = Keypair::from_secret(&[1; 32]);
        let other = Keypair::from_secret(&[2; 32]);
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig).is_ok());
        assert!(key.public().verify(b"hellp", &sig).is_err());
        assert!(other.public().verify(b"hello", &sig).is_err());
    }

    #[test]
    fn key_file_round_trip_and_mismatch() {
        let key = Keypair::generate().unwrap();
        let text = key.to_key_file();
        assert_eq!(Keypair::from_key_file(&text).unwrap().did(), key.did());
        let other = Keypair::from_secret(&[3; 32]);
        let forged = text.replace(&key.did(), &other.did());
        assert!(Keypair::from_key_file(&forged).is_err());
        assert!(Keypair::from_key_file("{}").is_err());
        assert!(Keypair::from_key_file("not json").is_err());
    }
}
