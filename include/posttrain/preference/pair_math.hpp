#pragma once
// The per-pair mathematics of the DPO family, written once for the host loop and the CUDA kernel
// (POSTTRAIN_HD, double, no allocation). Each function gives the loss of one pair and its derivatives
// with respect to the pair's scores; dpo.hpp chains them to the log-probs.
//
// Notation (preference_losses.md §1.1): l = S_policy - S_ref is a response's log-ratio, s = f(l) its
// score under the f-divergence (s = l for reverse KL), h = s_w - s_l, u = beta * h.
// Everything that can overflow is written in log space: sigma(a) * exp(-u) = exp(log_sigma(a) - u),
// sigma(u) * sigma(-u) = exp(-softplus(u) - softplus(-u)), so margins of +-1e4 give exact 0 or finite
// values, never inf * 0.

#include <cmath>

#include "../config.hpp"
#include "../core/numeric.hpp"

namespace posttrain::preference {

// The per-pair loss of a DPO-family objective (TRL loss_type names).
enum class pair_loss {
    sigmoid,       // DPO: softplus(-(u - gamma)); with label smoothing eps the conservative cDPO form
    robust,        // robust DPO: [(1-eps) softplus(-u) - eps softplus(u)] / (1 - 2 eps)
    ipo,           // IPO: (h - 1/(2 beta))^2, on summed or length-averaged scores (dpo_options::ipo_length_normalized)
    hinge,         // SLiC / RSO hinge: max(0, 1 - (u - gamma))
    exo_pair,      // EXO: KL([sigma(u), sigma(-u)] || [1-eps, eps])
    nca_pair,      // NCA: softplus(-a) + softplus(a)/2 + softplus(c)/2, a = beta s_w, c = beta s_l
    bco_pair,      // BCO: softplus(-(a - delta)) + softplus(c - delta)
    sppo_hard,     // SPPO (hard labels): (s_w - 1/(2 beta))^2 + (s_l + 1/(2 beta))^2
    aot,           // AOT paired: the cDPO form on sorted policy margins minus sorted reference margins (batch-coupled)
    aot_unpaired,  // AOT unpaired: on sorted chosen log-ratios minus sorted rejected log-ratios (batch-coupled)
    apo_zero,      // APO-zero: (1 - sigma(beta l_w)) + sigma(beta l_l)
    apo_down,      // APO-down: sigma(beta l_w) + (1 - sigma(u))
    discopop,      // DiscoPOP: (1 - m) softplus(-u) + m exp(-u), m = sigma(u / tau)
    sigmoid_norm,  // length-normalised DPO (Tulu 3): softplus(-beta (s_w / n_w - s_l / n_l))
    sft,           // NLL of the chosen responses: -sum S_w / sum n_w over the batch (SLiC: -S_w, sft_token_mean)
};

// The score a log-ratio enters the loss through (TRL f_divergence_type, and AlphaPO's reward).
enum class score_transform {
    reverse_kl,        // s = l (DPO)
    forward_kl,        // s = -exp(-l)
    js_divergence,     // s = log sigma(l)
    alpha_divergence,  // TRL >= 0.29: s = exp(min((a-1) l, cap)) / (a-1)   (a = alpha_coef; a = 1 is reverse_kl)
    alpha_divergence_v028,  // TRL <= 0.28: s = -exp(min(-a l, cap)) / a
    alphapo,           // AlphaPO (TRL CPO alpha): s = (1 - exp(-a l)) / a, rewards are beta * s
};

namespace detail {

struct pair_params {
    double beta = 0.1;
    double eps = 0;      // label smoothing (sigmoid / robust / exo_pair / aot*)
    double gamma = 0;    // target margin subtracted from u (sigmoid, hinge, robust, exo_pair; SimPO / CPO-SimPO)
    double tau = 0.05;   // discopop temperature
    double delta = 0;    // bco_pair reward shift
};

// Loss of one pair and its derivatives w.r.t. the pair's scores (ds_*) and raw log-ratios (dl_*: only
// apo_zero and apo_down read the raw log-ratios, as TRL does).
struct pair_value {
    double loss = 0;
    double ds_w = 0, ds_l = 0;
    double dl_w = 0, dl_l = 0;
};

using numeric::log_sigmoid;
using numeric::sigmoid;
using numeric::softplus;

// sigma(x) * sigma(-x), exact in the tails.
POSTTRAIN_HD inline double sigmoid_slope(double x) noexcept {
    using std::exp;
    return exp(-softplus(x) - softplus(-x));
}

// The label-smoothed logistic loss (1 - eps) softplus(-z) + eps softplus(z) and its derivative in z.
POSTTRAIN_HD inline double smoothed_logistic(double z, double eps, double& dz) noexcept {
    dz = -(1 - eps) * sigmoid(-z) + eps * sigmoid(z);
    return eps == 0 ? softplus(-z) : (1 - eps) * softplus(-z) + eps * softplus(z);
}

// One pair of a non-batch-coupled loss. s_*: scores (already length-averaged for sigmoid_norm and
// length-normalised ipo), l_*: raw log-ratios. aot, aot_unpaired and sft are batch-level: see dpo.hpp.
POSTTRAIN_HD inline pair_value pair_term(pair_loss type, double s_w, double s_l, double l_w, double l_l,
                                         const pair_params& p) noexcept {
    using std::exp;
    using std::log;
    pair_value v;
    const double beta = p.beta;
    const double h = s_w - s_l;
    const double u = beta * h;
    double du = 0;  // dL/du, chained to the scores below
    switch (type) {
    case pair_loss::sigmoid:
    case pair_loss::sigmoid_norm:
        v.loss = smoothed_logistic(u - p.gamma, p.eps, du);
        break;
    case pair_loss::robust: {
        const double z = u - p.gamma;
        const double k = 1 / (1 - 2 * p.eps);
        v.loss = ((1 - p.eps) * softplus(-z) - p.eps * softplus(z)) * k;
        du = (-(1 - p.eps) * sigmoid(-z) - p.eps * sigmoid(z)) * k;
        break;
    }
    case pair_loss::ipo: {
        const double r = h - 1 / (2 * beta);
        v.loss = r * r;
        v.ds_w = 2 * r;
        v.ds_l = -2 * r;
        return v;
    }
    case pair_loss::hinge: {
        const double z = u - p.gamma;
        v.loss = z < 1 ? 1 - z : 0.0;
        du = z < 1 ? -1.0 : 0.0;  // relu'(0) = 0, as torch
        break;
    }
    case pair_loss::exo_pair: {
        const double z = u - p.gamma;
        const double lq_w = log_sigmoid(z), lq_l = log_sigmoid(-z);
        v.loss = exp(lq_w) * (lq_w - log(1 - p.eps)) + exp(lq_l) * (lq_l - log(p.eps));
        du = sigmoid_slope(z) * (z - (log(1 - p.eps) - log(p.eps)));
        break;
    }
    case pair_loss::nca_pair: {
        const double a = beta * s_w, c = beta * s_l;
        v.loss = softplus(-a) + 0.5 * softplus(a) + 0.5 * softplus(c);
        v.ds_w = beta * (-sigmoid(-a) + 0.5 * sigmoid(a));
        v.ds_l = beta * 0.5 * sigmoid(c);
        return v;
    }
    case pair_loss::bco_pair: {
        const double a = beta * s_w - p.delta, c = beta * s_l - p.delta;
        v.loss = softplus(-a) + softplus(c);
        v.ds_w = -beta * sigmoid(-a);
        v.ds_l = beta * sigmoid(c);
        return v;
    }
    case pair_loss::sppo_hard: {
        const double rw = s_w - 0.5 / beta, rl = s_l + 0.5 / beta;
        v.loss = rw * rw + rl * rl;
        v.ds_w = 2 * rw;
        v.ds_l = 2 * rl;
        return v;
    }
    case pair_loss::apo_zero: {
        const double a = beta * l_w, c = beta * l_l;
        v.loss = (1 - sigmoid(a)) + sigmoid(c);
        v.dl_w = -beta * sigmoid_slope(a);
        v.dl_l = beta * sigmoid_slope(c);
        return v;
    }
    case pair_loss::apo_down: {
        const double a = beta * l_w;
        v.loss = sigmoid(a) + (1 - sigmoid(u));
        v.dl_w = beta * sigmoid_slope(a);
        du = -sigmoid_slope(u);
        break;
    }
    case pair_loss::discopop: {
        const double tau = p.tau;
        const double lm = log_sigmoid(u / tau);                  // log m
        const double one_minus_m = sigmoid(-u / tau);
        const double m_exp = exp(lm - u);                         // m e^{-u}
        const double dm_exp = exp(lm + log_sigmoid(-u / tau) - u) / tau;  // m' e^{-u}
        const double dm = sigmoid_slope(u / tau) / tau;           // m'
        const double sp = softplus(-u);
        v.loss = one_minus_m * sp + m_exp;
        du = dm_exp - dm * sp - one_minus_m * sigmoid(-u) - m_exp;
        break;
    }
    case pair_loss::aot:
    case pair_loss::aot_unpaired:
    case pair_loss::sft:
        return v;  // batch-level, handled by the caller
    }
    v.ds_w = beta * du;
    v.ds_l = -beta * du;
    return v;
}

// The score of a log-ratio and its derivative (exp_cap: the clamp of the alpha-divergence exponents).
POSTTRAIN_HD inline double score_of(score_transform f, double alpha, double exp_cap, double l, double& ds) noexcept {
    using std::exp;
    switch (f) {
    case score_transform::reverse_kl:
        break;
    case score_transform::forward_kl: {
        const double e = exp(-l);
        ds = e;
        return -e;
    }
    case score_transform::js_divergence:
        ds = sigmoid(-l);
        return log_sigmoid(l);
    case score_transform::alpha_divergence: {
        const double t = (alpha - 1) * l;
        const double e = exp(t <= exp_cap ? t : exp_cap);
        ds = t <= exp_cap ? e : 0.0;
        return e / (alpha - 1);
    }
    case score_transform::alpha_divergence_v028: {
        const double t = -alpha * l;
        const double e = exp(t <= exp_cap ? t : exp_cap);
        ds = t <= exp_cap ? e : 0.0;
        return -e / alpha;
    }
    case score_transform::alphapo: {
        const double e = exp(-alpha * l);
        ds = e;
        return (1 - e) / alpha;
    }
    }
    ds = 1;
    return l;
}

}  // namespace detail
}  // namespace posttrain::preference
