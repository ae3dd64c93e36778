#pragma once
// TRPA's rule-based preference levels and its outcome "advantage" (Su et al. 2025, arXiv 2504.04524;
// code XueruiSu/Trust-Region-Preference-Approximation f372585: verl/utils/reward_score/kk.py,
// deepscaler/rewards/math_reward_pl.py, verl/trainer/ppo/core_algos.py compute_trpa_outcome_advantage).
//
// TRPA does not normalise rewards: its loss (policy_loss/trpa.hpp) compares responses of a prompt by
// preference level, 1 (best) to 4. The levels come from the same rule-based verifier as the reward:
//
//   level 1  format right, answer correct
//   level 2  format right, answer wrong
//   level 3  format right, answer unparsable / incomplete (math: empty answer or no ground truth)
//   level 4  format wrong (no think delimiter, no answer)
//
// See docs/algorithms/trpa.md.

#include <string>
#include <variant>
#include <vector>

#include "../core/groups.hpp"
#include "common.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

// What the rule-based verifier found in a response.
enum class trpa_outcome {
    correct,      // format right, answer correct
    wrong,        // format right, answer wrong
    unparsable,   // format right, answer unparsable, incomplete or empty (or no ground truth)
    format_error, // format wrong
};

// The preference level of an outcome: 1 (best) .. 4; lower is preferred.
constexpr int trpa_preference_level(trpa_outcome o) noexcept {
    switch (o) {
        case trpa_outcome::correct: return 1;
        case trpa_outcome::wrong: return 2;
        case trpa_outcome::unparsable: return 3;
        case trpa_outcome::format_error: return 4;
    }
    return 4;
}

struct [[nodiscard]] trpa_outcome_result {
    index_t groups = 0;
};

// compute_trpa_outcome_advantage: advantages[i, t] = (sum_t token_rewards[i, t]) * mask[i, t], the raw
// sequence score on every token (no group normalisation: TRPA's loss uses the levels, the score is
// logged). Every non-empty group must hold at least two responses (a preference needs a pair; the code
// raises ValueError), else invalid_argument naming 'groups'. Composes sequence_scores and
// broadcast_to_tokens.
template <class Policy, class TokenRewards, class Mask, class Groups, class Advantages>
trpa_outcome_result trpa_outcome_advantages(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask,
                                            const Groups& groups, Advantages&& advantages) {
    static_assert(host_policy<Policy>, "posttrain::advantage::trpa_outcome_advantages: host policy expected");
    constexpr const char* fn = "posttrain::advantage::trpa_outcome_advantages";
    index_t B = 0, T = 0;
    std::visit([&](auto r) { B = r.extent(0), T = r.extent(1); },
               posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}));
    // Shapes checked here, so that a mismatch is reported under this function's name.
    const auto check_shape = [&](auto v, const char* arg) {
        posttrain::detail::require(v.extent(0) == B && v.extent(1) == T, {fn, arg},
                                   "expected shape [" + posttrain::detail::str(B) + ", " + posttrain::detail::str(T) +
                                       "] like token_rewards, found [" + posttrain::detail::str(v.extent(0)) + ", " +
                                       posttrain::detail::str(v.extent(1)) + "]");
    };
    std::visit([&](auto m) { check_shape(m, "mask"); }, posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
    std::visit(
        [&](auto a) {
            check_shape(a, "advantages");
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
        },
        posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
    const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
    for (index_t g = 0; g < layout.num_groups(); ++g)
        posttrain::detail::require(layout.size(g) != 1, {fn, "groups"},
                                   "group " + posttrain::detail::str(g) +
                                       " has a single response: a preference needs at least two per prompt");
    std::vector<double> scores(static_cast<std::size_t>(B));
    sequence_scores(policy, token_rewards, scores);
    broadcast_to_tokens(policy, scores, mask, advantages);
    return {layout.num_groups()};
}

}  // namespace posttrain::advantage
