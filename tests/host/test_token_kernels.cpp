// The per-token kernels of CPU attention (cpu/token_kernels.h) and the decode softmax
// (cpu/softmax.h) on every instruction set this CPU has, against float64 values computed
// here with std::exp and plain loops: the SIMD exp's relative error over [-708, 0], the
// softmax's probabilities, log-sum-exp, -inf tokens and rows, row lengths that leave
// vector tails; the score fold, the apply weights (gathered through a permutation or not,
// and the refusal of weights >= 2^100 or NaN) and the float64 addition of a block's sums.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/softmax.h"
#include "cpu/token_kernels.h"

namespace {

using packkv::CpuIsa;

std::vector<CpuIsa> isas() {
  std::vector<CpuIsa> v = {CpuIsa::kPortable};
  if ((int)packkv::cpu_isa_supported() >= (int)CpuIsa::kAvx2) v.push_back(CpuIsa::kAvx2);
  if ((int)packkv::cpu_isa_supported() >= (int)CpuIsa::kAvx512) v.push_back(CpuIsa::kAvx512);
  return v;
}

// Restores the instruction set in use when the test ends.
struct IsaGuard {
  CpuIsa before = packkv::cpu_isa();
  ~IsaGuard() { packkv::set_cpu_isa_for_tests(before); }
};

const double kInf = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE("softmax: exp of every path within 1e-13 of std::exp over [-708, 0], below it at most e^-708, 0 for -inf") {
  IsaGuard guard;
  for (CpuIsa isa : isas()) {
    packkv::set_cpu_isa_for_tests(isa);
    INFO("isa " << std::string(packkv::cpu_isa_name(isa)));
    // row {0, x_1, .., x_k}, scale 1: the max is 0, scores become exp(x_t) exactly as computed
    std::vector<double> xs = {0.0, -1e-300, -1e-9, -0.34657359, -0.34657360, -0.5, -1.0, -2.5, -10.0, -87.3,
                              -100.0, -500.0, -700.0, -707.9};
    for (int i = 0; i < 2000; ++i) xs.push_back(-708.0 * i / 1999.0);
    std::vector<double> s = xs;
    std::vector<float> p(xs.size());
    packkv::softmax_row(s.data(), (int64_t)s.size(), 1.0f, p.data());
    double worst = 0.0;
    for (size_t t = 0; t < xs.size(); ++t) worst = std::max(worst, std::fabs(s[t] - std::exp(xs[t])) / std::exp(xs[t]));
    CHECK(worst < 1e-13);
    std::vector<double> low = {0.0, -708.5, -745.0, -1e6, -kInf, -709.0, -800.0, -kInf, -1e300};
    std::vector<float> pl(low.size());
    const double lse = packkv::softmax_row(low.data(), (int64_t)low.size(), 1.0f, pl.data());
    CHECK(low[0] == 1.0);
    CHECK(low[4] == 0.0);  // -inf
    CHECK(low[7] == 0.0);
    CHECK(pl[0] == 1.0f);
    for (size_t t = 1; t < low.size(); ++t) {
      CHECK(low[t] <= std::exp(-708.0));  // SIMD paths: 0; portable: std::exp, subnormal
      CHECK(pl[t] == 0.0f);
      
    }
    CHECK(lse == 0.0);
  }
}

TEST_CASE("softmax: probabilities and log-sum-exp against float64 on every path, every tail length") {
  IsaGuard guard;
  std::mt19937 rng(11);
  std::normal_distribution<double> n01(0.0, 1.0);
  for (CpuIsa isa : isas()) {
    packkv::set_cpu_isa_for_tests(isa);
    for (int len = 1; len <= 37; ++len) {
      INFO("isa " << std::string(packkv::cpu_isa_name(isa)) << ", len " << len);
      std::vector<double> s(len);
      for (double& x : s) x = 40.0 * n01(rng);
      if (len > 3) s[1] = s[len - 2] = -kInf;  // out of the window
      const float scale = 0.125f;
      double mx = -kInf;
      for (double x : s) mx = std::max(mx, (double)scale * x);
      double sum = 0.0;
      for (double x : s) sum += std::exp((double)scale * x - mx);
      std::vector<double> work = s;
      std::vector<float> p(len);
      const double lse = packkv::softmax_row(work.data(), len, scale, p.data());
      CHECK(std::fabs(lse - (mx + std::log(sum))) <= 1e-12 * std::max(1.0, std::fabs(lse)));
      bool ok = true;
      for (int t = 0; t < len; ++t) {
        const double ref = std::exp((double)scale * s[t] - mx) / sum;
        ok = ok && std::fabs((double)p[t] - ref) <= 1e-7 * ref + 1e-45;  // fp32 rounding of the probability
      }
      CHECK(ok);
    }
    std::vector<double> none(21, -kInf);
    std::vector<float> p(21, 7.0f);
    CHECK(packkv::softmax_row(none.data(), 21, 1.0f, p.data()) == -kInf);
    bool zeros = true;
    for (float x : p) zeros = zeros && x == 0.0f;
    CHECK(zeros);
  }
}

TEST_CASE("token kernels: fold, weights and block sums against float64 on every path") {
  const int n_q = 3, n = 64, d = 32, P = 16;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<float> acc((size_t)n_q * P), scale(n), probs((size_t)n_q * 70), part((size_t)n_q * d);
  std::vector<int32_t> zero(n), perm(n);
  std::vector<double> unscale = {1.0, 0x1p-20, 4.0}, min_term = {3.5, -2.25, 100.0}, sum_q = {-1.5, 0.75, 2.0},
                      bias = {0.0, 10.0, -3.0}, beta0 = {0.5, -1.0, 2.0};
  for (float& x : acc) x = std::floor(1000.0f * u01(rng));
  for (int i = 0; i < n; ++i) {
    scale[i] = 0.01f + u01(rng);
    zero[i] = (int32_t)(rng() % 2001) - 1000;
    perm[i] = (i * 37 + 5) % n;  // a permutation of 0..63
  }
  for (float& x : probs) x = u01(rng);
  for (float& x : part) x = 100.0f * u01(rng) - 50.0f;
  for (CpuIsa isa : isas()) {
    INFO("isa " << std::string(packkv::cpu_isa_name(isa)));
    const packkv::TokenKernels& k = packkv::token_kernels(isa);
    std::vector<double> folded((size_t)n_q * P);
    k.fold_round(acc.data(), n_q, unscale.data(), min_term.data(), sum_q.data(), bias.data(), zero.data() + P,
                 scale.data() + P, folded.data());
    bool ok = true;
    for (int j = 0; j < n_q; ++j)
      for (int i = 0; i < P; ++i) {
        const double ref = ((double)acc[j * P + i] * unscale[j] + min_term[j] + zero[P + i] * sum_q[j]) * scale[P + i] +
                           bias[j];
        ok = ok && std::fabs(folded[j * P + i] - ref) <= 1e-13 * (std::fabs(ref) + 1e3);
      }
    CHECK(ok);
    for (bool permuted : {false, true}) {
      INFO("permuted " << permuted);
      const size_t ld = 70;
      std::vector<float> w((size_t)n_q * n);
      std::vector<double> wsum((size_t)n_q * (n / P)), beta(n_q);
      REQUIRE(k.weights(probs.data(), ld, n_q, n, permuted ? perm.data() : nullptr, scale.data(), zero.data(), w.data(),
                        wsum.data(), beta.data()));
      bool wok = true, sok = true;
      for (int j = 0; j < n_q; ++j) {
        double b = 0.0;
        for (int r = 0; r < n / P; ++r) {
          double ws = 0.0;
          for (int slot = r * P; slot < (r + 1) * P; ++slot) {
            const double exact = (double)probs[j * ld + (permuted ? perm[slot] : slot)] * (double)scale[slot];
            wok = wok && w[(size_t)j * n + slot] == (float)exact;  // the exact product rounded once
            ws += (double)(float)exact;
            b += (double)(float)exact * zero[slot];
          }
          sok = sok && std::fabs(wsum[(size_t)j * (n / P) + r] - ws) <= 1e-14 * ws;
        }
        sok = sok && std::fabs(beta[j] - b) <= 1e-12 * 1000.0 * n;
      }
      CHECK(wok);
      CHECK(sok);
    }
    std::vector<float> big = probs, w((size_t)n_q * n);
    std::vector<double> wsum((size_t)n_q * (n / P)), beta(n_q);
    big[2 * 70 + 40] = 0x1p100f / scale[40] * 1.01f;  // w = p * s just above 2^100
    CHECK_FALSE(k.weights(big.data(), 70, n_q, n, nullptr, scale.data(), zero.data(), w.data(), wsum.data(), beta.data()));
    big = probs;
    big[17] = std::numeric_limits<float>::quiet_NaN();
    CHECK_FALSE(k.weights(big.data(), 70, n_q, n, nullptr, scale.data(), zero.data(), w.data(), wsum.data(), beta.data()));
    std::vector<double> out((size_t)n_q * d, 1.0);
    k.add_part(part.data(), n_q, d, 0.25, beta0.data(), out.data());
    bool aok = true;
    for (int j = 0; j < n_q; ++j)
      for (int ch = 0; ch < d; ++ch) aok = aok && out[(size_t)j * d + ch] == 1.0 + ((double)part[(size_t)j * d + ch] * 0.25 + beta0[j]);
    CHECK(aok);
  }
}
