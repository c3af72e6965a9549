//! Element types, enum newtypes, device pointers and streams.
use core::ffi::c_void;

use packkv_sys as sys;

/// Element dtype of K/V or query arrays (`packkv_dtype_t`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DType(pub i32);

impl DType {
    /// IEEE binary16.
    pub const F16: DType = DType(sys::PACKKV_DTYPE_F16);
    /// bfloat16.
    pub const BF16: DType = DType(sys::PACKKV_DTYPE_BF16);
    /// IEEE binary32.
    pub const F32: DType = DType(sys::PACKKV_DTYPE_F32);
}

/// Token repacking inside a block (`packkv_repack_t`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Repack(pub i32);

impl Repack {
    /// Tokens keep their order.
    pub const NONE: Repack = Repack(sys::PACKKV_REPACK_NONE);
    /// Sort tokens by the median of their V integers.
    pub const MEDIAN: Repack = Repack(sys::PACKKV_REPACK_MEDIAN);
    /// Greedy pack formation minimizing encode length.
    pub const GREEDY: Repack = Repack(sys::PACKKV_REPACK_GREEDY);
}

/// Granularity of the zero point and scale (`packkv_scale_granularity_t`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ScaleGranularity(pub i32);

impl ScaleGranularity {
    /// One (z, s) per token across all KV heads.
    pub const PER_TOKEN: ScaleGranularity = ScaleGranularity(sys::PACKKV_SCALE_PER_TOKEN);
    /// One (z, s) per token and KV head.
    pub const PER_TOKEN_HEAD: ScaleGranularity = ScaleGranularity(sys::PACKKV_SCALE_PER_TOKEN_HEAD);
}

/// Storage of the per-token zero points and scales (`packkv_zs_format_t`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ZsFormat(pub i32);

impl ZsFormat {
    /// int16 zero point and 16-bit scale (the default; the error bound still holds).
    pub const COMPACT: ZsFormat = ZsFormat(sys::PACKKV_ZS_COMPACT);
    /// int32 zero point and fp32 scale.
    pub const WIDE: ZsFormat = ZsFormat(sys::PACKKV_ZS_WIDE);
}

/// Transform of K applied inside the library (`packkv_k_transform_t`); callers pass plain K
/// and q either way.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KTransform(pub i32);

impl KTransform {
    /// None (the default).
    pub const NONE: KTransform = KTransform(sys::PACKKV_K_TRANSFORM_NONE);
    /// Per-channel centring by the mean of K over each sequence's first block (F16 kv_dtype).
    pub const CENTER: KTransform = KTransform(sys::PACKKV_K_TRANSFORM_CENTER);
}

/// IEEE 754 binary16 value stored as its bits (Rust has no stable `f16`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct F16(pub u16);

/// bfloat16 value stored as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Bf16(pub u16);

impl F16 {
    /// Rounds to nearest even; overflow gives infinity, NaN stays NaN.
    pub fn from_f32(x: f32) -> F16 {
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32;
        let man = b & 0x7f_ffff;
        if exp == 0xff {
            let nan = if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
            return F16(sign | 0x7c00 | nan);
        }
        let e = exp - 127 + 15;
        if e >= 0x1f {
            return F16(sign | 0x7c00);
        }
        if e <= 0 {
            if e < -10 {
                return F16(sign);
            }
            let m = man | 0x80_0000;
            let shift = (14 - e) as u32;
            let half = 1u32 << (shift - 1);
            let mut r = m >> shift;
            let rem = m & ((1u32 << shift) - 1);
            if rem > half || (rem == half && r & 1 == 1) {
                r += 1;
            }
            return F16(sign | r as u16);
        }
        let mut r = ((e as u32) << 10) | (man >> 13);
        let rem = man & 0x1fff;
        if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
            r += 1; // a carry into the exponent is the correct rounding (up to infinity)
        }
        F16(sign | r as u16)
    }

    /// Exact conversion to f32.
    pub fn to_f32(self) -> f32 {
        let h = self.0 as u32;
        let sign = (h & 0x8000) << 16;
        let exp = (h >> 10) & 0x1f;
        let man = h & 0x3ff;
        let bits = match exp {
            0 if man == 0 => sign,
            0 => {
                let v = man as f32 * (1.0 / 16_777_216.0); // man * 2^-24
                return if sign != 0 { -v } else { v };
            }
            0x1f => sign | 0x7f80_0000 | (man << 13),
            _ => sign | ((exp + 112) << 23) | (man << 13),
        };
        f32::from_bits(bits)
    }
}

impl Bf16 {
    /// Rounds to nearest even; NaN stays NaN.
    pub fn from_f32(x: f32) -> Bf16 {
        let b = x.to_bits();
        if x.is_nan() {
            return Bf16(((b >> 16) | 0x40) as u16);
        }
        Bf16(((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16)
    }

    /// Exact conversion to f32.
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::Bf16 {}
}

/// Element types accepted for K, V and queries in host memory: `f32`, [`F16`], [`Bf16`].
pub trait Element: sealed::Sealed + Copy {
    /// The matching `packkv_dtype_t`.
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for F16 {
    const DTYPE: DType = DType::F16;
}
impl Element for Bf16 {
    const DTYPE: DType = DType::BF16;
}

/// An address in CUDA device memory (e.g. from `cudaMalloc` or a framework tensor). Only
/// meaningful to the `*_device` methods of a CUDA cache; `DevicePtr::NULL` for "none".
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The NULL device pointer.
    pub const NULL: DevicePtr = DevicePtr(0);

    pub(crate) fn as_const(self) -> *const c_void {
        self.0 as usize as *const c_void
    }

    pub(crate) fn as_mut(self) -> *mut c_void {
        self.0 as usize as *mut c_void
    }
}

/// A CUDA stream (`cudaStream_t`), borrowed: the caller keeps it alive. `StreamRef::DEFAULT`
/// is the legacy default stream (NULL). Ignored by a CPU cache.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StreamRef(pub *mut c_void);

impl StreamRef {
    /// The legacy default stream (NULL).
    pub const DEFAULT: StreamRef = StreamRef(core::ptr::null_mut());

    pub(crate) fn raw(self) -> sys::packkv_stream_t {
        self.0.cast()
    }
}

impl Default for StreamRef {
    fn default() -> Self {
        StreamRef::DEFAULT
    }
}
