package packkv

/*
#include <stdint.h>
#include <stdlib.h>
#include "shims.h"
*/
import "C"

import (
	"unsafe"
)

// errBufSize bounds the copied C message (longer messages are truncated).
const errBufSize = 1024

// errBuf receives the C message of a failed call; it lives in Go memory and is written by C
// only during the call.
type errBuf [errBufSize]C.char

func (b *errBuf) ptr() *C.char { return &b[0] }

// result turns a status returned by a shim into an error carrying the copied message.
func (b *errBuf) result(st C.packkv_status_t) error {
	if st == C.PACKKV_OK {
		return nil
	}
	return &Error{Code: Status(st), Msg: C.GoString(&b[0])}
}

// String is the C library's name of the status ("PACKKV_ERR_INVALID_ARGUMENT"), or
// "unknown status".
func (s Status) String() string {
	return C.GoString(C.packkv_status_string(C.packkv_status_t(s)))
}

// Version returns the loaded library's version as MAJOR*10000 + MINOR*100 + PATCH.
func Version() uint32 { return uint32(C.packkv_version_number()) }

// VersionString returns the loaded library's version, "MAJOR.MINOR.PATCH".
func VersionString() string { return C.GoString(C.packkv_version_string()) }

// BuildInfo describes the build: version, compiler, CUDA compiler version and architectures.
func BuildInfo() string { return C.GoString(C.packkv_build_info()) }

// HasCUDA reports whether the library has its CUDA backend and a CUDA device is visible.
func HasCUDA() bool { return C.packkv_has_cuda() != 0 }

// BitsForRelScale returns the code width that a relative scale implies. Errors:
// ErrInvalidArgument for a scale out of range.
func BitsForRelScale(relScale float32) (int32, error) {
	var e errBuf
	var bits C.int32_t
	err := e.result(C.pkgo_bits_for_rel_scale(C.float(relScale), &bits, e.ptr(), errBufSize))
	return int32(bits), err
}

// LastErrorMessage returns packkv_last_error_message() of the OS thread this goroutine
// happens to run on. Errors returned by this package already carry their message; this is
// meaningful only inside runtime.LockOSThread around raw cgo use.
func LastErrorMessage() string { return C.GoString(C.packkv_last_error_message()) }

// CopyLastError is packkv_copy_last_error on the current OS thread (same caveat as
// LastErrorMessage): it copies the message into buf, NUL-terminated and truncated, and
// returns the full length.
func CopyLastError(buf []byte) int {
	var p *C.char
	if len(buf) > 0 {
		p = (*C.char)(unsafe.Pointer(&buf[0]))
	}
	return int(C.packkv_copy_last_error(p, C.size_t(len(buf))))
}
