//! Encryption at rest: a keyring of key-encryption keys and per-record envelope encryption.

mod envelope;
mod keyring;

pub use envelope::{RowIdentity, FORMAT_PREFIX};
pub use keyring::{KeyId, Keyring, KeyringError};

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
