//! Signed checkpoints: an Ed25519 signature over the chain's head, carried by a
//! `rollcall.checkpoint` event in the log itself.
//!
//! Owns the signing key file (`[store] signing_key_file`: PKCS#8 PEM, as `openssl genpkey
//! -algorithm ed25519` writes it), the public key's text form (`ed25519:<base64>`), the exact
//! bytes signed, and checking a checkpoint against a pinned key. It never puts the private key
//! in any output, error or `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{hex, Hash};

/// What a public key's text starts with.
const KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the checkpoint signing key {path} (`[store] signing_key_file`). Create one with `openssl genpkey -algorithm ed25519 -out {path}` (then `chmod 600` it), or remove `signing_key_file` to chain without signed checkpoints")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} (`[store] signing_key_file`) is not an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {why}. Create one with `openssl genpkey -algorithm ed25519 -out {path}`")]
    Bad { path: PathBuf, why: String },
    #[error("`{0}` is not a rollcall public key: expected `ed25519:` followed by the base64 of 32 bytes, as `rollcall pubkey` prints it")]
    Public(String),
}

/// The key checkpoints are signed with.
pub struct Signer {
    key: SigningKey,
}

// Written by hand so that no derive can ever print key material.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ public: {} }}", self.public())
    }
}

impl Signer {
    /// Read the key from `path`: a PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        // The decoder's error names what it expected, never the bytes it read.
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Bad {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        Ok(Signer { key })
    }

    #[cfg(test)]
    pub(crate) fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key as `rollcall pubkey` prints it and checkpoints name it.
    pub fn public(&self) -> String {
        public_text(&self.key.verifying_key())
    }

    /// The `data` of a checkpoint of store `store` whose head is `head`, the hash of the event
    /// at `offset`.
    pub fn sign(&self, store: &str, offset: u64, head: &Hash) -> Data {
        let signature = self.key.sign(&message(store, offset, head));
        Data {
            store: store.to_owned(),
            offset,
            head: hex(head),
            key: self.public(),
            signature: BASE64.encode(signature.to_bytes()),
        }
    }
}

/// The `data` of a `rollcall.checkpoint` event (`schemas/rollcall.checkpoint.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The id of the store whose log this is.
    pub store: String,
    /// The offset of the event whose hash is `head`: the one just before the checkpoint.
    pub offset: u64,
    /// That event's `chainhash`.
    pub head: String,
    /// The public key that signed, `ed25519:<base64>`.
    pub key: String,
    /// The base64 Ed25519 signature of [`message`].
    pub signature: String,
}

/// The bytes a checkpoint signs: one line of text, so that anyone can check a signature with
/// any Ed25519 tool: `rollcall-checkpoint-v1 <store id> <offset> <head hex>`.
pub fn message(store: &str, offset: u64, head: &Hash) -> Vec<u8> {
    format!("rollcall-checkpoint-v1 {store} {offset} {}", hex(head)).into_bytes()
}

/// The id of the checkpoint made at `time` that signs `head`, the hash of the event at `offset`
/// of `store`'s log: a UUIDv7 like every event id, its time `time`'s and its 74 random bits the
/// first bits of SHA-256 of [`message`], so derived from what the checkpoint signs. A copy that
/// leaves checkpoints out (an OCSF sink's) still holds, in the event after one, its id
/// (`chainprevid`): from that and the event before the checkpoint, a verifier tells a checkpoint
/// left out from an event dropped ([`is_id_of`]), without the checkpoint. The store gives the
/// end of a full reconcile (`sync.completed`), which OCSF copies leave out too, an id derived
/// the same way from the event before it.
pub fn id(store: &str, offset: u64, head: &Hash, time: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(time.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &derived(store, offset, head)).into_uuid()
}

/// Whether `id` is that of a checkpoint signing `head` at `offset` of `store`'s log, made at
/// any time: its random bits are those [`id`] derives. An event's own id has random ones, so
/// one in 2^74 ids of dropped events would pass for a checkpoint's.
pub fn is_id_of(id: &Uuid, store: &str, offset: u64, head: &Hash) -> bool {
    let millis = id.as_bytes()[..6]
        .iter()
        .fold(0u64, |m, b| m << 8 | u64::from(*b));
    id.get_version_num() == 7
        && *id
            == uuid::Builder::from_unix_timestamp_millis(millis, &derived(store, offset, head))
                .into_uuid()
}

/// The first 10 bytes of SHA-256 of [`message`]: a checkpoint id's random bits.
fn derived(store: &str, offset: u64, head: &Hash) -> [u8; 10] {
    let digest = Sha256::digest(message(store, offset, head));
    let mut bytes = [0; 10];
    bytes.copy_from_slice(&digest[..10]);
    bytes
}

/// A public key in its text form.
pub fn public_text(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", BASE64.encode(key.to_bytes()))
}

/// A public key from its text form.
pub fn parse_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::Public(crate::text::one_line(text));
    let bytes = text
        .trim()
        .strip_prefix(KEY_PREFIX)
        .and_then(|b| BASE64.decode(b).ok())
        .ok_or_else(bad)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Why a checkpoint does not prove its head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("its `data` is not a checkpoint's ({0})")]
    Shape(String),
    #[error("it names the key `{0}`, which is not a public key")]
    Key(String),
    #[error("it is signed by {found}, not by the pinned key {pinned}")]
    OtherKey { found: String, pinned: String },
    #[error("its signature does not match what it signs")]
    Signature,
}

/// Check a checkpoint's signature (with `pinned`, or else the key it names), and return the
/// key that signed it.
pub fn check(data: &Data, head: &Hash, pinned: Option<&VerifyingKey>) -> Result<String, Refused> {
    let named =
        parse_public(&data.key).map_err(|_| Refused::Key(crate::text::one_line(&data.key)))?;
    if let Some(pinned) = pinned {
        if pinned != &named {
            return Err(Refused::OtherKey {
                found: data.key.clone(),
                pinned: public_text(pinned),
            });
        }
    }
    let signature = BASE64
        .decode(&data.signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(Refused::Signature)?;
    named
        .verify_strict(&message(&data.store, data.offset, head), &signature)
        .map_err(|_| Refused::Signature)?;
    Ok(data.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key `openssl genpkey -algorithm ed25519` wrote, and the public key `openssl pkey
    /// -pubout` gives for it.
    const OPENSSL_KEY: &str = include_str!("../../tests/fixtures/chain/signing.pem");
    const OPENSSL_PUBLIC: &str = "ed25519:tF58sv94/Hw4osQztOqJ29YBbySSQzLsJqiTNnt+Edk=";

    #[test]
    fn a_signed_head_checks_with_its_key_and_not_with_another_or_another_head() {
        let signer = Signer::from_seed([7; 32]);
        let head = super::super::next(&super::super::GENESIS, b"e");
        let data = signer.sign("store-1", 41, &head);
        let key = parse_public(&signer.public()).unwrap();
        assert_eq!(check(&data, &head, Some(&key)), Ok(signer.public()));
        assert_eq!(check(&data, &head, None), Ok(signer.public()));
        let other = parse_public(&Signer::from_seed([8; 32]).public()).unwrap();
        assert!(matches!(
            check(&data, &head, Some(&other)),
            Err(Refused::OtherKey { .. })
        ));
        let mut moved = data.clone();
        moved.offset = 42;
        assert_eq!(check(&moved, &head, None), Err(Refused::Signature));
        assert_eq!(check(&data, &[1; 32], None), Err(Refused::Signature));
    }

    #[test]
    fn a_key_file_is_read_from_pkcs8_pem_and_a_bad_one_says_what_to_do_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, OPENSSL_KEY).unwrap();
        let signer = Signer::load(&path).unwrap();
        assert_eq!(signer.public(), OPENSSL_PUBLIC);
        let seed = OPENSSL_KEY.lines().nth(1).unwrap();
        assert!(!format!("{signer:?}").contains(seed));

        let missing = Signer::load(&dir.path().join("nope.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("openssl genpkey -algorithm ed25519"),
            "{missing}"
        );
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ=\n-----END PRIVATE KEY-----\n";
        std::fs::write(&path, secret).unwrap();
        let bad = Signer::load(&path).unwrap_err().to_string();
        assert!(bad.contains("PKCS#8 PEM"), "{bad}");
        assert!(!bad.contains("c2VjcmV0"), "{bad}");
    }

    #[test]
    fn a_checkpoints_id_is_a_uuid_v7_derived_from_what_it_signs() {
        let head = super::super::next(&super::super::GENESIS, b"e");
        let time = chrono::Utc::now();
        let id = id("store-1", 41, &head, time);
        assert_eq!(id.get_version_num(), 7, "an event id like any other");
        assert_eq!(
            id,
            super::id("store-1", 41, &head, time),
            "the same every time"
        );
        assert!(is_id_of(&id, "store-1", 41, &head));
        let later = super::id("store-1", 41, &head, time + chrono::Duration::hours(1));
        assert!(
            is_id_of(&later, "store-1", 41, &head),
            "whenever it was made"
        );
        for other in [
            is_id_of(&id, "store-2", 41, &head),
            is_id_of(&id, "store-1", 40, &head),
            is_id_of(&id, "store-1", 41, &[1; 32]),
            is_id_of(&Uuid::now_v7(), "store-1", 41, &head),
        ] {
            assert!(!other);
        }
    }

    #[test]
    fn a_public_key_round_trips_through_its_text() {
        let signer = Signer::from_seed([3; 32]);
        let key = parse_public(&signer.public()).unwrap();
        assert_eq!(public_text(&key), signer.public());
        assert!(parse_public("ed25519:AAAA").is_err());
        assert!(parse_public("whpk_AAAA").is_err());
    }
}
