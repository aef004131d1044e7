//! The host side of `core::shared_calls`: proxy-wasm shared data (one map per `vm_id` for the
//! whole Envoy process) as bytes, get and set with compare-and-swap, nothing else. The SDK's
//! wrappers panic (trap the VM) on a status they do not expect; here every status but Ok is a
//! value. Envoy cannot delete a key, so the core keeps a fixed set of keys.

use std::ptr::{null, null_mut};

use proxy_wasm::types::Status;

use crate::core::shared_calls::{SetError, SharedData};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize, cas: u32) -> u32;
}

/// The Envoy process's shared data.
pub struct HostShared;

impl SharedData for HostShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: the contract of the SDK's own `get_shared_data`: on Ok with a non-null
        // pointer, the host allocated exactly `size` bytes through this module's allocator and
        // handed them over.
        let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
        if status != Status::Ok as u32 {
            return (None, None);
        }
        let cas = (cas != 0).then_some(cas);
        if data.is_null() {
            return (None, cas);
        }
        // SAFETY: see above.
        let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
        (if bytes.is_empty() { None } else { Some(bytes) }, cas)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let (ptr, len) = if value.is_empty() { (null(), 0) } else { (value.as_ptr(), value.len()) };
        // SAFETY: both pointers and lengths describe live slices for the duration of the call;
        // the host only reads them.
        let status = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), ptr, len, cas.unwrap_or(0)) };
        match status {
            s if s == Status::Ok as u32 => Ok(()),
            s if s == Status::CasMismatch as u32 => Err(SetError::CasMismatch),
            _ => Err(SetError::Refused),
        }
    }
}
