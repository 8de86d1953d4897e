//! Per-connection reuse of decisions against full decisions: the fuzzer picks the configuration,
//! the connections (id present or not, address, certificate of every kind, resumed or not) and
//! the request sequence (connection, path, method, body, the clock moving on); an engine that
//! decides once per connection and one that decides every request in full must give the same
//! outcome, log line and counters for every request (`loopback_guard_core::differential`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Long sequences add little and slow the search down.
    loopback_guard_core::differential::run(&data[..data.len().min(512)]);
});
