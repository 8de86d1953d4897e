//! The X509-SVID checks on a DER certificate, and the validity window at the clock's extremes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::identity::SpiffeId;
use loopback_guard_core::svid::SvidFacts;

fuzz_target!(|data: &[u8]| {
    let Ok(facts) = SvidFacts::from_der(data) else { return };
    // An accepted ID is one the configuration would accept too, unchanged.
    assert_eq!(SpiffeId::parse(facts.spiffe_id.as_str()).as_ref(), Ok(&facts.spiffe_id));
    let (nb, na) = (facts.not_before, facts.not_after);
    let edges = [nb, na, nb.saturating_sub(1), na.saturating_add(1)];
    for now in [i64::MIN, -1, 0, 1_800_000_000, i64::MAX].into_iter().chain(edges) {
        let inside = nb <= now && now <= na;
        assert_eq!(facts.check_time(now).is_ok(), inside, "now {now}, window {nb}..={na}");
    }
});
