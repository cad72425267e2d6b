//! SCA policy files (Wazuh's YAML): any text parses to a policy or to errors
//! naming the file and line, never a panic; a policy that parses has the
//! checks it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::recommend::policy::{Origin, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, "fuzz.yml", Origin::LocalFile) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
        }
    }
});
