//! tokengate's proxy-wasm filter: the wasm shell over `tokengate-core`.
//!
//! Everything that decides lives in the core crate (`core/`). This crate only maps the
//! proxy-wasm host onto it: [`headermap`] reads the host's serialized header map (pure, tested
//! natively), `filter` holds the per-worker root context and the small per-stream object, and
//! `host` makes the raw host calls. `filter` and `host` exist when compiling for wasm32 (and
//! under clippy, so that the lints cover them).

#![deny(unsafe_code)]

pub mod headermap;

// Linted natively under clippy (check-only, nothing links), built for wasm32. The core is
// safe Rust; the shell exports the ABI's entry points (`#[no_mangle]`, through the SDK's
// macro) and `host` makes the raw host calls.
#[cfg(any(target_arch = "wasm32", clippy))]
#[allow(unsafe_code)]
mod filter;
#[cfg(any(target_arch = "wasm32", clippy))]
#[allow(unsafe_code)]
mod host;
