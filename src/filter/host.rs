//! Host calls the SDK only offers in a costlier or trapping shape (a header map read, and
//! `set_property`, whose SDK wrapper panics on a refusal). A header map is read as one
//! serialized map (one host call, one allocation inside the VM) and parsed without copying, and
//! without `unwrap`, by `core::headers`; the SDK's `get_map_bytes` would allocate two buffers per
//! header and `unwrap` each name as UTF-8, and reading headers one by one costs a host call and
//! a VM re-entry (for the allocation) each.

use std::ptr::null_mut;

use proxy_wasm::types::{MapType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    // The proxy-wasm ABI import the SDK's `hostcalls::get_map_bytes` uses. The status is read
    // as a plain u32 so that a value unknown to `Status` cannot be undefined behaviour.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    // The import of the SDK's `hostcalls::set_property`, which panics (traps the VM) on any
    // status but `Ok`; here a refusal is a value the caller handles.
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
}

/// Property path of the verified user id, serialized as the ABI wants it (one segment, no NUL):
/// Envoy stores it as filter state `wasm.etls_user_id`.
pub const USER_ID_PROPERTY: &[u8] = b"etls_user_id";
/// Property path of the verified role: filter state `wasm.etls_role`.
pub const ROLE_PROPERTY: &[u8] = b"etls_role";

/// Sets the property at the serialized `path` to `value`; `Err` with the host's status code if
/// the host refused (e.g. no stream to hold filter state).
pub fn set_property(path: &[u8], value: &[u8]) -> Result<(), u32> {
    // SAFETY: both pointers and lengths describe live slices for the duration of the call; the
    // host only reads them.
    ok(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A header map (request headers, a dispatched call's answer) as the host serializes it; empty
/// if the host refuses (the core then sees no path or session, or no status, and denies).
pub fn header_map(map_type: MapType) -> Vec<u8> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the contract of the SDK's own `get_map_bytes`: on `Ok` with a non-null pointer,
    // the host has allocated exactly `size` bytes through this module's
    // `proxy_on_memory_allocate` (a boxed slice of length `size`) and handed ownership to us.
    unsafe {
        let status = proxy_get_header_map_pairs(map_type as u32, &mut data, &mut size);
        if status == Status::Ok as u32 && !data.is_null() {
            Vec::from_raw_parts(data, size, size)
        } else {
            Vec::new()
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    // ABI imports the SDK wraps with a `panic!` on any status it does not expect (a trap);
    // statuses are read as plain u32 here and every one but Ok is an error.
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period_ms: u32) -> u32;
    fn proxy_get_property(path_data: *const u8, path_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
}

/// Makes `context_id` the context later host calls act on (a root context reaching a paused
/// request). Err with the host's status when it refused (e.g. the request is gone).
pub fn set_effective_context(context_id: u32) -> Result<(), u32> {
    // SAFETY: a plain ABI call with a value argument.
    ok(unsafe { proxy_set_effective_context(context_id) })
}

/// Resumes the effective context's request (`proxy_continue_stream(HttpRequest)`).
pub fn resume_request() -> Result<(), u32> {
    // SAFETY: a plain ABI call with a value argument (0: the request stream).
    ok(unsafe { proxy_continue_stream(0) })
}

/// Sets this VM's root tick period (0 stops it).
pub fn set_tick_period(period: std::time::Duration) -> Result<(), u32> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: a plain ABI call with a value argument.
    ok(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// An integer property of the effective context (Envoy serializes an int64 as its 8
/// little-endian bytes); None if the host refuses it or it is not an integer.
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let serialized = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `header_map`: on Ok with a non-null pointer the host allocated `size` bytes
    // through this module's allocator and handed them over.
    let bytes = unsafe {
        let status = proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size);
        if status != Status::Ok as u32 || data.is_null() {
            return None;
        }
        Vec::from_raw_parts(data, size, size)
    };
    let raw: [u8; 8] = bytes.as_slice().try_into().ok()?;
    u64::try_from(i64::from_le_bytes(raw)).ok()
}

fn ok(status: u32) -> Result<(), u32> {
    if status == Status::Ok as u32 {
        Ok(())
    } else {
        Err(status)
    }
}
