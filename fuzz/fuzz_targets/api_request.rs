//! The control API's request decoder (`weft_api::decode_request`), which
//! the daemon runs on every line a client sends.
//!
//! Checks: nothing panics; a refusal's message stays short (a hostile
//! request is never echoed back whole); an accepted request survives a
//! round trip through its own JSON unchanged (no field is dropped or
//! invented).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_api::{decode_request, MAX_MESSAGE};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    match decode_request(&line) {
        Ok(request) => {
            let text = serde_json::to_string(&request).expect("a request serializes");
            let again = decode_request(&text).expect("a request's own JSON decodes");
            assert_eq!(again, request);
        }
        Err(e) => {
            assert!(
                e.message.len() <= MAX_MESSAGE + '…'.len_utf8(),
                "a {}-byte error message",
                e.message.len()
            );
        }
    }
});
