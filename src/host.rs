//! The host calls a request makes, made directly.
//!
//! The SDK's wrappers allocate on the way in (a property path is a `Vec<&str>` serialized into
//! a second `Vec`) and on the way out (a header map becomes a `String` and a `Vec` per header),
//! and every one of them panics on a status it does not expect, which traps the VM and takes
//! the worker's filter down. These take their paths as static bytes, hand the host's buffer
//! back as it is, and turn every status into a `Result`. The root context's rare calls
//! (metric definitions, the audit HTTP call, whose token the SDK's dispatcher must register,
//! `done`) stay on the SDK. Part of the shell: wasm32 (and clippy) only.

use std::ptr::null_mut;

use proxy_wasm::types::LogLevel;

use crate::headermap::{self, HeaderBlock};

/// proxy-wasm status codes (the ABI's `WasmResult`), as the host returns them.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `MapType::HttpRequestHeaders`.
const REQUEST_HEADERS: u32 = 0;
/// `MapType::HttpCallResponseHeaders`.
const CALL_RESPONSE_HEADERS: u32 = 6;
/// `BufferType::HttpRequestBody`.
const REQUEST_BODY: u32 = 0;
/// `BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION: u32 = 7;
/// `StreamType::HttpRequest`.
const HTTP_REQUEST: u32 = 0;

/// A host call that failed, with the host's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed(pub u32);

// Statuses are declared as `u32` rather than the SDK's enum: a value the enum lacks would be
// undefined behaviour, a `u32` is just an error.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

fn result(status: u32) -> Result<(), Failed> {
    if status == OK {
        Ok(())
    } else {
        Err(Failed(status))
    }
}

/// Takes ownership of a buffer the host filled through the module's allocator.
///
/// # Safety
/// `data`/`size` must come from a successful host call that allocated through the SDK's
/// exported `malloc` (a boxed slice of exactly `size` bytes), as the SDK's own wrappers assume.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: see above; the SDK's wrappers do the same.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// The request headers as one checked block (one host call, one allocation).
pub fn request_headers() -> Result<HeaderBlock, Failed> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a pointer and a size into the two locals.
    let status = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
    if status != OK {
        return Err(Failed(status));
    }
    // SAFETY: a successful call hands over a buffer from our allocator.
    let buf = unsafe { take(data, size) };
    HeaderBlock::parse(buf).ok_or(Failed(u32::MAX))
}

/// A property by its path, segments separated by NUL (`b"source\0address"`); `None` if the
/// host has none.
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, Failed> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the path is read by the host during the call; it writes into the two locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        // SAFETY: a successful call hands over a buffer from our allocator.
        OK => Ok((!data.is_null()).then(|| unsafe { take(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Failed(other)),
    }
}

/// Sets a filter-state property (`wasm.` + path, as Envoy stores it).
pub fn set_property(path: &[u8], value: &[u8]) -> Result<(), Failed> {
    // SAFETY: both buffers are only read by the host during the call.
    result(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Writes to Envoy's log (Envoy filters by its own level).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the message is only read by the host during the call.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The `log` crate's sink for the filter: `proxy_log`, whose status is ignored (the SDK's own
/// logger unwraps it, and a panic traps the VM). The `log` facade replaced the shells' own
/// `log(level, &format!(..))` wrappers: measured 2026-12-02, `dist/tokengate.wasm`
/// 1,632,894 → 1,633,259 bytes (+365; the SDK already linked the crate), and a line that is
/// off is no longer formatted.
struct HostLogger;

static HOST_LOGGER: HostLogger = HostLogger;

impl ::log::Log for HostLogger {
    fn enabled(&self, metadata: &::log::Metadata) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &::log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            ::log::Level::Error => LogLevel::Error,
            ::log::Level::Warn => LogLevel::Warn,
            ::log::Level::Info => LogLevel::Info,
            ::log::Level::Debug => LogLevel::Debug,
            ::log::Level::Trace => LogLevel::Trace,
        };
        match record.args().as_str() {
            Some(s) => log(level, s),
            None => log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

/// Routes the `log` macros to Envoy's log (info and up; Envoy filters further) and logs a
/// panic's message before the VM traps.
pub fn install_logger() {
    if ::log::set_logger(&HOST_LOGGER).is_ok() {
        ::log::set_max_level(::log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| log(LogLevel::Critical, &info.to_string())));
}

/// The host clock in Unix ms; `None` without one.
pub fn now_ms() -> Option<i64> {
    let mut ns = 0u64;
    // SAFETY: the host writes the time into the local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
    (status == OK)
        .then(|| i64::try_from(ns / 1_000_000).ok())
        .flatten()
}

pub fn remove_request_header(name: &str) -> Result<(), Failed> {
    // SAFETY: the name is only read by the host during the call.
    result(unsafe { proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()) })
}

/// Sets a request header, replacing any value it had.
pub fn replace_request_header(name: &str, value: &[u8]) -> Result<(), Failed> {
    // SAFETY: both buffers are only read by the host during the call.
    result(unsafe {
        proxy_replace_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn increment_metric(id: u32, by: i64) -> Result<(), Failed> {
    // SAFETY: no memory is passed.
    result(unsafe { proxy_increment_metric(id, by) })
}

/// Answers the request locally (the stream must then be paused).
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Failed> {
    let headers = headermap::serialize(headers);
    // SAFETY: every buffer is only read by the host during the call.
    result(unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Resets the request stream (when even a local reply could not be sent).
pub fn reset_request() -> Result<(), Failed> {
    // SAFETY: no memory is passed.
    result(unsafe { proxy_close_stream(HTTP_REQUEST) })
}

/// The first `size` bytes of the buffered request body.
pub fn request_body(size: usize) -> Result<Vec<u8>, Failed> {
    buffer(REQUEST_BODY, size)
}

/// The plugin configuration, whole.
pub fn plugin_configuration() -> Result<Vec<u8>, Failed> {
    buffer(PLUGIN_CONFIGURATION, usize::MAX)
}

fn buffer(buffer_type: u32, size: usize) -> Result<Vec<u8>, Failed> {
    let mut data = null_mut();
    let mut len = 0;
    // SAFETY: the host writes a pointer and a size into the two locals.
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, 0, size, &mut data, &mut len) };
    match status {
        // SAFETY: a successful call hands over a buffer from our allocator.
        OK => Ok(unsafe { take(data, len) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Failed(other)),
    }
}

/// Sets the root context's timer period (0 stops it). The period belongs to the root context
/// whichever context sets it.
pub fn set_tick_period_ms(ms: u32) -> Result<(), Failed> {
    // SAFETY: no memory is passed.
    result(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// `:status` of the answer to an HTTP call, in `on_http_call_response`; `None` without one
/// (reset, timeout).
pub fn call_response_status() -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0;
    let key = b":status";
    // SAFETY: the key is read during the call; the host writes into the two locals.
    let status = unsafe {
        proxy_get_header_map_value(
            CALL_RESPONSE_HEADERS,
            key.as_ptr(),
            key.len(),
            &mut data,
            &mut size,
        )
    };
    // SAFETY: a successful call hands over a buffer from our allocator.
    (status == OK).then(|| unsafe { take(data, size) })
}
