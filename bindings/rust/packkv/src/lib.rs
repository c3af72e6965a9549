//! Safe Rust API of libpackkv: a compressed KV cache for LLM decode attention (the PackKV
//! method), built on the raw declarations of `packkv-sys`.
//!
//! ```no_run
//! use packkv::{Cache, Params, F16};
//! let mut p = Params::default();           // library defaults; device -1 = CPU backend
//! p.n_kv_heads = 3;
//! p.head_dim = 64;
//! let mut cache = Cache::new(&p)?;
//! let k = vec![F16::from_f32(0.5); 100 * 3 * 64];   // [tokens][n_kv_heads][head_dim]
//! cache.append(&[0], &[100], &k, &k)?;
//! let q = vec![0.1f32; 9 * 64];                      // [n_seqs][n_q_heads][head_dim]
//! let mut out = vec![0f32; 9 * 64];
//! cache.decode(&[0], 9, &q, 0.125, &mut out, None)?;
//! println!("ratio {:.2}", cache.stats(None)?.ratio());
//! # Ok::<(), packkv::Error>(())
//! ```
//!
//! Errors are [`Error`] values carrying the C [`Status`] and the library's message, copied
//! right after the failing call. Thread safety follows the C header: `&mut self` for calls
//! that change a cache, `&self` (and `Sync`) for attention and queries. Memory: the library
//! never keeps a pointer to caller data after a call returns.
//!
//! Experimental (the C header `packkv_experimental.h`; may change in any release):
//! [`Pool`] (pages shared by caches under a byte budget, [`Status::BUDGET_EXCEEDED`]),
//! [`Cache::new_in_pool`], [`Cache::truncate`], [`Cache::fork`].
#![warn(missing_docs)]
#![allow(clippy::needless_doctest_main)]

mod cache;
mod error;
mod params;
mod pool;
mod types;

pub use cache::Cache;
pub use error::{copy_last_error, last_error_message, Error, Result, Status, StatusKind};
pub use params::{Params, Stats};
pub use pool::{page_bytes_for, Pool, PoolOptions, PoolStats};
pub use types::{Bf16, DType, DevicePtr, Element, KTransform, Repack, ScaleGranularity, StreamRef, ZsFormat, F16};

/// The raw FFI crate, for calls this API does not cover.
pub use packkv_sys as sys;

use std::ffi::CStr;

/// Version of the loaded library as MAJOR*10000 + MINOR*100 + PATCH.
pub fn version_number() -> u32 {
    // SAFETY: no arguments, thread-safe.
    unsafe { sys::packkv_version_number() }
}

/// Version of the loaded library, "MAJOR.MINOR.PATCH".
pub fn version_string() -> &'static str {
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::packkv_version_string()) }.to_str().unwrap_or("")
}

/// Build description: version, compiler, CUDA compiler version and architectures, or "no cuda".
pub fn build_info() -> &'static str {
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::packkv_build_info()) }.to_str().unwrap_or("")
}

/// True if the library has its CUDA backend and a CUDA device is visible.
pub fn has_cuda() -> bool {
    // SAFETY: no arguments, thread-safe.
    unsafe { sys::packkv_has_cuda() != 0 }
}

/// The code width (bits) that a relative scale implies (`packkv_bits_for_rel_scale`).
/// Errors: `INVALID_ARGUMENT` for a scale out of range.
pub fn bits_for_rel_scale(rel_scale: f32) -> Result<i32> {
    let mut bits = 0;
    // SAFETY: valid out-pointer.
    error::check(unsafe { sys::packkv_bits_for_rel_scale(rel_scale, &mut bits) })?;
    Ok(bits)
}
