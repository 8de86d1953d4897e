//! The host-independent core of loopback-guard.
//!
//! Nothing here talks to Envoy: the filter crate reads host facts through [`host::Host`] and
//! applies the [`decision::Decision`] this crate computes, so every rule is testable natively
//! and on wasm32.

pub mod identity;
pub mod svid;

#[cfg(test)]
mod testing;

// One test attribute for both test runs: libtest natively, wasm-bindgen-test on wasm32.
#[cfg(all(test, target_arch = "wasm32"))]
pub(crate) use wasm_bindgen_test::wasm_bindgen_test as test_case;
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) use core::prelude::v1::test as test_case;
