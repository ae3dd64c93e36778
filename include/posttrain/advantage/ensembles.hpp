#pragma once
// Reward-model ensembles against over-optimisation (Coste et al. 2023, "Reward Model Ensembles Help
// Mitigate Overoptimization"): K reward models score each response, and one conservative reward is
// formed per response before best-of-n selection or a PPO/GRPO update:
//
//   mean:  R = (1/K) sum_m R_m
//   WCO:   R = min_m R_m                                   (worst-case optimisation)
//   UWO:   R = (1/K) sum_m R_m - lambda (1/K) sum_m (R_m - Rbar)^2   (uncertainty-weighted; population variance)
//
// Each model's scores should be on a common scale first: the paper normalises each RM to zero mean and
// unit variance on a reference set (options.means / options.stds hold those per-model statistics;
// reward_model_statistics computes them). See docs/algorithms/rm_ensembles.md.

#include <algorithm>
#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "common.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

enum class ensemble {
    mean,
    worst_case,            // WCO
    uncertainty_weighted,  // UWO
};

struct ensemble_options {
    ensemble mode = ensemble::mean;
    double lambda = 0.5;           // UWO's variance penalty (tuned per task in the paper)
    std::vector<double> means{};   // per model: subtracted first (empty: no shift)
    std::vector<double> stds{};    // per model: divided by after the shift (empty: no scaling)
};

// rewards[N, K] (row i: the K models' scores of response i) -> combined[N]; uncertainty[N] (or
// posttrain::none) receives the models' population variance of each row (after normalisation).
template <class Policy, class Rewards, class Combined, class Uncertainty>
void reward_ensemble(const Policy& policy, const Rewards& rewards, Combined&& combined, Uncertainty&& uncertainty,
                     const ensemble_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::reward_ensemble: host policy expected");
    constexpr const char* fn = "posttrain::advantage::reward_ensemble";
    const int m = static_cast<int>(options.mode);
    detail::require(m >= 0 && m <= 2, {fn, "options.mode"}, "unknown ensemble " + detail::str(m));
    detail::require(numeric::is_finite(options.lambda), {fn, "options.lambda"}, "must be finite");
    constexpr bool has_uncertainty = !std::is_same_v<std::remove_cvref_t<Uncertainty>, none_t>;
    auto uv = [&] {
        if constexpr (has_uncertainty) return posttrain::detail::floating_output<1>(uncertainty, {fn, "uncertainty"});
        else return std::variant<tensor_view<double, 1>>{};
    }();
    std::visit(
        [&](auto r, auto out) {
            const index_t N = r.extent(0), K = r.extent(1);
            detail::require(K > 0 || N == 0, {fn, "rewards"}, "expected at least one reward model (K >= 1), found K = 0");
            detail::check_extent(out.extent(0), N, {fn, "combined"}, "length (one per row of rewards)");
            detail::check_no_alias(out, r, {fn, "combined"}, "rewards");
            if constexpr (has_uncertainty)
                std::visit(
                    [&](auto u) {  // written after combined: checked before anything is written
                        detail::check_extent(u.extent(0), N, {fn, "uncertainty"}, "length (one per row of rewards)");
                        detail::check_no_alias(u, out, {fn, "uncertainty"}, "combined");
                    },
                    uv);
            detail::check_finite(r, {fn, "rewards"});
            auto per_model = [&](const std::vector<double>& v, const char* name) {
                detail::require(v.empty() || index_t(v.size()) == K, {fn, name},
                                "expected one entry per reward model (" + detail::str(K) + "), found " + detail::str(index_t(v.size())));
                for (double x : v) detail::require(numeric::is_finite(x), {fn, name}, "must be finite");
            };
            per_model(options.means, "options.means");
            per_model(options.stds, "options.stds");
            for (double s : options.stds) detail::require(s > 0, {fn, "options.stds"}, "must be > 0, found " + std::to_string(s));
            std::vector<double> var(static_cast<std::size_t>(N));
            using O = typename decltype(out)::value_type;
            detail::for_each_row(policy, N, K, [&](index_t i) {
                auto value = [&](index_t k) {
                    double x = double(r(i, k));
                    if (!options.means.empty()) x -= options.means[std::size_t(k)];
                    if (!options.stds.empty()) x /= options.stds[std::size_t(k)];
                    return x;
                };
                const double mu = posttrain::detail::fixed_order_sum(K, value) / double(K);
                const double v = posttrain::detail::fixed_order_sum(K, [&](index_t k) {
                                     const double d = value(k) - mu;
                                     return d * d;
                                 }) / double(K);
                double lo = value(0);
                for (index_t k = 1; k < K; ++k) lo = std::min(lo, value(k));
                var[std::size_t(i)] = v;
                const double c = options.mode == ensemble::mean ? mu : (options.mode == ensemble::worst_case ? lo : mu - options.lambda * v);
                out(i) = static_cast<O>(c);
            });
            if constexpr (has_uncertainty)
                std::visit(
                    [&](auto u) {
                        using U = typename decltype(u)::value_type;
                        for (index_t i = 0; i < N; ++i) u(i) = static_cast<U>(var[std::size_t(i)]);
                    },
                    uv);
        },
        posttrain::detail::floating_input<2>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(combined, {fn, "combined"}));
}

template <class Policy, class Rewards, class Combined>
void reward_ensemble(const Policy& policy, const Rewards& rewards, Combined&& combined, const ensemble_options& options = {}) {
    reward_ensemble(policy, rewards, std::forward<Combined>(combined), none, options);
}

// Per-model mean and (population) std over a reference set reference[M, K]: the statistics
// ensemble_options::means / ::stds take. A model with zero spread on the set gets std 1 (no scaling).
template <class Policy, class Reference>
ensemble_options reward_model_statistics(const Policy& policy, const Reference& reference, ensemble_options options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::reward_model_statistics: host policy expected");
    constexpr const char* fn = "posttrain::advantage::reward_model_statistics";
    return std::visit(
        [&](auto r) {
            const index_t M = r.extent(0), K = r.extent(1);
            detail::require(M > 0, {fn, "reference"}, "expected at least one reference response");
            detail::check_finite(r, {fn, "reference"});
            options.means.assign(static_cast<std::size_t>(K), 0.0);
            options.stds.assign(static_cast<std::size_t>(K), 1.0);
            detail::for_each_row(policy, K, M, [&](index_t k) {
                const double mu = posttrain::detail::fixed_order_sum(M, [&](index_t i) { return double(r(i, k)); }) / double(M);
                const double v = posttrain::detail::fixed_order_sum(M, [&](index_t i) {
                                     const double d = double(r(i, k)) - mu;
                                     return d * d;
                                 }) / double(M);
                options.means[std::size_t(k)] = mu;
                options.stds[std::size_t(k)] = v > 0 ? std::sqrt(v) : 1.0;
            });
            return options;
        },
        posttrain::detail::floating_input<2>(reference, {fn, "reference"}));
}

}  // namespace posttrain::advantage
