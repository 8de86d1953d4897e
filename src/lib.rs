//! loopback-guard: a proxy-wasm HTTP filter that admits a request on the app-to-sidecar loopback
//! listener only when the client certificate is an X509-SVID naming the pod's own principal.
//!
//! The rules live in `loopback-guard-core`; this crate is the glue to Envoy (`filter`).

mod abi;
mod filter;
mod logger;

proxy_wasm::main! {{
    // Levels are filtered by Envoy's own log level; the module passes everything on, through
    // its own logger (the SDK's panics on a refused line).
    logger::install();
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::root::Root::default())
    });
}}

#[cfg(test)]
mod tests;
