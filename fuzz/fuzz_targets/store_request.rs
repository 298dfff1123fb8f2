//! Request bodies of `POST /api/v1/tokens`: parsing and validation of any bytes must end in
//! a request or a list of field errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::domain::StoreTokenRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = StoreTokenRequest::parse(data) {
        // What validation accepts stays within its limits.
        assert!(request.token_data.as_str().len() <= 16 * 1024);
        let _ = request.token_data.hints();
    }
});
