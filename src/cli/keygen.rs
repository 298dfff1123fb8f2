//! `token-service keygen`: a fresh random secret, printed once.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

/// 32 random bytes, base64url: 43 characters, above the keyring's 32-character minimum.
pub fn new_secret() -> String {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    URL_SAFE_NO_PAD.encode(bytes.as_ref())
}

pub fn run() {
    println!("{}", new_secret());
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_long_enough_and_fresh() {
        let (a, b) = (super::new_secret(), super::new_secret());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
