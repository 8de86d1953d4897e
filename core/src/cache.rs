//! The per-VM certificate cache: the X509-SVID checks of a certificate, by its SHA-256 digest;
//! and the bounded first-in-first-out map it is made of, also used to remember connections.
//!
//! A client reuses its certificate for hours over many connections, so after the first request
//! the cost of PEM decoding and X.509 parsing drops to one map lookup. The validity window is
//! not cached: it is checked against the clock on every request. Bounded, first in first out:
//! an attacker churning certificates evicts entries but cannot grow memory.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;

use crate::svid::{SvidError, SvidFacts};

/// The outcome of the X509-SVID checks of one certificate.
pub type Checked = Result<Rc<SvidFacts>, SvidError>;

/// Certificate checks by SHA-256 digest (lowercase hex).
pub type CertCache = Bounded<String, Checked>;

/// A map of at most `capacity` entries, first in first out: an entry is never replaced, and
/// the oldest one goes when a new one needs room. Whoever chooses the keys (a client churning
/// certificates or connections) can evict entries but cannot grow memory.
#[derive(Debug)]
pub struct Bounded<K, V, S = RandomState> {
    capacity: usize,
    entries: HashMap<K, V, S>,
    order: VecDeque<K>,
}

/// Hashes a `u64` with one multiplication. For keys no client chooses (Envoy numbers
/// connections from one counter), which need their bits spread, not SipHash's defence against
/// chosen keys; the warm path looks one up on every request.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(SPREAD);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(SPREAD);
    }
}

/// A [`Bounded`] map keyed by connection id.
pub type ById<V> = Bounded<u64, V, BuildHasherDefault<IdHasher>>;

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> Bounded<K, V, S> {
    /// At most `capacity` entries; 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::default(), order: VecDeque::new() }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).cloned()
    }

    /// Adds `key` unless it is already there; true if it was not (and capacity is not 0).
    pub fn insert(&mut self, key: K, value: V) -> bool {
        if self.capacity == 0 || self.entries.contains_key(&key) {
            return false;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => self.entries.remove(&oldest),
                None => break,
            };
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SpiffeId;
    use crate::test_case;

    fn facts(n: i64) -> Checked {
        Ok(Rc::new(SvidFacts {
            spiffe_id: SpiffeId::parse("spiffe://td/a").unwrap(),
            not_before: n,
            not_after: n,
        }))
    }

    #[test_case]
    fn bounded_first_in_first_out() {
        let mut cache = CertCache::new(2);
        cache.insert("a".into(), facts(1));
        cache.insert("b".into(), Err(SvidError::UriSanCount(0)));
        cache.insert("a".into(), facts(9));
        assert_eq!(cache.get("a"), Some(facts(1)), "an entry is never replaced");
        cache.insert("c".into(), facts(3));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a"), None, "the oldest goes first");
        assert_eq!(cache.get("b"), Some(Err(SvidError::UriSanCount(0))));
        assert_eq!(cache.get("c"), Some(facts(3)));
    }

    #[test_case]
    fn capacity_zero_disables() {
        let mut cache = CertCache::new(0);
        cache.insert("a".into(), facts(1));
        assert!(cache.is_empty());
        assert_eq!(cache.get("a"), None);
    }

    #[test_case]
    fn churn_stays_bounded() {
        let mut cache = CertCache::new(16);
        for i in 0..10_000 {
            cache.insert(format!("{i:064x}"), facts(i));
        }
        assert_eq!(cache.len(), 16);
        assert_eq!(cache.order.len(), 16);
        assert!(cache.get(&format!("{:064x}", 9_999)).is_some());
    }

    #[test_case]
    fn insert_says_whether_the_key_is_new() {
        let mut seen: ById<()> = Bounded::new(2);
        assert!(seen.insert(1_u64, ()));
        assert!(!seen.insert(1, ()), "remembered");
        assert!(seen.insert(2, ()) && seen.insert(3, ()));
        assert!(seen.insert(1, ()), "evicted first, so new again");
    }
}
