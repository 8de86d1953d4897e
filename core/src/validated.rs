//! Which client certificates this Envoy has seen validated on a full TLS handshake.
//!
//! Envoy does not run certificate validation again when a client resumes a TLS session, and
//! then reports `connection.peer_certificate_valid` as false (envoyproxy/envoy#21235), although
//! the session was created by a handshake that validated the very same certificate. A resumed
//! session can only carry a certificate that some earlier handshake on a listener with the same
//! validation settings accepted: Envoy folds the trusted CAs into the TLS session ID context
//! (`updateDigestForSessionId` of its certificate validators), so a session from before a CA
//! change does not resume. What the filter cannot see is whether that earlier handshake
//! validated the certificate or let it through unvalidated (`ACCEPT_UNTRUSTED`, no validation
//! context). So it remembers the digests it saw with `peer_certificate_valid` true, and admits a
//! "not validated" connection only for a remembered digest.
//!
//! The record must be seen by every worker (a session created on one worker resumes on
//! another), so it lives in proxy-wasm shared data, which every VM of one `vm_id` in the Envoy
//! process shares. It is bounded: [`SLOTS`] keys, each holding up to [`PER_SLOT`] digests, the
//! oldest dropped first; updates use compare-and-swap so two workers cannot lose each other's
//! entries. Each VM also keeps a bounded local set, so a warm request needs no shared-data call.

use std::collections::{HashSet, VecDeque};

use crate::host::{Host, HostError};

/// Shared-data keys `loopback_guard.validated.<slot>`.
pub const SLOTS: usize = 1024;
/// Digests per key: [`SLOTS`] x [`PER_SLOT`] certificates in all (256 KiB of shared data).
pub const PER_SLOT: usize = 8;
/// Digests each VM remembers locally.
pub const LOCAL: usize = 4096;
/// Compare-and-swap attempts before giving up on recording (another worker kept winning).
const ATTEMPTS: usize = 4;

const DIGEST_LEN: usize = 32;
type Digest = [u8; DIGEST_LEN];

/// One VM's view of the record.
#[derive(Debug, Default)]
pub struct Validated {
    known: HashSet<Digest>,
    order: VecDeque<Digest>,
}

impl Validated {
    /// Notes that Envoy validated the certificate with this hex digest on this connection.
    /// Costs shared-data calls only the first time this VM sees the digest.
    pub fn remember(&mut self, host: &impl Host, digest_hex: &str) -> Result<(), HostError> {
        let Some(digest) = parse(digest_hex) else { return Ok(()) };
        if self.known.contains(&digest) {
            return Ok(());
        }
        record(host, &digest)?;
        self.learn(digest);
        Ok(())
    }

    /// Whether this Envoy validated the certificate with this digest on an earlier handshake.
    pub fn was_validated(&mut self, host: &impl Host, digest_hex: &str) -> Result<bool, HostError> {
        let Some(digest) = parse(digest_hex) else { return Ok(false) };
        if self.known.contains(&digest) {
            return Ok(true);
        }
        let (value, _) = host.shared_data(&slot_key(&digest))?;
        let found = value.is_some_and(|entries| entries.chunks_exact(DIGEST_LEN).any(|d| d == digest));
        if found {
            self.learn(digest);
        }
        Ok(found)
    }

    fn learn(&mut self, digest: Digest) {
        if !self.known.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        if self.order.len() > LOCAL {
            if let Some(oldest) = self.order.pop_front() {
                self.known.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Adds the digest to its shared slot, unless it is there already.
fn record(host: &impl Host, digest: &Digest) -> Result<(), HostError> {
    let key = slot_key(digest);
    for _ in 0..ATTEMPTS {
        let (value, cas) = host.shared_data(&key)?;
        let mut entries = value.unwrap_or_default();
        // A value that is not whole digests was not written by this module: start afresh.
        if entries.len() % DIGEST_LEN != 0 {
            entries.clear();
        }
        if entries.chunks_exact(DIGEST_LEN).any(|d| d == digest) {
            return Ok(());
        }
        if entries.len() >= PER_SLOT * DIGEST_LEN {
            entries.drain(..entries.len() + DIGEST_LEN - PER_SLOT * DIGEST_LEN);
        }
        entries.extend_from_slice(digest);
        if host.set_shared_data(&key, &entries, cas)? {
            return Ok(());
        }
    }
    Err(HostError(format!("{key}: other workers kept changing it")))
}

fn slot_key(digest: &Digest) -> String {
    let slot = usize::from(u16::from_be_bytes([digest[0], digest[1]])) % SLOTS;
    format!("loopback_guard.validated.{slot}")
}

/// 64 hex digits (Envoy's `sha256_peer_certificate_digest`) -> 32 bytes.
fn parse(hex: &str) -> Option<Digest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 2 * DIGEST_LEN {
        return None;
    }
    let mut digest = [0; DIGEST_LEN];
    for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::FakeHost;

    fn hex(n: u32, slot_prefix: u16) -> String {
        format!("{slot_prefix:04x}{n:060x}")
    }

    #[test_case]
    fn a_digest_seen_validated_is_known_to_another_vm() {
        let host = FakeHost::default();
        let (mut worker1, mut worker2) = (Validated::default(), Validated::default());
        let digest = hex(1, 7);
        assert!(!worker2.was_validated(&host, &digest).unwrap());
        worker1.remember(&host, &digest).unwrap();
        assert!(worker2.was_validated(&host, &digest).unwrap());
        assert!(!worker2.was_validated(&host, &hex(2, 7)).unwrap(), "another digest, same slot");
    }

    #[test_case]
    fn a_known_digest_costs_no_shared_data_call() {
        let host = FakeHost::default();
        let mut vm = Validated::default();
        vm.remember(&host, &hex(1, 0)).unwrap();
        host.reads.borrow_mut().clear();
        vm.remember(&host, &hex(1, 0)).unwrap();
        assert!(vm.was_validated(&host, &hex(1, 0)).unwrap());
        assert!(host.reads.borrow().is_empty(), "{:?}", host.reads.borrow());
    }

    #[test_case]
    fn slots_keep_the_newest_digests() {
        let host = FakeHost::default();
        let mut writer = Validated::default();
        for n in 0..(PER_SLOT as u32 + 3) {
            writer.remember(&host, &hex(n, 5)).unwrap();
        }
        let value = host.shared_data(&slot_key(&parse(&hex(0, 5)).unwrap())).unwrap().0.unwrap();
        assert_eq!(value.len(), PER_SLOT * DIGEST_LEN);
        let mut reader = Validated::default();
        assert!(!reader.was_validated(&host, &hex(0, 5)).unwrap(), "the oldest went first");
        assert!(reader.was_validated(&host, &hex(PER_SLOT as u32 + 2, 5)).unwrap());
    }

    #[test_case]
    fn a_lost_race_is_retried() {
        let host = FakeHost::default().with_cas_conflicts(2);
        let mut vm = Validated::default();
        vm.remember(&host, &hex(1, 1)).unwrap();
        assert!(Validated::default().was_validated(&host, &hex(1, 1)).unwrap());
        let host = FakeHost::default().with_cas_conflicts(ATTEMPTS);
        assert!(vm.remember(&host, &hex(9, 1)).is_err(), "gives up, and does not claim it");
        assert!(!Validated::default().was_validated(&host, &hex(9, 1)).unwrap());
    }

    #[test_case]
    fn odd_digests_are_never_known() {
        let host = FakeHost::default();
        let mut vm = Validated::default();
        for odd in ["", "xyz", &"g".repeat(64), &"0".repeat(63)] {
            vm.remember(&host, odd).unwrap();
            assert!(!vm.was_validated(&host, odd).unwrap(), "{odd:?}");
        }
        assert!(vm.is_empty());
    }

    #[test_case]
    fn the_local_set_is_bounded() {
        let host = FakeHost::default();
        let mut vm = Validated::default();
        for n in 0..(LOCAL as u32 + 10) {
            vm.remember(&host, &hex(n, (n % 3000) as u16)).unwrap();
        }
        assert_eq!(vm.len(), LOCAL);
        assert_eq!(vm.order.len(), LOCAL);
    }
}
