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
// The shapes and overlaps discounted_returns' host and CUDA entries both check: the output apart
// from both inputs (the device reads the mask while writing).
template <class R, class M, class O>
void check_discounted_returns_views(const R& r, const M& m, const O& o, const char* fn) {
    check_same_shape(m, r, {fn, "mask"}, "token_rewards");
    check_same_shape(o, r, {fn, "returns"}, "token_rewards");
    check_no_alias(o, r, {fn, "returns"}, "token_rewards");
    check_no_alias(o, m, {fn, "returns"}, "mask");
}

// The optional `returns` output of the estimators built on the returns (reinforce_pp, remax; host
// and CUDA): [N,T] like the rewards, apart from the advantages and every input.
template <class Ret, class R, class M, class A>
void check_returns_output(const Ret& ret, const R& r, const M& m, const A& a, const char* fn) {
    check_same_shape(ret, r, {fn, "returns"}, "token_rewards");
    check_no_alias(ret, a, {fn, "returns"}, "advantages");
    check_no_alias(ret, r, {fn, "returns"}, "token_rewards");
    check_no_alias(ret, m, {fn, "returns"}, "mask");
}

// Writes the discounted returns of r into the [N,T] output a, and copies them into the optional
// output `returns` (posttrain::none skips it); shared by the estimators built on returns.
// check(ret) checks the returns output (at least check_returns_output) before anything is written.
template <class Policy, class R, class M, class A, class Returns, class Check>
void returns_into(const Policy& p, R r, M m, A a, Returns&& returns, const returns_options& o, const char* fn, Check&& check) {
    using AT = typename A::value_type;
    auto write = [&](index_t i, index_t t, double v) { a(i, t) = static_cast<AT>(v); };
    auto run = [&](auto* ret) {
        for_each_row(p, r.extent(0), r.extent(1), [&](index_t i) { discounted_row(r, m, write, i, r.extent(1), o); });
        if constexpr (!std::is_same_v<decltype(ret), none_t*>) {
            using RT = typename std::remove_pointer_t<decltype(ret)>::value_type;
            for_each_row(p, r.extent(0), r.extent(1), [&](index_t i) {
                for (index_t t = 0; t < r.extent(1); ++t) (*ret)(i, t) = static_cast<RT>(a(i, t));
            });
        }
    };
    if constexpr (std::is_same_v<std::remove_cvref_t<Returns>, none_t>) {
        run(static_cast<none_t*>(nullptr));
    } else {
        std::visit(
            [&](auto ret) {
                check(ret);
                run(&ret);
            },
            posttrain::detail::floating_output<2>(returns, {fn, "returns"}));
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
            detail::check_discounted_returns_views(r, m, o, fn);
            using O = typename decltype(o)::value_type;
            auto write = [&](index_t i, index_t t, double v) { o(i, t) = static_cast<O>(v); };
            detail::for_each_row(policy, r.extent(0), r.extent(1),
                                 [&](index_t i) { detail::discounted_row(r, m, write, i, r.extent(1), options); });
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<2>(returns, {fn, "returns"}));
}

}  // namespace posttrain::advantage
