//! tokengate: scoped REST API tokens for Atlassian Data Center apps, enforced in Envoy.
//!
//! Everything but [`filter`] is the pure core: plain Rust, no host calls, tested natively and
//! shared with `tokenctl`. The `filter` module is the thin proxy-wasm shell and only exists
//! when compiling for wasm32 (and under clippy, so that the lints cover it).

#![deny(unsafe_code)]

pub mod audit;
pub mod canonical;
pub mod config;
pub mod credential;
pub mod digest;
pub mod headermap;
pub mod ip;
pub mod javare;
pub mod json;
pub mod media;
pub mod pbstruct;
pub mod policy;
pub mod reply;
pub mod restriction;
pub mod text;
pub mod time;

// Linted natively under clippy (check-only, nothing links), built for wasm32. The core is
// safe Rust; the shell exports the ABI's entry points (`#[no_mangle]`, through the SDK's
// macro) and `host` makes the raw host calls.
#[cfg(any(target_arch = "wasm32", clippy))]
#[allow(unsafe_code)]
mod filter;
#[cfg(any(target_arch = "wasm32", clippy))]
#[allow(unsafe_code)]
mod host;
