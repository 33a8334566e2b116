//! The C ABI of native jobber plugins, version 1: the types both sides agree on.
//!
//! A native plugin is a `cdylib` that exports one function, [`ENTRY_SYMBOL`]
//! (`resman_jobber_v1`), returning a pointer to a static [`PluginV1`]. The host checks
//! [`PluginV1::abi_version`] against [`ABI_VERSION`] before it touches anything else, so a
//! library built for another version is refused with a message, not undefined behaviour.
//! Plugin authors never write this by hand: `export_jobber!` generates it.
//!
//! Memory rule: bytes handed from plugin to host ([`OwnedBytes`]) were allocated by the
//! plugin and go back to the plugin's [`PluginV1::free`]; bytes handed from host to plugin
//! ([`Bytes`]) are borrowed for the duration of the call.

use std::ffi::c_void;

#[cfg(not(target_arch = "wasm32"))]
pub mod guest;

/// The ABI version this SDK speaks.
pub const ABI_VERSION: u32 = 1;

/// The name of the entry function, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"resman_jobber_v1\0";

/// The entry function's type.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginV1;

/// Bytes borrowed for one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// Start of the bytes (dangling but non-null when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrows `slice`.
    pub fn new(slice: &[u8]) -> Self {
        Bytes {
            ptr: slice.as_ptr(),
            len: slice.len(),
        }
    }

    /// The bytes as a slice.
    ///
    /// # Safety
    ///
    /// `ptr` must point to `len` readable bytes that outlive the returned slice.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees ptr/len describe live, readable memory.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Bytes allocated by the plugin (a `Vec<u8>`'s parts), owned by whoever holds them until
/// passed to [`PluginV1::free`].
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBytes {
    /// Start of the allocation.
    pub ptr: *mut u8,
    /// Bytes in use.
    pub len: usize,
    /// Bytes allocated.
    pub cap: usize,
}

impl OwnedBytes {
    /// Takes a vector apart; rebuild it with [`OwnedBytes::into_vec`] in the same library.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        OwnedBytes {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }

    /// Rebuilds the vector.
    ///
    /// # Safety
    ///
    /// Must be called in the library that made `self` with [`OwnedBytes::from_vec`], once.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        // SAFETY: the parts come from a Vec<u8> of this allocator, per the caller.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }
}

/// One request, borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RequestV1 {
    /// The request type.
    pub kind: Bytes,
    /// The `queryIndex` as JSON number text.
    pub query_index: Bytes,
    /// The connection's id.
    pub client_id: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The payload as JSON text (`null` when absent).
    pub payload: Bytes,
}

/// How a call ended; the output bytes mean what the variant says.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Output: the `resultJob` as JSON text.
    Ok = 0,
    /// Output: the reason; retry.
    Retry = 1,
    /// Output: the reason; final.
    Fail = 2,
    /// Output: the panic message; the instance must not be used again.
    Panicked = 3,
    /// Output: a [`Rejection`] as JSON; final.
    Rejected = 4,
}

/// The output of [`Status::Rejected`]: an error code of the jobber's choosing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// The `code` the client reads.
    pub code: String,
    /// The `err` the client reads.
    pub message: String,
}

impl Status {
    /// Reads a status returned over the ABI; unknown values are `None`.
    pub fn from_raw(raw: u32) -> Option<Status> {
        match raw {
            0 => Some(Status::Ok),
            1 => Some(Status::Retry),
            2 => Some(Status::Fail),
            3 => Some(Status::Panicked),
            4 => Some(Status::Rejected),
            _ => None,
        }
    }
}

/// Log levels over the ABI, in the WIT's order.
pub mod level {
    /// Trace.
    pub const TRACE: u32 = 0;
    /// Debug.
    pub const DEBUG: u32 = 1;
    /// Info.
    pub const INFO: u32 = 2;
    /// Warn.
    pub const WARN: u32 = 3;
    /// Error.
    pub const ERROR: u32 = 4;
}

/// Receives the bytes of a [`HostApiV1::call`]'s answer; `sink` is the plugin's own
/// pointer, passed through.
pub type SinkFn = unsafe extern "C" fn(sink: *mut c_void, bytes: Bytes);

/// Outcomes of [`HostApiV1::call`].
pub mod call_status {
    /// The answer is the operation's result as JSON.
    pub const OK: u32 = 0;
    /// The answer is the operation's error as JSON (a `PoolError`, or a string for the
    /// store).
    pub const ERROR: u32 = 1;
}

/// What the host offers a native plugin instance: the `host`, `pools` and `store`
/// interfaces of the WIT world.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostApiV1 {
    /// Passed back to every function; the host's own state.
    pub ctx: *const c_void,
    /// Writes a log line ([`level`] constants).
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: Bytes),
    /// Milliseconds since the Unix epoch.
    pub now_ms: unsafe extern "C" fn(ctx: *const c_void) -> u64,
    /// Runs a `pools` or `store` operation: `op` names it as the WIT does
    /// (`pools.acquire`, `store.get`, ...), `args` are its arguments as a JSON object with
    /// the WIT's parameter names in snake case. Before returning, the host passes the answer
    /// (JSON) to `write(sink, ..)` exactly once; the bytes are borrowed for that call.
    /// Returns a [`call_status`].
    pub call: unsafe extern "C" fn(
        ctx: *const c_void,
        op: Bytes,
        args: Bytes,
        sink: *mut c_void,
        write: SinkFn,
    ) -> u32,
}

/// The table a native plugin exports. Every function catches panics at the boundary.
#[repr(C)]
#[derive(Debug)]
pub struct PluginV1 {
    /// Must equal [`ABI_VERSION`]; checked before any other field is read.
    pub abi_version: u32,
    /// The request types served, as a JSON array of strings.
    pub handles: unsafe extern "C" fn() -> OwnedBytes,
    /// Makes an instance (its own jobber state); null if construction panicked. `host` stays
    /// valid until the instance is dropped.
    pub new_instance: unsafe extern "C" fn(host: *const HostApiV1) -> *mut c_void,
    /// Serves one request on an instance; writes the output to `out`.
    pub handle: unsafe extern "C" fn(
        instance: *mut c_void,
        request: *const RequestV1,
        out: *mut OwnedBytes,
    ) -> u32,
    /// Drops an instance.
    pub drop_instance: unsafe extern "C" fn(instance: *mut c_void),
    /// Frees bytes the plugin handed out.
    pub free: unsafe extern "C" fn(bytes: OwnedBytes),
}
