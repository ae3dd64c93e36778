#pragma once
// Per-token mathematics of the policy-gradient objectives, written once for the host loops and the
// CUDA kernels (POSTTRAIN_HD, plain arithmetic, no library calls but exp).
//
// Subgradients follow torch autograd, so gradients match the frameworks at the kinks as well:
// clamp(x, lo, hi) passes the gradient for lo <= x <= hi (closed interval) and gives 0 outside;
// max(a, b) and min(a, b) send the whole gradient to the selected operand and split it in halves at a
// tie (torch.maximum / torch.minimum); sign(0) = 0.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../config.hpp"

POSTTRAIN_NO_TRAPPING_MATH_BEGIN
namespace posttrain::policy_loss::detail {

// exp(x) in double, correct to about 1 ulp, written as straight-line arithmetic so that a loop calling
// it vectorizes (std::exp is a library call that blocks vectorization): x = n ln2 + r with |r| <= ln2/2,
// a degree-13 Taylor polynomial for e^r (truncation below 5e-18 relative), and 2^n put into the
// exponent bits. Overflow gives +inf, underflow 0 (no subnormals), NaN stays NaN.
POSTTRAIN_HD inline double exp(double x) noexcept {
    constexpr double log2e = 1.4426950408889634;
    constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer in the low bits
    const double xc = x > 709.0 ? 709.0 : (x < -708.0 ? -708.0 : x);
    const double kd = xc * log2e + shifter;
    const double n = kd - shifter;
    const double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    std::int64_t bits;
    std::memcpy(&bits, &kd, sizeof bits);
    // The low bits of kd hold n (two's complement around the shifter); move n + 1023 into the exponent.
    const std::int64_t e = (bits + 1023) << 52;
    double scale;
    std::memcpy(&scale, &e, sizeof scale);
    const double y = p * scale;
    // Out of the reduced range: saturate like exp does (x > 709.78 overflows, x < -708 is below the
    // normal range and is flushed to 0).
    return x > 709.782712893384 ? INFINITY : (x < -708.0 ? 0.0 : (x != x ? x : y));
}

// Derivative of clamp(x, lo, hi) w.r.t. x.
POSTTRAIN_HD inline double clamp_grad(double x, double lo, double hi) noexcept {
    return (x >= lo && x <= hi) ? 1.0 : 0.0;
}
POSTTRAIN_HD inline double clamp(double x, double lo, double hi) noexcept { return x < lo ? lo : (x > hi ? hi : x); }

// Weights of max(a, b) on its operands (torch.maximum: halves at a tie).
struct pick {
    double a, b;
};
POSTTRAIN_HD inline pick max_weights(double a, double b) noexcept {
    return a > b ? pick{1.0, 0.0} : (a < b ? pick{0.0, 1.0} : pick{0.5, 0.5});
}
POSTTRAIN_HD inline pick min_weights(double a, double b) noexcept {
    return a < b ? pick{1.0, 0.0} : (a > b ? pick{0.0, 1.0} : pick{0.5, 0.5});
}

// A mask entry as a weight (bool: 0/1). Defined here, inside the no-trapping-math region, because GCC
// does not inline functions compiled with other floating-point options into the vectorized loops.
template <class M>
POSTTRAIN_HD inline double mask_value(M m) noexcept {
    if constexpr (std::is_same_v<M, bool>) return m ? 1.0 : 0.0;
    else return static_cast<double>(m);
}

POSTTRAIN_HD inline double sign(double x) noexcept { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }

POSTTRAIN_HD inline double sigmoid(double x) noexcept {
    // exp of a non-positive argument only: no overflow.
    const double e = exp(x > 0 ? -x : x);
    return x > 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// The clipped surrogate of PPO on one token, as a function of the log importance weight w:
//   L = max(-A * min(e^w, delta), -A * clamp(e^w, 1 - low, 1 + high)), and with dual clip c > 1,
//   L = min(L, -c * A) for A < 0.
// Returns the value, dL/dw, and which clip is active (for the metrics).
struct clipped_surrogate {
    double value;
    double dw;          // dL / dw
    double ratio;       // e^w
    bool low_clipped;   // the lower clip is active: A < 0 and ratio < 1 - low (TRL is_low_clipped)
    bool high_clipped;  // the upper clip is active: A > 0 and ratio > 1 + high
    bool dual_clipped;  // the dual clip is active: A < 0 and the clipped loss exceeds -c * A
};

struct surrogate_params {
    double low = 0.2, high = 0.2;
    double dual_clip = 0;  // c > 1 enables; 0 disables
    double delta = 0;      // > 0: cap the unclipped ratio at delta (TRL two-sided clipping)
};

// Written with selects only (no branches, & instead of &&) so that the host loops vectorize.
POSTTRAIN_HD inline clipped_surrogate ppo_surrogate(double w, double a, const surrogate_params& p) noexcept {
    const double r = exp(w);
    const bool capped = (p.delta > 0) & (r > p.delta);
    const double r1 = capped ? p.delta : r, dr1 = capped ? 0.0 : r;  // the unclipped branch and d/dw
    const double lo = 1.0 - p.low, hi = 1.0 + p.high;
    const double r2 = clamp(r, lo, hi), dr2 = r * clamp_grad(r, lo, hi);
    const double l1 = -a * r1, l2 = -a * r2;
    const pick m = max_weights(l1, l2);
    const double clipped = l1 > l2 ? l1 : l2;
    const double dclipped = -a * (m.a * dr1 + m.b * dr2);
    const double l3 = -a * p.dual_clip;
    const bool dual_on = (p.dual_clip > 0) & (a < 0);
    const pick n = min_weights(l3, clipped);
    const double value = dual_on ? (clipped < l3 ? clipped : l3) : clipped;
    const double dw = dual_on ? dclipped * n.b : dclipped;
    return {value, dw, r, bool((a < 0) & (r1 < lo)), bool((a > 0) & (r1 > hi)), bool(dual_on & (clipped > l3))};
}

}  // namespace posttrain::policy_loss::detail
POSTTRAIN_NO_TRAPPING_MATH_END
