//! A proxy-wasm host for tests: runs the built module in an interpreter and answers its host
//! calls from a table the test sets, so that a test can give the module what real Envoy rarely
//! does (a non-OK status, bytes that are no property value, a truncated header map) and see
//! what the module makes of it. A trap (the module panicked, or did something a host would
//! refuse) is an error of [`Vm::call`], never a crash of the test.
//!
//! The calls follow the proxy-wasm ABI 0.2.1 as Envoy's host implements it (proxy-wasm-cpp-host
//! at commit 52a0291, main of July 2026): a value is returned in memory the host allocates
//! through the module's `proxy_on_memory_allocate`, its address and size written to the module's
//! two out-parameters (`WasmBase::copyToPointerSize`, include/proxy-wasm/wasm.h); a status is the
//! function's result. There, `get_property` passes on whatever status the proxy's property
//! lookup returns and `get_buffer_bytes` answers BadArgument or InvalidMemoryAccess besides
//! NotFound (src/exports.cc): statuses a module must expect, however rarely Envoy gives them.

use std::collections::BTreeMap;

use wasmi::{Caller, Engine, Extern, Instance, Linker, Module, Store, Val, ValType};

/// The ABI's status codes (the proxy-wasm Rust SDK's `types.rs`, `Status`).
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const SERIALIZATION_FAILURE: u32 = 3;
    pub const INTERNAL_FAILURE: u32 = 10;
    pub const UNIMPLEMENTED: u32 = 12;
}

/// The ABI's buffer type of the plugin configuration (`BufferType::PluginConfiguration`).
const PLUGIN_CONFIGURATION: i32 = 7;
/// `proxy_log`'s level of the SDK's panic hook: a panic's message comes at this level.
pub const CRITICAL: u32 = 5;

/// What the host answers to a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Status OK and these bytes.
    Value(Vec<u8>),
    /// This status and no value.
    Status(u32),
    /// Status OK, but the out-parameters left as the module set them (no data at all).
    OkWithoutData,
}

/// A local reply the module asked for (`proxy_send_local_response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    /// The header map as the module serialised it.
    pub headers: Vec<u8>,
}

/// The host's answers (set by the test) and what the module did (recorded by the host).
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// `proxy_get_buffer_bytes` of the plugin configuration.
    pub plugin_configuration: Option<Answer>,
    /// `proxy_get_property`, by the path's parts joined with `.`; a path not here is NotFound.
    pub properties: BTreeMap<String, Answer>,
    /// The request headers, in order.
    pub headers: Vec<(String, String)>,
    /// `proxy_get_header_map_pairs` answers this instead of the serialised [`Host::headers`].
    pub header_map: Option<Answer>,
    /// `proxy_get_header_map_value` answers this for these names instead of [`Host::headers`].
    pub header_answers: BTreeMap<String, Answer>,
    /// An import named here returns this status and does nothing else.
    pub failing: BTreeMap<&'static str, u32>,
    /// The process environment the module sees (WASI `environ_get`).
    pub env: Vec<(String, String)>,
    pub now_nanos: u64,

    /// Every `proxy_log` call: the level and the message.
    pub log: Vec<(u32, String)>,
    pub replies: Vec<LocalReply>,
    /// The counters defined, by id (the index).
    pub metrics: Vec<String>,
    /// `proxy_increment_metric`, by counter name.
    pub increments: BTreeMap<String, i64>,
    /// `proxy_set_property`, by path.
    pub set_properties: BTreeMap<String, Vec<u8>>,
    /// `proxy_get_shared_data` / `proxy_set_shared_data`: value and compare-and-swap token.
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    pub tick_period_ms: Option<u32>,
    /// Imports the module called that this host does not implement (answered Unimplemented).
    pub unexpected: Vec<String>,
    /// Pointers the module handed over that were outside its memory.
    pub faults: Vec<String>,
}

impl Host {
    /// The text of every log line at `level`.
    pub fn lines_at(&self, level: u32) -> Vec<&str> {
        self.log.iter().filter(|(at, _)| *at == level).map(|(_, text)| text.as_str()).collect()
    }
}

/// The ABI's header map serialisation (proxy-wasm-cpp-host at 52a0291, src/pairs_util.cc): the count,
/// each name's and value's length (32-bit little-endian), then each NUL-terminated.
/// Written here apart from the module's own `serialize_map` (src/abi.rs) on purpose: the host's
/// side of the format checks the module's reader, and cannot share its mistakes.
pub fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut bytes = length(pairs.len()).to_vec();
    for (name, value) in pairs {
        bytes.extend(length(name.len()));
        bytes.extend(length(value.len()));
    }
    for (name, value) in pairs {
        for part in [name, value] {
            bytes.extend(part.as_bytes());
            bytes.push(0);
        }
    }
    bytes
}

/// The imports this host implements; every other import of the module is a stub that records
/// the call in [`Host::unexpected`].
const IMPLEMENTED: &[&str] = &[
    "proxy_log",
    "proxy_get_buffer_bytes",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_header_map_value",
    "proxy_get_header_map_pairs",
    "proxy_send_local_response",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_current_time_nanoseconds",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "environ_sizes_get",
    "environ_get",
    "random_get",
];

/// A module instance and its host.
pub struct Vm {
    store: Store<Host>,
    instance: Instance,
}

type Call<'a> = Caller<'a, Host>;
type HostResult = Result<i32, wasmi::Error>;

impl Vm {
    /// Instantiates `wasm` (runs no code of it yet).
    pub fn load(wasm: &[u8], host: Host) -> Result<Vm, String> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| format!("loading the module: {e}"))?;
        let mut store = Store::new(&engine, host);
        let mut linker = Linker::<Host>::new(&engine);
        define(&mut linker).map_err(|e| format!("defining the host: {e}"))?;
        for import in module.imports() {
            let name = import.name().to_owned();
            if IMPLEMENTED.contains(&name.as_str()) {
                continue;
            }
            let Some(ty) = import.ty().func().cloned() else {
                return Err(format!("the module imports {name}, which is not a function"));
            };
            let recorded = name.clone();
            linker
                .func_new(import.module(), &name, ty, move |mut caller, _params, results| {
                    caller.data_mut().unexpected.push(recorded.clone());
                    for result in results.iter_mut() {
                        *result = match result.ty() {
                            ValType::I32 => Val::I32(status::UNIMPLEMENTED as i32),
                            other => Val::default_for_ty(other),
                        };
                    }
                    Ok(())
                })
                .map_err(|e| format!("stubbing {name}: {e}"))?;
        }
        let instance =
            linker.instantiate_and_start(&mut store, &module).map_err(|e| format!("instantiating: {e}"))?;
        Ok(Vm { store, instance })
    }

    /// Calls the export `name`; its result, if it has one. An error is a trap (or a missing
    /// export), with the module's critical log lines (a panic's message).
    pub fn call(&mut self, name: &str, args: &[Val]) -> Result<Option<i32>, String> {
        let func = self.instance.get_func(&self.store, name).ok_or_else(|| format!("no export {name}"))?;
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        match func.call(&mut self.store, args, &mut results) {
            Ok(()) => Ok(results.first().and_then(Val::i32)),
            Err(trap) => Err(format!(
                "{name} trapped: {trap}; critical log: {:?}",
                self.store.data().lines_at(CRITICAL)
            )),
        }
    }

    pub fn host(&self) -> &Host {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut Host {
        self.store.data_mut()
    }
}

fn memory(caller: &Call<'_>) -> Option<wasmi::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// `len` bytes of the module's memory at `ptr`; `None` (recorded) when outside it.
fn read(caller: &mut Call<'_>, ptr: i32, len: i32, what: &str) -> Option<Vec<u8>> {
    let mut buffer = vec![0; len as u32 as usize];
    let read = memory(caller).map(|memory| memory.read(&*caller, ptr as u32 as usize, &mut buffer));
    if matches!(read, Some(Ok(()))) {
        Some(buffer)
    } else {
        caller.data_mut().faults.push(format!("{what}: {len} bytes at {ptr:#x}"));
        None
    }
}

fn read_text(caller: &mut Call<'_>, ptr: i32, len: i32, what: &str) -> Option<String> {
    read(caller, ptr, len, what).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn write(caller: &mut Call<'_>, ptr: i32, bytes: &[u8], what: &str) -> bool {
    let written = memory(caller).map(|memory| memory.write(&mut *caller, ptr as u32 as usize, bytes));
    if matches!(written, Some(Ok(()))) {
        true
    } else {
        caller.data_mut().faults.push(format!("{what}: writing {} bytes at {ptr:#x}", bytes.len()));
        false
    }
}

/// Hands `bytes` to the module as Envoy does: memory from the module's own allocator, its
/// address and size into the out-parameters.
fn give(caller: &mut Call<'_>, bytes: &[u8], data_out: i32, size_out: i32) -> HostResult {
    let allocate = caller
        .get_export("proxy_on_memory_allocate")
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmi::Error::new("the module exports no proxy_on_memory_allocate"))?
        .typed::<i32, i32>(&*caller)?;
    let size = i32::try_from(bytes.len()).map_err(|_| wasmi::Error::new("a value over 2 GiB"))?;
    let at = allocate.call(&mut *caller, size)?;
    let ok = write(caller, at, bytes, "the allocated value")
        && write(caller, data_out, &at.to_le_bytes(), "the value's address")
        && write(caller, size_out, &size.to_le_bytes(), "the value's size");
    Ok(if ok { status::OK } else { status::BAD_ARGUMENT } as i32)
}

fn answer(caller: &mut Call<'_>, answer: Answer, data_out: i32, size_out: i32) -> HostResult {
    match answer {
        Answer::Value(bytes) => give(caller, &bytes, data_out, size_out),
        Answer::Status(code) => Ok(code as i32),
        Answer::OkWithoutData => Ok(status::OK as i32),
    }
}

/// The status an import is told to fail with, if it is.
fn failing(caller: &Call<'_>, import: &str) -> Option<i32> {
    caller.data().failing.get(import).map(|code| *code as i32)
}

fn define(linker: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Call<'_>, level: i32, ptr: i32, len: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_log") {
                return Ok(code);
            }
            let Some(text) = read_text(&mut caller, ptr, len, "log message") else {
                return Ok(status::BAD_ARGUMENT as i32);
            };
            caller.data_mut().log.push((level as u32, text));
            Ok(status::OK as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Call<'_>, kind: i32, start: i32, max: i32, data_out: i32, size_out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_buffer_bytes") {
                return Ok(code);
            }
            if kind != PLUGIN_CONFIGURATION {
                caller.data_mut().unexpected.push(format!("proxy_get_buffer_bytes of buffer {kind}"));
                return Ok(status::NOT_FOUND as i32);
            }
            let reply = match caller.data().plugin_configuration.clone() {
                Some(Answer::Value(bytes)) => {
                    let (start, max) = (start as u32 as usize, max as u32 as usize);
                    let part = bytes.get(start..).unwrap_or_default();
                    Answer::Value(part.get(..max.min(part.len())).unwrap_or_default().to_vec())
                }
                Some(other) => other,
                None => Answer::Status(status::NOT_FOUND),
            };
            answer(&mut caller, reply, data_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Call<'_>, ptr: i32, len: i32, data_out: i32, size_out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_property") {
                return Ok(code);
            }
            let Some(path) = read_text(&mut caller, ptr, len, "property path") else {
                return Ok(status::BAD_ARGUMENT as i32);
            };
            let path = path.replace('\0', ".");
            let reply =
                caller.data().properties.get(&path).cloned().unwrap_or(Answer::Status(status::NOT_FOUND));
            answer(&mut caller, reply, data_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Call<'_>, ptr: i32, len: i32, value_ptr: i32, value_len: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_set_property") {
                return Ok(code);
            }
            let path = read_text(&mut caller, ptr, len, "property path");
            let value = read(&mut caller, value_ptr, value_len, "property value");
            let (Some(path), Some(value)) = (path, value) else { return Ok(status::BAD_ARGUMENT as i32) };
            caller.data_mut().set_properties.insert(path, value);
            Ok(status::OK as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Call<'_>, _map: i32, ptr: i32, len: i32, data_out: i32, size_out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_header_map_value") {
                return Ok(code);
            }
            let Some(name) = read_text(&mut caller, ptr, len, "header name") else {
                return Ok(status::BAD_ARGUMENT as i32);
            };
            let host = caller.data();
            let reply = host.header_answers.get(&name).cloned().unwrap_or_else(|| {
                match host.headers.iter().find(|(have, _)| *have == name) {
                    Some((_, value)) => Answer::Value(value.as_bytes().to_vec()),
                    None => Answer::Status(status::NOT_FOUND),
                }
            });
            answer(&mut caller, reply, data_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Call<'_>, _map: i32, data_out: i32, size_out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_header_map_pairs") {
                return Ok(code);
            }
            let host = caller.data();
            let reply =
                host.header_map.clone().unwrap_or_else(|| Answer::Value(serialize_map(&host.headers)));
            answer(&mut caller, reply, data_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Call<'_>,
         code: i32,
         _details: i32,
         _details_len: i32,
         body: i32,
         body_len: i32,
         headers: i32,
         headers_len: i32,
         _grpc: i32|
         -> HostResult {
            if let Some(code) = failing(&caller, "proxy_send_local_response") {
                return Ok(code);
            }
            let body = read(&mut caller, body, body_len, "reply body");
            let headers = read(&mut caller, headers, headers_len, "reply headers");
            let (Some(body), Some(headers)) = (body, headers) else { return Ok(status::BAD_ARGUMENT as i32) };
            caller.data_mut().replies.push(LocalReply { status: code as u32, body, headers });
            Ok(status::OK as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Call<'_>, _kind: i32, ptr: i32, len: i32, id_out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_define_metric") {
                return Ok(code);
            }
            let Some(name) = read_text(&mut caller, ptr, len, "metric name") else {
                return Ok(status::BAD_ARGUMENT as i32);
            };
            let metrics = &mut caller.data_mut().metrics;
            let id = metrics.iter().position(|known| *known == name).unwrap_or(metrics.len());
            if id == metrics.len() {
                metrics.push(name);
            }
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            let written = write(&mut caller, id_out, &id.to_le_bytes(), "metric id");
            Ok(if written { status::OK } else { status::BAD_ARGUMENT } as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Call<'_>, id: i32, by: i64| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_increment_metric") {
                return Ok(code);
            }
            let host = caller.data_mut();
            let Some(name) = host.metrics.get(id as u32 as usize).cloned() else {
                return Ok(status::NOT_FOUND as i32);
            };
            *host.increments.entry(name).or_default() += by;
            Ok(status::OK as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Call<'_>, ms: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_set_tick_period_milliseconds") {
                return Ok(code);
            }
            caller.data_mut().tick_period_ms = Some(ms as u32);
            Ok(status::OK as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Call<'_>, out: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_current_time_nanoseconds") {
                return Ok(code);
            }
            let now = caller.data().now_nanos;
            let written = write(&mut caller, out, &now.to_le_bytes(), "the time");
            Ok(if written { status::OK } else { status::BAD_ARGUMENT } as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Call<'_>,
         ptr: i32,
         len: i32,
         data_out: i32,
         size_out: i32,
         cas_out: i32|
         -> HostResult {
            if let Some(code) = failing(&caller, "proxy_get_shared_data") {
                return Ok(code);
            }
            let Some(key) = read_text(&mut caller, ptr, len, "shared data key") else {
                return Ok(status::BAD_ARGUMENT as i32);
            };
            let Some((value, cas)) = caller.data().shared_data.get(&key).cloned() else {
                return Ok(status::NOT_FOUND as i32);
            };
            if !write(&mut caller, cas_out, &cas.to_le_bytes(), "shared data token") {
                return Ok(status::BAD_ARGUMENT as i32);
            }
            give(&mut caller, &value, data_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Call<'_>, ptr: i32, len: i32, value_ptr: i32, value_len: i32, cas: i32| -> HostResult {
            if let Some(code) = failing(&caller, "proxy_set_shared_data") {
                return Ok(code);
            }
            let key = read_text(&mut caller, ptr, len, "shared data key");
            let value = read(&mut caller, value_ptr, value_len, "shared data value");
            let (Some(key), Some(value)) = (key, value) else { return Ok(status::BAD_ARGUMENT as i32) };
            let shared = &mut caller.data_mut().shared_data;
            let current = shared.get(&key).map_or(0, |(_, token)| *token);
            if cas != 0 && cas as u32 != current {
                return Ok(8); // CasMismatch
            }
            shared.insert(key, (value, current.wrapping_add(1).max(1)));
            Ok(status::OK as i32)
        },
    )?;
    // WASI, as far as the Rust standard library uses it here: the environment (the filter reads
    // TRUST_DOMAIN) and randomness (the SDK's hash maps seed themselves).
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_sizes_get",
        |mut caller: Call<'_>, count_out: i32, size_out: i32| -> HostResult {
            let env = &caller.data().env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            let ok = write(&mut caller, count_out, &count.to_le_bytes(), "environment count")
                && write(&mut caller, size_out, &(size as u32).to_le_bytes(), "environment size");
            Ok(if ok { 0 } else { 28 }) // errno EINVAL
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_get",
        |mut caller: Call<'_>, pointers: i32, buffer: i32| -> HostResult {
            let env = caller.data().env.clone();
            let (mut pointer, mut at) = (pointers as u32, buffer as u32);
            for (key, value) in env {
                let entry = format!("{key}={value}\0");
                let ok = write(&mut caller, pointer as i32, &at.to_le_bytes(), "environment pointer")
                    && write(&mut caller, at as i32, entry.as_bytes(), "environment entry");
                if !ok {
                    return Ok(28);
                }
                pointer = pointer.wrapping_add(4);
                at = at.wrapping_add(entry.len() as u32);
            }
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "random_get",
        |mut caller: Call<'_>, ptr: i32, len: i32| -> HostResult {
            let bytes: Vec<u8> =
                (0..len as u32).map(|i| (i as u8).wrapping_mul(151).wrapping_add(7)).collect();
            Ok(if write(&mut caller, ptr, &bytes, "random bytes") { 0 } else { 28 })
        },
    )?;
    Ok(())
}

/// The ABI's `Action` of `proxy_on_request_headers`.
pub const CONTINUE: i32 = 0;
pub const PAUSE: i32 = 1;

/// What one plugin and one request came to.
#[derive(Debug)]
pub struct Run {
    pub vm_started: bool,
    pub configured: bool,
    /// `proxy_on_request_headers`' action; `None` when the configuration was refused (Envoy
    /// then runs no request through the plugin).
    pub action: Option<i32>,
    pub host: Host,
}

/// Envoy's calls for one plugin and one request, in Envoy's order (proxy-wasm-cpp-host at
/// 52a0291: `_initialize` in src/wasm.cc, the contexts in src/context.cc): the WASI reactor's
/// `_initialize`, the root context's creation, `proxy_on_vm_start`, `proxy_on_configure`; then an HTTP context's creation, its
/// `proxy_on_request_headers`, its `proxy_on_delete`, and one timer tick of the root context.
/// An error is the first trap.
pub fn run(wasm: &[u8], host: Host) -> Result<Run, String> {
    // The interpreter, built without optimisation for tests, takes more stack than a test
    // thread's 2 MiB.
    let wasm = wasm.to_vec();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run_here(&wasm, host))
        .map_err(|e| format!("starting the VM's thread: {e}"))?
        .join()
        .map_err(|_| "the VM's thread panicked".to_owned())?
}

fn run_here(wasm: &[u8], host: Host) -> Result<Run, String> {
    const ROOT: i32 = 1;
    const STREAM: i32 = 2;
    let configuration_size = match &host.plugin_configuration {
        Some(Answer::Value(bytes)) => i32::try_from(bytes.len()).unwrap_or(i32::MAX),
        _ => 0,
    };
    let headers = i32::try_from(host.headers.len()).unwrap_or(i32::MAX);
    let mut vm = Vm::load(wasm, host)?;
    vm.call("_initialize", &[])?;
    vm.call("proxy_on_context_create", &[Val::I32(ROOT), Val::I32(0)])?;
    let vm_started = vm.call("proxy_on_vm_start", &[Val::I32(ROOT), Val::I32(0)])? != Some(0);
    let configured =
        vm.call("proxy_on_configure", &[Val::I32(ROOT), Val::I32(configuration_size)])? != Some(0);
    let mut action = None;
    if configured {
        vm.call("proxy_on_context_create", &[Val::I32(STREAM), Val::I32(ROOT)])?;
        action = vm.call("proxy_on_request_headers", &[Val::I32(STREAM), Val::I32(headers), Val::I32(1)])?;
        vm.call("proxy_on_delete", &[Val::I32(STREAM)])?;
        vm.call("proxy_on_tick", &[Val::I32(ROOT)])?;
    }
    Ok(Run { vm_started, configured, action, host: vm.store.into_data() })
}
