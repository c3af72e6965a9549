package packkv

// #include "shims.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Experimental API (packkv_experimental.h: not frozen, changes with the library): memory
// pools, truncate and fork.

// DefaultPageBytes is the default page size of a pool (PACKKV_X_POOL_DEFAULT_PAGE_BYTES).
const DefaultPageBytes = int64(C.PACKKV_X_POOL_DEFAULT_PAGE_BYTES)

// PoolOptions configures a Pool (packkv_x_pool_params_t).
type PoolOptions struct {
	// PageBytes per page: a multiple of 4096 in [4096, 2^31] holding the largest block of
	// every cache made in the pool (PageBytesFor). DefaultPageBytes when 0.
	PageBytes int64
	// BudgetBytes: 0 for no budget; else at most BudgetBytes / PageBytes pages.
	BudgetBytes int64
	// Reserve maps and touches the whole budget at creation and keeps it (needs a budget).
	Reserve bool
	// OnDevice puts the pages in the memory of CUDA device Device, for CUDA caches on that
	// device; false (default): host pages, for CPU caches.
	OnDevice bool
	Device   int32
}

// PoolStats is the accounting of a pool (packkv_x_pool_stats_t), in bytes.
type PoolStats struct {
	PageBytes   int64 // bytes per page
	BudgetBytes int64 // whole pages of the budget; 0 without a budget
	BytesHeld   int64 // pages mapped (in use + kept free by a reserving pool)
	BytesInUse  int64 // pages holding blocks or open for writing
	FreeBytes   int64 // BudgetBytes - BytesInUse; -1 without a budget
	NCaches     int64 // caches made in the pool and not closed
}

// Pool holds the compressed blocks of the caches made in it (NewInPool) in fixed-size pages
// (host memory, or a CUDA device's with OnDevice), under an optional byte budget: an append that needs more pages fails with
// ErrBudgetExceeded and appends nothing. Close drops this handle only; caches made in the
// pool keep it alive. All methods are safe for concurrent use.
type Pool struct {
	mu sync.RWMutex
	p  *C.packkv_x_pool_t
}

// NewPool creates a pool (packkv_x_pool_create). Errors: ErrInvalidArgument for a bad page
// size, budget, device, or Reserve without a budget; ErrNotSupported for a device without the
// CUDA backend; ErrOutOfHostMemory / ErrOutOfDeviceMemory when reserving fails.
func NewPool(o PoolOptions) (*Pool, error) {
	var cp C.packkv_x_pool_params_t
	var e errBuf
	if err := e.result(C.pkgo_x_pool_params_init(&cp, C.size_t(unsafe.Sizeof(cp)), e.ptr(), errBufSize)); err != nil {
		return nil, err
	}
	if o.PageBytes != 0 {
		cp.page_bytes = C.int64_t(o.PageBytes)
	}
	cp.budget_bytes = C.int64_t(o.BudgetBytes)
	if o.Reserve {
		cp.reserve = 1
	}
	if o.OnDevice {
		cp.device = C.int32_t(o.Device)
	}
	var raw *C.packkv_x_pool_t
	if err := e.result(C.pkgo_x_pool_create(&cp, &raw, e.ptr(), errBufSize)); err != nil {
		return nil, err
	}
	pool := &Pool{p: raw}
	runtime.SetFinalizer(pool, func(p *Pool) { _ = p.Close() })
	return pool, nil
}

// Close drops the handle (packkv_x_pool_destroy). Idempotent.
func (p *Pool) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.p != nil {
		C.packkv_x_pool_destroy(p.p)
		p.p = nil
		runtime.SetFinalizer(p, nil)
	}
	return nil
}

var errPoolClosed = &Error{Code: StatusInvalidState, Msg: "packkv: the pool is closed"}

// Stats returns a consistent snapshot of the pool's accounting.
func (p *Pool) Stats() (PoolStats, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.p == nil {
		return PoolStats{}, errPoolClosed
	}
	var s C.packkv_x_pool_stats_t
	s.struct_size = C.uint32_t(unsafe.Sizeof(s))
	var e errBuf
	if err := e.result(C.pkgo_x_pool_stats(p.p, &s, e.ptr(), errBufSize)); err != nil {
		return PoolStats{}, err
	}
	return PoolStats{PageBytes: int64(s.page_bytes), BudgetBytes: int64(s.budget_bytes), BytesHeld: int64(s.bytes_held),
		BytesInUse: int64(s.bytes_in_use), FreeBytes: int64(s.free_bytes), NCaches: int64(s.n_caches)}, nil
}

// TokensFit estimates how many more tokens fit in the free pages when each token goes to
// every cache of the pool (one per layer), each cache's blocks of its mean size so far
// packed whole into pages, page-end waste counted (packkv_x_pool_tokens_fit): -1 without
// a budget, 0 with no cache.
func (p *Pool) TokensFit() (int64, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.p == nil {
		return 0, errPoolClosed
	}
	var n C.int64_t
	var e errBuf
	if err := e.result(C.pkgo_x_pool_tokens_fit(p.p, &n, e.ptr(), errBufSize)); err != nil {
		return 0, err
	}
	return int64(n), nil
}

// PageBytesFor is the page size for caches with these parameters: what a private pool uses
// and the recommended PageBytes of a shared pool for them (packkv_x_pool_page_bytes_for).
func PageBytesFor(p Params) (int64, error) {
	var cp C.packkv_cache_params_t
	if err := p.toC(&cp); err != nil {
		return 0, err
	}
	var n C.int64_t
	var e errBuf
	if err := e.result(C.pkgo_x_pool_page_bytes_for(&cp, &n, e.ptr(), errBufSize)); err != nil {
		return 0, err
	}
	return int64(n), nil
}

// NewInPool creates a cache whose compressed blocks live in pool
// (packkv_x_cache_create_in_pool); the cache keeps the pool alive. Errors: as New, and
// ErrInvalidArgument when the pool's pages are smaller than this cache's largest block.
func NewInPool(p Params, pool *Pool) (*Cache, error) {
	if pool == nil {
		return nil, invalidArg("packkv: NewInPool: pool is nil")
	}
	var cp C.packkv_cache_params_t
	if err := p.toC(&cp); err != nil {
		return nil, err
	}
	pool.mu.RLock()
	defer pool.mu.RUnlock()
	if pool.p == nil {
		return nil, errPoolClosed
	}
	var e errBuf
	var raw *C.packkv_cache_t
	if err := e.result(C.pkgo_x_create_in_pool(&cp, pool.p, &raw, e.ptr(), errBufSize)); err != nil {
		return nil, err
	}
	return wrapCache(raw)
}

// Truncate keeps the first nTokens tokens of a sequence (packkv_x_cache_truncate).
// Residual-window tokens go at no cost; when the cut falls inside a compressed block, its
// first tokens return to the window from their stored (dequantized) values and keep the
// compression error; a cut inside the sink tokens keeps the first nTokens of them and drops
// every block. Errors: ErrInvalidArgument for nTokens outside [WindowStart, SeqLength];
// ErrNotSupported on a CUDA cache. On error nothing changes.
func (c *Cache) Truncate(seqID int32, nTokens int64) error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_x_truncate(p, C.int32_t(seqID), C.int64_t(nTokens), e.ptr(), errBufSize))
}

// Fork makes the empty sequence dst a copy of src that shares its compressed blocks
// (reference counted) and copies its residual window, sink tokens and K mean
// (packkv_x_cache_fork). Stats(seq)
// counts shared blocks in each sequence, Stats(-1) once. Errors: ErrInvalidState if dst
// holds tokens, ErrInvalidArgument for bad or equal ids. On error nothing changes.
func (c *Cache) Fork(src, dst int32) error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_x_fork(p, C.int32_t(src), C.int32_t(dst), e.ptr(), errBufSize))
}

// SetWindow gives the empty cache a sliding window of windowTokens tokens, 0 for none
// (packkv_x_cache_set_window). Tokens before WindowStart then score -inf, weigh 0 in Apply,
// are left out of Decode, decompress as NaN, and their whole blocks are freed. Errors:
// ErrInvalidState if the cache holds tokens, ErrInvalidArgument for a negative window.
func (c *Cache) SetWindow(windowTokens int64) error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_x_set_window(p, C.int64_t(windowTokens), e.ptr(), errBufSize))
}

// SetParallel runs the parallel work of this CPU cache through a caller's C task runner
// (packkv_x_cache_set_parallel): fn is a C function pointer of type packkv_x_parallel_fn
// (from the caller's own cgo code; it must call every task once and return when all have
// returned), user its first argument, nTasks in [1, 1024] the most tasks one call asks
// for. fn == nil goes back to the library's threads (Params.NThreads). Results do not
// depend on it. Errors: ErrInvalidArgument for nTasks out of range with a non-nil fn,
// ErrNotSupported on a CUDA cache. fn and user must stay valid while the cache uses them.
func (c *Cache) SetParallel(fn unsafe.Pointer, user unsafe.Pointer, nTasks int32) error {
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	return e.result(C.pkgo_x_set_parallel(p, fn, user, C.int32_t(nTasks), e.ptr(), errBufSize))
}

// WindowStart returns the first token of a sequence inside the sliding window
// (packkv_x_cache_window_start; 0 without a window).
func (c *Cache) WindowStart(seqID int32) (int64, error) {
	p, err := c.read()
	if err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	var n C.int64_t
	var e errBuf
	if err := e.result(C.pkgo_x_window_start(p, C.int32_t(seqID), &n, e.ptr(), errBufSize)); err != nil {
		return 0, err
	}
	return int64(n), nil
}

// ExportSeq returns one sequence in the versioned export byte format
// (packkv_x_cache_export), for offloading or moving a prefix to another process.
func (c *Cache) ExportSeq(seqID int32) ([]byte, error) {
	p, err := c.read()
	if err != nil {
		return nil, err
	}
	defer c.mu.RUnlock()
	var n C.size_t
	var e errBuf
	if err := e.result(C.pkgo_x_export_size(p, C.int32_t(seqID), &n, e.ptr(), errBufSize)); err != nil {
		return nil, err
	}
	buf := make([]byte, int(n))
	var written C.size_t
	if err := e.result(C.pkgo_x_export(p, C.int32_t(seqID), unsafe.Pointer(&buf[0]), n, &written, e.ptr(),
		errBufSize)); err != nil {
		return nil, err
	}
	return buf[:int(written)], nil
}

// ImportSeq restores an exported sequence into the empty sequence seqID
// (packkv_x_cache_import), validating everything first. Errors: ErrInvalidArgument for
// bytes that are not a valid export for this cache (the message says which check failed),
// ErrVersionMismatch, ErrInvalidState for a non-empty sequence, ErrCapacityExceeded,
// ErrBudgetExceeded. On error nothing is imported.
func (c *Cache) ImportSeq(seqID int32, data []byte) error {
	if len(data) == 0 {
		return invalidArg("packkv: ImportSeq: data is empty")
	}
	p, err := c.write()
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	var e errBuf
	var needed C.int64_t
	st := C.pkgo_x_import(p, C.int32_t(seqID), unsafe.Pointer(&data[0]), C.size_t(len(data)), &needed, e.ptr(),
		errBufSize)
	return withNeeded(e.result(st), needed)
}

// withNeeded adds the bytes a budget failure needed to its error.
func withNeeded(err error, needed C.int64_t) error {
	if e, ok := err.(*Error); ok && e.Code == StatusBudgetExceeded {
		e.BytesNeeded = int64(needed)
	}
	return err
}
