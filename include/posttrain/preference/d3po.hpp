#pragma once
// D3PO: DPO over the denoising steps of two diffusion trajectories (Yang et al.; yk7333/d3po 40d3175,
// scripts/train.py). Spec: preference_losses.md §3.15.
//
// For each pair b (two images of one prompt, k = 0, 1) and each denoising step t:
//   d_k = clamp(lp_k - lr_k, log(1 - eps), log(1 + eps))   (the official code clamps exp(.) to 1 +- eps)
//   z   = beta * (sign_0 * d_0 + sign_1 * d_1),   L_bt = softplus(-z)
// sign_0 = +1 if image 0 is preferred, -1 if image 1 is, 0 for a tie; sign_1 = -sign_0. The loss is
// the mean over all B x S entries (tie rows included: they add log 2 and no gradient), as the official
// per-timestep loop takes the batch mean at each step. dL/dlp_k = -beta sigma(-z) sign_k, zero where
// the clamp is active (outside the open band). When every pair of the batch ties, the official loop
// `continue`s (no loss, no optimizer step): result.skipped is set, the loss is 0 and gradients are 0.

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

struct d3po_options {
    double beta = 0.1;
    double clip_epsilon = 0.1;  // ratio band [1 - eps, 1 + eps], 0 < eps < 1
    bool skip_all_ties = true;  // a batch whose pairs all tie is skipped (official); false: log 2, zero gradient
    reduction reduce = reduction::mean;  // over the B x S (pair, step) entries
    double normalizer = 0;               // > 0: replaces the entry count of the mean
    double grad_scale = 1.0;

    // yk7333/d3po config/base.py: beta 0.1, eps 0.1.
    static d3po_options official(double beta = 0.1, double eps = 0.1) {
        d3po_options o;
        o.beta = beta;
        o.clip_epsilon = eps;
        return o;
    }
};

struct [[nodiscard]] d3po_result {
    double loss = 0;
    bool skipped = false;        // every pair tied and skip_all_ties: no loss, no step
    index_t pairs = 0;           // B
    index_t steps = 0;           // S (1 for [B] inputs)
    index_t tied_pairs = 0;
    double clip_fraction = 0;    // log-ratios of non-tied pairs outside the open band, over their count
    double mean_z = 0;           // mean of z over the non-tied entries
    double preferred_reward = 0; // mean beta * d of the preferred trajectory (non-tied entries)
    double dispreferred_reward = 0;
};

// The official preference sign of image 0: +1 when it scored higher, -1 lower, 0 tied (image 1's sign
// is the negative).
template <class A>
POSTTRAIN_HD inline int d3po_sign(A prefer_0, A prefer_1) noexcept {
    return prefer_0 > prefer_1 ? 1 : (prefer_0 < prefer_1 ? -1 : 0);
}

// D3PO over B pairs: transition log-probs of trajectory 0 and 1 under the policy and the reference,
// each [B] (one step) or [B, S] (S denoising steps); preference scores prefer_0 / prefer_1 [B] (any
// arithmetic type; only their order matters); grad_scale * dL/d(policy log-probs) into grad_0 / grad_1
// (same shape as the inputs, or posttrain::none).
template <class Policy, class Lp0, class Lr0, class Lp1, class Lr1, class Pref0, class Pref1, class Grad0, class Grad1>
d3po_result d3po(const Policy&, const Lp0& policy_logps_0, const Lr0& reference_logps_0, const Lp1& policy_logps_1,
                 const Lr1& reference_logps_1, const Pref0& prefer_0, const Pref1& prefer_1, Grad0&& grad_0, Grad1&& grad_1,
                 const d3po_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::d3po: host policy expected");
    constexpr const char* fn = "posttrain::preference::d3po";
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::require(options.clip_epsilon > 0 && options.clip_epsilon < 1, {fn, "options"},
                    "clip_epsilon must be in (0, 1), found " + std::to_string(options.clip_epsilon));
    detail::require(options.reduce == reduction::mean || options.reduce == reduction::sum, {fn, "options"},
                    "unknown reduction");
    detail::require(options.normalizer >= 0 && numeric::is_finite(options.normalizer), {fn, "options"},
                    "normalizer must be finite and >= 0");
    detail::require(numeric::is_finite(options.grad_scale), {fn, "options"}, "grad_scale must be finite");
    const auto lp0 = detail::read_dense(policy_logps_0, -1, {fn, "policy_logps_0"}, true);
    const index_t B = lp0.rows, S = lp0.cols;
    auto read_like = [&](const auto& x, const char* name) {
        auto v = detail::read_dense(x, B, {fn, name}, true);
        detail::require(v.cols == S && detail::input_rank(x) == detail::input_rank(policy_logps_0), {fn, name},
                        "must have the shape of policy_logps_0");
        return v;
    };
    const auto lr0 = read_like(reference_logps_0, "reference_logps_0");
    const auto lp1 = read_like(policy_logps_1, "policy_logps_1");
    const auto lr1 = read_like(reference_logps_1, "reference_logps_1");
    const auto h0 = detail::read_dense<true>(prefer_0, B, {fn, "prefer_0"});
    const auto h1 = detail::read_dense<true>(prefer_1, B, {fn, "prefer_1"});

    d3po_result res;
    res.pairs = B;
    res.steps = S;
    std::vector<int> sign(static_cast<std::size_t>(B));
    for (index_t i = 0; i < B; ++i) {
        sign[std::size_t(i)] = d3po_sign(h0.v[std::size_t(i)], h1.v[std::size_t(i)]);
        res.tied_pairs += sign[std::size_t(i)] == 0 ? 1 : 0;
    }
    std::vector<double> g0(std::size_t(B * S), 0.0), g1(std::size_t(B * S), 0.0);
    const bool rank2 = detail::input_rank(policy_logps_0) == 2;
    auto write_grads = [&] {
        if constexpr (!std::is_same_v<std::remove_cvref_t<Grad0>, none_t>) {
            detail::require(detail::input_rank(grad_0) == (rank2 ? 2 : 1), {fn, "grad_0"}, "must have the shape of policy_logps_0");
            detail::write_dense(grad_0, g0, B, S, {fn, "grad_0"});
        }
        if constexpr (!std::is_same_v<std::remove_cvref_t<Grad1>, none_t>) {
            detail::require(detail::input_rank(grad_1) == (rank2 ? 2 : 1), {fn, "grad_1"}, "must have the shape of policy_logps_1");
            detail::write_dense(grad_1, g1, B, S, {fn, "grad_1"});
        }
    };
    if (B == 0 || (options.skip_all_ties && res.tied_pairs == B)) {
        res.skipped = B > 0;
        write_grads();
        return res;
    }
    const double lo = std::log1p(-options.clip_epsilon), hi = std::log1p(options.clip_epsilon);
    const index_t entries = B * S;
    const double f = detail::reduction_factor(options.reduce, options.normalizer, entries);
    std::vector<double> loss(std::size_t(entries), 0.0), z(std::size_t(entries), 0.0), win(std::size_t(entries), 0.0),
        lose(std::size_t(entries), 0.0), outside(std::size_t(entries), 0.0);
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < S; ++t) {
            const std::size_t e = std::size_t(i * S + t);
            const double x0 = lp0(i, t) - lr0(i, t), x1 = lp1(i, t) - lr1(i, t);
            const double d0 = std::fmin(std::fmax(x0, lo), hi), d1 = std::fmin(std::fmax(x1, lo), hi);
            const int s0 = sign[std::size_t(i)], s1 = -s0;
            z[e] = options.beta * (double(s0) * d0 + double(s1) * d1);
            loss[e] = numeric::softplus(-z[e]);
            const double dz = -numeric::sigmoid(-z[e]) * options.beta * f * options.grad_scale;
            g0[e] = (x0 > lo && x0 < hi) ? dz * double(s0) : 0.0;
            g1[e] = (x1 > lo && x1 < hi) ? dz * double(s1) : 0.0;
            if (s0 != 0) {
                outside[e] = double(!(x0 > lo && x0 < hi)) + double(!(x1 > lo && x1 < hi));
                win[e] = options.beta * (s0 > 0 ? d0 : d1);
                lose[e] = options.beta * (s0 > 0 ? d1 : d0);
            }
        }
    auto total = [&](const std::vector<double>& v) {
        return posttrain::detail::fixed_order_sum(index_t(v.size()), [&](index_t j) { return v[std::size_t(j)]; });
    };
    res.loss = total(loss) * f;
    const double decided = double((B - res.tied_pairs) * S);
    if (decided > 0) {
        res.clip_fraction = total(outside) / (2 * decided);
        res.mean_z = total(z) / decided;
        res.preferred_reward = total(win) / decided;
        res.dispreferred_reward = total(lose) / decided;
    }
    write_grads();
    return res;
}

}  // namespace posttrain::preference
