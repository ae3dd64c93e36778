#pragma once
// GRPO Pass@k (Chen et al. 2025, "Pass@k training"): only the best row of each group is credited,
// with the gap to the runner-up:  A_best = (r_max - r_2nd) [/ (std_g + eps)], every other row 0.

#include <variant>

#include "common.hpp"

namespace posttrain::advantage {

struct passk_options {
    bool norm_by_std = true;
    double epsilon = 1e-6;
    singleton singleton_groups = singleton::zero;  // verl raises: singleton::error
    nonfinite nonfinite_rewards = nonfinite::raise;

    // verl compute_grpo_passk_outcome_advantage (the norm flag comes from config.norm_adv_by_std_in_grpo).
    static constexpr passk_options verl(bool norm_by_std = true, double eps = 1e-6) {
        return {norm_by_std, eps, singleton::error, nonfinite::propagate};
    }
};

// rewards[N] -> advantages[N]. Ties for the maximum credit the first row (in group order) with 0.
template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result grpo_passk(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                              const passk_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::grpo_passk: host policy expected");
    constexpr const char* fn = "posttrain::advantage::grpo_passk";
    return std::visit(
        [&](auto r, auto a) {
            detail::check_outcome_args(r, a, options.nonfinite_rewards, fn);
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            group_stats_result res;
            res.groups = layout.num_groups();
            using A = typename decltype(a)::value_type;
            for (index_t g = 0; g < res.groups; ++g) {
                const index_t n = layout.size(g);
                res.empty_groups += n == 0;
                res.singleton_groups += n == 1;
                if (n == 1 && options.singleton_groups == singleton::error)
                    posttrain::detail::raise_invalid_argument(fn, "groups",
                                                              "group " + detail::str(g) + " has a single row; pass@k needs two");
            }
            const detail::strided_reader<typename decltype(r)::value_type> x{r.data(), r.stride(0)};
            detail::for_each_group(policy, layout, r.extent(0), [&](index_t, auto rows, index_t n) {
                for (index_t j = 0; j < n; ++j) a(rows(j)) = A(0);
                if (n == 0) return;
                if (n == 1) {
                    double v = 0;
                    if (options.singleton_groups == singleton::raw) v = x(rows(0));
                    if (options.singleton_groups == singleton::nan) v = std::nan("");
                    a(rows(0)) = static_cast<A>(v);
                    return;
                }
                for (index_t j = 0; j < n; ++j)
                    if (x(rows(j)) != x(rows(j))) {  // nonfinite::propagate: a NaN poisons its group
                        for (index_t i = 0; i < n; ++i) a(rows(i)) = static_cast<A>(std::nan(""));
                        return;
                    }
                index_t best = 0;
                for (index_t j = 1; j < n; ++j)
                    if (x(rows(j)) > x(rows(best))) best = j;
                double second = -std::numeric_limits<double>::infinity();
                for (index_t j = 0; j < n; ++j)
                    if (j != best && x(rows(j)) > second) second = x(rows(j));
                double adv = x(rows(best)) - second;
                if (options.norm_by_std) {
                    detail::group_buffer buffer;
                    const auto m = detail::moments_of<false>(buffer.gather(x, rows, n), n);
                    adv /= std::sqrt(m.m2 / double(n - 1)) + options.epsilon;
                }
                a(rows(best)) = static_cast<A>(adv);
            });
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
