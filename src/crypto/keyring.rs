//! The keyring: one primary key for new ciphertexts, older keys kept to read old rows.

use std::collections::{HashMap, HashSet};

use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::legacy::FernetKey;

/// Secrets shorter than this are refused: they are not strong enough to derive keys from.
pub const MIN_SECRET_LEN: usize = 32;

/// A keyring entry's name, stored beside every ciphertext: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(value: &str) -> Result<Self, KeyringError> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(KeyringError::BadId(value.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("key id {0:?} must be 1-64 characters of letters, digits, '_' or '-'")]
    BadId(String),
    #[error("the secret of key {0:?} is shorter than {MIN_SECRET_LEN} characters")]
    ShortSecret(String),
    #[error("key id {0:?} appears more than once")]
    DuplicateId(String),
}

/// The keys derived from one keyring secret, once at start-up; all are zeroized on drop.
pub(super) struct Kek {
    /// Wraps the data keys of the envelope format.
    pub(super) cipher: Aes256Gcm,
    /// Opens what the original service wrote with this secret.
    pub(super) legacy: FernetKey,
}

/// All keys the service can decrypt with, and the one it encrypts with.
pub struct Keyring {
    primary: KeyId,
    keys: HashMap<KeyId, Kek>,
}

impl Keyring {
    /// Builds the keyring, deriving every key-encryption key and every legacy Fernet key now,
    /// so no request pays for it (the Fernet derivation alone is 100,000 PBKDF2 rounds).
    pub fn new(
        primary: (KeyId, &SecretString),
        old: &[(KeyId, SecretString)],
    ) -> Result<Self, KeyringError> {
        Self::check((&primary.0, primary.1), old)?;
        let entries =
            std::iter::once(primary.clone()).chain(old.iter().map(|(id, s)| (id.clone(), s)));
        let keys = entries
            .map(|(id, secret)| {
                let kek = Kek {
                    cipher: derive_kek(&id, secret),
                    legacy: FernetKey::derive(secret),
                };
                (id, kek)
            })
            .collect();
        Ok(Self {
            primary: primary.0,
            keys,
        })
    }

    /// Checks the keyring's rules (secret length, unique ids) without deriving any key, so
    /// configuration can be validated cheaply.
    pub fn check(
        primary: (&KeyId, &SecretString),
        old: &[(KeyId, SecretString)],
    ) -> Result<(), KeyringError> {
        let all = || std::iter::once(primary).chain(old.iter().map(|(id, s)| (id, s)));
        // Ids first, so that a short secret under a repeated id is reported as the repeat.
        let mut seen = HashSet::new();
        if let Some((id, _)) = all().find(|(id, _)| !seen.insert(*id)) {
            return Err(KeyringError::DuplicateId(id.0.clone()));
        }
        if let Some((id, _)) =
            all().find(|(_, secret)| secret.expose_secret().chars().count() < MIN_SECRET_LEN)
        {
            return Err(KeyringError::ShortSecret(id.0.clone()));
        }
        Ok(())
    }

    pub fn primary_id(&self) -> &KeyId {
        &self.primary
    }

    pub(super) fn primary(&self) -> (&KeyId, &Kek) {
        (&self.primary, &self.keys[&self.primary])
    }

    pub(super) fn get(&self, id: &str) -> Option<&Kek> {
        // Key ids are few; a linear scan avoids allocating a KeyId per lookup.
        self.keys
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .map(|(_, kek)| kek)
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// HKDF-SHA256 over the secret, with the key id in the info so every entry gets its own key.
fn derive_kek(id: &KeyId, secret: &SecretString) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(
        Some(b"token-service/kek"),
        secret.expose_secret().as_bytes(),
    );
    let mut okm = Zeroizing::new([0u8; 32]);
    let info = format!("token-service/kek/v1/{}", id.as_str());
    hk.expand(info.as_bytes(), okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(okm.as_ref()).expect("32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn refuses_short_secrets_and_duplicate_ids() {
        let id = KeyId::parse("k1").unwrap();
        let short = secret("too-short");
        assert_eq!(
            Keyring::new((id.clone(), &short), &[]).unwrap_err(),
            KeyringError::ShortSecret("k1".into())
        );
        let long = secret(&"s".repeat(32));
        let dup = [(id.clone(), secret(&"t".repeat(40)))];
        assert_eq!(
            Keyring::new((id, &long), &dup).unwrap_err(),
            KeyringError::DuplicateId("k1".into())
        );
    }

    #[test]
    fn key_ids_are_restricted() {
        assert!(KeyId::parse("key_v1-2").is_ok());
        for bad in ["", "a.b", "a:b", "a b", &"k".repeat(65)] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_lists_ids_but_no_key_material() {
        let s = secret("super-secret-keyring-material-0123456789");
        let ring = Keyring::new((KeyId::parse("k1").unwrap(), &s), &[]).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1"));
        assert!(!shown.contains("super-secret"));
    }
}
