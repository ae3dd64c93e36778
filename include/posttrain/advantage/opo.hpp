#pragma once
// OPO (On-Policy RL with Optimal reward baseline, Hao et al. 2025): the baseline is the
// length-weighted mean of the group's rewards,
//     b_g = sum_{j in g} len_j r_j / sum_{j in g} len_j ;  A_i = r_i - b_g

#include <variant>

#include "common.hpp"

namespace posttrain::advantage {

struct opo_options {
    singleton singleton_groups = singleton::zero;
    zero_variance zero_variance_groups = zero_variance::zero;
    nonfinite nonfinite_rewards = nonfinite::raise;

    // verl compute_opo_outcome_advantage: a singleton's baseline is 0 (raw score).
    static constexpr opo_options verl() { return {singleton::raw, zero_variance::arithmetic, nonfinite::propagate}; }
};

// rewards[N], lengths[N] (response lengths, e.g. from sequence_lengths) -> advantages[N].
namespace detail {
// The lengths checks opo's host and CUDA entries share: one length per reward, and the advantages
// apart from the lengths (a group's advantages are written while other groups still read theirs).
template <class R, class L, class A>
void check_opo_lengths(const R& r, const L& len, const A& a, const char* fn) {
    check_extent(len.extent(0), r.extent(0), {fn, "lengths"}, "length (one per reward)");
    check_no_alias(a, len, {fn, "advantages"}, "lengths");
}
}  // namespace detail

template <class Policy, class Rewards, class Lengths, class Groups, class Advantages>
group_stats_result opo(const Policy& policy, const Rewards& rewards, const Lengths& lengths, const Groups& groups,
                       Advantages&& advantages, const opo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::opo: host policy expected");
    constexpr const char* fn = "posttrain::advantage::opo";
    return std::visit(
        [&](auto r, auto len, auto a) {
            detail::check_outcome_args(r, a, options.nonfinite_rewards == nonfinite::ignore ? nonfinite::propagate
                                                                                            : options.nonfinite_rewards, fn);
            detail::check_opo_lengths(r, len, a, fn);
            detail::check_finite(len, {fn, "lengths"});
            for (index_t i = 0; i < len.extent(0); ++i)
                detail::require(len(i) >= 0, {fn, "lengths"}, "lengths must be >= 0, found " + std::to_string(double(len(i))) +
                                                                  " at index " + detail::str(i));
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            group_stats_result res;
            res.groups = layout.num_groups();
            std::vector<unsigned char> kind(static_cast<std::size_t>(res.groups), 0);
            using A = typename decltype(a)::value_type;
            detail::for_each_group(policy, layout, r.extent(0), [&](index_t g, auto rows, index_t n) {
                if (n == 0) {
                    kind[std::size_t(g)] = 1;
                    return;
                }
                double base = 0;
                if (n == 1) {
                    kind[std::size_t(g)] = 2;
                    if (options.singleton_groups == singleton::zero) base = double(r(rows(0)));
                    if (options.singleton_groups == singleton::nan) base = std::nan("");
                    if (options.singleton_groups == singleton::error)
                        posttrain::detail::raise_invalid_argument(fn, "groups", "group " + detail::str(g) + " has a single row");
                } else {
                    bool constant = true;
                    for (index_t j = 1; j < n; ++j) constant &= r(rows(j)) == r(rows(0));
                    if (constant) kind[std::size_t(g)] = 3;
                    const double num = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
                        return double(len(rows(j))) * double(r(rows(j)));
                    });
                    const double den = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return double(len(rows(j))); });
                    if (constant && options.zero_variance_groups == zero_variance::zero) {
                        base = double(r(rows(0)));  // every advantage exactly 0
                    } else if (den > 0) {
                        base = num / den;
                    } else {
                        // Every response is empty: no length to weight by, so the plain mean.
                        base = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return double(r(rows(j))); }) / double(n);
                    }
                }
                for (index_t j = 0; j < n; ++j) a(rows(j)) = static_cast<A>(double(r(rows(j))) - base);
            });
            for (auto k : kind) {
                res.empty_groups += k == 1;
                res.singleton_groups += k == 2;
                res.zero_variance_groups += k == 3;
            }
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_input<1>(lengths, {fn, "lengths"}),
        posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
