//! The reader of `loopback-guard config validate` and `check --config`: plugin JSON, or YAML
//! (a WasmPlugin, TrafficExtension, EnvoyFilter, an Envoy bootstrap, or anything else) that may
//! carry it. Input: the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_cli::manifest::{self, Source};
use loopback_guard_core::config::Policy;

fuzz_target!(|data: &[u8]| {
    match manifest::read(data) {
        Ok(Source::PluginJson) => {}
        Ok(Source::Manifest(found)) => {
            assert!(!found.is_empty(), "a manifest is reported only with a configuration in it");
            for config in &found {
                assert!(!config.location.is_empty());
                // A pluginConfig object becomes JSON that parses: the plugin may refuse its
                // fields, never its syntax.
                let structured =
                    config.location.ends_with("pluginConfig") || config.location.ends_with("plugin_config");
                if let Err(e) = Policy::from_json(config.json.as_bytes(), None) {
                    assert!(!(structured && e.problem.starts_with("is not valid JSON")), "{config:?}: {e}");
                }
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
