//! Plugin configuration: JSON in, a validated [`Policy`] out, once at configure time.
//!
//! Every error names the field and what is wrong with it, because the only place an operator
//! sees it is one line in Envoy's log next to "Unable to create Wasm plugin".

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_json::Value;

use crate::identity::{SpiffeId, TrustDomain};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Where the expected (the pod's own) principal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let raw = if text.trim().is_empty() {
            Raw::default()
        } else if !text.trim_start().starts_with('{') {
            // serde would read a list as the struct's fields in order.
            return Err(match serde_json::from_str::<Value>(text) {
                Ok(_) => ConfigError::new("configuration", "must be a JSON object"),
                Err(e) => ConfigError::new("configuration", format!("is not valid JSON: {e}")),
            });
        } else {
            let mut json = serde_json::Deserializer::from_str(text);
            let raw = serde_path_to_error::deserialize(&mut json).map_err(structure_error)?;
            json.end().map_err(|e| ConfigError::new("configuration", format!("is not valid JSON: {e}")))?;
            raw
        };
        raw.fields()?.validate(env_trust_domain)
    }
}

/// The configuration as JSON has it: serde rejects unknown and repeated fields (a
/// `serde_json::Map` would silently keep the last of two `principal`s); each value's type is
/// checked by [`Raw::fields`], so that the message can say what was given.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, deserialize_with = "present")]
    mode: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    principal: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    principal_source: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    trust_domain: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    allowed_principals: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exempt_paths: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    require_loopback: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    log_allowed: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    certificate_cache_size: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exempt_authorities: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    log_field_max_bytes: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    log_lines_per_second: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    log_summary_seconds: Option<Value>,
}

/// A field that is there, even as `null` (which then fails its type check, rather than reading
/// as absent).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A field serde refused, unknown (serde_path_to_error's path names it) or repeated (serde's
/// message does: "duplicate field `x`"), or a document that is not JSON.
fn structure_error(error: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner.to_string();
    if inner.classify() != Category::Data {
        ConfigError::new("configuration", format!("is not valid JSON: {message}"))
    } else if message.starts_with("unknown field") {
        ConfigError::new(field_name(&path), "unknown field")
    } else if let Some((name, _)) =
        message.strip_prefix("duplicate field `").and_then(|rest| rest.split_once('`'))
    {
        ConfigError::new(field_name(name), "appears more than once")
    } else {
        ConfigError::new("configuration", format!("is not valid: {message}"))
    }
}

impl Raw {
    fn fields(&self) -> Result<RawFields<'_>, ConfigError> {
        fn text<'a>(name: &str, value: &'a Option<Value>) -> Result<Option<&'a str>, ConfigError> {
            value.as_ref().map(|v| string(name, v)).transpose()
        }
        fn list<'a>(name: &str, value: &'a Option<Value>) -> Result<Vec<&'a str>, ConfigError> {
            value.as_ref().map_or(Ok(Vec::new()), |v| string_list(name, v))
        }
        fn number(name: &str, value: &Option<Value>, range: (u64, u64)) -> Result<Option<u64>, ConfigError> {
            value.as_ref().map(|v| integer(name, v, range)).transpose()
        }
        Ok(RawFields {
            mode: text("mode", &self.mode)?,
            principal: text("principal", &self.principal)?,
            principal_source: text("principal_source", &self.principal_source)?,
            trust_domain: text("trust_domain", &self.trust_domain)?,
            allowed_principals: list("allowed_principals", &self.allowed_principals)?,
            exempt_paths: list("exempt_paths", &self.exempt_paths)?,
            require_loopback: self
                .require_loopback
                .as_ref()
                .map(|v| boolean("require_loopback", v))
                .transpose()?,
            log_allowed: text("log_allowed", &self.log_allowed)?,
            certificate_cache_size: self
                .certificate_cache_size
                .as_ref()
                .map(|v| cache_size("certificate_cache_size", v))
                .transpose()?,
            exempt_authorities: list("exempt_authorities", &self.exempt_authorities)?,
            log_field_max_bytes: number(
                "log_field_max_bytes",
                &self.log_field_max_bytes,
                LOG_FIELD_MAX_BYTES_RANGE,
            )?,
            log_lines_per_second: number(
                "log_lines_per_second",
                &self.log_lines_per_second,
                LOG_LINES_PER_SECOND_RANGE,
            )?,
            log_summary_seconds: number(
                "log_summary_seconds",
                &self.log_summary_seconds,
                LOG_SUMMARY_SECONDS_RANGE,
            )?,
        })
    }
}

/// A member name as an error shows it: an empty name would read as no name at all.
fn field_name(name: &str) -> &str {
    if name.is_empty() {
        "\"\""
    } else {
        name
    }
}

#[derive(Default)]
struct RawFields<'a> {
    mode: Option<&'a str>,
    principal: Option<&'a str>,
    principal_source: Option<&'a str>,
    trust_domain: Option<&'a str>,
    allowed_principals: Vec<&'a str>,
    exempt_paths: Vec<&'a str>,
    require_loopback: Option<bool>,
    log_allowed: Option<&'a str>,
    certificate_cache_size: Option<usize>,
    exempt_authorities: Vec<&'a str>,
    log_field_max_bytes: Option<u64>,
    log_lines_per_second: Option<u64>,
    log_summary_seconds: Option<u64>,
}

impl RawFields<'_> {
    fn validate(self, env_trust_domain: Option<&str>) -> Result<Policy, ConfigError> {
        let mode = match self.mode.unwrap_or("enforce") {
            "enforce" => Mode::Enforce,
            "audit" => Mode::Audit,
            other => return Err(one_of("mode", other, &["enforce", "audit"])),
        };
        let principal_source = match self.principal_source.unwrap_or("auto") {
            "auto" => PrincipalSource::Auto,
            "static" => PrincipalSource::Static,
            "node_metadata" => PrincipalSource::NodeMetadata,
            "local_certificate" => PrincipalSource::LocalCertificate,
            other => {
                return Err(one_of(
                    "principal_source",
                    other,
                    &["auto", "static", "node_metadata", "local_certificate"],
                ))
            }
        };
        let principal = self.principal.map(|raw| spiffe_id("principal", raw)).transpose()?;
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
        let trust_domain = match (self.trust_domain, env_trust_domain) {
            (Some(raw), _) => TrustDomain::parse(raw)
                .map_err(|e| ConfigError::new("trust_domain", format!("{raw:?} {e}")))?,
            (None, Some(raw)) => TrustDomain::parse(raw).map_err(|e| {
                ConfigError::new(format!("{TRUST_DOMAIN_ENV} (VM environment)"), format!("{raw:?} {e}"))
            })?,
            (None, None) => TrustDomain::parse(DEFAULT_TRUST_DOMAIN)
                .map_err(|e| ConfigError::new("trust_domain", e.to_string()))?,
        };
        let allowed_principals = self
            .allowed_principals
            .iter()
            .enumerate()
            .map(|(i, raw)| spiffe_id(&format!("allowed_principals[{i}]"), raw))
            .collect::<Result<_, _>>()?;
        let exempt_paths = self
            .exempt_paths
            .iter()
            .enumerate()
            .map(|(i, raw)| exempt_path(&format!("exempt_paths[{i}]"), raw))
            .collect::<Result<_, _>>()?;
        let exempt_authorities = self
            .exempt_authorities
            .iter()
            .enumerate()
            .map(|(i, raw)| exempt_authority(&format!("exempt_authorities[{i}]"), raw))
            .collect::<Result<_, _>>()?;
        let log_allowed = match self.log_allowed.unwrap_or("first_per_connection") {
            "none" => LogAllowed::None,
            "first_per_connection" => LogAllowed::FirstPerConnection,
            "all" => LogAllowed::All,
            other => return Err(one_of("log_allowed", other, &["none", "first_per_connection", "all"])),
        };
        Ok(Policy {
            mode,
            principal,
            principal_source,
            trust_domain,
            allowed_principals,
            exempt_paths,
            require_loopback: self.require_loopback.unwrap_or(true),
            log_allowed,
            certificate_cache_size: self.certificate_cache_size.unwrap_or(DEFAULT_CERTIFICATE_CACHE_SIZE),
            exempt_authorities,
            // In range by `integer`, which bounds them far below usize/u32::MAX.
            log_field_max_bytes: self
                .log_field_max_bytes
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_LOG_FIELD_MAX_BYTES),
            log_lines_per_second: self
                .log_lines_per_second
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(DEFAULT_LOG_LINES_PER_SECOND),
            log_summary_seconds: self
                .log_summary_seconds
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(DEFAULT_LOG_SUMMARY_SECONDS),
        })
    }
}

fn string<'a>(field: &str, value: &'a Value) -> Result<&'a str, ConfigError> {
    value.as_str().ok_or_else(|| ConfigError::new(field, format!("must be a string, not {}", kind(value))))
}

fn boolean(field: &str, value: &Value) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| ConfigError::new(field, format!("must be true or false, not {}", kind(value))))
}

fn string_list<'a>(field: &str, value: &'a Value) -> Result<Vec<&'a str>, ConfigError> {
    let items = value
        .as_array()
        .ok_or_else(|| ConfigError::new(field, format!("must be a list of strings, not {}", kind(value))))?;
    items.iter().enumerate().map(|(i, item)| string(&format!("{field}[{i}]"), item)).collect()
}

fn cache_size(field: &str, value: &Value) -> Result<usize, ConfigError> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_CERTIFICATE_CACHE_SIZE)
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("must be an integer from 0 to {MAX_CERTIFICATE_CACHE_SIZE}, not {value}"),
            )
        })
}

fn integer(field: &str, value: &Value, (min, max): (u64, u64)) -> Result<u64, ConfigError> {
    value.as_u64().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
        ConfigError::new(field, format!("must be an integer from {min} to {max}, not {value}"))
    })
}

fn spiffe_id(field: &str, raw: &str) -> Result<SpiffeId, ConfigError> {
    SpiffeId::parse(raw).map_err(|e| ConfigError::new(field, format!("{raw:?} {e}")))
}

/// An exempt path must be the one form a request can match exactly: no query, no
/// percent-encoding (a request may spell a byte either way), no empty, `.` or `..` segments, no
/// backslash. Anything else would either never match or invite a path that routes elsewhere.
fn exempt_path(field: &str, raw: &str) -> Result<String, ConfigError> {
    let refuse = |why: &str| Err(ConfigError::new(field, format!("{raw:?} {why}")));
    if !raw.starts_with('/') {
        return refuse("must start with '/'");
    }
    // Request paths are visible ASCII (anything else is percent-encoded on the wire).
    if raw.contains(['?', '#']) || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return refuse("must be a bare path of visible ASCII (no query, fragment, spaces)");
    }
    if raw.contains('%') {
        return refuse(
            "must not be percent-encoded (encoded separators and dots are refused; write the path decoded)",
        );
    }
    if raw.contains('\\') {
        return refuse("must not contain a backslash");
    }
    let segments: Vec<&str> = raw.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return refuse("must not contain '.' or '..' segments"),
            // "/" alone, and one trailing slash, are fine; "//" anywhere is not.
            "" if i != last || raw.ends_with("//") => return refuse("must not contain '//'"),
            _ => {}
        }
    }
    Ok(raw.to_owned())
}

/// `host` or `host:port`, compared lowercase with the request's `:authority`.
fn exempt_authority(field: &str, raw: &str) -> Result<String, ConfigError> {
    let ok = !raw.is_empty()
        && raw.len() <= 255
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("{raw:?} must be a host or host:port (letters, digits, '-', '.', '_', ':', '[', ']')"),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

fn one_of(field: &str, got: &str, allowed: &[&str]) -> ConfigError {
    ConfigError::new(field, format!("{got:?} is not one of {}", allowed.join(", ")))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    fn policy(json: &str) -> Result<Policy, ConfigError> {
        Policy::from_json(json.as_bytes(), None)
    }

    #[test_case]
    fn empty_configuration_means_defaults() {
        for empty in ["", "  \n", "{}"] {
            let p = policy(empty).unwrap();
            assert_eq!(p.mode, Mode::Enforce);
            assert_eq!(p.principal, None);
            assert_eq!(p.principal_source, PrincipalSource::Auto);
            assert_eq!(p.trust_domain.as_str(), DEFAULT_TRUST_DOMAIN);
            assert!(p.allowed_principals.is_empty() && p.exempt_paths.is_empty());
            assert!(p.require_loopback);
            assert_eq!(p.log_allowed, LogAllowed::FirstPerConnection);
            assert_eq!(p.certificate_cache_size, DEFAULT_CERTIFICATE_CACHE_SIZE);
            assert!(p.exempt_authorities.is_empty());
            assert_eq!(p.log_field_max_bytes, DEFAULT_LOG_FIELD_MAX_BYTES);
            assert_eq!(p.log_lines_per_second, DEFAULT_LOG_LINES_PER_SECOND);
            assert_eq!(p.log_summary_seconds, DEFAULT_LOG_SUMMARY_SECONDS);
        }
    }

    #[test_case]
    fn every_field() {
        let p = policy(
            r#"{"mode":"audit","principal":"spiffe://td/ns/a/sa/b","principal_source":"static",
                "trust_domain":"example.org","allowed_principals":["spiffe://td/ns/a/sa/c"],
                "exempt_paths":["/healthz"],"require_loopback":false,"log_allowed":"all",
                "certificate_cache_size":0,"exempt_authorities":["Health.Local:8080"],
                "log_field_max_bytes":64,"log_lines_per_second":2,"log_summary_seconds":60}"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(p.principal.unwrap().as_str(), "spiffe://td/ns/a/sa/b");
        assert_eq!(p.principal_source, PrincipalSource::Static);
        assert_eq!(p.trust_domain.as_str(), "example.org");
        assert_eq!(p.allowed_principals[0].as_str(), "spiffe://td/ns/a/sa/c");
        assert_eq!(p.exempt_paths, ["/healthz"]);
        assert!(!p.require_loopback);
        assert_eq!(p.log_allowed, LogAllowed::All);
        assert_eq!(p.certificate_cache_size, 0);
        assert_eq!(p.exempt_authorities, ["health.local:8080"]);
        assert_eq!((p.log_field_max_bytes, p.log_lines_per_second, p.log_summary_seconds), (64, 2, 60));
    }

    #[test_case]
    fn exempt_paths_are_validated() {
        let accepted = ["/", "/healthz", "/healthz/ready", "/ready/", "/a.b/c..d/.e", "/it's-fine"];
        for path in accepted {
            let json = serde_json::json!({ "exempt_paths": [path] }).to_string();
            assert_eq!(policy(&json).unwrap().exempt_paths, [path], "{path}");
        }
        let refused = [
            ("/healthz/../api", "'..'"),
            ("/..", "'..'"),
            ("/./healthz", "'.'"),
            ("//healthz", "'//'"),
            ("/healthz//", "'//'"),
            ("/a//b", "'//'"),
            ("/healthz%2Fready", "percent-encoded"),
            ("/healthz%2fready", "percent-encoded"),
            ("/%2e%2e/api", "percent-encoded"),
            ("/health%7Az", "percent-encoded"),
            ("/healthz\\ready", "backslash"),
        ];
        for (path, why) in refused {
            let json = serde_json::json!({ "exempt_paths": ["/ok", path] }).to_string();
            let err = policy(&json).unwrap_err();
            assert_eq!(err.field, "exempt_paths[1]", "{path}: {err}");
            assert!(err.problem.contains(why), "{path}: {err}");
        }
    }

    #[test_case]
    fn trust_domain_precedence() {
        let from = |json: &str, env: Option<&str>| {
            Policy::from_json(json.as_bytes(), env).unwrap().trust_domain.as_str().to_owned()
        };
        assert_eq!(from("{}", None), "cluster.local");
        assert_eq!(from("{}", Some("mesh.example")), "mesh.example");
        assert_eq!(from(r#"{"trust_domain":"config.example"}"#, Some("mesh.example")), "config.example");
    }

    #[test_case]
    fn errors_name_the_field() {
        let cases = [
            ("not json", "{", "configuration", "not valid JSON"),
            ("not an object", "[]", "configuration", "JSON object"),
            ("unknown field", r#"{"principals":[]}"#, "principals", "unknown field"),
            ("mode value", r#"{"mode":"permissive"}"#, "mode", "not one of"),
            ("mode type", r#"{"mode":1}"#, "mode", "must be a string, not a number"),
            ("bad principal", r#"{"principal":"spiffe://td/"}"#, "principal", "trailing slash"),
            ("uppercase principal", r#"{"principal":"spiffe://TD/x"}"#, "principal", "canonical"),
            ("bare trust domain", r#"{"principal":"spiffe://td"}"#, "principal", "no path"),
            ("source value", r#"{"principal_source":"env"}"#, "principal_source", "not one of"),
            ("static needs principal", r#"{"principal_source":"static"}"#, "principal", "required"),
            (
                "conflicting source",
                r#"{"principal":"spiffe://td/a","principal_source":"node_metadata"}"#,
                "principal",
                "elsewhere",
            ),
            ("trust domain", r#"{"trust_domain":"Cluster.local"}"#, "trust_domain", "canonical"),
            (
                "list type",
                r#"{"allowed_principals":"spiffe://td/a"}"#,
                "allowed_principals",
                "list of strings",
            ),
            ("list item type", r#"{"exempt_paths":["/a",2]}"#, "exempt_paths[1]", "a number"),
            (
                "bad allowed",
                r#"{"allowed_principals":["spiffe://td/a","x"]}"#,
                "allowed_principals[1]",
                "SPIFFE",
            ),
            ("relative path", r#"{"exempt_paths":["healthz"]}"#, "exempt_paths[0]", "start with '/'"),
            ("query in path", r#"{"exempt_paths":["/h?x=1"]}"#, "exempt_paths[0]", "bare path"),
            ("non-ascii path", r#"{"exempt_paths":["/caf\u00e9"]}"#, "exempt_paths[0]", "visible ASCII"),
            ("loopback type", r#"{"require_loopback":"yes"}"#, "require_loopback", "true or false"),
            ("log value", r#"{"log_allowed":"some"}"#, "log_allowed", "not one of"),
            ("cache negative", r#"{"certificate_cache_size":-1}"#, "certificate_cache_size", "integer"),
            ("cache huge", r#"{"certificate_cache_size":1e9}"#, "certificate_cache_size", "integer"),
            ("null", r#"{"mode":null}"#, "mode", "not null"),
            (
                "duplicate",
                r#"{"principal":"spiffe://a/x","principal":"spiffe://b/y"}"#,
                "principal",
                "more than once",
            ),
            (
                "duplicate list",
                r#"{"allowed_principals":["spiffe://a/x"],"allowed_principals":[]}"#,
                "allowed_principals",
                "more than once",
            ),
            ("empty name", r#"{"":0}"#, "\"\"", "unknown field"),
            ("authority", r#"{"exempt_authorities":["a b"]}"#, "exempt_authorities[0]", "host or host:port"),
            ("empty authority", r#"{"exempt_authorities":[""]}"#, "exempt_authorities[0]", "host"),
            ("authority path", r#"{"exempt_authorities":["a/b"]}"#, "exempt_authorities[0]", "host"),
            ("field bytes low", r#"{"log_field_max_bytes":8}"#, "log_field_max_bytes", "from 32 to 8192"),
            ("field bytes type", r#"{"log_field_max_bytes":"9"}"#, "log_field_max_bytes", "integer"),
            ("lines zero", r#"{"log_lines_per_second":0}"#, "log_lines_per_second", "from 1 to 10000"),
            ("summary high", r#"{"log_summary_seconds":3601}"#, "log_summary_seconds", "from 1 to 3600"),
            ("top-level string", r#""{}""#, "configuration", "JSON object"),
        ];
        for (name, json, field, problem) in cases {
            let err = policy(json).unwrap_err();
            assert_eq!(err.field, field, "{name}: {err}");
            assert!(err.problem.contains(problem), "{name}: {err}");
            assert!(err.to_string().contains(field), "{name}: {err}");
        }
        let err = Policy::from_json(b"\xff", None).unwrap_err();
        assert_eq!(err.field, "configuration");
        let err = Policy::from_json(b"{}", Some("Bad Domain")).unwrap_err();
        assert_eq!(err.field, "TRUST_DOMAIN (VM environment)");
    }
}
