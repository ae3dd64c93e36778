#pragma once
// The DPO family as one fused loss: DPO and its successors (cDPO, robust DPO, IPO, hinge, EXO, NCA,
// BCO, SPPO, AOT, APO, DiscoPOP, length-normalised DPO, SFT), SimPO and CPO (reference-free, length-
// averaged, target margin, AlphaPO), TRL's f-divergence scores, its weighted multi-loss combination,
// LD-DPO and WPO weights, and OpenRLHF's DPO / reward-model pairwise losses.
//
// One call reads the chosen and rejected responses under the policy (and the reference), each as
// per-token log-probs with a mask or as per-sequence sums, and returns the reduced loss with TRL's
// implicit-reward metrics; dL/d(policy log-probs) (times grad_scale) goes into the caller's views.
// Reference log-probs get no gradient. The maths and its sources: docs/algorithms/dpo.md and
// ../shared/specs/preference_losses.md §2, §3.21.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "common.hpp"
#include "pair_math.hpp"
#include "sequence.hpp"
#include "sft.hpp"

namespace posttrain::preference {

// One term of TRL's multi-loss combination: loss = sum_k weight_k * mean(per-pair loss_k).
struct loss_term {
    pair_loss loss = pair_loss::sigmoid;
    double weight = 1.0;
};

// BCO's reward shift delta (bco_pair): TRL >= 0.29 uses none; TRL <= 0.28 used the running mean of the
// batch rewards, which a caller keeps across steps (dpo_result::bco_batch_reward_mean feeds it) and
// passes as a value; batch_mean is that running mean on the first step (a fresh RunningMoments), and
// batch_mean_float32 the same rounded to float, as RunningMoments stores it.
enum class bco_shift { none, batch_mean, batch_mean_float32, value };

struct dpo_options {
    pair_loss loss = pair_loss::sigmoid;
    std::vector<loss_term> losses;  // when non-empty, replaces `loss` (TRL loss_type list + loss_weights)
    double beta = 0.1;
    double label_smoothing = 0;     // eps: cDPO for sigmoid, flip rate for robust, target for exo_pair, aot*
    bool smooth_sigmoid = true;     // label_smoothing applies to sigmoid / sigmoid_norm (cDPO); TRL >= 0.29 has none there
    double gamma = 0;               // target margin: z = beta * h - gamma (SimPO gamma = beta * gamma_beta_ratio)
    bool reference_free = false;    // l = S_policy (the reference is ignored by the loss; if given, rewards still use it)
    bool average_log_prob = false;  // S -> S / max(n, 1) before anything (SimPO, CPO's ipo / simpo)
    bool ipo_length_normalized = true;  // IPO on length-averaged scores (TRL); false: on sums (eric-mitchell, OpenRLHF, TRL <= 0.28)
    score_transform divergence = score_transform::reverse_kl;
    double alpha_coef = 1.0;        // alpha of the alpha divergences and of AlphaPO
    double exp_cap = 80.0;          // clamp of the alpha-divergence exponent (TRL: 80 for float32, 709.7827 in <= 0.28 float64)
    double discopop_tau = 0.05;
    bco_shift bco = bco_shift::none;
    double bco_delta = 0;           // the shift for bco_shift::value
    double ld_alpha = 1.0;          // LD-DPO: tokens past the shared length min(n_w, n_l) weigh ld_alpha (1: off)
    bool sft_token_mean = true;     // sft term: -sum S_w / sum n_w over the batch (TRL); false: -S_w per pair (SLiC-HF)
    reduction reduce = reduction::mean;
    double normalizer = 0;          // > 0: divide the summed loss by this (global pair count) instead of B
    double grad_scale = 1.0;

    // TRL DPOTrainer (current, >= 0.29): sigmoid has no label smoothing, IPO is length-normalised.
    static dpo_options trl(pair_loss loss = pair_loss::sigmoid, double beta = 0.1, double label_smoothing = 0) {
        dpo_options o;
        o.loss = loss;
        o.beta = beta;
        o.label_smoothing = label_smoothing;
        o.smooth_sigmoid = false;
        return o;
    }
    // TRL's multi-loss (MPO) combination, e.g. {{sigmoid, 0.8}, {bco_pair, 0.2}, {sft, 1.0}}.
    static dpo_options trl(std::vector<loss_term> terms, double beta = 0.1, double label_smoothing = 0) {
        dpo_options o = trl(pair_loss::sigmoid, beta, label_smoothing);
        o.losses = std::move(terms);
        return o;
    }
    // TRL <= 0.28 DPOTrainer.dpo_loss: cDPO label smoothing on sigmoid, IPO on sums, exo_pair's eps 0
    // silently replaced by 1e-3, bco_pair shifted by the (first-step) running reward mean, the old
    // alpha-divergence form.
    static dpo_options trl_v028(pair_loss loss = pair_loss::sigmoid, double beta = 0.1, double label_smoothing = 0) {
        dpo_options o;
        o.loss = loss;
        o.beta = beta;
        o.label_smoothing = loss == pair_loss::exo_pair && label_smoothing == 0 ? 1e-3 : label_smoothing;
        o.ipo_length_normalized = false;
        o.bco = bco_shift::batch_mean_float32;
        o.exp_cap = 709.7827;  // floor(log(DBL_MAX) * 1e4) / 1e4, TRL's cap_exp for float64
        return o;
    }
    // OpenRLHF DPOLoss(beta, label_smoothing, ipo): cDPO, or IPO on sums.
    static dpo_options openrlhf(double beta = 0.1, double label_smoothing = 0, bool ipo = false) {
        dpo_options o;
        o.loss = ipo ? pair_loss::ipo : pair_loss::sigmoid;
        o.beta = beta;
        o.label_smoothing = ipo ? 0.0 : label_smoothing;
        o.ipo_length_normalized = false;
        return o;
    }
    // A reward model's Bradley-Terry loss on scalar rewards, softplus(-(r_w - r_l)) (OpenRLHF PairWiseLoss
    // and LogExpLoss, which are the same function): pass the rewards as sums, no reference.
    static dpo_options reward_model() {
        dpo_options o;
        o.beta = 1.0;
        o.reference_free = true;
        return o;
    }
    // SimPO (princeton-nlp/SimPO): reference-free on length-averaged log-probs with margin
    // gamma = beta * gamma_beta_ratio; loss_type sigmoid (with label smoothing) or hinge.
    static dpo_options simpo(double beta = 2.0, double gamma_beta_ratio = 0.25, double label_smoothing = 0,
                             pair_loss loss = pair_loss::sigmoid) {
        dpo_options o;
        o.loss = loss;
        o.beta = beta;
        o.gamma = beta * gamma_beta_ratio;
        o.label_smoothing = label_smoothing;
        o.reference_free = true;
        o.average_log_prob = true;
        return o;
    }
    // SLiC-HF calibration (Zhao et al. 2023; HALOs SLiCTrainer): max(0, delta - S_w + S_l) - lambda S_w on
    // summed policy log-probs, no reference (the regulariser's target is the chosen response, as HALOs).
    static dpo_options slic(double delta = 1.0, double lambda = 0.1) {
        dpo_options o;
        o.beta = 1.0;
        o.gamma = delta - 1.0;  // hinge: max(0, 1 - (h - gamma)) = max(0, delta - h)
        o.reference_free = true;
        o.losses = {{pair_loss::hinge, 1.0}, {pair_loss::sft, lambda}};
        o.sft_token_mean = false;
        return o;
    }
    // TRL CPOTrainer.cpo_loss: reference-free; loss sigmoid (cDPO), hinge or ipo (on sums of what it is
    // given); alpha != 0 is AlphaPO's reward. The CPO trainer length-averages for ipo and simpo: set
    // average_log_prob when passing token log-probs.
    static dpo_options cpo(pair_loss loss = pair_loss::sigmoid, double beta = 0.1, double label_smoothing = 0,
                           double alpha = 0) {
        dpo_options o;
        o.loss = loss;
        o.beta = beta;
        o.label_smoothing = label_smoothing;
        o.reference_free = true;
        o.ipo_length_normalized = false;
        if (alpha != 0) {
            o.divergence = score_transform::alphapo;
            o.alpha_coef = alpha;
        }
        return o;
    }
    // CPO's loss_type "simpo": sigmoid (cDPO with label_smoothing) with the target margin simpo_gamma.
    static dpo_options cpo_simpo(double beta = 0.1, double simpo_gamma = 0.5, double label_smoothing = 0, double alpha = 0) {
        dpo_options o = cpo(pair_loss::sigmoid, beta, label_smoothing, alpha);
        o.gamma = simpo_gamma;
        return o;
    }
};

// Optional per-pair inputs, [B] each: weights multiply each pair's loss (WPO weights, importance
// weights; detached), margins are subtracted from z like gamma (OpenRLHF PairWiseLoss margin, ODPO).
struct pair_extras {
    sequence_input weights{};  // sequence_input::sums(w)
    sequence_input margins{};  // sequence_input::sums(m)
};

// Optional per-pair outputs, [B] each.
struct pair_outputs {
    batch_output losses{};            // per-pair loss (the weighted sum over terms, before the reduction)
    batch_output chosen_rewards{};    // beta * l_w (AlphaPO: beta * s_w)
    batch_output rejected_rewards{};
    batch_output chosen_logps{};      // the policy's S(y_w) as the loss used it (LD-weighted, length-averaged if asked)
    batch_output rejected_logps{};
};

struct [[nodiscard]] dpo_result {
    double loss = 0;
    reward_metrics metrics;
    index_t pairs = 0;
    std::vector<double> term_losses;    // mean per-pair loss of each term (TRL logs the combination only)
    double bco_batch_reward_mean = 0;   // mean of [beta l_w; beta l_l] (updates a BCO running mean)
};

namespace detail {

inline const char* pair_loss_name(pair_loss l) noexcept {
    switch (l) {
    case pair_loss::sigmoid: return "sigmoid";
    case pair_loss::robust: return "robust";
    case pair_loss::ipo: return "ipo";
    case pair_loss::hinge: return "hinge";
    case pair_loss::exo_pair: return "exo_pair";
    case pair_loss::nca_pair: return "nca_pair";
    case pair_loss::bco_pair: return "bco_pair";
    case pair_loss::sppo_hard: return "sppo_hard";
    case pair_loss::aot: return "aot";
    case pair_loss::aot_unpaired: return "aot_unpaired";
    case pair_loss::apo_zero: return "apo_zero";
    case pair_loss::apo_down: return "apo_down";
    case pair_loss::discopop: return "discopop";
    case pair_loss::sigmoid_norm: return "sigmoid_norm";
    case pair_loss::sft: return "sft";
    }
    return "?";
}

inline std::vector<loss_term> terms_of(const dpo_options& o) {
    return o.losses.empty() ? std::vector<loss_term>{{o.loss, 1.0}} : o.losses;
}

// The losses of z = beta * h - margin, which a target margin (gamma, extras.margins) shifts; sft has no
// margin to shift and passes.
inline bool takes_margin(pair_loss l) noexcept {
    return l == pair_loss::sigmoid || l == pair_loss::sigmoid_norm || l == pair_loss::hinge || l == pair_loss::robust ||
           l == pair_loss::exo_pair || l == pair_loss::sft;
}

inline void check_dpo_options(const dpo_options& o, const char* fn) {
    const where w{fn, "options"};
    auto finite = [](double x) { return numeric::is_finite(x); };
    require(finite(o.beta) && o.beta > 0, w, "beta must be finite and > 0");
    require(finite(o.label_smoothing) && o.label_smoothing >= 0 && o.label_smoothing < 1, w,
            "label_smoothing must be in [0, 1)");
    require(finite(o.gamma), w, "gamma must be finite");
    require(finite(o.grad_scale), w, "grad_scale must be finite");
    require(finite(o.normalizer) && o.normalizer >= 0, w, "normalizer must be finite and >= 0");
    require(finite(o.ld_alpha) && o.ld_alpha >= 0, w, "ld_alpha must be finite and >= 0");
    require(finite(o.alpha_coef), w, "alpha_coef must be finite");
    require(finite(o.exp_cap), w, "exp_cap must be finite");
    require(o.bco != bco_shift::value || finite(o.bco_delta), w, "bco_delta must be finite");
    if (o.divergence == score_transform::alpha_divergence_v028 || o.divergence == score_transform::alphapo)
        require(o.alpha_coef != 0, w, "alpha_coef must be nonzero for this score transform");
    const auto terms = terms_of(o);
    require(!terms.empty(), w, "losses must not be empty");
    for (const loss_term& t : terms) {
        const std::string name = pair_loss_name(t.loss);
        require(finite(t.weight), w, "the weight of loss '" + name + "' must be finite");
        if (t.loss == pair_loss::robust)
            require(o.label_smoothing < 0.5, w, "robust needs label_smoothing < 0.5 (it divides by 1 - 2 eps)");
        if (t.loss == pair_loss::exo_pair)
            require(o.label_smoothing > 0, w, "exo_pair needs label_smoothing > 0 (the target distribution [1-eps, eps])");
        if (t.loss == pair_loss::sft)
            require(o.ld_alpha == 1.0, w, "sft is the plain NLL of the chosen tokens: it does not combine with ld_alpha");
        if (t.loss == pair_loss::discopop)
            require(finite(o.discopop_tau) && o.discopop_tau > 0, w, "discopop_tau must be finite and > 0");
        if (o.gamma != 0)
            require(takes_margin(t.loss), w,
                    "gamma (a target margin) applies to sigmoid, sigmoid_norm, hinge, robust and exo_pair, not to '" + name + "'");
    }
}

// sum_b f(b) in posttrain's fixed order.
template <class F>
double pair_sum(index_t n, F&& f) {
    return fixed_order_sum(n, std::forward<F>(f));
}

// The per-pair mean of the batch-coupled AOT losses: the cDPO form on delta_k = x_(k) - y_(k) of two
// ascending-sorted vectors; the gradient of position k goes to the item that sorts to k. Ties sort by
// index (a stable order), so the assignment is deterministic.
inline void aot_terms(const std::vector<double>& x, const std::vector<double>& y, double beta, double eps,
                      std::vector<double>& loss, std::vector<double>& dx, std::vector<double>& dy) {
    const std::size_t n = x.size();
    std::vector<std::size_t> px(n), py(n);
    std::iota(px.begin(), px.end(), std::size_t{0});
    std::iota(py.begin(), py.end(), std::size_t{0});
    std::stable_sort(px.begin(), px.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::stable_sort(py.begin(), py.end(), [&](std::size_t a, std::size_t b) { return y[a] < y[b]; });
    loss.assign(n, 0.0);
    dx.assign(n, 0.0);
    dy.assign(n, 0.0);
    for (std::size_t k = 0; k < n; ++k) {
        double dz;
        loss[k] = smoothed_logistic(beta * (x[px[k]] - y[py[k]]), eps, dz);
        dx[px[k]] = beta * dz;
        dy[py[k]] = -beta * dz;
    }
}

inline std::vector<double> sums_of(const sequence_input& in, index_t batch, where w) {
    if (!in.present()) return {};
    require(!in.per_token(), w, "must be given as a [B] vector (sequence_input::sums)");
    return reduce(exec::seq, in, batch, w).sum;
}

}  // namespace detail

// The fused DPO-family loss over B pairs. chosen / rejected: the policy's log-probs of the preferred
// and dispreferred responses; ref_chosen / ref_rejected: the reference's (absent when
// options.reference_free). Each is a sequence_input (per-token with a mask, or per-sequence sums);
// grad_chosen / grad_rejected receive d loss / d (policy log-probs) * grad_scale in the matching form.
template <class Policy>
dpo_result dpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
               const sequence_input& ref_chosen, const sequence_input& ref_rejected, const sequence_grad& grad_chosen,
               const sequence_grad& grad_rejected, const dpo_options& o = {}, const pair_outputs& outputs = {},
               const pair_extras& extras = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::dpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::dpo";
    detail::check_dpo_options(o, fn);
    const index_t B = chosen.batch();
    posttrain::detail::require(chosen.present(), {fn, "chosen"}, "is required");
    posttrain::detail::require(B > 0, {fn, "chosen"}, "must hold at least one pair");
    const auto terms = detail::terms_of(o);
    const bool ld = o.ld_alpha != 1.0;
    const std::size_t nb = std::size_t(B);

    // Sequence sums (LD-DPO weighs the tokens past the pair's shared length by ld_alpha; the shared
    // length comes from the policy masks and applies to the reference too).
    std::vector<double> shared;
    token_weighting weighting;
    if (ld) {
        posttrain::detail::require(chosen.per_token() && rejected.per_token(), {fn, "options"},
                "ld_alpha needs the policy log-probs per token (sequence_input::tokens)");
        const auto nw = detail::reduce(policy, chosen, B, {fn, "chosen"}).length;
        const auto nl = detail::reduce(policy, rejected, B, {fn, "rejected"}).length;
        shared.resize(nb);
        for (index_t i = 0; i < B; ++i) shared[std::size_t(i)] = std::min(nw[std::size_t(i)], nl[std::size_t(i)]);
        weighting = {shared.data(), o.ld_alpha};
    }
    auto reduce_side = [&](const sequence_input& in, const char* name) {
        return detail::reduce(policy, in, B, {fn, name}, in.per_token() ? weighting : token_weighting{});
    };
    sequence_values pw = reduce_side(chosen, "chosen"), pl = reduce_side(rejected, "rejected");
    const bool has_ref = ref_chosen.present() || ref_rejected.present();
    posttrain::detail::require(o.reference_free || has_ref, {fn, "ref_chosen"}, "is required unless options.reference_free");
    sequence_values rw, rl;
    if (has_ref) {
        rw = reduce_side(ref_chosen, "ref_chosen");
        rl = reduce_side(ref_rejected, "ref_rejected");
    }

    // Lengths are needed by length averaging, length-normalised IPO, sigmoid_norm and sft.
    bool need_len = o.average_log_prob;
    for (const loss_term& t : terms)
        need_len = need_len || t.loss == pair_loss::sigmoid_norm || (t.loss == pair_loss::sft && o.sft_token_mean) ||
                   (t.loss == pair_loss::ipo && o.ipo_length_normalized);
    if (need_len) {
        posttrain::detail::require(chosen.has_lengths(), {fn, "chosen"}, "needs lengths for this loss (sequence_input::sums(sums, lengths))");
        posttrain::detail::require(rejected.has_lengths(), {fn, "rejected"}, "needs lengths for this loss (sequence_input::sums(sums, lengths))");
    }
    auto inv_len = [](double n) { return 1.0 / std::max(n, 1.0); };
    const std::vector<double> raw_w = pw.sum;  // the sft term's NLL is on the summed log-probs
    if (o.average_log_prob)
        for (index_t i = 0; i < B; ++i) {
            const std::size_t k = std::size_t(i);
            pw.sum[k] *= inv_len(pw.length[k]);
            pl.sum[k] *= inv_len(pl.length[k]);
            if (has_ref) {
                rw.sum[k] *= inv_len(pw.length[k]);
                rl.sum[k] *= inv_len(pl.length[k]);
            }
        }

    const auto weights = detail::sums_of(extras.weights, B, {fn, "extras.weights"});
    const auto margins = detail::sums_of(extras.margins, B, {fn, "extras.margins"});
    for (const loss_term& t : terms) {
        const std::string name = detail::pair_loss_name(t.loss);
        posttrain::detail::require(margins.empty() || detail::takes_margin(t.loss), {fn, "extras.margins"},
                                   "margins apply to sigmoid, sigmoid_norm, hinge, robust and exo_pair, not to '" + name + "'");
        // TRL refuses WPO weights with AOT too: a sorted position's loss has no pair of its own to weigh.
        posttrain::detail::require(weights.empty() || (t.loss != pair_loss::aot && t.loss != pair_loss::aot_unpaired),
                                   {fn, "extras.weights"}, "per-pair weights do not apply to the batch-sorted '" + name + "'");
    }
    double mean_weight = 1.0;
    if (!weights.empty()) {
        for (double x : weights)
            posttrain::detail::require(x >= 0, {fn, "extras.weights"}, "weights must be finite and >= 0");
        mean_weight = detail::pair_sum(B, [&](index_t i) { return weights[std::size_t(i)]; }) / double(B);
    }

    // Log-ratios (the loss's) and scores.
    std::vector<double> lw(nb), ll(nb), sw(nb), sl(nb), dsw(nb), dsl(nb);
    score_transform f = o.divergence;
    if (f == score_transform::alpha_divergence && std::fabs(o.alpha_coef - 1.0) < 1e-6) f = score_transform::reverse_kl;
    for (index_t i = 0; i < B; ++i) {
        const std::size_t k = std::size_t(i);
        lw[k] = o.reference_free ? pw.sum[k] : pw.sum[k] - rw.sum[k];
        ll[k] = o.reference_free ? pl.sum[k] : pl.sum[k] - rl.sum[k];
        sw[k] = detail::score_of(f, o.alpha_coef, o.exp_cap, lw[k], dsw[k]);
        sl[k] = detail::score_of(f, o.alpha_coef, o.exp_cap, ll[k], dsl[k]);
        posttrain::detail::require(numeric::is_finite(sw[k]) && numeric::is_finite(sl[k]), {fn, "options.divergence"},
                "the score of pair " + detail::str(i) + " overflows (exp of a log-ratio beyond the double range)");
    }
    // Rewards: beta * l with the reference when one is given (TRL logs them even for reference_free).
    std::vector<double> rew_w(nb), rew_l(nb);
    for (index_t i = 0; i < B; ++i) {
        const std::size_t k = std::size_t(i);
        if (f == score_transform::alphapo) {
            rew_w[k] = o.beta * sw[k];
            rew_l[k] = o.beta * sl[k];
        } else {
            rew_w[k] = o.beta * (has_ref ? pw.sum[k] - rw.sum[k] : pw.sum[k]);
            rew_l[k] = o.beta * (has_ref ? pl.sum[k] - rl.sum[k] : pl.sum[k]);
        }
    }
    const double reward_mean =
        detail::pair_sum(2 * B, [&](index_t j) { return j < B ? o.beta * lw[std::size_t(j)] : o.beta * ll[std::size_t(j - B)]; }) /
        double(2 * B);

    // Per-pair losses and d(loss)/d(l) of every term, then the weighted combination.
    // dlw / dll: d(loss)/d(l) of the pair terms (chained through the length average below); dsft:
    // d(loss)/d(raw S_w) of the sft term.
    std::vector<double> pair_loss_total(nb, 0.0), dlw(nb, 0.0), dll(nb, 0.0), dsft(nb, 0.0);
    dpo_result result;
    result.pairs = B;
    std::vector<double> term_loss(nb), tw(nb), tl(nb);
    for (const loss_term& term : terms) {
        detail::pair_params p{o.beta, o.label_smoothing, o.gamma, o.discopop_tau, 0.0};
        if (term.loss == pair_loss::bco_pair)
            p.delta = o.bco == bco_shift::none             ? 0.0
                      : o.bco == bco_shift::value            ? o.bco_delta
                      : o.bco == bco_shift::batch_mean_float32 ? double(float(reward_mean))
                                                             : reward_mean;
        if (term.loss == pair_loss::aot || term.loss == pair_loss::aot_unpaired) {
            std::vector<double> x(nb), y(nb), dx, dy;
            for (index_t i = 0; i < B; ++i) {
                const std::size_t k = std::size_t(i);
                if (term.loss == pair_loss::aot) {  // policy margins vs reference margins, on raw log-probs
                    x[k] = pw.sum[k] - pl.sum[k];
                    y[k] = has_ref && !o.reference_free ? rw.sum[k] - rl.sum[k] : 0.0;
                } else {
                    x[k] = lw[k];
                    y[k] = ll[k];
                }
            }
            detail::aot_terms(x, y, o.beta, o.label_smoothing, term_loss, dx, dy);
            for (index_t i = 0; i < B; ++i) {
                const std::size_t k = std::size_t(i);
                // aot: x = S_w - S_l reaches l_w with + and l_l with -, and y is constant.
                tw[k] = dx[k];
                tl[k] = term.loss == pair_loss::aot ? -dx[k] : dy[k];
            }
        } else if (term.loss == pair_loss::sft) {
            // TRL copies its batch NLL (token mean) to every pair; SLiC's regulariser is -S_w per pair. Both
            // come from the SFT loss's own terms: coef is d(reduced NLL)/d S_w, B times a pair's share.
            const auto t = detail::sft_terms_of({raw_w, pw.length},
                                                o.sft_token_mean ? sft_normalization::token_mean : sft_normalization::sequence_sum,
                                                0.0, {fn, "chosen"});
            for (index_t i = 0; i < B; ++i) {
                const std::size_t k = std::size_t(i);
                tw[k] = t.coef[k] * double(B);
                term_loss[k] = o.sft_token_mean ? t.loss : tw[k] * raw_w[k];
                tl[k] = 0;
            }
        } else {
            const bool per_len = term.loss == pair_loss::sigmoid_norm || (term.loss == pair_loss::ipo && o.ipo_length_normalized);
            for (index_t i = 0; i < B; ++i) {
                const std::size_t k = std::size_t(i);
                const double aw = per_len ? inv_len(pw.length[k]) : 1.0, al = per_len ? inv_len(pl.length[k]) : 1.0;
                detail::pair_params pi = p;
                if (!margins.empty()) pi.gamma += margins[k];
                if ((term.loss == pair_loss::sigmoid || term.loss == pair_loss::sigmoid_norm) && !o.smooth_sigmoid) pi.eps = 0;
                const detail::pair_value v = detail::pair_term(term.loss, sw[k] * aw, sl[k] * al, lw[k], ll[k], pi);
                term_loss[k] = v.loss;
                tw[k] = v.ds_w * aw * dsw[k] + v.dl_w;
                tl[k] = v.ds_l * al * dsl[k] + v.dl_l;
            }
        }
        if (!weights.empty())
            for (index_t i = 0; i < B; ++i) {
                const std::size_t k = std::size_t(i);
                term_loss[k] *= weights[k];
                // The token-mean sft loss is one batch constant: weighing its copies gives mean(w) * nll,
                // whose gradient on every chosen response carries mean(w).
                const double wk = term.loss == pair_loss::sft && o.sft_token_mean ? mean_weight : weights[k];
                tw[k] *= wk;
                tl[k] *= wk;
            }
        result.term_losses.push_back(detail::pair_sum(B, [&](index_t i) { return term_loss[std::size_t(i)]; }) / double(B));
        for (index_t i = 0; i < B; ++i) {
            const std::size_t k = std::size_t(i);
            pair_loss_total[k] += term.weight * term_loss[k];
            (term.loss == pair_loss::sft ? dsft : dlw)[k] += term.weight * tw[k];
            dll[k] += term.weight * tl[k];
        }
    }

    const double factor = detail::reduction_factor(o.reduce, o.normalizer, B);
    result.loss = detail::pair_sum(B, [&](index_t i) { return pair_loss_total[std::size_t(i)]; }) * factor;
    result.metrics = detail::pair_reward_metrics(rew_w, rew_l, pw.sum, pl.sum);
    result.bco_batch_reward_mean = reward_mean;

    // d loss / d S_policy: through l (the reference is constant) and the length average.
    std::vector<double> cw(nb), cl(nb);
    for (index_t i = 0; i < B; ++i) {
        const std::size_t k = std::size_t(i);
        const double aw = o.average_log_prob ? inv_len(pw.length[k]) : 1.0, al = o.average_log_prob ? inv_len(pl.length[k]) : 1.0;
        cw[k] = (dlw[k] * aw + dsft[k]) * factor * o.grad_scale;
        cl[k] = dll[k] * al * factor * o.grad_scale;
    }
    detail::broadcast(policy, chosen, cw, grad_chosen, {fn, "grad_chosen"}, chosen.per_token() ? weighting : token_weighting{});
    detail::broadcast(policy, rejected, cl, grad_rejected, {fn, "grad_rejected"},
                      rejected.per_token() ? weighting : token_weighting{});
    outputs.losses.write(pair_loss_total, {fn, "outputs.losses"});
    outputs.chosen_rewards.write(rew_w, {fn, "outputs.chosen_rewards"});
    outputs.rejected_rewards.write(rew_l, {fn, "outputs.rejected_rewards"});
    outputs.chosen_logps.write(pw.sum, {fn, "outputs.chosen_logps"});
    outputs.rejected_logps.write(pl.sum, {fn, "outputs.rejected_logps"});
    return result;
}

// SimPO from per-token log-probs: dpo() with dpo_options::simpo(...) and no reference.
template <class Policy>
dpo_result simpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
                 const sequence_grad& grad_chosen, const sequence_grad& grad_rejected,
                 const dpo_options& o = dpo_options::simpo(), const pair_outputs& outputs = {}) {
    return dpo(policy, chosen, rejected, sequence_input{}, sequence_input{}, grad_chosen, grad_rejected, o, outputs);
}

}  // namespace posttrain::preference
