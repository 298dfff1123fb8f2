//! Any stored ciphertext, whatever wrote it: the envelope format under any keyring key, or
//! the original service's Fernet format. This is what reads, `rewrap` and `import-legacy`
//! go through, so that every format stays readable until it has been rewritten.

use zeroize::Zeroizing;

use super::envelope::FORMAT_PREFIX;
use super::{DecryptError, Keyring, RowIdentity};

/// Where a stored ciphertext stands relative to this keyring, decided from its text alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredFormat {
    /// The envelope format under the primary key: nothing to rewrite.
    Current,
    /// The envelope format under another key id (an old key, or an unknown one).
    OtherKey,
    /// Anything else is taken for the original service's Fernet format.
    Legacy,
}

impl Keyring {
    /// How every ciphertext in the current format starts: `tse1.<primary key id>.`.
    pub fn current_prefix(&self) -> String {
        format!("{FORMAT_PREFIX}.{}.", self.primary_id().as_str())
    }

    /// Where `stored` stands: what `rewrap` converts and how a read opens it.
    pub fn format_of(&self, stored: &str) -> StoredFormat {
        let envelope = stored
            .strip_prefix(FORMAT_PREFIX)
            .is_some_and(|rest| rest.starts_with('.'));
        if !envelope {
            StoredFormat::Legacy
        } else if stored.starts_with(&self.current_prefix()) {
            StoredFormat::Current
        } else {
            StoredFormat::OtherKey
        }
    }

    /// Decrypts a row's ciphertext in whichever format it is. `key_id` is the row's
    /// `encryption_key_id` column: it names the secret of a legacy row (the envelope
    /// format names, and authenticates, its own key id).
    pub fn open_stored(
        &self,
        row: RowIdentity<'_>,
        key_id: &str,
        stored: &str,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        match self.format_of(stored) {
            StoredFormat::Current | StoredFormat::OtherKey => self.open(row, stored),
            StoredFormat::Legacy => self
                .get(key_id)
                .ok_or(DecryptError::UnknownKey)?
                .legacy
                .decrypt(stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::crypto::KeyId;

    const OTHER: &str = "some-other-secret-0123456789abcdefghij";
    const ROW: RowIdentity<'static> = RowIdentity {
        merchant_id: "m-1",
        platform_name: "shopify",
    };

    fn ring(primary: (&str, &str), old: &[(&str, &str)]) -> Keyring {
        let old: Vec<_> = old
            .iter()
            .map(|(id, s)| (KeyId::parse(id).unwrap(), SecretString::from(s.to_string())))
            .collect();
        let secret = SecretString::from(primary.1.to_owned());
        Keyring::new((KeyId::parse(primary.0).unwrap(), &secret), &old).unwrap()
    }

    /// The shared vectors' secret and (ciphertext, plaintext) pairs.
    fn vectors() -> (String, Vec<(String, String)>) {
        let v = super::super::legacy::tests::vectors();
        (v.secret.expose_secret().to_owned(), v.cases)
    }

    #[test]
    fn legacy_rows_open_with_the_secret_their_key_id_names() {
        let (secret, cases) = vectors();
        // The legacy secret kept as an old key, under the id the rows carry.
        let rotated = ring(("key_v2", OTHER), &[("key_v1", &secret)]);
        for (stored, plaintext) in &cases {
            assert_eq!(rotated.format_of(stored), StoredFormat::Legacy);
            let opened = rotated.open_stored(ROW, "key_v1", stored).unwrap();
            assert_eq!(opened.as_slice(), plaintext.as_bytes());
            // Fernet has no row binding: any row identity opens it.
            let elsewhere = RowIdentity {
                merchant_id: "m-2",
                platform_name: "magento",
            };
            assert!(rotated.open_stored(elsewhere, "key_v1", stored).is_ok());
        }
    }

    #[test]
    fn legacy_rows_fail_under_any_other_secret_or_an_unknown_id() {
        let (secret, cases) = vectors();
        let ring = ring(("key_v1", OTHER), &[("legacy", &secret)]);
        for (stored, _) in &cases {
            assert_eq!(
                ring.open_stored(ROW, "key_v1", stored).unwrap_err(),
                DecryptError::Unauthentic
            );
            assert_eq!(
                ring.open_stored(ROW, "key_v9", stored).unwrap_err(),
                DecryptError::UnknownKey
            );
        }
    }

    #[test]
    fn envelope_rows_are_classified_by_their_key_id() {
        let (secret, _) = vectors();
        let old = ring(("k1", &secret), &[]);
        let (sealed_k1, _) = old.seal(ROW, b"{}");
        let new = ring(("k2", OTHER), &[("k1", &secret)]);
        let (sealed_k2, _) = new.seal(ROW, b"{}");
        assert_eq!(new.format_of(&sealed_k1), StoredFormat::OtherKey);
        assert_eq!(new.format_of(&sealed_k2), StoredFormat::Current);
        assert_eq!(new.current_prefix(), "tse1.k2.");
        // The column's key id does not matter for the envelope format: it names its own.
        assert_eq!(
            new.open_stored(ROW, "whatever", &sealed_k1)
                .unwrap()
                .as_slice(),
            b"{}"
        );
    }
}
