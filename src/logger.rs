//! The module's logger and panic hook, over [`crate::abi::log`]. They stand in for the SDK's
//! (`proxy_wasm::set_log_level`), which unwrap `proxy_log`'s status: a host that refused a line
//! would turn a log call into a panic, and a panic kills the VM. A line the host refuses is
//! dropped: there is nowhere else to say it.

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::abi;

/// The ABI's level of a panic's message.
const CRITICAL: u32 = 5;

struct HostLogger;

impl Log for HostLogger {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        // Envoy filters by its own log level.
        true
    }

    fn log(&self, record: &Record<'_>) {
        let level = match record.level() {
            Level::Trace => 0,
            Level::Debug => 1,
            Level::Info => 2,
            Level::Warn => 3,
            Level::Error => 4,
        };
        let _ = match record.args().as_str() {
            Some(text) => abi::log(level, text),
            None => abi::log(level, &record.args().to_string()),
        };
    }

    fn flush(&self) {}
}

/// Installs the logger (every level: Envoy filters) and the panic hook, which says a panic's
/// message at critical level before the VM goes.
pub fn install() {
    // Fails only if a logger is already set, which then keeps logging.
    let _ = log::set_logger(&HostLogger);
    log::set_max_level(LevelFilter::Trace);
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(CRITICAL, &info.to_string());
    }));
}
