//! Pools, truncate and fork (experimental API): contents against fresh caches, the budget
//! error with the bytes it needed, failures that change nothing, pool lifetime and threads.
mod common;

use common::{kv, Rng};
use packkv::{Cache, Params, Pool, PoolOptions, Status, StatusKind};

const H: usize = 2;
const D: usize = 32;
const ROW: usize = H * D;

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

fn contents(c: &Cache, seq: i32) -> (Vec<f32>, Vec<f32>) {
    let n = c.seq_length(seq).unwrap() as usize;
    let (mut k, mut v) = (vec![0f32; n * ROW], vec![0f32; n * ROW]);
    c.decompress(seq, Some(&mut k), Some(&mut v)).unwrap();
    (k, v)
}

fn state(c: &Cache, n_seqs: i32) -> Vec<String> {
    let mut out = vec![format!("{:?}", c.stats(None).unwrap())];
    for s in 0..n_seqs {
        out.push(format!("{:?}{:?}", c.stats(Some(s)).unwrap(), contents(c, s)));
    }
    out
}

#[test]
fn shared_pool_holds_what_a_private_cache_holds_and_outlives_its_handle() {
    let mut rng = Rng::new(3);
    let k = kv(&mut rng, 1500, H, D);
    let v = kv(&mut rng, 1500, H, D);
    let pool = Pool::new(&PoolOptions { page_bytes: 65536, ..Default::default() }).unwrap();
    let mut a = Cache::new_in_pool(&params(1), &pool).unwrap();
    assert_eq!(pool.stats().unwrap().n_caches, 1);
    drop(pool);
    a.append(&[0], &[1500], &k, &v).unwrap();
    let mut r = Cache::new(&params(1)).unwrap();
    r.append(&[0], &[1500], &k, &v).unwrap();
    assert_eq!(contents(&a, 0), contents(&r, 0));
}

#[test]
fn budget_exceeded_appends_nothing_and_reports_bytes_needed() {
    let mut rng = Rng::new(4);
    let k = kv(&mut rng, 3000, H, D);
    let v = kv(&mut rng, 3000, H, D);
    let page = 8192i64;
    let pool = Pool::new(&PoolOptions { page_bytes: page, budget_bytes: 3 * page, ..Default::default() }).unwrap();
    let mut c = Cache::new_in_pool(&params(1), &pool).unwrap();
    assert!(pool.tokens_fit().unwrap().unwrap() > 0);
    let mut failed = None;
    for t in 0..3000 {
        let before = (state(&c, 1), pool.stats().unwrap());
        if let Err(e) = c.append(&[0], &[1], &k[t * ROW..(t + 1) * ROW], &v[t * ROW..(t + 1) * ROW]) {
            assert_eq!(e.kind(), StatusKind::BudgetExceeded);
            assert_eq!(e.code, Status::BUDGET_EXCEEDED);
            assert_eq!(e.bytes_needed, page);
            assert!(e.message.contains("packkv_cache_append"), "{}", e.message);
            assert_eq!((state(&c, 1), pool.stats().unwrap()), before);
            failed = Some(t);
            break;
        }
    }
    assert!(failed.is_some());
    assert_eq!(pool.stats().unwrap().free_bytes, Some(0));
    c.truncate(0, 64).unwrap();
    c.append(&[0], &[1], &k[..ROW], &v[..ROW]).unwrap();
    drop(c);
    let s = pool.stats().unwrap();
    assert_eq!((s.bytes_in_use, s.bytes_held, s.n_caches), (0, 0, 0));
}

#[test]
fn truncate_and_fork_match_fresh_caches() {
    let mut rng = Rng::new(5);
    let k = kv(&mut rng, 1200, H, D);
    let v = kv(&mut rng, 1200, H, D);
    let mut c = Cache::new(&params(2)).unwrap();
    c.append(&[0], &[1000], &k[..1000 * ROW], &v[..1000 * ROW]).unwrap();
    c.truncate(0, 640).unwrap(); // a block boundary: exact prefix
    let (k0, _) = contents(&c, 0);
    let mut r = Cache::new(&params(1)).unwrap();
    r.append(&[0], &[1000], &k[..1000 * ROW], &v[..1000 * ROW]).unwrap();
    assert_eq!(k0[..], contents(&r, 0).0[..640 * ROW]);
    c.fork(0, 1).unwrap();
    assert_eq!(c.stats(None).unwrap().n_blocks, c.stats(Some(1)).unwrap().n_blocks);
    c.append(&[1], &[200], &k[1000 * ROW..], &v[1000 * ROW..]).unwrap();
    let mut r2 = Cache::new(&params(1)).unwrap();
    r2.append(&[0], &[640], &k[..640 * ROW], &v[..640 * ROW]).unwrap();
    r2.append(&[0], &[200], &k[1000 * ROW..], &v[1000 * ROW..]).unwrap();
    assert_eq!(contents(&c, 1), contents(&r2, 0));
    assert_eq!(contents(&c, 0).0, k0);
}

#[test]
fn failures_change_nothing() {
    let mut rng = Rng::new(6);
    let k = kv(&mut rng, 300, H, D);
    let mut c = Cache::new(&params(2)).unwrap();
    c.append(&[0, 1], &[200, 100], &k, &k).unwrap();
    let before = state(&c, 2);
    assert_eq!(c.truncate(0, 201).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(c.truncate(0, -1).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(c.truncate(5, 0).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(c.fork(0, 1).unwrap_err().kind(), StatusKind::InvalidState);
    assert_eq!(c.fork(0, 0).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(state(&c, 2), before);
    let bad = Pool::new(&PoolOptions { page_bytes: 5000, ..Default::default() }).unwrap_err();
    assert_eq!(bad.kind(), StatusKind::InvalidArgument);
    assert!(bad.message.contains("page_bytes"));
    let reserve = Pool::new(&PoolOptions { reserve: true, ..Default::default() }).unwrap_err();
    assert_eq!(reserve.kind(), StatusKind::InvalidArgument);
    let small = Pool::new(&PoolOptions { page_bytes: 4096, ..Default::default() }).unwrap();
    let mut big = params(1);
    big.n_kv_heads = 8;
    big.head_dim = 128;
    assert_eq!(Cache::new_in_pool(&big, &small).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(packkv::page_bytes_for(&big).unwrap(), 1 << 20);
}

#[test]
fn caches_of_one_pool_on_threads() {
    let pool = Pool::new(&PoolOptions { page_bytes: 16384, ..Default::default() }).unwrap();
    let mut rng = Rng::new(7);
    let k = kv(&mut rng, 2000, H, D);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (pool, k) = (&pool, &k);
            s.spawn(move || {
                let mut c = Cache::new_in_pool(&params(1), pool).unwrap();
                for t in (0..2000).step_by(10) {
                    c.append(&[0], &[10], &k[t * ROW..(t + 10) * ROW], &k[t * ROW..(t + 10) * ROW]).unwrap();
                }
                let mut r = Cache::new(&params(1)).unwrap();
                r.append(&[0], &[2000], k, k).unwrap();
                assert_eq!(contents(&c, 0), contents(&r, 0));
            });
        }
    });
    assert_eq!(pool.stats().unwrap().bytes_in_use, 0);
}

#[test]
fn sliding_window_masks_and_frees() {
    let mut rng = Rng::new(8);
    let k = kv(&mut rng, 1500, H, D);
    let v = kv(&mut rng, 1500, H, D);
    let mut c = Cache::new(&params(1)).unwrap();
    let mut r = Cache::new(&params(1)).unwrap();
    c.set_window(200).unwrap();
    for t in (0..1500).step_by(100) {
        c.append(&[0], &[100], &k[t * ROW..(t + 100) * ROW], &v[t * ROW..(t + 100) * ROW]).unwrap();
        r.append(&[0], &[100], &k[t * ROW..(t + 100) * ROW], &v[t * ROW..(t + 100) * ROW]).unwrap();
    }
    assert_eq!(c.window_start(0).unwrap(), 1300);
    let q = kv(&mut rng, 1, 4, D);
    let (mut s, mut sr) = (vec![0f32; 4 * 1500], vec![0f32; 4 * 1500]);
    c.scores(&[0], 4, &q, &mut s, 1500).unwrap();
    r.scores(&[0], 4, &q, &mut sr, 1500).unwrap();
    for j in 0..4 {
        assert!(s[j * 1500..j * 1500 + 1300].iter().all(|x| *x == f32::NEG_INFINITY));
        assert_eq!(s[j * 1500 + 1300..(j + 1) * 1500], sr[j * 1500 + 1300..(j + 1) * 1500]);
    }
    assert!(contents(&c, 0).0[..1300 * ROW].iter().all(|x| x.is_nan()));
    assert!(c.stats(None).unwrap().n_blocks < r.stats(None).unwrap().n_blocks);
    assert_eq!(c.set_window(5).unwrap_err().kind(), StatusKind::InvalidState);
    assert_eq!(c.truncate(0, 1299).unwrap_err().kind(), StatusKind::InvalidArgument);
}

#[test]
fn export_import_roundtrip_and_bad_bytes() {
    let mut rng = Rng::new(9);
    let k = kv(&mut rng, 700, H, D);
    let mut a = Cache::new(&params(1)).unwrap();
    a.append(&[0], &[700], &k, &k).unwrap();
    let data = a.export_seq(0).unwrap();
    assert_eq!(&data[..8], b"PACKKVSQ");
    let mut b = Cache::new(&params(2)).unwrap();
    b.import_seq(1, &data).unwrap();
    assert_eq!(contents(&a, 0), contents(&b, 1));
    assert_eq!(b.export_seq(1).unwrap(), data);
    let before = state(&b, 2);
    let e = b.import_seq(0, &data[..data.len() - 1]).unwrap_err();
    assert_eq!(e.kind(), StatusKind::InvalidArgument);
    assert!(e.message.contains("truncated"), "{}", e.message);
    let mut flipped = data.clone();
    flipped[300] ^= 4;
    assert!(b.import_seq(0, &flipped).unwrap_err().message.contains("checksum"));
    let mut version = data.clone();
    version[8] = 9;
    assert_eq!(b.import_seq(0, &version).unwrap_err().kind(), StatusKind::VersionMismatch);
    assert_eq!(b.import_seq(1, &data).unwrap_err().kind(), StatusKind::InvalidState);
    assert_eq!(b.import_seq(0, &[]).unwrap_err().kind(), StatusKind::InvalidArgument);
    assert_eq!(state(&b, 2), before);
}
