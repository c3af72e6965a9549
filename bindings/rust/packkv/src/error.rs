//! Status codes and the error type.
use std::ffi::CStr;
use core::fmt;

use packkv_sys as sys;

/// A `packkv_status_t` value. A transparent newtype over `i32` rather than a Rust enum, so
/// that codes added by a newer library are representable; match on [`Status::kind`].
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Status(pub i32);

impl Status {
    /// Success (`PACKKV_OK`).
    pub const OK: Status = Status(sys::PACKKV_OK);
    /// `PACKKV_ERR_INVALID_ARGUMENT`: NULL, out-of-range size or id, bad dtype, non-finite K/V.
    pub const INVALID_ARGUMENT: Status = Status(sys::PACKKV_ERR_INVALID_ARGUMENT);
    /// `PACKKV_ERR_INVALID_STATE`: the call is not valid in the cache's state.
    pub const INVALID_STATE: Status = Status(sys::PACKKV_ERR_INVALID_STATE);
    /// `PACKKV_ERR_CAPACITY_EXCEEDED`: max_tokens_per_seq or an output capacity exceeded.
    pub const CAPACITY_EXCEEDED: Status = Status(sys::PACKKV_ERR_CAPACITY_EXCEEDED);
    /// `PACKKV_ERR_WORKSPACE_TOO_SMALL`: less workspace than `workspace_size` reported.
    pub const WORKSPACE_TOO_SMALL: Status = Status(sys::PACKKV_ERR_WORKSPACE_TOO_SMALL);
    /// `PACKKV_ERR_OUT_OF_HOST_MEMORY`.
    pub const OUT_OF_HOST_MEMORY: Status = Status(sys::PACKKV_ERR_OUT_OF_HOST_MEMORY);
    /// `PACKKV_ERR_OUT_OF_DEVICE_MEMORY`.
    pub const OUT_OF_DEVICE_MEMORY: Status = Status(sys::PACKKV_ERR_OUT_OF_DEVICE_MEMORY);
    /// `PACKKV_ERR_CUDA`: a CUDA runtime error (named in the message).
    pub const CUDA: Status = Status(sys::PACKKV_ERR_CUDA);
    /// `PACKKV_ERR_NOT_SUPPORTED`: e.g. a CUDA cache without the CUDA backend.
    pub const NOT_SUPPORTED: Status = Status(sys::PACKKV_ERR_NOT_SUPPORTED);
    /// `PACKKV_ERR_VERSION_MISMATCH`: a struct_size the library does not accept.
    pub const VERSION_MISMATCH: Status = Status(sys::PACKKV_ERR_VERSION_MISMATCH);
    /// `PACKKV_ERR_INTERNAL`: a library bug.
    pub const INTERNAL: Status = Status(sys::PACKKV_ERR_INTERNAL);
    /// `PACKKV_X_ERR_BUDGET_EXCEEDED` (experimental API): an append needed more pool pages
    /// than the pool's budget allows; nothing was appended ([`Error::bytes_needed`]).
    pub const BUDGET_EXCEEDED: Status = Status(sys::experimental::PACKKV_X_ERR_BUDGET_EXCEEDED);

    /// The status as a Rust enum, with [`StatusKind::Unknown`] for values this crate does
    /// not know.
    pub fn kind(self) -> StatusKind {
        match self {
            Status::OK => StatusKind::Ok,
            Status::INVALID_ARGUMENT => StatusKind::InvalidArgument,
            Status::INVALID_STATE => StatusKind::InvalidState,
            Status::CAPACITY_EXCEEDED => StatusKind::CapacityExceeded,
            Status::WORKSPACE_TOO_SMALL => StatusKind::WorkspaceTooSmall,
            Status::OUT_OF_HOST_MEMORY => StatusKind::OutOfHostMemory,
            Status::OUT_OF_DEVICE_MEMORY => StatusKind::OutOfDeviceMemory,
            Status::CUDA => StatusKind::Cuda,
            Status::NOT_SUPPORTED => StatusKind::NotSupported,
            Status::VERSION_MISMATCH => StatusKind::VersionMismatch,
            Status::INTERNAL => StatusKind::Internal,
            Status::BUDGET_EXCEEDED => StatusKind::BudgetExceeded,
            Status(other) => StatusKind::Unknown(other),
        }
    }

    /// The C library's static name of the status (`packkv_status_string`), e.g.
    /// "PACKKV_ERR_INVALID_ARGUMENT"; "unknown status" for unknown values. Thread-safe.
    pub fn name(self) -> &'static str {
        // SAFETY: packkv_status_string returns a static NUL-terminated string, never NULL.
        unsafe { CStr::from_ptr(sys::packkv_status_string(self.0)) }
            .to_str()
            .unwrap_or("unknown status")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// [`Status`] as an enum for matching; `Unknown` keeps values from newer libraries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum StatusKind {
    /// Success.
    Ok,
    /// See [`Status::INVALID_ARGUMENT`].
    InvalidArgument,
    /// See [`Status::INVALID_STATE`].
    InvalidState,
    /// See [`Status::CAPACITY_EXCEEDED`].
    CapacityExceeded,
    /// See [`Status::WORKSPACE_TOO_SMALL`].
    WorkspaceTooSmall,
    /// See [`Status::OUT_OF_HOST_MEMORY`].
    OutOfHostMemory,
    /// See [`Status::OUT_OF_DEVICE_MEMORY`].
    OutOfDeviceMemory,
    /// See [`Status::CUDA`].
    Cuda,
    /// See [`Status::NOT_SUPPORTED`].
    NotSupported,
    /// See [`Status::VERSION_MISMATCH`].
    VersionMismatch,
    /// See [`Status::INTERNAL`].
    Internal,
    /// See [`Status::BUDGET_EXCEEDED`].
    BudgetExceeded,
    /// A status this crate does not know (from a newer library).
    Unknown(i32),
}

/// A failed libpackkv call: the status and the library's detailed message (function name,
/// offending argument, CUDA error name), copied from the calling thread's last error right
/// after the failing call. Errors detected by this crate before calling C (slice lengths,
/// host slices on a CUDA cache) use the status the C library would have returned.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Error {
    /// The C status.
    pub code: Status,
    /// The library's detailed message (may be empty).
    pub message: String,
    /// For [`Status::BUDGET_EXCEEDED`]: the bytes of pool pages the call needed
    /// (`packkv_x_last_bytes_needed`); 0 otherwise.
    pub bytes_needed: i64,
}

impl Error {
    /// The status kind (shortcut for `self.code.kind()`).
    pub fn kind(&self) -> StatusKind {
        self.code.kind()
    }

    pub(crate) fn new(code: Status, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), bytes_needed: 0 }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::INVALID_ARGUMENT, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// Turns a status into a `Result`, copying the thread-local message on failure. Must be
/// called immediately after the FFI call that returned `status`, on the same thread, with no
/// libpackkv call in between (the message is valid only until the next call).
pub(crate) fn check(status: sys::packkv_status_t) -> Result<()> {
    if status == sys::PACKKV_OK {
        return Ok(());
    }
    let message = last_error_message();
    // SAFETY: no arguments; thread-local, read before any other libpackkv call.
    let bytes_needed = unsafe { sys::experimental::packkv_x_last_bytes_needed() };
    Err(Error { code: Status(status), message, bytes_needed })
}

/// The calling thread's last error message (`packkv_last_error_message`), copied. Empty
/// when the last call on this thread succeeded. [`Error`] values already carry it.
pub fn last_error_message() -> String {
    // SAFETY: never NULL; valid until the next libpackkv call on this thread, and we copy it
    // before returning.
    unsafe { CStr::from_ptr(sys::packkv_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Copies the last error message into `buf` (NUL-terminated, truncated) and returns the full
/// message length (`packkv_copy_last_error`).
pub fn copy_last_error(buf: &mut [u8]) -> usize {
    // SAFETY: buf is valid for buf.len() bytes; NULL only with cap 0.
    unsafe {
        sys::packkv_copy_last_error(
            if buf.is_empty() { core::ptr::null_mut() } else { buf.as_mut_ptr().cast() },
            buf.len(),
        )
    }
}
