//! The empty proxy-wasm filter: the floor any proxy-wasm HTTP filter pays in Envoy.
//!
//! Per request it does what every filter must do at least: Envoy creates a stream context in
//! the VM, calls `on_http_request_headers`, and the filter reads one header through the bytes
//! getter (one host call, plus the host's call back into the VM to allocate the value), then
//! continues.
//!
//! For calibration only, a plugin configuration holding a number N (as text) makes it read
//! the header N times per request instead: the cost of one host call in this Envoy is then
//! (cost(N) - cost(1)) / (N - 1). Without a configuration it reads once.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { reads: Rc::new(Cell::new(1)) })
    });
}}

struct Root {
    reads: Rc<Cell<u32>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let n = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().trim_matches('"').parse::<u32>().ok())
            .unwrap_or(1);
        self.reads.set(n.max(1));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            reads: self.reads.get(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    reads: u32,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.reads {
            let value =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization");
            std::hint::black_box(value.ok().flatten().map_or(0, |v| v.len()));
        }
        Action::Continue
    }
}
