#pragma once
// OSPO: one-step policy optimisation for multi-agent dispatch (ride-sharing order dispatch, arXiv
// abstract only; group_rl.md §3.16, low confidence). No critic and no multi-step return: the agents
// (or orders) that act at the same decision step under the same policy form a group, and each one's
// advantage is its ONE-STEP reward against the group's mean,
//
//   A_i = r_i - mean_g r                   (OSPO)
//   A_i = (r_i - mean_g r) / (std_g r + eps)  (the GRPO-style variant)
//
// then the usual PPO-clip token loss (policy_loss::compute). That is advantage::grpo over the
// decision-step groups: this header names the composition and its options; it adds no arithmetic.
// Group the rows with grouping::from_ids(exec, step_ids) (a hash of (episode, time step) when several
// episodes share a batch). See docs/algorithms/ospo.md.

#include "grpo.hpp"

namespace posttrain::advantage {

struct ospo_options {
    bool normalize_by_std = false;  // false: OSPO's mean baseline; true: the GRPO-style variant
    double epsilon = 1e-6;          // added to the std (GRPO-style variant)
    singleton singleton_groups = singleton::zero;  // an agent alone at its step has no baseline
    nonfinite nonfinite_rewards = nonfinite::raise;

    // The GRPO options this is.
    constexpr grpo_options grpo() const {
        grpo_options o;
        o.std_scale = normalize_by_std ? scale::group : scale::none;
        o.epsilon = epsilon;
        o.singleton_groups = singleton_groups;
        o.nonfinite_rewards = nonfinite_rewards;
        return o;
    }
    static constexpr ospo_options grpo_style(double eps = 1e-6) {
        ospo_options o;
        o.normalize_by_std = true;
        o.epsilon = eps;
        return o;
    }
};

// One-step rewards[N] of the agents, their decision-step groups, advantages[N].
template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result ospo(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                        const ospo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::ospo: host policy expected");
    return detail::grpo_entry(policy, rewards, groups, std::forward<Advantages>(advantages), options.grpo(),
                              "posttrain::advantage::ospo");
}

}  // namespace posttrain::advantage
