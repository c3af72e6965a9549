//! Errors raised in C arrive as `Error { code, message }` with the C status and message;
//! errors this crate detects before calling C use the same codes.
mod common;

use common::{kv, Rng};
use packkv::{Cache, Error, Params, Status, StatusKind};

fn params() -> Params {
    let mut p = Params::default();
    // the tests' reference configuration (no test depends on the library's defaults):
    // r_K 0.1, r_V 0.2 (4- and 3-bit codes), residual window 128, no sink tokens
    p.rel_scale_k = 0.1;
    p.rel_scale_v = 0.2;
    p.residual_tokens = 128;
    p.sink_tokens = 0;
    p.n_kv_heads = 3;
    p.head_dim = 64;
    p
}

fn expect_err<T: std::fmt::Debug>(r: packkv::Result<T>, kind: StatusKind, fragment: &str) -> Error {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.message.contains(fragment), "message {:?} lacks {fragment:?}", e.message);
    e
}

#[test]
fn status_kinds_names_and_unknown_values() {
    let all = [
        (Status::OK, StatusKind::Ok),
        (Status::INVALID_ARGUMENT, StatusKind::InvalidArgument),
        (Status::INVALID_STATE, StatusKind::InvalidState),
        (Status::CAPACITY_EXCEEDED, StatusKind::CapacityExceeded),
        (Status::WORKSPACE_TOO_SMALL, StatusKind::WorkspaceTooSmall),
        (Status::OUT_OF_HOST_MEMORY, StatusKind::OutOfHostMemory),
        (Status::OUT_OF_DEVICE_MEMORY, StatusKind::OutOfDeviceMemory),
        (Status::CUDA, StatusKind::Cuda),
        (Status::NOT_SUPPORTED, StatusKind::NotSupported),
        (Status::VERSION_MISMATCH, StatusKind::VersionMismatch),
        (Status::INTERNAL, StatusKind::Internal),
        (Status::BUDGET_EXCEEDED, StatusKind::BudgetExceeded),
    ];
    for (i, (s, k)) in all.iter().enumerate() {
        assert_eq!(s.0, i as i32);
        assert_eq!(s.kind(), *k);
        assert!(s.name().starts_with("PACKKV_"), "{}", s.name());
    }
    assert_eq!(Status(77).kind(), StatusKind::Unknown(77));
    assert_eq!(Status(77).name(), "unknown status");
    let e = Error { code: Status::CAPACITY_EXCEEDED, message: "full".into(), bytes_needed: 0 };
    assert_eq!(e.to_string(), "PACKKV_ERR_CAPACITY_EXCEEDED (3): full");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("full"));
}

#[test]
fn invalid_argument_from_create_names_the_field() {
    let mut p = params();
    p.head_dim = 40;
    let e = expect_err(Cache::new(&p), StatusKind::InvalidArgument, "head_dim");
    assert!(e.message.contains("packkv_cache_create"));
    assert_eq!(e.code, Status::INVALID_ARGUMENT);
}

#[test]
fn invalid_argument_from_calls() {
    let mut rng = Rng::new(7);
    let mut c = Cache::new(&params()).unwrap();
    expect_err(c.seq_length(3), StatusKind::InvalidArgument, "seq_id");
    expect_err(c.remove_seq(-5), StatusKind::InvalidArgument, "seq_id");
    expect_err(c.stats(Some(9)), StatusKind::InvalidArgument, "");
    let mut k = kv(&mut rng, 10, 3, 64);
    k[100] = f32::INFINITY;
    expect_err(c.append(&[0], &[10], &k, &k), StatusKind::InvalidArgument, "");
    assert_eq!(c.seq_length(0).unwrap(), 0, "a failed append appends nothing");
    let k = kv(&mut rng, 10, 3, 64);
    c.append(&[0], &[10], &k, &k).unwrap();
    let q = vec![0f32; 4 * 64];
    let mut out = vec![0f32; 4 * 64];
    expect_err(c.decode(&[0], 4, &q, 0.1, &mut out, None), StatusKind::InvalidArgument, "packkv_attn_decode: n_q_heads");
    let q = vec![0f32; 3 * 64];
    let mut out = vec![0f32; 3 * 64];
    expect_err(c.decode(&[0], 3, &q, f32::NAN, &mut out, None), StatusKind::InvalidArgument, "scale");
    let mut scores = vec![0f32; 3 * 5];
    expect_err(c.scores(&[0], 3, &q, &mut scores, 5), StatusKind::InvalidArgument, "ld_scores");
    expect_err(c.workspace_size(0, 3), StatusKind::InvalidArgument, "n_seqs");
    expect_err(packkv::bits_for_rel_scale(-1.0), StatusKind::InvalidArgument, "packkv_bits_for_rel_scale");
}

#[test]
fn capacity_exceeded() {
    let mut rng = Rng::new(8);
    let mut p = params();
    p.max_tokens_per_seq = 50;
    let mut c = Cache::new(&p).unwrap();
    let k = kv(&mut rng, 40, 3, 64);
    c.append(&[0], &[40], &k, &k).unwrap();
    let e = expect_err(c.append(&[0], &[40], &k, &k), StatusKind::CapacityExceeded, "");
    assert!(!e.message.is_empty());
    assert_eq!(c.seq_length(0).unwrap(), 40);
    let mut small = vec![0f32; 10 * 3 * 64];
    expect_err(c.decompress(0, Some(&mut small), None), StatusKind::CapacityExceeded, "");
}

#[test]
fn not_supported_without_cuda() {
    if packkv::has_cuda() {
        return; // a CUDA device is present: device 0 is valid
    }
    let mut p = params();
    p.device = 0;
    let e = expect_err(Cache::new(&p), StatusKind::NotSupported, "CUDA");
    assert_eq!(e.code.0, packkv::sys::PACKKV_ERR_NOT_SUPPORTED);
}

#[test]
fn version_mismatch_through_the_raw_layer() {
    use packkv::sys;
    let mut raw = std::mem::MaybeUninit::<sys::packkv_cache_params_t>::zeroed();
    let st = unsafe { sys::packkv_cache_params_init(raw.as_mut_ptr(), 8) };
    assert_eq!(Status(st).kind(), StatusKind::VersionMismatch);
    assert!(packkv::last_error_message().contains("struct_size"));
    let mut buf = [0u8; 16];
    let n = packkv::copy_last_error(&mut buf);
    assert_eq!(n, packkv::last_error_message().len());
    assert_eq!(buf[15], 0);
}

#[test]
fn errors_detected_before_calling_c() {
    let mut c = Cache::new(&params()).unwrap();
    let k = vec![0f32; 5 * 3 * 64];
    expect_err(c.append(&[0], &[4], &k, &k), StatusKind::InvalidArgument, "expected");
    expect_err(c.append(&[0, 1], &[5], &k, &k), StatusKind::InvalidArgument, "n_tokens");
    expect_err(c.append(&[0], &[-5], &k, &k), StatusKind::InvalidArgument, ">= 0");
    let q = vec![0f32; 9 * 64];
    let mut out = vec![0f32; 9 * 63];
    expect_err(c.decode(&[0], 9, &q, 0.1, &mut out, None), StatusKind::InvalidArgument, "out");
    let mut out = vec![0f32; 9 * 64];
    let mut lse = vec![0f32; 8];
    expect_err(c.decode(&[0], 9, &q, 0.1, &mut out, Some(&mut lse)), StatusKind::InvalidArgument, "lse");
    expect_err(c.decode(&[0], 9, &q[1..], 0.1, &mut out, None), StatusKind::InvalidArgument, "q has");
    let mut scores = vec![0f32; 10];
    expect_err(c.scores(&[0], 9, &q, &mut scores, 5), StatusKind::InvalidArgument, "scores");
    expect_err(c.apply(&[0], 9, &scores, 5, &mut out), StatusKind::InvalidArgument, "probs");
    expect_err(c.decode(&[0], 0, &q, 0.1, &mut out, None), StatusKind::InvalidArgument, "n_q_heads");
}

#[test]
fn messages_are_per_thread() {
    let c = Cache::new(&params()).unwrap();
    let c = &c;
    std::thread::scope(|s| {
        for id in [11, 22, 33, 44] {
            s.spawn(move || {
                for _ in 0..50 {
                    let e = c.seq_length(id).unwrap_err();
                    assert!(e.message.contains(&id.to_string()), "{}", e.message);
                }
            });
        }
    });
}
