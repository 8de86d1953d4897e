//! `loopback-guard istio render`: the Istio manifests for one Istio version, from the sources in
//! deploy/istio/ (compiled in, so the command needs no checkout and no Python).
//!
//! What depends on the version is the name istiod serves the plugin under over ECDS, which the
//! loopback listener's first HTTP filter must ask for, and the plugin resource a user applies.
//! Read in istio/istio (docs/istio.md has the table, with the tag of each fact):
//!
//! - 1.26 to 1.29: `BuildExtensionConfiguration` (pilot/pkg/networking/core/
//!   extension_config_builder.go) answers names under `WasmPluginResourceNamePrefix`,
//!   `extensions.istio.io/wasmplugin/` (pilot/pkg/model/extensions.go), and the resource name is
//!   `<prefix><namespace>.<name>` (tags 1.26.0, 1.27.0, 1.28.0, 1.29.0, 1.29.6).
//! - 1.30 and 1.31: only `TrafficExtensionResourceNamePrefix`,
//!   `extensions.istio.io/trafficextension/`; a WasmPlugin is translated into a TrafficExtension
//!   named `<name>~istio-translated-wasmplugin` (`syntheticMarker`,
//!   pilot/pkg/config/kube/extensions/translate.go), so its ECDS name is
//!   `extensions.istio.io/trafficextension/<namespace>.<name>~istio-translated-wasmplugin`
//!   (tags 1.30.0, 1.30.3, 1.31.0-rc.0; master 86c9f01 is the same in every one of these names).
//! - before 1.26 the prefix was misspelt `extenstions.istio.io/wasmplugin/` (istio/istio#55348).
//!
//! A version newer than the newest known (1.31) is refused, naming the newest known: its naming
//! has not been read, and a wrong name leaves the listener denying everything.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_norway::{Mapping, Value};

use crate::{emit, Failure, Io, EXIT_OK};

const WASMPLUGIN_SOURCE: &str = include_str!("../../deploy/istio/wasmplugin.yaml");
const LISTENER_SOURCE: &str = include_str!("../../deploy/istio/envoyfilter-loopback-listener.yaml");
const DEMO_APP_SOURCE: &str = include_str!("../../deploy/istio/demo-app.yaml");
const BACKEND_SOURCE: &str = include_str!("../../deploy/istio/backend.yaml");

const WASMPLUGIN_PREFIX: &str = "extensions.istio.io/wasmplugin/";
const TRAFFICEXTENSION_PREFIX: &str = "extensions.istio.io/trafficextension/";
const TRANSLATED_MARKER: &str = "~istio-translated-wasmplugin";

/// The demo's namespace and workload (deploy/istio/demo-app.yaml), which `--with-demo` needs.
const DEMO_NAMESPACE: &str = "demo";
const DEMO_WORKLOAD: (&str, &str) = ("app", "demo-app");

/// What istiod of an Istio minor version serves over ECDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// `extensions.istio.io/wasmplugin/<ns>.<name>`, WasmPlugin only.
    WasmPlugin,
    /// `extensions.istio.io/trafficextension/<ns>.<name>`, a WasmPlugin translated.
    TrafficExtension,
}

/// Every Istio minor version this renderer knows, with the istio/istio tags its naming was read
/// at. Add a version only after reading that tag (docs/istio.md, "Adding a newer Istio").
const KNOWN: [(u32, Family, &str); 6] = [
    (26, Family::WasmPlugin, "1.26.0, 1.26.8"),
    (27, Family::WasmPlugin, "1.27.0, 1.27.9"),
    (28, Family::WasmPlugin, "1.28.0, 1.28.10"),
    (29, Family::WasmPlugin, "1.29.0, 1.29.6"),
    (30, Family::TrafficExtension, "1.30.0, 1.30.3"),
    (31, Family::TrafficExtension, "1.31.0-rc.0, master 86c9f01"),
];
const OLDEST: u32 = 26;
const NEWEST: u32 = 31;
/// The newest Istio tag read, for the refusal of a newer version.
const NEWEST_TAG: &str = "1.31.0-rc.0";

#[derive(Subcommand, Debug)]
pub(crate) enum IstioCommand {
    /// Print (or write) the Istio manifests for one Istio version: the plugin resource
    /// (WasmPlugin on 1.26-1.29, TrafficExtension on 1.30+) and the loopback listener naming it
    /// as that version's istiod serves it.
    Render(RenderArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Resource {
    Wasmplugin,
    Trafficextension,
}

#[derive(Args, Debug)]
pub(crate) struct RenderArgs {
    /// The mesh's Istio version (istiod's), 1.MINOR[.PATCH[-PRERELEASE]]: 1.26 to 1.31.
    #[arg(long, value_name = "V")]
    istio_version: String,
    /// The workload's namespace: the plugin and the listener go there.
    #[arg(long, value_name = "NS")]
    namespace: String,
    /// The workload's pod labels, KEY=VALUE[,KEY=VALUE...] (the plugin's selector and the
    /// listener's workloadSelector).
    #[arg(long, value_name = "LABELS")]
    workload: String,
    /// The module's image, pinned by its manifest digest: [oci://]HOST[:PORT]/PATH[:TAG]@sha256:HEX
    /// [default: the placeholder, whose all-zero digest never loads].
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// The plugin resource [default: the one that version's istiod serves by name]. `wasmplugin`
    /// on 1.30+ uses istiod's internal translated name.
    #[arg(long, value_enum)]
    resource: Option<Resource>,
    /// Also the demo app and its backend (deploy/istio/demo-app.yaml, backend.yaml); needs
    /// --namespace demo --workload app=demo-app.
    #[arg(long)]
    with_demo: bool,
    /// Write one file per manifest into DIR instead of printing them.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// What to render.
#[derive(Debug, Clone)]
pub struct Options {
    pub istio_version: String,
    pub namespace: String,
    pub workload: String,
    pub image: Option<String>,
    /// `Some(true)`: the TrafficExtension, `Some(false)`: the WasmPlugin, `None`: what istiod serves.
    pub traffic_extension: Option<bool>,
    pub with_demo: bool,
}

/// One rendered manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: &'static str,
    pub text: String,
}

/// The rendering: the files, and the ECDS name the listener asks for.
#[derive(Debug, Clone)]
pub struct Rendering {
    pub files: Vec<File>,
    pub ecds_name: String,
}

pub(crate) fn run(command: &IstioCommand, io: &mut Io<'_>) -> Result<u8, Failure> {
    let IstioCommand::Render(args) = command;
    let options = Options {
        istio_version: args.istio_version.clone(),
        namespace: args.namespace.clone(),
        workload: args.workload.clone(),
        image: args.image.clone(),
        traffic_extension: args.resource.map(|r| r == Resource::Trafficextension),
        with_demo: args.with_demo,
    };
    let rendering = render(&options).map_err(Failure::usage)?;
    match &args.out {
        None => {
            let mut text = String::new();
            for (index, file) in rendering.files.iter().enumerate() {
                if index > 0 {
                    text.push_str("---\n");
                }
                text.push_str(&format!("# {}\n", file.name));
                text.push_str(&file.text);
                if !file.text.ends_with('\n') {
                    text.push('\n');
                }
            }
            emit(io, &text)?;
        }
        Some(dir) => {
            write_files(dir, &rendering)?;
            let names: Vec<&str> = rendering.files.iter().map(|f| f.name).collect();
            let _ = writeln!(
                io.stderr,
                "loopback-guard: wrote {} to {} for Istio {} (ECDS name {})",
                names.join(", "),
                dir.display(),
                args.istio_version,
                rendering.ecds_name
            );
        }
    }
    Ok(EXIT_OK)
}

fn write_files(dir: &Path, rendering: &Rendering) -> Result<(), Failure> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Failure::usage(format!("cannot {what} {}: {e}", path.display()))
    };
    fs::create_dir_all(dir).map_err(|e| fail("create", dir, e))?;
    // A directory rendered for another family must not keep the other plugin resource.
    for stale in ["wasmplugin.yaml", "trafficextension.yaml"] {
        let path = dir.join(stale);
        if !rendering.files.iter().any(|f| f.name == stale) && path.exists() {
            fs::remove_file(&path).map_err(|e| fail("remove", &path, e))?;
        }
    }
    for file in &rendering.files {
        let path = dir.join(file.name);
        fs::write(&path, &file.text).map_err(|e| fail("write", &path, e))?;
    }
    Ok(())
}

/// Renders the manifests; an error says what was wrong with which option.
pub fn render(options: &Options) -> Result<Rendering, String> {
    let minor = parse_version(&options.istio_version)?;
    let serves = family(minor)?;
    let traffic_extension = options.traffic_extension.unwrap_or(serves == Family::TrafficExtension);
    if traffic_extension && serves == Family::WasmPlugin {
        return Err(format!(
            "Istio 1.{minor} has no TrafficExtension (new in 1.30): use --resource wasmplugin"
        ));
    }
    check_namespace(&options.namespace)?;
    let labels = parse_labels(&options.workload)?;
    if options.with_demo
        && (options.namespace != DEMO_NAMESPACE
            || labels != [(DEMO_WORKLOAD.0.to_owned(), DEMO_WORKLOAD.1.to_owned())])
    {
        return Err(format!(
            "--with-demo: the demo app runs in namespace {DEMO_NAMESPACE} with {}={}; render your own \
             workload without it",
            DEMO_WORKLOAD.0, DEMO_WORKLOAD.1
        ));
    }

    let mut plugin_text = WASMPLUGIN_SOURCE.to_owned();
    if let Some(image) = &options.image {
        let image = parse_image(image)?;
        plugin_text = replace_line(&plugin_text, "  url: ", &format!("  url: {}", image.url))?;
        plugin_text = replace_line(&plugin_text, "  sha256: ", &format!("  sha256: \"{}\"", image.digest))?;
    }
    plugin_text =
        replace_line(&plugin_text, "  namespace: ", &format!("  namespace: {}", options.namespace))?;
    plugin_text = replace_block(&plugin_text, "    matchLabels:", "      ", &labels)?;
    let plugin = parse_yaml(&plugin_text, "deploy/istio/wasmplugin.yaml")?;
    if str_at(&plugin, &["kind"]) != Some("WasmPlugin") {
        return Err("deploy/istio/wasmplugin.yaml must be a WasmPlugin".into());
    }
    let name =
        str_at(&plugin, &["metadata", "name"]).ok_or("the WasmPlugin has no metadata.name")?.to_owned();
    expect_placed(&plugin, &["spec", "selector", "matchLabels"], options, &labels, "WasmPlugin")?;

    let ecds_name = match (serves, traffic_extension) {
        (Family::WasmPlugin, _) => format!("{WASMPLUGIN_PREFIX}{}.{name}", options.namespace),
        (Family::TrafficExtension, true) => format!("{TRAFFICEXTENSION_PREFIX}{}.{name}", options.namespace),
        (Family::TrafficExtension, false) => {
            format!("{TRAFFICEXTENSION_PREFIX}{}.{name}{TRANSLATED_MARKER}", options.namespace)
        }
    };
    let same_for: Vec<u32> = KNOWN.iter().filter(|(_, f, _)| *f == serves).map(|(m, _, _)| *m).collect();
    let note = format!(
        "# Rendered by `loopback-guard istio render` for Istio 1.{minor} (the same for 1.{}-1.{}), {};\n\
         # ECDS name {ecds_name}.\n\
         # Edit the sources in deploy/istio/ and render again: make istio-manifests ISTIO_VERSION=...\n",
        same_for.first().copied().unwrap_or(minor),
        same_for.last().copied().unwrap_or(minor),
        if traffic_extension { "TrafficExtension" } else { "WasmPlugin" },
    );

    let mut files = Vec::new();
    if traffic_extension {
        let extension = to_traffic_extension(&plugin)?;
        let yaml = serde_norway::to_string(&extension)
            .map_err(|e| format!("cannot write the TrafficExtension: {e}"))?;
        files.push(File {
            name: "trafficextension.yaml",
            text: format!(
                "# loopback-guard as an Istio TrafficExtension (Istio 1.30+): the WasmPlugin of\n\
                 # deploy/istio/wasmplugin.yaml, field by field as istiod itself translates a WasmPlugin\n\
                 # (pilot/pkg/config/kube/extensions/translate.go). docs/istio.md explains every field.\n\
                 {note}{yaml}"
            ),
        });
    } else {
        files.push(File { name: "wasmplugin.yaml", text: replace_source_note(&plugin_text, &note)? });
    }

    let listener = parse_yaml(LISTENER_SOURCE, "deploy/istio/envoyfilter-loopback-listener.yaml")?;
    let old = first_http_filter(&listener).ok_or("the listener source has no first HTTP filter name")?;
    let mut listener_text =
        replace_exact_line(LISTENER_SOURCE, &format!("- name: {old}"), &format!("- name: {ecds_name}"))?;
    listener_text =
        replace_line(&listener_text, "  namespace: ", &format!("  namespace: {}", options.namespace))?;
    listener_text = replace_block(&listener_text, "    labels:", "      ", &labels)?;
    listener_text = replace_source_note(&listener_text, &note)?;
    let rendered = parse_yaml(&listener_text, "the rendered listener")?;
    if first_http_filter(&rendered) != Some(ecds_name.as_str()) {
        return Err(format!("rendering failed: the listener's first HTTP filter is not {ecds_name}"));
    }
    expect_placed(&rendered, &["spec", "workloadSelector", "labels"], options, &labels, "EnvoyFilter")?;
    files.push(File { name: "envoyfilter-loopback-listener.yaml", text: listener_text });
    if options.with_demo {
        files.push(File { name: "demo-app.yaml", text: DEMO_APP_SOURCE.to_owned() });
        files.push(File { name: "backend.yaml", text: BACKEND_SOURCE.to_owned() });
    }
    Ok(Rendering { files, ecds_name })
}

/// `1.MINOR[.PATCH[-PRERELEASE]]` -> MINOR, for a known minor version.
fn parse_version(text: &str) -> Result<u32, String> {
    let bad = || {
        format!("--istio-version {text:?}: expected 1.MINOR[.PATCH[-PRERELEASE]], e.g. 1.{NEWEST} or {NEWEST_TAG}")
    };
    let (core, prerelease) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    if let Some(pre) = prerelease {
        let identifier_ok =
            |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !pre.split('.').all(identifier_ok) {
            return Err(bad());
        }
    }
    let parts: Vec<&str> = core.split('.').collect();
    let number = |part: &str| -> Option<u32> {
        let digits = !part.is_empty() && part.len() <= 4 && part.bytes().all(|b| b.is_ascii_digit());
        let canonical = part == "0" || !part.starts_with('0');
        if digits && canonical {
            part.parse().ok()
        } else {
            None
        }
    };
    let (major, minor) = match parts.as_slice() {
        [major, minor] if prerelease.is_none() => (number(major), number(minor)),
        [major, minor, patch] if number(patch).is_some() => (number(major), number(minor)),
        _ => return Err(bad()),
    };
    let (Some(major), Some(minor)) = (major, minor) else { return Err(bad()) };
    if major != 1 {
        return Err(format!(
            "Istio {major}.{minor} is not supported: supported are 1.{OLDEST} to 1.{NEWEST}"
        ));
    }
    Ok(minor)
}

fn family(minor: u32) -> Result<Family, String> {
    if let Some((_, family, _)) = KNOWN.iter().find(|(m, _, _)| *m == minor) {
        return Ok(*family);
    }
    if minor < OLDEST {
        return Err(format!(
            "Istio 1.{minor} is not supported: supported are 1.{OLDEST} to 1.{NEWEST} (before 1.26 istiod \
             serves WasmPlugins under a misspelt prefix, extenstions.istio.io/wasmplugin/)"
        ));
    }
    Err(format!(
        "Istio 1.{minor} is newer than the newest Istio this renderer knows, 1.{NEWEST} (read at \
         {NEWEST_TAG}): its ECDS naming has not been checked, and a listener asking for a name istiod \
         does not serve denies every request. Render for 1.{NEWEST} only after checking that \
         1.{minor} serves extensions.istio.io/trafficextension/<namespace>.<name> (docs/istio.md, \
         \"Adding a newer Istio\")"
    ))
}

/// A Kubernetes namespace: an RFC 1123 label (lowercase letters, digits, '-'; at most 63).
fn check_namespace(namespace: &str) -> Result<(), String> {
    if is_dns_label(namespace) {
        Ok(())
    } else {
        Err(format!(
            "--namespace {namespace:?}: a namespace is 1 to 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let inner_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ends_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !bytes.is_empty() && bytes.len() <= 63 && inner_ok && ends_ok(bytes.first()) && ends_ok(bytes.last())
}

/// A label name or value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let inner_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    !bytes.is_empty() && bytes.len() <= 63 && inner_ok && ends_ok(bytes.first()) && ends_ok(bytes.last())
}

/// `KEY=VALUE[,KEY=VALUE...]`, keys as Kubernetes label keys (`[prefix/]name`), values as label
/// values (possibly empty); no key twice.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("--workload {text:?}: expected KEY=VALUE[,KEY=VALUE...], e.g. app=demo-app"));
        };
        let key_ok = match key.split_once('/') {
            Some((prefix, name)) => {
                prefix.len() <= 253 && prefix.split('.').all(is_dns_label) && is_label_name(name)
            }
            None => is_label_name(key),
        };
        if !key_ok {
            return Err(format!("--workload: {key:?} is not a Kubernetes label key ([prefix/]name, name at most 63 of A-Z a-z 0-9 - _ .)"));
        }
        if !value.is_empty() && !is_label_name(value) {
            return Err(format!(
                "--workload: the value of {key} ({value:?}) is not a Kubernetes label value"
            ));
        }
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("--workload: label {key} given twice"));
        }
        labels.push((key.to_owned(), value.to_owned()));
    }
    Ok(labels)
}

/// A module image, parsed: the WasmPlugin's `url` and `sha256`.
#[derive(Debug, PartialEq, Eq)]
struct Image {
    url: String,
    digest: String,
}

/// `[oci://]HOST[:PORT]/PATH[:TAG]@sha256:HEX`, after the OCI distribution reference grammar
/// (domain, path components, tag, digest). The digest is required: for an oci:// URL istio-agent
/// compares `sha256` with the digest of the manifest it fetched (pkg/wasm/cache.go, `dChecksum`
/// from `PrepareFetch` in pkg/wasm/imagefetcher.go), so it is what pins the module.
fn parse_image(text: &str) -> Result<Image, String> {
    let form = "[oci://]HOST[:PORT]/PATH[:TAG]@sha256:<64 hex, the image's manifest digest>";
    let reference = text.strip_prefix("oci://").unwrap_or(text);
    let Some((name_tag, digest)) = reference.split_once('@') else {
        return Err(format!(
            "--image {text:?}: pin the image by its manifest digest, {form} (`make image` prints it)"
        ));
    };
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!(
            "--image {text:?}: the digest must be sha256:<64 lowercase hex>; expected {form}"
        ));
    }
    let Some((domain, rest)) = name_tag.split_once('/') else {
        return Err(format!("--image {text:?}: no registry host; expected {form}"));
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (rest, None),
    };
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    if !host_ok || !port_ok {
        return Err(format!("--image {text:?}: {domain:?} is not a registry host[:port]; expected {form}"));
    }
    if !path.split('/').all(is_path_component) {
        return Err(format!(
            "--image {text:?}: {path:?} is not a repository path (lowercase components of a-z 0-9 \
             joined by '.', '_', '__' or '-', separated by '/')"
        ));
    }
    if let Some(tag) = tag {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err(format!(
                "--image {text:?}: {tag:?} is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
            ));
        }
    }
    let url = match tag {
        Some(tag) => format!("oci://{domain}/{path}:{tag}"),
        None => format!("oci://{domain}/{path}@sha256:{hex}"),
    };
    Ok(Image { url, digest: hex.to_owned() })
}

/// One path component of the distribution grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        while bytes.get(index).is_some_and(|b| !alnum(b)) {
            index += 1;
        }
        let separator = bytes.get(start..index).unwrap_or_default();
        let separator_ok = separator.is_empty()
            || separator == b"."
            || separator == b"_"
            || separator == b"__"
            || separator.iter().all(|b| *b == b'-');
        if !separator_ok {
            return false;
        }
        while bytes.get(index).is_some_and(alnum) {
            index += 1;
        }
        if index == start {
            return false;
        }
    }
    true
}

/// Replaces the one line starting with `prefix` (and not indented further).
fn replace_line(text: &str, prefix: &str, new: &str) -> Result<String, String> {
    replace_lines(text, |line| line.starts_with(prefix).then(|| new.to_owned()), prefix.trim())
}

/// Replaces the one line that is `exact` after its indentation, keeping the indentation.
fn replace_exact_line(text: &str, exact: &str, new: &str) -> Result<String, String> {
    let indented = |body: &str| {
        let indent = body.len() - body.trim_start().len();
        format!("{}{new}", body.get(..indent).unwrap_or_default())
    };
    replace_lines(text, |line| (line.trim() == exact).then(|| indented(line.trim_end_matches('\n'))), exact)
}

/// Replaces the one line for which `replacement` has a replacement (`what` names it in the
/// error when there is not exactly one).
fn replace_lines(
    text: &str,
    replacement: impl Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, String> {
    let mut count = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match replacement(line) {
            Some(new) => {
                count += 1;
                out.push_str(&new);
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    if count == 1 {
        Ok(out)
    } else {
        Err(format!("the source must have one {what:?} line, found {count}"))
    }
}

/// Replaces the entries under the one line `header` (the lines at `indent` after it) with
/// `labels`.
fn replace_block(
    text: &str,
    header: &str,
    indent: &str,
    labels: &[(String, String)],
) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let headers: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_end_matches('\n') == header)
        .map(|(i, _)| i)
        .collect();
    let [at] = headers.as_slice() else {
        return Err(format!("the source must have one {:?} line, found {}", header.trim(), headers.len()));
    };
    let mut end = at + 1;
    while lines.get(end).is_some_and(|l| l.starts_with(indent) && !l.trim_start().starts_with('#')) {
        end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for line in lines.get(..=*at).unwrap_or_default() {
        out.push_str(line);
    }
    for (key, value) in labels {
        out.push_str(&format!("{indent}{}: {}\n", yaml_scalar(key), yaml_scalar(value)));
    }
    for line in lines.get(end..).unwrap_or_default() {
        out.push_str(line);
    }
    Ok(out)
}

/// A label key or value as a YAML scalar: plain when YAML reads it back as that string,
/// double-quoted otherwise (`true`, `1.0`, `null`, empty ...).
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && serde_norway::from_str::<Value>(text).ok() == Some(Value::String(text.to_owned()));
    if plain {
        text.to_owned()
    } else {
        format!("\"{text}\"")
    }
}

/// Replaces the source's note (from `# This file is the source` or `# The source of every
/// rendering` up to `apiVersion:`) with `note`.
fn replace_source_note(text: &str, note: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| {
            l.starts_with("# This file is the source") || l.starts_with("# The source of every rendering")
        })
        .ok_or("the source has no '# This file is the source' note")?;
    let end = lines
        .iter()
        .skip(start)
        .position(|l| l.starts_with("apiVersion:"))
        .map(|offset| start + offset)
        .ok_or("the source's note is not followed by apiVersion:")?;
    let mut out = String::with_capacity(text.len() + note.len());
    for line in lines.get(..start).unwrap_or_default() {
        out.push_str(line);
    }
    out.push_str(note);
    for line in lines.get(end..).unwrap_or_default() {
        out.push_str(line);
    }
    Ok(out)
}

fn parse_yaml(text: &str, what: &str) -> Result<Value, String> {
    serde_norway::from_str(text).map_err(|e| format!("{what}: not valid YAML: {e}"))
}

fn value_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(value, path).and_then(Value::as_str)
}

fn first_http_filter(envoy_filter: &Value) -> Option<&str> {
    let patches = value_at(envoy_filter, &["spec", "configPatches"])?.as_sequence()?;
    let listener = patches.first()?;
    let chain = value_at(listener, &["patch", "value", "filter_chains"])?.as_sequence()?.first()?;
    let hcm = value_at(chain, &["filters"])?.as_sequence()?.first()?;
    let filters = value_at(hcm, &["typed_config", "http_filters"])?.as_sequence()?;
    filters.first()?.get("name")?.as_str()
}

/// The rendered resource is in the namespace and selects the labels asked for.
fn expect_placed(
    doc: &Value,
    selector: &[&str],
    options: &Options,
    labels: &[(String, String)],
    kind: &str,
) -> Result<(), String> {
    let namespace_ok = str_at(doc, &["metadata", "namespace"]) == Some(options.namespace.as_str());
    let want: Mapping =
        labels.iter().map(|(k, v)| (Value::String(k.clone()), Value::String(v.clone()))).collect();
    let labels_ok = value_at(doc, selector).and_then(Value::as_mapping) == Some(&want);
    if namespace_ok && labels_ok {
        Ok(())
    } else {
        Err(format!(
            "rendering failed: the {kind} is not in namespace {} selecting {}",
            options.namespace, options.workload
        ))
    }
}

/// The TrafficExtension with the WasmPlugin's fields, mapped as istiod maps them
/// (`translateWasmPlugin`, pilot/pkg/config/kube/extensions/translate.go at 1.30.0 and
/// 1.31.0-rc.0): selector, phase, priority, match and targetRefs (a lone targetRef folded in)
/// stay, the module's fields move under `wasm`.
fn to_traffic_extension(plugin: &Value) -> Result<Value, String> {
    let spec = plugin.get("spec").and_then(Value::as_mapping).ok_or("the WasmPlugin has no spec")?;
    let mut out_spec = Mapping::new();
    for key in ["selector", "phase", "priority", "match"] {
        if let Some(value) = spec.get(key) {
            out_spec.insert(Value::String(key.into()), value.clone());
        }
    }
    let target_refs = spec
        .get("targetRefs")
        .cloned()
        .or_else(|| spec.get("targetRef").map(|r| Value::Sequence(vec![r.clone()])));
    if let Some(refs) = target_refs {
        out_spec.insert(Value::String("targetRefs".into()), refs);
    }
    let mut wasm = Mapping::new();
    for key in [
        "url",
        "sha256",
        "imagePullPolicy",
        "imagePullSecret",
        "pluginConfig",
        "pluginName",
        "failStrategy",
        "vmConfig",
        "type",
    ] {
        if let Some(value) = spec.get(key) {
            wasm.insert(Value::String(key.into()), value.clone());
        }
    }
    out_spec.insert(Value::String("wasm".into()), Value::Mapping(wasm));
    let mut metadata = Mapping::new();
    if let Some(source) = plugin.get("metadata").and_then(Value::as_mapping) {
        for (key, value) in source {
            if matches!(key.as_str(), Some("name" | "namespace" | "labels")) {
                metadata.insert(key.clone(), value.clone());
            }
        }
    }
    let mut out = Mapping::new();
    out.insert(Value::String("apiVersion".into()), Value::String("extensions.istio.io/v1alpha1".into()));
    out.insert(Value::String("kind".into()), Value::String("TrafficExtension".into()));
    out.insert(Value::String("metadata".into()), Value::Mapping(metadata));
    out.insert(Value::String("spec".into()), Value::Mapping(out_spec));
    Ok(Value::Mapping(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(version: &str) -> Options {
        Options {
            istio_version: version.into(),
            namespace: "demo".into(),
            workload: "app=demo-app".into(),
            image: None,
            traffic_extension: None,
            with_demo: true,
        }
    }

    #[test]
    fn versions_by_grammar() {
        for (text, minor) in [
            ("1.26", 26),
            ("1.29.6", 29),
            ("1.31", 31),
            ("1.31.0-rc.0", 31),
            ("1.31.2", 31),
            ("1.30.0-alpha.1", 30),
        ] {
            assert_eq!(parse_version(text), Ok(minor), "{text}");
            assert!(family(minor).is_ok(), "{text}");
        }
        for text in [
            "",
            "1",
            "1.",
            "1.31.",
            "1.31-rc.0",
            "v1.31",
            "1.031",
            "1.31.0-",
            "1.31.0-rc..0",
            "1.31.0+x",
            " 1.31",
            "1.31.0.1",
        ] {
            assert!(parse_version(text).is_err(), "{text:?} parsed");
        }
        assert!(parse_version("2.0").unwrap_err().contains("supported are 1.26 to 1.31"));
        assert!(family(25).unwrap_err().contains("misspelt"));
        let newer = family(32).unwrap_err();
        assert!(
            newer.contains("newest Istio this renderer knows, 1.31") && newer.contains("1.31.0-rc.0"),
            "{newer}"
        );
    }

    #[test]
    fn ecds_names_per_family() {
        let cases = [
            ("1.26", None, "extensions.istio.io/wasmplugin/demo.loopback-guard"),
            ("1.29.6", None, "extensions.istio.io/wasmplugin/demo.loopback-guard"),
            ("1.30", None, "extensions.istio.io/trafficextension/demo.loopback-guard"),
            ("1.31.0-rc.0", None, "extensions.istio.io/trafficextension/demo.loopback-guard"),
            (
                "1.31",
                Some(false),
                "extensions.istio.io/trafficextension/demo.loopback-guard~istio-translated-wasmplugin",
            ),
            ("1.28", Some(false), "extensions.istio.io/wasmplugin/demo.loopback-guard"),
        ];
        for (version, resource, name) in cases {
            let rendering = render(&Options { traffic_extension: resource, ..options(version) }).unwrap();
            assert_eq!(rendering.ecds_name, name, "{version}");
        }
        let refused = render(&Options { traffic_extension: Some(true), ..options("1.29") }).unwrap_err();
        assert!(refused.contains("no TrafficExtension"), "{refused}");
    }

    #[test]
    fn namespace_and_workload_are_placed() {
        let rendering = render(&Options {
            namespace: "shop".into(),
            workload: "app=cart,version=v2".into(),
            with_demo: false,
            ..options("1.31")
        })
        .unwrap();
        assert_eq!(rendering.ecds_name, "extensions.istio.io/trafficextension/shop.loopback-guard");
        let names: Vec<&str> = rendering.files.iter().map(|f| f.name).collect();
        assert_eq!(names, ["trafficextension.yaml", "envoyfilter-loopback-listener.yaml"]);
        let extension: Value = serde_norway::from_str(&rendering.files[0].text).unwrap();
        assert_eq!(str_at(&extension, &["metadata", "namespace"]), Some("shop"));
        assert_eq!(str_at(&extension, &["spec", "selector", "matchLabels", "version"]), Some("v2"));
        assert!(render(&Options { namespace: "shop".into(), ..options("1.31") })
            .unwrap_err()
            .contains("--with-demo"));
    }

    #[test]
    fn bad_options_are_refused_by_grammar() {
        for ns in ["", "Demo", "-demo", "demo-", "de_mo", "a.b", &"a".repeat(64)] {
            assert!(check_namespace(ns).is_err(), "{ns:?}");
        }
        for labels in
            ["", "app", "app=", "=x", "app=a,app=b", "app=-x", "a/b/c=x", "Bad_Prefix/app=x", "app=x,"]
        {
            let parsed = parse_labels(labels);
            if labels == "app=" {
                assert_eq!(parsed, Ok(vec![("app".into(), String::new())]));
            } else {
                assert!(parsed.is_err(), "{labels:?} parsed");
            }
        }
        assert_eq!(parse_labels("app.kubernetes.io/name=x,v=1.0").unwrap().len(), 2);
        assert_eq!(yaml_scalar("1.0"), "\"1.0\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("demo-app"), "demo-app");
    }

    #[test]
    fn images_by_reference_grammar() {
        let hex = "ab".repeat(32);
        let good = [
            (
                format!("registry.example.com/loopback-guard:0.1.0@sha256:{hex}"),
                "oci://registry.example.com/loopback-guard:0.1.0",
            ),
            (format!("oci://127.0.0.1:5000/a/b_c:t@sha256:{hex}"), "oci://127.0.0.1:5000/a/b_c:t"),
            (format!("reg:5000/x@sha256:{hex}"), &*format!("oci://reg:5000/x@sha256:{hex}")),
        ];
        for (text, url) in &good {
            assert_eq!(
                parse_image(text),
                Ok(Image { url: (*url).to_owned(), digest: hex.clone() }),
                "{text}"
            );
        }
        let bad = [
            "registry.example.com/loopback-guard:0.1.0".to_owned(),
            format!("registry.example.com/lg@sha256:{}", "AB".repeat(32)),
            format!("registry.example.com/lg@sha512:{hex}"),
            format!("lg:1@sha256:{hex}"),
            format!("reg:99999/lg@sha256:{hex}"),
            format!("reg/LG@sha256:{hex}"),
            format!("reg/a..b@sha256:{hex}"),
            format!("reg/a:-t@sha256:{hex}"),
            format!("reg/a b@sha256:{hex}"),
            format!("http://reg/a@sha256:{hex}"),
        ];
        for text in &bad {
            assert!(parse_image(text).is_err(), "{text} parsed");
        }
        let filled = render(&Options { image: Some(good[0].0.clone()), ..options("1.29") }).unwrap();
        let plugin: Value = serde_norway::from_str(&filled.files[0].text).unwrap();
        assert_eq!(
            str_at(&plugin, &["spec", "url"]),
            Some("oci://registry.example.com/loopback-guard:0.1.0")
        );
        assert_eq!(str_at(&plugin, &["spec", "sha256"]), Some(hex.as_str()));
    }
}
