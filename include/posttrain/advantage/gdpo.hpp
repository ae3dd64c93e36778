#pragma once
// Multi-reward advantages. GDPO (Liu et al. 2026, group reward-decoupled normalisation) normalises
// each reward component within its group, sums with weights, then z-scores the sum over the batch:
//     z_ik = (r_ik - mu_gk) / (sigma_gk + eps);  S_i = sum_k w_k z_ik;  A_i = (S_i - mean(S)) / (std(S) + eps_b)
// sum_then_normalize is the GRPO-on-a-weighted-sum alternative (TRL's default):
//     S_i = sum_k w_k r_ik;  A_i = GRPO(S)_i

#include <variant>
#include <vector>

#include "grpo.hpp"

namespace posttrain::advantage {

enum class aggregation {
    normalize_then_sum,  // GDPO
    sum_then_normalize,  // GRPO on the weighted sum
};

struct gdpo_options {
    aggregation mode = aggregation::normalize_then_sum;
    std::vector<double> weights{};           // one per component; empty = all 1
    grpo_options component{};                // per-component (normalize_then_sum) or on the sum (sum_then_normalize)
    bool batch_normalize = true;             // normalize_then_sum only: z-score S over the batch
    double batch_epsilon = 1e-6;
    posttrain::ddof batch_ddof = posttrain::ddof::sample;
    // A row whose components are all NaN is unscorable: its sum is NaN (TRL). With nonfinite::ignore
    // in `component` it is left out of every statistic and gets advantage 0.

    // posttrain's GDPO: group z-scores (eps 1e-6), weighted sum, batch z-score.
    static gdpo_options gdpo(std::vector<double> w = {}) {
        gdpo_options o;
        o.weights = std::move(w);
        return o;
    }
    // TRL GRPOTrainer with multi_objective_aggregation and scale_rewards (eps 1e-4, NaN = unscorable).
    static gdpo_options trl(aggregation mode, scale s = scale::group, std::vector<double> w = {}) {
        gdpo_options o;
        o.mode = mode;
        o.weights = std::move(w);
        o.component = grpo_options::trl(s);
        o.batch_epsilon = 1e-4;
        return o;
    }
};

namespace detail {

// sum_k w_k v(k). With skip_nan (TRL's nansum) NaN components are left out, and a row whose
// components are all NaN is NaN (unscorable); otherwise NaN propagates.
template <class Get>
double weighted_sum(index_t K, const std::vector<double>& w, Get&& v, bool skip_nan) {
    double s = 0;
    bool any = false;
    for (index_t k = 0; k < K; ++k) {
        const double x = v(k);
        if (skip_nan && x != x) continue;
        s = f64_add(s, f64_mul(w.empty() ? 1.0 : w[std::size_t(k)], x));  // unfused, as the CUDA path forms it
        any = true;
    }
    return (!any && K > 0) ? std::nan("") : s;
}

// The GRPO options of the batch z-score of S (normalize_then_sum with batch_normalize): one group
// of every row, with the options' batch epsilon and ddof.
inline grpo_options gdpo_batch_options(const gdpo_options& o) {
    grpo_options batch;
    batch.epsilon = o.batch_epsilon;
    batch.ddof = o.batch_ddof;
    batch.float32_bessel = o.component.float32_bessel;
    batch.zero_variance_groups = zero_variance::arithmetic;
    batch.nonfinite_rewards = o.component.nonfinite_rewards == nonfinite::ignore ? nonfinite::ignore : nonfinite::propagate;
    return batch;
}

// gdpo's optional `combined` output (host and CUDA entries): one entry per row, apart from the
// rewards and the advantages (the host writes it after the advantages).
template <class C, class R, class A>
void check_gdpo_combined(const C& c, const R& r, const A& a, const char* fn) {
    check_extent(c.extent(0), r.extent(0), {fn, "combined"}, "length (one per row of rewards)");
    check_no_alias(c, r, {fn, "combined"}, "rewards");
    check_no_alias(c, a, {fn, "combined"}, "advantages");
}

}  // namespace detail

// rewards[N, K] -> advantages[N]; combined[N] (or posttrain::none) receives S (the weighted sum of
// raw rewards for sum_then_normalize, of group z-scores for normalize_then_sum).
template <class Policy, class Rewards, class Groups, class Advantages, class Combined>
group_stats_result gdpo(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                        Combined&& combined, const gdpo_options& options) {
    static_assert(host_policy<Policy>, "posttrain::advantage::gdpo: host policy expected");
    constexpr const char* fn = "posttrain::advantage::gdpo";
    constexpr bool has_combined = !std::is_same_v<std::remove_cvref_t<Combined>, none_t>;
    auto cv = [&] {
        if constexpr (has_combined) return posttrain::detail::floating_output<1>(combined, {fn, "combined"});
        else return std::variant<tensor_view<double, 1>>{};
    }();
    return std::visit(
        [&](auto r, auto a) {
            const index_t N = r.extent(0), K = r.extent(1);
            detail::check_extent(a.extent(0), N, {fn, "advantages"}, "length (one per row of rewards)");
            detail::check_no_alias(a, r, {fn, "advantages"}, "rewards");
            if constexpr (has_combined)
                std::visit(
                    [&](auto c) {
                        detail::check_gdpo_combined(c, r, a, fn);
                        posttrain::detail::check_apart_from_layout(groups, c, fn, "combined");
                    },
                    cv);
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            detail::require(options.weights.empty() || index_t(options.weights.size()) == K, {fn, "options.weights"},
                            "expected one weight per reward component (" + detail::str(K) + "), found " +
                                detail::str(index_t(options.weights.size())));
            if (options.component.nonfinite_rewards == nonfinite::raise) detail::check_finite(r, {fn, "rewards"});
            const bool ignore = options.component.nonfinite_rewards == nonfinite::ignore;
            std::vector<double> sum(static_cast<std::size_t>(N));
            group_stats_result res;
            if (options.mode == aggregation::sum_then_normalize) {
                // nansum (TRL) under nonfinite::ignore; otherwise NaN propagates into the sum.
                for (index_t i = 0; i < N; ++i)
                    sum[std::size_t(i)] = detail::weighted_sum(K, options.weights, [&](index_t k) { return double(r(i, k)); }, ignore);
                res = grpo(policy, tensor_view<const double, 1>(sum.data(), N), groups, a, options.component);
            } else {
                std::vector<double> column(static_cast<std::size_t>(N)), z(static_cast<std::size_t>(N * K));
                // The counts of the result are summed over the components (a group is counted once per
                // component in which it is, e.g., of zero variance); `groups` is the layout's group count.
                for (index_t k = 0; k < K; ++k) {
                    for (index_t i = 0; i < N; ++i) column[std::size_t(i)] = double(r(i, k));
                    const group_stats_result c = grpo(policy, tensor_view<const double, 1>(column.data(), N), groups,
                                                      tensor_view<double, 1>(z.data() + k * N, N), options.component);
                    res.groups = c.groups;
                    res.empty_groups += c.empty_groups;
                    res.singleton_groups += c.singleton_groups;
                    res.zero_variance_groups += c.zero_variance_groups;
                    res.ignored_rows += c.ignored_rows;
                }
                // With nonfinite::ignore a NaN component is left out of the row's sum (TRL's nansum) and a row
                // with every component NaN stays NaN; otherwise NaN propagates through the sum.
                for (index_t i = 0; i < N; ++i) {
                    auto component = [&](index_t k) {
                        const double raw = double(r(i, k));
                        return (ignore && raw != raw) ? std::nan("") : z[std::size_t(k * N + i)];
                    };
                    sum[std::size_t(i)] = detail::weighted_sum(K, options.weights, component, ignore);
                }
                using A = typename decltype(a)::value_type;
                if (options.batch_normalize) {
                    (void)grpo(policy, tensor_view<const double, 1>(sum.data(), N), uniform_groups{N > 0 ? N : 1}, a,
                               detail::gdpo_batch_options(options));
                } else {
                    for (index_t i = 0; i < N; ++i) a(i) = static_cast<A>(ignore && sum[std::size_t(i)] != sum[std::size_t(i)] ? 0.0 : sum[std::size_t(i)]);
                }
            }
            if constexpr (has_combined)
                std::visit(
                    [&](auto c) {
                        using C = typename decltype(c)::value_type;
                        for (index_t i = 0; i < N; ++i) c(i) = static_cast<C>(sum[std::size_t(i)]);
                    },
                    cv);
            return res;
        },
        posttrain::detail::floating_input<2>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result gdpo(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                        const gdpo_options& options = {}) {
    return gdpo(policy, rewards, groups, std::forward<Advantages>(advantages), none, options);
}

}  // namespace posttrain::advantage
