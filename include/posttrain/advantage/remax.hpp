#pragma once
// ReMax (Li et al. 2023): the reward of the greedy decode is the baseline.
//     returns[i,t] = sum_{t' >= t} R[i,t'] m[i,t'] ;  advantages[i,t] = returns[i,t] - b_i * m[i,t]

#include <variant>

#include "returns.hpp"

namespace posttrain::advantage {

namespace detail {
// The shapes and overlaps remax's host and CUDA entries both check (the advantages apart from every
// input: both read the mask and baselines after writing advantages).
template <class R, class B, class M, class A>
void check_remax_views(const R& r, const B& b, const M& m, const A& a, const char* fn) {
    check_same_shape(m, r, {fn, "mask"}, "token_rewards");
    check_same_shape(a, r, {fn, "advantages"}, "token_rewards");
    check_extent(b.extent(0), r.extent(0), {fn, "baselines"}, "length (one per row)");
    check_no_alias(a, r, {fn, "advantages"}, "token_rewards");
    check_no_alias(a, b, {fn, "advantages"}, "baselines");
    check_no_alias(a, m, {fn, "advantages"}, "mask");
}

// The same for remax's optional returns output.
template <class Ret, class R, class B, class M, class A>
void check_remax_returns(const Ret& ret, const R& r, const B& b, const M& m, const A& a, const char* fn) {
    check_returns_output(ret, r, m, a, fn);
    check_no_alias(ret, b, {fn, "returns"}, "baselines");
}
}  // namespace detail

// advantages and returns are [N,T]; baselines[N] are the greedy-decode rewards.
template <class Policy, class TokenRewards, class Baselines, class Mask, class Advantages, class Returns>
void remax(const Policy& policy, const TokenRewards& token_rewards, const Baselines& baselines, const Mask& mask,
           Advantages&& advantages, Returns&& returns) {
    static_assert(host_policy<Policy>, "posttrain::advantage::remax: host policy expected");
    constexpr const char* fn = "posttrain::advantage::remax";
    std::visit(
        [&](auto r, auto b, auto m, auto a) {
            detail::check_remax_views(r, b, m, a, fn);
            using A = typename decltype(a)::value_type;
            detail::returns_into(policy, r, m, a, returns, {1.0, masked_tokens::zero_rewards}, fn,
                                 [&](auto ret) { detail::check_remax_returns(ret, r, b, m, a, fn); });
            detail::for_each_row(policy, r.extent(0), r.extent(1), [&](index_t i) {
                const double base = b(i);
                for (index_t t = 0; t < r.extent(1); ++t)
                    a(i, t) = static_cast<A>(double(a(i, t)) - base * detail::mask_weight(m(i, t)));
            });
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::floating_input<1>(baselines, {fn, "baselines"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
