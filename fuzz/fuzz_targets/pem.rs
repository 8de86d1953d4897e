//! PEM and URL-encoded PEM to DER, as `connection.peer_certificate` and XFCC's `Cert` carry it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::pem::certificate_der;
use loopback_guard_fuzz::{pem_encode, url_encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = certificate_der(data) {
        // Whatever decodes must survive the trip back through both forms Envoy uses.
        let pem = pem_encode(&der);
        assert_eq!(certificate_der(pem.as_bytes()).as_ref(), Ok(&der));
        assert_eq!(certificate_der(url_encode(&pem).as_bytes()).as_ref(), Ok(&der));
    }
});
