#pragma once
// GPG (Group Policy Gradient, Chu et al. 2025) advantages:
//     A_i = alpha * (r_i - mu_g) / f_norm,  alpha = N / max(#{i : r_i != 0}, 1) by default
// alpha compensates for the rows that carry no reward signal.

#include <variant>

#include "grpo.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

struct gpg_options {
    double f_norm = 1.0;
    double alpha = 0.0;  // 0: N / max(count_nonzero(rewards), 1), as verl computes it (its alpha argument is ignored)
    singleton singleton_groups = singleton::zero;
    zero_variance zero_variance_groups = zero_variance::zero;
    nonfinite nonfinite_rewards = nonfinite::raise;
    bool float32_alpha = false;  // verl: N / count_nonzero is a true division of integer tensors, a float32

    // verl compute_gpg_outcome_advantage: singleton mean 0, alpha recomputed from the batch in float32.
    static constexpr gpg_options verl(double f_norm = 1.0) {
        return {f_norm, 0.0, singleton::raw, zero_variance::arithmetic, nonfinite::propagate, true};
    }
};

template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result gpg(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                       const gpg_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::gpg: host policy expected");
    constexpr const char* fn = "posttrain::advantage::gpg";
    detail::require(options.f_norm != 0, {fn, "options.f_norm"}, "must be non-zero");
    return std::visit(
        [&](auto r, auto a) {
            detail::check_outcome_args(r, a, nonfinite::propagate, fn);  // grpo_impl checks finiteness
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            double alpha = options.alpha;
            if (alpha == 0.0) {
                index_t nonzero = 0;
                for (index_t i = 0; i < r.extent(0); ++i) nonzero += r(i) != 0;
                const index_t denom = nonzero > 1 ? nonzero : 1;
                alpha = options.float32_alpha ? double(float(r.extent(0)) / float(denom))
                                              : double(r.extent(0)) / double(denom);
            }
            grpo_options centring = grpo_options::dr_grpo();
            centring.singleton_groups = options.singleton_groups;
            centring.nonfinite_rewards = options.nonfinite_rewards;
            centring.zero_variance_groups = options.zero_variance_groups;
            const group_stats_result res = detail::grpo_impl(policy, r, layout, a, centring, fn);
            using A = typename decltype(a)::value_type;
            const double factor = alpha / options.f_norm;
            detail::for_each_row(policy, a.extent(0), 1, [&](index_t i) { a(i) = static_cast<A>(double(a(i)) * factor); });
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
