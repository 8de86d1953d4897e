//! The request authority's grammar (issue 17), against the `http` crate's URI authority as the
//! reference: whatever the guard takes as an authority, `http` takes too, with the same host
//! and port; and nothing with userinfo, or that is not loopback to `http` as well, is loopback.
#![no_main]

use std::net::IpAddr;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::authority::{Authority, HostPart};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(ours) = Authority::parse(text) else { return };
    let reference = http::uri::Authority::from_str(text)
        .unwrap_or_else(|e| panic!("{text:?}: parsed, but the reference refuses it: {e}"));
    assert!(!text.contains('@'), "{text:?}: userinfo taken for a host");
    assert_eq!(ours.port, reference.port_u16(), "{text:?}: another port");
    // `http` keeps an IPv6 literal's brackets.
    let host = reference.host();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match ours.host {
        HostPart::Name(name) => {
            assert_eq!(name, host, "{text:?}: another host");
            assert!(bare.parse::<IpAddr>().is_err(), "{text:?}: an address taken for a name");
        }
        HostPart::Ip(ip) => assert_eq!(bare.parse::<IpAddr>().ok(), Some(ip), "{text:?}: another address"),
    }
    if ours.is_loopback() {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback());
        assert!(loopback, "{text:?}: loopback, but not to the reference");
    }
});
