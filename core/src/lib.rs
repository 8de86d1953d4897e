//! The host-independent core of loopback-guard.
//!
//! Nothing here talks to Envoy: the filter crate reads host facts through [`host::Host`] and
//! applies the [`decision::Decision`] that [`decision::Guard`] computes, so every rule is
//! testable natively and on wasm32.

// Test tables are tuples of many columns; naming each tuple type would not help the reader.
#![cfg_attr(test, allow(clippy::type_complexity))]

pub mod authority;
pub mod cache;
pub mod config;
pub mod decision;
pub mod engine;
pub mod host;
pub mod identity;
pub mod log;
pub mod loglimit;
pub mod notice;
pub mod pem;
pub mod principal;
pub mod stats;
pub mod svid;
pub mod validated;
pub mod xfcc;

#[cfg(test)]
mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod differential;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

// One test attribute for both test runs: libtest natively, wasm-bindgen-test on wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) use core::prelude::v1::test as test_case;
#[cfg(all(test, target_arch = "wasm32"))]
pub(crate) use wasm_bindgen_test::wasm_bindgen_test as test_case;
