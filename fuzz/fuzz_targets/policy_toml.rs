//! Tenant policy files: any text is accepted as a policy or refused with an error.
#![no_main]

use cloister_policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::from_toml(text, "fuzz.toml");
    }
});
