//! Safe wrappers over the ABI calls the filter makes on one stream or one filter config.
//!
//! A [`Filter`] is only ever built from the `filter_envoy_ptr` Envoy passes to the current
//! event hook, and used within that hook: the ABI guarantees the pointer stays valid until
//! `envoy_dynamic_module_on_http_filter_destroy`. Buffers Envoy hands back are valid until the
//! end of the hook or the next setter call, so every accessor here either copies or returns a
//! slice that the caller must drop before mutating the headers (see `filter.rs`).

use crate::abi::{self, EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};

/// Envoy's log (`[dynamic_modules]` logger id).
fn envoy_log(level: u32, message: &str) {
    // SAFETY: the buffer points at `message`, alive for the call; Envoy copies it.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// The `log` crate's sink for the module: Envoy's log, asking Envoy first whether the level
/// is on (so disabled lines are never formatted).
struct EnvoyLogger;

static ENVOY_LOGGER: EnvoyLogger = EnvoyLogger;

fn level_of(level: ::log::Level) -> u32 {
    match level {
        ::log::Level::Error => abi::LOG_ERROR,
        ::log::Level::Warn => abi::LOG_WARN,
        ::log::Level::Info => abi::LOG_INFO,
        ::log::Level::Debug => abi::LOG_DEBUG,
        ::log::Level::Trace => abi::LOG_TRACE,
    }
}

impl ::log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &::log::Metadata) -> bool {
        // SAFETY: a plain query of Envoy's logger level, callable from any thread.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level_of(metadata.level())) }
    }

    fn log(&self, record: &::log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = level_of(record.level());
        match record.args().as_str() {
            Some(s) => envoy_log(level, s),
            None => envoy_log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

/// Routes the `log` macros to Envoy's log (called once, from `on_program_init`).
pub fn install_logger() {
    if ::log::set_logger(&ENVOY_LOGGER).is_ok() {
        ::log::set_max_level(::log::LevelFilter::Trace);
    }
}

/// A host call Envoy answered with failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

/// # Safety contract (upheld by `filter.rs`)
/// `ptr` is the `filter_envoy_ptr` of the hook being run.
#[derive(Clone, Copy)]
pub struct Filter {
    ptr: abi::FilterEnvoyPtr,
}

/// A borrowed request-header snapshot: pairs pointing into Envoy's header map.
pub struct Headers {
    pairs: Vec<EnvoyHeader>,
}

impl Headers {
    fn slice(ptr: *const u8, len: usize) -> &'static [u8] {
        if ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: Envoy wrote (ptr, len) for a live header-map entry; the snapshot is dropped
        // before the map changes (filter.rs copies what it keeps before any setter call), so
        // the 'static here never outlives the entry in practice.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.pairs.iter().map(|h| {
            (
                Self::slice(h.key_ptr, h.key_length),
                Self::slice(h.value_ptr, h.value_length),
            )
        })
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    pub fn count(&self, name: &str) -> usize {
        self.iter().filter(|(k, _)| *k == name.as_bytes()).count()
    }
}

impl Filter {
    /// # Safety
    /// `ptr` must be the `filter_envoy_ptr` of the event hook being run.
    pub unsafe fn new(ptr: abi::FilterEnvoyPtr) -> Filter {
        Filter { ptr }
    }

    /// The first value of a request header, borrowed from Envoy (valid until a setter call).
    pub fn request_header(&self, name: &str) -> Option<&'static [u8]> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: `self.ptr` is the current hook's filter; `out` is a live local Envoy writes.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                abi::HEADER_REQUEST,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        if !ok || out.ptr.is_null() {
            return None;
        }
        Some(Headers::slice(out.ptr, out.length))
    }

    /// All request headers in one call (two: the count, then the pairs).
    pub fn request_headers(&self) -> Option<Headers> {
        // SAFETY: `self.ptr` is the current hook's filter.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(self.ptr, abi::HEADER_REQUEST)
        };
        let mut pairs = vec![
            EnvoyHeader {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            };
            n
        ];
        if n == 0 {
            return Some(Headers { pairs });
        }
        // SAFETY: `pairs` has room for the `n` entries Envoy just counted.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                self.ptr,
                abi::HEADER_REQUEST,
                pairs.as_mut_ptr(),
            )
        };
        ok.then_some(Headers { pairs })
    }

    /// Sets (replaces every value of) a request header. `Err` if Envoy refused.
    pub fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: both buffers are alive for the call; Envoy copies them.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                abi::HEADER_REQUEST,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        ok.then_some(()).ok_or(HostError)
    }

    /// Removes a request header (a null value removes it, absent or not).
    pub fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        // SAFETY: the key buffer is alive for the call; a null value means "remove".
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                abi::HEADER_REQUEST,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::null(),
            )
        };
        ok.then_some(()).ok_or(HostError)
    }

    /// A local reply; Envoy adds content-length.
    pub fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let hs: Vec<ModuleHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHeader::of(k.as_bytes(), v.as_bytes()))
            .collect();
        // SAFETY: `hs` and the buffers it points at, and `body`, outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                status,
                hs.as_ptr(),
                hs.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"tokengate"),
            )
        }
    }

    fn body_chunks(&self, body_type: u32, out: &mut Vec<u8>) -> bool {
        // SAFETY: `self.ptr` is the current hook's filter.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, body_type)
        };
        if n == 0 {
            return true;
        }
        let mut chunks = vec![
            EnvoyBuffer {
                ptr: std::ptr::null(),
                length: 0
            };
            n
        ];
        // SAFETY: `chunks` has room for the `n` buffers Envoy just counted.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks(
                self.ptr,
                body_type,
                chunks.as_mut_ptr(),
            )
        };
        if !ok {
            return false;
        }
        for c in &chunks {
            out.extend_from_slice(Headers::slice(c.ptr, c.length));
        }
        true
    }

    /// Bytes of the request body buffered so far plus the chunk of this hook, if any.
    pub fn request_body_size(&self, in_body_hook: bool) -> usize {
        // SAFETY: `self.ptr` is the current hook's filter.
        let buffered = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(
                self.ptr,
                abi::BODY_BUFFERED_REQUEST,
            )
        };
        if !in_body_hook || self.received_is_buffered() {
            return buffered;
        }
        // SAFETY: as above.
        let received = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(
                self.ptr,
                abi::BODY_RECEIVED_REQUEST,
            )
        };
        buffered.saturating_add(received)
    }

    fn received_is_buffered(&self) -> bool {
        // SAFETY: `self.ptr` is the current hook's filter.
        unsafe { abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr) }
    }

    /// The whole request body (buffered chunks, then this hook's chunk). `None` if Envoy
    /// could not hand it over.
    pub fn request_body(&self, in_body_hook: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if !self.body_chunks(abi::BODY_BUFFERED_REQUEST, &mut out) {
            return None;
        }
        if in_body_hook
            && !self.received_is_buffered()
            && !self.body_chunks(abi::BODY_RECEIVED_REQUEST, &mut out)
        {
            return None;
        }
        Some(out)
    }

    /// Filter state as a plain string (`%FILTER_STATE(key:PLAIN)%`).
    pub fn set_filter_state(&self, key: &str, value: &str) {
        // SAFETY: both buffers are alive for the call; Envoy copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    /// `source.address` (`ip:port`), copied.
    pub fn source_address(&self) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: `out` is a live local Envoy writes.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr,
                abi::ATTR_SOURCE_ADDRESS,
                &mut out,
            )
        };
        (ok && !out.ptr.is_null()).then(|| Headers::slice(out.ptr, out.length).to_vec())
    }

    /// `response.code`, when a response was sent.
    pub fn response_code(&self) -> Option<u32> {
        let mut out: u64 = 0;
        // SAFETY: `out` is a live local Envoy writes.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.ptr,
                abi::ATTR_RESPONSE_CODE,
                &mut out,
            )
        };
        if !ok {
            return None;
        }
        u32::try_from(out).ok().filter(|c| *c > 0)
    }

    pub fn increment_counter(&self, id: Option<usize>) {
        if let Some(id) = id {
            // SAFETY: `id` was defined on the config this filter was created from.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.ptr,
                    id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
        }
    }
}

/// The filter config's Envoy object: metrics, scheduler and callouts (main thread for
/// callouts; metric definitions only in `on_http_filter_config_new`).
#[derive(Clone, Copy)]
pub struct ConfigHost {
    ptr: abi::ConfigEnvoyPtr,
}

// SAFETY: the pointer is only dereferenced by Envoy; the module calls the config-level
// callbacks that the ABI allows from any thread (counters, scheduler commit) off the main
// thread, and the others (callout) only from main-thread hooks.
unsafe impl Send for ConfigHost {}
// SAFETY: as above.
unsafe impl Sync for ConfigHost {}

impl ConfigHost {
    /// # Safety
    /// `ptr` must be the `filter_config_envoy_ptr` Envoy passed to `config_new`.
    pub unsafe fn new(ptr: abi::ConfigEnvoyPtr) -> ConfigHost {
        ConfigHost { ptr }
    }

    pub fn define_counter(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: the name buffer and `id` are alive for the call.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (r == abi::METRICS_SUCCESS).then_some(id)
    }

    pub fn define_gauge(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: the name buffer and `id` are alive for the call.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (r == abi::METRICS_SUCCESS).then_some(id)
    }

    pub fn add_counter(&self, id: Option<usize>, n: u64) {
        if let (Some(id), true) = (id, n > 0) {
            // SAFETY: `id` was defined on this config.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    self.ptr,
                    id,
                    std::ptr::null(),
                    0,
                    n,
                );
            }
        }
    }

    pub fn set_gauge(&self, id: Option<usize>, v: u64) {
        if let Some(id) = id {
            // SAFETY: `id` was defined on this config.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.ptr,
                    id,
                    std::ptr::null(),
                    0,
                    v,
                );
            }
        }
    }

    /// A POST to `cluster`; `Ok(callout id)`, or the init result Envoy answered.
    pub fn post(
        &self,
        dest: &tokengate_core::config::AuditConfig,
        body: &[u8],
        batch_id: &str,
    ) -> Result<u64, u32> {
        let (cluster, path, authority) = (&dest.cluster, &dest.path, &dest.authority);
        let (timeout_ms, authorization) = (dest.timeout_ms, dest.authorization.as_deref());
        let mut headers = vec![
            ModuleHeader::of(b":method", b"POST"),
            ModuleHeader::of(b":path", path.as_bytes()),
            ModuleHeader::of(b"host", authority.as_bytes()),
            ModuleHeader::of(b"content-type", b"application/x-ndjson"),
            ModuleHeader::of(b"x-tokengate-batch", batch_id.as_bytes()),
        ];
        if let Some(a) = authorization {
            headers.push(ModuleHeader::of(b"authorization", a.as_bytes()));
        }
        let mut id = 0u64;
        // SAFETY: every buffer is alive for the call; Envoy copies them.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if r == abi::CALLOUT_INIT_SUCCESS {
            Ok(id)
        } else {
            Err(r)
        }
    }

    pub fn scheduler_new(&self) -> Scheduler {
        // SAFETY: `self.ptr` is the live config; Envoy allocates the scheduler.
        let ptr = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.ptr)
        };
        Scheduler { ptr }
    }
}

/// A config scheduler: `commit` runs `on_http_filter_config_scheduled` on the main thread.
pub struct Scheduler {
    ptr: abi::ConfigSchedulerPtr,
}

// SAFETY: the ABI documents commit as safe from any thread.
unsafe impl Send for Scheduler {}
// SAFETY: as above.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event: u64) {
        if !self.ptr.is_null() {
            // SAFETY: the scheduler is alive until `drop`.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    self.ptr, event,
                )
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: created by scheduler_new, deleted once here.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.ptr)
            }
        }
    }
}
