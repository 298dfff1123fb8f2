//! Key lifecycle: moving stored ciphertexts to the current format while the service runs
//! (`rewrap`), and bringing in the original service's database (`import-legacy`).
//!
//! Both are written once against [`crate::store`], so they work the same on SQLite and
//! PostgreSQL; the command-line modules only parse options and show progress.

pub mod import;
pub mod rewrap;

use crate::crypto::DecryptError;

/// A row that could not be converted, named without any secret: its id (a legacy id may not
/// be a UUID), merchant, platform and a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    pub id: String,
    pub merchant_id: String,
    pub platform_name: String,
    pub code: &'static str,
}

fn row_failure(
    id: impl ToString,
    merchant_id: &str,
    platform_name: &str,
    code: &'static str,
) -> RowFailure {
    RowFailure {
        id: id.to_string(),
        merchant_id: merchant_id.to_owned(),
        platform_name: platform_name.to_owned(),
        code,
    }
}

/// The stable code of a decryption failure, for reports and audit rows.
fn decrypt_error_code(err: &DecryptError) -> &'static str {
    match err {
        DecryptError::Malformed => "MALFORMED_CIPHERTEXT",
        DecryptError::UnknownKey => "UNKNOWN_KEY",
        DecryptError::Unauthentic => "DECRYPTION_FAILED",
    }
}
