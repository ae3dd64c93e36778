#pragma once
// CoPG, Contrastive Policy Gradient (Flet-Berliac et al.; the form of Cohere's Command-A report).
// Spec: preference_losses.md §3.18.
//
// For a group of k >= 2 responses to one prompt with scalar rewards R_i (any behaviour policy, no
// importance weights), the KL-regularised reward a_i = R_i - beta * (S_theta(y_i) - S_ref(y_i)) and
//   L_g = 1/(k-1) * sum_{i<j} (a_i - a_j)^2  =  k/(k-1) * sum_i (a_i - mean(a))^2
//   dL_g/dS_theta(y_i) = -beta * 2k/(k-1) * (a_i - mean(a))
// (the centred form is the same sum without the O(k^2) pairs and without cancellation). For k = 2,
// L = ((R_1 - R_2) - beta (l_1 - l_2))^2; with R_1 - R_2 = 1/2 it is beta^2 times IPO (sum form),
// a regression of the implicit reward gap onto the reward gap. Groups are averaged (or summed).

#include <cmath>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

struct copg_options {
    double beta = 0.1;
    reduction reduce = reduction::mean;  // over the non-empty groups
    double normalizer = 0;               // > 0: replaces the group count of the mean
    double grad_scale = 1.0;
};

struct [[nodiscard]] copg_result {
    double loss = 0;
    index_t groups = 0;            // non-empty groups
    index_t pairs = 0;             // sum over groups of k (k-1) / 2
    double mean_squared_residual = 0;  // mean over the pairs of (a_i - a_j)^2
    double mean_log_ratio = 0;     // mean of S_theta - S_ref over the responses (a KL proxy on policy samples)
};

// CoPG over N responses grouped by prompt (uniform_groups{k}, ragged(offsets), grouping_result; groups
// of one are rejected, empty groups skipped): policy / reference log-probs (sequence_input), rewards [N];
// grad_scale * dL/d(policy log-probs) into grad_policy.
template <class Policy, class Rewards, class Groups>
copg_result copg(const Policy& policy, const sequence_input& policy_logps, const sequence_input& reference_logps,
                 const Rewards& rewards, const Groups& groups, const sequence_grad& grad_policy,
                 const copg_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::copg: host policy expected");
    constexpr const char* fn = "posttrain::preference::copg";
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::require(options.reduce == reduction::mean || options.reduce == reduction::sum, {fn, "options"},
                    "unknown reduction");
    detail::require(options.normalizer >= 0 && numeric::is_finite(options.normalizer), {fn, "options"},
                    "normalizer must be finite and >= 0");
    detail::require(numeric::is_finite(options.grad_scale), {fn, "options"}, "grad_scale must be finite");
    const index_t n = policy_logps.batch();
    const auto sp = detail::reduce(policy, policy_logps, n, {fn, "policy_logps"});
    const auto sr = detail::reduce(policy, reference_logps, n, {fn, "reference_logps"});
    const auto r = detail::read_dense(rewards, n, {fn, "rewards"});
    const auto rows = detail::group_rows(groups, n, {fn, "groups"});
    std::vector<double> a(static_cast<std::size_t>(n)), coef(std::size_t(n), 0.0), group_loss, group_sq;
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = r.v[i] - options.beta * (sp.sum[i] - sr.sum[i]);
    copg_result res;
    for (const auto& g : rows) {
        if (g.empty()) continue;
        const double k = double(g.size());
        const double mean = posttrain::detail::fixed_order_sum(index_t(g.size()), [&](index_t j) { return a[std::size_t(g[std::size_t(j)])]; }) / k;
        const double ss = posttrain::detail::fixed_order_sum(index_t(g.size()), [&](index_t j) {
            const double c = a[std::size_t(g[std::size_t(j)])] - mean;
            return c * c;
        });
        group_loss.push_back(k / (k - 1) * ss);
        group_sq.push_back(k * ss);  // sum over pairs of (a_i - a_j)^2
        res.pairs += index_t(g.size() * (g.size() - 1) / 2);
        ++res.groups;
    }
    const double f = detail::reduction_factor(options.reduce, options.normalizer, res.groups);
    for (const auto& g : rows) {
        if (g.empty()) continue;
        const double k = double(g.size());
        const double mean = posttrain::detail::fixed_order_sum(index_t(g.size()), [&](index_t j) { return a[std::size_t(g[std::size_t(j)])]; }) / k;
        for (index_t i : g)
            coef[std::size_t(i)] = -options.beta * 2 * k / (k - 1) * (a[std::size_t(i)] - mean) * f * options.grad_scale;
    }
    auto total = [](const std::vector<double>& v) {
        return posttrain::detail::fixed_order_sum(index_t(v.size()), [&](index_t j) { return v[std::size_t(j)]; });
    };
    res.loss = total(group_loss) * f;
    res.mean_squared_residual = res.pairs > 0 ? total(group_sq) / double(res.pairs) : 0.0;
    res.mean_log_ratio = n > 0 ? posttrain::detail::fixed_order_sum(n, [&](index_t i) {
                                     return sp.sum[std::size_t(i)] - sr.sum[std::size_t(i)];
                                 }) / double(n)
                               : 0.0;
    detail::broadcast(policy, policy_logps, coef, grad_policy, {fn, "grad_policy"});
    return res;
}

}  // namespace posttrain::preference
