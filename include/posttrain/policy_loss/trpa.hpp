#pragma once
// TRPA: trust region preference approximation (Su et al. 2025, arXiv 2504.04524; code
// XueruiSu/Trust-Region-Preference-Approximation f372585, verl/trainer/ppo/core_algos.py
// compute_pairwise_policy_loss and verl/workers/actor/dp_actor.py update_policy).
//
// Each response i has a preference level l_i (advantage/trpa.hpp: 1 best .. 4) and a length-normalised
// log-ratio against the REFERENCE model
//
//   z_i = mean_t log pi(o_t) - mean_t log pi_ref(o_t)        (token means over the mask)
//
// Within each group, every pair of responses with l_i < l_j gives a preference
//
//   h_ij = kappa * beta * (z_i - z_j),   kappa = anisotropy if l_i is the top level (1), else 1
//   L_pref = mean over all pairs of the batch of -log sigma(h_ij)
//
// and when the batch has no pair at all, L_pref = mean_i -log sigma(sign_i z_i), sign_i = +1 for the top
// level, -1 otherwise (the code's fallback). The actor objective adds a trust region to the behaviour
// policy: L = L_pref + c * KL (or c * sqrt(KL + 1/4)), KL = token mean of verl's clamped k3 of (pi, pi_old).
// See docs/algorithms/trpa.md.

#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "disco.hpp"

namespace posttrain::policy_loss {

struct trpa_options {
    double beta = 0.1;             // trpa_beta
    double anisotropy = 2.5;       // kappa on pairs whose better response has the top level
    std::int64_t top_level = 1;    // the best level (the code compares with 1)
    // Trust region (trpa() only): coefficient, sqrt form, and the KL estimator of (pi, pi_old).
    double trust_region_coef = 0.001;  // tr_kl_loss_coef
    bool sqrt_trust_region = false;    // use_sqrt_trkl: c * sqrt(KL + 0.25)
    kl_options trust_region_kl = trpa_kl();

    // The trust-region KL of the code: kl_penalty(log_prob, old_log_prob, 'low_var_kl') at f372585,
    // k3 with its value clamped to [-10, 10] (no log-ratio clamp in that verl version).
    static constexpr kl_options trpa_kl() {
        kl_options k;
        k.estimator = kl_estimator::k3;
        k.value_clamp = 10;
        return k;
    }
    // main_TRPA.sh: beta 0.1, anisotropy 2.5, tr_kl_loss_coef 0.001, no sqrt, k3 ('low_var_kl').
    static constexpr trpa_options official() { return {}; }
};

struct [[nodiscard]] trpa_result {
    double loss = 0;             // the reduced loss the gradient is of (pairwise, or the objective for trpa())
    double preference_loss = 0;  // L_pref (the code's pg_loss)
    double trust_region_kl = 0;  // KL(pi, pi_old) token mean (trpa() only; the code's tr_kl_loss)
    double log_delta = 0;        // mean h / beta over pairs; mean z in the fallback
    double h_high = 0;           // mean z of the better response over pairs; fallback: mean z of top-level rows
    double h_low = 0;            // mean z of the worse response over pairs; fallback: mean z of the others
    index_t pairs = 0;
    bool fallback = false;       // no group held two levels: the per-response fallback loss was used
};

namespace detail {

inline void check_trpa_options(const trpa_options& o, const char* fn) {
    require(std::isfinite(o.beta) && o.beta != 0, {fn, "options"}, "beta must be finite and nonzero, found " + std::to_string(o.beta));
    require(std::isfinite(o.anisotropy), {fn, "options"}, "anisotropy must be finite");
    require(std::isfinite(o.trust_region_coef), {fn, "options"}, "trust_region_coef must be finite");
    check_kl_options(o.trust_region_kl, fn);
}

template <class Levels>
std::vector<std::int64_t> read_levels(const Levels& levels, index_t n, const char* fn) {
    return std::visit(
        [&](auto l) {
            posttrain::advantage::detail::check_extent(l.extent(0), n, {fn, "levels"}, "length (one level per row of 'log_probs')");
            std::vector<std::int64_t> v(static_cast<std::size_t>(l.extent(0)));
            for (index_t i = 0; i < l.extent(0); ++i) v[std::size_t(i)] = static_cast<std::int64_t>(l(i));
            return v;
        },
        posttrain::detail::id_input<1>(levels, {fn, "levels"}));
}

// The pairwise preference loss from the per-row z, levels and token counts: its value and metrics, and
// d L_pref / d z_i in dz. Rows without a selected token take part in nothing.
template <class Policy, class Layout>
trpa_result trpa_pairs(const Policy& policy, const Layout& layout, const std::vector<double>& z,
                       const std::vector<double>& count, const std::vector<std::int64_t>& level, const trpa_options& o,
                       std::vector<double>& dz) {
    const index_t B = index_t(z.size()), G = layout.num_groups();
    struct group_sums {
        double loss = 0, h = 0, high = 0, low = 0, pairs = 0;
    };
    std::vector<group_sums> gs(static_cast<std::size_t>(G));
    dz.assign(std::size_t(B), 0.0);
    posttrain::advantage::detail::for_each_group(policy, layout, B, [&](index_t g, auto rows, index_t n) {
        group_sums s;
        for (index_t a = 0; a < n; ++a) {
            const auto i = std::size_t(rows(a));
            if (count[i] == 0) continue;
            for (index_t b = 0; b < n; ++b) {
                const auto j = std::size_t(rows(b));
                if (count[j] == 0 || !(level[i] < level[j])) continue;
                const double k = (level[i] == o.top_level ? o.anisotropy : 1.0) * o.beta;
                const double h = k * (z[i] - z[j]);
                const double w = sigmoid(-h);  // -d softplus(-h) / dh
                s.loss += numeric::softplus(-h);
                s.h += h, s.high += z[i], s.low += z[j], s.pairs += 1;
                dz[i] -= w * k;
                dz[j] += w * k;
            }
        }
        gs[std::size_t(g)] = s;
    });
    group_sums t;
    for (const auto& s : gs) t.loss += s.loss, t.h += s.h, t.high += s.high, t.low += s.low, t.pairs += s.pairs;
    trpa_result r;
    if (t.pairs > 0) {
        r.pairs = index_t(t.pairs);
        r.preference_loss = t.loss / t.pairs;
        r.log_delta = t.h / t.pairs / o.beta;
        r.h_high = t.high / t.pairs;
        r.h_low = t.low / t.pairs;
        for (auto& d : dz) d /= t.pairs;
        return r;
    }
    // No pair anywhere: each response against 0, pushed up at the top level and down otherwise.
    r.fallback = true;
    double rows = 0, loss = 0, zsum = 0, top = 0, ntop = 0, rest = 0, nrest = 0;
    for (index_t i = 0; i < B; ++i) {
        const auto u = std::size_t(i);
        if (count[u] == 0) continue;
        const double sgn = level[u] == o.top_level ? 1.0 : -1.0;
        rows += 1, zsum += z[u];
        loss += numeric::softplus(-sgn * z[u]);
        dz[u] = -sgn * sigmoid(-sgn * z[u]);
        (sgn > 0 ? top : rest) += z[u];
        (sgn > 0 ? ntop : nrest) += 1;
    }
    if (rows > 0) {
        r.preference_loss = loss / rows;
        r.log_delta = zsum / rows;
        for (auto& d : dz) d /= rows;
    }
    r.h_high = ntop > 0 ? top / ntop : 0.0;
    r.h_low = nrest > 0 ? rest / nrest : 0.0;
    return r;
}

// The common body of trpa_pairwise_loss and trpa: with_trust_region adds c * KL(pi, pi_old).
template <bool TrustRegion, class Policy, class LogProbs, class RefLogProbs, class OldLogProbs, class Mask, class Levels,
          class Groups, class Grad>
trpa_result trpa_entry(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                       const OldLogProbs& old_log_probs, const Mask& mask, const Levels& levels, const Groups& groups,
                       Grad&& grad_log_probs, const trpa_options& options, double grad_scale, const char* fn) {
    check_trpa_options(options, fn);
    // sqrt(KL + 1/4) needs KL >= -1/4: k1 (lp - lp_old) goes negative on any batch whose mean log-ratio
    // is below -1/4, where the sqrt form would give NaN. Refused rather than clamped, so the objective
    // stays the code's sqrt(KL + 0.25) wherever it is defined; abs, k2 and k3 are never negative.
    if constexpr (TrustRegion)
        require(!(options.sqrt_trust_region && options.trust_region_kl.estimator == kl_estimator::k1),
                {fn, "options.sqrt_trust_region"},
                "the sqrt trust region needs a non-negative KL estimator (trust_region_kl.estimator k2, k3 or abs), not k1");
    return std::visit(
        [&](auto lp, auto ref, auto old, auto m) {
            check_same_shape(ref, lp, {fn, "ref_log_probs"}, "log_probs");
            check_same_shape(old, lp, {fn, "old_log_probs"}, "log_probs");
            check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            auto g = optional_output2(grad_log_probs, fn, "grad_log_probs", lp, "log_probs");
            check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            check_no_alias(g, ref, {fn, "grad_log_probs"}, "ref_log_probs");
            check_no_alias(g, old, {fn, "grad_log_probs"}, "old_log_probs");
            check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            const index_t B = lp.extent(0);
            const auto level = read_levels(levels, B, fn);
            const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, g, fn, "grad_log_probs");
            const auto a = token_means(policy, lp, lp, m, token_term::log_prob);
            const auto b = token_means(policy, ref, ref, m, token_term::log_prob);
            check_rows_finite(a, {fn, "log_probs"});
            check_rows_finite(b, {fn, "ref_log_probs"});
            std::vector<double> z(static_cast<std::size_t>(B)), dz;
            for (std::size_t i = 0; i < z.size(); ++i) z[i] = a.mean[i] - b.mean[i];
            trpa_result res = trpa_pairs(policy, layout, z, a.count, level, options, dz);
            res.loss = res.preference_loss;
            double kw = 0;
            if constexpr (TrustRegion) {
                const auto kl = batch_kl_mean(policy, lp, old, m, options.trust_region_kl, false);
                posttrain::detail::require(std::isfinite(kl.value), {fn, "old_log_probs"},
                                           "the trust-region KL is not finite (non-finite selected old log-probs)");
                res.trust_region_kl = kl.value;
                const double c = options.trust_region_coef;
                res.loss += options.sqrt_trust_region ? c * std::sqrt(kl.value + 0.25) : c * kl.value;
                const double dkl = options.sqrt_trust_region ? c * 0.5 / std::sqrt(kl.value + 0.25) : c;
                kw = kl.tokens > 0 ? dkl / kl.tokens : 0.0;
            }
            if constexpr (!is_none<Grad>) {
                for (std::size_t i = 0; i < dz.size(); ++i) dz[i] = a.count[i] > 0 ? dz[i] / a.count[i] : 0.0;
                write_sequence_grad(policy, g, lp, lp, old, m, token_term::log_prob, dz, kw, options.trust_region_kl, false,
                                    grad_scale);
            }
            return res;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(ref_log_probs, {fn, "ref_log_probs"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace detail

// compute_pairwise_policy_loss: the preference loss alone. log_probs, ref_log_probs, mask [B, T];
// levels [B] (integers, lower is better); groups over the B rows; grad_log_probs [B, T] or
// posttrain::none receives grad_scale * d L_pref / d log_probs.
template <class Policy, class LogProbs, class RefLogProbs, class Mask, class Levels, class Groups, class Grad>
trpa_result trpa_pairwise_loss(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                               const Mask& mask, const Levels& levels, const Groups& groups, Grad&& grad_log_probs,
                               const trpa_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::trpa_pairwise_loss: host policy expected");
    return detail::trpa_entry<false>(policy, log_probs, ref_log_probs, log_probs, mask, levels, groups,
                                     std::forward<Grad>(grad_log_probs), options, grad_scale,
                                     "posttrain::policy_loss::trpa_pairwise_loss");
}

// TRPA's actor objective: L_pref + trust_region_coef * KL(pi, pi_old) (or * sqrt(KL + 0.25)), the
// gradient of the sum into grad_log_probs. The code's optional entropy bonus (config.entropy) is not a
// function of the log-probs: subtract entropy_coeff * aggregate(entropy, mask) yourself (entropy.hpp).
template <class Policy, class LogProbs, class RefLogProbs, class OldLogProbs, class Mask, class Levels, class Groups, class Grad>
trpa_result trpa(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                 const OldLogProbs& old_log_probs, const Mask& mask, const Levels& levels, const Groups& groups,
                 Grad&& grad_log_probs, const trpa_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::trpa: host policy expected");
    return detail::trpa_entry<true>(policy, log_probs, ref_log_probs, old_log_probs, mask, levels, groups,
                                    std::forward<Grad>(grad_log_probs), options, grad_scale, "posttrain::policy_loss::trpa");
}

}  // namespace posttrain::policy_loss
