//! Where a plugin configuration comes from: the plugin's JSON itself, or the Kubernetes / Envoy
//! YAML that carries it.
//!
//! - Istio `WasmPlugin`: `spec.pluginConfig`, an object Istio turns into the JSON the plugin
//!   receives.
//! - Istio `TrafficExtension` (1.30+): `spec.wasm.pluginConfig`, the same.
//! - `EnvoyFilter` or an Envoy bootstrap: the Wasm filter's `config.configuration`, a
//!   `google.protobuf.StringValue` whose `value` is the JSON text.
//!
//! `plugin_config` (the proto field name) is accepted wherever `pluginConfig` is.

use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

/// One plugin configuration found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it is, for people: `WasmPlugin demo/loopback-guard, spec.pluginConfig`.
    pub location: String,
    /// The JSON text the plugin would receive.
    pub json: String,
}

/// What a configuration file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The plugin's JSON itself: the bytes go to the plugin unchanged.
    PluginJson,
    /// A YAML manifest (or several documents), with every plugin configuration in it.
    Manifest(Vec<Found>),
}

const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
/// Deeper than any manifest; bounds the walk on hostile input.
const MAX_DEPTH: usize = 64;

/// Decides what `bytes` is. An error (exit status 2) when there is nothing to validate: an
/// empty file, or a manifest without a plugin configuration.
pub fn read(bytes: &[u8]) -> Result<Source, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty (an empty plugin configuration means every default: write {} \
                    to validate that)"
            .into());
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        // Not YAML; the plugin would say the JSON is not UTF-8.
        return Ok(Source::PluginJson);
    };
    let documents = match documents(text) {
        Ok(documents) => documents,
        Err(e) if looks_like_manifest(text) => return Err(format!("not valid YAML: {e}")),
        // Invalid YAML is invalid JSON too: let the plugin's own parser say where.
        Err(_) => return Ok(Source::PluginJson),
    };
    let mut found = Vec::new();
    let mut manifests = Vec::new();
    let many = documents.len() > 1;
    for (index, document) in documents.iter().enumerate() {
        let mut name = describe(document);
        if many {
            name = format!("document {}: {name}", index + 1);
        }
        if is_manifest(document) {
            manifests.push(name.clone());
        }
        let mut walk = Walk { document: &name, found: &mut found, error: None };
        walk.visit(document, &mut Vec::new(), 0);
        if let Some(error) = walk.error {
            return Err(error);
        }
    }
    match (found.is_empty(), manifests.is_empty()) {
        (false, _) => Ok(Source::Manifest(found)),
        (true, true) => Ok(Source::PluginJson),
        (true, false) => {
            let ecds = if documents.iter().any(|d| has_key(d, "config_discovery", 0)) {
                "; its filter comes over ECDS (config_discovery): validate the WasmPlugin it names"
            } else {
                ""
            };
            Err(format!(
                "no plugin configuration in {}: looked for a WasmPlugin's spec.pluginConfig, a \
                 TrafficExtension's spec.wasm.pluginConfig and a Wasm filter's config.configuration \
                 (a WasmPlugin without pluginConfig runs with every default){ecds}",
                manifests.join("; ")
            ))
        }
    }
}

fn documents(text: &str) -> Result<Vec<Yaml>, serde_norway::Error> {
    serde_norway::Deserializer::from_str(text)
        .map(Yaml::deserialize)
        .filter(|document| !matches!(document, Ok(Yaml::Null)))
        .collect()
}

fn has_key(node: &Yaml, key: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match node {
        Yaml::Mapping(mapping) => {
            mapping.iter().any(|(k, v)| k.as_str() == Some(key) || has_key(v, key, depth + 1))
        }
        Yaml::Sequence(items) => items.iter().any(|item| has_key(item, key, depth + 1)),
        Yaml::Tagged(tagged) => has_key(&tagged.value, key, depth + 1),
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_) => false,
    }
}

fn looks_like_manifest(text: &str) -> bool {
    text.lines()
        .any(|line| ["kind:", "apiVersion:", "static_resources:"].iter().any(|key| line.starts_with(key)))
}

/// A Kubernetes object or an Envoy bootstrap: something that carries a configuration rather
/// than being one.
fn is_manifest(document: &Yaml) -> bool {
    ["kind", "apiVersion", "static_resources", "configPatches"].iter().any(|key| document.get(key).is_some())
}

/// `WasmPlugin demo/loopback-guard`, or `the document` for anything without kind and name.
fn describe(document: &Yaml) -> String {
    let text = |value: Option<&Yaml>| value.and_then(Yaml::as_str).map(str::to_owned);
    let metadata = document.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")));
    let namespace = text(metadata.and_then(|m| m.get("namespace")));
    match (text(document.get("kind")), namespace, name) {
        (Some(kind), Some(namespace), Some(name)) => format!("{kind} {namespace}/{name}"),
        (Some(kind), None, Some(name)) => format!("{kind} {name}"),
        (Some(kind), _, None) => kind,
        (None, _, _) => "the document".into(),
    }
}

struct Walk<'a> {
    document: &'a str,
    found: &'a mut Vec<Found>,
    error: Option<String>,
}

impl Walk<'_> {
    fn visit(&mut self, node: &Yaml, path: &mut Vec<String>, depth: usize) {
        if depth > MAX_DEPTH || self.error.is_some() {
            return;
        }
        match node {
            Yaml::Mapping(mapping) => {
                for (key, value) in mapping {
                    let key = scalar_text(key).unwrap_or_else(|| "?".into());
                    path.push(key.clone());
                    if key == "pluginConfig" || key == "plugin_config" {
                        match to_json(value, 0) {
                            Ok(json) => self.push(path, json.to_string()),
                            Err(e) => self.error = Some(format!("{}, {}: {e}", self.document, dotted(path))),
                        }
                    } else if key == "configuration" && is_plugin_configuration(path, value) {
                        match value.get("value") {
                            Some(Yaml::String(json)) => {
                                path.push("value".into());
                                self.push(path, json.clone());
                                path.pop();
                            }
                            // A StringValue without a value is the empty string: every default.
                            None => self.push(path, String::new()),
                            Some(_) => {
                                self.error = Some(format!(
                                    "{}, {}.value: a StringValue's value must be a string",
                                    self.document,
                                    dotted(path)
                                ))
                            }
                        }
                    } else {
                        self.visit(value, path, depth + 1);
                    }
                    path.pop();
                }
            }
            Yaml::Sequence(items) => {
                let parent = path.pop().unwrap_or_default();
                for (index, item) in items.iter().enumerate() {
                    path.push(format!("{parent}[{index}]"));
                    self.visit(item, path, depth + 1);
                    path.pop();
                }
                path.push(parent);
            }
            Yaml::Tagged(tagged) => self.visit(&tagged.value, path, depth + 1),
            Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_) => {}
        }
    }

    fn push(&mut self, path: &[String], json: String) {
        self.found.push(Found { location: format!("{}, {}", self.document, dotted(path)), json });
    }
}

/// The Wasm filter's plugin configuration (`...config.configuration`), not the VM's
/// (`...vm_config.configuration`).
fn is_plugin_configuration(path: &[String], value: &Yaml) -> bool {
    let parent = path.len().checked_sub(2).and_then(|i| path.get(i));
    parent.is_some_and(|parent| parent == "config")
        && value.get("@type").and_then(Yaml::as_str) == Some(STRING_VALUE)
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Null => Some("null".into()),
        Yaml::Tagged(tagged) => scalar_text(&tagged.value),
        Yaml::Sequence(_) | Yaml::Mapping(_) => None,
    }
}

/// The JSON Istio would hand the plugin for a YAML value.
fn to_json(value: &Yaml, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    Ok(match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                let float = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(float)
                    .map(Json::Number)
                    .ok_or_else(|| format!("{n} is not a number JSON can carry"))?
            }
        }
        Yaml::String(text) => Json::String(text.clone()),
        Yaml::Sequence(items) => {
            Json::Array(items.iter().map(|item| to_json(item, depth + 1)).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(mapping) => {
            let mut object = serde_json::Map::new();
            for (key, value) in mapping {
                let key = scalar_text(key).ok_or("a key that is a list or a mapping")?;
                object.insert(key, to_json(value, depth + 1)?);
            }
            Json::Object(object)
        }
        Yaml::Tagged(tagged) => to_json(&tagged.value, depth + 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Vec<Found> {
        match read(text.as_bytes()) {
            Ok(Source::Manifest(found)) => found,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn plugin_json_is_passed_as_it_is() {
        for text in
            [r#"{"mode":"audit"}"#, "{}", r#"{"mode":"audit","mode":"audit"}"#, "not json", "[1]", "{"]
        {
            assert_eq!(read(text.as_bytes()), Ok(Source::PluginJson), "{text}");
        }
        assert_eq!(read(b"\xff\xfe"), Ok(Source::PluginJson));
    }

    #[test]
    fn finds_the_configuration_of_each_kind() {
        let wasm_plugin = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  \
                           name: lg\n  namespace: demo\nspec:\n  pluginConfig:\n    mode: audit\n    \
                           certificate_cache_size: 12\n    exempt_paths: [/healthz]\n";
        assert_eq!(
            manifest(wasm_plugin),
            [Found {
                location: "WasmPlugin demo/lg, spec.pluginConfig".into(),
                json: r#"{"certificate_cache_size":12,"exempt_paths":["/healthz"],"mode":"audit"}"#.into(),
            }]
        );
        let traffic_extension = "kind: TrafficExtension\nmetadata: {name: lg}\nspec:\n  wasm:\n    \
                                 plugin_config: {mode: enforce}\n";
        let found = manifest(traffic_extension);
        assert_eq!(found[0].location, "TrafficExtension lg, spec.wasm.plugin_config");
        assert_eq!(found[0].json, r#"{"mode":"enforce"}"#);

        let envoy_filter = r#"
kind: EnvoyFilter
metadata: {name: listener, namespace: demo}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      value:
        typed_config:
          config:
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{"mode":"audit"}'
            vm_config:
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: vm
"#;
        assert_eq!(
            manifest(envoy_filter),
            [Found {
                location: "EnvoyFilter demo/listener, spec.configPatches[0].patch.value.typed_config.config.configuration.value"
                    .into(),
                json: r#"{"mode":"audit"}"#.into(),
            }]
        );
        let two = format!("{wasm_plugin}---\n{traffic_extension}");
        let found = manifest(&two);
        assert_eq!(found.len(), 2);
        assert!(found[1].location.starts_with("document 2: TrafficExtension lg"), "{found:?}");
        let no_value = "static_resources:\n  config:\n    configuration:\n      \"@type\": \
                        type.googleapis.com/google.protobuf.StringValue\n";
        assert_eq!(manifest(no_value)[0].json, "");
    }

    #[test]
    fn manifests_without_a_configuration_are_errors() {
        for text in [
            "kind: WasmPlugin\nmetadata: {name: lg}\nspec: {url: oci://x}\n",
            "apiVersion: v1\nkind: ConfigMap\n",
            "kind: EnvoyFilter\nspec:\n  config:\n    configuration: {\"@type\": x, value: y}\n",
        ] {
            let error = read(text.as_bytes()).expect_err(text);
            assert!(error.starts_with("no plugin configuration in "), "{error}");
        }
        assert!(read(b"").unwrap_err().contains("empty"));
        assert!(read(b" \n\t").unwrap_err().contains("empty"));
        let duplicate = "kind: WasmPlugin\nspec:\n  pluginConfig: {mode: audit, mode: enforce}\n";
        assert!(read(duplicate.as_bytes()).unwrap_err().starts_with("not valid YAML: "));
        let ecds = "kind: EnvoyFilter\nspec:\n  x: {config_discovery: {}}\n";
        assert!(read(ecds.as_bytes()).unwrap_err().contains("over ECDS"));
        let bad_value = "kind: X\nconfig:\n  configuration: {\"@type\": type.googleapis.com/google.protobuf.StringValue, value: [1]}\n";
        assert!(read(bad_value.as_bytes()).unwrap_err().contains("must be a string"));
    }

    #[test]
    fn yaml_values_become_istio_json() {
        let yaml: Yaml =
            serde_norway::from_str("{a: 1, b: -2, c: 1.5, d: true, e: ~, f: [x], 3: !t y}").unwrap();
        let json = to_json(&yaml, 0).unwrap();
        assert_eq!(json.to_string(), r#"{"3":"y","a":1,"b":-2,"c":1.5,"d":true,"e":null,"f":["x"]}"#);
        let yaml: Yaml = serde_norway::from_str("{a: .nan}").unwrap();
        assert!(to_json(&yaml, 0).is_err());
        let yaml: Yaml = serde_norway::from_str("{[1]: a}").unwrap();
        assert!(to_json(&yaml, 0).is_err());
    }
}
