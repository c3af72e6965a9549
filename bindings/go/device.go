package packkv

import "unsafe"

// DevicePtr is an address in CUDA device memory (from cudaMalloc, a framework tensor, ...).
// It is converted to a pointer inside C, so Go code never turns it into an unsafe.Pointer.
type DevicePtr uintptr

// Stream is a cudaStream_t value; 0 is the legacy default stream. Ignored by a CPU cache.
type Stream uintptr

// DType is a packkv_dtype_t: the element type of K/V or queries.
type DType int32

// Element types.
const (
	DTypeF16  DType = 0
	DTypeBF16 DType = 1
	DTypeF32  DType = 2
)

// Repack is a packkv_repack_t: token repacking inside a block.
type Repack int32

// Repacking modes.
const (
	RepackNone   Repack = 0 // tokens keep their order
	RepackMedian Repack = 1 // sort tokens by the median of their V integers
	RepackGreedy Repack = 2 // greedy pack formation minimizing encode length
)

// ScaleGranularity is a packkv_scale_granularity_t.
type ScaleGranularity int32

// Granularities of the quantization zero point and scale.
const (
	ScalePerToken     ScaleGranularity = 0 // one (z, s) per token across all KV heads
	ScalePerTokenHead ScaleGranularity = 1 // one (z, s) per token and KV head
)

// ZsFormat is a packkv_zs_format_t: storage of the per-token zero points and scales.
type ZsFormat int32

// Zero point and scale encodings.
const (
	ZsCompact ZsFormat = 0 // int16 zero point, 16-bit scale (the default; the error bound holds)
	ZsWide    ZsFormat = 1 // int32 zero point, fp32 scale
)

// KTransform is a packkv_k_transform_t: a transform of K applied inside the library.
type KTransform int32

// K transforms.
const (
	KTransformNone   KTransform = 0 // none (the default)
	KTransformCenter KTransform = 1 // per-channel centring by the mean of each sequence's first block (F16 KVDType)
)

// Host is a slice in host memory with its element type: F32, F16 or BF16.
type Host interface {
	dtype() DType
	length() int
	ptr() unsafe.Pointer // nil for an empty slice
}

// F32 is float32 host data.
type F32 []float32

// F16 is IEEE binary16 host data (the bits of each value).
type F16 []uint16

// BF16 is bfloat16 host data (the bits of each value).
type BF16 []uint16

func (s F32) dtype() DType  { return DTypeF32 }
func (s F16) dtype() DType  { return DTypeF16 }
func (s BF16) dtype() DType { return DTypeBF16 }
func (s F32) length() int   { return len(s) }
func (s F16) length() int   { return len(s) }
func (s BF16) length() int  { return len(s) }

func (s F32) ptr() unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func (s F16) ptr() unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func (s BF16) ptr() unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}
