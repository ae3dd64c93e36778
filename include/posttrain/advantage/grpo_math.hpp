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

    POSTTRAIN_HD double operator()(double v) const noexcept {
        if (skip_nan && v != v) return 0.0;
        if (fill) return fill_value;
        const double q = (v - shift) * factor;
        return div == 1.0 ? q : q / div;  // q / 1 == q exactly: saves devices a double division per row
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
