//! The shipped module exports exactly the callbacks the filter uses (scripts/wasm-exports.txt,
//! applied by scripts/wasm-post-link.sh): Envoy skips every callback whose export is missing, so
//! an export too many costs a VM entry per stream, and one too few silently turns a callback of
//! the filter off. These tests read the built module (`LOOPBACK_GUARD_WASM`, else
//! dist/loopback_guard.wasm) and the filter's source; `context_cleanup.rs` runs it in Envoy.

use std::collections::BTreeSet;
use std::fs;

use loopback_guard_integration::envoy::wasm_module;
use loopback_guard_integration::{repo_root, Context, Error, Result};
use wasmparser::{ExternalKind, Parser, Payload, Validator, WasmFeatures};

/// What the module must export, and why (scripts/wasm-exports.txt says the same at more length).
const EXPECTED: [(&str, ExternalKind); 11] = [
    // The VM: linear memory, the WASI reactor's start (the SDK's `main!` block), the ABI version,
    // the allocator the host calls to pass strings in.
    ("memory", ExternalKind::Memory),
    ("_initialize", ExternalKind::Func),
    ("proxy_abi_version_0_2_1", ExternalKind::Func),
    ("proxy_on_memory_allocate", ExternalKind::Func),
    // Context life: creation, and removal from the SDK's context map after every stream.
    ("proxy_on_context_create", ExternalKind::Func),
    ("proxy_on_delete", ExternalKind::Func),
    // The filter's own callbacks.
    ("proxy_on_vm_start", ExternalKind::Func),
    ("proxy_on_configure", ExternalKind::Func),
    ("proxy_on_request_headers", ExternalKind::Func),
    // Connection scope (the network filter): its only callback, entered at each downstream read
    // of a connection, never for an HTTP stream (docs/architecture.md).
    ("proxy_on_downstream_data", ExternalKind::Func),
    // The root context's timer: the periodic summary of held-back decision lines.
    ("proxy_on_tick", ExternalKind::Func),
];

/// Every trait method of the proxy-wasm Rust SDK (0.2.5, `traits.rs`) that the host reaches
/// through an export, and that export (`dispatcher.rs`): a method the filter implements is dead
/// code unless its export is kept.
const CALLBACKS: [(&str, &str); 27] = [
    ("on_vm_start", "proxy_on_vm_start"),
    ("on_configure", "proxy_on_configure"),
    ("on_tick", "proxy_on_tick"),
    ("on_queue_ready", "proxy_on_queue_ready"),
    ("create_http_context", "proxy_on_context_create"),
    ("create_stream_context", "proxy_on_context_create"),
    ("get_type", "proxy_on_context_create"),
    ("on_done", "proxy_on_done"),
    ("on_log", "proxy_on_log"),
    ("on_http_call_response", "proxy_on_http_call_response"),
    ("on_grpc_call_response", "proxy_on_grpc_receive"),
    ("on_grpc_stream_initial_metadata", "proxy_on_grpc_receive_initial_metadata"),
    ("on_grpc_stream_message", "proxy_on_grpc_receive"),
    ("on_grpc_stream_trailing_metadata", "proxy_on_grpc_receive_trailing_metadata"),
    ("on_grpc_stream_close", "proxy_on_grpc_close"),
    ("on_foreign_function", "proxy_on_foreign_function"),
    ("on_http_request_headers", "proxy_on_request_headers"),
    ("on_http_request_body", "proxy_on_request_body"),
    ("on_http_request_trailers", "proxy_on_request_trailers"),
    ("on_http_response_headers", "proxy_on_response_headers"),
    ("on_http_response_body", "proxy_on_response_body"),
    ("on_http_response_trailers", "proxy_on_response_trailers"),
    ("on_new_connection", "proxy_on_new_connection"),
    ("on_downstream_data", "proxy_on_downstream_data"),
    ("on_upstream_data", "proxy_on_upstream_data"),
    ("on_downstream_close", "proxy_on_downstream_connection_close"),
    ("on_upstream_close", "proxy_on_upstream_connection_close"),
];

fn module_bytes() -> Result<Vec<u8>> {
    let path = wasm_module()?;
    fs::read(&path).context(format!("reading {}", path.display()))
}

fn exports(bytes: &[u8]) -> Result<Vec<(String, ExternalKind)>> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| Error::new(format!("parsing the module: {e}")))?;
        if let Payload::ExportSection(section) = payload {
            for export in section {
                let export = export.map_err(|e| Error::new(format!("reading an export: {e}")))?;
                found.push((export.name.to_owned(), export.kind));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The trait methods that the filter's glue (src/filter) defines, by name.
fn implemented_callbacks() -> Result<BTreeSet<&'static str>> {
    let dir = repo_root().join("src/filter");
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(&dir).context(format!("listing {}", dir.display()))? {
        let path = entry.context("listing src/filter")?.path();
        let text = fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
        for (method, _) in CALLBACKS {
            if text.contains(&format!("fn {method}(")) {
                found.insert(method);
            }
        }
    }
    Ok(found)
}

#[test]
fn the_shipped_module_exports_exactly_the_callbacks_it_needs() {
    let got = exports(&module_bytes().unwrap()).unwrap();
    let mut want: Vec<(String, ExternalKind)> =
        EXPECTED.iter().map(|(name, kind)| ((*name).to_owned(), *kind)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "the module's exports (run `make build`: scripts/wasm-post-link.sh)");
}

#[test]
fn the_shipped_module_is_valid_webassembly() {
    let bytes = module_bytes().unwrap();
    Validator::new_with_features(WasmFeatures::default()).validate_all(&bytes).unwrap();
}

#[test]
fn every_callback_the_filter_implements_is_exported_and_every_exported_one_implemented() {
    let implemented = implemented_callbacks().unwrap();
    // The glue as it is today; a new callback must be added here, to EXPECTED and to
    // scripts/wasm-exports.txt, or Envoy never calls it.
    assert!(
        implemented.contains("on_http_request_headers") && implemented.contains("on_configure"),
        "the scan of src/filter found no callbacks at all: {implemented:?}"
    );
    let kept: BTreeSet<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    for method in &implemented {
        let export = CALLBACKS.iter().find(|(m, _)| m == method).map(|(_, e)| *e).unwrap();
        assert!(
            kept.contains(export),
            "src/filter implements {method}, which the host reaches through {export}: keep that \
             export (scripts/wasm-exports.txt and EXPECTED here)"
        );
    }
    // The other way round: a filter callback exported but not implemented costs a VM entry for
    // the SDK's default. (Exports of the VM and of context life are not filter callbacks.)
    for (_, export) in CALLBACKS {
        let is_filters = [
            "proxy_on_vm_start",
            "proxy_on_configure",
            "proxy_on_request_headers",
            "proxy_on_downstream_data",
            "proxy_on_tick",
        ]
        .contains(&export);
        if is_filters {
            let used = CALLBACKS.iter().any(|(m, e)| *e == export && implemented.contains(m));
            assert!(used, "{export} is kept but src/filter implements nothing behind it");
        }
    }
}

#[test]
fn the_export_list_file_says_the_same() {
    let text = fs::read_to_string(repo_root().join("scripts/wasm-exports.txt")).unwrap();
    let listed: BTreeSet<&str> =
        text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    let expected: BTreeSet<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, expected);
}
