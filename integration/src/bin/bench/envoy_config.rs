//! The benchmark's Envoy config, built as a value (Envoy reads JSON as it reads YAML).
//!
//! One loopback mTLS listener in front of a direct_response backend, the same for every arm but
//! for the HTTP filters before the router. It mirrors envoy-config/loopback-guard.yaml's strict
//! listener (TLS context, node metadata, the wasm filter block) minus what would only add the
//! same cost to every arm and hide the filter's: no access log, no XFCC (Envoy 1.38 and later
//! give the filter the certificate as a property), no upstream hop (the route answers itself).

use std::path::Path;

use loopback_guard_integration::pki::{APP_ID, NAMESPACE, SERVICE_ACCOUNT};
use serde_json::{json, Value};

use crate::arms::{Arm, Filter, Module};

/// What differs between runs (not between arms).
pub struct Inputs<'a> {
    pub admin_port: u16,
    pub listen_port: u16,
    /// Holds ca.pem, server.pem and server-key.pem ([`loopback_guard_integration::pki::Pki`]).
    pub cert_dir: &'a Path,
    pub guard_wasm: &'a Path,
    pub empty_wasm: &'a Path,
    pub empty_min_wasm: &'a Path,
    pub guard_full_wasm: &'a Path,
    /// `BENCH_GUARD_ALT_WASM`, for the -alt arms.
    pub guard_alt_wasm: Option<&'a Path>,
    /// false: every new connection makes a full handshake (no session resumption, stateless or
    /// stateful); true: Envoy's default.
    pub tls_resumption: bool,
    /// The bootstrap's `memory_allocator_manager.bytes_to_release` per second (the shipped
    /// configs' setting, [`SHIPPED_BYTES_TO_RELEASE`]); `None`: Envoy's default (never release).
    pub memory_release: Option<u64>,
    /// Appended to every wasm filter's vm_id (a config push's fresh VM); "" otherwise.
    pub vm_suffix: &'a str,
}

/// What envoy-config/loopback-guard.yaml (and the Istio guide's bootstrap override) set: give
/// tcmalloc's free pages back to the system, up to this many bytes a second
/// (docs/performance.md, issue 19).
pub const SHIPPED_BYTES_TO_RELEASE: u64 = 4 * 1024 * 1024;

/// `target[key] = value` for a JSON object (nothing for anything else, which these never are).
pub fn set(target: &mut Value, key: &str, value: Value) {
    if let Some(fields) = target.as_object_mut() {
        fields.insert(key.to_owned(), value);
    }
}

/// The arm's whole bootstrap, its listener static.
pub fn config(arm: &Arm, inputs: &Inputs) -> Value {
    let mut config = bootstrap(inputs);
    set(
        &mut config,
        "static_resources",
        json!({"listeners": [listener(arm, inputs, "loopback_strict", inputs.listen_port)]}),
    );
    config
}

/// The arm's bootstrap without a listener: it reads its listeners from `lds_path` (a file of
/// [`lds`]'s form, watched by Envoy: a new file moved there is a config push).
pub fn pushed_config(inputs: &Inputs, lds_path: &Path) -> Value {
    let mut config = bootstrap(inputs);
    let directory = lds_path.parent().map(|dir| dir.display().to_string()).unwrap_or_default();
    set(
        &mut config,
        "dynamic_resources",
        json!({"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": lds_path.display().to_string(), "watched_directory": {"path": directory}}
        }}),
    );
    config
}

/// An LDS file holding `listeners`.
pub fn lds(listeners: Vec<Value>) -> Value {
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut listener| {
            set(&mut listener, "@type", json!("type.googleapis.com/envoy.config.listener.v3.Listener"));
            listener
        })
        .collect();
    json!({"version_info": "0", "resources": resources})
}

fn bootstrap(inputs: &Inputs) -> Value {
    let mut config = json!({
        "node": {
            "id": "loopback-guard-bench",
            "cluster": "loopback-guard-bench",
            "metadata": {"NAMESPACE": NAMESPACE, "SERVICE_ACCOUNT": SERVICE_ACCOUNT}
        },
        "admin": {"address": socket_address(inputs.admin_port)}
    });
    if let Some(bytes) = inputs.memory_release {
        set(
            &mut config,
            "memory_allocator_manager",
            json!({"bytes_to_release": bytes, "memory_release_interval": "1s"}),
        );
    }
    config
}

/// Every arm's loopback TLS: the server certificate in `cert_dir`, a client certificate required
/// and validated against the CA there, session resumption as `resumption` says.
pub fn downstream_tls(cert_dir: &Path, resumption: bool) -> Value {
    let cert = |name: &str| cert_dir.join(name).display().to_string();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "disable_stateless_session_resumption": !resumption,
            "disable_stateful_session_resumption": !resumption,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert("server.pem")},
                    "private_key": {"filename": cert("server-key.pem")}
                }],
                "validation_context": {"trusted_ca": {"filename": cert("ca.pem")}}
            }
        }
    })
}

/// The arm's listener, named `name`, on `port`.
pub fn listener(arm: &Arm, inputs: &Inputs, name: &str, port: u16) -> Value {
    let mut http_filters: Vec<Value> = arm.filters.iter().map(|filter| http_filter(filter, inputs)).collect();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
            "name": name,
            "address": socket_address(port),
            "filter_chains": [{
                "transport_socket": downstream_tls(inputs.cert_dir, inputs.tls_resumption),
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "loopback_strict",
                        "route_config": {
                            "name": "backend",
                            "virtual_hosts": [{
                                "name": "backend",
                                "domains": ["*"],
                                "routes": [{
                                    "match": {"prefix": "/"},
                                    "direct_response": {
                                        "status": 200,
                                        "body": {"inline_string": "hello from the backend\n"}
                                    }
                                }]
                            }]
                        },
                        "http_filters": http_filters
                    }
                }]
            }]
    })
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn http_filter(filter: &Filter, inputs: &Inputs) -> Value {
    match filter {
        // As envoy-config/loopback-guard.yaml's block, but for the module and its names.
        Filter::Wasm { module, configuration } => {
            let (name, path) = match module {
                Module::Guard => ("loopback_guard", inputs.guard_wasm),
                // (main.rs refuses the -alt arms without BENCH_GUARD_ALT_WASM.)
                Module::GuardAlt => ("loopback_guard", inputs.guard_alt_wasm.unwrap_or(inputs.guard_wasm)),
                Module::Empty => ("bench_empty", inputs.empty_wasm),
                Module::EmptyMin => ("bench_empty", inputs.empty_min_wasm),
                Module::GuardFull => ("loopback_guard_full", inputs.guard_full_wasm),
            };
            let mut vm_config = json!({
                "vm_id": format!("{name}{}", inputs.vm_suffix),
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": path.display().to_string()}}
            });
            if let (Module::Guard | Module::GuardAlt | Module::GuardFull, Some(fields)) =
                (module, vm_config.as_object_mut())
            {
                fields.insert("environment_variables".to_owned(), json!({"host_env_keys": ["TRUST_DOMAIN"]}));
            }
            json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": name,
                        "root_id": name,
                        "failure_policy": "FAIL_RELOAD",
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": configuration
                        },
                        "vm_config": vm_config
                    }
                }
            })
        }
        Filter::Rbac => json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {
                    "action": "ALLOW",
                    "policies": {"own-principal": {
                        "permissions": [{"any": true}],
                        "principals": [{"authenticated": {"principal_name": {"exact": APP_ID}}}]
                    }}
                }
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arms::standard;

    fn inputs() -> Inputs<'static> {
        Inputs {
            admin_port: 1001,
            listen_port: 1002,
            cert_dir: Path::new("/certs"),
            guard_wasm: Path::new("/guard.wasm"),
            empty_wasm: Path::new("/empty.wasm"),
            empty_min_wasm: Path::new("/empty-min.wasm"),
            guard_full_wasm: Path::new("/guard-full.wasm"),
            guard_alt_wasm: Some(Path::new("/guard-alt.wasm")),
            tls_resumption: false,
            memory_release: Some(SHIPPED_BYTES_TO_RELEASE),
            vm_suffix: "",
        }
    }

    const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
    const TLS: &str = "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config";

    fn filter_names(config: &Value) -> Vec<&str> {
        config
            .pointer(&format!("{HCM}/http_filters"))
            .and_then(Value::as_array)
            .map(|filters| filters.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_arm_puts_its_filters_before_the_router() {
        let arms = standard();
        let expected = [
            ("A0", vec!["envoy.filters.http.router"]),
            ("A1", vec!["envoy.filters.http.wasm", "envoy.filters.http.router"]),
            ("A1-min", vec!["envoy.filters.http.wasm", "envoy.filters.http.router"]),
            ("A2", vec!["envoy.filters.http.rbac", "envoy.filters.http.router"]),
            ("A3", vec!["envoy.filters.http.wasm", "envoy.filters.http.router"]),
            ("A2-deny", vec!["envoy.filters.http.rbac", "envoy.filters.http.router"]),
        ];
        for (name, filters) in expected {
            let arm = arms.iter().find(|arm| arm.name == name).unwrap();
            assert_eq!(filter_names(&config(arm, &inputs())), filters, "{name}");
        }
    }

    #[test]
    fn ports_certificates_and_resumption_come_from_the_inputs() {
        let arm = &standard()[0];
        let config = config(arm, &inputs());
        assert_eq!(config.pointer("/admin/address/socket_address/port_value"), Some(&json!(1001)));
        let listener = "/static_resources/listeners/0/address/socket_address/port_value";
        assert_eq!(config.pointer(listener), Some(&json!(1002)));
        let chain = format!("{TLS}/common_tls_context/tls_certificates/0/certificate_chain/filename");
        assert_eq!(config.pointer(&chain), Some(&json!("/certs/server.pem")));
        let ca = format!("{TLS}/common_tls_context/validation_context/trusted_ca/filename");
        assert_eq!(config.pointer(&ca), Some(&json!("/certs/ca.pem")));
        for key in ["disable_stateless_session_resumption", "disable_stateful_session_resumption"] {
            assert_eq!(config.pointer(&format!("{TLS}/{key}")), Some(&json!(true)), "{key}");
            let resumed = super::config(arm, &Inputs { tls_resumption: true, ..inputs() });
            assert_eq!(resumed.pointer(&format!("{TLS}/{key}")), Some(&json!(false)), "{key}");
        }
    }

    #[test]
    fn wasm_filters_carry_their_module_and_configuration_verbatim() {
        let configuration = r#"{"log_allowed":"all","x":"it's"}"#;
        let arm = Arm { filters: vec![Filter::guard(configuration)], ..standard()[0].clone() };
        let config = config(&arm, &inputs());
        let wasm = format!("{HCM}/http_filters/0/typed_config/config");
        assert_eq!(config.pointer(&format!("{wasm}/configuration/value")), Some(&json!(configuration)));
        let code = format!("{wasm}/vm_config/code/local/filename");
        assert_eq!(config.pointer(&code), Some(&json!("/guard.wasm")));
        let env = format!("{wasm}/vm_config/environment_variables/host_env_keys");
        assert_eq!(config.pointer(&env), Some(&json!(["TRUST_DOMAIN"])));

        let arm = Arm { filters: vec![Filter::empty("time*2")], ..arm };
        let config = super::config(&arm, &inputs());
        assert_eq!(config.pointer(&code), Some(&json!("/empty.wasm")));
        assert_eq!(config.pointer(&format!("{wasm}/root_id")), Some(&json!("bench_empty")));
        assert_eq!(config.pointer(&env), None);

        let arm = Arm { filters: vec![Filter::empty_min("")], ..arm };
        let config = super::config(&arm, &inputs());
        assert_eq!(config.pointer(&code), Some(&json!("/empty-min.wasm")));

        let config = super::config(&crate::arms::guard_alt()[0], &inputs());
        assert_eq!(config.pointer(&code), Some(&json!("/guard-alt.wasm")));
        assert_eq!(config.pointer(&env), Some(&json!(["TRUST_DOMAIN"])));
    }

    #[test]
    fn the_memory_release_is_the_shipped_one_or_none() {
        let arm = &standard()[0];
        let on = config(arm, &inputs());
        assert_eq!(
            on.pointer("/memory_allocator_manager/bytes_to_release"),
            Some(&json!(SHIPPED_BYTES_TO_RELEASE))
        );
        assert_eq!(on.pointer("/memory_allocator_manager/memory_release_interval"), Some(&json!("1s")));
        let off = config(arm, &Inputs { memory_release: None, ..inputs() });
        assert_eq!(off.get("memory_allocator_manager"), None);
        // As envoy-config/loopback-guard.yaml sets it.
        let template = std::fs::read_to_string(
            loopback_guard_integration::repo_root().join("envoy-config/loopback-guard.yaml"),
        )
        .unwrap();
        assert!(template.contains(&format!("memory_allocator_manager:\n  bytes_to_release: {SHIPPED_BYTES_TO_RELEASE}\n  memory_release_interval: 1s\n")));
    }

    #[test]
    fn a_pushed_listener_comes_from_the_watched_file_with_a_fresh_vm_id() {
        let pushed = pushed_config(&inputs(), Path::new("/push/lds.json"));
        assert_eq!(pushed.get("static_resources"), None);
        let source = "/dynamic_resources/lds_config/path_config_source";
        assert_eq!(pushed.pointer(&format!("{source}/path")), Some(&json!("/push/lds.json")));
        assert_eq!(pushed.pointer(&format!("{source}/watched_directory/path")), Some(&json!("/push")));
        let arm = standard().into_iter().find(|arm| arm.name == "A3").unwrap();
        let file = lds(vec![listener(&arm, &Inputs { vm_suffix: "_push2", ..inputs() }, "pushed", 1003)]);
        let resource = file.pointer("/resources/0").unwrap();
        assert_eq!(resource["@type"], json!("type.googleapis.com/envoy.config.listener.v3.Listener"));
        assert_eq!(resource["name"], json!("pushed"));
        assert_eq!(resource.pointer("/address/socket_address/port_value"), Some(&json!(1003)));
        let vm = "/filter_chains/0/filters/0/typed_config/http_filters/0/typed_config/config/vm_config/vm_id";
        assert_eq!(resource.pointer(vm), Some(&json!("loopback_guard_push2")));
        assert_eq!(lds(vec![])["resources"], json!([]));
    }
}
