//! Stored ciphertexts (new and legacy formats) come from the database, which an attacker may have written to: decoding
//! any string must fail cleanly, never panic or allocate without bound.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use token_service::crypto::{KeyId, Keyring, RowIdentity};

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        let primary = SecretString::from("fuzz-primary-secret-0123456789abcdefgh".to_owned());
        let old = [(
            KeyId::parse("old").unwrap(),
            SecretString::from("fuzz-old-secret-0123456789abcdefghijklm".to_owned()),
        )];
        Keyring::new((KeyId::parse("k1").unwrap(), &primary), &old).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let row = RowIdentity { merchant_id: "m-1", platform_name: "shopify" };
    let ring = keyring();
    let _ = ring.open(row, text);
    // Also behind valid prefixes, so the fuzzer reaches the base64 and AEAD layers.
    let _ = ring.open(row, &format!("tse1.k1.{text}"));
    let _ = ring.open(row, &format!("tse1.old.{text}"));
    // Rows in the original service's format (double-base64 Fernet) name their key by column.
    let _ = ring.open_stored(row, "k1", text);
    let _ = ring.open_stored(row, "old", text);
});
