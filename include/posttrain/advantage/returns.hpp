#pragma once
// Discounted token returns G[i,t] = R[i,t] + gamma * G[i,t+1], with the frameworks' three ways of
// treating masked (observation, padding) tokens.

#include <variant>

#include "tokens.hpp"

namespace posttrain::advantage {

enum class masked_tokens {
    reset,   // G_t = R_t + gamma*run; run = G_t * m_t: a masked token cuts the sum (verl <= Jan 2026)
    carry,   // G_t = (R_t + gamma*run) * m_t; run carried through masked tokens (verl Aug 2026)
    zero_rewards,  // rewards are multiplied by the mask, nothing else (OpenRLHF get_cumulative_returns)
};

struct returns_options {
    double gamma = 1.0;
    masked_tokens masking = masked_tokens::reset;
};

namespace detail {
// One row's backward recursion; shared by discounted_returns, reinforce_pp and remax.
template <class R, class M, class Out>
void discounted_row(R rewards, M mask, Out out, index_t i, index_t T, const returns_options& o) {
    double run = 0;
    for (index_t t = T - 1; t >= 0; --t) {
        const double m = mask_weight(mask(i, t));
        const double r = double(rewards(i, t));
        double g = 0;
        switch (o.masking) {
            case masked_tokens::reset:
                g = r + o.gamma * run;
                run = g * m;
                break;
            case masked_tokens::carry: {
                const double next = r + o.gamma * run;
                g = next * m;
                run = g + run * (1.0 - m);
                break;
            }
            case masked_tokens::zero_rewards:
                g = r * m + o.gamma * run;
                run = g;
                break;
        }
        out(i, t, g);
    }
}
// Writes the discounted returns of r into the [N,T] output a, and copies them into the optional
// output `returns` (posttrain::none skips it); shared by the estimators built on returns.
template <class Policy, class R, class M, class A, class Returns>
void returns_into(const Policy& p, R r, M m, A a, Returns&& returns, const returns_options& o, const char* fn) {
    using AT = typename A::value_type;
    auto write = [&](index_t i, index_t t, double v) { a(i, t) = static_cast<AT>(v); };
    for_each_row(p, r.extent(0), r.extent(1), [&](index_t i) { discounted_row(r, m, write, i, r.extent(1), o); });
    if constexpr (!std::is_same_v<std::remove_cvref_t<Returns>, none_t>) {
        auto ret = std::visit([](auto v) { return v; }, posttrain::detail::floating_output<2>(returns, {fn, "returns"}));
        check_same_shape(ret, r, {fn, "returns"}, "token_rewards");
        check_no_alias(ret, a, {fn, "returns"}, "advantages");
        using RT = typename decltype(ret)::value_type;
        for_each_row(p, r.extent(0), r.extent(1), [&](index_t i) {
            for (index_t t = 0; t < r.extent(1); ++t) ret(i, t) = static_cast<RT>(a(i, t));
        });
    }
}

}  // namespace detail

// returns[i, t]: discounted reward-to-go of each row (rows are independent).
template <class Policy, class TokenRewards, class Mask, class Returns>
void discounted_returns(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask, Returns&& returns,
                        const returns_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::discounted_returns: host policy expected");
    constexpr const char* fn = "posttrain::advantage::discounted_returns";
    std::visit(
        [&](auto r, auto m, auto o) {
            detail::check_same_shape(m, r, {fn, "mask"}, "token_rewards");
            detail::check_same_shape(o, r, {fn, "returns"}, "token_rewards");
            detail::check_no_alias(o, r, {fn, "returns"}, "token_rewards");
            using O = typename decltype(o)::value_type;
            auto write = [&](index_t i, index_t t, double v) { o(i, t) = static_cast<O>(v); };
            detail::for_each_row(policy, r.extent(0), r.extent(1),
                                 [&](index_t i) { detail::discounted_row(r, m, write, i, r.extent(1), options); });
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<2>(returns, {fn, "returns"}));
}

}  // namespace posttrain::advantage
