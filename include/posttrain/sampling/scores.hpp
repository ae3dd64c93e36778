#pragma once
// Per-prompt scores for variance-aware sampling (MMR1) and the dataset weights built from them:
//     P(x)   = mean of the prompt's verifier rewards                 pass_rate
//     OVS(x) = P(x) (1 - P(x))                                        outcome_variance ("learnability")
//     VPS(x) = alpha OVS(x) + beta TDS(x)                             variance_promotion_score
//     s(x)   = sum_m weight_m metric_m(x)                             combine_metrics
//     w(x)   = (s(x) - min s) / (max s - min s + epsilon)             minmax_weights (all-equal guard)
//     w     <- momentum w + (1 - momentum) w_new                      ema_update
// Trajectory diversity (TDS) lives in diversity.hpp. See docs/algorithms/vps.md.

#include <cmath>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../advantage/tokens.hpp"
#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain::sampling {

using posttrain::advantage::nonfinite;

// The arithmetic a score is computed in.
enum class precision {
    float64,  // double throughout (posttrain)
    float32,  // every intermediate rounded to float32 in the order MMR1's torch code uses (parity)
};

// What min-max scaling gives when every value is equal (max == min exactly), where the formula
// would give 0 / epsilon = 0 for every prompt and a weighted sampler over all-zero weights fails.
enum class all_equal {
    uniform,  // every weight 1: a weighted draw is then uniform (posttrain's default)
    zero,     // every weight 0, as the arithmetic gives (MMR1; its sampler then raises)
};

// ---- pass rate and outcome variance ----

struct outcome_options {
    precision arithmetic = precision::float64;
    nonfinite nonfinite_rewards = nonfinite::raise;  // ignore: NaN rows leave the mean (inf does not)

    // MMR1 calculate_learnability_metric: float32 accuracies, float32 mean, float32 p * (1 - p).
    static constexpr outcome_options mmr1() {
        outcome_options o;
        o.arithmetic = precision::float32;
        o.nonfinite_rewards = nonfinite::propagate;
        return o;
    }
};

// What a per-prompt outcome score saw.
struct [[nodiscard]] outcome_result {
    index_t groups = 0;
    index_t empty_groups = 0;          // no (valid) rows: pass rate 0, OVS 0
    index_t zero_variance_groups = 0;  // pass rate exactly 0 or 1 (OVS exactly 0), empty groups excluded
    index_t ignored_rows = 0;          // NaN rewards left out under nonfinite::ignore
};

// ---- weighted sums: combine_metrics and VPS ----

struct combine_options {
    precision arithmetic = precision::float64;
    nonfinite nonfinite_values = nonfinite::raise;  // raise or propagate

    // MMR1 combine_metric_results: result_0 * w_0, then += result_m * w_m, each in float32.
    static constexpr combine_options mmr1() { return {precision::float32, nonfinite::propagate}; }
};

struct vps_options {
    double alpha = 0.8;  // weight of the outcome variance
    double beta = 0.2;   // weight of the trajectory diversity
    precision arithmetic = precision::float64;
    nonfinite nonfinite_values = nonfinite::raise;

    // MMR1 report, main setting (section 6.1): alpha 0.8, beta 0.2 (also posttrain's default).
    static constexpr vps_options paper() { return {}; }
    // MMR1 report, ablations: alpha = beta = 0.5.
    static constexpr vps_options paper_ablation() { return {0.5, 0.5, precision::float64, nonfinite::raise}; }
    // MMR1's released examples/mmr1.yaml: learnability only (weight 1.0), combined in float32.
    static constexpr vps_options mmr1() { return {1.0, 0.0, precision::float32, nonfinite::propagate}; }
};

// ---- dataset weights ----

struct minmax_options {
    double epsilon = 0.0;  // added to max - min; 0: the largest value gets exactly 1
    all_equal all_equal_values = all_equal::uniform;
    precision arithmetic = precision::float64;
    nonfinite nonfinite_values = nonfinite::raise;  // raise or propagate (a NaN makes every weight NaN)

    // MMR1 RayPPOTrainer._compute_curriculum_weights: float32 (w - min) / (max - min + 1e-8).
    static constexpr minmax_options mmr1() {
        return {1e-8, all_equal::zero, precision::float32, nonfinite::propagate};
    }
};

struct [[nodiscard]] minmax_result {
    double min = 0, max = 0;  // of the values (NaN under propagate when a value is NaN)
    bool all_equal = false;   // max == min exactly
};

struct ema_options {
    double momentum = 0.0;  // weight of the old state, in [0, 1]: 0 replaces, 1 freezes
    precision arithmetic = precision::float64;
    nonfinite nonfinite_values = nonfinite::raise;

    // MMR1's released examples/mmr1.yaml: curriculum_momentum 0.0 (the new weights replace the old).
    static constexpr ema_options mmr1() { return {0.0, precision::float32, nonfinite::propagate}; }
    // MMR1's config.py default curriculum_momentum 1.0: the first weights are kept forever.
    static constexpr ema_options mmr1_config_default() { return {1.0, precision::float32, nonfinite::propagate}; }
};

namespace detail {

using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

inline void check_policy(nonfinite n, bool ignore_allowed, where w) {
    require(ignore_allowed || n != nonfinite::ignore, w, "nonfinite::ignore is not meaningful here; use raise or propagate");
}

template <class T>
void check_finite_if(tensor_view<const T, 1> x, nonfinite n, where w) {
    if (n == nonfinite::raise) posttrain::advantage::detail::check_finite(x, w);
}

// Outputs may be the input itself (an in-place update) but may not partly overlap it.
using posttrain::advantage::detail::check_same_or_disjoint;

using posttrain::detail::rounded;

// Elementwise work over [0, n) (each index written once, so any policy gives the same bits): the
// advantage module's for_each_row with one column per row.
using posttrain::advantage::detail::for_each_row;

// p and p (1 - p) of one group, in the requested arithmetic. The float32 form is torch's
// mean(dim=-1) of a float32 tensor on the CPU: a left-to-right float32 sum (the order torch's
// reduction uses for fewer than 8 values, and exact in any order for 0/1 rewards up to 2^24 rows),
// divided by float32(n), then p * (1 - p) in float32.
struct outcome_value {
    double pass = 0, variance = 0;
    index_t count = 0, ignored = 0;
};

template <class Reader, class Rows>
outcome_value outcome_of(const Reader& x, const Rows& rows, index_t n, const outcome_options& o) {
    const bool skip = o.nonfinite_rewards == nonfinite::ignore;
    outcome_value v;
    for (index_t j = 0; j < n; ++j) {
        const double r = x(rows(j));
        if (skip && r != r) ++v.ignored;
    }
    v.count = n - v.ignored;
    if (v.count == 0) return v;
    if (o.arithmetic == precision::float32) {
        float s = 0;
        for (index_t j = 0; j < n; ++j) {
            const double r = x(rows(j));
            if (!(skip && r != r)) s += static_cast<float>(r);
        }
        const float p = s / static_cast<float>(v.count);
        v.pass = p;
        v.variance = p * (1.0f - p);
    } else {
        const double s = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
            const double r = x(rows(j));
            return (skip && r != r) ? 0.0 : r;
        });
        v.pass = s / double(v.count);
        v.variance = v.pass * (1.0 - v.pass);
    }
    return v;
}

// Runs the outcome kernel over every group and writes p or p (1 - p).
template <class Policy, class Rewards, class Groups, class Out>
outcome_result outcome_entry(const Policy& policy, const Rewards& rewards, const Groups& groups, Out&& out,
                             const outcome_options& o, bool write_variance, const char* fn) {
    static_assert(host_policy<Policy>, "posttrain::sampling: this overload takes exec::seq or exec::par");
    auto rv = posttrain::detail::floating_input<1>(rewards, {fn, "rewards"});
    auto ov = posttrain::detail::floating_output<1>(out, {fn, write_variance ? "variance" : "pass_rate"});
    return std::visit(
        [&](auto r, auto y) {
            check_finite_if(r, o.nonfinite_rewards, {fn, "rewards"});
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            const index_t G = layout.num_groups();
            posttrain::advantage::detail::check_extent(y.extent(0), G, {fn, write_variance ? "variance" : "pass_rate"},
                                                       "one entry per group:");
            posttrain::advantage::detail::check_no_alias(y, r, {fn, write_variance ? "variance" : "pass_rate"}, "rewards");
            posttrain::detail::check_apart_from_layout(groups, y, fn, write_variance ? "variance" : "pass_rate");
            using Y = typename decltype(y)::value_type;
            const posttrain::advantage::detail::strided_reader<typename decltype(r)::value_type> x{r.data(), r.stride(0)};
            posttrain::advantage::detail::for_each_group(policy, layout, r.extent(0), [&](index_t g, auto rows, index_t n) {
                const outcome_value v = outcome_of(x, rows, n, o);
                y(g) = static_cast<Y>(write_variance ? v.variance : v.pass);
            });
            // The counts are a second, sequential pass: cheap, and independent of the policy.
            outcome_result res;
            res.groups = G;
            for (index_t g = 0; g < G; ++g) {
                const outcome_value v = outcome_of(x, layout.rows(g), layout.size(g), o);
                res.empty_groups += v.count == 0;
                res.zero_variance_groups += v.count > 0 && (v.pass == 0.0 || v.pass == 1.0);
                res.ignored_rows += v.ignored;
            }
            return res;
        },
        rv, ov);
}

// out[p] = sum_m weight[m] * metric(m, p), m in order. float32: MMR1's combine_metric_results,
// each product float32(metric) * float32(weight) rounded to float32 and added in float32.
template <class Policy, class Metric, class Out>
void weighted_sum(const Policy& policy, index_t metrics, index_t prompts, const double* weights, const Metric& metric,
                  Out y, precision arithmetic) {
    using Y = typename Out::value_type;
    for_each_row(policy, prompts, 0, [&](index_t p) {
        if (arithmetic == precision::float32) {
            float acc = 0;
            for (index_t m = 0; m < metrics; ++m) {
                const float term = rounded(static_cast<float>(metric(m, p)) * static_cast<float>(weights[m]));
                acc = m == 0 ? term : acc + term;
            }
            y(p) = static_cast<Y>(acc);
        } else {
            double acc = 0;
            for (index_t m = 0; m < metrics; ++m) {
                const double term = rounded(metric(m, p) * weights[m]);
                acc = m == 0 ? term : acc + term;
            }
            y(p) = static_cast<Y>(acc);
        }
    });
}

inline void check_weight(double w, where at, const std::string& name) {
    require(numeric::is_finite(w), at, name + " must be finite, found " + std::to_string(w));
}

}  // namespace detail

// Pass rate of each group: the mean of its rewards (verifier outcomes, usually 0/1), pass_rate[G].
// Empty groups (and groups whose rewards are all ignored NaNs) get 0.
template <class Policy, class Rewards, class Groups, class PassRate>
outcome_result pass_rate(const Policy& policy, const Rewards& rewards, const Groups& groups, PassRate&& pass_rate,
                         const outcome_options& options = {}) {
    return detail::outcome_entry(policy, rewards, groups, std::forward<PassRate>(pass_rate), options, false,
                                 "posttrain::sampling::pass_rate");
}

// Outcome variance score OVS = p (1 - p) of each group, p its pass rate (MMR1's "learnability"):
// variance[G]. Exactly 0 when p is 0 or 1, and for empty groups. For fractional rewards this is
// still p (1 - p) of the mean, as MMR1 computes it, not the sample variance of the rewards.
template <class Policy, class Rewards, class Groups, class Variance>
outcome_result outcome_variance(const Policy& policy, const Rewards& rewards, const Groups& groups, Variance&& variance,
                                const outcome_options& options = {}) {
    return detail::outcome_entry(policy, rewards, groups, std::forward<Variance>(variance), options, true,
                                 "posttrain::sampling::outcome_variance");
}

// Weighted sum of M per-prompt metrics: metrics[M, P] (row m is metric m), weights[M], out[P].
// Negative weights are allowed (e.g. -1 on self-BLEU, a similarity).
template <class Policy, class Metrics, class Weights, class Out>
void combine_metrics(const Policy& policy, const Metrics& metrics, const Weights& weights, Out&& out,
                     const combine_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::sampling::combine_metrics: this overload takes exec::seq or exec::par");
    constexpr const char* fn = "posttrain::sampling::combine_metrics";
    detail::check_policy(options.nonfinite_values, false, {fn, "options.nonfinite_values"});
    auto mv = posttrain::detail::floating_input<2>(metrics, {fn, "metrics"});
    auto wv = posttrain::detail::floating_input<1>(weights, {fn, "weights"});
    auto ov = posttrain::detail::floating_output<1>(out, {fn, "out"});
    std::visit(
        [&](auto m, auto w, auto y) {
            const index_t M = m.extent(0), P = m.extent(1);
            detail::require(M >= 1, {fn, "metrics"}, "must hold at least one metric (row), found 0");
            posttrain::advantage::detail::check_extent(w.extent(0), M, {fn, "weights"}, "one weight per metric:");
            posttrain::advantage::detail::check_extent(y.extent(0), P, {fn, "out"}, "one entry per prompt:");
            posttrain::advantage::detail::check_no_alias(y, m, {fn, "out"}, "metrics");
            std::vector<double> wd(static_cast<std::size_t>(M));
            for (index_t k = 0; k < M; ++k) {
                wd[std::size_t(k)] = double(w(k));
                detail::check_weight(wd[std::size_t(k)], {fn, "weights"}, "weights[" + detail::str(k) + "]");
            }
            if (options.nonfinite_values == nonfinite::raise) posttrain::advantage::detail::check_finite(m, {fn, "metrics"});
            detail::weighted_sum(policy, M, P, wd.data(), [&](index_t k, index_t p) { return double(m(k, p)); }, y,
                                 options.arithmetic);
        },
        mv, wv, ov);
}

// Variance Promotion Score VPS = alpha OVS + beta TDS per prompt: ovs[P], tds[P], vps[P].
template <class Policy, class Ovs, class Tds, class Vps>
void variance_promotion_score(const Policy& policy, const Ovs& ovs, const Tds& tds, Vps&& vps,
                              const vps_options& options = {}) {
    static_assert(host_policy<Policy>,
                  "posttrain::sampling::variance_promotion_score: this overload takes exec::seq or exec::par");
    constexpr const char* fn = "posttrain::sampling::variance_promotion_score";
    detail::check_policy(options.nonfinite_values, false, {fn, "options.nonfinite_values"});
    detail::check_weight(options.alpha, {fn, "options.alpha"}, "alpha");
    detail::check_weight(options.beta, {fn, "options.beta"}, "beta");
    auto av = posttrain::detail::floating_input<1>(ovs, {fn, "ovs"});
    auto bv = posttrain::detail::floating_input<1>(tds, {fn, "tds"});
    auto ov = posttrain::detail::floating_output<1>(vps, {fn, "vps"});
    std::visit(
        [&](auto a, auto b, auto y) {
            const index_t P = a.extent(0);
            posttrain::advantage::detail::check_extent(b.extent(0), P, {fn, "tds"}, "one entry per prompt (as ovs):");
            posttrain::advantage::detail::check_extent(y.extent(0), P, {fn, "vps"}, "one entry per prompt (as ovs):");
            detail::check_same_or_disjoint(y, a, {fn, "vps"}, "ovs");
            detail::check_same_or_disjoint(y, b, {fn, "vps"}, "tds");
            detail::check_finite_if(a, options.nonfinite_values, {fn, "ovs"});
            detail::check_finite_if(b, options.nonfinite_values, {fn, "tds"});
            const double w[2] = {options.alpha, options.beta};
            // Each prompt reads its own two inputs before writing its output, so in place is safe.
            detail::weighted_sum(policy, 2, P, w, [&](index_t k, index_t p) { return k == 0 ? double(a(p)) : double(b(p)); },
                                 y, options.arithmetic);
        },
        av, bv, ov);
}

// Dataset-level min-max scaling of per-prompt scores into sampling weights: values[N] -> weights[N]
// (in place allowed). w = (v - min) / (max - min + epsilon); when max == min exactly, every weight is
// 1 (all_equal::uniform) or 0 (all_equal::zero). The smallest score gets weight 0.
template <class Policy, class Values, class Weights>
minmax_result minmax_weights(const Policy& policy, const Values& values, Weights&& weights,
                             const minmax_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::sampling::minmax_weights: this overload takes exec::seq or exec::par");
    constexpr const char* fn = "posttrain::sampling::minmax_weights";
    detail::check_policy(options.nonfinite_values, false, {fn, "options.nonfinite_values"});
    detail::require(numeric::is_finite(options.epsilon) && options.epsilon >= 0, {fn, "options.epsilon"},
                    "must be finite and >= 0, found " + std::to_string(options.epsilon));
    auto vv = posttrain::detail::floating_input<1>(values, {fn, "values"});
    auto wv = posttrain::detail::floating_output<1>(weights, {fn, "weights"});
    return std::visit(
        [&](auto v, auto w) {
            const index_t N = v.extent(0);
            detail::require(N >= 1, {fn, "values"}, "must hold at least one prompt, found 0");
            posttrain::advantage::detail::check_extent(w.extent(0), N, {fn, "weights"}, "one weight per value:");
            detail::check_same_or_disjoint(w, v, {fn, "weights"}, "values");
            detail::check_finite_if(v, options.nonfinite_values, {fn, "values"});
            // min and max are exact whatever the order; NaN is tracked apart so that it propagates
            // as torch's min()/max() do.
            struct range {
                double lo, hi;
                bool nan;
            };
            const range r = posttrain::detail::chunked_reduce(
                policy, N, range{double(v(0)), double(v(0)), false},
                [&](index_t lo, index_t hi) {
                    range a{double(v(lo)), double(v(lo)), false};
                    for (index_t i = lo; i < hi; ++i) {
                        const double x = v(i);
                        a.nan |= x != x;
                        a.lo = x < a.lo ? x : a.lo;
                        a.hi = x > a.hi ? x : a.hi;
                    }
                    return a;
                },
                [](range a, range b) {
                    return range{b.lo < a.lo ? b.lo : a.lo, b.hi > a.hi ? b.hi : a.hi, a.nan || b.nan};
                });
            minmax_result res;
            res.min = r.nan ? std::nan("") : r.lo;
            res.max = r.nan ? std::nan("") : r.hi;
            // Equal in the arithmetic used: two doubles that round to one float are equal in float32.
            res.all_equal = !r.nan && (options.arithmetic == precision::float32
                                           ? static_cast<float>(r.lo) == static_cast<float>(r.hi)
                                           : r.lo == r.hi);
            using W = typename decltype(w)::value_type;
            if (res.all_equal) {
                const W fill = options.all_equal_values == all_equal::uniform ? W(1) : W(0);
                detail::for_each_row(policy, N, 0, [&](index_t i) { w(i) = fill; });
                return res;
            }
            if (options.arithmetic == precision::float32) {
                // torch: (w - min) / (max - min + 1e-8) on float32 tensors; the scalar 1e-8 is
                // rounded to float32 and added in float32, so it can round max - min up by an ulp.
                const float lo = static_cast<float>(res.min);
                const float den = (static_cast<float>(res.max) - lo) + static_cast<float>(options.epsilon);
                detail::for_each_row(policy, N, 0, [&](index_t i) {
                    w(i) = static_cast<W>((static_cast<float>(v(i)) - lo) / den);
                });
            } else {
                const double lo = res.min, den = (res.max - res.min) + options.epsilon;
                if (den < HUGE_VAL) {
                    detail::for_each_row(policy, N, 0, [&](index_t i) { w(i) = static_cast<W>((double(v(i)) - lo) / den); });
                } else {
                    // max - min overflowed (finite values of opposite signs near DBL_MAX): the same ratio, halved.
                    const double half = (res.max / 2 - lo / 2) + options.epsilon / 2;
                    detail::for_each_row(policy, N, 0, [&](index_t i) { w(i) = static_cast<W>((double(v(i)) / 2 - lo / 2) / half); });
                }
            }
            return res;
        },
        vv, wv);
}

// Exponential moving average of per-prompt weights, in place: state <- momentum state + (1 -
// momentum) fresh. The first estimate has no prior state: store it as it is (copy), as MMR1 does.
template <class Policy, class State, class Fresh>
void ema_update(const Policy& policy, State&& state, const Fresh& fresh, const ema_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::sampling::ema_update: this overload takes exec::seq or exec::par");
    constexpr const char* fn = "posttrain::sampling::ema_update";
    detail::check_policy(options.nonfinite_values, false, {fn, "options.nonfinite_values"});
    detail::require(options.momentum >= 0 && options.momentum <= 1, {fn, "options.momentum"},
                    "must be in [0, 1], found " + std::to_string(options.momentum));
    auto sv = posttrain::detail::floating_output<1>(state, {fn, "state"});
    auto fv = posttrain::detail::floating_input<1>(fresh, {fn, "fresh"});
    std::visit(
        [&](auto s, auto f) {
            const index_t N = s.extent(0);
            posttrain::advantage::detail::check_extent(f.extent(0), N, {fn, "fresh"}, "one entry per prompt (as state):");
            posttrain::advantage::detail::check_no_alias(s, f, {fn, "state"}, "fresh");
            if (options.nonfinite_values == nonfinite::raise) {
                posttrain::advantage::detail::check_finite(tensor_view<const typename decltype(s)::value_type, 1>(s),
                                                           {fn, "state"});
                posttrain::advantage::detail::check_finite(f, {fn, "fresh"});
            }
            using S = typename decltype(s)::value_type;
            const double mu = options.momentum;
            if (options.arithmetic == precision::float32) {
                // torch: momentum * old + (1 - momentum) * new, the Python scalars rounded to float32.
                const float a = static_cast<float>(mu), b = static_cast<float>(1.0 - mu);
                detail::for_each_row(policy, N, 0, [&](index_t i) {
                    const float old_part = detail::rounded(a * static_cast<float>(s(i)));
                    const float new_part = detail::rounded(b * static_cast<float>(f(i)));
                    s(i) = static_cast<S>(old_part + new_part);
                });
            } else {
                detail::for_each_row(policy, N, 0, [&](index_t i) {
                    const double old_part = detail::rounded(mu * double(s(i)));
                    const double new_part = detail::rounded((1.0 - mu) * double(f(i)));
                    s(i) = static_cast<S>(old_part + new_part);
                });
            }
        },
        sv, fv);
}

}  // namespace posttrain::sampling
