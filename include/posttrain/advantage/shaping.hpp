#pragma once
// Reward shaping before advantage estimation: clipping, per-token KL penalties, and placing an
// outcome reward on the last valid token of a response.

#include <variant>

#include "tokens.hpp"

namespace posttrain::advantage {

// out[i] = clamp(rewards[i], low, high). In place is allowed.
template <class Policy, class Rewards, class Out>
void clip_rewards(const Policy& policy, const Rewards& rewards, Out&& out, double low, double high) {
    static_assert(host_policy<Policy>, "posttrain::advantage::clip_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::clip_rewards";
    detail::require(low <= high, {fn, "low"}, "low must be <= high, found low " + std::to_string(low) + " > high " + std::to_string(high));
    std::visit(
        [&](auto r, auto o) {
            detail::check_extent(o.extent(0), r.extent(0), {fn, "out"}, "length (one per reward)");
            detail::check_same_or_disjoint(o, r, {fn, "out"}, "rewards");
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, r.extent(0), 1, [&](index_t i) {
                const double v = r(i);
                o(i) = static_cast<O>(v < low ? low : (v > high ? high : v));
            });
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(out, {fn, "out"}));
}

// verl compute_rewards: out[i,t] = token_scores[i,t] - coef * (logp[i,t] - ref_logp[i,t]).
template <class Policy, class Scores, class LogProbs, class RefLogProbs, class Out>
void kl_penalized_rewards(const Policy& policy, const Scores& token_scores, const LogProbs& logp, const RefLogProbs& ref_logp,
                          Out&& out, double coef) {
    static_assert(host_policy<Policy>, "posttrain::advantage::kl_penalized_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::kl_penalized_rewards";
    std::visit(
        [&](auto s, auto lp, auto rp, auto o) {
            detail::check_same_shape(lp, s, {fn, "logp"}, "token_scores");
            detail::check_same_shape(rp, s, {fn, "ref_logp"}, "token_scores");
            detail::check_same_shape(o, s, {fn, "out"}, "token_scores");
            detail::check_same_or_disjoint(o, s, {fn, "out"}, "token_scores");
            detail::check_same_or_disjoint(o, lp, {fn, "out"}, "logp");
            detail::check_same_or_disjoint(o, rp, {fn, "out"}, "ref_logp");
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, s.extent(0), s.extent(1), [&](index_t i) {
                for (index_t t = 0; t < s.extent(1); ++t)
                    o(i, t) = static_cast<O>(double(s(i, t)) - (double(lp(i, t)) - double(rp(i, t))) * coef);
            });
        },
        posttrain::detail::floating_input<2>(token_scores, {fn, "token_scores"}), posttrain::detail::floating_input<2>(logp, {fn, "logp"}),
        posttrain::detail::floating_input<2>(ref_logp, {fn, "ref_logp"}), posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

// Where the outcome reward goes in a response with no valid token.
enum class empty_response {
    last_position,  // index T-1 (OpenRLHF: argmax of an all-zero flipped mask is 0)
    dropped,        // nowhere (posttrain's default)
};

struct outcome_token_reward_options {
    double kl_coef = 0.0;        // out -= kl_coef * kl on every token (OpenRLHF: coef <= 0 disables it)
    bool clip = false;
    double clip_low = -10.0, clip_high = 10.0;
    empty_response empty = empty_response::dropped;

    // OpenRLHF compute_reward (reward clip_range optional).
    static constexpr outcome_token_reward_options openrlhf(double kl_coef, bool clip = false, double lo = -10.0, double hi = 10.0) {
        return {kl_coef > 0 ? kl_coef : 0.0, clip, lo, hi, empty_response::last_position};
    }
};

// out[i,t] = -kl_coef * kl[i,t] + clip(rewards[i]) * [t == last valid token of row i]; kl may be posttrain::none.
template <class Policy, class Rewards, class KL, class Mask, class Out>
void outcome_token_rewards(const Policy& policy, const Rewards& rewards, const KL& kl, const Mask& mask, Out&& out,
                           const outcome_token_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::outcome_token_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::outcome_token_rewards";
    std::visit(
        [&](auto r, auto m, auto o) {
            detail::check_extent(m.extent(0), r.extent(0), {fn, "mask"}, "rows (one per reward)");
            detail::check_same_shape(o, m, {fn, "out"}, "mask");
            // Row i reads rewards[i] and its mask row, then writes its out row: out may be the mask
            // (or kl) itself, but no other overlap.
            detail::check_no_alias(o, r, {fn, "out"}, "rewards");
            detail::check_same_or_disjoint(o, m, {fn, "out"}, "mask");
            using O = typename decltype(o)::value_type;
            const index_t T = m.extent(1);
            auto body = [&](auto kl_at) {
                detail::for_each_row(policy, m.extent(0), T, [&](index_t i) {
                    index_t last = -1;
                    for (index_t t = 0; t < T; ++t)
                        if (detail::mask_weight(m(i, t)) != 0) last = t;
                    if (last < 0 && options.empty == empty_response::last_position) last = T - 1;
                    double reward = r(i);
                    if (options.clip) reward = reward < options.clip_low ? options.clip_low : (reward > options.clip_high ? options.clip_high : reward);
                    for (index_t t = 0; t < T; ++t) {
                        double v = -options.kl_coef * kl_at(i, t);
                        if (t == last) v += reward;
                        o(i, t) = static_cast<O>(v);
                    }
                });
            };
            if constexpr (std::is_same_v<std::remove_cvref_t<KL>, none_t>) {
                body([](index_t, index_t) { return 0.0; });
            } else {
                auto k = std::visit([](auto v) { return v; }, posttrain::detail::floating_input<2>(kl, {fn, "kl"}));
                detail::check_same_shape(k, m, {fn, "kl"}, "mask");
                detail::check_same_or_disjoint(o, k, {fn, "out"}, "kl");
                body([&](index_t i, index_t t) { return double(k(i, t)); });
            }
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

}  // namespace posttrain::advantage
