//! The expected principal: the pod's own SPIFFE ID, the only one the loopback hop should carry.

use std::fmt;
use std::rc::Rc;

use crate::config::{Policy, PrincipalSource};
use crate::host::{property, Host};
use crate::identity::SpiffeId;

/// Where the expected principal was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    NodeMetadata,
    LocalCertificate,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::NodeMetadata => "node_metadata",
            Self::LocalCertificate => "local_certificate",
        }
    }
}

/// The expected principal as known at configure time.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Fixed for the life of the configuration.
    Known(Rc<SpiffeId>, Source),
    /// Read per request from the listener's own certificate (it is per connection in Envoy).
    LocalCertificate,
    /// No source can give one: every request is denied `no_expected_principal`.
    Unavailable(String),
}

impl Expected {
    /// Resolves what can be resolved at configure time, from `policy` and node metadata.
    pub fn resolve(policy: &Policy, host: &impl Host) -> Self {
        if let Some(principal) = &policy.principal {
            return Self::Known(Rc::new(principal.clone()), Source::Config);
        }
        match policy.principal_source {
            PrincipalSource::Static => Self::Unavailable("no principal configured".into()),
            PrincipalSource::LocalCertificate => Self::LocalCertificate,
            PrincipalSource::NodeMetadata => match from_node_metadata(policy, host) {
                Ok(id) => Self::Known(Rc::new(id), Source::NodeMetadata),
                Err(why) => Self::Unavailable(why),
            },
            PrincipalSource::Auto => match from_node_metadata(policy, host) {
                Ok(id) => Self::Known(Rc::new(id), Source::NodeMetadata),
                Err(_) => Self::LocalCertificate,
            },
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(id, source) => write!(f, "expected principal {id} (from {})", source.as_str()),
            Self::LocalCertificate => {
                f.write_str("expected principal from the listener's own certificate, per connection")
            }
            Self::Unavailable(why) => write!(f, "no expected principal: {why}; every request will be denied"),
        }
    }
}

fn from_node_metadata(policy: &Policy, host: &impl Host) -> Result<SpiffeId, String> {
    let namespace = node_metadata(host, "NAMESPACE")?;
    let service_account = node_metadata(host, "SERVICE_ACCOUNT")?;
    SpiffeId::for_service_account(&policy.trust_domain, &namespace, &service_account)
        .map_err(|e| format!("node metadata NAMESPACE/SERVICE_ACCOUNT give a principal that {e}"))
}

fn node_metadata(host: &impl Host, key: &str) -> Result<String, String> {
    for prefix in property::NODE_METADATA_PREFIXES {
        let path: Vec<&str> = prefix.iter().copied().chain([key]).collect();
        match host.property(&path) {
            Ok(Some(value)) if !value.is_empty() => {
                return String::from_utf8(value).map_err(|_| format!("node metadata {key} is not UTF-8"))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("node metadata {key}: {e}")),
        }
    }
    Err(format!("node metadata has no {key}"))
}

/// The principal of the certificate the listener serves (its first URI SAN).
pub fn from_local_certificate(host: &impl Host) -> Result<SpiffeId, String> {
    let raw = host
        .property(property::LOCAL_URI_SAN)
        .map_err(|e| e.to_string())?
        .ok_or("the listener's certificate has no URI SAN")?;
    let raw = String::from_utf8(raw).map_err(|_| "the listener's URI SAN is not UTF-8")?;
    SpiffeId::parse(&raw).map_err(|e| format!("the listener's URI SAN {raw:?} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::FakeHost;

    const NS: &[&str] = &["xds", "node", "metadata", "NAMESPACE"];
    const SA: &[&str] = &["xds", "node", "metadata", "SERVICE_ACCOUNT"];
    const OLD_NS: &[&str] = &["node", "metadata", "NAMESPACE"];
    const OLD_SA: &[&str] = &["node", "metadata", "SERVICE_ACCOUNT"];

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes(), None).unwrap()
    }

    fn known(id: &str, source: Source) -> Expected {
        Expected::Known(Rc::new(SpiffeId::parse(id).unwrap()), source)
    }

    #[test_case]
    fn resolution() {
        let metadata = FakeHost::default().with_property(NS, "shop").with_property(SA, "app");
        let old_metadata = FakeHost::default().with_property(OLD_NS, "shop").with_property(OLD_SA, "app");
        let no_metadata = FakeHost::default();
        let bad_metadata = FakeHost::default().with_property(NS, "a/b").with_property(SA, "app");
        let cases: Vec<(&str, &str, &FakeHost, Expected)> = vec![
            (
                "config wins",
                r#"{"principal":"spiffe://td/x"}"#,
                &metadata,
                known("spiffe://td/x", Source::Config),
            ),
            (
                "auto: metadata",
                "{}",
                &metadata,
                known("spiffe://cluster.local/ns/shop/sa/app", Source::NodeMetadata),
            ),
            (
                "auto: older envoy",
                "{}",
                &old_metadata,
                known("spiffe://cluster.local/ns/shop/sa/app", Source::NodeMetadata),
            ),
            (
                "auto: configured trust domain",
                r#"{"trust_domain":"corp.example"}"#,
                &metadata,
                known("spiffe://corp.example/ns/shop/sa/app", Source::NodeMetadata),
            ),
            ("auto: no metadata", "{}", &no_metadata, Expected::LocalCertificate),
            ("auto: unusable metadata", "{}", &bad_metadata, Expected::LocalCertificate),
            (
                "forced local",
                r#"{"principal_source":"local_certificate"}"#,
                &metadata,
                Expected::LocalCertificate,
            ),
        ];
        for (name, json, host, expected) in cases {
            assert_eq!(Expected::resolve(&policy(json), host), expected, "{name}");
        }
        let forced = Expected::resolve(&policy(r#"{"principal_source":"node_metadata"}"#), &no_metadata);
        assert!(matches!(&forced, Expected::Unavailable(why) if why.contains("NAMESPACE")), "{forced}");
        let forced = Expected::resolve(&policy(r#"{"principal_source":"node_metadata"}"#), &bad_metadata);
        assert!(matches!(forced, Expected::Unavailable(_)));
    }

    #[test_case]
    fn local_certificate() {
        let host = FakeHost::default().with_property(property::LOCAL_URI_SAN, "spiffe://td/ns/a/sa/b");
        assert_eq!(from_local_certificate(&host).unwrap().as_str(), "spiffe://td/ns/a/sa/b");
        assert!(from_local_certificate(&FakeHost::default()).is_err());
        let host = FakeHost::default().with_property(property::LOCAL_URI_SAN, "spiffe://td/");
        assert!(from_local_certificate(&host).is_err());
        let host = FakeHost::default().with_failing_property(property::LOCAL_URI_SAN);
        assert!(from_local_certificate(&host).is_err());
    }
}
