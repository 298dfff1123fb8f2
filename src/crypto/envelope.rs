//! Envelope encryption of one record.
//!
//! Stored form: `tse1.<key id>.<base64url(wrap nonce | wrapped data key | data nonce | ciphertext)>`.
//! A fresh 256-bit data key encrypts the record with AES-256-GCM; the keyring's key wraps
//! the data key. Both layers authenticate the same associated data: the format version, the
//! key id and the row identity (merchant_id, platform_name), so a ciphertext moved to another
//! row, or relabelled with another key id, does not open.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

use super::{DecryptError, Keyring};

/// The version tag that starts every ciphertext this code writes.
pub const FORMAT_PREFIX: &str = "tse1";

const NONCE_LEN: usize = 12;
const WRAPPED_KEY_LEN: usize = 32 + 16;
const HEADER_LEN: usize = NONCE_LEN + WRAPPED_KEY_LEN + NONCE_LEN;

/// The row a ciphertext belongs to; bound into its associated data.
#[derive(Debug, Clone, Copy)]
pub struct RowIdentity<'a> {
    pub merchant_id: &'a str,
    pub platform_name: &'a str,
}

impl RowIdentity<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + key_id.len() + self.merchant_id.len() + 16);
        aad.extend_from_slice(FORMAT_PREFIX.as_bytes());
        for part in [key_id, self.merchant_id, self.platform_name] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

impl Keyring {
    /// Encrypts `plaintext` for `row` under the primary key. Returns the stored string and
    /// the id of the key used.
    pub fn seal(&self, row: RowIdentity<'_>, plaintext: &[u8]) -> (String, &str) {
        let (key_id, kek) = self.primary();
        let aad = row.associated_data(key_id.as_str());

        let mut data_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(data_key.as_mut());
        let wrap_nonce = Aes256Gcm::generate_nonce(OsRng);
        let wrapped = kek
            .cipher
            .encrypt(
                &wrap_nonce,
                Payload {
                    msg: data_key.as_slice(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");

        let data_nonce = Aes256Gcm::generate_nonce(OsRng);
        let ciphertext = Aes256Gcm::new_from_slice(data_key.as_slice())
            .expect("32-byte key")
            .encrypt(
                &data_nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a bounded record cannot fail");

        let mut blob = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        blob.extend_from_slice(&wrap_nonce);
        blob.extend_from_slice(&wrapped);
        blob.extend_from_slice(&data_nonce);
        blob.extend_from_slice(&ciphertext);
        let stored = format!(
            "{FORMAT_PREFIX}.{}.{}",
            key_id.as_str(),
            URL_SAFE_NO_PAD.encode(blob)
        );
        (stored, key_id.as_str())
    }

    /// Decrypts a stored string written by [`Keyring::seal`] for the same row.
    pub fn open(
        &self,
        row: RowIdentity<'_>,
        stored: &str,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let mut parts = stored.splitn(3, '.');
        let (Some(FORMAT_PREFIX), Some(key_id), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(DecryptError::Malformed);
        };
        let kek = self.get(key_id).ok_or(DecryptError::UnknownKey)?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DecryptError::Malformed)?;
        if blob.len() < HEADER_LEN + 16 {
            return Err(DecryptError::Malformed);
        }
        let aad = row.associated_data(key_id);
        let (wrap_nonce, rest) = blob.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED_KEY_LEN);
        let (data_nonce, ciphertext) = rest.split_at(NONCE_LEN);

        let data_key = Zeroizing::new(
            kek.cipher
                .decrypt(
                    Nonce::from_slice(wrap_nonce),
                    Payload {
                        msg: wrapped,
                        aad: &aad,
                    },
                )
                .map_err(|_| DecryptError::Unauthentic)?,
        );
        let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| DecryptError::Malformed)?;
        cipher
            .decrypt(
                Nonce::from_slice(data_nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| DecryptError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyId;
    use secrecy::SecretString;

    const ROW: RowIdentity<'static> = RowIdentity {
        merchant_id: "m-1",
        platform_name: "shopify",
    };

    fn ring(primary: &str, secret: &str, old: &[(&str, &str)]) -> Keyring {
        let old: Vec<_> = old
            .iter()
            .map(|(id, s)| (KeyId::parse(id).unwrap(), SecretString::from(s.to_string())))
            .collect();
        let secret = SecretString::from(secret.to_owned());
        Keyring::new((KeyId::parse(primary).unwrap(), &secret), &old).unwrap()
    }

    const S1: &str = "first-secret-0123456789abcdefghijklmnop";
    const S2: &str = "second-secret-0123456789abcdefghijklmno";

    #[test]
    fn round_trip_names_version_and_key() {
        let ring = ring("k1", S1, &[]);
        let (stored, key_id) = ring.seal(ROW, br#"{"access_token":"x"}"#);
        assert_eq!(key_id, "k1");
        assert!(stored.starts_with("tse1.k1."));
        assert_eq!(
            ring.open(ROW, &stored).unwrap().as_slice(),
            br#"{"access_token":"x"}"#
        );
    }

    #[test]
    fn every_encryption_uses_fresh_randomness() {
        let ring = ring("k1", S1, &[]);
        let (a, _) = ring.seal(ROW, b"same");
        let (b, _) = ring.seal(ROW, b"same");
        assert_ne!(a, b);
        let blob = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s.rsplit('.').next().unwrap())
                .unwrap()
        };
        assert_ne!(blob(&a)[..NONCE_LEN], blob(&b)[..NONCE_LEN]);
        assert_ne!(
            blob(&a)[NONCE_LEN + WRAPPED_KEY_LEN..HEADER_LEN],
            blob(&b)[NONCE_LEN + WRAPPED_KEY_LEN..HEADER_LEN]
        );
    }

    #[test]
    fn wrong_key_with_the_same_id_fails() {
        let (stored, _) = ring("k1", S1, &[]).seal(ROW, b"secret");
        assert_eq!(
            ring("k1", S2, &[]).open(ROW, &stored).unwrap_err(),
            DecryptError::Unauthentic
        );
    }

    #[test]
    fn unknown_key_id_fails() {
        let (stored, _) = ring("k1", S1, &[]).seal(ROW, b"secret");
        assert_eq!(
            ring("k2", S1, &[]).open(ROW, &stored).unwrap_err(),
            DecryptError::UnknownKey
        );
    }

    #[test]
    fn old_keys_still_open_their_rows() {
        let (stored, _) = ring("k1", S1, &[]).seal(ROW, b"secret");
        let rotated = ring("k2", S2, &[("k1", S1)]);
        assert_eq!(rotated.open(ROW, &stored).unwrap().as_slice(), b"secret");
        let (fresh, key_id) = rotated.seal(ROW, b"secret");
        assert_eq!(key_id, "k2");
        assert!(fresh.starts_with("tse1.k2."));
    }

    #[test]
    fn another_rows_identity_fails() {
        let ring = ring("k1", S1, &[]);
        let (stored, _) = ring.seal(ROW, b"secret");
        for other in [
            RowIdentity {
                merchant_id: "m-2",
                platform_name: "shopify",
            },
            RowIdentity {
                merchant_id: "m-1",
                platform_name: "magento",
            },
            // Length prefixes keep the boundary between the two parts unambiguous.
            RowIdentity {
                merchant_id: "m-1s",
                platform_name: "hopify",
            },
        ] {
            assert_eq!(
                ring.open(other, &stored).unwrap_err(),
                DecryptError::Unauthentic
            );
        }
    }

    #[test]
    fn relabelled_key_id_fails() {
        let ring = ring("k1", S1, &[("k0", S1)]);
        let (stored, _) = ring.seal(ROW, b"secret");
        let relabelled = stored.replacen("tse1.k1.", "tse1.k0.", 1);
        assert_eq!(
            ring.open(ROW, &relabelled).unwrap_err(),
            DecryptError::Unauthentic
        );
    }

    #[test]
    fn every_flipped_byte_fails() {
        let ring = ring("k1", S1, &[]);
        let (stored, _) = ring.seal(ROW, b"secret payload");
        let prefix = "tse1.k1.".len();
        let mut blob = URL_SAFE_NO_PAD.decode(&stored[prefix..]).unwrap();
        for i in 0..blob.len() {
            blob[i] ^= 0x01;
            let tampered = format!("tse1.k1.{}", URL_SAFE_NO_PAD.encode(&blob));
            assert!(ring.open(ROW, &tampered).is_err(), "byte {i}");
            blob[i] ^= 0x01;
        }
    }

    #[test]
    fn malformed_strings_fail_cleanly() {
        let ring = ring("k1", S1, &[]);
        for bad in [
            "",
            "tse1",
            "tse1.k1",
            "tse1.k1.!!!",
            "tse1.k1.AAAA",
            "gAAAAA",
            "tse2.k1.AAAA",
        ] {
            assert!(ring.open(ROW, bad).is_err(), "{bad:?}");
        }
    }
}
