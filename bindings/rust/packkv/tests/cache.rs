//! Round trip, attention against an f64 reference, thread safety and the Rust API surface.
mod common;

use common::{kv, rel_err, Rng};
use packkv::{Bf16, Cache, DType, KTransform, Params, Repack, ScaleGranularity, ZsFormat, F16};

const H: usize = 3;
const D: usize = 64;

fn params(max_seqs: i32) -> Params {
    let mut p = Params::default();
    // the tests' reference configuration (no test depends on the library's defaults):
    // r_K 0.1, r_V 0.2 (4- and 3-bit codes), residual window 128, no sink tokens
    p.rel_scale_k = 0.1;
    p.rel_scale_v = 0.2;
    p.residual_tokens = 128;
    p.sink_tokens = 0;
    p.n_kv_heads = H as i32;
    p.head_dim = D as i32;
    p.max_seqs = max_seqs;
    p
}

#[test]
fn version_and_build_info() {
    let n = packkv::version_number();
    assert_eq!(n, packkv::sys::PACKKV_VERSION_NUMBER);
    assert_eq!(
        packkv::version_string(),
        format!("{}.{}.{}", n / 10000, n / 100 % 100, n % 100)
    );
    assert!(packkv::build_info().contains("libpackkv"));
    let _ = packkv::has_cuda();
    assert_eq!(packkv::bits_for_rel_scale(0.1).unwrap(), 4);
    assert_eq!(packkv::bits_for_rel_scale(0.2).unwrap(), 3);
}

#[test]
fn params_defaults_and_effective_values() {
    let p = Params::default();
    assert_eq!(p.device, -1);
    assert_eq!(p.kv_dtype, DType::F16);
    assert_eq!(p.repack, Repack::MEDIAN);
    assert_eq!(p.scale_granularity, ScaleGranularity::PER_TOKEN);
    assert_eq!((p.rel_scale_k, p.rel_scale_v), (0.035, 0.07));
    assert_eq!((p.residual_tokens, p.sink_tokens, p.k_transform), (64, 4, KTransform::NONE));
    let cache = Cache::new(&params(2)).unwrap();
    let eff = cache.params();
    assert_eq!((eff.n_kv_heads, eff.head_dim, eff.max_seqs), (3, 64, 2));
    assert_eq!(eff.bits_k, packkv::bits_for_rel_scale(eff.rel_scale_k).unwrap());
    assert_eq!(cache.get_params().unwrap(), *eff);
    assert_eq!(cache.device(), -1);
    assert_eq!(cache.get_device().unwrap(), -1);
}

#[test]
fn version_2_fields_sink_tokens_zs_format_k_transform() {
    let mut p = params(1);
    p.sink_tokens = 3;
    p.zs_format = ZsFormat::WIDE;
    p.k_transform = KTransform::CENTER;
    p.residual_tokens = 0;
    p.block_tokens = 16;
    let mut c = Cache::new(&p).unwrap();
    let eff = c.params();
    assert_eq!((eff.sink_tokens, eff.zs_format, eff.k_transform), (3, ZsFormat::WIDE, KTransform::CENTER));
    let mut rng = Rng::new(9);
    let t = 3 + 16 + 5;
    let k = kv(&mut rng, t, H, D);
    let v = kv(&mut rng, t, H, D);
    c.append(&[0], &[t as i32], &k, &v).unwrap();
    // 3 sink tokens (exact), one block of 16, 5 tokens in the residual window
    let s = c.stats(Some(0)).unwrap();
    assert_eq!((s.n_compressed_tokens, s.n_residual_tokens), (16, 8));
    let mut kd = vec![0f32; t * H * D];
    let mut vd = vec![0f32; t * H * D];
    c.decompress(0, Some(&mut kd), Some(&mut vd)).unwrap();
    for i in 0..3 * H * D {
        assert_eq!(kd[i], F16::from_f32(k[i]).to_f32());
    }
}

#[test]
fn roundtrip_error_bound_f16_and_f32() {
    let mut rng = Rng::new(1);
    let t = 64 * 4 + 128 + 9;
    let k = kv(&mut rng, t, H, D);
    let v = kv(&mut rng, t, H, D);
    let k16: Vec<F16> = k.iter().map(|&x| F16::from_f32(x)).collect();
    let v16: Vec<F16> = v.iter().map(|&x| F16::from_f32(x)).collect();
    for half in [true, false] {
        let mut c = Cache::new(&params(1)).unwrap();
        if half {
            c.append(&[0], &[t as i32], &k16, &v16).unwrap();
        } else {
            c.append(&[0], &[t as i32], &k, &v).unwrap();
        }
        assert_eq!(c.seq_length(0).unwrap(), t as i64);
        let mut kh = vec![0f32; t * H * D];
        let mut vh = vec![0f32; t * H * D];
        assert_eq!(c.decompress(0, Some(&mut kh), Some(&mut vh)).unwrap(), t as i64);
        let st = c.stats(Some(0)).unwrap();
        let nc = st.n_compressed_tokens as usize;
        assert!(nc > 0 && nc % 64 == 0);
        let (rk, rv) = (c.params().rel_scale_k as f64, c.params().rel_scale_v as f64);
        for (x, xh, r) in [(&k, &kh, rk), (&v, &vh, rv)] {
            for tok in 0..t {
                let row = tok * H * D..(tok + 1) * H * D;
                // The input as the cache saw it: converted to kv_dtype (f16) on entry, whatever
                // the input dtype.
                let xs: Vec<f64> =
                    x[row.clone()].iter().map(|&e| F16::from_f32(e).to_f32() as f64).collect();
                let got = &xh[row];
                if tok < nc {
                    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let bound = r * (hi - lo) / 2.0 * (1.0 + 1e-4) + 1e-6;
                    for (a, b) in xs.iter().zip(got) {
                        assert!((a - *b as f64).abs() <= bound, "half {half} token {tok}: {a} vs {b}, bound {bound}");
                    }
                } else {
                    // Residual window: kept in kv_dtype = f16.
                    for (a, b) in xs.iter().zip(got) {
                        assert_eq!(F16::from_f32(*a as f32).to_f32(), *b);
                    }
                }
            }
        }
    }
}

#[test]
fn stats_accounting() {
    let mut rng = Rng::new(2);
    let mut c = Cache::new(&params(1)).unwrap();
    assert_eq!(c.stats(None).unwrap().ratio(), 0.0);
    let t = 1000;
    let k = kv(&mut rng, t, H, D);
    c.append(&[0], &[t as i32], &k, &k).unwrap();
    let s = c.stats(None).unwrap();
    assert_eq!(s.n_tokens, t as i64);
    assert_eq!(s.fp16_bytes, (t * H * D * 2 * 2) as i64);
    assert_eq!(
        s.compressed_bytes_used,
        s.k_tile_bytes + s.v_tile_bytes + s.k_scale_bytes + s.v_scale_bytes + s.index_bytes + s.perm_bytes
    );
    assert_eq!(s.all_in_bytes(), s.compressed_bytes_used + s.residual_bytes);
    assert!(s.ratio() > 1.5);
}

/// f64 reference on the dequantized cache: scores [n_q][T], and V [T][H][D].
fn reference(c: &Cache, seq: i32, q: &[f32], n_q: usize) -> (Vec<Vec<f64>>, Vec<f32>) {
    let t = c.seq_length(seq).unwrap() as usize;
    let mut k = vec![0f32; t * H * D];
    let mut v = vec![0f32; t * H * D];
    c.decompress(seq, Some(&mut k), Some(&mut v)).unwrap();
    let group = n_q / H;
    let scores = (0..n_q)
        .map(|j| {
            let h = j / group;
            (0..t)
                .map(|tok| {
                    (0..D)
                        .map(|d| q[j * D + d] as f64 * k[(tok * H + h) * D + d] as f64)
                        .sum()
                })
                .collect()
        })
        .collect();
    (scores, v)
}

#[test]
fn attention_matches_f64_reference() {
    let mut rng = Rng::new(3);
    let lengths = [700usize, 130];
    let mut c = Cache::new(&params(2)).unwrap();
    let k = kv(&mut rng, lengths[0] + lengths[1], H, D);
    let v = kv(&mut rng, lengths[0] + lengths[1], H, D);
    c.append(&[0, 1], &[lengths[0] as i32, lengths[1] as i32], &k, &v).unwrap();
    let n_q = 9;
    let ids = [1, 0];
    let q: Vec<f32> = (0..2 * n_q * D).map(|_| rng.uniform()).collect();
    let ld = 701;
    let mut scores = vec![f32::NAN; 2 * n_q * ld];
    c.scores(&ids, n_q as i32, &q, &mut scores, ld).unwrap();
    let probs: Vec<f32> = (0..2 * n_q * ld).map(|_| (rng.uniform() + 1.0) / 2.0).collect();
    let mut applied = vec![0f32; 2 * n_q * D];
    c.apply(&ids, n_q as i32, &probs, ld, &mut applied).unwrap();
    let scale = 1.0 / (D as f32).sqrt();
    let mut out = vec![0f32; 2 * n_q * D];
    let mut lse = vec![0f32; 2 * n_q];
    c.decode(&ids, n_q as i32, &q, scale, &mut out, Some(&mut lse)).unwrap();
    let group = n_q / H;
    for (i, &seq) in ids.iter().enumerate() {
        let t = lengths[seq as usize];
        let qi = &q[i * n_q * D..(i + 1) * n_q * D];
        let (s_ref, vv) = reference(&c, seq, qi, n_q);
        for j in 0..n_q {
            let row = (i * n_q + j) * ld;
            assert!(rel_err(&scores[row..row + t], &s_ref[j]) <= 1e-5);
            assert!(scores[row + t..row + ld].iter().all(|x| x.is_nan()), "wrote past length");
            let h = j / group;
            // apply
            let want: Vec<f64> = (0..D)
                .map(|d| (0..t).map(|tok| probs[row + tok] as f64 * vv[(tok * H + h) * D + d] as f64).sum())
                .collect();
            let o = (i * n_q + j) * D;
            assert!(rel_err(&applied[o..o + D], &want) <= 1e-5);
            // decode
            let z: Vec<f64> = s_ref[j].iter().map(|s| s * scale as f64).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = p.iter().sum();
            let want: Vec<f64> = (0..D)
                .map(|d| (0..t).map(|tok| p[tok] / sum * vv[(tok * H + h) * D + d] as f64).sum())
                .collect();
            assert!(rel_err(&out[o..o + D], &want) <= 1e-5);
            assert!((lse[i * n_q + j] as f64 - (m + sum.ln())).abs() <= 1e-5 * (m + sum.ln()).abs().max(1.0));
        }
    }
    // f16 and bf16 queries go through the same path.
    let q16: Vec<F16> = q.iter().map(|&x| F16::from_f32(x)).collect();
    let qb: Vec<Bf16> = q.iter().map(|&x| Bf16::from_f32(x)).collect();
    let mut o16 = vec![0f32; out.len()];
    let mut ob = vec![0f32; out.len()];
    c.decode(&ids, n_q as i32, &q16, scale, &mut o16, None).unwrap();
    c.decode(&ids, n_q as i32, &qb, scale, &mut ob, None).unwrap();
    assert!(o16.iter().zip(&out).all(|(a, b)| (a - b).abs() < 1e-2));
    assert!(ob.iter().zip(&out).all(|(a, b)| (a - b).abs() < 5e-2));
}

#[test]
fn remove_reset_and_empty_sequences() {
    let mut rng = Rng::new(4);
    let mut c = Cache::new(&params(3)).unwrap();
    let k = kv(&mut rng, 300, H, D);
    c.append(&[2], &[300], &k, &k).unwrap();
    let q = vec![0.5f32; 9 * D];
    let mut out = vec![1f32; 9 * D];
    let mut lse = vec![0f32; 9];
    c.decode(&[0], 9, &q, 0.1, &mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0) && lse.iter().all(|x| *x == f32::NEG_INFINITY));
    c.remove_seq(2).unwrap();
    assert_eq!(c.seq_length(2).unwrap(), 0);
    c.append(&[1], &[300], &k, &k).unwrap();
    c.reset().unwrap();
    assert_eq!(c.stats(None).unwrap().n_tokens, 0);
    c.sync().unwrap();
    assert_eq!(c.workspace_size(1, 9).unwrap(), c.workspace_size(1, 9).unwrap());
}

#[test]
fn cache_is_send_and_sync_and_shared_reads_run_concurrently() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache>();
    let mut rng = Rng::new(5);
    let mut c = Cache::new(&params(1)).unwrap();
    let k = kv(&mut rng, 500, H, D);
    c.append(&[0], &[500], &k, &k).unwrap();
    let q: Vec<f32> = (0..9 * D).map(|_| rng.uniform()).collect();
    let mut want = vec![0f32; 9 * D];
    c.decode(&[0], 9, &q, 0.125, &mut want, None).unwrap();
    let c = &c;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    let mut out = vec![0f32; 9 * D];
                    c.decode(&[0], 9, &q, 0.125, &mut out, None).unwrap();
                    assert_eq!(out, want);
                }
            });
        }
    });
    // And the cache can move to another thread.
    let mut owned = Cache::new(&params(1)).unwrap();
    std::thread::spawn(move || owned.append(&[0], &[1], &k[..H * D], &k[..H * D]).unwrap())
        .join()
        .unwrap();
}

#[test]
fn f16_and_bf16_conversions() {
    for (x, bits) in [(0.0f32, 0u16), (1.0, 0x3c00), (-2.0, 0xc000), (65504.0, 0x7bff), (1e6, 0x7c00),
                      (5.960_464_5e-8, 0x0001), (6.103_515_6e-5, 0x0400), (0.333_333_34, 0x3555)] {
        assert_eq!(F16::from_f32(x).0, bits, "{x}");
        if bits != 0x7c00 {
            assert_eq!(F16(bits).to_f32(), F16::from_f32(x).to_f32());
        }
    }
    assert!(F16::from_f32(f32::NAN).to_f32().is_nan());
    // Every finite half round-trips exactly through f32.
    for b in 0..=0xffffu16 {
        let h = F16(b);
        let f = h.to_f32();
        if f.is_finite() {
            assert_eq!(F16::from_f32(f).0, b, "{b:#x}");
        }
    }
    assert_eq!(Bf16::from_f32(1.0).0, 0x3f80);
    assert_eq!(Bf16::from_f32(1.0).to_f32(), 1.0);
    assert_eq!(Bf16::from_f32(1.0 + 1.0 / 256.0).to_f32(), 1.0); // tie to even
}

#[test]
fn every_c_function_is_reached_by_the_safe_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("../../../include/packkv/packkv.h")).unwrap();
    let mut src = String::new();
    for f in ["lib.rs", "cache.rs", "error.rs", "params.rs", "types.rs"] {
        src += &std::fs::read_to_string(root.join("src").join(f)).unwrap();
    }
    let mut names = vec![];
    for line in header.lines().filter(|l| l.starts_with("PACKKV_API ")) {
        // "PACKKV_API <type> <name>(..." -> the identifier right before the parenthesis.
        if let Some(end) = line.find('(') {
            let name = line[..end].split_whitespace().last().unwrap().trim_start_matches('*');
            names.push(name.to_string());
        }
    }
    assert!(names.len() >= 22, "{names:?}");
    let missing: Vec<_> = names.iter().filter(|n| !src.contains(&format!("sys::{n}("))).collect();
    assert!(missing.is_empty(), "C functions not wrapped by the safe crate: {missing:?}");
}

// A caller's task runner that runs the tasks one after another and counts its calls.
unsafe extern "C" fn serial_runner(
    user: *mut packkv::sys::ctypes::c_void,
    n_tasks: i32,
    task: packkv::sys::experimental::packkv_x_task_fn,
    ctx: *mut packkv::sys::ctypes::c_void,
) {
    *(user as *mut i32) += 1;
    for i in 0..n_tasks {
        (task.unwrap())(ctx, i);
    }
}

#[test]
fn n_threads_and_callers_runner_give_the_same_bits() {
    let t = 3000usize;
    let mut rng = Rng::new(9);
    let (k, v) = (kv(&mut rng, t, H, D), kv(&mut rng, t, H, D));
    let q = kv(&mut rng, 1, 2 * H, D);
    let mut outs = Vec::new();
    let mut calls = 0i32;
    for n in [1, 3, 0, -1] {
        let mut p = params(1);
        p.max_tokens_per_seq = 4096;
        p.n_threads = n.max(0);
        let mut c = Cache::new(&p).unwrap();
        assert_eq!(c.params().n_threads, n.max(0));
        if n < 0 {
            // SAFETY: serial_runner calls every task once; `calls` outlives the cache's use.
            unsafe { c.set_parallel(Some(serial_runner), &mut calls as *mut i32 as *mut _, 4).unwrap() };
        }
        c.append(&[0], &[t as i32], &k, &v).unwrap();
        let mut out = vec![0f32; 2 * H * D];
        c.decode(&[0], 2 * H as i32, &q, 0.125, &mut out, None).unwrap();
        outs.push(out);
    }
    assert!(calls > 0);
    for o in &outs[1..] {
        assert_eq!(o, &outs[0]);
    }
    let mut p = params(1);
    p.n_threads = -1;
    assert!(Cache::new(&p).is_err());
}
