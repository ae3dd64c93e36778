#pragma once
// MODPO, multi-objective DPO (Zhou et al.; ZHZisZZ/modpo 2e2df20 MODPOTrainer.modpo_loss). Spec:
// preference_losses.md §3.12.
//
//   R(y) = (beta * (S_theta(y) - S_ref(y)) - w[1:]^T m(y)) / w[0]     (the collective reward)
//   z    = R(y_w) - R(y_l);   L = softplus(-z)   (sigmoid)   or   max(0, 1 - z)   (hinge)
//
// m(y) in R^{K-1} are margin rewards of the other K-1 objectives (reward models, or implicit rewards
// of sibling DPO models), constants; w is the preference weight vector on the simplex, w[0] the weight
// of the objective that labelled the pair. Gradients: dL/dS_theta(y_w) = (beta / w0) * dL/dz with
// dL/dz = -sigma(-z) (sigmoid) or -[z < 1] (hinge, 0 at the kink as relu'(0) = 0); y_l gets the
// opposite sign. w[0] is required to be >= options.min_primary_weight (0.05 by default): 1/w[0] scales
// every reward and gradient, and below that the loss is dominated by the margin term.

#include <cmath>
#include <string>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

enum class modpo_loss_type { sigmoid, hinge };

struct modpo_options {
    double beta = 0.1;
    // Objective weights (w[0] = the objective that labelled the pairs, then one per margin column);
    // non-negative, summing to 1 (within 1e-6). The beavertails script's two objectives at w = 0.5.
    std::vector<double> weights{0.5, 0.5};
    modpo_loss_type loss = modpo_loss_type::sigmoid;
    double min_primary_weight = 0.05;
    reduction reduce = reduction::mean;
    double normalizer = 0;  // > 0: replaces the pair count of the mean (global count across ranks)
    double grad_scale = 1.0;

    // ZHZisZZ/modpo MODPOTrainer (loss_type "sigmoid" or "hinge", mean over the pairs).
    static modpo_options official(std::vector<double> w, double beta = 0.1,
                                  modpo_loss_type loss = modpo_loss_type::sigmoid) {
        modpo_options o;
        o.weights = std::move(w);
        o.beta = beta;
        o.loss = loss;
        return o;
    }
};

// Optional per-pair outputs ([B] each).
struct modpo_outputs {
    batch_output losses{};
    batch_output chosen_rewards{};    // R(y_w), detached
    batch_output rejected_rewards{};  // R(y_l)
};

struct [[nodiscard]] modpo_result {
    double loss = 0;
    index_t pairs = 0;
    reward_metrics rewards;  // on the collective rewards R (chosen, rejected, margin, accuracy, ...)
};

namespace detail {

// Per-pair MODPO loss and dL/dz (z = R(y_w) - R(y_l)).
POSTTRAIN_HD inline void modpo_pair(double z, bool hinge, double& loss, double& dz) noexcept {
    if (hinge) {
        loss = z < 1 ? 1 - z : 0.0;
        dz = z < 1 ? -1.0 : 0.0;
    } else {
        loss = numeric::softplus(-z);
        dz = -numeric::sigmoid(-z);
    }
}

}  // namespace detail

// MODPO over B pairs: policy / reference log-probs of the chosen and rejected responses
// (sequence_input), margin rewards [B, K-1] (or [B] for K = 2) for each, gradients of the reduced loss
// times grad_scale into grad_chosen / grad_rejected (sequence_grad; none skips).
template <class Policy, class ChosenMargins, class RejectedMargins>
modpo_result modpo(const Policy& policy, const sequence_input& policy_chosen, const sequence_input& policy_rejected,
                   const sequence_input& reference_chosen, const sequence_input& reference_rejected,
                   const ChosenMargins& chosen_margin_rewards, const RejectedMargins& rejected_margin_rewards,
                   const sequence_grad& grad_chosen, const sequence_grad& grad_rejected, const modpo_outputs& outputs = {},
                   const modpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::modpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::modpo";
    const auto& w = options.weights;
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::require(w.size() >= 2, {fn, "options"},
                    "weights needs at least two objectives (with one objective MODPO is DPO), found " +
                        detail::str(index_t(w.size())));
    double wsum = 0;
    for (double x : w) {
        detail::require(numeric::is_finite(x) && x >= 0, {fn, "options"}, "weights must be finite and >= 0");
        wsum += x;
    }
    detail::require(std::fabs(wsum - 1.0) <= 1e-6, {fn, "options"},
                    "weights must sum to 1 (a point of the simplex), found " + std::to_string(wsum));
    detail::require(options.min_primary_weight > 0 && w[0] >= options.min_primary_weight, {fn, "options"},
                    "weights[0] must be >= min_primary_weight (" + std::to_string(options.min_primary_weight) +
                        "): 1/w0 scales every reward, found " + std::to_string(w[0]));
    detail::require(options.loss == modpo_loss_type::sigmoid || options.loss == modpo_loss_type::hinge, {fn, "options"},
                    "unknown loss type");
    detail::require(options.reduce == reduction::mean || options.reduce == reduction::sum, {fn, "options"},
                    "unknown reduction");
    detail::require(options.normalizer >= 0 && numeric::is_finite(options.normalizer), {fn, "options"},
                    "normalizer must be finite and >= 0");
    detail::require(numeric::is_finite(options.grad_scale), {fn, "options"}, "grad_scale must be finite");

    const index_t B = policy_chosen.batch();
    const auto pc = detail::reduce(policy, policy_chosen, B, {fn, "policy_chosen"});
    const auto pr = detail::reduce(policy, policy_rejected, B, {fn, "policy_rejected"});
    const auto rc = detail::reduce(policy, reference_chosen, B, {fn, "reference_chosen"});
    const auto rr = detail::reduce(policy, reference_rejected, B, {fn, "reference_rejected"});
    const auto mc = detail::read_dense(chosen_margin_rewards, B, {fn, "chosen_margin_rewards"}, true);
    const auto mr = detail::read_dense(rejected_margin_rewards, B, {fn, "rejected_margin_rewards"}, true);
    const index_t K1 = index_t(w.size()) - 1;
    detail::require(mc.cols == K1, {fn, "chosen_margin_rewards"},
                    "must have " + detail::str(K1) + " columns (one per weight after the first), found " + detail::str(mc.cols));
    detail::require(mr.cols == K1, {fn, "rejected_margin_rewards"},
                    "must have " + detail::str(K1) + " columns (one per weight after the first), found " + detail::str(mr.cols));

    const bool hinge = options.loss == modpo_loss_type::hinge;
    std::vector<double> Rc(static_cast<std::size_t>(B)), Rr(static_cast<std::size_t>(B)), loss(static_cast<std::size_t>(B)), gc(static_cast<std::size_t>(B)), gr(static_cast<std::size_t>(B));
    const double f = detail::reduction_factor(options.reduce, options.normalizer, B);
    for (index_t i = 0; i < B; ++i) {
        double margin_c = 0, margin_r = 0;  // w[1:]^T m(y), in column order
        for (index_t k = 0; k < K1; ++k) {
            margin_c += w[std::size_t(k) + 1] * mc(i, k);
            margin_r += w[std::size_t(k) + 1] * mr(i, k);
        }
        const std::size_t s = std::size_t(i);
        Rc[s] = (options.beta * (pc.sum[s] - rc.sum[s]) - margin_c) / w[0];
        Rr[s] = (options.beta * (pr.sum[s] - rr.sum[s]) - margin_r) / w[0];
        double dz;
        detail::modpo_pair(Rc[s] - Rr[s], hinge, loss[s], dz);
        gc[s] = dz * (options.beta / w[0]) * f * options.grad_scale;
        gr[s] = -gc[s];
    }
    modpo_result res;
    res.pairs = B;
    res.loss = posttrain::detail::fixed_order_sum(B, [&](index_t i) { return loss[std::size_t(i)]; }) * f;
    res.rewards = detail::pair_reward_metrics(Rc, Rr, pc.sum, pr.sum);
    detail::check_grads_against(fn,
                                {{grad_chosen, "grad_chosen", policy_chosen}, {grad_rejected, "grad_rejected", policy_rejected}},
                                {{policy_chosen, "policy_chosen"}, {policy_rejected, "policy_rejected"},
                                 {reference_chosen, "reference_chosen"}, {reference_rejected, "reference_rejected"}});
    detail::check_outputs_before_writes(fn, B,
                                        {{outputs.losses, "outputs.losses"},
                                         {outputs.chosen_rewards, "outputs.chosen_rewards"},
                                         {outputs.rejected_rewards, "outputs.rejected_rewards"}},
                                        {{grad_chosen, "grad_chosen"}, {grad_rejected, "grad_rejected"}});
    detail::broadcast(policy, policy_chosen, gc, grad_chosen, {fn, "grad_chosen"});
    detail::broadcast(policy, policy_rejected, gr, grad_rejected, {fn, "grad_rejected"});
    outputs.losses.write(loss, {fn, "outputs.losses"});
    outputs.chosen_rewards.write(Rc, {fn, "outputs.chosen_rewards"});
    outputs.rejected_rewards.write(Rr, {fn, "outputs.rejected_rewards"});
    return res;
}

}  // namespace posttrain::preference
