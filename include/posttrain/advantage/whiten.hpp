#pragma once
// Masked statistics over [N, T] token tensors: mean, variance, whitening (global, token-weighted) and
// per-row normalisation. The mask weights each element (0/1 masks select; verl multiplies by the
// mask value, so fractional masks weight). Reductions run row by row in a fixed order, so every
// policy gives the same bits.

#include <cmath>
#include <variant>

#include "tokens.hpp"

namespace posttrain::advantage {

// What happens when there are too few valid tokens for the requested variance (fewer than ddof + 1).
enum class degenerate {
    zeros,  // write zeros and report it (posttrain's default)
    raise,  // throw invalid_argument (verl raises ValueError)
};

// How the variance regulariser enters the reciprocal square root.
enum class variance_guard {
    add,    // rsqrt(var + epsilon)            (verl masked_whiten)
    clamp,  // rsqrt(max(var, epsilon))        (OpenRLHF)
};

struct masked_stats_options {
    posttrain::ddof ddof = posttrain::ddof::sample;
    double count_epsilon = 0;  // added to the mask sum in every mean (verl: 1e-8)
    degenerate on_degenerate = degenerate::zeros;

    static constexpr masked_stats_options verl(bool unbiased = true) {
        return {unbiased ? posttrain::ddof::sample : posttrain::ddof::population, 1e-8, degenerate::raise};
    }
};

struct whiten_options {
    bool shift_mean = true;  // false: add the mean back (scale only)
    bool scale = true;       // false: no division by the std (centre only; OpenRLHF no_std_norm)
    posttrain::ddof ddof = posttrain::ddof::sample;
    double count_epsilon = 0;
    double epsilon = 1e-8;
    variance_guard guard = variance_guard::add;
    bool mask_output = false;  // multiply the result by the mask (masked positions become 0)
    degenerate on_degenerate = degenerate::zeros;

    // verl masked_whiten (token-weighted, unbiased, rsqrt(var + 1e-8), masked positions transformed too).
    static constexpr whiten_options verl(bool shift_mean = true) {
        whiten_options o;
        o.shift_mean = shift_mean;
        o.count_epsilon = 1e-8;
        o.on_degenerate = degenerate::raise;
        return o;
    }
    // OpenRLHF advantage whitening: biased variance, rsqrt(clamp(var, 1e-8)), no extra masking;
    // no_std_norm centres only.
    static constexpr whiten_options openrlhf(bool no_std_norm = false) {
        whiten_options o;
        o.scale = !no_std_norm;
        o.ddof = posttrain::ddof::population;
        o.guard = variance_guard::clamp;
        return o;
    }
};

namespace detail {

// Sum over the whole [N, T] tensor of f(i, t), reduced row by row in a fixed order.
template <class Policy, class F>
double masked_total(const Policy& p, index_t rows, index_t cols, F&& f) {
    return posttrain::detail::chunked_reduce(
        p, rows, 0.0,
        [&](index_t lo, index_t hi) {
            double s = 0;
            for (index_t i = lo; i < hi; ++i)
                s += posttrain::detail::fixed_order_sum(cols, [&](index_t t) { return f(i, t); });
            return s;
        },
        [](double a, double b) { return a + b; });
}

// Mean and variance of x under mask m (weights), following the options' conventions. valid = false
// when the count is too small for the requested degrees of freedom.
// The weight sum and the mean (variance left 0): what masked_mean needs, and the first half of
// masked_moments.
template <class Policy, class X, class M>
moments_result masked_count_and_mean(const Policy& p, X x, M m, double count_eps) {
    const index_t rows = x.extent(0), cols = x.extent(1);
    moments_result r;
    r.count = masked_total(p, rows, cols, [&](index_t i, index_t t) { return mask_weight(m(i, t)); });
    const double sum = masked_total(p, rows, cols, [&](index_t i, index_t t) { return double(x(i, t)) * mask_weight(m(i, t)); });
    // The mean of nothing is 0 (not 0/0): an all-masked batch contributes no signal.
    r.mean = r.count + count_eps != 0 ? sum / (r.count + count_eps) : 0.0;
    return r;
}

template <class Policy, class X, class M>
moments_result masked_moments(const Policy& p, X x, M m, posttrain::ddof dof, double count_eps, bool& valid) {
    const index_t rows = x.extent(0), cols = x.extent(1);
    moments_result r = masked_count_and_mean(p, x, m, count_eps);
    const double m2 = masked_total(p, rows, cols, [&](index_t i, index_t t) {
        const double d = double(x(i, t)) - r.mean;
        return d * d * mask_weight(m(i, t));
    });
    // verl: var = mean((x - mu)^2) * M / (M - 1); the population form divides by M (+ count_eps).
    const double biased = r.count + count_eps != 0 ? m2 / (r.count + count_eps) : 0.0;
    const int k = static_cast<int>(dof);
    valid = r.count > double(k) && r.count > 0;
    r.variance = k == 0 ? biased : biased * (r.count / (r.count - 1.0));
    return r;
}

// The shapes and overlaps the host and CUDA entries both check. masked_whiten's and
// masked_normalize's out may be values itself (in place: everything an element's output depends on
// is read before it is written) and otherwise shares no byte with values or the mask, which are
// read while out is written.
template <class X, class M, class O>
void check_elementwise_views(const X& x, const M& m, const O& o, const char* fn) {
    check_same_shape(m, x, {fn, "mask"}, "values");
    check_same_shape(o, x, {fn, "out"}, "values");
    check_same_or_disjoint(o, x, {fn, "out"}, "values");
    check_no_alias(o, m, {fn, "out"}, "mask");
}

// masked_row_mean's: one entry per row, apart from values and mask.
template <class X, class M, class O>
void check_row_mean_views(const X& x, const M& m, const O& o, const char* fn) {
    check_same_shape(m, x, {fn, "mask"}, "values");
    check_extent(o.extent(0), x.extent(0), {fn, "out"}, "length (one entry per row)");
    check_no_alias(o, x, {fn, "out"}, "values");
    check_no_alias(o, m, {fn, "out"}, "mask");
}

inline void on_degenerate(degenerate d, double count, const char* fn) {
    if (d == degenerate::raise)
        posttrain::detail::raise_invalid_argument(fn, "mask",
                                                  "too few valid tokens for the variance (mask sum " + std::to_string(count) + ")");
}

}  // namespace detail

// Mean of values under mask over the whole tensor: sum(x * m) / (sum(m) + count_epsilon); 0 when
// the denominator is 0.
template <class Policy, class Values, class Mask>
[[nodiscard]] double masked_mean(const Policy& policy, const Values& values, const Mask& mask,
                                 const masked_stats_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::masked_mean: host policy expected");
    constexpr const char* fn = "posttrain::advantage::masked_mean";
    return std::visit(
        [&](auto x, auto m) {
            detail::check_same_shape(m, x, {fn, "mask"}, "values");
            return detail::masked_count_and_mean(policy, x, m, options.count_epsilon).mean;
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

// Per-row masked mean: out[i] = sum_t x m / (sum_t m + count_epsilon); 0 for a row with no weight.
template <class Policy, class Values, class Mask, class Out>
void masked_row_mean(const Policy& policy, const Values& values, const Mask& mask, Out&& out,
                     const masked_stats_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::masked_row_mean: host policy expected");
    constexpr const char* fn = "posttrain::advantage::masked_row_mean";
    std::visit(
        [&](auto x, auto m, auto o) {
            detail::check_row_mean_views(x, m, o, fn);
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, x.extent(0), x.extent(1), [&](index_t i) {
                const double s = posttrain::detail::fixed_order_sum(x.extent(1), [&](index_t t) {
                    return double(x(i, t)) * detail::mask_weight(m(i, t));
                });
                const double c = posttrain::detail::fixed_order_sum(x.extent(1), [&](index_t t) { return detail::mask_weight(m(i, t)); });
                o(i) = static_cast<O>(c + options.count_epsilon != 0 ? s / (c + options.count_epsilon) : 0.0);
            });
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<1>(out, {fn, "out"}));
}

// Masked variance over the whole tensor (ddof as stated; verl's Bessel factor M/(M-1)).
template <class Policy, class Values, class Mask>
[[nodiscard]] double masked_var(const Policy& policy, const Values& values, const Mask& mask,
                                const masked_stats_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::masked_var: host policy expected");
    constexpr const char* fn = "posttrain::advantage::masked_var";
    return std::visit(
        [&](auto x, auto m) {
            detail::check_same_shape(m, x, {fn, "mask"}, "values");
            bool valid = true;
            const moments_result r = detail::masked_moments(policy, x, m, options.ddof, options.count_epsilon, valid);
            if (!valid) {
                detail::on_degenerate(options.on_degenerate, r.count, fn);
                return 0.0;
            }
            return r.variance;
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

// Global token-weighted whitening: out = (x - mean) * rsqrt(var (+|max) epsilon) [+ mean if !shift_mean]
// [* mask]. Returns the statistics used. With too few valid tokens, writes zeros (or raises).
template <class Policy, class Values, class Mask, class Out>
moments_result masked_whiten(const Policy& policy, const Values& values, const Mask& mask, Out&& out,
                             const whiten_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::masked_whiten: host policy expected");
    constexpr const char* fn = "posttrain::advantage::masked_whiten";
    return std::visit(
        [&](auto x, auto m, auto o) {
            detail::check_elementwise_views(x, m, o, fn);  // in place allowed: statistics are complete before the first write
            bool valid = true;
            const moments_result r = detail::masked_moments(policy, x, m, options.ddof, options.count_epsilon, valid);
            using O = typename decltype(o)::value_type;
            if (!valid) detail::on_degenerate(options.on_degenerate, r.count, fn);
            const double guarded = options.guard == variance_guard::add
                                       ? r.variance + options.epsilon
                                       : (r.variance > options.epsilon ? r.variance : options.epsilon);
            const double rstd = options.scale ? 1.0 / std::sqrt(guarded) : 1.0;
            detail::for_each_row(policy, x.extent(0), x.extent(1), [&](index_t i) {
                for (index_t t = 0; t < x.extent(1); ++t) {
                    double w = valid ? (double(x(i, t)) - r.mean) * rstd : 0.0;
                    if (valid && !options.shift_mean) w += r.mean;
                    if (options.mask_output) w *= detail::mask_weight(m(i, t));
                    o(i, t) = static_cast<O>(w);
                }
            });
            return r;
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

struct normalize_options {
    double epsilon = 1e-8;  // rsqrt(max(var, epsilon))
};

// Per-row masked normalisation (OpenRLHF masked_normalize): for each row, biased mean/variance over
// its valid tokens, out = (x - mean) * rsqrt(max(var, epsilon)) * mask. Fully masked rows give 0.
template <class Policy, class Values, class Mask, class Out>
void masked_normalize(const Policy& policy, const Values& values, const Mask& mask, Out&& out,
                      const normalize_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::masked_normalize: host policy expected");
    constexpr const char* fn = "posttrain::advantage::masked_normalize";
    std::visit(
        [&](auto x, auto m, auto o) {
            detail::check_elementwise_views(x, m, o, fn);  // in place allowed: a row is read before it is written
            using O = typename decltype(o)::value_type;
            const index_t T = x.extent(1);
            detail::for_each_row(policy, x.extent(0), T, [&](index_t i) {
                auto w = [&](index_t t) { return detail::mask_weight(m(i, t)); };
                const double c = posttrain::detail::fixed_order_sum(T, w);
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return double(x(i, t)) * w(t); });
                const double mean = c > 0 ? s / c : 0.0;
                const double m2 = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double d = double(x(i, t)) - mean;
                    return d * d * w(t);
                });
                const double var = c > 0 ? m2 / c : 0.0;
                const double rstd = 1.0 / std::sqrt(var > options.epsilon ? var : options.epsilon);
                for (index_t t = 0; t < T; ++t) o(i, t) = static_cast<O>((double(x(i, t)) - mean) * rstd * w(t));
            });
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

}  // namespace posttrain::advantage
