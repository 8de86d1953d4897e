//! `config validate`: what Envoy would make of each plugin configuration in a file (plugin
//! JSON, an Envoy bootstrap, or Istio manifests): the filter's own `configured:` summary, or the
//! one line it logs before Envoy refuses the configuration.

use loopback_guard_core::config::Policy;

use crate::{emit, policy_summary, read_configs, Failure, Io, ValidateArgs, EXIT_OK, EXIT_REFUSED};

pub(crate) fn run(args: &ValidateArgs, json: bool, io: &mut Io<'_>) -> Result<u8, Failure> {
    let configs = read_configs(&args.file)?;
    let mut code = EXIT_OK;
    let mut results = Vec::new();
    let mut text = String::new();
    for config in &configs {
        match Policy::from_json(&config.json, args.trust_domain.as_deref()) {
            Ok(policy) => {
                let summary = policy_summary(&policy);
                text.push_str(&format!("{}: {} {summary}\n", config.location, io.style.good("valid:")));
                results.push(serde_json::json!({
                    "location": config.location, "valid": true, "summary": summary,
                }));
            }
            Err(e) => {
                code = EXIT_REFUSED;
                // The line the filter logs before Envoy refuses the configuration.
                let error = format!("loopback-guard: {e}");
                text.push_str(&format!("{}: {}\n", config.location, io.style.bad(&error)));
                results.push(serde_json::json!({
                    "location": config.location, "valid": false, "error": error,
                    "field": e.field, "problem": e.problem,
                }));
            }
        }
    }
    if json {
        let document = serde_json::json!({ "valid": code == EXIT_OK, "configurations": results });
        text = format!("{document:#}\n");
    }
    emit(io, &text)?;
    Ok(code)
}
