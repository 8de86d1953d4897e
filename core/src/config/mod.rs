//! Plugin configuration: JSON in, a validated [`Policy`] out, once at configure time.
//!
//! Every error names the field and what is wrong with it, because the only place an operator
//! sees it is one line in Envoy's log next to "Unable to create Wasm plugin".

#[cfg(test)]
mod tests;
mod values;

use std::fmt;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Deserializer};

use crate::identity::{SpiffeId, TrustDomain};
use values::{each, exempt_authority, exempt_path, number, spiffe_id};

/// Used when neither the configuration nor the VM environment names a trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_CERTIFICATE_CACHE_SIZE: usize = 1024;
pub const MAX_CERTIFICATE_CACHE_SIZE: usize = 65_536;
/// Every string field of a decision line is cut to this many bytes unless configured.
pub const DEFAULT_LOG_FIELD_MAX_BYTES: usize = 256;
pub const LOG_FIELD_MAX_BYTES_RANGE: (u64, u64) = (32, 8192);
/// Unauthenticated decision lines (denials, audit findings, exemptions) per second per worker.
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 10;
pub const LOG_LINES_PER_SECOND_RANGE: (u64, u64) = (1, 10_000);
/// How often a worker reports the decision lines it held back.
pub const DEFAULT_LOG_SUMMARY_SECONDS: u32 = 10;
pub const LOG_SUMMARY_SECONDS_RANGE: (u64, u64) = (1, 3600);

/// What a negative decision does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny with a 403.
    Enforce,
    /// Let the request through and log `would_deny`: for rolling the filter out.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

/// Where the filter decides: per HTTP request (the HTTP filter), or once per connection (the
/// network filter, docs/architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Request,
    Connection,
}

/// What connection scope does with a denied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDeny {
    /// Closes it before the next filter sees a byte.
    Close,
    /// Lets it go on with the verdict in filter state, for native RBAC on the HTTP chain to
    /// answer each request with a 403 (and to admit exempt probes).
    Rbac,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Connection => "connection",
        }
    }
}

impl OnDeny {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Close => "close",
            Self::Rbac => "rbac",
        }
    }
}

/// Where the expected (the pod's own) principal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalSource {
    /// `principal` if set, else node metadata, else the listener's own certificate.
    Auto,
    /// Only `principal`.
    Static,
    /// Only node metadata `NAMESPACE` and `SERVICE_ACCOUNT`.
    NodeMetadata,
    /// Only the URI SAN of the certificate the listener serves.
    LocalCertificate,
}

impl PrincipalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Static => "static",
            Self::NodeMetadata => "node_metadata",
            Self::LocalCertificate => "local_certificate",
        }
    }
}

/// Which allowed requests are logged (denials are always logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAllowed {
    None,
    /// The first allowed request of each downstream connection.
    FirstPerConnection,
    All,
}
impl LogAllowed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::FirstPerConnection => "first_per_connection",
            Self::All => "all",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    /// The expected principal, when configured.
    pub principal: Option<SpiffeId>,
    pub principal_source: PrincipalSource,
    /// For principals built from node metadata: config, else `TRUST_DOMAIN`, else the default.
    pub trust_domain: TrustDomain,
    /// Principals admitted besides the expected one (exact match).
    pub allowed_principals: Vec<SpiffeId>,
    /// Request paths (without query) where a bodiless GET or HEAD probe is admitted without any
    /// check.
    pub exempt_paths: Vec<String>,
    /// Authorities (`host` or `host:port`, lowercase) an exempt probe may name besides a
    /// loopback host.
    pub exempt_authorities: Vec<String>,
    /// Deny peers whose source address is not loopback.
    pub require_loopback: bool,
    pub log_allowed: LogAllowed,
    /// Distinct certificates whose checks are remembered per VM; 0 turns the cache off.
    pub certificate_cache_size: usize,
    /// The longest a string field of a decision line may be (bytes, before JSON escaping).
    pub log_field_max_bytes: usize,
    /// The most unauthenticated decision lines a worker writes per second.
    pub log_lines_per_second: u32,
    /// How often a worker writes a summary of the lines it held back.
    pub log_summary_seconds: u32,
    /// Set `loopback_guard.decision` and `.reason` in the stream's filter state (for the access
    /// log): two host calls per request, so only when asked for.
    pub filter_state: bool,
    pub scope: Scope,
    /// Connection scope only.
    pub on_deny: OnDeny,
}

/// A configuration field that is missing, unknown or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The name of the VM environment variable that may carry the trust domain (Istio passes it
/// with `vmConfig.env`).
pub const TRUST_DOMAIN_ENV: &str = "TRUST_DOMAIN";

impl Policy {
    /// Validates the plugin configuration. `env_trust_domain` is the VM's `TRUST_DOMAIN`.
    pub fn from_json(config: &[u8], env_trust_domain: Option<&str>) -> Result<Self, ConfigError> {
        let text =
            std::str::from_utf8(config).map_err(|_| ConfigError::new("configuration", "is not UTF-8"))?;
        if text.trim().is_empty() {
            return Raw::default().validate(env_trust_domain);
        }
        // serde would read a list as the struct's fields in order.
        if !text.trim_start().starts_with('{') {
            return Err(ConfigError::new("configuration", "must be a JSON object"));
        }
        let mut json = serde_json::Deserializer::from_str(text);
        let raw: Raw = serde_path_to_error::deserialize(&mut json).map_err(serde_error)?;
        json.end().map_err(|e| ConfigError::new("configuration", format!("is not valid JSON: {e}")))?;
        raw.validate(env_trust_domain)
    }
}

/// The configuration as JSON has it. serde refuses unknown and repeated fields (a map would
/// silently keep the last of two `principal`s) and values of the wrong type.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, deserialize_with = "variant")]
    mode: Option<Mode>,
    #[serde(default, deserialize_with = "present")]
    principal: Option<String>,
    #[serde(default, deserialize_with = "variant")]
    principal_source: Option<PrincipalSource>,
    #[serde(default, deserialize_with = "present")]
    trust_domain: Option<String>,
    #[serde(default, deserialize_with = "present")]
    allowed_principals: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    exempt_paths: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    exempt_authorities: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    require_loopback: Option<bool>,
    #[serde(default, deserialize_with = "variant")]
    log_allowed: Option<LogAllowed>,
    #[serde(default, deserialize_with = "present")]
    certificate_cache_size: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    log_field_max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    log_lines_per_second: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    log_summary_seconds: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    filter_state: Option<bool>,
    #[serde(default, deserialize_with = "variant")]
    scope: Option<Scope>,
    #[serde(default, deserialize_with = "variant")]
    on_deny: Option<OnDeny>,
}

/// A field that is there is read as given: `null` is refused rather than read as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A named value, read through a string: serde_json reads an enum only from a string or an
/// object and calls any other value (`1`, `null`) a syntax error.
fn variant<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(String::deserialize(deserializer)?.into_deserializer()).map(Some)
}

/// serde's refusal, named by the path to the value (`allowed_principals[1]`) and without
/// serde_json's position, which the path replaces.
fn serde_error(error: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if !inner.is_data() {
        return ConfigError::new("configuration", format!("is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
    // A repeated field is refused once the map is read, so the path does not name it.
    if let Some(name) = message.strip_prefix("duplicate field `").and_then(|m| m.strip_suffix('`')) {
        return ConfigError::new(field_name(name), "appears more than once");
    }
    let field = if path == "." { "configuration" } else { field_name(&path) };
    ConfigError::new(field, message)
}

/// A member name as an error shows it: an empty name would read as no name at all.
fn field_name(name: &str) -> &str {
    if name.is_empty() {
        "\"\""
    } else {
        name
    }
}

impl Raw {
    fn validate(self, env_trust_domain: Option<&str>) -> Result<Policy, ConfigError> {
        let principal_source = self.principal_source.unwrap_or(PrincipalSource::Auto);
        let principal = self.principal.map(|raw| spiffe_id("principal", &raw)).transpose()?;
        match (principal_source, &principal) {
            (PrincipalSource::Static, None) => {
                return Err(ConfigError::new("principal", "is required when principal_source is \"static\""))
            }
            (PrincipalSource::NodeMetadata | PrincipalSource::LocalCertificate, Some(_)) => {
                return Err(ConfigError::new(
                    "principal",
                    "is set, but principal_source says to take the principal from elsewhere",
                ))
            }
            _ => {}
        }
        let (field, raw) = match (&self.trust_domain, env_trust_domain) {
            (Some(raw), _) => ("trust_domain".to_owned(), raw.as_str()),
            (None, Some(raw)) => (format!("{TRUST_DOMAIN_ENV} (VM environment)"), raw),
            (None, None) => ("trust_domain".to_owned(), DEFAULT_TRUST_DOMAIN),
        };
        let scope = self.scope.unwrap_or(Scope::Request);
        match (scope, &self.on_deny, &self.exempt_paths) {
            (Scope::Request, Some(_), _) => {
                return Err(ConfigError::new("on_deny", "applies only with \"scope\": \"connection\""))
            }
            // A connection has no path: probes are RBAC's to admit (docs/architecture.md).
            (Scope::Connection, _, Some(paths)) if !paths.is_empty() => {
                return Err(ConfigError::new(
                    "exempt_paths",
                    "do not apply with \"scope\": \"connection\" (a connection has no path): \
                     admit probes in the RBAC policy of the HTTP chain instead",
                ))
            }
            _ => {}
        }
        let trust_domain =
            TrustDomain::parse(raw).map_err(|e| ConfigError::new(field, format!("{raw:?} {e}")))?;
        Ok(Policy {
            mode: self.mode.unwrap_or(Mode::Enforce),
            principal,
            principal_source,
            trust_domain,
            allowed_principals: each("allowed_principals", self.allowed_principals, spiffe_id)?,
            exempt_paths: each("exempt_paths", self.exempt_paths, exempt_path)?,
            exempt_authorities: each("exempt_authorities", self.exempt_authorities, exempt_authority)?,
            require_loopback: self.require_loopback.unwrap_or(true),
            log_allowed: self.log_allowed.unwrap_or(LogAllowed::FirstPerConnection),
            certificate_cache_size: number(
                "certificate_cache_size",
                self.certificate_cache_size,
                (0, MAX_CERTIFICATE_CACHE_SIZE as u64),
            )?
            .unwrap_or(DEFAULT_CERTIFICATE_CACHE_SIZE),
            log_field_max_bytes: number(
                "log_field_max_bytes",
                self.log_field_max_bytes,
                LOG_FIELD_MAX_BYTES_RANGE,
            )?
            .unwrap_or(DEFAULT_LOG_FIELD_MAX_BYTES),
            log_lines_per_second: number(
                "log_lines_per_second",
                self.log_lines_per_second,
                LOG_LINES_PER_SECOND_RANGE,
            )?
            .unwrap_or(DEFAULT_LOG_LINES_PER_SECOND),
            log_summary_seconds: number(
                "log_summary_seconds",
                self.log_summary_seconds,
                LOG_SUMMARY_SECONDS_RANGE,
            )?
            .unwrap_or(DEFAULT_LOG_SUMMARY_SECONDS),
            filter_state: self.filter_state.unwrap_or(false),
            scope,
            on_deny: self.on_deny.unwrap_or(OnDeny::Close),
        })
    }
}
