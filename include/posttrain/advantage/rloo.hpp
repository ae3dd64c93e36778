#pragma once
// RLOO (REINFORCE leave-one-out, Ahmadian et al. 2024) outcome advantages:
//     A_i = r_i - (1/(n_g-1)) sum_{j in g, j != i} r_j  =  n_g/(n_g-1) * (r_i - mu_g)
// over any group layout. See docs/algorithms/rloo.md.

#include <variant>

#include "grpo.hpp"

namespace posttrain::advantage {

struct rloo_options {
    singleton singleton_groups = singleton::zero;
    zero_variance zero_variance_groups = zero_variance::zero;
    nonfinite nonfinite_rewards = nonfinite::raise;

    // verl compute_rloo_outcome_advantage (loop form): a singleton keeps its raw score.
    static constexpr rloo_options verl() {
        return {singleton::raw, zero_variance::arithmetic, nonfinite::propagate};
    }
    // verl compute_rloo_vectorized_outcome_advantage: a singleton gets 0.
    static constexpr rloo_options verl_vectorized() {
        return {singleton::zero, zero_variance::arithmetic, nonfinite::propagate};
    }
    // OpenRLHF "rloo" (groups of n_samples_per_prompt > 1).
    static constexpr rloo_options openrlhf() { return {singleton::nan, zero_variance::arithmetic, nonfinite::propagate}; }
    // TRL RLOOTrainer: NaN rewards are unscorable; one scorable row gives 0/0 -> NaN -> 0.
    static constexpr rloo_options trl() { return {singleton::zero, zero_variance::arithmetic, nonfinite::ignore}; }
};

namespace detail {
// RLOO is GRPO with a leave-one-out baseline and no scaling; one kernel serves both.
constexpr grpo_options as_grpo(const rloo_options& o) {
    grpo_options g;
    g.std_scale = scale::none;
    g.leave_one_out = true;
    g.singleton_groups = o.singleton_groups;
    g.zero_variance_groups = o.zero_variance_groups;
    g.nonfinite_rewards = o.nonfinite_rewards;
    return g;
}
}  // namespace detail

// RLOO advantages of rewards[N] under a group layout, written to advantages[N].
template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result rloo(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                        const rloo_options& options = {}) {
    static_assert(host_policy<Policy>,
                  "posttrain::advantage::rloo: this overload runs on the host; include <posttrain/advantage/rloo.cuh> for exec::cuda");
    return detail::grpo_entry(policy, rewards, groups, std::forward<Advantages>(advantages), detail::as_grpo(options),
                              "posttrain::advantage::rloo");
}

}  // namespace posttrain::advantage
