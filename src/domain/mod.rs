//! Validated domain types: once a value is one of these, it obeys the contract's rules.

mod identifiers;
mod store_request;
mod token_data;

pub use identifiers::{MerchantId, Platform, PlatformShopId, Scopes, ShopDomain, TokenType};
pub use store_request::StoreTokenRequest;
pub use token_data::{TokenDataHints, TokenDataJson};

use serde::Serialize;

/// One rule a piece of input broke; rendered under `details.validation_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl FieldError {
    pub fn new(field: impl Into<String>, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind,
        }
    }

    /// The same error reported against another field name (used for path and query values).
    pub fn for_field(mut self, field: &str) -> Self {
        self.field = field.to_owned();
        self
    }
}
