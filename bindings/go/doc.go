// Package packkv is the Go binding of libpackkv, a compressed KV cache for LLM decode
// attention (the PackKV method), through cgo and the stable C API (packkv/packkv.h).
//
// A Cache holds the K and V of one attention layer. Create it with New(params), append
// tokens, run attention (Scores, Apply, Decode) on the compressed data, read Stats, and
// Close it (a finalizer frees a forgotten cache, but Close is the contract):
//
//	p, _ := packkv.DefaultParams() // device -1: CPU backend
//	p.NKVHeads, p.HeadDim = 3, 64
//	c, err := packkv.New(p)
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Append([]int32{0}, []int32{n}, packkv.F16(k), packkv.F16(v))
//	err = c.Decode([]int32{0}, 9, packkv.F32(q), 0.125, out, nil)
//	st, _ := c.Stats(-1); fmt.Println(st.Ratio())
//
// Errors are *Error values with the C status and message; compare with errors.Is against
// the sentinels (ErrInvalidArgument, ...), never by message. The message is copied inside
// the same cgo call as the failing function (goroutines can change OS thread between cgo
// calls, and the C message is thread-local).
//
// Memory: host slices are passed to C only for the duration of a call and never retained,
// so no pinning is needed; device memory is passed as DevicePtr (an address) and streams as
// Stream (a cudaStream_t value), converted to pointers inside C.
//
// Thread safety: a Cache may be used from several goroutines. Reads (attention, Stats,
// SeqLength, ...) take a shared lock and run concurrently; Append, RemoveSeq, Reset and
// Close take the exclusive lock, so misuse blocks instead of corrupting memory.
//
// Linking: cgo finds libpackkv through pkg-config (`#cgo pkg-config: packkv`): set
// PKG_CONFIG_PATH to an install's lib/pkgconfig, or to <build>/bindings/pkgconfig for a
// CMake build tree. Build with -tags packkv_static to link libpackkv.a.
package packkv
