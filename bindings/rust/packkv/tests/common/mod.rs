// Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

/// Deterministic pseudo-random numbers (xorshift64*), no external crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// K/V-like data [n][heads][dim]: per-token scale and offset.
pub fn kv(rng: &mut Rng, n: usize, heads: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * heads * dim);
    for _ in 0..n {
        let scale = 1.5 + rng.uniform();
        let offset = rng.uniform();
        for _ in 0..heads * dim {
            out.push(rng.uniform() * scale + offset);
        }
    }
    out
}

pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for (g, w) in got.iter().zip(want) {
        num += (*g as f64 - w) * (*g as f64 - w);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}
