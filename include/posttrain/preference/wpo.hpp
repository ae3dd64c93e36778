#pragma once
// WPO (weighted preference optimisation, Zhou et al. 2024, Eq. 2; TRL use_weighting): each pair's loss
// is multiplied by the detached weight w(y_w) * w(y_l), where
//   w(y) = exp( mean over the valid tokens of [ log pi(y_t) - log sum_v pi(v)^2 ] )
// re-weights a response by how likely the current policy is to produce it, relative to the policy's
// own sharpness at each position (sum_v pi(v)^2 from advantage::sum_pi_squared_from_logits).
// Pass the product as dpo()'s extras.weights.

#include <cmath>
#include <variant>
#include <vector>

#include "sequence.hpp"

namespace posttrain::preference {

// weights[b] = exp(sum_t valid (log_probs - log(sum_pi_squared)) / max(n_b, 1)); an empty response has
// weight exp(0) = 1.
template <class Policy, class LogProbs, class SumPiSquared, class Mask, class Weights>
void wpo_weights(const Policy& policy, const LogProbs& log_probs, const SumPiSquared& sum_pi_squared, const Mask& mask,
                 Weights&& weights) {
    static_assert(host_policy<Policy>, "posttrain::preference::wpo_weights: host policy expected");
    constexpr const char* fn = "posttrain::preference::wpo_weights";
    std::visit(
        [&](auto lp, auto sq, auto m, auto w) {
            detail::check_same_shape(lp, m, {fn, "log_probs"}, "mask");
            detail::check_same_shape(sq, m, {fn, "sum_pi_squared"}, "mask");
            const index_t B = lp.extent(0), T = lp.extent(1);
            posttrain::detail::require(w.extent(0) == B, {fn, "weights"}, "must have one entry per row of 'log_probs'");
            using W = typename decltype(w)::value_type;
            std::vector<double> aligned(std::size_t(B * T));
            for (index_t i = 0; i < B; ++i)
                for (index_t t = 0; t < T; ++t) {
                    const bool ok = detail::is_valid(m(i, t));
                    const double s = double(sq(i, t));
                    posttrain::detail::require(!ok || (s > 0 && s <= 1 + 1e-12), {fn, "sum_pi_squared"},
                                               "must be in (0, 1] at valid positions");
                    aligned[std::size_t(i * T + t)] = ok ? double(lp(i, t)) - std::log(s) : 0.0;
                }
            // The aligned log-probs go through the same masked reduction as every sequence loss.
            const auto v = detail::reduce(policy, sequence_input::tokens(tensor_view<const double, 2>(aligned.data(), B, T), m), B,
                                          {fn, "log_probs"});
            for (index_t i = 0; i < B; ++i)
                w(i) = static_cast<W>(std::exp(v.sum[std::size_t(i)] / std::max(v.length[std::size_t(i)], 1.0)));
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(sum_pi_squared, {fn, "sum_pi_squared"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<1>(weights, {fn, "weights"}));
}

}  // namespace posttrain::preference
