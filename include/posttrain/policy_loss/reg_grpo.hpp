#pragma once
// Reg-GRPO (DeepVideo-R1, Park et al. 2025, arXiv 2506.07464): GRPO recast as a regression of the
// advantage, with no ratio clipping and no min. RECONSTRUCTION: the official code (mlvlab/DeepVideoR1)
// could not be read; posttrain follows group_rl.md §3.5, derived from the closed form of KL-regularised
// GRPO, pi* ∝ pi_old exp(A / beta), under which beta * log(pi / pi_old) predicts the advantage up to a
// per-prompt constant:
//
//   z_i   = mean_t log pi(o_t) - mean_t log pi_old(o_t)              (length-normalised log-ratio)
//   pred_i = (z_i - mean_g z) / (std_g z + eps)                         prediction::group_normalized (default)
//          = beta * (z_i - mean_g z)                                    prediction::centered
//          = beta * z_i                                                 prediction::raw
//   L     = mean_i (pred_i - A_i)^2                                      over the rows that take part
//
// A_i is any sequence-level advantage (advantage::grpo, rloo, ...). See docs/algorithms/reg_grpo.md
// for what is uncertain (ratio vs log-ratio, the normalisation inside the regression).

#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "disco.hpp"

namespace posttrain::policy_loss {

enum class reg_grpo_prediction {
    group_normalized,  // (z - mean_g z) / (std_g z + epsilon): matches a GRPO-normalised advantage's scale
    centered,          // beta * (z - mean_g z): the closed form with the per-prompt constant removed
    raw,               // beta * z
};

// A group whose log-ratios are all equal (std 0: on-policy, pi == pi_old, every z is 0) has no spread to
// normalise by; the group-normalised prediction needs a rule for it (DESIGN §3: explicit, not arithmetic).
enum class reg_grpo_zero_variance {
    centered,    // the group falls back to the centred prediction beta * (z - mean_g z): value 0, gradient
                 // beta * (e_j - mean e), with no gradient through the normalisation (posttrain's default)
    arithmetic,  // u / (0 + epsilon) as written: value 0, gradient (e_j - mean e) / epsilon (needs epsilon > 0)
};

struct reg_grpo_options {
    reg_grpo_prediction prediction = reg_grpo_prediction::group_normalized;
    reg_grpo_zero_variance zero_variance = reg_grpo_zero_variance::centered;  // group_normalized only
    double beta = 1.0;                              // scale of the centered / raw predictions
    double epsilon = 1e-6;                          // added to the std (group_normalized), as GRPO does
    posttrain::ddof ddof = posttrain::ddof::sample; // the std's convention, as GRPO's
};

struct [[nodiscard]] reg_grpo_result {
    double loss = 0;
    index_t rows = 0;  // rows in the mean: a selected token, and (unless raw) a group of >= 2 such rows
};

// log_probs, old_log_probs, mask [B, T]; advantages [B] (one per response); groups over the B rows;
// grad_log_probs [B, T] or posttrain::none receives grad_scale * d loss / d log_probs. Rows without a
// selected token take no part; with a group prediction, neither do groups with fewer than two rows.
template <class Policy, class LogProbs, class OldLogProbs, class Mask, class Advantages, class Groups, class Grad>
reg_grpo_result reg_grpo(const Policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs, const Mask& mask,
                         const Advantages& advantages, const Groups& groups, Grad&& grad_log_probs,
                         const reg_grpo_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::reg_grpo: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::reg_grpo";
    const int pk = static_cast<int>(options.prediction);
    posttrain::detail::require(pk >= 0 && pk <= 2, {fn, "options"}, "unknown reg_grpo_prediction " + posttrain::detail::str(pk));
    const int zk = static_cast<int>(options.zero_variance);
    posttrain::detail::require(zk >= 0 && zk <= 1, {fn, "options.zero_variance"},
                               "unknown reg_grpo_zero_variance " + posttrain::detail::str(zk));
    posttrain::detail::require(options.epsilon >= 0 && std::isfinite(options.epsilon) && std::isfinite(options.beta),
                               {fn, "options"}, "epsilon must be finite and >= 0 and beta finite");
    // Without the fallback a zero-variance group divides 0 by epsilon: 0 / 0 = NaN when epsilon is 0.
    posttrain::detail::require(options.prediction != reg_grpo_prediction::group_normalized ||
                                   options.zero_variance != reg_grpo_zero_variance::arithmetic || options.epsilon > 0,
                               {fn, "options.epsilon"}, "must be > 0 with group_normalized and zero_variance::arithmetic");
    return std::visit(
        [&](auto lp, auto old, auto m) {
            using namespace detail;
            check_same_shape(old, lp, {fn, "old_log_probs"}, "log_probs");
            check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            auto g = optional_output2(grad_log_probs, fn, "grad_log_probs", lp, "log_probs");
            check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            check_no_alias(g, old, {fn, "grad_log_probs"}, "old_log_probs");
            check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            const index_t B = lp.extent(0);
            const std::vector<double> A = read_rewards(advantages, B, fn, "advantages");
            const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, g, fn, "grad_log_probs");
            const auto a = token_means(policy, lp, lp, m, token_term::log_prob);
            const auto b = token_means(policy, old, old, m, token_term::log_prob);
            check_rows_finite(a, {fn, "log_probs"});
            check_rows_finite(b, {fn, "old_log_probs"});

            // Per group: predictions, the squared errors' sum, and d sum / d z_i (into dz).
            const index_t G = layout.num_groups();
            std::vector<double> dz(static_cast<std::size_t>(B), 0.0), sq(static_cast<std::size_t>(G), 0.0);
            std::vector<index_t> used(static_cast<std::size_t>(G), 0);
            const auto pred = options.prediction;
            const double beta = options.beta, ddof = options.ddof == posttrain::ddof::sample ? 1.0 : 0.0;
            posttrain::advantage::detail::for_each_group(policy, layout, B, [&](index_t q, auto rows, index_t n) {
                std::vector<std::size_t> idx;
                std::vector<double> z;
                for (index_t j = 0; j < n; ++j) {
                    const auto i = std::size_t(rows(j));
                    if (a.count[i] == 0) continue;
                    idx.push_back(i);
                    z.push_back(a.mean[i] - b.mean[i]);
                }
                const index_t k = index_t(z.size());
                if (k == 0 || (pred != reg_grpo_prediction::raw && k < 2)) return;
                const auto mo = posttrain::advantage::detail::moments_of<false>(z.data(), k);
                const double sigma = std::sqrt(mo.m2 / (double(k) - ddof));
                const double D = sigma + options.epsilon;
                // The zero-variance rule: this group is predicted by the centred form (see the enum).
                const auto gp = pred == reg_grpo_prediction::group_normalized && sigma == 0 &&
                                        options.zero_variance == reg_grpo_zero_variance::centered
                                    ? reg_grpo_prediction::centered
                                    : pred;
                std::vector<double> e(static_cast<std::size_t>(k));  // d (sum of squares) / d pred
                double s = 0, esum = 0, eu = 0;
                for (index_t j = 0; j < k; ++j) {
                    const double u = z[std::size_t(j)] - mo.mean;
                    const double p = gp == reg_grpo_prediction::group_normalized ? u / D
                                     : gp == reg_grpo_prediction::centered       ? beta * u
                                                                                    : beta * z[std::size_t(j)];
                    const double err = p - A[idx[std::size_t(j)]];
                    s += err * err;
                    e[std::size_t(j)] = 2 * err;
                    esum += 2 * err;
                    eu += 2 * err * u;
                }
                for (index_t j = 0; j < k; ++j) {
                    const double ej = e[std::size_t(j)], u = z[std::size_t(j)] - mo.mean;
                    double d = 0;
                    if (gp == reg_grpo_prediction::raw) d = beta * ej;
                    else if (gp == reg_grpo_prediction::centered) d = beta * (ej - esum / double(k));
                    else {
                        d = (ej - esum / double(k)) / D;
                        // Through the std: d sigma / d z_j = u_j / ((k - ddof) sigma); every u is 0 when sigma is.
                        if (sigma > 0) d -= eu * u / ((double(k) - ddof) * sigma * D * D);
                    }
                    dz[idx[std::size_t(j)]] = d;
                }
                sq[std::size_t(q)] = s;
                used[std::size_t(q)] = k;
            });
            reg_grpo_result res;
            double total = 0;
            for (index_t q = 0; q < G; ++q) total += sq[std::size_t(q)], res.rows += used[std::size_t(q)];
            const double N = double(res.rows);
            res.loss = res.rows > 0 ? total / N : 0.0;
            if constexpr (!is_none<Grad>) {
                for (std::size_t i = 0; i < dz.size(); ++i) dz[i] = a.count[i] > 0 && N > 0 ? dz[i] / (N * a.count[i]) : 0.0;
                write_sequence_grad(policy, g, lp, lp, lp, m, token_term::log_prob, dz, 0.0, kl_options{}, false, grad_scale);
            }
            return res;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
