//go:build packkv_static

package packkv

// Built with -tags packkv_static: link libpackkv.a and its private dependencies (the
// Libs.private of packkv.pc: the static CUDA runtime in CUDA builds, rt, pthread, dl, stdc++).

// #cgo pkg-config: --static packkv
// #cgo LDFLAGS: -Wl,-Bstatic -lpackkv -Wl,-Bdynamic
import "C"
