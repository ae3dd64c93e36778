#pragma once
// Rating fits and rank transforms over many groups through Thrust (exec::thrust): the shape a GPU
// runs, executed on the CPU by thrust::omp::par. Argument checks and exceptions are those of the host
// overloads (the data is host memory); the per-group math is the POSTTRAIN_HD code the host runs, so
// every rating, reward and rank is the same bits as exec::seq.
//
//     records  stable_sort_by_key(group) -> per-group record ranges (lower_bound of each group id)
//     fits     for_each over groups: win_counts / bradley_terry / elo kernels of ranking/ratings.hpp
//     ranks    for_each over rows: count the rows of its group scoring better / the same / better than
//              the group's worst -> detail::rank_counts -> detail::reward_from_counts
//     z-score  advantage::grpo(exec::thrust(...)) with detail::zscore_as_grpo (thrust/outcome.hpp)

#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <thrust/binary_search.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>

#include "../ranking/judge.hpp"
#include "../ranking/rank_rewards.hpp"
#include "../ranking/ratings.hpp"
#include "exec.hpp"
#include "outcome.hpp"

namespace posttrain::ranking::detail {

// The Thrust backend of the ratings drivers (ratings.hpp's host_runner has the same members).
template <class TP>
struct thrust_runner {
    exec::thrust_policy<TP> policy;

    template <class F>
    void each(index_t count, index_t /*cost*/, const F& f) const {
        if (count > 0)
            ::thrust::for_each(policy.base, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(count), f);
    }

    // order: record indices sorted by group, stable (the caller's order within a group); offsets: G + 1.
    void bucket(const std::vector<index_t>& group_of_record, index_t groups, std::vector<index_t>& order,
                std::vector<index_t>& offsets) const {
        std::vector<index_t> keys(group_of_record);
        order.resize(keys.size());
        ::thrust::sequence(policy.base, order.begin(), order.end(), index_t{0});
        ::thrust::stable_sort_by_key(policy.base, keys.begin(), keys.end(), order.begin());
        offsets.resize(static_cast<std::size_t>(groups) + 1);
        ::thrust::lower_bound(policy.base, keys.begin(), keys.end(), ::thrust::counting_iterator<index_t>(0),
                              ::thrust::counting_iterator<index_t>(groups + 1), offsets.begin());
    }

    template <class Groups, class Advantages>
    group_stats_result zscore(const std::vector<double>& rewards, const Groups& groups, Advantages&& advantages,
                              const zscore_options& z) const {
        return advantage::grpo(policy, rewards, groups, std::forward<Advantages>(advantages), zscore_as_grpo(z));
    }
};

// The rank reward of position j (group order) from the rows of its group: O(group size) per row.
struct rank_reward_at {
    const double* score;  // group order
    const index_t* row_offsets;
    const index_t* seg;   // group of each position
    tie_rule rule;
    double* reward;       // group order
    POSTTRAIN_HD void operator()(index_t j) const {
        const index_t g = seg[j], lo = row_offsets[g], hi = row_offsets[g + 1];
        const double v = score[j];
        double worst = v;
        rank_counts c;
        c.equal = 0;
        for (index_t k = lo; k < hi; ++k) {
            c.better += score[k] > v;
            c.equal += score[k] == v;
            worst = score[k] < worst ? score[k] : worst;
        }
        c.max_rank = 1;
        for (index_t k = lo; k < hi; ++k) c.max_rank += score[k] > worst;
        reward[j] = reward_from_counts(rule, c, hi - lo);
    }
};

// Rank rewards of s[N] written to y[N] (row order, the caller's type), through Thrust.
template <class TP, class T, class Layout, class Out>
void thrust_rank_rewards_into(const thrust_runner<TP>& run, tensor_view<const T, 1> s, const Layout& layout, tie_rule rule,
                              tensor_view<Out, 1> y) {
    const index_t n = s.extent(0);
    const flat_layout f = flatten(layout, n);
    const auto nn = static_cast<std::size_t>(n);
    std::vector<double> score(nn), reward(nn);
    std::vector<index_t> seg(nn);
    for (index_t j = 0; j < n; ++j) score[std::size_t(j)] = static_cast<double>(s(f.rows[std::size_t(j)]));
    ::thrust::upper_bound(run.policy.base, f.row_offsets.begin() + 1, f.row_offsets.end(),
                          ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n), seg.begin());
    run.each(n, 1, rank_reward_at{score.data(), f.row_offsets.data(), seg.data(), rule, reward.data()});
    write_out(run, reward, f, y);
}

}  // namespace posttrain::ranking::detail

namespace posttrain::ranking {

// win_counts(exec::thrust(thrust::omp::par), records, groups, wins): as the host overload.
template <class TP, class Records, class Groups, class Wins>
void win_counts(const exec::thrust_policy<TP>& policy, const Records& records, const Groups& groups, Wins&& wins) {
    posttrain::detail::check_host_thrust_policy<TP>();
    detail::win_counts_run(detail::thrust_runner<TP>{policy}, records, groups, std::forward<Wins>(wins),
                           "posttrain::ranking::win_counts");
}

// bradley_terry(exec::thrust(...), records, groups, log_strengths, options): as the host overload.
template <class TP, class Records, class Groups, class LogStrengths>
rating_result bradley_terry(const exec::thrust_policy<TP>& policy, const Records& records, const Groups& groups,
                            LogStrengths&& log_strengths, const bradley_terry_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    return detail::bradley_terry_run(detail::thrust_runner<TP>{policy}, records, groups,
                                     std::forward<LogStrengths>(log_strengths), options, "posttrain::ranking::bradley_terry");
}

// elo(exec::thrust(...), records, groups, ratings, options): as the host overload.
template <class TP, class Records, class Groups, class Ratings>
void elo(const exec::thrust_policy<TP>& policy, const Records& records, const Groups& groups, Ratings&& ratings,
         const elo_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    detail::elo_run(detail::thrust_runner<TP>{policy}, records, groups, std::forward<Ratings>(ratings), options,
                    "posttrain::ranking::elo");
}

// strength_advantages(exec::thrust(...), log_strengths, groups, advantages, options): as the host overload.
template <class TP, class LogStrengths, class Groups, class Advantages>
group_stats_result strength_advantages(const exec::thrust_policy<TP>& policy, const LogStrengths& log_strengths,
                                       const Groups& groups, Advantages&& advantages,
                                       const strength_advantage_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    return detail::strength_advantages_run(detail::thrust_runner<TP>{policy}, log_strengths, groups,
                                           std::forward<Advantages>(advantages), options,
                                           "posttrain::ranking::strength_advantages");
}

// rank_rewards(exec::thrust(...), scores, groups, rewards, options): as the host overload.
template <class TP, class Scores, class Groups, class Rewards>
void rank_rewards(const exec::thrust_policy<TP>& policy, const Scores& scores, const Groups& groups, Rewards&& rewards,
                  const rank_reward_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    detail::rank_rewards_entry(scores, groups, rewards, [&](auto s, const auto& layout, auto r) {
        detail::thrust_rank_rewards_into(detail::thrust_runner<TP>{policy}, s, layout, options.ties, r);
    });
}

// rank_advantages(exec::thrust(...), scores, groups, advantages, options): as the host overload.
template <class TP, class Scores, class Groups, class Advantages>
group_stats_result rank_advantages(const exec::thrust_policy<TP>& policy, const Scores& scores, const Groups& groups,
                                   Advantages&& advantages, const rank_advantage_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    const detail::thrust_runner<TP> run{policy};
    return detail::rank_advantages_entry(
        scores, groups, advantages, options,
        [&](auto s, const auto& layout) {
            std::vector<double> r(static_cast<std::size_t>(s.extent(0)));
            detail::thrust_rank_rewards_into(run, s, layout, options.ties, tensor_view<double, 1>(r.data(), s.extent(0)));
            return r;
        },
        [&](const std::vector<double>& r, auto a) { return run.zscore(r, groups, a, options.zscore); });
}

}  // namespace posttrain::ranking
