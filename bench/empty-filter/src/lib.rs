//! Benchmark arm A1: a proxy-wasm HTTP filter that lets every request through and, unconfigured,
//! does nothing else. What Envoy spends on it is the floor for any wasm filter: the V8 VM, the
//! per-stream context and the calls into the module for each callback.
//!
//! Configured, it repeats chosen host calls on every request, so that the cost of one call is
//! (arm with N calls - A1) / N. The configuration is plain text, items separated by whitespace
//! or commas, each `CALL` or `CALL*N` (N times per request):
//!
//! - `property:a.b.c`  get_property(["a", "b", "c"])
//! - `header:NAME`     one request header
//! - `time`            get_current_time
//! - `metric`          increment a counter (`bench_empty.calls`)
//! - `set_property`    set filter state `wasm.bench_empty.probe`
//! - `log`             one info-level log line (Envoy drops it below its log level)
//!
//! Every host-call failure is ignored: the benchmark checks the path by Envoy's 2xx counters.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

enum Call {
    Property(Vec<String>),
    Header(String),
    Time,
    Metric(u32),
    SetProperty,
    Log,
}

struct Probe {
    call: Call,
    times: u32,
}

#[derive(Default)]
struct Root {
    probes: Rc<Vec<Probe>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(config) => config.unwrap_or_default(),
            Err(status) => {
                log::error!("bench-empty: cannot read the configuration: {status:?}");
                return false;
            }
        };
        match String::from_utf8(config)
            .map_err(|_| "configuration is not UTF-8".to_owned())
            .and_then(|t| parse(&t))
        {
            Ok(probes) => {
                self.probes = Rc::new(probes);
                true
            }
            Err(e) => {
                log::error!("bench-empty: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { probes: Rc::clone(&self.probes) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    probes: Rc<Vec<Probe>>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for probe in self.probes.iter() {
            for _ in 0..probe.times {
                probe.call.run();
            }
        }
        Action::Continue
    }
}

impl Call {
    fn run(&self) {
        match self {
            Self::Property(path) => {
                let _ = hostcalls::get_property(path.iter().map(String::as_str).collect());
            }
            Self::Header(name) => {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
            }
            Self::Time => {
                let _ = hostcalls::get_current_time();
            }
            Self::Metric(id) => {
                let _ = hostcalls::increment_metric(*id, 1);
            }
            Self::SetProperty => {
                let _ = hostcalls::set_property(vec!["bench_empty.probe"], Some(b"x".as_slice()));
            }
            Self::Log => log::info!("bench-empty: probe"),
        }
    }
}

fn parse(text: &str) -> Result<Vec<Probe>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (call, times) = match item.rsplit_once('*') {
                Some((call, n)) => (call, n.parse().map_err(|_| format!("{item:?}: bad repeat count"))?),
                None => (item, 1),
            };
            let call = match call.split_once(':') {
                Some(("property", path)) => Call::Property(path.split('.').map(str::to_owned).collect()),
                Some(("header", name)) => Call::Header(name.to_owned()),
                None if call == "time" => Call::Time,
                None if call == "set_property" => Call::SetProperty,
                None if call == "log" => Call::Log,
                None if call == "metric" => Call::Metric(
                    hostcalls::define_metric(MetricType::Counter, "bench_empty.calls")
                        .map_err(|status| format!("cannot define a counter: {status:?}"))?,
                ),
                _ => return Err(format!("{item:?}: unknown call")),
            };
            Ok(Probe { call, times })
        })
        .collect()
}
