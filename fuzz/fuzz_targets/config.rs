//! The plugin configuration, with and without a `TRUST_DOMAIN` from the VM environment.
//! Input: the configuration bytes; or `#`, the environment's trust domain, a newline, then the
//! configuration (JSON cannot start with `#`, so the two never mix).
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::config::Policy;
use loopback_guard_core::identity::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let mut runs: Vec<(&[u8], Option<String>)> = Vec::new();
    match data.strip_prefix(b"#") {
        Some(rest) => {
            let at = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let env = String::from_utf8_lossy(&rest[..at]).into_owned();
            runs.push((rest.get(at + 1..).unwrap_or_default(), Some(env)));
        }
        None => {
            runs.push((data, None));
            runs.push((data, Some("mesh.example".to_owned())));
        }
    }
    for (config, env) in runs {
        match Policy::from_json(config, env.as_deref()) {
            Ok(policy) => {
                // What validation let through is canonical: parsing it again changes nothing.
                for id in policy.principal.iter().chain(&policy.allowed_principals) {
                    assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(id));
                }
                assert!(TrustDomain::parse(policy.trust_domain.as_str()).is_ok());
                assert!(policy.exempt_paths.iter().all(|p| p.starts_with('/')));
            }
            Err(e) => {
                // (The field may be empty: `{"":0}` is an unknown field named "".)
                assert!(!e.problem.is_empty(), "{e:?}");
                assert!(e.to_string().contains(&e.field));
            }
        }
    }
});
