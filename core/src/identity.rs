//! SPIFFE IDs as an X509-SVID must carry them.
//!
//! Parsing is the `spiffe` crate's; on top of it this module adds the rules that crate leaves
//! lenient and that matter when an ID is compared byte for byte: the ID must already be in
//! canonical form (lowercase scheme and trust domain), it must name a workload (a path, not just a
//! trust domain), and it must fit the specification's 2048 bytes.

use std::fmt;

/// The SPIFFE-ID specification's maximum length of a SPIFFE ID, in bytes.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// A validated workload SPIFFE ID in canonical form, e.g. `spiffe://cluster.local/ns/a/sa/b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses `raw` strictly: every rule of the SPIFFE-ID specification, no normalisation.
    pub fn parse(raw: &str) -> Result<Self, SpiffeIdError> {
        if raw.len() > MAX_SPIFFE_ID_BYTES {
            return Err(SpiffeIdError::TooLong(raw.len()));
        }
        let parsed = spiffe::SpiffeId::new(raw).map_err(SpiffeIdError::Invalid)?;
        if parsed.path().is_empty() {
            return Err(SpiffeIdError::NoPath);
        }
        // The crate lowercases the scheme and trust domain; an SVID that needs that is not in
        // the canonical form peers compare against, so it is refused rather than rewritten.
        let canonical = parsed.to_string();
        if canonical != raw {
            return Err(SpiffeIdError::NotCanonical);
        }
        Ok(Self(canonical))
    }

    /// The Istio-style workload principal `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
    pub fn for_service_account(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        // Built from segments so that a `/` inside a name cannot add path segments.
        let domain = spiffe::TrustDomain::new(trust_domain.as_str()).map_err(SpiffeIdError::Invalid)?;
        let id = spiffe::SpiffeId::from_segments(domain, &["ns", namespace, "sa", service_account])
            .map_err(SpiffeIdError::Invalid)?;
        Self::parse(&id.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated trust domain name in canonical (lowercase) form, e.g. `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn parse(raw: &str) -> Result<Self, SpiffeIdError> {
        // `spiffe::TrustDomain::new` also accepts a whole SPIFFE ID and uppercase letters; a
        // configured trust domain must be the bare canonical name.
        let parsed = spiffe::TrustDomain::new(raw).map_err(SpiffeIdError::Invalid)?;
        if parsed.as_str() != raw {
            return Err(SpiffeIdError::NotCanonical);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not an acceptable workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq)]
pub enum SpiffeIdError {
    /// Longer than [`MAX_SPIFFE_ID_BYTES`].
    TooLong(usize),
    /// Breaks a SPIFFE-ID rule (scheme, characters, segments, ...).
    Invalid(spiffe::SpiffeIdError),
    /// Valid only after lowercasing the scheme or trust domain.
    NotCanonical,
    /// A trust domain alone: it identifies no workload.
    NoPath,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(len) => {
                write!(f, "is {len} bytes long, more than the {MAX_SPIFFE_ID_BYTES} allowed")
            }
            Self::Invalid(e) => write!(f, "is not a valid SPIFFE ID: {e}"),
            Self::NotCanonical => {
                f.write_str("is not in canonical form (scheme and trust domain must be lowercase)")
            }
            Self::NoPath => f.write_str("has no path: a trust domain alone names no workload"),
        }
    }
}

impl std::error::Error for SpiffeIdError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    #[test_case]
    fn spiffe_id_rules() {
        let long_ok = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_BYTES - 12));
        let long_bad = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_BYTES - 11));
        let cases: &[(&str, &str, bool)] = &[
            ("istio principal", "spiffe://cluster.local/ns/default/sa/app", true),
            ("allowed punctuation", "spiffe://a-b_c.d/x.y/z-_9", true),
            ("2048 bytes", &long_ok, true),
            ("2049 bytes", &long_bad, false),
            ("uppercase trust domain", "spiffe://Cluster.local/ns/a/sa/b", false),
            ("uppercase scheme", "SPIFFE://cluster.local/ns/a/sa/b", false),
            ("trust domain only", "spiffe://cluster.local", false),
            ("trust domain and slash", "spiffe://cluster.local/", false),
            ("trailing slash", "spiffe://td/ns/a/", false),
            ("empty segment", "spiffe://td/ns//a", false),
            ("dot segment", "spiffe://td/ns/./a", false),
            ("dot dot segment", "spiffe://td/ns/../a", false),
            ("percent encoding", "spiffe://td/ns/%61", false),
            ("query", "spiffe://td/ns/a?x=1", false),
            ("fragment", "spiffe://td/ns/a#f", false),
            ("port", "spiffe://td:8443/ns/a", false),
            ("userinfo", "spiffe://user@td/ns/a", false),
            ("other scheme", "https://td/ns/a", false),
            ("no scheme", "td/ns/a", false),
            ("empty", "", false),
            ("empty trust domain", "spiffe:///ns/a", false),
            ("non-ascii", "spiffe://td/ns/caf\u{e9}", false),
            ("space", "spiffe://td/ns/a b", false),
        ];
        for (name, raw, valid) in cases {
            assert_eq!(SpiffeId::parse(raw).is_ok(), *valid, "{name}: {raw}");
        }
    }

    #[test_case]
    fn service_account_principal() {
        let td = TrustDomain::parse("cluster.local").unwrap();
        let id = SpiffeId::for_service_account(&td, "payments", "api").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/payments/sa/api");
        assert!(SpiffeId::for_service_account(&td, "a/b", "api").is_err());
        assert!(SpiffeId::for_service_account(&td, "", "api").is_err());
    }

    #[test_case]
    fn trust_domain_rules() {
        assert!(TrustDomain::parse("cluster.local").is_ok());
        assert_eq!(TrustDomain::parse("Cluster.local"), Err(SpiffeIdError::NotCanonical));
        assert!(TrustDomain::parse("spiffe://cluster.local").is_err());
        assert!(TrustDomain::parse("").is_err());
        assert!(TrustDomain::parse("a b").is_err());
    }

    #[test_case]
    fn errors_say_what_is_wrong() {
        let msg = SpiffeId::parse("spiffe://cluster.local").unwrap_err().to_string();
        assert!(msg.contains("no path"), "{msg}");
        let msg = SpiffeId::parse(&"x".repeat(3000)).unwrap_err().to_string();
        assert!(msg.contains("3000 bytes"), "{msg}");
    }
}
