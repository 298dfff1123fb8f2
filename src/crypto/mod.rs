//! Encryption at rest: a keyring of key-encryption keys and per-record envelope encryption,
//! plus a reader for the original service's Fernet ciphertexts.

mod envelope;
mod keyring;
mod legacy;
mod stored;

pub use envelope::{RowIdentity, FORMAT_PREFIX};
pub use keyring::{KeyId, Keyring, KeyringError};
pub use stored::StoredFormat;

/// Why a stored ciphertext could not be opened. Deliberately coarse: the reason is for logs
/// and audit rows, and none of them carries key or plaintext material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("ciphertext is not in a known format")]
    Malformed,
    #[error("ciphertext names a key that is not in the keyring")]
    UnknownKey,
    #[error("ciphertext failed authentication")]
    Unauthentic,
}
