#pragma once
// TGDPO: DPO with token-level reward guidance (dvlab-research/TGDPO). A guide model (a DPO- or
// SimPO-trained policy) scores each token with r_t = g_t - q_t (guide minus reference log-prob), and
// that score replaces DPO's constant beta with a per-token weight:
//
//   w_t(y_w) = beta * (1 + alpha * beta * r_t(y_w))        chosen tokens
//   w_t(y_l) = beta * (1 - alpha * beta * r_t(y_l))        rejected tokens
//   z        = sum_t w_t(y_w) (p_t - q_t)|y_w - sum_t w_t(y_l) (p_t - q_t)|y_l      (valid tokens)
//   L_pair   = softplus(-z) [+ gamma * (-S(y_w) / max(n(y_w), 1))]                  (optional SFT term)
//
// The weights are constants (guide and reference run without gradient), so
//   dL_pair/dp_t(y_w) = -sigmoid(-z) w_t(y_w) [- gamma / max(n(y_w), 1)],
//   dL_pair/dp_t(y_l) = +sigmoid(-z) w_t(y_l).
// With alpha = 0 every weight is beta and TGDPO is DPO (sigmoid) on summed log-ratios.
//
// The official code does not clamp the weights: a guide log-ratio beyond 1/(alpha*beta) (20 nats at the
// defaults) makes a weight negative and flips that token's gradient. clamp_weights = true (opt-in)
// floors them at 0. The rewards it logs are DPO's, unweighted: beta * sum_t (p_t - q_t).

#include <cmath>
#include <string>
#include <vector>

#include "token_rewards.hpp"

namespace posttrain::preference {

struct tgdpo_options {
    double beta = 0.1;            // pref_beta
    double alpha = 0.5;           // tgdpo_alpha: the strength of the guidance (0: DPO)
    bool clamp_weights = false;   // floor each token weight at 0 (a deviation from the official code)
    double sft_weight = 0;        // pref_ftx gamma: adds gamma * (-mean chosen log-prob) per pair
    reduction reduce = reduction::mean;
    double normalizer = 0;        // > 0: the mean divides by this instead of the pair count (global count)
    double grad_scale = 1.0;

    // dvlab-research/TGDPO at dd88982 (CustomDPOTrainer.dpo_loss, loss_type sigmoid; the released
    // llama3_8b_instruct_tgdpo.yaml: pref_beta 0.1, tgdpo_alpha 0.5): unclamped weights, mean over pairs.
    static constexpr tgdpo_options official(double beta = 0.1, double alpha = 0.5, double sft_weight = 0) {
        tgdpo_options o;
        o.beta = beta;
        o.alpha = alpha;
        o.sft_weight = sft_weight;
        return o;
    }
};

// Optional per-example outputs (each may be left out).
struct tgdpo_outputs {
    batch_output losses = {};                  // [B] per-pair loss (SFT term included)
    batch_output chosen_rewards = {};          // [B] beta * sum_t (p_t - q_t) over y_w (unweighted)
    batch_output rejected_rewards = {};        // [B] the same over y_l
    token_output chosen_token_rewards = {};    // [B, T_w] beta * (p_t - q_t), 0 on masked tokens
    token_output rejected_token_rewards = {};  // [B, T_l]
};

struct [[nodiscard]] tgdpo_result {
    double loss = 0;             // the reduced loss
    double preference_loss = 0;  // its softplus(-z) part
    double sft_loss = 0;         // the reduced -S(y_w) / max(n(y_w), 1), before sft_weight
    double margin = 0;           // mean z (the weighted margin the loss sees)
    reward_metrics rewards;      // TGDPO's logged metrics: unweighted rewards, logps = policy sums
    double logps_ref_chosen = 0;    // mean reference sum over y_w (logps/ref_chosen)
    double logps_ref_rejected = 0;
    double negative_weights = 0;    // valid tokens whose weight was < 0 (before any clamp)
    index_t pairs = 0;
};

namespace detail {

// The guidance weight of one token; sign = +1 for chosen tokens, -1 for rejected ones.
POSTTRAIN_HD inline double tgdpo_weight(double beta, double alpha, double sign, double guide, double ref) noexcept {
    return beta * (1.0 + sign * alpha * beta * (guide - ref));
}

// One response's share of the margin: sum_t w_t (p_t - q_t) over valid tokens; w[t] receives each
// valid token's weight (after the optional clamp) for the gradient, and negatives counts the weights
// that were negative.
inline double tgdpo_side(const double* p, const double* q, const double* g, const unsigned char* m, index_t T,
                         const tgdpo_options& o, double sign, double* w, double& negatives) noexcept {
    double neg = 0;
    for (index_t t = 0; t < T; ++t) {
        double x = m[t] ? tgdpo_weight(o.beta, o.alpha, sign, g[t], q[t]) : 0.0;
        neg += x < 0 ? 1.0 : 0.0;
        if (o.clamp_weights && x < 0) x = 0;
        w[t] = x;
    }
    negatives = neg;
    return fixed_order_sum(T, [&](index_t t) { return m[t] ? w[t] * (p[t] - q[t]) : 0.0; });
}

inline void check_tgdpo_options(const tgdpo_options& o, const char* fn) {
    require_finite_option(o.beta, fn, "beta");
    require_finite_option(o.alpha, fn, "alpha");
    require_finite_option(o.sft_weight, fn, "sft_weight");
    require_finite_option(o.normalizer, fn, "normalizer");
    require_finite_option(o.grad_scale, fn, "grad_scale");
    require(o.beta > 0, {fn, "options"}, "beta must be > 0, found " + std::to_string(o.beta));
    require(o.sft_weight >= 0, {fn, "options"}, "sft_weight must be >= 0, found " + std::to_string(o.sft_weight));
    require(o.normalizer >= 0, {fn, "options"}, "normalizer must be >= 0 (0: the pair count), found " + std::to_string(o.normalizer));
    require(o.reduce == reduction::mean || o.reduce == reduction::sum, {fn, "options"}, "unknown reduction");
}

// Per-pair quantities the loop produces.
struct tgdpo_pair {
    double z = 0, loss = 0, sft = 0;
    double reward_w = 0, reward_l = 0, logp_w = 0, logp_l = 0, ref_w = 0, ref_l = 0, negatives = 0;
};

}  // namespace detail

// TGDPO loss over B pairs. Inputs are per-token log-probs [B, T_w] (chosen) and [B, T_l] (rejected) of
// the policy, the reference and the guide model, and the response masks (any arithmetic type or bool;
// nonzero = valid; masked positions are never read). grad_chosen / grad_rejected receive
// grad_scale * dL/d(policy log-probs) ([B, T_w] / [B, T_l], 0 on masked tokens) or are
// posttrain::none. Reference and guide get no gradient.
template <class Policy, class PC, class PR, class RC, class RR, class GC, class GR, class MC, class MR>
tgdpo_result tgdpo(const Policy& policy, const PC& policy_chosen, const PR& policy_rejected, const RC& ref_chosen,
                   const RR& ref_rejected, const GC& guide_chosen, const GR& guide_rejected, const MC& chosen_mask,
                   const MR& rejected_mask, const token_output& grad_chosen, const token_output& grad_rejected,
                   const tgdpo_outputs& outputs = {}, const tgdpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::tgdpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::tgdpo";
    detail::check_tgdpo_options(options, fn);
    const auto pw = detail::token_values_of(policy_chosen, {fn, "policy_chosen"});
    const auto pl = detail::token_values_of(policy_rejected, {fn, "policy_rejected"});
    const auto qw = detail::token_values_of(ref_chosen, {fn, "ref_chosen"});
    const auto ql = detail::token_values_of(ref_rejected, {fn, "ref_rejected"});
    const auto gw = detail::token_values_of(guide_chosen, {fn, "guide_chosen"});
    const auto gl = detail::token_values_of(guide_rejected, {fn, "guide_rejected"});
    const auto mw = detail::token_mask_of(chosen_mask, {fn, "chosen_mask"});
    const auto ml = detail::token_mask_of(rejected_mask, {fn, "rejected_mask"});
    const index_t B = pw.rows(), Tw = pw.cols(), Tl = pl.cols();
    posttrain::detail::require(pl.rows() == B, {fn, "policy_rejected"},
                               "must have one row per pair: found " + posttrain::detail::str(pl.rows()) + " rows, 'policy_chosen' has " +
                                   posttrain::detail::str(B));
    detail::check_token_shape(qw.rows(), qw.cols(), B, Tw, {fn, "ref_chosen"}, "policy_chosen");
    detail::check_token_shape(gw.rows(), gw.cols(), B, Tw, {fn, "guide_chosen"}, "policy_chosen");
    detail::check_token_shape(mw.rows(), mw.cols(), B, Tw, {fn, "chosen_mask"}, "policy_chosen");
    detail::check_token_shape(ql.rows(), ql.cols(), B, Tl, {fn, "ref_rejected"}, "policy_rejected");
    detail::check_token_shape(gl.rows(), gl.cols(), B, Tl, {fn, "guide_rejected"}, "policy_rejected");
    detail::check_token_shape(ml.rows(), ml.cols(), B, Tl, {fn, "rejected_mask"}, "policy_rejected");
    detail::check_token_output(grad_chosen, B, Tw, {fn, "grad_chosen"}, "policy_chosen", pw, pl, qw, ql, gw, gl, mw, ml);
    detail::check_token_output(grad_rejected, B, Tl, {fn, "grad_rejected"}, "policy_rejected", pw, pl, qw, ql, gw, gl, mw, ml);
    detail::check_outputs_disjoint(grad_chosen, grad_rejected, {fn, "grad_rejected"}, "grad_chosen");
    const token_output* token_outs[] = {&grad_chosen, &grad_rejected, &outputs.chosen_token_rewards, &outputs.rejected_token_rewards};
    const char* token_names[] = {"grad_chosen", "grad_rejected", "chosen_token_rewards", "rejected_token_rewards"};
    detail::check_token_output(outputs.chosen_token_rewards, B, Tw, {fn, "chosen_token_rewards"}, "policy_chosen", pw, pl, qw, ql, gw, gl, mw, ml);
    detail::check_token_output(outputs.rejected_token_rewards, B, Tl, {fn, "rejected_token_rewards"}, "policy_rejected", pw, pl, qw, ql, gw, gl, mw, ml);
    for (int a = 2; a < 4; ++a)
        for (int b = 0; b < a; ++b) detail::check_outputs_disjoint(*token_outs[a], *token_outs[b], {fn, token_names[a]}, token_names[b]);
    auto check_batch = [&](const batch_output& o, const char* name) {
        posttrain::detail::require(!o.present() || o.size() == B, {fn, name},
                                   "must have one entry per pair: " + posttrain::detail::str(B) + ", found " +
                                       posttrain::detail::str(o.size()));
    };
    check_batch(outputs.losses, "losses");
    check_batch(outputs.chosen_rewards, "chosen_rewards");
    check_batch(outputs.rejected_rewards, "rejected_rewards");
    detail::check_outputs_before_writes(fn, B,
                                        {{outputs.losses, "losses"},
                                         {outputs.chosen_rewards, "chosen_rewards"},
                                         {outputs.rejected_rewards, "rejected_rewards"}},
                                        {{grad_chosen.view(), "grad_chosen"},
                                         {grad_rejected.view(), "grad_rejected"},
                                         {outputs.chosen_token_rewards.view(), "chosen_token_rewards"},
                                         {outputs.rejected_token_rewards.view(), "rejected_token_rewards"}});

    const double f = detail::reduction_factor(options.reduce, options.normalizer, B);
    const double gs = f * options.grad_scale;
    std::vector<detail::tgdpo_pair> pairs(static_cast<std::size_t>(B));
    std::vector<detail::row_error> errors(static_cast<std::size_t>(B));
    posttrain::advantage::detail::for_each_row(policy, B, Tw + Tl, [&](index_t i) {
        const index_t Tm = Tw > Tl ? Tw : Tl;
        std::vector<double> p(static_cast<std::size_t>(Tm)), q(p.size()), g(p.size()), ww(static_cast<std::size_t>(Tw)),
            wl(static_cast<std::size_t>(Tl)), buf(p.size());
        std::vector<unsigned char> mwr(static_cast<std::size_t>(Tw)), mlr(static_cast<std::size_t>(Tl));
        auto& e = errors[std::size_t(i)];
        auto& r = pairs[std::size_t(i)];
        // One response: read, check, its margin share, its sums and its per-token rewards.
        auto side = [&](const detail::token_values& ps, const detail::token_values& qs, const detail::token_values& gsv,
                        const detail::token_mask& ms, unsigned char* m, index_t T, double sign, double* w, double& reward,
                        double& logp, double& ref, const token_output& token_rewards) {
            ps.load(i, p.data());
            qs.load(i, q.data());
            gsv.load(i, g.data());
            ms.load(i, m);
            detail::note_nonfinite(e, p.data(), m, T, ps.name);
            detail::note_nonfinite(e, q.data(), m, T, qs.name);
            detail::note_nonfinite(e, g.data(), m, T, gsv.name);
            if (e.argument) return 0.0;
            double neg = 0;
            const double share = detail::tgdpo_side(p.data(), q.data(), g.data(), m, T, options, sign, w, neg);
            r.negatives += neg;
            detail::token_reward_row(p.data(), q.data(), m, T, options.beta, buf.data());
            reward = posttrain::detail::fixed_order_sum(buf.data(), T);
            logp = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return m[t] ? p[std::size_t(t)] : 0.0; });
            ref = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return m[t] ? q[std::size_t(t)] : 0.0; });
            if (token_rewards.present()) detail::write_row(token_rewards, i, buf.data());
            return share;
        };
        const double zw = side(pw, qw, gw, mw, mwr.data(), Tw, +1.0, ww.data(), r.reward_w, r.logp_w, r.ref_w,
                               outputs.chosen_token_rewards);
        if (e.argument) return;
        const double zl = side(pl, ql, gl, ml, mlr.data(), Tl, -1.0, wl.data(), r.reward_l, r.logp_l, r.ref_l,
                               outputs.rejected_token_rewards);
        if (e.argument) return;
        const double nw = detail::valid_count(mwr.data(), Tw);
        r.z = zw - zl;
        // -log sigmoid(z) = softplus(-z): finite for any finite z, and sigmoid(-z) is its exact slope.
        r.sft = -r.logp_w / (nw > 1 ? nw : 1.0);
        r.loss = numeric::softplus(-r.z) + options.sft_weight * r.sft;
        const double c = numeric::sigmoid(-r.z) * gs;
        const double sft_grad = -options.sft_weight / (nw > 1 ? nw : 1.0) * gs;
        if (grad_chosen.present()) {
            for (index_t t = 0; t < Tw; ++t) buf[std::size_t(t)] = mwr[std::size_t(t)] ? -c * ww[std::size_t(t)] + sft_grad : 0.0;
            detail::write_row(grad_chosen, i, buf.data());
        }
        if (grad_rejected.present()) {
            for (index_t t = 0; t < Tl; ++t) buf[std::size_t(t)] = mlr[std::size_t(t)] ? c * wl[std::size_t(t)] : 0.0;
            detail::write_row(grad_rejected, i, buf.data());
        }
    });
    detail::raise_first(errors, fn);

    auto column = [&](double detail::tgdpo_pair::*field) {
        std::vector<double> v(static_cast<std::size_t>(B));
        for (index_t i = 0; i < B; ++i) v[std::size_t(i)] = pairs[std::size_t(i)].*field;
        return v;
    };
    auto total = [&](double detail::tgdpo_pair::*field) {
        return posttrain::detail::fixed_order_sum(B, [&](index_t i) { return pairs[std::size_t(i)].*field; });
    };
    auto mean = [&](double detail::tgdpo_pair::*field) { return B > 0 ? total(field) / double(B) : 0.0; };
    const auto losses = column(&detail::tgdpo_pair::loss);
    const auto rw = column(&detail::tgdpo_pair::reward_w), rl = column(&detail::tgdpo_pair::reward_l);
    outputs.losses.write(losses, {fn, "losses"});
    outputs.chosen_rewards.write(rw, {fn, "chosen_rewards"});
    outputs.rejected_rewards.write(rl, {fn, "rejected_rewards"});

    tgdpo_result res;
    res.pairs = B;
    res.loss = total(&detail::tgdpo_pair::loss) * f;
    res.sft_loss = total(&detail::tgdpo_pair::sft) * f;
    res.preference_loss = posttrain::detail::fixed_order_sum(B, [&](index_t i) {
                              return numeric::softplus(-pairs[std::size_t(i)].z);
                          }) * f;
    res.margin = mean(&detail::tgdpo_pair::z);
    res.rewards = detail::pair_reward_metrics(rw, rl, column(&detail::tgdpo_pair::logp_w), column(&detail::tgdpo_pair::logp_l));
    res.logps_ref_chosen = mean(&detail::tgdpo_pair::ref_w);
    res.logps_ref_rejected = mean(&detail::tgdpo_pair::ref_l);
    res.negative_weights = total(&detail::tgdpo_pair::negatives);
    return res;
}

}  // namespace posttrain::preference
