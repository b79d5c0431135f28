//! The transmitter's signing key: loading it, its public JWK Set, and signing a SET.
//!
//! Owns the choice of algorithm for a key, the key's `kid` (its RFC 7638 thumbprint, so the
//! same key always has the same id and a new key a new one) and the compact JWS of a SET. JOSE
//! is `jsonwebtoken`'s; nothing is hand-rolled. Signing is deterministic (RSASSA-PKCS1-v1_5 by
//! construction, ECDSA through RFC 6979 nonces in the RustCrypto backend), so the same claims
//! always give the same bytes: a re-sent SET is the SET sent before. It must never log or
//! return the private key.

use std::fmt;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::config::{SigningAlgorithm, SsfConfig};
use super::SsfError;

/// RSA keys shorter than this are refused: the CAEP interoperability profile asks for 2048
/// bits, and strict receivers refuse less.
const MIN_RSA_BITS: usize = 2048;

/// The media type SSF requires in every SET's `typ` header (RFC 8417 drops `application/`).
pub const SET_TYP: &str = "secevent+jwt";

pub struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: String,
    /// The public key as published, with `kid`, `use` and `alg`.
    jwk: serde_json::Value,
}

// Written by hand so that no derive can ever print key material.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ {:?}, kid {} }}", self.algorithm, self.kid)
    }
}

impl Signer {
    /// The key `signing_key_file` names, for the configured algorithm. Errors name the file
    /// and what is wrong with it, never its content.
    pub fn load(config: &SsfConfig) -> Result<Signer, SsfError> {
        let path = &config.signing_key_file;
        let pem = std::fs::read(path).map_err(|source| SsfError::KeyFile {
            sink: config.name.clone(),
            path: path.clone(),
            source,
        })?;
        Signer::from_pem(&config.name, path, &pem, config.algorithm)
    }

    pub(super) fn from_pem(
        sink: &str,
        path: &std::path::Path,
        pem: &[u8],
        algorithm: SigningAlgorithm,
    ) -> Result<Signer, SsfError> {
        let bad = |expected: &str, detail: String| SsfError::BadKey {
            sink: sink.to_owned(),
            path: path.to_owned(),
            expected: expected.to_owned(),
            detail,
        };
        let (algorithm, key) = match algorithm {
            SigningAlgorithm::RS256 => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(pem).map_err(|e| bad("RSA", e.to_string()))?,
            ),
            SigningAlgorithm::ES256 => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(pem).map_err(|e| bad("P-256", e.to_string()))?,
            ),
        };
        let mut jwk =
            Jwk::from_encoding_key(&key, algorithm).map_err(|e| bad("usable", e.to_string()))?;
        match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&rsa.n)
                    .map_err(|e| bad("RSA", e.to_string()))?;
                let bits = significant_bits(&n);
                if bits < MIN_RSA_BITS {
                    return Err(SsfError::ShortKey {
                        sink: sink.to_owned(),
                        path: path.to_owned(),
                        bits,
                    });
                }
            }
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {}
            _ => return Err(bad("P-256", "another kind of key".into())),
        }
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| bad("usable", e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwk = serde_json::to_value(&jwk).map_err(|e| bad("usable", e.to_string()))?;
        Ok(Signer {
            algorithm,
            key,
            kid,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK Set receivers verify SETs with (`jwks_uri`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// The compact JWS of `claims`, with `typ` `secevent+jwt` and this key's `kid`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(SET_TYP.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// The bit length of a big-endian unsigned integer.
fn significant_bits(bytes: &[u8]) -> usize {
    let skipped = bytes.iter().take_while(|b| **b == 0).count();
    match bytes.get(skipped) {
        None => 0,
        Some(first) => (bytes.len() - skipped) * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// Test keys (made for these tests, never used elsewhere), beside the fixtures.
    pub const RSA_KEY: &str = include_str!("../../../tests/fixtures/ssf/rsa-2048.pem");
    const RSA_SHORT: &str = include_str!("../../../tests/fixtures/ssf/rsa-1024.pem");
    const EC_KEY: &str = include_str!("../../../tests/fixtures/ssf/p256.pem");

    pub fn rsa() -> Signer {
        Signer::from_pem(
            "s",
            "k.pem".as_ref(),
            RSA_KEY.as_bytes(),
            SigningAlgorithm::RS256,
        )
        .unwrap()
    }

    fn verify(signer: &Signer, token: &str) -> serde_json::Value {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("kid in JWKS");
        let mut v = Validation::new(header.alg);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn rs256_sets_verify_with_the_published_jwks_and_the_same_claims_sign_to_the_same_bytes() {
        let signer = rsa();
        let claims = serde_json::json!({"iss": "https://i", "jti": "1", "events": {}});
        let a = signer.sign(&claims).unwrap();
        assert_eq!(a, signer.sign(&claims).unwrap(), "deterministic");
        assert_eq!(verify(&signer, &a), claims);
        let jwk = &signer.jwks()["keys"][0];
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        // RFC 7638: SHA-256 of {"e","kty","n"} in that order, base64url without padding.
        let thumb = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        );
        use sha2::Digest;
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(thumb.as_bytes()));
        assert_eq!(signer.kid(), expected);
        assert_eq!(jwk["kid"], expected.as_str());
    }

    #[test]
    fn es256_signatures_are_deterministic_and_verify() {
        let signer = Signer::from_pem(
            "s",
            "k.pem".as_ref(),
            EC_KEY.as_bytes(),
            SigningAlgorithm::ES256,
        )
        .unwrap();
        let claims = serde_json::json!({"jti": "x"});
        let a = signer.sign(&claims).unwrap();
        assert_eq!(a, signer.sign(&claims).unwrap(), "RFC 6979 nonces");
        assert_eq!(verify(&signer, &a), claims);
        assert_eq!(signer.jwks()["keys"][0]["crv"], "P-256");
    }

    #[test]
    fn a_short_rsa_key_or_the_wrong_kind_of_key_is_refused_naming_the_file() {
        let short = Signer::from_pem(
            "s",
            "short.pem".as_ref(),
            RSA_SHORT.as_bytes(),
            SigningAlgorithm::RS256,
        )
        .unwrap_err();
        let said = short.to_string();
        assert!(
            said.contains("1024 bits") && said.contains("short.pem"),
            "{said}"
        );
        let wrong = Signer::from_pem(
            "s",
            "ec.pem".as_ref(),
            EC_KEY.as_bytes(),
            SigningAlgorithm::RS256,
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("ec.pem"), "{wrong}");
        assert!(!wrong.to_string().contains("PRIVATE"), "{wrong}");
    }
}
