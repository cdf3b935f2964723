//! Ed25519 keys and their `did:key` names.
//!
//! Node keys sign snapshot commits; organisation keys sign agent manifests. A public key is
//! always named by its `did:key` (multicodec `ed25519-pub` 0xed01, base58btc), which is also
//! what libp2p derives its PeerId from, so one key has one name everywhere.
//!
//! Every signature is checked with one rule, the cofactored ed25519 equation
//! `[8][s]B = [8]R + [8][h]A` (as in ZIP-215 batch checks), whether it is checked alone or in a
//! batch of thousands: a rule that differed between the two would let a signer craft a
//! signature that some verifiers accept and others refuse. Batches are verified with one
//! multiscalar multiplication in which every signature by the same key shares one term, so a
//! snapshot whose manifests come from a few organisation keys costs about one point per
//! signature instead of two.

use std::collections::HashMap;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity as _, VartimeMultiscalarMul as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::Digest as _;

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

    /// Checks `signature` over `message` with the same rule as [`verify_batch`].
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), KeyError> {
        let check = SignatureCheck {
            key: *self,
            message,
            signature: *signature,
        };
        if verify_batch(std::slice::from_ref(&check), &[0; 32]) {
            Ok(())
        } else {
            Err(KeyError::BadSignature { did: self.to_did() })
        }
    }
}

/// One signature to check: a key, the signed message and the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck<'a> {
    /// The key that claims to have signed.
    pub key: PublicKey,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature (`R ‖ s`).
    pub signature: [u8; 64],
}

/// Checks every signature at once; `true` only if all verify. `seed` adds randomness to the
/// coefficients (they are also derived from every input, so an all-zero seed is still sound).
///
/// Rejects non-canonical `s`, undecodable `R` or keys, and small-order keys or `R`. When it
/// returns `false`, check the signatures one by one to find the bad one.
pub fn verify_batch(checks: &[SignatureCheck<'_>], seed: &[u8; 32]) -> bool {
    if checks.is_empty() {
        return true;
    }
    let mut transcript = blake3::Hasher::new_keyed(seed);
    transcript.update(b"meridian ed25519 batch v1");
    let mut nonces: Vec<EdwardsPoint> = Vec::with_capacity(checks.len());
    let mut s_values: Vec<Scalar> = Vec::with_capacity(checks.len());
    let mut challenges: Vec<Scalar> = Vec::with_capacity(checks.len());
    for check in checks {
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&check.signature[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&check.signature[32..]);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        if r.is_small_order() {
            return false;
        }
        let mut hasher = sha2::Sha512::new();
        hasher.update(r_bytes);
        hasher.update(check.key.as_bytes());
        hasher.update(check.message);
        let wide: [u8; 64] = hasher.finalize().into();
        let h = Scalar::from_bytes_mod_order_wide(&wide);
        transcript.update(&check.signature);
        transcript.update(check.key.as_bytes());
        transcript.update(h.as_bytes());
        nonces.push(r);
        s_values.push(s);
        challenges.push(h);
    }
    // Random 128-bit coefficients, bound to every input of the batch.
    let mut coefficients = transcript.finalize_xof();
    let mut base_scalar = Scalar::ZERO;
    let mut key_scalars: HashMap<[u8; 32], (EdwardsPoint, Scalar)> = HashMap::new();
    let mut scalars: Vec<Scalar> = Vec::with_capacity(checks.len() + 8);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(checks.len() + 8);
    for (index, check) in checks.iter().enumerate() {
        let mut z_bytes = [0u8; 32];
        coefficients.fill(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        base_scalar -= z * s_values[index];
        scalars.push(z);
        points.push(nonces[index]);
        let key_bytes = *check.key.as_bytes();
        let entry = match key_scalars.entry(key_bytes) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let Some(point) = CompressedEdwardsY(key_bytes).decompress() else {
                    return false;
                };
                if point.is_small_order() {
                    return false;
                }
                entry.insert((point, Scalar::ZERO))
            }
        };
        entry.1 += z * challenges[index];
    }
    for (point, scalar) in key_scalars.into_values() {
        points.push(point);
        scalars.push(scalar);
    }
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    scalars.push(base_scalar);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Remembers parsed `did:key`s: decoding one costs a base58 decode and an Edwards point
/// decompression, and a snapshot's manifests are signed by a handful of organisation keys.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<String, PublicKey>,
}

impl KeyCache {
    /// Most keys remembered; past this the cache starts over, so hostile input with a new key
    /// per manifest costs no more memory than this.
    pub const ENTRIES_MAX: usize = 4096;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `did`, or returns the key parsed before.
    pub fn parse(&mut self, did: &str) -> Result<PublicKey, KeyError> {
        if let Some(key) = self.keys.get(did) {
            return Ok(*key);
        }
        let key = PublicKey::from_did(did)?;
        if self.keys.len() >= Self::ENTRIES_MAX {
            self.keys.clear();
        }
        self.keys.insert(did.to_owned(), key);
        Ok(key)
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

    /// The 32-byte secret (seed): for handing the same key to another ed25519 implementation,
    /// such as the libp2p identity of a node.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
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
    fn batches_accept_good_and_refuse_any_bad_signature() {
        let keys: Vec<Keypair> = (0..3).map(|i| Keypair::from_secret(&[i; 32])).collect();
        let messages: Vec<Vec<u8>> = (0..50u32)
            .map(|i| i.to_be_bytes().repeat(i as usize))
            .collect();
        let checks: Vec<SignatureCheck<'_>> = messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let key = &keys[i % 3];
                SignatureCheck {
                    key: key.public(),
                    message,
                    signature: key.sign(message),
                }
            })
            .collect();
        assert!(verify_batch(&checks, &[1; 32]));
        assert!(verify_batch(&[], &[1; 32]));
        for index in [0, 17, 49] {
            let mut bad = checks.clone();
            bad[index].signature[5] ^= 1;
            assert!(!verify_batch(&bad, &[1; 32]), "flipped R of {index}");
            let mut bad = checks.clone();
            bad[index].key = keys[(index + 1) % 3].public();
            assert!(!verify_batch(&bad, &[1; 32]), "wrong key for {index}");
            let mut bad = checks.clone();
            bad[index].message = b"other";
            assert!(!verify_batch(&bad, &[1; 32]), "other message for {index}");
        }
        // A non-canonical s (s + l) is refused even though it satisfies the equation mod l.
        let mut bad = checks.clone();
        let mut s = [0u8; 32];
        s.copy_from_slice(&bad[3].signature[32..]);
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(s[i]) + u16::from(l[i]) + carry;
            s[i] = sum as u8;
            carry = sum >> 8;
        }
        bad[3].signature[32..].copy_from_slice(&s);
        assert!(!verify_batch(&bad, &[1; 32]));
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
