//! tokengate's pure core: everything that decides, with no host calls and no I/O.
//!
//! The proxy-wasm filter (`src/`), the Envoy dynamic module (`native/`), `tokenctl` and
//! `tokengate-server` all use this crate, so none of them can disagree about what a
//! configuration means or what a request gets. It must never call a host, open a socket or
//! read a file: the shells do that and hand it bytes.

#![deny(unsafe_code)]

pub mod audit;
pub mod canonical;
pub mod config;
pub mod credential;
pub mod digest;
pub mod explain;
pub mod flow;
pub mod ip;
pub mod javare;
pub mod json;
pub mod media;
pub mod pbstruct;
pub mod policy;
pub mod record;
pub mod reply;
pub mod restriction;
pub mod snippet;
pub mod text;
pub mod time;
pub mod token;
