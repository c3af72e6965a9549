package packkv

// #include "shims.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Params is the creation-time configuration of a Cache (packkv_cache_params_t). Start from
// DefaultParams() and set what you need.
type Params struct {
	Device           int32            // -1: CPU backend; >= 0: CUDA device ordinal
	NKVHeads         int32            // KV heads per token, >= 1
	HeadDim          int32            // channels per head: a multiple of 16 in [32, 256]
	MaxSeqs          int32            // sequence ids are 0 .. MaxSeqs-1
	KVDType          DType            // dtype of the uncompressed residual window
	MaxTokensPerSeq  int64            // capacity of one sequence in tokens
	RelScaleK        float32          // relative scale r of K: |k - k^| <= r * range / 2
	RelScaleV        float32          // relative scale r of V
	BitsK            int32            // K code width 1..8; 0 derives it from RelScaleK
	BitsV            int32            // V code width 1..8; 0 derives it from RelScaleV
	Repack           Repack           // token repacking inside a block
	ScaleGranularity ScaleGranularity // granularity of the zero point and scale
	BlockTokens      int32            // tokens compressed together: multiple of 16 in [16, 256]
	ResidualTokens   int32            // tokens kept uncompressed after a flush
	SinkTokens       int32            // first tokens of every sequence, kept exact in KVDType
	ZsFormat         ZsFormat         // storage of the per-token zero points and scales
	KTransform       KTransform       // transform of K inside the library (callers pass plain K, q)
	NThreads         int32            // CPU: threads per call incl. the caller's; 0: all CPUs (<= 64); 1: caller only
}

// Stats is the memory accounting of a cache or one sequence (packkv_cache_stats_t).
type Stats struct {
	NTokens                 int64 // tokens held (compressed + residual)
	NCompressedTokens       int64 // tokens in compressed blocks
	NResidualTokens         int64 // tokens in residual windows
	NBlocks                 int64 // compressed blocks
	KTileBytes              int64 // K tiles: pack minimums, encode lengths, payload
	VTileBytes              int64 // V tiles
	KScaleBytes             int64 // K zero points and scales
	VScaleBytes             int64 // V zero points and scales
	IndexBytes              int64 // block index and per-block tile offsets
	PermBytes               int64 // stored repacking permutations
	CompressedBytesUsed     int64 // sum of the six fields above
	CompressedBytesReserved int64 // bytes allocated for compressed data (>= used)
	ResidualBytes           int64 // K and V of residual-window tokens, in KVDType
	FP16Bytes               int64 // what K and V of all tokens would take in fp16
}

// AllInBytes is every byte stored for the tokens: CompressedBytesUsed + ResidualBytes.
func (s Stats) AllInBytes() int64 { return s.CompressedBytesUsed + s.ResidualBytes }

// Ratio is the compression ratio FP16Bytes / AllInBytes (0 for an empty cache).
func (s Stats) Ratio() float64 {
	if s.AllInBytes() == 0 {
		return 0
	}
	return float64(s.FP16Bytes) / float64(s.AllInBytes())
}

func paramsFromC(p *C.packkv_cache_params_t) Params {
	return Params{
		Device: int32(p.device), NKVHeads: int32(p.n_kv_heads), HeadDim: int32(p.head_dim),
		MaxSeqs: int32(p.max_seqs), KVDType: DType(p.kv_dtype),
		MaxTokensPerSeq: int64(p.max_tokens_per_seq),
		RelScaleK:       float32(p.rel_scale_k), RelScaleV: float32(p.rel_scale_v),
		BitsK: int32(p.bits_k), BitsV: int32(p.bits_v), Repack: Repack(p.repack),
		ScaleGranularity: ScaleGranularity(p.scale_granularity),
		BlockTokens:      int32(p.block_tokens), ResidualTokens: int32(p.residual_tokens),
		SinkTokens: int32(p.sink_tokens), ZsFormat: ZsFormat(p.zs_format),
		KTransform: KTransform(p.k_transform),
		NThreads:   int32(p.n_threads),
	}
}

// toC fills a C struct initialised by the library (fields this package does not know keep
// their defaults) with p.
func (p Params) toC(c *C.packkv_cache_params_t) error {
	var e errBuf
	if err := e.result(C.pkgo_params_init(c, C.size_t(unsafe.Sizeof(*c)), e.ptr(), errBufSize)); err != nil {
		return err
	}
	c.device, c.n_kv_heads, c.head_dim = C.int32_t(p.Device), C.int32_t(p.NKVHeads), C.int32_t(p.HeadDim)
	c.max_seqs, c.kv_dtype = C.int32_t(p.MaxSeqs), C.packkv_dtype_t(p.KVDType)
	c.max_tokens_per_seq = C.int64_t(p.MaxTokensPerSeq)
	c.rel_scale_k, c.rel_scale_v = C.float(p.RelScaleK), C.float(p.RelScaleV)
	c.bits_k, c.bits_v = C.int32_t(p.BitsK), C.int32_t(p.BitsV)
	c.repack, c.scale_granularity = C.packkv_repack_t(p.Repack), C.packkv_scale_granularity_t(p.ScaleGranularity)
	c.block_tokens, c.residual_tokens = C.int32_t(p.BlockTokens), C.int32_t(p.ResidualTokens)
	c.sink_tokens = C.int32_t(p.SinkTokens)
	c.zs_format, c.k_transform = C.packkv_zs_format_t(p.ZsFormat), C.packkv_k_transform_t(p.KTransform)
	c.n_threads = C.int32_t(p.NThreads)
	return nil
}

// DefaultParams returns the library's defaults (packkv_cache_params_init).
func DefaultParams() (Params, error) {
	var c C.packkv_cache_params_t
	var e errBuf
	if err := e.result(C.pkgo_params_init(&c, C.size_t(unsafe.Sizeof(c)), e.ptr(), errBufSize)); err != nil {
		return Params{}, err
	}
	return paramsFromC(&c), nil
}

// Cache is a compressed KV cache of one attention layer (packkv_cache_t). Create it with
// New and free it with Close; a finalizer closes a cache that becomes unreachable, as a
// safety net only.
//
// Host-slice methods (Append, Scores, Apply, Decode, Decompress) are for a CPU cache
// (Params.Device == -1) and check every slice length before calling C. The *Device variants
// take device addresses for a CUDA cache; the caller guarantees their sizes and validity in
// stream order. Shapes (row-major): K/V [sum(nTokens)][NKVHeads][HeadDim], queries
// [nSeqs][nQHeads][HeadDim], scores/probs [nSeqs][nQHeads][ld], outputs
// [nSeqs][nQHeads][HeadDim], lse [nSeqs][nQHeads]; nQHeads is a positive multiple of
// NKVHeads (GQA).
type Cache struct {
	mu     sync.RWMutex
	p      *C.packkv_cache_t
	params Params
	device int32
}

// New creates a cache (packkv_cache_create). Errors: ErrInvalidArgument for an
// out-of-range field (the message names it), ErrNotSupported for Device >= 0 without the
// CUDA backend or device, ErrOutOfHostMemory.
func New(p Params) (*Cache, error) {
	var cp C.packkv_cache_params_t
	if err := p.toC(&cp); err != nil {
		return nil, err
	}
	var e errBuf
	var raw *C.packkv_cache_t
	if err := e.result(C.pkgo_create(&cp, &raw, e.ptr(), errBufSize)); err != nil {
		return nil, err
	}
	return wrapCache(raw)
}

// wrapCache owns a new handle: finalizer, effective params and device.
func wrapCache(raw *C.packkv_cache_t) (*Cache, error) {
	c := &Cache{p: raw}
	runtime.SetFinalizer(c, func(c *Cache) { _ = c.Close() })
	eff, err := c.GetParams()
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	dev, err := c.GetDevice()
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	c.params, c.device = eff, dev
	return c, nil
}

// Close frees the cache (packkv_cache_destroy, which waits for the cache's pending device
// work). It waits for calls in progress on other goroutines, is idempotent, and cancels
// the finalizer. Later calls on the cache return ErrInvalidState.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p != nil {
		C.packkv_cache_destroy(c.p)
		c.p = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Params returns the effective parameters read at creation (derived bit widths filled in).
func (c *Cache) Params() Params { return c.params }

// Device returns -1 for a CPU cache, else the CUDA device ordinal.
func (c *Cache) Device() int32 { return c.device }

var errClosed = &Error{Code: StatusInvalidState, Msg: "packkv: the cache is closed"}

// read / write take the shared or exclusive lock and return the handle, or errClosed.
func (c *Cache) read() (*C.packkv_cache_t, error) {
	c.mu.RLock()
	if c.p == nil {
		c.mu.RUnlock()
		return nil, errClosed
	}
	return c.p, nil
}

func (c *Cache) write() (*C.packkv_cache_t, error) {
	c.mu.Lock()
	if c.p == nil {
		c.mu.Unlock()
		return nil, errClosed
	}
	return c.p, nil
}

// GetParams re-reads the effective parameters (packkv_cache_get_params).
func (c *Cache) GetParams() (Params, error) {
	p, err := c.read()
	if err != nil {
		return Params{}, err
	}
	defer c.mu.RUnlock()
	var cp C.packkv_cache_params_t
	cp.struct_size = C.uint32_t(unsafe.Sizeof(cp))
	var e errBuf
	if err := e.result(C.pkgo_get_params(p, &cp, e.ptr(), errBufSize)); err != nil {
		return Params{}, err
	}
	return paramsFromC(&cp), nil
}

// GetDevice queries the device ordinal (packkv_cache_device).
func (c *Cache) GetDevice() (int32, error) {
	p, err := c.read()
	if err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	var d C.int32_t
	var e errBuf
	err = e.result(C.pkgo_device(p, &d, e.ptr(), errBufSize))
	return int32(d), err
}

func (c *Cache) hostOnly(what string) error {
	if c.device >= 0 {
		return invalidArg("packkv: %s: host slices given to a cache on CUDA device %d; use %sDevice", what, c.device, what)
	}
	return nil
}

func ids(seqIDs []int32) (*C.int32_t, C.int32_t) {
	if len(seqIDs) == 0 {
		return nil, 0
	}
	return (*C.int32_t)(unsafe.Pointer(&seqIDs[0])), C.int32_t(len(seqIDs))
}

func f32ptr(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

// Append appends tokens to one or more sequences and compresses the blocks the flush
// policy releases (packkv_cache_append). seqIDs: distinct ids; nTokens[i]: new tokens of
// seqIDs[i]; k, v: [sum(nTokens)][NKVHeads][HeadDim] of one element type. Errors:
// ErrInvalidArgument (lengths, ids, non-finite values: nothing is appended),
// ErrCapacityExceeded, ErrOutOfHostMemory.
func (c *Cache) Append(seqIDs, nTokens []int32, k, v Host) error {
	if err := c.hostOnly("Append"); err != nil {
		return err
	}
	if len(seqIDs) != len(nTokens) || len(seqIDs) == 0 {
		return invalidArg("packkv: Append: need one nTokens entry per seq id (and at least one), got %d seqIDs and %d nTokens",
			len(seqIDs), len(nTokens))
	}
	total := 0
	for _, n := range nTokens {
		if n < 0 {
			return invalidArg("packkv: Append: nTokens must be >= 0, got %d", n)
		}
		total += int(n)
	}
	want := total * int(c.params.NKVHeads) * int(c.params.HeadDim)
	if k.length() != want || v.length() != want {
		return invalidArg("packkv: Append: k has %d and v %d elements, expected sum(nTokens)*NKVHeads*HeadDim = %d",
			k.length(), v.length(), want)
	}
	if k.dtype() != v.dtype() {
		return invalidArg("packkv: Append: k and v have different element types")
	}
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	idp, n := ids(seqIDs)
	var e errBuf
	var needed C.int64_t
	st := C.pkgo_append(p, n, idp, (*C.int32_t)(unsafe.Pointer(&nTokens[0])), k.ptr(), 0, v.ptr(), 0,
		C.packkv_dtype_t(k.dtype()), 0, &needed, e.ptr(), errBufSize)
	runtime.KeepAlive(k)
	runtime.KeepAlive(v)
	return withNeeded(e.result(st), needed)
}

// AppendDevice is Append for a CUDA cache: k and v are device addresses of
// sum(nTokens)*NKVHeads*HeadDim elements of dtype, read in stream order on stream.
// Non-finite values are reported by the next synchronizing call (Sync).
func (c *Cache) AppendDevice(seqIDs, nTokens []int32, k, v DevicePtr, dtype DType, stream Stream) error {
	if len(seqIDs) != len(nTokens) || len(seqIDs) == 0 {
		return invalidArg("packkv: AppendDevice: need one nTokens entry per seq id (and at least one)")
	}
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	idp, n := ids(seqIDs)
	var e errBuf
	var needed C.int64_t
	st := C.pkgo_append(p, n, idp, (*C.int32_t)(unsafe.Pointer(&nTokens[0])), nil, C.uintptr_t(k),
		nil, C.uintptr_t(v), C.packkv_dtype_t(dtype), C.uintptr_t(stream), &needed, e.ptr(), errBufSize)
	return withNeeded(e.result(st), needed)
}

// RemoveSeq removes every token of one sequence (packkv_cache_remove_seq).
func (c *Cache) RemoveSeq(seqID int32) error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_remove_seq(p, C.int32_t(seqID), e.ptr(), errBufSize))
}

// Reset removes every token of every sequence (packkv_cache_reset).
func (c *Cache) Reset() error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_reset(p, e.ptr(), errBufSize))
}

// SeqLength returns the tokens held for one sequence (packkv_cache_seq_length).
func (c *Cache) SeqLength(seqID int32) (int64, error) {
	p, err := c.read()
	if err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	var n C.int64_t
	var e errBuf
	err = e.result(C.pkgo_seq_length(p, C.int32_t(seqID), &n, e.ptr(), errBufSize))
	return int64(n), err
}

// Stats returns the memory accounting of one sequence, or of all with seqID -1
// (packkv_cache_stats).
func (c *Cache) Stats(seqID int32) (Stats, error) {
	p, err := c.read()
	if err != nil {
		return Stats{}, err
	}
	defer c.mu.RUnlock()
	var s C.packkv_cache_stats_t
	var e errBuf
	if err := e.result(C.pkgo_stats(p, C.int32_t(seqID), &s, e.ptr(), errBufSize)); err != nil {
		return Stats{}, err
	}
	return Stats{
		NTokens: int64(s.n_tokens), NCompressedTokens: int64(s.n_compressed_tokens),
		NResidualTokens: int64(s.n_residual_tokens), NBlocks: int64(s.n_blocks),
		KTileBytes: int64(s.k_tile_bytes), VTileBytes: int64(s.v_tile_bytes),
		KScaleBytes: int64(s.k_scale_bytes), VScaleBytes: int64(s.v_scale_bytes),
		IndexBytes: int64(s.index_bytes), PermBytes: int64(s.perm_bytes),
		CompressedBytesUsed:     int64(s.compressed_bytes_used),
		CompressedBytesReserved: int64(s.compressed_bytes_reserved),
		ResidualBytes:           int64(s.residual_bytes), FP16Bytes: int64(s.fp16_bytes),
	}, nil
}

// Decompress reconstructs K and/or V (either may be nil) of one sequence in original token
// order as float32 [n][NKVHeads][HeadDim] (packkv_cache_decompress) and returns n. The
// capacity is the (shorter) slice length divided by NKVHeads*HeadDim. Errors:
// ErrCapacityExceeded if the sequence holds more tokens (nothing written).
func (c *Cache) Decompress(seqID int32, kOut, vOut []float32) (int64, error) {
	if err := c.hostOnly("Decompress"); err != nil {
		return 0, err
	}
	row := int(c.params.NKVHeads) * int(c.params.HeadDim)
	capacity := -1
	for _, s := range [][]float32{kOut, vOut} {
		if s != nil && (capacity < 0 || len(s)/row < capacity) {
			capacity = len(s) / row
		}
	}
	if capacity < 0 {
		capacity = 0
	}
	p, err := c.read()
	if err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	var e errBuf
	st := C.pkgo_decompress(p, C.int32_t(seqID), f32ptr(kOut), 0, f32ptr(vOut), 0, C.int64_t(capacity), 0,
		e.ptr(), errBufSize)
	if err := e.result(st); err != nil {
		return 0, err
	}
	var n C.int64_t
	err = e.result(C.pkgo_seq_length(p, C.int32_t(seqID), &n, e.ptr(), errBufSize))
	return int64(n), err
}

// DecompressDevice is Decompress into device memory: kOut / vOut (either may be 0) hold
// capacityTokens*NKVHeads*HeadDim float32 on the cache's device.
func (c *Cache) DecompressDevice(seqID int32, kOut, vOut DevicePtr, capacityTokens int64, stream Stream) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	var e errBuf
	return e.result(C.pkgo_decompress(p, C.int32_t(seqID), nil, C.uintptr_t(kOut), nil, C.uintptr_t(vOut),
		C.int64_t(capacityTokens), C.uintptr_t(stream), e.ptr(), errBufSize))
}

// Sync waits for the cache's pending device work and reports asynchronous errors
// (packkv_cache_sync); always nil for a CPU cache.
func (c *Cache) Sync() error {
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	var e errBuf
	return e.result(C.pkgo_sync(p, e.ptr(), errBufSize))
}

// WorkspaceSize returns the scratch bytes an attention call with these sizes needs
// (packkv_attn_workspace_size). The host methods allocate it themselves.
func (c *Cache) WorkspaceSize(nSeqs, nQHeads int32) (uint64, error) {
	p, err := c.read()
	if err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	return workspaceSize(p, nSeqs, nQHeads)
}

func workspaceSize(p *C.packkv_cache_t, nSeqs, nQHeads int32) (uint64, error) {
	var b C.size_t
	var e errBuf
	err := e.result(C.pkgo_workspace_size(p, C.int32_t(nSeqs), C.int32_t(nQHeads), &b, e.ptr(), errBufSize))
	return uint64(b), err
}

func (c *Cache) checkQ(what string, seqIDs []int32, nQHeads int32, q Host) (rows int, err error) {
	if err := c.hostOnly(what); err != nil {
		return 0, err
	}
	if len(seqIDs) == 0 || nQHeads < 1 {
		return 0, invalidArg("packkv: %s: need at least one seq id and nQHeads >= 1 (got %d)", what, nQHeads)
	}
	rows = len(seqIDs) * int(nQHeads)
	if want := rows * int(c.params.HeadDim); q.length() != want {
		return 0, invalidArg("packkv: %s: q has %d elements, expected nSeqs*nQHeads*HeadDim = %d", what, q.length(), want)
	}
	return rows, nil
}

// hostWorkspace allocates the scratch of a host call in Go memory (passed to C for the
// call only). Sizes that packkv_attn_workspace_size rejects give no workspace: the attention
// call itself then reports the error, under its own name.
func hostWorkspace(p *C.packkv_cache_t, nSeqs, nQHeads int32) (unsafe.Pointer, C.size_t, []byte, error) {
	n, err := workspaceSize(p, nSeqs, nQHeads)
	if err != nil || n == 0 {
		return nil, 0, nil, nil
	}
	ws := make([]byte, n)
	return unsafe.Pointer(&ws[0]), C.size_t(n), ws, nil
}

// Scores computes raw scores q . k for every cached token, no softmax scale
// (packkv_attn_scores). scores: [nSeqs][nQHeads][ldScores], ldScores >= the longest
// requested sequence; entries past a sequence's length are left untouched.
func (c *Cache) Scores(seqIDs []int32, nQHeads int32, q Host, scores []float32, ldScores int64) error {
	rows, err := c.checkQ("Scores", seqIDs, nQHeads, q)
	if err != nil {
		return err
	}
	if ldScores < 0 || int64(len(scores)) < int64(rows)*ldScores {
		return invalidArg("packkv: Scores: scores has %d elements, needs nSeqs*nQHeads*ldScores = %d", len(scores), int64(rows)*ldScores)
	}
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	wsp, wsn, ws, err := hostWorkspace(p, int32(n), nQHeads)
	if err != nil {
		return err
	}
	var e errBuf
	st := C.pkgo_scores(p, n, idp, C.int32_t(nQHeads), q.ptr(), 0, C.packkv_dtype_t(q.dtype()), f32ptr(scores), 0,
		C.int64_t(ldScores), wsp, 0, wsn, 0, e.ptr(), errBufSize)
	runtime.KeepAlive(q)
	runtime.KeepAlive(ws)
	return e.result(st)
}

// ScoresDevice is Scores on device memory (q of qDType, scores float32, workspace of
// workspaceBytes >= WorkspaceSize; concurrent calls need distinct workspaces).
func (c *Cache) ScoresDevice(seqIDs []int32, nQHeads int32, q DevicePtr, qDType DType, scores DevicePtr,
	ldScores int64, workspace DevicePtr, workspaceBytes uint64, stream Stream) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	var e errBuf
	return e.result(C.pkgo_scores(p, n, idp, C.int32_t(nQHeads), nil, C.uintptr_t(q), C.packkv_dtype_t(qDType),
		nil, C.uintptr_t(scores), C.int64_t(ldScores), nil, C.uintptr_t(workspace), C.size_t(workspaceBytes),
		C.uintptr_t(stream), e.ptr(), errBufSize))
}

// Apply computes out = probs . V (packkv_attn_apply). probs: float32
// [nSeqs][nQHeads][ldProbs] in original token order (only the first SeqLength entries of
// each row are read); out: [nSeqs][nQHeads][HeadDim].
func (c *Cache) Apply(seqIDs []int32, nQHeads int32, probs []float32, ldProbs int64, out []float32) error {
	if err := c.hostOnly("Apply"); err != nil {
		return err
	}
	if len(seqIDs) == 0 || nQHeads < 1 {
		return invalidArg("packkv: Apply: need at least one seq id and nQHeads >= 1 (got %d)", nQHeads)
	}
	rows := len(seqIDs) * int(nQHeads)
	if ldProbs < 0 || int64(len(probs)) < int64(rows)*ldProbs {
		return invalidArg("packkv: Apply: probs has %d elements, needs nSeqs*nQHeads*ldProbs = %d", len(probs), int64(rows)*ldProbs)
	}
	if want := rows * int(c.params.HeadDim); len(out) != want {
		return invalidArg("packkv: Apply: out has %d elements, expected nSeqs*nQHeads*HeadDim = %d", len(out), want)
	}
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	wsp, wsn, ws, err := hostWorkspace(p, int32(n), nQHeads)
	if err != nil {
		return err
	}
	var e errBuf
	st := C.pkgo_apply(p, n, idp, C.int32_t(nQHeads), f32ptr(probs), 0, C.int64_t(ldProbs), f32ptr(out), 0,
		wsp, 0, wsn, 0, e.ptr(), errBufSize)
	runtime.KeepAlive(ws)
	return e.result(st)
}

// ApplyDevice is Apply on device memory.
func (c *Cache) ApplyDevice(seqIDs []int32, nQHeads int32, probs DevicePtr, ldProbs int64, out DevicePtr,
	workspace DevicePtr, workspaceBytes uint64, stream Stream) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	var e errBuf
	return e.result(C.pkgo_apply(p, n, idp, C.int32_t(nQHeads), nil, C.uintptr_t(probs), C.int64_t(ldProbs),
		nil, C.uintptr_t(out), nil, C.uintptr_t(workspace), C.size_t(workspaceBytes), C.uintptr_t(stream),
		e.ptr(), errBufSize))
}

// Decode computes decode attention softmax(scale * q . K^T) V over every cached token
// (packkv_attn_decode). out: [nSeqs][nQHeads][HeadDim]; lse (nil to skip):
// [nSeqs][nQHeads] log-sum-exp. Empty sequences give zeros and lse = -Inf. Errors:
// ErrInvalidArgument for a bad scale, ids or nQHeads.
func (c *Cache) Decode(seqIDs []int32, nQHeads int32, q Host, scale float32, out, lse []float32) error {
	rows, err := c.checkQ("Decode", seqIDs, nQHeads, q)
	if err != nil {
		return err
	}
	if want := rows * int(c.params.HeadDim); len(out) != want {
		return invalidArg("packkv: Decode: out has %d elements, expected nSeqs*nQHeads*HeadDim = %d", len(out), want)
	}
	if lse != nil && len(lse) != rows {
		return invalidArg("packkv: Decode: lse has %d elements, expected nSeqs*nQHeads = %d", len(lse), rows)
	}
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	wsp, wsn, ws, err := hostWorkspace(p, int32(n), nQHeads)
	if err != nil {
		return err
	}
	var e errBuf
	st := C.pkgo_decode(p, n, idp, C.int32_t(nQHeads), q.ptr(), 0, C.packkv_dtype_t(q.dtype()), C.float(scale),
		f32ptr(out), 0, f32ptr(lse), 0, wsp, 0, wsn, 0, e.ptr(), errBufSize)
	runtime.KeepAlive(q)
	runtime.KeepAlive(ws)
	return e.result(st)
}

// DecodeDevice is Decode on device memory (lse may be 0 to skip).
func (c *Cache) DecodeDevice(seqIDs []int32, nQHeads int32, q DevicePtr, qDType DType, scale float32,
	out, lse DevicePtr, workspace DevicePtr, workspaceBytes uint64, stream Stream) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	idp, n := ids(seqIDs)
	var e errBuf
	return e.result(C.pkgo_decode(p, n, idp, C.int32_t(nQHeads), nil, C.uintptr_t(q), C.packkv_dtype_t(qDType),
		C.float(scale), nil, C.uintptr_t(out), nil, C.uintptr_t(lse), nil, C.uintptr_t(workspace),
		C.size_t(workspaceBytes), C.uintptr_t(stream), e.ptr(), errBufSize))
}
