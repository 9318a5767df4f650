//! The host calls a protected request makes on every request, made directly.
//!
//! The SDK's wrappers allocate on the way in (a property path is a `Vec<&str>` serialized into
//! a second `Vec`) and on the way out (a header map becomes a `String` and a `Vec` per header),
//! and they panic on a status they do not expect, which traps the VM. These take their paths
//! as static bytes, hand the host's buffer back as it is, and turn every status into a
//! `Result`. Part of the shell: wasm32 (and clippy) only.

use std::ptr::null_mut;

use crate::headermap::HeaderBlock;

/// proxy-wasm status codes (the ABI's `WasmResult`), as the host returns them.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `MapType::HttpRequestHeaders`.
const REQUEST_HEADERS: u32 = 0;

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
    let status =
        unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    if status == OK {
        Ok(())
    } else {
        Err(Failed(status))
    }
}
