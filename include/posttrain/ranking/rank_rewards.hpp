#pragma once
// Rank -> reward -> advantage, as ArenaRL maps them.
//
// Within each group, rows are ranked by a score (higher is better: wins, a rating, Swiss points) and
// the rank becomes a reward in [0, 1]; the rewards of a group are then z-scored,
//     A_i = (r_i - mean_g r) / (std_g r + epsilon)      (sample std, epsilon = 1e-6 by default),
// which is GRPO's group normalisation (posttrain::advantage::grpo) applied to rank rewards.
//
// Ties among equal scores are shared in one of two ways, both from ArenaRL's code:
//   tie_rule::min_rank          rank = 1 + #(strictly better); M = the group's largest rank;
//                               r = (M - rank) / (M - 1), and all 0 when everyone ties (M = 1).
//                               (qqr round_robin and anchor: pandas rank(method="min").)
//   tie_rule::average_position  rows sorted best first take positional rewards (N - (k+1)) / (N - 1),
//                               k = 0..N-1; a run of equal scores shares the mean of its positions'.
//                               (qqr swiss.)
// A strict order (a bracket's final standing) uses position_reward(k, N) = 1 - k / (N - 1).
// A group of one row gets reward 0 (ArenaRL's code divides by N - 1 = 0 there). The arithmetic is
// written in the reference's order, so rewards match it bit for bit.

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../advantage/grpo.hpp"
#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain::ranking {

enum class tie_rule { min_rank, average_position };

// The group z-score that turns rewards into advantages.
struct zscore_options {
    double epsilon = 1e-6;                          // added to the std, outside the square root
    posttrain::ddof ddof = posttrain::ddof::sample; // torch.std's default, as ArenaRL
};

struct rank_reward_options {
    tie_rule ties = tie_rule::min_rank;
};

struct rank_advantage_options {
    tie_rule ties = tie_rule::min_rank;
    zscore_options zscore = {};
};

namespace detail {

using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

// Reward of position k (0 = best) in a strict order of n rows.
POSTTRAIN_HD inline double position_reward(index_t k, index_t n) noexcept {
    return n > 1 ? 1.0 - static_cast<double>(k) / static_cast<double>(n - 1) : 0.0;
}

// Where a score stands in its group: how many rows score strictly better, how many score the same
// (itself included), and the group's largest min-rank (1 + #(rows better than the worst score)).
struct rank_counts {
    index_t better = 0;
    index_t equal = 1;
    index_t max_rank = 1;
};

// The reward of a row from its rank counts in a group of n rows. Shared by every path (host sort,
// Thrust), so a reward is the same bits whichever computed the counts.
POSTTRAIN_HD inline double reward_from_counts(tie_rule rule, const rank_counts& c, index_t n) noexcept {
    if (n <= 1) return 0.0;
    if (rule == tie_rule::min_rank) {
        const double m = static_cast<double>(c.max_rank), rank = static_cast<double>(c.better + 1);
        return c.max_rank == 1 ? 0.0 : (m - rank) / (m - 1.0);
    }
    // Python's sum() of the run's positional rewards, left to right, then the mean.
    double sum = 0.0;
    for (index_t k = c.better; k < c.better + c.equal; ++k)
        sum += static_cast<double>(n - (k + 1)) / static_cast<double>(n - 1);
    return sum / static_cast<double>(c.equal);
}

// Rank counts of every row of one group, from its scores score[0..n) (local order). Sorting makes
// it O(n log n); the counts are integers, so any method gives the same result.
inline void rank_counts_of_group(const double* score, index_t n, std::vector<index_t>& order, rank_counts* out) {
    order.resize(static_cast<std::size_t>(n));
    for (index_t j = 0; j < n; ++j) order[std::size_t(j)] = j;
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return score[a] > score[b]; });
    index_t worst_rank = 1;
    for (index_t k = 0; k < n;) {
        index_t e = k;
        while (e < n && score[order[std::size_t(e)]] == score[order[std::size_t(k)]]) ++e;
        for (index_t q = k; q < e; ++q) out[order[std::size_t(q)]] = {k, e - k, 1};
        worst_rank = k + 1;
        k = e;
    }
    for (index_t j = 0; j < n; ++j) out[j].max_rank = worst_rank;
}

// Rewards of one group from its scores (local order), written to reward[0..n).
// A tied run shares one reward: it is computed once per run (from its first member in rank order),
// so a group of n equal scores costs O(n), not O(n^2) under tie_rule::average_position.
inline void rank_rewards_of_group(tie_rule rule, const double* score, index_t n, std::vector<index_t>& order,
                                  std::vector<rank_counts>& counts, double* reward) {
    counts.resize(static_cast<std::size_t>(n));
    rank_counts_of_group(score, n, order, counts.data());
    for (index_t k = 0; k < n;) {
        const rank_counts& c = counts[std::size_t(order[std::size_t(k)])];
        const double r = reward_from_counts(rule, c, n);
        for (index_t q = k; q < k + c.equal; ++q) reward[order[std::size_t(q)]] = r;
        k += c.equal;
    }
}

inline advantage::grpo_options zscore_as_grpo(const zscore_options& z) {
    advantage::grpo_options o;
    o.epsilon = z.epsilon;
    o.ddof = z.ddof;
    o.singleton_groups = advantage::singleton::zero;
    return o;
}

inline void check_zscore_options(const zscore_options& z, const char* fn) {
    require(z.epsilon >= 0, {fn, "options.zscore.epsilon"}, "must be >= 0, found " + std::to_string(z.epsilon));
}

// rewards[N] (double, row order) -> advantages (the caller's view) by the group z-score.
template <class Policy, class Groups, class Advantages>
group_stats_result zscore_into(const Policy& policy, const std::vector<double>& rewards, const Groups& groups,
                               Advantages&& advantages, const zscore_options& z) {
    return advantage::grpo(policy, rewards, groups, std::forward<Advantages>(advantages), zscore_as_grpo(z));
}

// Per-row rank rewards of scores s[N] under a layout, into a double vector (row order). Each block of
// groups reuses one set of buffers.
template <class Policy, class T, class Layout>
std::vector<double> rank_rewards_rows(const Policy& policy, tensor_view<const T, 1> s, const Layout& layout,
                                      tie_rule rule) {
    const index_t n_rows = s.extent(0), groups = layout.num_groups();
    std::vector<double> rewards(static_cast<std::size_t>(n_rows), 0.0);
    const index_t cost = groups > 0 ? n_rows / groups + 1 : 1;
    posttrain::detail::for_blocks(policy, groups, cost, [&](index_t lo, index_t hi) {
        std::vector<double> local, out;
        std::vector<index_t> order;
        std::vector<rank_counts> counts;
        for (index_t g = lo; g < hi; ++g) {
            const auto rows = layout.rows(g);
            const index_t n = layout.size(g);
            local.resize(static_cast<std::size_t>(n));
            out.resize(static_cast<std::size_t>(n));
            for (index_t j = 0; j < n; ++j) local[std::size_t(j)] = static_cast<double>(s(rows(j)));
            rank_rewards_of_group(rule, local.data(), n, order, counts, out.data());
            for (index_t j = 0; j < n; ++j) rewards[std::size_t(rows(j))] = out[std::size_t(j)];
        }
    });
    return rewards;
}

// The argument checks of rank_rewards, shared by every backend: compute(s, layout, r) fills r.
template <class Scores, class Groups, class Rewards, class Compute>
void rank_rewards_entry(const Scores& scores, const Groups& groups, Rewards& rewards, Compute&& compute) {
    constexpr const char* fn = "posttrain::ranking::rank_rewards";
    auto sv = posttrain::detail::floating_input<1>(scores, {fn, "scores"});
    auto rv = posttrain::detail::floating_output<1>(rewards, {fn, "rewards"});
    std::visit(
        [&](auto s, auto r) {
            advantage::detail::check_extent(r.extent(0), s.extent(0), {fn, "rewards"}, "length (one per score)");
            advantage::detail::check_no_alias(r, s, {fn, "rewards"}, "scores");
            advantage::detail::check_finite(s, {fn, "scores"});
            const auto layout = posttrain::detail::make_layout(groups, s.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, r, fn, "rewards");
            compute(s, layout, r);
        },
        sv, rv);
}

// The argument checks of rank_advantages, shared by every backend: rewards_of(s, layout) returns the
// rank rewards (row order), zscore(rewards, advantages_view) writes the advantages.
template <class Scores, class Groups, class Advantages, class RewardsOf, class ZScore>
group_stats_result rank_advantages_entry(const Scores& scores, const Groups& groups, Advantages& advantages,
                                         const rank_advantage_options& options, RewardsOf&& rewards_of, ZScore&& zscore) {
    constexpr const char* fn = "posttrain::ranking::rank_advantages";
    check_zscore_options(options.zscore, fn);
    auto sv = posttrain::detail::floating_input<1>(scores, {fn, "scores"});
    auto av = posttrain::detail::floating_output<1>(advantages, {fn, "advantages"});
    return std::visit(
        [&](auto s, auto a) {
            advantage::detail::check_extent(a.extent(0), s.extent(0), {fn, "advantages"}, "length (one per score)");
            advantage::detail::check_finite(s, {fn, "scores"});
            const auto layout = posttrain::detail::make_layout(groups, s.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            const std::vector<double> r = rewards_of(s, layout);
            return zscore(r, a);
        },
        sv, av);
}

}  // namespace detail

// Rank rewards of scores[N] within each group of the layout (higher score = better rank), written to
// rewards[N]. Scores must be finite.
template <class Policy, class Scores, class Groups, class Rewards>
void rank_rewards(const Policy& policy, const Scores& scores, const Groups& groups, Rewards&& rewards,
                  const rank_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::ranking::rank_rewards: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    detail::rank_rewards_entry(scores, groups, rewards, [&](auto s, const auto& layout, auto r) {
        const std::vector<double> out = detail::rank_rewards_rows(policy, s, layout, options.ties);
        for (index_t i = 0; i < r.extent(0); ++i) r(i) = static_cast<typename decltype(r)::value_type>(out[std::size_t(i)]);
    });
}

// Rank rewards, then the group z-score: ArenaRL's advantages from a score per row.
template <class Policy, class Scores, class Groups, class Advantages>
group_stats_result rank_advantages(const Policy& policy, const Scores& scores, const Groups& groups,
                                   Advantages&& advantages, const rank_advantage_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::ranking::rank_advantages: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    return detail::rank_advantages_entry(
        scores, groups, advantages, options,
        [&](auto s, const auto& layout) { return detail::rank_rewards_rows(policy, s, layout, options.ties); },
        [&](const std::vector<double>& r, auto a) { return detail::zscore_into(policy, r, groups, a, options.zscore); });
}

}  // namespace posttrain::ranking
