//! Host calls the SDK only offers in a costlier or trapping shape. A header map is read as one
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
