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

namespace detail {

// The centring GPG scales: Dr. GRPO (no std) with the options' group conventions.
inline grpo_options gpg_centring(const gpg_options& o) {
    grpo_options c = grpo_options::dr_grpo();
    c.singleton_groups = o.singleton_groups;
    c.nonfinite_rewards = o.nonfinite_rewards;
    c.zero_variance_groups = o.zero_variance_groups;
    return c;
}

// alpha / f_norm, with alpha = N / max(nonzero, 1) when the options leave it to the batch (in
// float32 as verl's integer-tensor division, or double). One function for the host and the device.
POSTTRAIN_HD inline double gpg_gain(double alpha, double f_norm, bool float32_alpha, index_t rows, index_t nonzero) noexcept {
    if (alpha == 0.0) {
        const index_t denom = nonzero > 1 ? nonzero : 1;
        alpha = float32_alpha ? static_cast<double>(f32_div(static_cast<float>(rows), static_cast<float>(denom)))
                              : static_cast<double>(rows) / static_cast<double>(denom);
    }
    return alpha / f_norm;
}

inline void check_gpg_options(const gpg_options& o, const char* fn) {
    require(o.f_norm != 0, {fn, "options.f_norm"}, "must be non-zero");
}

}  // namespace detail

template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result gpg(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                       const gpg_options& options = {}) {
    static_assert(host_policy<Policy>,
                  "posttrain::advantage::gpg: this overload runs on the host; include <posttrain/advantage/gpg.cuh> for exec::cuda");
    constexpr const char* fn = "posttrain::advantage::gpg";
    detail::check_gpg_options(options, fn);
    return std::visit(
        [&](auto r, auto a) {
            detail::check_outcome_args(r, a, nonfinite::propagate, fn);  // grpo_impl checks finiteness
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            index_t nonzero = 0;
            if (options.alpha == 0.0)
                for (index_t i = 0; i < r.extent(0); ++i) nonzero += r(i) != 0;  // a NaN counts, as in torch
            const group_stats_result res = detail::grpo_impl(policy, r, layout, a, detail::gpg_centring(options), fn);
            using A = typename decltype(a)::value_type;
            const double factor = detail::gpg_gain(options.alpha, options.f_norm, options.float32_alpha, r.extent(0), nonzero);
            detail::for_each_row(policy, a.extent(0), 1, [&](index_t i) { a(i) = static_cast<A>(double(a(i)) * factor); });
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
