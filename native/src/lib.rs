//! tokengate as an Envoy dynamic module: the native shell over `tokengate-core`.
//!
//! Everything that decides lives in the core crate (`core/`), shared with the proxy-wasm
//! filter (`src/`). This crate only maps Envoy's dynamic-module ABI onto it:
//! - [`abi`]: hand-written `extern "C"` declarations of the part of Envoy 1.40's ABI used here
//!   (no SDK: Envoy's Rust SDK is not on crates.io), and the pinned ABI version string;
//! - [`host`]: safe wrappers over those calls, one per stream or per filter config;
//! - [`filter`]: the compiled configuration (one per filter config), the per-stream object and
//!   the request flow;
//! - this file: the exported event hooks. Every hook returns a decision; a panic is caught at
//!   the boundary (the `native` build profile unwinds, so `catch_unwind` works) and answers 500
//!   fail-closed on request hooks instead of crossing into Envoy.
//!
//! It must never decide anything itself: no policy, no parsing of credentials or restriction
//! lines outside the core.

// The exported hooks take Envoy's pointers under the ABI's contract (valid for the hook, per
// abi.h); they are entry points for C, where `unsafe extern` would mean nothing to the caller.
// Every dereference is in an `unsafe` block that says which guarantee it relies on.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod abi;
pub mod filter;
pub mod host;

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi::{
    ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, FilterModulePtr,
};
use filter::{Compiled, Stream, Verdict};
use host::{ConfigHost, Filter};

/// Runs `f`, turning a panic into `fallback`.
fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Runs a request hook; a panic answers 500 (fail closed) and stops the stream.
fn guard_request(fe: FilterEnvoyPtr, f: impl FnOnce(&Filter) -> Verdict) -> Verdict {
    // SAFETY: `fe` is the filter_envoy_ptr of the hook being run (callers pass theirs).
    let filter = unsafe { Filter::new(fe) };
    match catch_unwind(AssertUnwindSafe(|| f(&filter))) {
        Ok(v) => v,
        Err(_) => {
            log::error!(
                "tokengate: internal error (panic caught at the ABI boundary); answering 500"
            );
            let _ = catch_unwind(AssertUnwindSafe(|| {
                filter::fail_closed(&filter, 500, "internal error")
            }));
            Verdict::Replied
        }
    }
}

/// # Safety
/// `ptr` must be a pointer returned by `envoy_dynamic_module_on_http_filter_new` and not yet
/// destroyed; Envoy calls a stream's hooks from one worker thread, one at a time.
unsafe fn stream<'a>(ptr: FilterModulePtr) -> Option<&'a mut Stream> {
    // SAFETY: per the contract above, `ptr` is a live, exclusively used `Box<Stream>`.
    unsafe { (ptr as *mut Stream).as_mut() }
}

/// # Safety
/// `ptr` must be a pointer returned by `envoy_dynamic_module_on_http_filter_config_new` and
/// not yet destroyed.
unsafe fn compiled<'a>(ptr: ConfigModulePtr) -> Option<&'a Arc<Compiled>> {
    // SAFETY: per the contract above, `ptr` is a live `Box<Arc<Compiled>>`.
    unsafe { (ptr as *const Arc<Compiled>).as_ref() }
}

fn bytes<'a>(b: EnvoyBuffer) -> &'a [u8] {
    if b.ptr.is_null() || b.length == 0 {
        return &[];
    }
    // SAFETY: Envoy owns (ptr, length) for the duration of the hook that received it.
    unsafe { std::slice::from_raw_parts(b.ptr, b.length) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard((), host::install_logger);
    abi::ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    guard(std::ptr::null(), || {
        // SAFETY: `config_envoy` is the pointer Envoy passed to this hook.
        let host = unsafe { ConfigHost::new(config_envoy) };
        match Compiled::new(host, bytes(config)) {
            Ok(c) => Box::into_raw(Box::new(c)) as ConfigModulePtr,
            Err(e) => {
                // Envoy refuses the config (start-up fails; an update keeps the old one).
                log::error!("tokengate: configuration rejected: {e}");
                std::ptr::null()
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    guard((), || {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` came from Box::into_raw in config_new and is destroyed once here.
        let boxed = unsafe { Box::from_raw(config as *mut Arc<Compiled>) };
        boxed.close();
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    // No per-route configuration: refuse one rather than ignore it.
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    guard(std::ptr::null(), || {
        // SAFETY: `config` is the live config Envoy created this stream's filter from.
        match unsafe { compiled(config) } {
            Some(c) => Box::into_raw(Box::new(Stream::new(c.clone()))) as FilterModulePtr,
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    let v = guard_request(fe, |f| {
        // SAFETY: `fm` is this stream's live filter object.
        match unsafe { stream(fm) } {
            Some(s) => s.on_request_headers(f, end_of_stream),
            None => filter::fail_closed(f, 500, "internal error"),
        }
    });
    match v {
        Verdict::Continue => abi::HEADERS_CONTINUE,
        Verdict::Buffer | Verdict::Replied => abi::HEADERS_STOP_ITERATION,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    let v = guard_request(fe, |f| {
        // SAFETY: `fm` is this stream's live filter object.
        match unsafe { stream(fm) } {
            Some(s) => s.on_request_body(f, end_of_stream),
            None => filter::fail_closed(f, 500, "internal error"),
        }
    });
    match v {
        Verdict::Continue => abi::BODY_CONTINUE,
        Verdict::Buffer => abi::BODY_STOP_AND_BUFFER,
        Verdict::Replied => abi::BODY_STOP_NO_BUFFER,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
) -> u32 {
    let v = guard_request(fe, |f| {
        // SAFETY: `fm` is this stream's live filter object.
        match unsafe { stream(fm) } {
            Some(s) => s.on_request_trailers(f),
            None => filter::fail_closed(f, 500, "internal error"),
        }
    });
    match v {
        Verdict::Continue => abi::TRAILERS_CONTINUE,
        Verdict::Buffer | Verdict::Replied => abi::TRAILERS_STOP,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
) {
    guard((), || {
        // SAFETY: `fe` is this hook's filter_envoy_ptr.
        let f = unsafe { Filter::new(fe) };
        // SAFETY: `fm` is this stream's live filter object.
        if let Some(s) = unsafe { stream(fm) } {
            s.on_stream_complete(&f);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: FilterModulePtr) {
    guard((), || {
        if !fm.is_null() {
            // SAFETY: `fm` came from Box::into_raw in filter_new and is destroyed once here.
            drop(unsafe { Box::from_raw(fm as *mut Stream) });
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    abi::LOCAL_REPLY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    event: u64,
) {
    guard((), || {
        // SAFETY: `cm` is the live config this scheduler belongs to.
        if let (Some(c), filter::EVENT_PUMP) = (unsafe { compiled(cm) }, event) {
            c.pump();
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
    guard((), || {
        let pairs: &[EnvoyHeader] = if headers.is_null() || headers_size == 0 {
            &[]
        } else {
            // SAFETY: Envoy hands `headers_size` headers, valid until the hook returns.
            unsafe { std::slice::from_raw_parts(headers, headers_size) }
        };
        let status = pairs.iter().find_map(|h| {
            let key = bytes(EnvoyBuffer {
                ptr: h.key_ptr,
                length: h.key_length,
            });
            (key == b":status").then(|| {
                String::from_utf8_lossy(bytes(EnvoyBuffer {
                    ptr: h.value_ptr,
                    length: h.value_length,
                }))
                .into_owned()
            })
        });
        let ok = result == abi::CALLOUT_SUCCESS
            && status
                .as_deref()
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| (200..300).contains(&s));
        // SAFETY: `cm` is the live config that made the callout.
        if let Some(c) = unsafe { compiled(cm) } {
            c.callout_done(callout_id, ok, status.as_deref());
        }
    })
}

// Hooks this filter has no use for; Envoy resolves them when it loads the module.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _event: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _ce: ConfigEnvoyPtr,
    _cm: ConfigModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _ce: ConfigEnvoyPtr,
    _cm: ConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _ce: ConfigEnvoyPtr,
    _cm: ConfigModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _ce: ConfigEnvoyPtr,
    _cm: ConfigModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _ce: ConfigEnvoyPtr,
    _cm: ConfigModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}
