//! The root context: configuration, the shared decision engine, the counters.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;

use loopback_guard_core::config::{Policy, TRUST_DOMAIN_ENV};
use loopback_guard_core::decision::Guard;
use loopback_guard_core::loglimit::LogLimiter;
use loopback_guard_core::principal::Expected;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use std::time::Duration;

use super::host::{now_ms, ProxyHost};
use super::http::Http;
use super::metrics::Metrics;

/// How many connections' "first allowed request" are remembered per VM.
const RECENT_CONNECTIONS: usize = 4096;

/// What every HTTP context of one configuration shares (one VM is one thread: no locks).
pub struct Shared {
    pub guard: RefCell<Guard>,
    pub metrics: Rc<Metrics>,
    pub logged_connections: RefCell<RecentConnections>,
    /// Bounds the lines of decisions anyone can cause (denials, audit findings, exemptions).
    pub limiter: RefCell<LogLimiter>,
}

#[derive(Default)]
pub struct Root {
    metrics: Option<Rc<Metrics>>,
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::info!("loopback-guard {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(config) => config.unwrap_or_default(),
            Err(status) => {
                log::error!("loopback-guard: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let env_trust_domain = std::env::var(TRUST_DOMAIN_ENV).ok();
        let policy = match Policy::from_json(&config, env_trust_domain.as_deref()) {
            Ok(policy) => policy,
            Err(e) => {
                // Envoy then refuses the configuration: fail closed, and say why in one line.
                log::error!("loopback-guard: {e}");
                return false;
            }
        };
        let mut guard = Guard::new(policy, &ProxyHost::default());
        if let Some(notice) = guard.take_notice() {
            match guard.expected() {
                Expected::Unavailable(_) => log::error!("loopback-guard: {notice}"),
                _ => log::info!("loopback-guard: {notice}"),
            }
        }
        log::info!("loopback-guard: configured: {}", summary(guard.policy()));
        let metrics = Rc::clone(self.metrics.get_or_insert_with(|| Rc::new(Metrics::define())));
        let policy = guard.policy();
        let limiter = LogLimiter::new(policy.log_lines_per_second, policy.log_summary_seconds);
        // The summary of held-back lines is written from the timer, so it comes even when the
        // requests stop.
        let tick = Duration::from_secs(u64::from(policy.log_summary_seconds));
        if let Err(status) = hostcalls::set_tick_period(tick) {
            log::error!("loopback-guard: cannot set the log summary timer: {status:?}");
        }
        self.shared = Some(Rc::new(Shared {
            guard: RefCell::new(guard),
            metrics,
            logged_connections: RefCell::new(RecentConnections::default()),
            limiter: RefCell::new(limiter),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.write_summary();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); without a configuration it denies.
        Some(Box::new(Http::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Shared {
    /// Writes the summary of held-back decision lines, if one is due.
    pub fn write_summary(&self) {
        let line = self.limiter.try_borrow_mut().ok().and_then(|mut limiter| limiter.summary(now_ms()));
        if let Some(line) = line {
            log::warn!("{line}");
        }
    }
}

fn summary(policy: &Policy) -> String {
    format!(
        "mode={} principal_source={} trust_domain={} allowed_principals={} exempt_paths={:?} \
         exempt_authorities={:?} require_loopback={} log_allowed={} certificate_cache_size={} \
         log_field_max_bytes={} log_lines_per_second={} log_summary_seconds={}",
        policy.mode.as_str(),
        policy.principal_source.as_str(),
        policy.trust_domain.as_str(),
        policy.allowed_principals.len(),
        policy.exempt_paths,
        policy.exempt_authorities,
        policy.require_loopback,
        policy.log_allowed.as_str(),
        policy.certificate_cache_size,
        policy.log_field_max_bytes,
        policy.log_lines_per_second,
        policy.log_summary_seconds
    )
}

/// The most recent connection keys, bounded: a connection whose key was evicted may be logged
/// twice, never grows memory.
#[derive(Default)]
pub struct RecentConnections {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentConnections {
    /// True the first time `id` is seen (while it is remembered).
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_CONNECTIONS {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}
