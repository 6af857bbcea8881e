//! Fuzzes the CoRE Link Format parser (`fleetgate_codec::coap::link`) with untrusted register
//! bodies, and the LwM2M object list read from what it parses.
//!
//! Besides "never panics", it checks that parsed links render to a document that parses to the
//! same links, and that the limits hold.

#![no_main]

use fleetgate_codec::coap::link::{lwm2m_objects, parse, parse_bytes, render};
use libfuzzer_sys::fuzz_target;

const MAX_LINKS: usize = 64;
const MAX_LEN: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(links) = parse_bytes(data, MAX_LINKS, MAX_LEN) else {
        return;
    };
    assert!(links.len() <= MAX_LINKS);
    let _ = lwm2m_objects(&links);
    let rendered = render(&links);
    // Rendering drops only whitespace, so it never grows the document.
    assert!(rendered.len() <= data.len());
    assert_eq!(parse(&rendered, MAX_LINKS, MAX_LEN).as_ref(), Ok(&links));
});
