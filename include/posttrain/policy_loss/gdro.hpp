#pragma once
// GDRO: group-level direct reward optimisation (arXiv 2601.02036, for diffusion / rectified-flow models),
// and the reward-hacking-corrected score it proposes for evaluation. RECONSTRUCTION from the abstract
// and secondary summaries (group_rl.md §3.22); no code was readable. See docs/algorithms/gdro.md.
//
// Each sample i of a prompt's group has an implicit reward r̂_i = beta * s_i, where s_i is supplied by
// the caller: DPO-style, s_i = -(||v_theta(x_t^i, t) - v*_i||^2 - ||v_ref(x_t^i, t) - v*_i||^2) for a
// rectified flow at a shared timestep (or a sequence log-ratio log pi/pi_ref for an LLM). With explicit
// rewards r_i of the group's samples:
//
//   cross_entropy:   q = softmax_g(r / T),  L_g = -sum_i q_i log softmax_g(r̂)_i
//   plackett_luce:   sigma = the rewards' descending order, L_g = -sum_k log( e^{r̂_σ(k)} / sum_{l>=k} e^{r̂_σ(l)} )
//   L = mean over groups with at least two samples of L_g
//
// grad_scores receives grad_scale * d L / d s (chain it into the model's errors or log-probs).

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../core/groups.hpp"

namespace posttrain::policy_loss {

enum class gdro_target {
    cross_entropy,  // the group's reward softmax as the target distribution
    plackett_luce,  // the group's reward ranking as a Plackett-Luce permutation (ties: row order)
};

struct gdro_options {
    gdro_target target = gdro_target::cross_entropy;
    double beta = 1.0;         // implicit reward scale
    double temperature = 1.0;  // T of the reward softmax (cross_entropy)
};

struct [[nodiscard]] gdro_result {
    double loss = 0;
    index_t groups = 0;  // groups in the mean (>= 2 samples)
};

// scores [N] and rewards [N] (float or double), groups over the N samples; grad_scores [N] or
// posttrain::none.
template <class Policy, class Scores, class Rewards, class Groups, class Grad>
gdro_result gdro(const Policy& policy, const Scores& scores, const Rewards& rewards, const Groups& groups, Grad&& grad_scores,
                 const gdro_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::gdro: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::gdro";
    using posttrain::detail::require;
    const int t = static_cast<int>(options.target);
    require(t >= 0 && t <= 1, {fn, "options"}, "unknown gdro_target " + posttrain::detail::str(t));
    require(std::isfinite(options.beta), {fn, "options"}, "beta must be finite");
    require(options.temperature > 0 && std::isfinite(options.temperature), {fn, "options"}, "temperature must be finite and > 0");
    auto read = [&](const auto& x, const char* name, index_t n) {
        return std::visit(
            [&](auto v) {
                if (n >= 0) posttrain::advantage::detail::check_extent(v.extent(0), n, {fn, name}, "length (one per score)");
                posttrain::advantage::detail::check_finite(v, {fn, name});
                std::vector<double> out(static_cast<std::size_t>(v.extent(0)));
                for (index_t i = 0; i < v.extent(0); ++i) out[std::size_t(i)] = double(v(i));
                return out;
            },
            posttrain::detail::floating_input<1>(x, {fn, name}));
    };
    const std::vector<double> s = read(scores, "scores", -1);
    const index_t N = index_t(s.size());
    const std::vector<double> r = read(rewards, "rewards", N);
    const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
    const index_t G = layout.num_groups();
    std::vector<double> d(static_cast<std::size_t>(N), 0.0), lg(static_cast<std::size_t>(G), 0.0);
    std::vector<unsigned char> used(static_cast<std::size_t>(G), 0);
    const double beta = options.beta, T = options.temperature;
    posttrain::advantage::detail::for_each_group(policy, layout, N, [&](index_t g, auto rows, index_t n) {
        if (n < 2) return;
        std::vector<std::size_t> idx(static_cast<std::size_t>(n));
        for (index_t j = 0; j < n; ++j) idx[std::size_t(j)] = std::size_t(rows(j));
        // log-sum-exp of beta * s over idx[from..n): its value and softmax weights.
        auto lse = [&](std::size_t from, auto&& weight) {
            double mx = -INFINITY;
            for (std::size_t j = from; j < idx.size(); ++j) mx = std::max(mx, beta * s[idx[j]]);
            double z = 0;
            for (std::size_t j = from; j < idx.size(); ++j) z += std::exp(beta * s[idx[j]] - mx);
            for (std::size_t j = from; j < idx.size(); ++j) weight(idx[j], std::exp(beta * s[idx[j]] - mx) / z);
            return mx + std::log(z);
        };
        double L = 0;
        if (options.target == gdro_target::cross_entropy) {
            double mr = -INFINITY, zq = 0;
            for (auto i : idx) mr = std::max(mr, r[i] / T);
            for (auto i : idx) zq += std::exp(r[i] / T - mr);
            const double logz = lse(0, [&](std::size_t i, double p) { d[i] += p; });  // sum q = 1
            for (auto i : idx) {
                const double q = std::exp(r[i] / T - mr) / zq;
                L -= q * (beta * s[i] - logz);
                d[i] -= q;
            }
        } else {
            std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return r[a] > r[b]; });
            for (std::size_t k = 0; k + 1 < idx.size(); ++k) {  // the last factor is 1
                L -= beta * s[idx[k]] - lse(k, [&](std::size_t i, double p) { d[i] += p; });
                d[idx[k]] -= 1;
            }
        }
        lg[std::size_t(g)] = L;
        used[std::size_t(g)] = 1;
    });
    gdro_result res;
    double total = 0;
    for (index_t g = 0; g < G; ++g) total += lg[std::size_t(g)], res.groups += used[std::size_t(g)];
    res.loss = res.groups > 0 ? total / double(res.groups) : 0.0;
    if constexpr (!std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
        std::visit(
            [&](auto out) {
                posttrain::advantage::detail::check_extent(out.extent(0), N, {fn, "grad_scores"}, "length (one per score)");
                posttrain::detail::check_apart_from_layout(groups, out, fn, "grad_scores");
                using O = typename decltype(out)::value_type;
                const double f = res.groups > 0 ? beta * grad_scale / double(res.groups) : 0.0;
                for (index_t i = 0; i < N; ++i) out(i) = static_cast<O>(d[std::size_t(i)] * f);
            },
            posttrain::detail::floating_output<1>(grad_scores, {fn, "grad_scores"}));
    }
    return res;
}

// The reward-hacking-corrected evaluation score: the task score minus lambda times the drop in a
// general-quality score (UnifiedReward: alignment, coherence, style) relative to the base model,
//   S = S_task - lambda * max(0, U_base - U_model).
// RECONSTRUCTION: the paper's exact form and lambda are not public in the sources read.
constexpr double gdro_corrected_score(double task_score, double base_quality, double model_quality,
                                      double lambda = 1.0) noexcept {
    const double drop = base_quality - model_quality;
    return task_score - lambda * (drop > 0 ? drop : 0.0);
}

}  // namespace posttrain::policy_loss
