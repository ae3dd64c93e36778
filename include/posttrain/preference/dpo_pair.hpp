#pragma once
// One pair of the DPO family, written once for the host dpo() (dpo.hpp) and the CUDA kernel
// (dpo.cuh): length averaging, log-ratios and scores, every per-pair loss term with its weight,
// extras and chain to d loss / d S_policy, and the logged rewards. POSTTRAIN_HD, no allocation.
// The batch-coupled AOT terms sort the batch and live in dpo.hpp.

#include <cmath>
#include <vector>

#include "../config.hpp"
#include "dpo_options.hpp"
#include "pair_math.hpp"

namespace posttrain::preference {

// The most loss terms one call combines (TRL has 15 loss types; a combination uses a few).
inline constexpr int max_pair_terms = 8;

namespace detail {

// dpo_options flattened for the kernels (no vector), with what the host resolves once.
struct pair_config {
    loss_term terms[max_pair_terms];
    int nterms = 0;
    double beta = 0.1, eps = 0, gamma = 0, tau = 0.05;
    bco_shift bco = bco_shift::none;
    double bco_delta = 0;
    score_transform f = score_transform::reverse_kl;  // alpha_divergence at alpha = 1 already made reverse_kl
    double alpha = 1, cap = 80;
    bool reference_free = false, has_ref = false, average = false, ipo_len_norm = true, sft_token_mean = true;
    bool smooth_sigmoid = true;
    bool has_weights = false, has_margins = false;
    double factor = 1, grad_scale = 1;
    index_t pairs = 0;
};

// The batch constants of sft (token mean) and BCO's batch-mean shifts.
struct batch_stats {
    double sum_nw = 0;  // sum of the chosen lengths
    double sum_pw = 0;  // sum of the chosen policy log-probs (raw sums: sft's NLL ignores the length average)
    double reward = 0;  // sum over pairs of beta l_w + beta l_l
    double sum_w = 0;   // sum of extras.weights (the token-mean sft term's gradient carries their mean)
    POSTTRAIN_HD void merge(const batch_stats& o) noexcept {
        sum_nw += o.sum_nw;
        sum_pw += o.sum_pw;
        reward += o.reward;
        sum_w += o.sum_w;
    }
};

// One pair's sequence values as reduced (lengths NaN when not given).
struct pair_sums {
    double pw = 0, pl = 0, rw = 0, rl = 0, nw = 0, nl = 0;
};

// The host's inv_len: 1 / max(n, 1) (NaN stays NaN, as std::max(n, 1.0) keeps it).
POSTTRAIN_HD inline double inv_length(double n) noexcept { return 1.0 / (n < 1.0 ? 1.0 : n); }

// Length averaging, log-ratios and scores of one pair.
struct pair_ratios {
    double pw, pl, rw, rl;  // after average_log_prob
    double lw, ll, sw, sl, dsw = 0, dsl = 0;
    double aw, al;          // the averaging factors (1 without average_log_prob)
    bool bad;               // a score overflowed
};

POSTTRAIN_HD inline pair_ratios ratios_of(const pair_config& c, const pair_sums& s) noexcept {
    pair_ratios r{};
    r.pw = s.pw, r.pl = s.pl, r.rw = s.rw, r.rl = s.rl;
    r.aw = c.average ? inv_length(s.nw) : 1.0;
    r.al = c.average ? inv_length(s.nl) : 1.0;
    if (c.average) {
        r.pw *= r.aw;
        r.pl *= r.al;
        if (c.has_ref) {
            r.rw *= r.aw;
            r.rl *= r.al;
        }
    }
    r.lw = c.reference_free ? r.pw : r.pw - r.rw;
    r.ll = c.reference_free ? r.pl : r.pl - r.rl;
    r.sw = score_of(c.f, c.alpha, c.cap, r.lw, r.dsw);
    r.sl = score_of(c.f, c.alpha, c.cap, r.ll, r.dsl);
    r.bad = !(numeric::is_finite(r.sw) && numeric::is_finite(r.sl));
    return r;
}

// Everything one pair contributes.
struct pair_eval {
    double total = 0;                 // sum_k weight_k * term_k (the per-pair loss)
    double terms[max_pair_terms] = {};
    double cw = 0, cl = 0;            // d reduced loss / d S_policy(chosen / rejected), times grad_scale
    double rew_w = 0, rew_l = 0;      // the logged rewards
    double logps_w = 0, logps_l = 0;  // S_policy as reduced (averaged under average_log_prob)
    double reward = 0;                // beta l_w + beta l_l (the BCO batch mean's share)
    bool bad = false;
};

// One pair: the host dpo()'s loops over terms for pair i, in the host's order of operations.
// weight / margin: extras (read only when c.has_weights / c.has_margins); st: the batch constants
// (read only by sft's token mean and BCO's batch-mean shifts).
POSTTRAIN_HD inline pair_eval evaluate_pair(const pair_config& c, const pair_sums& s, double weight, double margin,
                                            const batch_stats& st) noexcept {
    pair_eval e;
    const pair_ratios r = ratios_of(c, s);
    e.bad = r.bad;
    if (c.f == score_transform::alphapo) {
        e.rew_w = c.beta * r.sw;
        e.rew_l = c.beta * r.sl;
    } else {
        e.rew_w = c.beta * (c.has_ref ? r.pw - r.rw : r.pw);
        e.rew_l = c.beta * (c.has_ref ? r.pl - r.rl : r.pl);
    }
    e.logps_w = r.pw;
    e.logps_l = r.pl;
    e.reward = c.beta * r.lw + c.beta * r.ll;
    // dlw / dll: d loss / d l of the pair terms (chained through the length average below); dsft:
    // d loss / d (raw S_w) of the sft terms.
    double dlw = 0, dll = 0, dsft = 0;
    for (int k = 0; k < c.nterms; ++k) {
        const loss_term term = c.terms[k];
        pair_params p{c.beta, c.eps, c.gamma, c.tau, 0.0};
        if (term.loss == pair_loss::bco_pair) {
            const double mean = st.reward / double(2 * c.pairs);
            p.delta = c.bco == bco_shift::none                 ? 0.0
                      : c.bco == bco_shift::value              ? c.bco_delta
                      : c.bco == bco_shift::batch_mean_float32 ? double(float(mean))
                                                               : mean;
        }
        double loss, tw, tl;
        if (term.loss == pair_loss::sft) {
            // sft.hpp's sft_terms_of, one pair at a time: coef = d(reduced NLL)/d S_w (-1 / the batch's
            // tokens, TRL's token mean copied to every pair; -1 / B for SLiC's per-pair -S_w), B times a
            // pair's share since the reduction divides by B again.
            const double d = c.sft_token_mean ? st.sum_nw : double(c.pairs);
            const double coef = d > 0 ? -1.0 / d : 0.0;
            tw = coef * double(c.pairs);
            loss = c.sft_token_mean ? (d > 0 ? -st.sum_pw / d : 0.0) : tw * s.pw;
            tl = 0;
        } else {
            const bool per_len = term.loss == pair_loss::sigmoid_norm || (term.loss == pair_loss::ipo && c.ipo_len_norm);
            const double aw = per_len ? inv_length(s.nw) : 1.0, al = per_len ? inv_length(s.nl) : 1.0;
            if (c.has_margins) p.gamma += margin;
            if ((term.loss == pair_loss::sigmoid || term.loss == pair_loss::sigmoid_norm) && !c.smooth_sigmoid) p.eps = 0;
            const pair_value v = pair_term(term.loss, r.sw * aw, r.sl * al, r.lw, r.ll, p);
            loss = v.loss;
            tw = v.ds_w * aw * r.dsw + v.dl_w;
            tl = v.ds_l * al * r.dsl + v.dl_l;
        }
        if (c.has_weights) {
            loss *= weight;
            // The token-mean sft loss is one batch constant: weighing its copies gives mean(w) * nll,
            // whose gradient on every chosen response carries mean(w) (as dpo() does).
            const double wk = term.loss == pair_loss::sft && c.sft_token_mean ? st.sum_w / double(c.pairs) : weight;
            tw *= wk;
            tl *= wk;
        }
        e.terms[k] = loss;
        e.total += term.weight * loss;
        (term.loss == pair_loss::sft ? dsft : dlw) += term.weight * tw;
        dll += term.weight * tl;
    }
    e.cw = (dlw * r.aw + dsft) * c.factor * c.grad_scale;
    e.cl = dll * r.al * c.factor * c.grad_scale;
    return e;
}

// The configuration of dpo_options over B pairs, for the given terms (at most max_pair_terms; the host
// passes the per-pair terms, leaving out the batch-sorted AOT ones).
inline pair_config make_pair_config(const dpo_options& o, const std::vector<loss_term>& terms, index_t B, bool has_ref) {
    pair_config c;
    c.nterms = int(terms.size());
    for (int k = 0; k < c.nterms; ++k) c.terms[k] = terms[std::size_t(k)];
    c.beta = o.beta;
    c.eps = o.label_smoothing;
    c.gamma = o.gamma;
    c.tau = o.discopop_tau;
    c.bco = o.bco;
    c.bco_delta = o.bco_delta;
    c.f = o.divergence;
    if (c.f == score_transform::alpha_divergence && std::fabs(o.alpha_coef - 1.0) < 1e-6) c.f = score_transform::reverse_kl;
    c.alpha = o.alpha_coef;
    c.cap = o.exp_cap;
    c.reference_free = o.reference_free;
    c.has_ref = has_ref;
    c.average = o.average_log_prob;
    c.ipo_len_norm = o.ipo_length_normalized;
    c.sft_token_mean = o.sft_token_mean;
    c.smooth_sigmoid = o.smooth_sigmoid;
    c.factor = reduction_factor(o.reduce, o.normalizer, B);
    c.grad_scale = o.grad_scale;
    c.pairs = B;
    return c;
}

}  // namespace detail
}  // namespace posttrain::preference
