package packkv

import "fmt"

// Status is a packkv_status_t value. Values are pinned by the C header; unknown values
// from a newer library are kept as they are.
type Status int32

// Status codes (PACKKV_OK, PACKKV_ERR_*).
const (
	StatusOK                Status = 0
	StatusInvalidArgument   Status = 1  // NULL, out-of-range size or id, bad dtype, non-finite K/V
	StatusInvalidState      Status = 2  // not valid in the current state (Go: the cache is closed)
	StatusCapacityExceeded  Status = 3  // max_tokens_per_seq or an output capacity exceeded
	StatusWorkspaceTooSmall Status = 4  // less workspace than WorkspaceSize reported
	StatusOutOfHostMemory   Status = 5  // host allocation failed
	StatusOutOfDeviceMemory Status = 6  // device allocation failed
	StatusCUDA              Status = 7  // CUDA runtime error (named in the message)
	StatusNotSupported      Status = 8  // e.g. a CUDA cache without the CUDA backend
	StatusVersionMismatch   Status = 9  // a struct_size the library does not accept
	StatusInternal          Status = 10 // a library bug
	// StatusBudgetExceeded (experimental API): an append needed more pool pages than the
	// pool's budget allows; nothing was appended (Error.BytesNeeded says how many bytes).
	StatusBudgetExceeded Status = 11
)

// Error is a failed libpackkv call: the status and the C library's detailed message
// (function name, offending argument, CUDA error name). Errors detected by this package
// before calling C use the status the C library would have returned.
type Error struct {
	Code Status
	Msg  string
	// BytesNeeded is, for StatusBudgetExceeded, the bytes of pool pages the call needed
	// (packkv_x_last_bytes_needed); 0 otherwise.
	BytesNeeded int64
}

// Error formats "PACKKV_ERR_...(code): message".
func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("%s (%d)", e.Code, int32(e.Code))
	}
	return fmt.Sprintf("%s (%d): %s", e.Code, int32(e.Code), e.Msg)
}

// Is reports whether target is an *Error with the same Code and either no message (the
// sentinels) or the same message; it makes errors.Is(err, packkv.ErrCapacityExceeded) work.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Msg == "" || t.Msg == e.Msg)
}

// Sentinel errors for errors.Is, one per status code.
var (
	ErrInvalidArgument   = &Error{Code: StatusInvalidArgument}
	ErrInvalidState      = &Error{Code: StatusInvalidState}
	ErrCapacityExceeded  = &Error{Code: StatusCapacityExceeded}
	ErrWorkspaceTooSmall = &Error{Code: StatusWorkspaceTooSmall}
	ErrOutOfHostMemory   = &Error{Code: StatusOutOfHostMemory}
	ErrOutOfDeviceMemory = &Error{Code: StatusOutOfDeviceMemory}
	ErrCUDA              = &Error{Code: StatusCUDA}
	ErrNotSupported      = &Error{Code: StatusNotSupported}
	ErrVersionMismatch   = &Error{Code: StatusVersionMismatch}
	ErrInternal          = &Error{Code: StatusInternal}
	ErrBudgetExceeded    = &Error{Code: StatusBudgetExceeded}
)

func invalidArg(format string, args ...interface{}) error {
	return &Error{Code: StatusInvalidArgument, Msg: fmt.Sprintf(format, args...)}
}
