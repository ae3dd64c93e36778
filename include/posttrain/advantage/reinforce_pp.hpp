#pragma once
// REINFORCE++ (Hu et al. 2025): discounted token returns whitened over the whole batch, and
// REINFORCE++-baseline: the group-mean-centred outcome tiled over tokens, whitened over the batch.

#include <variant>
#include <vector>

#include "grpo.hpp"
#include "returns.hpp"
#include "whiten.hpp"

namespace posttrain::advantage {

struct reinforce_pp_options {
    returns_options returns{};
    whiten_options whitening{};  // token-weighted, unbiased; too few valid tokens give zeros
    bool mask_output = true;     // A = whiten(G) * m

    // verl compute_reinforce_plus_plus_outcome_advantage (b178a3c: masked tokens reset the return;
    // whitening raises with fewer than two valid tokens).
    static constexpr reinforce_pp_options verl(double gamma = 1.0) {
        reinforce_pp_options o;
        o.returns = {gamma, masked_tokens::reset};
        o.whitening = whiten_options::verl();
        return o;
    }
    // OpenRLHF "reinforce": returns of the mask-zeroed rewards, biased whitening (or centring only
    // with no_std_norm), no extra masking.
    static constexpr reinforce_pp_options openrlhf(double gamma = 1.0, bool no_std_norm = false) {
        reinforce_pp_options o;
        o.returns = {gamma, masked_tokens::zero_rewards};
        o.whitening = whiten_options::openrlhf(no_std_norm);
        o.mask_output = false;
        return o;
    }
};

namespace detail {
// The shapes and overlaps reinforce_pp's host and CUDA entries both check (the advantages apart from
// both inputs: the whitening reads the mask after the advantages are written).
template <class R, class M, class A>
void check_reinforce_pp_views(const R& r, const M& m, const A& a, const char* fn) {
    check_same_shape(m, r, {fn, "mask"}, "token_rewards");
    check_same_shape(a, r, {fn, "advantages"}, "token_rewards");
    check_no_alias(a, r, {fn, "advantages"}, "token_rewards");
    check_no_alias(a, m, {fn, "advantages"}, "mask");
}

// The same for reinforce_pp_baseline: one reward per row of the mask, advantages shaped as the mask
// and apart from it.
template <class R, class M, class A>
void check_baseline_views(const R& r, const M& m, const A& a, const char* fn) {
    check_extent(m.extent(0), r.extent(0), {fn, "mask"}, "rows (one per reward)");
    check_same_shape(a, m, {fn, "advantages"}, "mask");
    check_no_alias(a, m, {fn, "advantages"}, "mask");
}
}  // namespace detail

// advantages[N,T] = whiten(discounted_returns(token_rewards)) (* mask); returns[N,T] (or posttrain::none)
// receives the discounted returns themselves. Returns the whitening statistics.
template <class Policy, class TokenRewards, class Mask, class Advantages, class Returns>
moments_result reinforce_pp(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask,
                            Advantages&& advantages, Returns&& returns, const reinforce_pp_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::reinforce_pp: host policy expected");
    constexpr const char* fn = "posttrain::advantage::reinforce_pp";
    return std::visit(
        [&](auto r, auto m, auto a) {
            detail::check_reinforce_pp_views(r, m, a, fn);
            using A = typename decltype(a)::value_type;
            detail::returns_into(policy, r, m, a, returns, options.returns, fn,
                                 [&](auto ret) { detail::check_returns_output(ret, r, m, a, fn); });
            whiten_options w = options.whitening;
            w.mask_output = options.mask_output;
            return masked_whiten(policy, tensor_view<const A, 2>(a), m, a, w);
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
}

struct reinforce_pp_baseline_options {
    grpo_options centring = grpo_options::dr_grpo();  // r - group mean
    whiten_options whitening{};
    bool mask_output = true;

    // verl compute_reinforce_plus_plus_baseline_outcome_advantage: singleton mean 0 (raw score).
    static constexpr reinforce_pp_baseline_options verl() {
        reinforce_pp_baseline_options o;
        o.centring = grpo_options::verl(false);
        o.whitening = whiten_options::verl();
        return o;
    }
    // OpenRLHF "reinforce_baseline" centring on the scalar rewards (then returns and global whitening
    // are applied by the caller on the shaped token rewards).
    static constexpr reinforce_pp_baseline_options openrlhf() {
        reinforce_pp_baseline_options o;
        o.centring = grpo_options::openrlhf(false);
        o.whitening = whiten_options::openrlhf();
        o.mask_output = false;
        return o;
    }
};

// advantages[N,T] = whiten((r_i - mean_g) * m) * m over the whole batch.
template <class Policy, class Rewards, class Groups, class Mask, class Advantages>
moments_result reinforce_pp_baseline(const Policy& policy, const Rewards& rewards, const Groups& groups, const Mask& mask,
                                     Advantages&& advantages, const reinforce_pp_baseline_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::reinforce_pp_baseline: host policy expected");
    constexpr const char* fn = "posttrain::advantage::reinforce_pp_baseline";
    return std::visit(
        [&](auto r, auto m, auto a) {
            detail::check_baseline_views(r, m, a, fn);
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            std::vector<double> centred(static_cast<std::size_t>(r.extent(0)));
            (void)grpo(policy, r, groups, tensor_view<double, 1>(centred.data(), r.extent(0)), options.centring);
            const tensor_view<const double, 1> cv(centred.data(), r.extent(0));
            broadcast_to_tokens(policy, cv, m, a);
            using A = typename decltype(a)::value_type;
            whiten_options w = options.whitening;
            w.mask_output = options.mask_output;
            return masked_whiten(policy, tensor_view<const A, 2>(a), m, a, w);
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
