#pragma once
// The unlikeliness reward (He et al. 2025, "Rewarding the Unlikely"): GRPO sharpens the policy
// toward the samples it already finds likely (rank bias), so correct samples are rewarded less the
// more likely the policy found them:
//     l_i   = mean_t log pi_old(o_i,t)               (or the sum; the official code takes the mean)
//     rank_i = position of l_i in ascending order within the group (0 = least likely)
//     r~_i  = r_i * (1 - beta * rank_i / n_g)
// The shaped rewards r~ then go through any group estimator (the paper: GRPO, see grpo.hpp). Only
// rewarded samples change (r = 0 stays 0); the most likely correct one keeps 1 - beta (n-1)/n.
// See docs/algorithms/unlikeliness.md.

#include <algorithm>
#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "common.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

// How a sequence's log-likelihood is summarised for the ranking.
enum class sequence_likelihood {
    mean,  // per-token mean over the mask (official: length-normalised)
    sum,   // total log-prob of the response
};

struct unlikeliness_options {
    double beta = 0.25;  // rank penalty (paper and examples/lean/grpo.sh: 0.25)
    sequence_likelihood likelihood = sequence_likelihood::mean;
    // The official code computes rank / n_g as an int64 / int tensor division (float32), so the
    // multiplier 1 - beta * rank / n_g is rounded to float32 before it scales the float64 reward.
    bool float32_multiplier = false;

    // AndreHe02/rewarding-unlikely-release, RayLeanTrainer._compute_advantages (ca1cff0), beta from
    // examples/lean/grpo.sh. Pair with grpo_options::verl() for the advantage.
    static constexpr unlikeliness_options official(double beta = 0.25) {
        unlikeliness_options o;
        o.beta = beta;
        o.float32_multiplier = true;
        return o;
    }
};

namespace detail {
[[noreturn]] inline void raise_nonfinite_row(const char* fn, const char* arg, index_t row) {
    posttrain::detail::raise_invalid_argument(fn, arg, "non-finite log-prob on a valid token of row " + str(row));
}
}  // namespace detail

struct [[nodiscard]] unlikeliness_result {
    index_t groups = 0;
    index_t empty_responses = 0;  // rows with no valid token: their likelihood is NaN and they rank as most likely
};

// shaped[i] = rewards[i] * (1 - beta * rank_i / n_g), rank_i the ascending rank of row i's sequence
// log-likelihood (from old_log_probs [N, T] under mask [N, T]) within its group. Ties keep row order
// (a stable sort); a row with no valid token has likelihood NaN (0/0, as the official masked_mean)
// and ranks above every finite one, as torch.argsort puts NaN last. In place (shaped aliasing
// rewards) is allowed: each group reads its rewards before writing.
template <class Policy, class Rewards, class LogProbs, class Mask, class Groups, class Shaped>
unlikeliness_result unlikeliness_rewards(const Policy& policy, const Rewards& rewards, const LogProbs& old_log_probs,
                                         const Mask& mask, const Groups& groups, Shaped&& shaped,
                                         const unlikeliness_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::unlikeliness_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::unlikeliness_rewards";
    detail::require(numeric::is_finite(options.beta) && options.beta >= 0, {fn, "options.beta"},
                    "must be finite and >= 0, found " + std::to_string(options.beta));
    return std::visit(
        [&](auto r, auto lp, auto m, auto out) {
            const index_t N = r.extent(0), T = lp.extent(1);
            detail::check_extent(lp.extent(0), N, {fn, "old_log_probs"}, "rows (one per reward)");
            detail::check_same_shape(m, lp, {fn, "mask"}, "old_log_probs");
            detail::check_extent(out.extent(0), N, {fn, "shaped"}, "length (one per reward)");
            detail::check_no_alias(out, lp, {fn, "shaped"}, "old_log_probs");  // shaped may alias rewards only
            detail::check_same_or_disjoint(out, r, {fn, "shaped"}, "rewards");
            detail::check_finite(r, {fn, "rewards"});
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, out, fn, "shaped");
            // Sequence likelihoods; masked positions are selected out (they may hold garbage).
            std::vector<double> ll(static_cast<std::size_t>(N));
            std::vector<unsigned char> empty(static_cast<std::size_t>(N));
            detail::for_each_row(policy, N, T, [&](index_t i) {
                // The mask selects (nonzero = valid), as in every other function: its values are not weights.
                double s = 0, n = 0;
                for (index_t t = 0; t < T; ++t) {
                    if (detail::mask_weight(m(i, t)) == 0) continue;
                    s += double(lp(i, t));
                    n += 1;
                }
                empty[std::size_t(i)] = n == 0;
                ll[std::size_t(i)] = options.likelihood == sequence_likelihood::sum ? (n == 0 ? std::nan("") : s)
                                                                                   : (n == 0 ? std::nan("") : s / n);
            });
            for (index_t i = 0; i < N; ++i)
                if (!empty[std::size_t(i)] && !numeric::is_finite(ll[std::size_t(i)]))
                    detail::raise_nonfinite_row(fn, "old_log_probs", i);
            using O = typename decltype(out)::value_type;
            detail::for_each_group(policy, layout, N, [&](index_t, auto rows, index_t n) {
                std::vector<index_t> order(static_cast<std::size_t>(n));
                for (index_t j = 0; j < n; ++j) order[std::size_t(j)] = j;
                auto key = [&](index_t j) { return ll[std::size_t(rows(j))]; };
                // Ascending, NaN last, ties in row order.
                std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
                    const double x = key(a), y = key(b);
                    if (x != x) return false;
                    if (y != y) return true;
                    return x < y;
                });
                std::vector<double> value(static_cast<std::size_t>(n));
                for (index_t j = 0; j < n; ++j) value[std::size_t(j)] = double(r(rows(j)));
                for (index_t k = 0; k < n; ++k) {
                    const index_t j = order[std::size_t(k)];
                    double mult = 1.0 - options.beta * (double(k) / double(n));
                    if (options.float32_multiplier)
                        mult = double(1.0f - posttrain::detail::rounded(static_cast<float>(double(k) / double(n)) *
                                                                              static_cast<float>(options.beta)));
                    out(rows(j)) = static_cast<O>(value[std::size_t(j)] * mult);
                }
            });
            unlikeliness_result res;
            res.groups = layout.num_groups();
            for (unsigned char e : empty) res.empty_responses += e;
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<1>(shaped, {fn, "shaped"}));
}

}  // namespace posttrain::advantage
