// Error metrics and curve interpolation of packkv-eval.
#ifndef PACKKV_EVAL_METRICS_H
#define PACKKV_EVAL_METRICS_H

#include <optional>
#include <vector>

namespace packkv_eval {

/** Accumulates a relative L2 error sqrt(sum (est - ref)^2 / sum ref^2) over any
 *  number of elements (all decode steps, heads, tokens, layers). */
struct RelL2 {
  double err2 = 0.0;
  double ref2 = 0.0;
  long long count = 0;

  void add(double ref, double est) {
    const double d = est - ref;
    err2 += d * d;
    ref2 += ref * ref;
    ++count;
  }
  RelL2& operator+=(const RelL2& o) {
    err2 += o.err2;
    ref2 += o.ref2;
    count += o.count;
    return *this;
  }
  /** The relative error; 0 when nothing (or only zeros) was accumulated. */
  double value() const;
};

/** In place: p[i] = exp(scale * s[i] - m) / sum, m = max(scale * s). */
void softmax_inplace(double* p, const double* s, int n, double scale);

/** One point of an error-ratio curve. */
struct CurvePoint {
  double ratio;  // compression ratio (fp16 / bytes)
  double error;  // relative L2 error
};

/** The ratio a curve reaches at error `target`, interpolating log(ratio) linearly in
 *  log(error) between the two points that bracket the target (points with error <= 0
 *  are skipped). Points are taken in the given order (increasing relative scale); if
 *  several consecutive pairs bracket the target, the largest interpolated ratio is
 *  returned. std::nullopt if no pair brackets it (no extrapolation). */
std::optional<double> ratio_at_error(const std::vector<CurvePoint>& curve, double target);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_METRICS_H
