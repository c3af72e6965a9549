//! Cache parameters and memory statistics.
use core::mem::{size_of, MaybeUninit};

use packkv_sys as sys;

use crate::error::{check, Result};
use crate::types::{DType, KTransform, Repack, ScaleGranularity, ZsFormat};

/// Creation-time configuration of a [`Cache`](crate::Cache) (`packkv_cache_params_t`).
///
/// Start from [`Params::default()`] (the library's defaults, `packkv_cache_params_init`) and
/// set the fields you need; new fields may be added in later versions (hence
/// `#[non_exhaustive]`).
#[derive(Clone, Copy, PartialEq, Debug)]
#[non_exhaustive]
pub struct Params {
    /// -1: CPU backend (default); >= 0: CUDA device ordinal.
    pub device: i32,
    /// KV heads per token, >= 1.
    pub n_kv_heads: i32,
    /// Channels per head: a multiple of 16 in [32, 256].
    pub head_dim: i32,
    /// Sequence ids are 0 .. max_seqs-1.
    pub max_seqs: i32,
    /// Dtype of the uncompressed residual window.
    pub kv_dtype: DType,
    /// Capacity of one sequence in tokens.
    pub max_tokens_per_seq: i64,
    /// Relative scale r of K: |k - k^| <= r * range / 2.
    pub rel_scale_k: f32,
    /// Relative scale r of V.
    pub rel_scale_v: f32,
    /// K code width 1..8; 0 derives it from rel_scale_k.
    pub bits_k: i32,
    /// V code width 1..8; 0 derives it from rel_scale_v.
    pub bits_v: i32,
    /// Token repacking inside a block.
    pub repack: Repack,
    /// Granularity of the quantization zero point and scale.
    pub scale_granularity: ScaleGranularity,
    /// Tokens compressed together: a multiple of 16 in [16, 256].
    pub block_tokens: i32,
    /// Tokens kept uncompressed after a flush.
    pub residual_tokens: i32,
    /// The first tokens of every sequence, kept exact in kv_dtype (attention sinks).
    pub sink_tokens: i32,
    /// Storage of the per-token zero points and scales.
    pub zs_format: ZsFormat,
    /// Transform of K inside the library.
    pub k_transform: KTransform,
    /// CPU cache: threads one call may use, the calling thread included (0: the CPUs this
    /// process may run on, at most 64; 1: the calling thread only). Results do not depend on it.
    pub n_threads: i32,
}

impl Params {
    /// The library's defaults (`packkv_cache_params_init`).
    pub fn try_default() -> Result<Params> {
        let mut raw = MaybeUninit::<sys::packkv_cache_params_t>::zeroed();
        // SAFETY: raw is valid for size_of bytes; the library writes at most that many.
        check(unsafe {
            sys::packkv_cache_params_init(raw.as_mut_ptr(), size_of::<sys::packkv_cache_params_t>())
        })?;
        // SAFETY: zero-initialised plain-old-data, filled by the library.
        Ok(Params::from_raw(unsafe { &raw.assume_init() }))
    }

    pub(crate) fn from_raw(p: &sys::packkv_cache_params_t) -> Params {
        Params {
            device: p.device,
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            max_seqs: p.max_seqs,
            kv_dtype: DType(p.kv_dtype),
            max_tokens_per_seq: p.max_tokens_per_seq,
            rel_scale_k: p.rel_scale_k,
            rel_scale_v: p.rel_scale_v,
            bits_k: p.bits_k,
            bits_v: p.bits_v,
            repack: Repack(p.repack),
            scale_granularity: ScaleGranularity(p.scale_granularity),
            block_tokens: p.block_tokens,
            residual_tokens: p.residual_tokens,
            sink_tokens: p.sink_tokens,
            zs_format: ZsFormat(p.zs_format),
            k_transform: KTransform(p.k_transform),
            n_threads: p.n_threads,
        }
    }

    /// The C struct, initialised by the library first so that fields this crate does not
    /// know keep their defaults.
    pub(crate) fn to_raw(&self) -> Result<sys::packkv_cache_params_t> {
        let mut raw = MaybeUninit::<sys::packkv_cache_params_t>::zeroed();
        // SAFETY: as in try_default.
        check(unsafe {
            sys::packkv_cache_params_init(raw.as_mut_ptr(), size_of::<sys::packkv_cache_params_t>())
        })?;
        // SAFETY: initialised above.
        let mut p = unsafe { raw.assume_init() };
        p.device = self.device;
        p.n_kv_heads = self.n_kv_heads;
        p.head_dim = self.head_dim;
        p.max_seqs = self.max_seqs;
        p.kv_dtype = self.kv_dtype.0;
        p.max_tokens_per_seq = self.max_tokens_per_seq;
        p.rel_scale_k = self.rel_scale_k;
        p.rel_scale_v = self.rel_scale_v;
        p.bits_k = self.bits_k;
        p.bits_v = self.bits_v;
        p.repack = self.repack.0;
        p.scale_granularity = self.scale_granularity.0;
        p.block_tokens = self.block_tokens;
        p.residual_tokens = self.residual_tokens;
        p.sink_tokens = self.sink_tokens;
        p.zs_format = self.zs_format.0;
        p.k_transform = self.k_transform.0;
        p.n_threads = self.n_threads;
        Ok(p)
    }
}

impl Default for Params {
    /// The library's defaults. Panics only if the loaded library rejects this crate's struct
    /// size, i.e. it is older than the header these bindings were generated from.
    fn default() -> Params {
        Params::try_default().expect("packkv_cache_params_init rejected this binding's struct")
    }
}

/// Memory accounting of a cache or one sequence (`packkv_cache_stats_t`). Every byte stored
/// for the tokens is counted in exactly one of the `*_bytes` "used" fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens held (compressed + residual).
    pub n_tokens: i64,
    /// Tokens in compressed blocks.
    pub n_compressed_tokens: i64,
    /// Tokens in residual windows.
    pub n_residual_tokens: i64,
    /// Compressed blocks.
    pub n_blocks: i64,
    /// K tiles: pack minimums, encode lengths, payload.
    pub k_tile_bytes: i64,
    /// V tiles.
    pub v_tile_bytes: i64,
    /// K zero points and scales.
    pub k_scale_bytes: i64,
    /// V zero points and scales.
    pub v_scale_bytes: i64,
    /// Block index and per-block tile offsets.
    pub index_bytes: i64,
    /// Stored repacking permutations.
    pub perm_bytes: i64,
    /// Sum of the six fields above.
    pub compressed_bytes_used: i64,
    /// Bytes allocated for compressed data (>= used).
    pub compressed_bytes_reserved: i64,
    /// K and V of residual-window tokens, in kv_dtype.
    pub residual_bytes: i64,
    /// What K and V of all tokens would take in fp16.
    pub fp16_bytes: i64,
}

impl Stats {
    pub(crate) fn from_raw(s: &sys::packkv_cache_stats_t) -> Stats {
        Stats {
            n_tokens: s.n_tokens,
            n_compressed_tokens: s.n_compressed_tokens,
            n_residual_tokens: s.n_residual_tokens,
            n_blocks: s.n_blocks,
            k_tile_bytes: s.k_tile_bytes,
            v_tile_bytes: s.v_tile_bytes,
            k_scale_bytes: s.k_scale_bytes,
            v_scale_bytes: s.v_scale_bytes,
            index_bytes: s.index_bytes,
            perm_bytes: s.perm_bytes,
            compressed_bytes_used: s.compressed_bytes_used,
            compressed_bytes_reserved: s.compressed_bytes_reserved,
            residual_bytes: s.residual_bytes,
            fp16_bytes: s.fp16_bytes,
        }
    }

    /// The all-in size: compressed_bytes_used + residual_bytes.
    pub fn all_in_bytes(&self) -> i64 {
        self.compressed_bytes_used + self.residual_bytes
    }

    /// Compression ratio fp16_bytes / all_in_bytes (0.0 for an empty cache).
    pub fn ratio(&self) -> f64 {
        let all_in = self.all_in_bytes();
        if all_in > 0 {
            self.fp16_bytes as f64 / all_in as f64
        } else {
            0.0
        }
    }
}
