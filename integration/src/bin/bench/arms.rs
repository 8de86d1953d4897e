//! The benchmark's arms. Every arm is the same Envoy, listener, certificates and backend
//! ([`crate::envoy_config`]); arms differ only in the HTTP filters before the router and in the
//! client certificate. A new arm is one more entry in [`standard`].

use loopback_guard_integration::{Error, Result};

/// Counters that must count every request of an arm, so that a run proves each request took the
/// arm's path (and not, say, a 503 from a crashed VM).
const RBAC_ALLOWED: &str = "http.loopback_strict.rbac.allowed";
const RBAC_DENIED: &str = "http.loopback_strict.rbac.denied";
const GUARD_ALLOWED: &str = "wasmcustom.loopback_guard.allowed";
const GUARD_DENIED_MISMATCH: &str = "wasmcustom.loopback_guard.denied.principal_mismatch";

/// Which module a Wasm filter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// The loopback-guard module (`LOOPBACK_GUARD_WASM`).
    Guard,
    /// bench/empty-filter: returns Continue and, configured, repeats chosen host calls.
    Empty,
    /// bench/empty-filter through the shipped module's post-link step: it exports exactly the
    /// callbacks loopback-guard does (`bench/build-empty.sh min`).
    EmptyMin,
    /// Another build of loopback-guard (`BENCH_GUARD_ALT_WASM`), to compare two builds.
    GuardAlt,
    /// loopback-guard built with the `bench-full-decisions` feature (`bench/build-full.sh`): no
    /// per-connection verdict, so every request is decided in full, as a connection's first is.
    GuardFull,
}

/// One HTTP filter, placed before the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// A proxy-wasm filter running `module` with this plugin configuration string.
    Wasm { module: Module, configuration: String },
    /// Envoy's native RBAC admitting only the pod's own SPIFFE ID.
    Rbac,
}

impl Filter {
    pub fn guard(configuration: &str) -> Self {
        Filter::Wasm { module: Module::Guard, configuration: configuration.to_owned() }
    }

    pub fn empty(configuration: &str) -> Self {
        Filter::Wasm { module: Module::Empty, configuration: configuration.to_owned() }
    }

    pub fn empty_min(configuration: &str) -> Self {
        Filter::Wasm { module: Module::EmptyMin, configuration: configuration.to_owned() }
    }
}

/// Which certificate the load generator presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The pod's own SPIFFE ID: admitted.
    App,
    /// Same CA, another SPIFFE ID: denied by RBAC and by loopback-guard.
    Rogue,
}

/// The status every request of the arm must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Forbidden,
}

impl Expect {
    /// As bench/report.py reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Ok => "2xx",
            Expect::Forbidden => "403",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Arm {
    pub name: String,
    /// One line for the tables.
    pub label: String,
    pub filters: Vec<Filter>,
    pub client: Client,
    pub expect: Expect,
    /// A counter (besides Envoy's per-status ones) that must count every request.
    pub counter: Option<&'static str>,
    /// A new TLS connection for every request, in every mode (oha `--disable-keepalive`).
    pub new_connection_per_request: bool,
}

impl Arm {
    fn new(name: &str, label: &str, filters: Vec<Filter>) -> Self {
        Arm {
            name: name.to_owned(),
            label: label.to_owned(),
            filters,
            client: Client::App,
            expect: Expect::Ok,
            counter: None,
            new_connection_per_request: false,
        }
    }

    fn counting(mut self, counter: &'static str) -> Self {
        self.counter = Some(counter);
        self
    }

    /// The rogue client, denied with 403, every denial counted by `counter`.
    fn rogue(mut self, counter: &'static str) -> Self {
        self.client = Client::Rogue;
        self.expect = Expect::Forbidden;
        self.counter = Some(counter);
        self
    }
}

/// Every arm of a default run, in the tables' order.
pub fn standard() -> Vec<Arm> {
    vec![
        Arm::new("A0", "no filter", vec![]),
        Arm::new("A1-min", "empty wasm filter, only the guard's exports", vec![Filter::empty_min("")]),
        Arm::new("A1", "empty wasm filter (SDK: every export)", vec![Filter::empty("")]),
        Arm::new("A2", "native RBAC", vec![Filter::Rbac]).counting(RBAC_ALLOWED),
        Arm::new("A3", "loopback-guard (default)", vec![Filter::guard("{}")]).counting(GUARD_ALLOWED),
        Arm::new("A4", "loopback-guard, cache off", vec![Filter::guard(r#"{"certificate_cache_size":0}"#)])
            .counting(GUARD_ALLOWED),
        Arm::new("A5", "loopback-guard, log all", vec![Filter::guard(r#"{"log_allowed":"all"}"#)])
            .counting(GUARD_ALLOWED),
        // Keep-alive traffic reuses its connection's verdict; these decide every request as a
        // connection's first, so A4-full - A3-full is the first sight of a certificate.
        Arm::new("A3-full", "loopback-guard, every request decided in full", vec![full("{}")])
            .counting(GUARD_ALLOWED),
        Arm::new(
            "A4-full",
            "loopback-guard, cache off, every request decided in full",
            vec![full(r#"{"certificate_cache_size":0}"#)],
        )
        .counting(GUARD_ALLOWED),
        Arm::new("A2-deny", "native RBAC, rogue cert", vec![Filter::Rbac]).rogue(RBAC_DENIED),
        Arm::new("A3-deny", "loopback-guard, rogue cert", vec![Filter::guard("{}")])
            .rogue(GUARD_DENIED_MISMATCH),
    ]
    .into_iter()
    .chain(crate::connection::arms())
    .collect()
}

fn full(configuration: &str) -> Filter {
    Filter::Wasm { module: Module::GuardFull, configuration: configuration.to_owned() }
}

/// `<arm>-alt`: the guard's arms A3, A4 and A3-deny with another build of the module
/// (`BENCH_GUARD_ALT_WASM`), e.g. another opt-level, measured interleaved with the originals.
pub fn guard_alt() -> Vec<Arm> {
    standard()
        .into_iter()
        .filter(|arm| ["A3", "A4", "A3-deny"].contains(&arm.name.as_str()))
        .map(|arm| {
            let filters = arm
                .filters
                .iter()
                .map(|filter| match filter {
                    Filter::Wasm { module: Module::Guard, configuration } => {
                        Filter::Wasm { module: Module::GuardAlt, configuration: configuration.clone() }
                    }
                    other => other.clone(),
                })
                .collect();
            Arm {
                name: format!("{}-alt", arm.name),
                label: format!("{}, other build", arm.label),
                filters,
                ..arm
            }
        })
        .collect()
}

/// `A1+<calls>`: the empty filter making host calls on each request (bench/empty-filter's
/// configuration, items separated by commas), to price one call against A1.
pub fn probe(calls: &str) -> Arm {
    Arm::new(&format!("A1+{calls}"), "A1 + host calls", vec![Filter::empty(calls)])
}

/// The arms named (in that order), then one probe arm per entry of `probes`. The `-alt` arms
/// are known by name but in no default run.
pub fn select(names: &[String], probes: &[String]) -> Result<Vec<Arm>> {
    let mut all = standard();
    all.extend(guard_alt());
    let mut chosen = Vec::new();
    for name in names {
        let arm = all.iter().find(|arm| &arm.name == name).ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|arm| arm.name.as_str()).collect();
            Error::new(format!("unknown arm {name:?}; the arms are {}", known.join(" ")))
        })?;
        chosen.push(arm.clone());
    }
    chosen.extend(probes.iter().map(|calls| probe(calls)));
    if chosen.is_empty() {
        return Err(Error::new("no arm to run"));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_deny_arms_use_the_rogue_client() {
        let arms = standard();
        let mut names: Vec<&str> = arms.iter().map(|arm| arm.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), arms.len());
        for arm in &arms {
            let denies = arm.name.ends_with("-deny");
            assert_eq!(arm.client == Client::Rogue, denies, "{}", arm.name);
            assert_eq!(arm.expect == Expect::Forbidden, denies, "{}", arm.name);
        }
    }

    #[test]
    fn select_keeps_the_order_given_and_appends_probes() {
        let names = ["A3".to_owned(), "A0".to_owned()];
        let arms = select(&names, &["time*20,metric".to_owned()]).unwrap();
        let got: Vec<&str> = arms.iter().map(|arm| arm.name.as_str()).collect();
        assert_eq!(got, ["A3", "A0", "A1+time*20,metric"]);
        assert_eq!(arms[2].filters, [Filter::empty("time*20,metric")]);
        let err = select(&["A9".to_owned()], &[]).unwrap_err().to_string();
        assert!(err.starts_with("unknown arm \"A9\"; the arms are A0 A1-min A1 A2"), "{err}");
        let alt = select(&["A3-deny-alt".to_owned()], &[]).unwrap();
        assert_eq!(alt[0].name, "A3-deny-alt");
        assert_eq!((alt[0].client, alt[0].counter), (Client::Rogue, Some(GUARD_DENIED_MISMATCH)));
        assert_eq!(
            alt[0].filters,
            [Filter::Wasm { module: Module::GuardAlt, configuration: "{}".to_owned() }]
        );
        assert_eq!(select(&[], &[]).unwrap_err().to_string(), "no arm to run");
    }
}
