//! The Authorization header is the first thing an attacker controls: any client JWT or
//! service key must be refused or accepted cleanly.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use token_service::config::{ClientJwtSettings, ServiceKey};
use token_service::http::auth::Authenticator;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let client = ClientJwtSettings {
            secret: SecretString::from("fuzz-client-secret-0123456789abcdef".to_owned()),
            require_exp: true,
            audience: Some("token-service".into()),
            issuer: None,
        };
        let keys = [ServiceKey {
            service: "platform-connector".into(),
            key: SecretString::from("fuzz-service-key-0123456789".to_owned()),
        }];
        Authenticator::new(&client, &keys, HashSet::from(["platform-connector".to_owned()]))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let auth = authenticator();
    let _ = auth.authenticate_client(text);
    let _ = auth.authenticate_service(text);
});
