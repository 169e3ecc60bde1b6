//! A module's first bytes → its kind, and a component's exports → whether
//! it is an HTTP handler: both read before anything is compiled.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = executor::kind::detect(data);
    let _ = executor::kind::is_http_proxy(data);
});
