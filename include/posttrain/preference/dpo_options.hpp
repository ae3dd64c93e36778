#pragma once
// The options, results and argument checks of the DPO family (preference::dpo, dpo.hpp; its CUDA
// form, dpo.cuh). The DPO family as one fused loss: DPO and its successors (cDPO, robust DPO, IPO, hinge, EXO, NCA,
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

}  // namespace detail
}  // namespace posttrain::preference
