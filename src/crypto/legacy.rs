//! Reading ciphertexts written by the original (Python) service.
//!
//! It stored `base64url(Fernet token)`: the Fernet token is itself base64url text, so the
//! column holds base64 twice. The Fernet key was `base64url(PBKDF2-HMAC-SHA256(secret,
//! salt "token-service-salt", 100,000 iterations, 32 bytes))`; its first half signs
//! (HMAC-SHA256), its second half encrypts (AES-128-CBC, PKCS#7). A Fernet token is
//! `0x80 | timestamp (8) | IV (16) | ciphertext | HMAC (32)`, the HMAC covering all before it.
//!
//! Only decryption is offered: nothing writes this format any more.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::DecryptError;

/// The original service's fixed PBKDF2 salt.
const SALT: &[u8] = b"token-service-salt";
/// The original service's PBKDF2 iteration count.
const ITERATIONS: u32 = 100_000;
const VERSION: u8 = 0x80;
const TIMESTAMP_LEN: usize = 8;
const IV_LEN: usize = 16;
const BLOCK_LEN: usize = 16;
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 1 + TIMESTAMP_LEN + IV_LEN;

/// base64url that accepts the text with or without its `=` padding, as Python wrote it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type Aes128CbcDecryptor = cbc::Decryptor<aes::Aes128>;

/// The Fernet key the original service derived from one keyring secret. Deriving it costs
/// 100,000 PBKDF2 rounds, so it is done once when the keyring is built.
pub(super) struct FernetKey {
    signing: Zeroizing<[u8; 16]>,
    encryption: Zeroizing<[u8; 16]>,
}

impl FernetKey {
    pub(super) fn derive(secret: &SecretString) -> Self {
        let mut okm = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(
            secret.expose_secret().as_bytes(),
            SALT,
            ITERATIONS,
            okm.as_mut(),
        );
        let mut signing = Zeroizing::new([0u8; 16]);
        let mut encryption = Zeroizing::new([0u8; 16]);
        signing.copy_from_slice(&okm[..16]);
        encryption.copy_from_slice(&okm[16..]);
        Self {
            signing,
            encryption,
        }
    }

    /// Decrypts a stored legacy string. The HMAC is checked (in constant time) before any
    /// decryption, so a forged token never reaches the block cipher or the padding check.
    pub(super) fn decrypt(&self, stored: &str) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let token_text = Zeroizing::new(
            BASE64URL
                .decode(stored.trim())
                .map_err(|_| DecryptError::Malformed)?,
        );
        let token = Zeroizing::new(
            BASE64URL
                .decode(token_text.as_slice())
                .map_err(|_| DecryptError::Malformed)?,
        );
        let body_len = token.len().checked_sub(HEADER_LEN + MAC_LEN);
        match body_len {
            Some(n) if n >= BLOCK_LEN && n % BLOCK_LEN == 0 && token[0] == VERSION => {}
            _ => return Err(DecryptError::Malformed),
        }
        let (signed, tag) = token.split_at(token.len() - MAC_LEN);

        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.signing.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| DecryptError::Unauthentic)?;

        let iv = &signed[1 + TIMESTAMP_LEN..HEADER_LEN];
        let mut buffer = Zeroizing::new(signed[HEADER_LEN..].to_vec());
        let plain_len = Aes128CbcDecryptor::new(self.encryption.as_ref().into(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(buffer.as_mut_slice())
            .map_err(|_| DecryptError::Unauthentic)?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE as PADDED;

    /// The shared vectors: ciphertexts exactly as the original service wrote them, the
    /// secret they were written with, the Fernet key derived from it, and the plaintexts.
    pub(in crate::crypto) struct Vectors {
        pub secret: SecretString,
        pub derived_key: String,
        /// (stored ciphertext, plaintext JSON)
        pub cases: Vec<(String, String)>,
    }

    pub(in crate::crypto) fn vectors() -> Vectors {
        const VECTORS: &str = include_str!("../../tests/fixtures/legacy_fernet_vectors.json");
        let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        let text = |value: &serde_json::Value, key: &str| value[key].as_str().unwrap().to_owned();
        let cases = v["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (text(c, "encrypted_token"), text(c, "plaintext_json")))
            .collect::<Vec<_>>();
        assert!(cases.len() >= 3, "the fixture holds the vectors");
        Vectors {
            secret: SecretString::from(text(&v, "encryption_key")),
            derived_key: text(&v, "derived_fernet_key"),
            cases,
        }
    }

    #[test]
    fn derives_the_same_fernet_key_as_the_original() {
        let v = vectors();
        let key = FernetKey::derive(&v.secret);
        let mut both = key.signing.to_vec();
        both.extend_from_slice(key.encryption.as_ref());
        assert_eq!(PADDED.encode(both), v.derived_key);
    }

    #[test]
    fn every_vector_decrypts_to_its_plaintext() {
        let v = vectors();
        let key = FernetKey::derive(&v.secret);
        for (stored, plaintext) in &v.cases {
            let opened = key.decrypt(stored).unwrap();
            assert_eq!(std::str::from_utf8(&opened).unwrap(), plaintext);
        }
    }

    #[test]
    fn every_vector_fails_with_another_secret() {
        let v = vectors();
        let others = [
            "another-secret-entirely-0123456789abcdef",
            // One character away from the right secret.
            "legacy-test-encryption-key-0123456789abcdeF",
        ];
        for other in others {
            let key = FernetKey::derive(&SecretString::from(other.to_owned()));
            for (stored, _) in &v.cases {
                assert_eq!(key.decrypt(stored).unwrap_err(), DecryptError::Unauthentic);
            }
        }
    }

    #[test]
    fn every_flipped_byte_of_the_token_fails() {
        let v = vectors();
        let key = FernetKey::derive(&v.secret);
        let (stored, _) = &v.cases[0];
        let mut token = BASE64URL.decode(BASE64URL.decode(stored).unwrap()).unwrap();
        for i in 0..token.len() {
            token[i] ^= 0x01;
            let tampered = PADDED.encode(PADDED.encode(&token));
            assert!(key.decrypt(&tampered).is_err(), "byte {i}");
            token[i] ^= 0x01;
        }
        // Untouched, it still opens: the loop above restored every byte.
        assert!(key.decrypt(&PADDED.encode(PADDED.encode(&token))).is_ok());
    }

    #[test]
    fn truncated_and_malformed_strings_fail_cleanly() {
        let v = vectors();
        let key = FernetKey::derive(&v.secret);
        let (stored, _) = &v.cases[0];
        let token = BASE64URL.decode(stored).unwrap();
        let bad = [
            String::new(),
            "not base64 !!".into(),
            PADDED.encode("not base64 either !!"),
            PADDED.encode(&token[..40]),
            stored[..stored.len() / 2].to_owned(),
            stored.replacen('Z', "a", 1),
        ];
        for text in &bad {
            assert!(key.decrypt(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn accepts_the_stored_text_without_padding() {
        let v = vectors();
        let key = FernetKey::derive(&v.secret);
        let (stored, plaintext) = &v.cases[1];
        let unpadded = stored.trim_end_matches('=');
        assert_eq!(
            key.decrypt(unpadded).unwrap().as_slice(),
            plaintext.as_bytes()
        );
    }
}
