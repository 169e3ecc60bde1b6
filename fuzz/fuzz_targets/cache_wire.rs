//! The cache conversation's lines, from a child (requests) or the shim
//! (replies): every line decodes or is refused, and whatever decodes
//! encodes back to a line that decodes to the same.
#![no_main]

use executor::cache::{decode_reply, decode_request, encode_reply, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let line = encode_request(&request);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode_request(&line[..line.len() - 1]).unwrap(), request);
    }
    if let Ok(reply) = decode_reply(data) {
        let line = encode_reply(&reply);
        assert_eq!(line.last(), Some(&b'\n'));
        // An error's message is made fit for one line; the rest round-trips.
        if !matches!(reply, executor::cache::Reply::Error(_)) {
            assert_eq!(decode_reply(&line[..line.len() - 1]).unwrap(), reply);
        }
    }
});
