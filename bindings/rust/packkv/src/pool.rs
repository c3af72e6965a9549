//! Memory pools (experimental: `packkv_experimental.h`, not frozen; they change with the
//! library): fixed-size pages for the compressed blocks of several caches, under one budget.
use core::mem::{size_of, MaybeUninit};
use core::ptr::{self, NonNull};

use packkv_sys as sys;
use sys::experimental as x;

use crate::error::{check, Error, Result, Status};
use crate::params::Params;

/// Options of a [`Pool`] (`packkv_x_pool_params_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Bytes per page: a multiple of 4096 in [4096, 2^31] that holds the largest block of
    /// every cache made in the pool ([`page_bytes_for`]). Default 1 MiB.
    pub page_bytes: i64,
    /// 0: no budget; else the pool never holds more than `budget_bytes / page_bytes` pages.
    pub budget_bytes: i64,
    /// Map and touch the whole budget at creation and keep it (needs a budget).
    pub reserve: bool,
    /// -1 (default): host pages, for CPU caches; else the CUDA device ordinal whose memory
    /// holds the pages, for CUDA caches on that device.
    pub device: i32,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions { page_bytes: x::PACKKV_X_POOL_DEFAULT_PAGE_BYTES as i64, budget_bytes: 0, reserve: false, device: -1 }
    }
}

/// Pool accounting (`packkv_x_pool_stats_t`), bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Bytes per page.
    pub page_bytes: i64,
    /// Whole pages of the budget, in bytes; 0 without a budget.
    pub budget_bytes: i64,
    /// Pages mapped (in use, plus those a reserving pool keeps free).
    pub bytes_held: i64,
    /// Pages holding blocks or open for writing.
    pub bytes_in_use: i64,
    /// `budget_bytes - bytes_in_use`; `None` without a budget.
    pub free_bytes: Option<i64>,
    /// Caches made in the pool and not dropped.
    pub n_caches: i64,
}

/// A pool of pages shared by caches (`packkv_x_pool_t`): host pages for CPU caches, or one
/// CUDA device's pages for CUDA caches on it (`PoolOptions::device`). Dropping it
/// drops this handle only: caches made in it ([`crate::Cache::new_in_pool`]) keep it alive.
/// `Send + Sync`: every pool function is thread-safe.
#[derive(Debug)]
pub struct Pool {
    raw: NonNull<x::packkv_x_pool_t>,
}

// SAFETY: the pool's functions are thread-safe (packkv_experimental.h), the handle may be
// used and dropped from any thread.
unsafe impl Send for Pool {}
// SAFETY: as above; no method mutates through &self outside the library's own locking.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: valid handle, owned; destroy only drops this reference.
        unsafe { x::packkv_x_pool_destroy(self.raw.as_ptr()) }
    }
}

impl Pool {
    /// Creates a pool (`packkv_x_pool_create`). Errors: `INVALID_ARGUMENT` for a bad page
    /// size, budget, device ordinal or reserve without budget; `NOT_SUPPORTED` for a device
    /// without the CUDA backend; `OUT_OF_HOST_MEMORY` / `OUT_OF_DEVICE_MEMORY` when
    /// reserving fails.
    pub fn new(opts: &PoolOptions) -> Result<Pool> {
        // SAFETY: all-integer POD, valid when zeroed; params_init fills it.
        let mut p: x::packkv_x_pool_params_t = unsafe { MaybeUninit::zeroed().assume_init() };
        check(unsafe { x::packkv_x_pool_params_init(&mut p, size_of::<x::packkv_x_pool_params_t>()) })?;
        p.page_bytes = opts.page_bytes;
        p.budget_bytes = opts.budget_bytes;
        p.reserve = opts.reserve as i32;
        p.device = opts.device;
        let mut out: *mut x::packkv_x_pool_t = ptr::null_mut();
        // SAFETY: valid params and out-pointer.
        check(unsafe { x::packkv_x_pool_create(&p, &mut out) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Status::INTERNAL, "packkv_x_pool_create returned NULL"))?;
        Ok(Pool { raw })
    }

    /// The raw handle, for the FFI calls.
    pub fn as_ptr(&self) -> *mut x::packkv_x_pool_t {
        self.raw.as_ptr()
    }

    /// A consistent snapshot of the pool's accounting (`packkv_x_pool_stats`).
    pub fn stats(&self) -> Result<PoolStats> {
        // SAFETY: all-integer POD, valid when zeroed; struct_size set as required.
        let mut s: x::packkv_x_pool_stats_t = unsafe { MaybeUninit::zeroed().assume_init() };
        s.struct_size = size_of::<x::packkv_x_pool_stats_t>() as u32;
        check(unsafe { x::packkv_x_pool_stats(self.raw.as_ptr(), &mut s) })?;
        Ok(PoolStats {
            page_bytes: s.page_bytes,
            budget_bytes: s.budget_bytes,
            bytes_held: s.bytes_held,
            bytes_in_use: s.bytes_in_use,
            free_bytes: if s.free_bytes < 0 { None } else { Some(s.free_bytes) },
            n_caches: s.n_caches,
        })
    }

    /// Tokens that still fit in the free pages when each token goes to every cache of the
    /// pool, each cache's blocks of its mean size so far packed whole into pages, page-end
    /// waste counted (`packkv_x_pool_tokens_fit`); `None` without a budget. An estimate
    /// (later blocks assumed of the mean size; residual windows not counted).
    pub fn tokens_fit(&self) -> Result<Option<i64>> {
        let mut n = 0i64;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { x::packkv_x_pool_tokens_fit(self.raw.as_ptr(), &mut n) })?;
        Ok(if n < 0 { None } else { Some(n) })
    }
}

/// The page size for caches with these parameters (`packkv_x_pool_page_bytes_for`): what a
/// private pool uses, and the recommended `page_bytes` of a shared pool for them.
pub fn page_bytes_for(params: &Params) -> Result<i64> {
    let raw = params.to_raw()?;
    let mut n = 0i64;
    // SAFETY: valid params and out-pointer.
    check(unsafe { x::packkv_x_pool_page_bytes_for(&raw, &mut n) })?;
    Ok(n)
}
