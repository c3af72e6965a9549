//! The cache handle.
use core::mem::{size_of, MaybeUninit};
use core::ptr::{self, NonNull};

use packkv_sys as sys;

use crate::error::{check, Error, Result};
use crate::params::{Params, Stats};
use crate::types::{DType, DevicePtr, Element, StreamRef};

/// A compressed KV cache of one attention layer (`packkv_cache_t`), freed on drop.
///
/// Methods that change the cache take `&mut self` (append, remove_seq, reset); queries and
/// attention take `&self` and may run concurrently from several threads, exactly as the C
/// header's thread-safety contract allows.
///
/// Host-slice methods (`append`, `scores`, `apply`, `decode`, `decompress`) are for a CPU
/// cache (`Params::device == -1`) and check every slice length against the shapes below
/// before calling C, so they are safe. The `*_device` variants take raw device addresses for
/// a CUDA cache and are `unsafe`. Shapes (row-major):
/// K/V `[sum(n_tokens)][n_kv_heads][head_dim]`, queries `[n_seqs][n_q_heads][head_dim]`,
/// scores/probs `[n_seqs][n_q_heads][ld]`, outputs `[n_seqs][n_q_heads][head_dim]`,
/// lse `[n_seqs][n_q_heads]`; `n_q_heads` is a positive multiple of `n_kv_heads` (GQA).
#[derive(Debug)]
pub struct Cache {
    raw: NonNull<sys::packkv_cache_t>,
    params: Params,
    device: i32,
}

// SAFETY: the header allows a cache to move between threads ("A cache may move between
// threads") and different caches are independent.
unsafe impl Send for Cache {}
// SAFETY: calls taking `const packkv_cache_t*` may run concurrently with each other (the
// header's thread-safety contract); this type calls only those through `&self`, and every
// call that mutates the cache (append, reset, remove_seq, destroy) needs `&mut self` or
// ownership, so it cannot overlap any other call. The host methods use a private workspace
// per call; concurrent `*_device` calls must be given distinct workspaces (documented there).
unsafe impl Sync for Cache {}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and exclusively owned; destroy blocks until the cache's
        // pending device work has completed.
        unsafe { sys::packkv_cache_destroy(self.raw.as_ptr()) }
    }
}

fn to_i32(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::invalid(format!("{what} ({n}) does not fit in int32")))
}

fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::invalid("array size overflows usize"))
}

fn positive(n: i32, what: &str) -> Result<usize> {
    if n < 1 {
        return Err(Error::invalid(format!("{what} must be >= 1, got {n}")));
    }
    Ok(n as usize)
}

impl Cache {
    /// Creates a cache (`packkv_cache_create`).
    ///
    /// Errors: `INVALID_ARGUMENT` for an out-of-range field (the message names it),
    /// `NOT_SUPPORTED` for `device >= 0` without the CUDA backend or device,
    /// `OUT_OF_HOST_MEMORY`.
    pub fn new(params: &Params) -> Result<Cache> {
        Cache::create(params, None)
    }

    /// Creates a cache whose compressed blocks live in `pool` (experimental:
    /// `packkv_x_cache_create_in_pool`). The cache keeps the pool alive.
    ///
    /// Errors: as [`Cache::new`], and `INVALID_ARGUMENT` when the pool's pages are smaller
    /// than this cache's largest block ([`crate::page_bytes_for`]), `NOT_SUPPORTED` for a
    /// CUDA cache.
    pub fn new_in_pool(params: &Params, pool: &crate::Pool) -> Result<Cache> {
        Cache::create(params, Some(pool))
    }

    fn create(params: &Params, pool: Option<&crate::Pool>) -> Result<Cache> {
        let raw_params = params.to_raw()?;
        let mut out: *mut sys::packkv_cache_t = ptr::null_mut();
        // SAFETY: valid params struct, pool handle and out-pointer.
        check(unsafe {
            match pool {
                None => sys::packkv_cache_create(&raw_params, &mut out),
                Some(p) => sys::experimental::packkv_x_cache_create_in_pool(&raw_params, p.as_ptr(), &mut out),
            }
        })?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::new(crate::Status::INTERNAL, "packkv_cache_create returned NULL"))?;
        let mut eff = raw_params;
        eff.struct_size = size_of::<sys::packkv_cache_params_t>() as u32;
        let mut device = -1;
        // Build the Cache first so the handle is freed if a query below fails.
        let mut cache = Cache { raw, params: *params, device };
        // SAFETY: valid handle and out-pointers.
        check(unsafe { sys::packkv_cache_get_params(cache.raw.as_ptr(), &mut eff) })?;
        check(unsafe { sys::packkv_cache_device(cache.raw.as_ptr(), &mut device) })?;
        cache.params = Params::from_raw(&eff);
        cache.device = device;
        Ok(cache)
    }

    /// The effective parameters (`packkv_cache_get_params` at creation), with the derived
    /// bit widths filled in.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Re-reads the effective parameters from the library (`packkv_cache_get_params`).
    pub fn get_params(&self) -> Result<Params> {
        let mut p = self.params.to_raw()?;
        p.struct_size = size_of::<sys::packkv_cache_params_t>() as u32;
        // SAFETY: valid handle and struct.
        check(unsafe { sys::packkv_cache_get_params(self.raw.as_ptr(), &mut p) })?;
        Ok(Params::from_raw(&p))
    }

    /// -1 for a CPU cache, else the CUDA device ordinal (`packkv_cache_device`).
    pub fn device(&self) -> i32 {
        self.device
    }

    /// Queries the device ordinal from the library (`packkv_cache_device`).
    pub fn get_device(&self) -> Result<i32> {
        let mut d = -1;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::packkv_cache_device(self.raw.as_ptr(), &mut d) })?;
        Ok(d)
    }

    /// The raw handle, for calls through `packkv-sys`. It stays owned by this `Cache`.
    pub fn as_ptr(&self) -> *const sys::packkv_cache_t {
        self.raw.as_ptr()
    }

    /// The raw mutable handle (for raw calls that mutate the cache).
    pub fn as_mut_ptr(&mut self) -> *mut sys::packkv_cache_t {
        self.raw.as_ptr()
    }

    fn host_only(&self, what: &str) -> Result<()> {
        if self.device >= 0 {
            return Err(Error::invalid(format!(
                "{what}: host slices given to a cache on CUDA device {}; use {what}_device",
                self.device
            )));
        }
        Ok(())
    }

    fn row(&self) -> usize {
        self.params.n_kv_heads as usize * self.params.head_dim as usize
    }

    /// Appends tokens to one or more sequences and compresses the blocks the flush policy
    /// releases (`packkv_cache_append`). CPU cache only.
    ///
    /// `seq_ids`: distinct ids; `n_tokens[i]`: new tokens of `seq_ids[i]`; `k`, `v`:
    /// `[sum(n_tokens)][n_kv_heads][head_dim]`, sequences in the order of `seq_ids`.
    /// Errors: `INVALID_ARGUMENT` (lengths, ids, non-finite values: nothing is appended),
    /// `CAPACITY_EXCEEDED`, `OUT_OF_HOST_MEMORY`.
    pub fn append<T: Element>(
        &mut self,
        seq_ids: &[i32],
        n_tokens: &[i32],
        k: &[T],
        v: &[T],
    ) -> Result<()> {
        self.host_only("append")?;
        if seq_ids.len() != n_tokens.len() {
            return Err(Error::invalid(format!(
                "append: {} seq_ids but {} n_tokens",
                seq_ids.len(),
                n_tokens.len()
            )));
        }
        let mut total: usize = 0;
        for &n in n_tokens {
            if n < 0 {
                return Err(Error::invalid(format!("append: n_tokens must be >= 0, got {n}")));
            }
            total += n as usize;
        }
        let want = mul(total, self.row())?;
        if k.len() != want || v.len() != want {
            return Err(Error::invalid(format!(
                "append: k has {} and v {} elements, expected sum(n_tokens) * n_kv_heads * \
                 head_dim = {want}",
                k.len(),
                v.len()
            )));
        }
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        // SAFETY: host slices of the checked lengths, alive for the call; not retained.
        check(unsafe {
            sys::packkv_cache_append(
                self.raw.as_ptr(),
                n_seqs,
                seq_ids.as_ptr(),
                n_tokens.as_ptr(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                T::DTYPE.0,
                ptr::null_mut(),
            )
        })
    }

    /// Appends tokens held in device memory (`packkv_cache_append` on a CUDA cache).
    ///
    /// # Safety
    /// `k` and `v` must point to `sum(n_tokens) * n_kv_heads * head_dim` elements of `dtype`
    /// in the memory of the cache's device, readable in stream order on `stream` until the
    /// work completes, and `stream` must be a valid stream of that device (or DEFAULT).
    /// Non-finite values are reported by the next synchronizing call ([`Cache::sync`]).
    pub unsafe fn append_device(
        &mut self,
        seq_ids: &[i32],
        n_tokens: &[i32],
        k: DevicePtr,
        v: DevicePtr,
        dtype: DType,
        stream: StreamRef,
    ) -> Result<()> {
        if seq_ids.len() != n_tokens.len() {
            return Err(Error::invalid("append_device: seq_ids and n_tokens differ in length"));
        }
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        check(sys::packkv_cache_append(
            self.raw.as_ptr(),
            n_seqs,
            seq_ids.as_ptr(),
            n_tokens.as_ptr(),
            k.as_const(),
            v.as_const(),
            dtype.0,
            stream.raw(),
        ))
    }

    /// Removes every token of one sequence (`packkv_cache_remove_seq`).
    pub fn remove_seq(&mut self, seq_id: i32) -> Result<()> {
        // SAFETY: valid handle, exclusive access.
        check(unsafe { sys::packkv_cache_remove_seq(self.raw.as_ptr(), seq_id) })
    }

    /// Keeps the first `n_tokens` tokens of a sequence (experimental:
    /// `packkv_x_cache_truncate`). Residual-window tokens are dropped at no cost; when the
    /// cut falls inside a compressed block, its first tokens return to the window from their
    /// stored (dequantized) values and keep the compression error; a cut inside the sink
    /// tokens keeps the first `n_tokens` of them and drops every block.
    /// Errors: `INVALID_ARGUMENT` for `n_tokens` outside `[window_start, seq_length]`; `NOT_SUPPORTED`
    /// on a CUDA cache. On error nothing changes.
    pub fn truncate(&mut self, seq_id: i32, n_tokens: i64) -> Result<()> {
        // SAFETY: valid handle, exclusive access.
        check(unsafe { sys::experimental::packkv_x_cache_truncate(self.raw.as_ptr(), seq_id, n_tokens) })
    }

    /// Makes the empty sequence `dst_seq` a copy of `src_seq` sharing its compressed blocks
    /// (reference counted) with the residual window, sink tokens and K mean copied (experimental:
    /// `packkv_x_cache_fork`). `stats(Some(seq))` counts shared blocks in each sequence,
    /// `stats(None)` once. Errors: `INVALID_STATE` if `dst_seq` holds tokens,
    /// `INVALID_ARGUMENT` for bad or equal ids. On error nothing changes.
    pub fn fork(&mut self, src_seq: i32, dst_seq: i32) -> Result<()> {
        // SAFETY: valid handle, exclusive access.
        check(unsafe { sys::experimental::packkv_x_cache_fork(self.raw.as_ptr(), src_seq, dst_seq) })
    }

    /// Gives the empty cache a sliding window of `window_tokens` tokens, 0 for none
    /// (experimental: `packkv_x_cache_set_window`). Tokens before [`Cache::window_start`]
    /// then score -inf, weigh 0 in `apply`, are left out of `decode`, decompress as NaN, and
    /// their whole blocks are freed. Errors: `INVALID_STATE` if the cache holds tokens,
    /// `INVALID_ARGUMENT` for a negative window.
    pub fn set_window(&mut self, window_tokens: i64) -> Result<()> {
        // SAFETY: valid handle, exclusive access.
        check(unsafe { sys::experimental::packkv_x_cache_set_window(self.raw.as_ptr(), window_tokens) })
    }

    /// Runs this CPU cache's parallel work through the caller's task runner (`fn_`, called
    /// with at most `n_tasks` tasks a call; `None`: the library's own threads again)
    /// (`packkv_x_cache_set_parallel`). Results do not depend on it.
    ///
    /// # Safety
    /// `fn_` must follow the contract of `packkv_x_parallel_fn` (call every task once, return
    /// after all have returned) and, with `user`, stay valid while the cache uses it.
    pub unsafe fn set_parallel(
        &mut self,
        fn_: sys::experimental::packkv_x_parallel_fn,
        user: *mut core::ffi::c_void,
        n_tasks: i32,
    ) -> Result<()> {
        check(sys::experimental::packkv_x_cache_set_parallel(self.raw.as_ptr(), fn_, user.cast(), n_tasks))
    }

    /// First token of a sequence inside the sliding window (`packkv_x_cache_window_start`).
    pub fn window_start(&self, seq_id: i32) -> Result<i64> {
        let mut n = 0i64;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::experimental::packkv_x_cache_window_start(self.raw.as_ptr(), seq_id, &mut n) })?;
        Ok(n)
    }

    /// One sequence in the versioned export byte format (experimental:
    /// `packkv_x_cache_export`), for offloading or moving a prefix to another process.
    pub fn export_seq(&self, seq_id: i32) -> Result<Vec<u8>> {
        let mut n = 0usize;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::experimental::packkv_x_cache_export_size(self.raw.as_ptr(), seq_id, &mut n) })?;
        let mut buf = vec![0u8; n];
        let mut written = 0usize;
        // SAFETY: buf is valid for n bytes; the library writes at most n.
        check(unsafe {
            sys::experimental::packkv_x_cache_export(self.raw.as_ptr(), seq_id, buf.as_mut_ptr().cast(), n, &mut written)
        })?;
        buf.truncate(written);
        Ok(buf)
    }

    /// Restores an exported sequence into the empty sequence `seq_id` (experimental:
    /// `packkv_x_cache_import`), validating everything first. Errors: `INVALID_ARGUMENT` for
    /// bytes that are not a valid export for this cache (the message says which check
    /// failed), `VERSION_MISMATCH`, `INVALID_STATE` for a non-empty sequence,
    /// `CAPACITY_EXCEEDED`, `BUDGET_EXCEEDED`. On error nothing is imported.
    pub fn import_seq(&mut self, seq_id: i32, data: &[u8]) -> Result<()> {
        // SAFETY: data is valid for data.len() bytes for the call; exclusive access.
        check(unsafe {
            sys::experimental::packkv_x_cache_import(self.raw.as_ptr(), seq_id, data.as_ptr().cast(), data.len())
        })
    }

    /// Removes every token of every sequence (`packkv_cache_reset`).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: valid handle, exclusive access.
        check(unsafe { sys::packkv_cache_reset(self.raw.as_ptr()) })
    }

    /// Tokens held for one sequence (`packkv_cache_seq_length`).
    pub fn seq_length(&self, seq_id: i32) -> Result<i64> {
        let mut n = 0i64;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::packkv_cache_seq_length(self.raw.as_ptr(), seq_id, &mut n) })?;
        Ok(n)
    }

    /// Memory accounting of one sequence, or of all with `None` (`packkv_cache_stats`).
    pub fn stats(&self, seq_id: Option<i32>) -> Result<Stats> {
        // SAFETY: all-integer POD, valid when zeroed; struct_size is set before the call as the
        // header requires.
        let mut s: sys::packkv_cache_stats_t = unsafe { MaybeUninit::zeroed().assume_init() };
        s.struct_size = size_of::<sys::packkv_cache_stats_t>() as u32;
        check(unsafe { sys::packkv_cache_stats(self.raw.as_ptr(), seq_id.unwrap_or(-1), &mut s) })?;
        Ok(Stats::from_raw(&s))
    }

    /// Reconstructs K and/or V of one sequence in original token order as f32
    /// `[n_tokens][n_kv_heads][head_dim]` (`packkv_cache_decompress`). CPU cache only.
    /// Capacity is the slice length divided by n_kv_heads * head_dim (both slices must agree
    /// when both are given). Returns the number of tokens written.
    /// Errors: `CAPACITY_EXCEEDED` if the sequence holds more tokens (nothing written).
    pub fn decompress(
        &self,
        seq_id: i32,
        k_out: Option<&mut [f32]>,
        v_out: Option<&mut [f32]>,
    ) -> Result<i64> {
        self.host_only("decompress")?;
        let row = self.row();
        let cap_of = |s: &Option<&mut [f32]>| s.as_ref().map(|s| s.len() / row);
        let capacity = match (cap_of(&k_out), cap_of(&v_out)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        };
        let k = k_out.map_or(ptr::null_mut(), |s| s.as_mut_ptr());
        let v = v_out.map_or(ptr::null_mut(), |s| s.as_mut_ptr());
        // SAFETY: each non-NULL output holds at least capacity rows; the library writes only
        // when the sequence fits.
        check(unsafe {
            sys::packkv_cache_decompress(
                self.raw.as_ptr(),
                seq_id,
                k,
                v,
                capacity as i64,
                ptr::null_mut(),
            )
        })?;
        self.seq_length(seq_id)
    }

    /// `packkv_cache_decompress` into device memory.
    ///
    /// # Safety
    /// `k_out` / `v_out` (either may be NULL) must hold `capacity_tokens * n_kv_heads *
    /// head_dim` f32 in the cache's device memory, writable in stream order on `stream`.
    pub unsafe fn decompress_device(
        &self,
        seq_id: i32,
        k_out: DevicePtr,
        v_out: DevicePtr,
        capacity_tokens: i64,
        stream: StreamRef,
    ) -> Result<()> {
        check(sys::packkv_cache_decompress(
            self.raw.as_ptr(),
            seq_id,
            k_out.as_mut().cast(),
            v_out.as_mut().cast(),
            capacity_tokens,
            stream.raw(),
        ))
    }

    /// Waits for the cache's pending device work and reports asynchronous errors
    /// (`packkv_cache_sync`); always Ok for a CPU cache.
    pub fn sync(&self) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::packkv_cache_sync(self.raw.as_ptr()) })
    }

    /// Workspace bytes an attention call with these sizes needs (`packkv_attn_workspace_size`).
    pub fn workspace_size(&self, n_seqs: i32, n_q_heads: i32) -> Result<usize> {
        let mut bytes = 0usize;
        // SAFETY: valid handle and out-pointer.
        check(unsafe {
            sys::packkv_attn_workspace_size(self.raw.as_ptr(), n_seqs, n_q_heads, &mut bytes)
        })?;
        Ok(bytes)
    }

    /// Scratch of a host call. Sizes that packkv_attn_workspace_size rejects give an empty
    /// workspace: the attention call itself then reports the error, under its own name.
    fn host_workspace(&self, n_seqs: i32, n_q_heads: i32) -> Result<Vec<u8>> {
        Ok(vec![0u8; self.workspace_size(n_seqs, n_q_heads).unwrap_or(0)])
    }

    fn check_q<T>(&self, what: &str, seq_ids: &[i32], n_q_heads: i32, q: &[T]) -> Result<(i32, usize)> {
        self.host_only(what)?;
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        let rows = mul(seq_ids.len(), positive(n_q_heads, "n_q_heads")?)?;
        let want = mul(rows, self.params.head_dim as usize)?;
        if q.len() != want {
            return Err(Error::invalid(format!(
                "{what}: q has {} elements, expected n_seqs * n_q_heads * head_dim = {want}",
                q.len()
            )));
        }
        Ok((n_seqs, rows))
    }

    /// Raw scores q . k for every cached token, no softmax scale (`packkv_attn_scores`).
    /// CPU cache only. `scores`: `[n_seqs][n_q_heads][ld_scores]` with ld_scores >= the
    /// longest requested sequence; entries past a sequence's length are left untouched.
    pub fn scores<T: Element>(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        q: &[T],
        scores: &mut [f32],
        ld_scores: usize,
    ) -> Result<()> {
        let (n_seqs, rows) = self.check_q("scores", seq_ids, n_q_heads, q)?;
        if scores.len() < mul(rows, ld_scores)? {
            return Err(Error::invalid(format!(
                "scores: output has {} elements, needs n_seqs * n_q_heads * ld_scores = {}",
                scores.len(),
                rows * ld_scores
            )));
        }
        let mut ws = self.host_workspace(n_seqs, n_q_heads)?;
        // SAFETY: host slices of checked lengths; the library writes only rows * ld_scores
        // entries and rejects ld_scores smaller than a sequence.
        check(unsafe {
            sys::packkv_attn_scores(
                self.raw.as_ptr(),
                n_seqs,
                seq_ids.as_ptr(),
                n_q_heads,
                q.as_ptr().cast(),
                T::DTYPE.0,
                scores.as_mut_ptr(),
                ld_scores as i64,
                if ws.is_empty() { ptr::null_mut() } else { ws.as_mut_ptr().cast() },
                ws.len(),
                ptr::null_mut(),
            )
        })
    }

    /// `packkv_attn_scores` on device memory.
    ///
    /// # Safety
    /// `q` (`n_seqs*n_q_heads*head_dim` of `q_dtype`), `scores` (`n_seqs*n_q_heads*ld_scores`
    /// f32) and `workspace` (`workspace_bytes` >= [`Cache::workspace_size`]) must be valid
    /// device memory of the cache's device in stream order on `stream`; concurrent calls on
    /// one cache need distinct workspaces.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_device(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        q: DevicePtr,
        q_dtype: DType,
        scores: DevicePtr,
        ld_scores: i64,
        workspace: DevicePtr,
        workspace_bytes: usize,
        stream: StreamRef,
    ) -> Result<()> {
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        check(sys::packkv_attn_scores(
            self.raw.as_ptr(),
            n_seqs,
            seq_ids.as_ptr(),
            n_q_heads,
            q.as_const(),
            q_dtype.0,
            scores.as_mut().cast(),
            ld_scores,
            workspace.as_mut(),
            workspace_bytes,
            stream.raw(),
        ))
    }

    /// Weighted sum of V, out = probs . V (`packkv_attn_apply`). CPU cache only.
    /// `probs`: f32 `[n_seqs][n_q_heads][ld_probs]` in original token order (only the first
    /// seq_length entries of each row are read); `out`: `[n_seqs][n_q_heads][head_dim]`.
    pub fn apply(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        probs: &[f32],
        ld_probs: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.host_only("apply")?;
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        let rows = mul(seq_ids.len(), positive(n_q_heads, "n_q_heads")?)?;
        if probs.len() < mul(rows, ld_probs)? {
            return Err(Error::invalid(format!(
                "apply: probs has {} elements, needs n_seqs * n_q_heads * ld_probs = {}",
                probs.len(),
                rows * ld_probs
            )));
        }
        let want = mul(rows, self.params.head_dim as usize)?;
        if out.len() != want {
            return Err(Error::invalid(format!(
                "apply: out has {} elements, expected n_seqs * n_q_heads * head_dim = {want}",
                out.len()
            )));
        }
        let mut ws = self.host_workspace(n_seqs, n_q_heads)?;
        // SAFETY: host slices of checked lengths, not retained.
        check(unsafe {
            sys::packkv_attn_apply(
                self.raw.as_ptr(),
                n_seqs,
                seq_ids.as_ptr(),
                n_q_heads,
                probs.as_ptr(),
                ld_probs as i64,
                out.as_mut_ptr(),
                if ws.is_empty() { ptr::null_mut() } else { ws.as_mut_ptr().cast() },
                ws.len(),
                ptr::null_mut(),
            )
        })
    }

    /// `packkv_attn_apply` on device memory.
    ///
    /// # Safety
    /// As [`Cache::scores_device`], with `probs` (`n_seqs*n_q_heads*ld_probs` f32) and `out`
    /// (`n_seqs*n_q_heads*head_dim` f32) in the cache's device memory.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn apply_device(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        probs: DevicePtr,
        ld_probs: i64,
        out: DevicePtr,
        workspace: DevicePtr,
        workspace_bytes: usize,
        stream: StreamRef,
    ) -> Result<()> {
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        check(sys::packkv_attn_apply(
            self.raw.as_ptr(),
            n_seqs,
            seq_ids.as_ptr(),
            n_q_heads,
            probs.as_const().cast(),
            ld_probs,
            out.as_mut().cast(),
            workspace.as_mut(),
            workspace_bytes,
            stream.raw(),
        ))
    }

    /// Decode attention softmax(scale * q . K^T) V over every cached token
    /// (`packkv_attn_decode`). CPU cache only. `out`: `[n_seqs][n_q_heads][head_dim]`;
    /// `lse` (optional): `[n_seqs][n_q_heads]` log-sum-exp. Empty sequences give zeros and
    /// lse = -inf. Errors: `INVALID_ARGUMENT` for a bad scale, ids or n_q_heads.
    pub fn decode<T: Element>(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        q: &[T],
        scale: f32,
        out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<()> {
        let (n_seqs, rows) = self.check_q("decode", seq_ids, n_q_heads, q)?;
        let want = mul(rows, self.params.head_dim as usize)?;
        if out.len() != want {
            return Err(Error::invalid(format!(
                "decode: out has {} elements, expected n_seqs * n_q_heads * head_dim = {want}",
                out.len()
            )));
        }
        if let Some(l) = &lse {
            if l.len() != rows {
                return Err(Error::invalid(format!(
                    "decode: lse has {} elements, expected n_seqs * n_q_heads = {rows}",
                    l.len()
                )));
            }
        }
        let mut ws = self.host_workspace(n_seqs, n_q_heads)?;
        let lse_ptr = lse.map_or(ptr::null_mut(), |l| l.as_mut_ptr());
        // SAFETY: host slices of checked lengths, not retained.
        check(unsafe {
            sys::packkv_attn_decode(
                self.raw.as_ptr(),
                n_seqs,
                seq_ids.as_ptr(),
                n_q_heads,
                q.as_ptr().cast(),
                T::DTYPE.0,
                scale,
                out.as_mut_ptr(),
                lse_ptr,
                if ws.is_empty() { ptr::null_mut() } else { ws.as_mut_ptr().cast() },
                ws.len(),
                ptr::null_mut(),
            )
        })
    }

    /// `packkv_attn_decode` on device memory.
    ///
    /// # Safety
    /// As [`Cache::scores_device`], with `out` (`n_seqs*n_q_heads*head_dim` f32) and `lse`
    /// (NULL or `n_seqs*n_q_heads` f32) in the cache's device memory.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decode_device(
        &self,
        seq_ids: &[i32],
        n_q_heads: i32,
        q: DevicePtr,
        q_dtype: DType,
        scale: f32,
        out: DevicePtr,
        lse: DevicePtr,
        workspace: DevicePtr,
        workspace_bytes: usize,
        stream: StreamRef,
    ) -> Result<()> {
        let n_seqs = to_i32(seq_ids.len(), "number of sequences")?;
        check(sys::packkv_attn_decode(
            self.raw.as_ptr(),
            n_seqs,
            seq_ids.as_ptr(),
            n_q_heads,
            q.as_const(),
            q_dtype.0,
            scale,
            out.as_mut().cast(),
            lse.as_mut().cast(),
            workspace.as_mut(),
            workspace_bytes,
            stream.raw(),
        ))
    }
}
