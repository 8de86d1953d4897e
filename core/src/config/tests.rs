//! The configuration's fields, values and errors.
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
        assert!(!p.filter_state);
    }
}

#[test_case]
fn every_field() {
    let p = policy(
        r#"{"mode":"audit","principal":"spiffe://td/ns/a/sa/b","principal_source":"static",
            "trust_domain":"example.org","allowed_principals":["spiffe://td/ns/a/sa/c"],
            "exempt_paths":["/healthz"],"require_loopback":false,"log_allowed":"all",
            "certificate_cache_size":0,"exempt_authorities":["Health.Local:8080"],
            "log_field_max_bytes":64,"log_lines_per_second":2,"log_summary_seconds":60,
            "filter_state":true}"#,
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
    assert!(p.filter_state);
}

#[test_case]
fn names_read_back_as_written() {
    fn read<T: for<'de> Deserialize<'de>>(name: &str) -> T {
        serde_json::from_value(serde_json::Value::from(name)).unwrap()
    }
    for mode in [Mode::Enforce, Mode::Audit] {
        assert_eq!(read::<Mode>(mode.as_str()), mode);
    }
    let sources = [
        PrincipalSource::Auto,
        PrincipalSource::Static,
        PrincipalSource::NodeMetadata,
        PrincipalSource::LocalCertificate,
    ];
    for source in sources {
        assert_eq!(read::<PrincipalSource>(source.as_str()), source);
    }
    for log in [LogAllowed::None, LogAllowed::FirstPerConnection, LogAllowed::All] {
        assert_eq!(read::<LogAllowed>(log.as_str()), log);
    }
    for scope in [Scope::Request, Scope::Connection] {
        assert_eq!(read::<Scope>(scope.as_str()), scope);
    }
    for on_deny in [OnDeny::Close, OnDeny::Rbac] {
        assert_eq!(read::<OnDeny>(on_deny.as_str()), on_deny);
    }
}

#[test_case]
fn connection_scope_has_no_paths_and_request_scope_no_on_deny() {
    let p = policy(r#"{"scope":"connection"}"#).unwrap();
    assert_eq!((p.scope, p.on_deny), (Scope::Connection, OnDeny::Close));
    assert_eq!(policy(r#"{"scope":"connection","on_deny":"rbac"}"#).unwrap().on_deny, OnDeny::Rbac);
    assert_eq!(policy("{}").unwrap().scope, Scope::Request);
    let err = policy(r#"{"on_deny":"close"}"#).unwrap_err();
    assert_eq!(err.field, "on_deny");
    let err = policy(r#"{"scope":"connection","exempt_paths":["/healthz"]}"#).unwrap_err();
    assert_eq!(err.field, "exempt_paths");
    assert_eq!(policy(r#"{"scope":"stream"}"#).unwrap_err().field, "scope");
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
        (
            "mode value",
            r#"{"mode":"permissive"}"#,
            "mode",
            "unknown variant `permissive`, expected `enforce` or `audit`",
        ),
        ("mode type", r#"{"mode":1}"#, "mode", "invalid type: integer `1`, expected a string"),
        ("bad principal", r#"{"principal":"spiffe://td/"}"#, "principal", "trailing slash"),
        ("uppercase principal", r#"{"principal":"spiffe://TD/x"}"#, "principal", "canonical"),
        ("bare trust domain", r#"{"principal":"spiffe://td"}"#, "principal", "no path"),
        ("source value", r#"{"principal_source":"env"}"#, "principal_source", "unknown variant `env`"),
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
            "expected a sequence",
        ),
        (
            "list item type",
            r#"{"exempt_paths":["/a",2]}"#,
            "exempt_paths[1]",
            "invalid type: integer `2`, expected a string",
        ),
        ("bad allowed", r#"{"allowed_principals":["spiffe://td/a","x"]}"#, "allowed_principals[1]", "SPIFFE"),
        ("relative path", r#"{"exempt_paths":["healthz"]}"#, "exempt_paths[0]", "start with '/'"),
        ("query in path", r#"{"exempt_paths":["/h?x=1"]}"#, "exempt_paths[0]", "bare path"),
        ("non-ascii path", r#"{"exempt_paths":["/caf\u00e9"]}"#, "exempt_paths[0]", "visible ASCII"),
        ("loopback type", r#"{"require_loopback":"yes"}"#, "require_loopback", "expected a boolean"),
        ("log value", r#"{"log_allowed":"some"}"#, "log_allowed", "unknown variant `some`"),
        ("cache negative", r#"{"certificate_cache_size":-1}"#, "certificate_cache_size", "expected u64"),
        ("cache float", r#"{"certificate_cache_size":1e9}"#, "certificate_cache_size", "expected u64"),
        (
            "cache huge",
            r#"{"certificate_cache_size":65537}"#,
            "certificate_cache_size",
            "from 0 to 65536, not 65537",
        ),
        ("null", r#"{"mode":null}"#, "mode", "invalid type: null"),
        ("null list", r#"{"exempt_paths":null}"#, "exempt_paths", "invalid type: null"),
        ("trailing", r#"{} {}"#, "configuration", "not valid JSON"),
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
        (
            "authority userinfo",
            r#"{"exempt_authorities":["ok.local","p.local:1@evil"]}"#,
            "exempt_authorities[1]",
            "userinfo",
        ),
        ("authority port", r#"{"exempt_authorities":["p.local:x.evil"]}"#, "exempt_authorities[0]", "port"),
        ("authority after ]", r#"{"exempt_authorities":["[::1].evil"]}"#, "exempt_authorities[0]", "IPv6"),
        ("authority empty port", r#"{"exempt_authorities":["p.local:"]}"#, "exempt_authorities[0]", "port"),
        ("field bytes low", r#"{"log_field_max_bytes":8}"#, "log_field_max_bytes", "from 32 to 8192"),
        ("field bytes type", r#"{"log_field_max_bytes":"9"}"#, "log_field_max_bytes", "expected u64"),
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
