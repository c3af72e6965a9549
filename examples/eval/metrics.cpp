#include "metrics.h"

#include <algorithm>
#include <cmath>

namespace packkv_eval {

double RelL2::value() const { return ref2 > 0.0 ? std::sqrt(err2 / ref2) : (err2 > 0.0 ? INFINITY : 0.0); }

void softmax_inplace(double* p, const double* s, int n, double scale) {
  double m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, scale * s[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    p[i] = std::exp(scale * s[i] - m);
    sum += p[i];
  }
  for (int i = 0; i < n; ++i) p[i] /= sum;
}

std::optional<double> ratio_at_error(const std::vector<CurvePoint>& curve, double target) {
  if (!(target > 0.0)) return std::nullopt;
  std::vector<CurvePoint> pts;
  for (const auto& p : curve)
    if (p.error > 0.0 && p.ratio > 0.0) pts.push_back(p);
  std::optional<double> best;
  for (size_t i = 0; i + 1 < pts.size(); ++i) {
    const CurvePoint& a = pts[i];
    const CurvePoint& b = pts[i + 1];
    const double lo = std::min(a.error, b.error), hi = std::max(a.error, b.error);
    if (target < lo || target > hi) continue;
    double r;
    if (hi == lo) {
      r = std::max(a.ratio, b.ratio);
    } else {
      const double w = (std::log(target) - std::log(a.error)) / (std::log(b.error) - std::log(a.error));
      r = std::exp(std::log(a.ratio) + w * (std::log(b.ratio) - std::log(a.ratio)));
    }
    if (!best || r > *best) best = r;
  }
  return best;
}

}  // namespace packkv_eval
