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
//!
//! The configuration `floor` makes it do, and do nothing but, the host interactions the
//! SPEC obliges tokengate to make on an allowed token request: read the header map (which
//! holds `:path`), read the clock, read `source.address` (audit `client_ip`), remove `authorization`,
//! set the identity header, bump a counter, write the four filter-state keys (§12), and at
//! the end of the stream read `response.code` and the clock again (audit `status`,
//! `duration_ms`). tokengate's overhead above this one is its own code.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { reads: Rc::new(Cell::new(1)), floor: None })
    });
}}

struct Root {
    reads: Rc<Cell<u32>>,
    /// `floor` mode: the counter it bumps.
    floor: Option<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let text = text.trim().trim_matches('"');
        if text == "floor" {
            self.floor = hostcalls::define_metric(MetricType::Counter, "empty.floor").ok();
        }
        let n = text.parse::<u32>().unwrap_or(1);
        self.reads.set(n.max(1));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            reads: self.reads.get(),
            floor: self.floor,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    reads: u32,
    floor: Option<u32>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(counter) = self.floor {
            let keep = |v: Option<Vec<u8>>| std::hint::black_box(v.map_or(0, |v| v.len()));
            let map = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
            std::hint::black_box(map.len());
            std::hint::black_box(hostcalls::get_current_time().ok());
            keep(
                hostcalls::get_property(vec!["source", "address"])
                    .ok()
                    .flatten(),
            );
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
            let _ = hostcalls::set_map_value_bytes(
                MapType::HttpRequestHeaders,
                "x-forwarded-user",
                Some(b"bench"),
            );
            let _ = hostcalls::increment_metric(counter, 1);
            for key in [
                "tokengate.token_id",
                "tokengate.user",
                "tokengate.decision",
                "tokengate.reason",
            ] {
                let _ = hostcalls::set_property(vec![key], Some(b"bench"));
            }
            return Action::Continue;
        }
        for _ in 0..self.reads {
            let value =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization");
            std::hint::black_box(value.ok().flatten().map_or(0, |v| v.len()));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.floor.is_some() {
            std::hint::black_box(hostcalls::get_property(vec!["response", "code"]).ok());
            std::hint::black_box(hostcalls::get_current_time().ok());
        }
    }
}
