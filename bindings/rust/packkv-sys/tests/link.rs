//! The declarations link against the library and agree with it at run time.
use std::ffi::CStr;
use packkv_sys::*;

#[test]
fn version_matches_header() {
    let n = unsafe { packkv_version_number() };
    assert_eq!(n, PACKKV_VERSION_NUMBER);
    let s = unsafe { CStr::from_ptr(packkv_version_string()) }.to_str().unwrap();
    assert_eq!(
        s,
        format!("{PACKKV_VERSION_MAJOR}.{PACKKV_VERSION_MINOR}.{PACKKV_VERSION_PATCH}")
    );
}

#[test]
fn params_struct_size_is_accepted() {
    let mut p = core::mem::MaybeUninit::<packkv_cache_params_t>::zeroed();
    let st = unsafe {
        packkv_cache_params_init(p.as_mut_ptr(), core::mem::size_of::<packkv_cache_params_t>())
    };
    assert_eq!(st, PACKKV_OK);
    let p = unsafe { p.assume_init() };
    assert_eq!(p.struct_size as usize, core::mem::size_of::<packkv_cache_params_t>());
    assert!(core::mem::size_of::<packkv_cache_params_t>() >= PACKKV_CACHE_PARAMS_SIZE_V1 as usize);
    assert!(core::mem::size_of::<packkv_cache_stats_t>() >= PACKKV_CACHE_STATS_SIZE_V1 as usize);
}
