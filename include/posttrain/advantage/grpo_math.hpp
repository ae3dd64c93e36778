#pragma once
// The GRPO/RLOO per-group arithmetic, written once for host and device (POSTTRAIN_HD, no std
// containers, no exceptions): from a group's moments it derives one affine transform that every row
// of the group goes through. The CUDA and Thrust implementations use it; the host oracle computes
// the same expressions in the same order, so the three paths differ only in summation order.
//
//   out = fill                              (empty, singleton zero/nan/error, zero-variance zero)
//   out = ((v - shift) * factor) / div      (everything else; NaN rows under nonfinite::ignore -> 0)
//
// Regular groups use factor = loo / (sigma + eps) and div = 1 (one rounding for the factor, one for
// the product, as the host does); raw singletons use factor = 1 and div = their denominator.
// Leave-one-out: r - (S - r)/(n-1) = n/(n-1) * (r - mean), hence loo = n/(n-1).

#include <cstdint>

#include "../config.hpp"
#include "../core/view.hpp"
#include "common.hpp"

namespace posttrain::advantage::detail {

// Everything a per-group kernel needs from grpo_options/rloo_options, flattened to plain values so
// that it can be passed to a kernel by value.
struct outcome_params {
    scale std_scale = scale::group;
    double epsilon = 1e-6;
    int ddof = 1;
    bool float32_bessel = false;    // TRL nanstd: the Bessel factor count/(count-1) rounded to float32
    bool leave_one_out = false;
    singleton singleton_groups = singleton::zero;
    zero_variance zero_variance_groups = zero_variance::zero;
    bool skip_nan = false;          // nonfinite::ignore
    double singleton_denom = 1.0;   // the std-plus-epsilon of a raw singleton under scale::group
    double batch_sigma = 0.0;       // the batch std under scale::batch (filled in before the transform)
    double gain = 1.0;              // multiplies each advantage after its rounding to the output type (GPG)
    bool float32_one_pass = false;  // statistics::float32_one_pass: groups of >= 2 rows take float32_one_pass_transform
};

// The moments of one group over its valid rows (NaN rows excluded only under skip_nan).
struct outcome_moments {
    index_t count = 0;
    double mean = 0;
    double m2 = 0;          // sum of squared deviations from the mean
    bool constant = false;  // count >= 1 and max == min exactly (no NaN among the valid rows)
};

// What kind of group this was, with the host's numbering (group_stats_result counters).
enum group_kind : unsigned char { group_regular = 0, group_empty = 1, group_singleton = 2, group_zero_variance = 3 };

struct outcome_transform {
    double shift = 0, factor = 1, div = 1;
    double fill_value = 0;
    bool fill = true;
    bool skip_nan = false;
    bool singleton_error = false;  // singleton::error: the host throws, a device sets a status bit
    unsigned char kind = group_empty;
    double gain = 1.0;

    POSTTRAIN_HD double operator()(double v) const noexcept {
        if (skip_nan && v != v) return 0.0;
        if (fill) return fill_value;
        const double q = (v - shift) * factor;
        return div == 1.0 ? q : q / div;  // q / 1 == q exactly: saves devices a double division per row
    }
    // The value written for the advantage q: rounded to the output type, then scaled by the gain in
    // double and rounded again, as GPG's host path scales the advantages GRPO wrote (y * 1 == y).
    template <class Out>
    POSTTRAIN_HD Out output(double q) const noexcept {
        const Out y = static_cast<Out>(q);
        return gain == 1.0 ? y : static_cast<Out>(static_cast<double>(y) * gain);
    }
};

POSTTRAIN_HD inline double quiet_nan() noexcept {
    // 0/0 without a division the compiler may fold into a trap or a warning.
    return __builtin_nan("");
}

// Standard deviation from the sum of squared deviations of `count` values (count > ddof).
POSTTRAIN_HD inline double std_of_m2(const outcome_params& p, double m2, double count) noexcept {
    using std::sqrt;
    if (p.float32_bessel && p.ddof == 1) return sqrt((m2 / count) * double(float(count) / float(count - 1)));
    return sqrt(m2 / (count - double(p.ddof)));
}

POSTTRAIN_HD inline outcome_transform make_outcome_transform(const outcome_params& p, const outcome_moments& m) noexcept {
    outcome_transform t;
    t.skip_nan = p.skip_nan;
    t.gain = p.gain;
    if (m.count == 0) return t;  // empty (or every row ignored): 0
    if (m.count == 1) {
        t.kind = group_singleton;
        if (p.singleton_groups == singleton::raw) {
            t.fill = false;
            if (p.std_scale == scale::group) t.div = p.singleton_denom;
            else if (p.std_scale == scale::batch) t.div = p.batch_sigma + p.epsilon;
        } else if (p.singleton_groups == singleton::nan) {
            t.fill_value = quiet_nan();
        } else if (p.singleton_groups == singleton::error) {
            t.singleton_error = true;
            t.fill_value = quiet_nan();
        }
        return t;
    }
    if (m.constant) {
        t.kind = group_zero_variance;
        if (p.zero_variance_groups == zero_variance::zero) return t;
    } else {
        t.kind = group_regular;
    }
    t.fill = false;
    t.shift = m.mean;
    const double loo = p.leave_one_out ? double(m.count) / double(m.count - 1) : 1.0;
    double denom = 1.0;
    if (p.std_scale != scale::none)
        denom = (p.std_scale == scale::group ? std_of_m2(p, m.m2, double(m.count)) : p.batch_sigma) + p.epsilon;
    t.factor = loo / denom;
    return t;
}

// ---- statistics::float32_one_pass (verl's vectorized group_mean_std) -----------------------------
// float32 sums in row order, var = (S2 - S1^2/n) / (n - 1), std = sqrt(max(var, eps)). Every backend
// runs this one function over a group's rows in group order, so all of them give the host's values
// bit for bit: on the device the float operations are the round-to-nearest intrinsics, which nvcc
// does not contract into FMAs, and on the host the products go through a volatile temporary, which
// no compiler fuses either (f32_mul): the same bits whatever -ffp-contract or -march says.

POSTTRAIN_HD inline float f32_add(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
POSTTRAIN_HD inline float f32_sub(float a, float b) noexcept { return f32_add(a, -b); }
// A product that is rounded on its own, never fused with the addition that consumes it: on the
// device the intrinsic, on the host a volatile temporary (a host compiler may otherwise contract
// s + a * b into an FMA under -ffp-contract=fast with FMA hardware, e.g. -march=native or AArch64).
POSTTRAIN_HD inline float f32_mul(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    volatile float p = a * b;
    return p;
#endif
}
POSTTRAIN_HD inline double f64_mul(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    volatile double p = a * b;
    return p;
#endif
}
POSTTRAIN_HD inline double f64_add(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
POSTTRAIN_HD inline float f32_div(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
POSTTRAIN_HD inline float f32_sqrt(float a) noexcept {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(a);
#else
    return __builtin_sqrtf(a);
#endif
}

// Row j of a group whose values are consecutive doubles (a reader for the functions below: a
// functor, not a lambda, so that host code may pass it to these host-and-device functions).
struct values_at {
    const double* v;
    POSTTRAIN_HD double operator()(index_t j) const { return v[j]; }
};

struct float32_group_stats {
    float count = 0, mean = 0, std = 1;
};

// The statistics of n rows, load(j) giving row j (0 <= j < n) of the group in group order.
template <class Load>
POSTTRAIN_HD float32_group_stats float32_one_pass_stats(index_t n, double eps, const Load& load) {
    float s1 = 0, s2 = 0;
    for (index_t j = 0; j < n; ++j) {
        const float v = static_cast<float>(load(j));
        s1 = f32_add(s1, v);
        s2 = f32_add(s2, f32_mul(v, v));
    }
    float32_group_stats s;
    s.count = static_cast<float>(n);
    if (n <= 1) return s;  // singleton (or empty): mean 0, std 1
    const float c = s.count;
    s.mean = f32_div(s1, c);
    const float var = f32_div(f32_sub(s2, f32_div(f32_mul(s1, s1), c)), f32_sub(c, 1.0f));
    const float floor = static_cast<float>(eps);
    s.std = f32_sqrt(var > floor ? var : floor);
    return s;
}

// The transform of a group of n >= 2 rows under statistics::float32_one_pass (outcome_params as
// for float64; the option checks leave only scale::group or scale::none, no leave-one-out, no
// ignored rows): shift by the float32 mean, divide by (float32 std + float32 eps) in double, as
// verl's float32 tensors meet a float64 reward. Groups of 0 or 1 rows take make_outcome_transform.
template <class Load>
POSTTRAIN_HD outcome_transform float32_one_pass_transform(const outcome_params& p, index_t n, const Load& load) {
    outcome_transform t;
    t.kind = group_regular;
    t.gain = p.gain;
    bool constant = true;
    const double first = static_cast<double>(load(0));
    for (index_t j = 1; j < n; ++j) constant = constant && static_cast<double>(load(j)) == first;
    if (constant) {
        t.kind = group_zero_variance;
        if (p.zero_variance_groups == zero_variance::zero) return t;  // fill 0
    }
    const float32_group_stats s = float32_one_pass_stats(n, p.epsilon, load);
    t.fill = false;
    t.shift = static_cast<double>(s.mean);
    if (p.std_scale != scale::none) t.div = static_cast<double>(f32_add(s.std, static_cast<float>(p.epsilon)));
    return t;
}

// Running first-pass statistics of a group: count, sum, min, max, and whether a NaN was summed.
// Combining is associative and commutative up to the rounding of the sum, so every backend may
// use its own (fixed) reduction tree.
struct outcome_partial {
    double sum = 0;
    double lo = __builtin_huge_val();
    double hi = -__builtin_huge_val();
    long long count = 0;
    unsigned flags = 0;  // bit 0: a NaN was counted (never constant); bit 1: a non-finite value was seen

    POSTTRAIN_HD void add(double v, bool skip_nan) noexcept {
        const bool nan = v != v;
        if (!(v - v == v - v)) flags |= 2u;
        if (nan && skip_nan) return;
        if (nan) flags |= 1u;
        sum += v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        ++count;
    }
};

struct outcome_partial_combine {
    POSTTRAIN_HD outcome_partial operator()(const outcome_partial& a, const outcome_partial& b) const noexcept {
        outcome_partial r;
        r.sum = a.sum + b.sum;
        r.lo = a.lo < b.lo ? a.lo : b.lo;
        r.hi = a.hi > b.hi ? a.hi : b.hi;
        r.count = a.count + b.count;
        r.flags = a.flags | b.flags;
        return r;
    }
};

POSTTRAIN_HD inline double outcome_mean(const outcome_partial& s) noexcept {
    return s.count > 0 ? s.sum / double(s.count) : 0.0;
}

// The squared deviation a row contributes to the second pass (0 for an ignored NaN row).
POSTTRAIN_HD inline double outcome_sq_dev(double v, double mean, bool skip_nan) noexcept {
    if (skip_nan && v != v) return 0.0;
    const double d = v - mean;
    return d * d;
}

// The batch std (scale::batch) from the whole batch's partial and its squared deviations.
POSTTRAIN_HD inline double batch_sigma_of(const outcome_params& p, const outcome_partial& all, double m2) noexcept {
    const double dof = double(all.count) - double(p.ddof);
    return dof > 0 ? std_of_m2(p, m2, double(all.count)) : quiet_nan();
}

POSTTRAIN_HD inline outcome_moments finish_moments(const outcome_partial& s, double m2) noexcept {
    outcome_moments m;
    m.count = s.count;
    m.mean = outcome_mean(s);
    m.m2 = m2;
    m.constant = s.count > 0 && (s.flags & 1u) == 0 && s.lo == s.hi;
    return m;
}

}  // namespace posttrain::advantage::detail
