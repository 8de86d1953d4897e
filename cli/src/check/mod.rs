//! `check`: the filter's decision for one request, each step of it, and what the filter would
//! log, count and answer. The request goes through the filter's own entry, `Engine::configure`
//! and `Engine::handle`, on a host built from the command's flags and files (`crate::host`);
//! this module reads the inputs, runs them, and renders the `Outcome`.

mod render;
mod steps;

use loopback_guard_core::config::Policy;
use loopback_guard_core::engine::{Engine, Outcome};
use loopback_guard_core::identity::SpiffeId;
use loopback_guard_core::notice::Notice;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cert::{CertFileError, PeerCertificate, TrustedCas};
use crate::handshake;
use crate::host::{CliHost, Pod, Request};
use crate::{emit, read_configs, CheckArgs, Failure, Io};

const METHOD: &str = "GET";

/// What the check reads: the flags and files, as Envoy would hand them to the filter.
struct Inputs {
    /// Where the configuration came from (`None`: every default).
    configuration: Option<String>,
    json: Vec<u8>,
    trust_domain: Option<String>,
    policy: Policy,
    peer: Option<PeerCertificate>,
    cas: Option<TrustedCas>,
    pod: Pod,
    request: Request,
}

impl Inputs {
    fn host(&self) -> CliHost<'_> {
        CliHost { peer: self.peer.as_ref(), pod: &self.pod, request: &self.request }
    }
}

/// What the filter makes of the inputs.
struct Checked {
    /// The listener's handshake, with `--ca`: why it accepts the certificate, or refuses it.
    handshake: Option<Result<String, String>>,
    /// The filter's outcome for the request; `None` when the handshake refused the connection.
    outcome: Option<Outcome>,
    /// Every line the filter logs besides the decision line: at configure, then at the request.
    notices: Vec<Notice>,
}

pub(crate) fn run(args: &CheckArgs, json: bool, io: &mut Io<'_>) -> Result<u8, Failure> {
    let inputs = read(args)?;
    let checked = decide(&inputs)?;
    let text = match json {
        true => render::json(&inputs, &checked)?,
        false => render::text(&inputs, &checked, io.style),
    };
    emit(io, &text)?;
    Ok(render::exit_code(&checked))
}

/// The flags and files, read and checked; a bad one is a usage error.
fn read(args: &CheckArgs) -> Result<Inputs, Failure> {
    let now = match &args.at {
        Some(at) => OffsetDateTime::parse(at, &Rfc3339)
            .map_err(|e| Failure::usage(format!("--at {at:?} is not an RFC 3339 time: {e}")))?
            .unix_timestamp(),
        None => OffsetDateTime::now_utc().unix_timestamp(),
    };
    let (configuration, json, policy) = configuration(args)?;
    let usage = |e: CertFileError| Failure::usage(e.to_string());
    let peer = args.cert.as_deref().map(PeerCertificate::read).transpose().map_err(usage)?;
    let cas = args.ca.as_deref().map(TrustedCas::read).transpose().map_err(usage)?;
    let listener_principal = match (&args.principal, &args.namespace, &args.service_account) {
        (Some(id), _, _) => Some(id.clone()),
        // Istio's sidecar serves the pod's own workload certificate on the listener.
        (None, Some(ns), Some(sa)) => {
            SpiffeId::for_service_account(&policy.trust_domain, ns, sa).ok().map(|id| id.as_str().to_owned())
        }
        _ => None,
    };
    let pod = Pod {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        listener_principal,
    };
    let request = Request {
        source_address: args.source.clone(),
        path: args.path.clone(),
        method: METHOD.into(),
        authority: args.authority.clone(),
        now,
    };
    Ok(Inputs {
        configuration,
        json,
        trust_domain: args.trust_domain.clone(),
        policy,
        peer,
        cas,
        pod,
        request,
    })
}

/// The request through the filter's entry: configured as Envoy configures the plugin, then
/// handled, unless the listener's handshake refused the connection first.
fn decide(inputs: &Inputs) -> Result<Checked, Failure> {
    let host = inputs.host();
    let handshake = match (&inputs.peer, &inputs.cas) {
        (Some(peer), Some(cas)) => Some(handshake::handshake(peer, cas, inputs.request.now)),
        _ => None,
    };
    let (mut engine, mut notices) = Engine::configure(&inputs.json, inputs.trust_domain.as_deref(), &host)
        .map_err(|refused| Failure::usage(refused.text))?;
    let outcome = match &handshake {
        Some(Err(_)) => None,
        _ => Some(engine.handle(&host)),
    };
    if let Some(outcome) = &outcome {
        notices.extend(outcome.notices.iter().cloned());
    }
    Ok(Checked { handshake, outcome, notices })
}

/// The configuration (where from, its JSON) and its policy; an invalid one ends the check as
/// Envoy would refuse it.
fn configuration(args: &CheckArgs) -> Result<(Option<String>, Vec<u8>, Policy), Failure> {
    let Some(path) = &args.config else {
        let policy = Policy::from_json(b"", args.trust_domain.as_deref())
            .map_err(|e| Failure::usage(format!("--trust-domain: {e}")))?;
        return Ok((None, Vec::new(), policy));
    };
    let mut configs = read_configs(path)?;
    let config = match configs.len() {
        1 => configs.remove(0),
        n => {
            let places: Vec<String> = configs.iter().map(|c| c.location.clone()).collect();
            return Err(Failure::usage(format!(
                "{} holds {n} plugin configurations; pass a file with one: {}",
                path.display(),
                places.join("; ")
            )));
        }
    };
    let policy = Policy::from_json(&config.json, args.trust_domain.as_deref()).map_err(|e| {
        Failure::usage(format!(
            "{}: Envoy would refuse this configuration, the filter logging\n  loopback-guard: {e}",
            config.location
        ))
    })?;
    Ok((Some(config.location), config.json, policy))
}
