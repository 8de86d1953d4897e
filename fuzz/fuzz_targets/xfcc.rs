//! The `x-forwarded-client-cert` header: the grammar, and taking the connection's certificate out
//! of it. Input: the connection's digest, a newline, then the header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::pem::sha256_hex;
use loopback_guard_core::xfcc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (digest, header) = text.split_once('\n').unwrap_or(("", &text));

    if let Ok(elements) = xfcc::parse(header) {
        assert!(!elements.is_empty(), "parsed to no element: {header:?}");
        for element in &elements {
            for key in ["hash", "cert", "uri", "by", "subject", "dns"] {
                let _ = element.unique(key);
            }
        }
    }
    // The one property the fallback path rests on: whatever comes out is the certificate whose
    // digest the connection reported.
    if let Ok(der) = xfcc::peer_certificate_der(header, digest) {
        assert!(sha256_hex(&der).eq_ignore_ascii_case(digest), "certificate does not match {digest:?}");
    }
});
