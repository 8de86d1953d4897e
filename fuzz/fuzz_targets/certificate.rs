//! The X509-SVID checks on a DER certificate: the same verdict as the checks on x509-parser's
//! deep parse of every extension, and the validity window at the clock's extremes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::identity::SpiffeId;
use loopback_guard_core::svid::{deep_parse_reference, SvidFacts};

fuzz_target!(|data: &[u8]| {
    let checked = SvidFacts::from_der(data);
    assert_eq!(checked, deep_parse_reference(data), "parsing only the extensions the rules read");
    let Ok(facts) = checked else { return };
    // An accepted ID is one the configuration would accept too, unchanged.
    assert_eq!(SpiffeId::parse(facts.spiffe_id.as_str()).as_ref(), Ok(&facts.spiffe_id));
    let (nb, na) = (facts.not_before, facts.not_after);
    let edges = [nb, na, nb.saturating_sub(1), na.saturating_add(1)];
    for now in [i64::MIN, -1, 0, 1_800_000_000, i64::MAX].into_iter().chain(edges) {
        let inside = nb <= now && now <= na;
        assert_eq!(facts.check_time(now).is_ok(), inside, "now {now}, window {nb}..={na}");
    }
});
