#pragma once
// RTO (Reinforced Token Optimization, "DPO meets PPO"; zkshan2002/RTO): a DPO-trained model's
// implicit token rewards become a dense reward for PPO. Per token of a response sampled from the
// rollout policy:
//
//   d_t = clip(beta1 * (log pi_dpo - log pi_ref)_t, -c, c)                  rto_dpo_rewards
//   r_t = d_t - beta2 * (log pi_old - log pi_ref)_t                         rto_rewards (k1 KL penalty)
//         + [t = last valid token] * clip(score, -10, 10)                   the reward model's score
//
// then GAE and the PPO-clip loss (advantage::gae with gae_options::openrlhf(gamma, lambda), whiten =
// false; policy_loss::compute), which this header does not repeat. pi_ref is the SFT model: RTO uses
// it both as the DPO reference and as the KL anchor. No gradient flows through any of this.
//
// The score placement and clamp are advantage::outcome_token_rewards; the KL penalty is
// policy_loss::apply_kl_penalty (k1, unclamped); d_t is the r->Q* token reward (token_rewards.hpp)
// with beta = beta1, then clamped.

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/shaping.hpp"
#include "../policy_loss/kl.hpp"
#include "token_rewards.hpp"

namespace posttrain::preference {

struct rto_options {
    double dpo_reward_scale = 0.05;  // beta1 (dpo_reward_scale); >= 0
    double dpo_reward_clip = 0.05;   // c (dpo_reward_clip); 0: no clip
    double kl_coef = 0.01;           // beta2 (init_kl_coef); >= 0
    double score_clip = 10;          // the reward model's score is clamped to [-score_clip, score_clip]; 0: no clamp
    // The fork's silent fallbacks (Q15): the scale is applied only when it is != 1 and > 0 (a zero or
    // negative scale means 1), a clip <= 0 means no clip, a kl_coef <= 0 means 0. Off (posttrain's
    // default): negative values raise, and a zero scale gives zero DPO rewards.
    bool lenient = false;

    // zkshan2002/RTO at f2c1294 (NaiveExperienceMaker._compute_dpo_rewards, models/utils.py
    // compute_reward); the defaults are examples/scripts/train_rto_llama_8b.sh (the CLI defaults are
    // scale 1, clip 0).
    static constexpr rto_options official(double dpo_reward_scale = 0.05, double dpo_reward_clip = 0.05, double kl_coef = 0.01) {
        rto_options o;
        o.dpo_reward_scale = dpo_reward_scale;
        o.dpo_reward_clip = dpo_reward_clip;
        o.kl_coef = kl_coef;
        o.score_clip = 10;
        o.lenient = true;
        return o;
    }
};

struct [[nodiscard]] rto_dpo_reward_result {
    double mean = 0;           // mean d_t over the valid tokens of the batch (0 without any)
    double clip_fraction = 0;  // share of valid tokens whose scaled log-ratio lay strictly outside [-c, c]
    double tokens = 0;         // valid tokens
};

struct [[nodiscard]] rto_reward_result {
    double mean_kl = 0;  // mean over rows of each row's mean k1 KL over its valid tokens (the adaptive controller's input)
    double tokens = 0;   // valid tokens
};

namespace detail {

// The scale and clip the options mean (after the fork's fallbacks when lenient).
struct rto_coefficients {
    double scale = 1, clip = 0, kl_coef = 0;
};

inline rto_coefficients rto_resolve(const rto_options& o, const char* fn) {
    require_finite_option(o.dpo_reward_scale, fn, "dpo_reward_scale");
    require_finite_option(o.dpo_reward_clip, fn, "dpo_reward_clip");
    require_finite_option(o.kl_coef, fn, "kl_coef");
    require_finite_option(o.score_clip, fn, "score_clip");
    require(o.score_clip >= 0, {fn, "options"}, "score_clip must be >= 0 (0: no clamp), found " + std::to_string(o.score_clip));
    rto_coefficients c;
    if (o.lenient) {
        c.scale = o.dpo_reward_scale != 1.0 && o.dpo_reward_scale > 0 ? o.dpo_reward_scale : 1.0;
        c.clip = o.dpo_reward_clip > 0 ? o.dpo_reward_clip : 0.0;
        c.kl_coef = o.kl_coef > 0 ? o.kl_coef : 0.0;
    } else {
        require(o.dpo_reward_scale >= 0, {fn, "options"},
                "dpo_reward_scale must be >= 0, found " + std::to_string(o.dpo_reward_scale) +
                    " (rto_options::official() ignores a negative scale, as the RTO code does)");
        require(o.dpo_reward_clip >= 0, {fn, "options"},
                "dpo_reward_clip must be >= 0 (0: no clip), found " + std::to_string(o.dpo_reward_clip));
        require(o.kl_coef >= 0, {fn, "options"}, "kl_coef must be >= 0, found " + std::to_string(o.kl_coef));
        c.scale = o.dpo_reward_scale;
        c.clip = o.dpo_reward_clip;
        c.kl_coef = o.kl_coef;
    }
    return c;
}

// clip(x, -c, c) for c > 0 (torch.clamp: NaN stays NaN, which cannot occur here).
POSTTRAIN_HD inline double rto_clip(double x, double c) noexcept {
    if (!(c > 0)) return x;
    return x < -c ? -c : (x > c ? c : x);
}

// k1 without any clamp, as RTO's compute_approx_kl has it; non-finite values were rejected first.
inline posttrain::policy_loss::kl_options rto_kl_options() {
    posttrain::policy_loss::kl_options k;
    k.estimator = posttrain::policy_loss::kl_estimator::k1;
    k.nonfinite_inputs = advantage::nonfinite::propagate;  // masked positions may hold anything
    return k;
}

}  // namespace detail

// rewards[b, t] = clip(scale * (dpo_log_probs - ref_log_probs)[b, t], -clip, clip) on valid tokens, 0 on
// masked ones (whose inputs are never read). Non-finite log-probs at valid positions raise.
template <class Policy, class DpoLogProbs, class RefLogProbs, class Mask>
rto_dpo_reward_result rto_dpo_rewards(const Policy& policy, const DpoLogProbs& dpo_log_probs, const RefLogProbs& ref_log_probs,
                                      const Mask& mask, const token_output& rewards, const rto_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::rto_dpo_rewards: host policy expected");
    constexpr const char* fn = "posttrain::preference::rto_dpo_rewards";
    const auto c = detail::rto_resolve(options, fn);
    const auto in = detail::token_log_ratio_of(dpo_log_probs, ref_log_probs, mask, fn, "dpo_log_probs");
    const index_t B = in.B, T = in.T;
    in.check_output(rewards, {fn, "rewards"});
    std::vector<double> sum(static_cast<std::size_t>(B)), clipped(sum.size()), count(sum.size());
    std::vector<detail::row_error> errors(sum.size());
    posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
        detail::token_log_ratio::row x(T);
        std::vector<double> d(static_cast<std::size_t>(T));
        auto& e = errors[std::size_t(i)];
        in.load_checked(i, x, e);
        if (e.argument) return;
        // scale * (p - q): the r->Q* token reward with beta = scale (bitwise the fork's (p - q) * scale).
        detail::token_reward_row(x.p.data(), x.q.data(), x.m.data(), T, c.scale, d.data());
        clipped[std::size_t(i)] = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
            const double v = d[std::size_t(t)];
            return x.m[std::size_t(t)] && c.clip > 0 && (v < -c.clip || v > c.clip) ? 1.0 : 0.0;
        });
        for (index_t t = 0; t < T; ++t) d[std::size_t(t)] = detail::rto_clip(d[std::size_t(t)], c.clip);
        sum[std::size_t(i)] = posttrain::detail::fixed_order_sum(d.data(), T);
        count[std::size_t(i)] = detail::valid_count(x.m.data(), T);
        if (rewards.present()) detail::write_row(rewards, i, d.data());
    });
    detail::raise_first(errors, fn);
    rto_dpo_reward_result r;
    auto total = [&](const std::vector<double>& v) { return posttrain::detail::fixed_order_sum(v.data(), B); };
    r.tokens = total(count);
    if (r.tokens > 0) {
        r.mean = total(sum) / r.tokens;
        r.clip_fraction = total(clipped) / r.tokens;
    }
    return r;
}

// RTO's token reward (the fork's compute_reward):
//   rewards[b, t] = clip(scores[b]) * [t == last valid token of row b]
//                   - kl_coef * (log_probs - ref_log_probs)[b, t] * [valid]     (k1, unclamped)
//                   + token_rewards[b, t]                                        (every position)
// kl[b, t] = (log_probs - ref_log_probs)[b, t] on valid tokens, 0 elsewhere (posttrain::none skips it).
// log_probs are the rollout policy's (pi_old), ref_log_probs the SFT model's; token_rewards is the
// output of rto_dpo_rewards, or posttrain::none for plain PPO. A row without valid tokens gets its
// score at position T - 1 (OpenRLHF's argmax of an all-zero mask). Masked log-probs are never read;
// scores, valid log-probs and token_rewards must be finite.
template <class Policy, class Scores, class LogProbs, class RefLogProbs, class Mask, class TokenRewards, class Rewards>
rto_reward_result rto_rewards(const Policy& policy, const Scores& scores, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                              const Mask& mask, const TokenRewards& token_rewards, Rewards&& rewards, const token_output& kl = {},
                              const rto_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::rto_rewards: host policy expected");
    constexpr const char* fn = "posttrain::preference::rto_rewards";
    constexpr bool has_token_rewards = !std::is_same_v<std::remove_cvref_t<TokenRewards>, none_t>;
    const auto c = detail::rto_resolve(options, fn);
    const auto in = detail::token_log_ratio_of(log_probs, ref_log_probs, mask, fn, "log_probs");
    const index_t B = in.B, T = in.T;
    const token_output out(rewards);
    in.check_output(out, {fn, "rewards"});
    in.check_output(kl, {fn, "kl"});
    detail::check_outputs_disjoint(kl, out, {fn, "kl"}, "rewards");
    const auto s = detail::widen<detail::values_of<void, 1>>(posttrain::detail::floating_input<1>(scores, {fn, "scores"}));
    std::visit([&](auto v) {
        if constexpr (!std::is_same_v<decltype(v), std::monostate>) {
            posttrain::detail::require(v.extent(0) == B, {fn, "scores"},
                                       "must have one entry per row of 'log_probs': " + posttrain::detail::str(B) + ", found " +
                                           posttrain::detail::str(v.extent(0)));
            posttrain::detail::require(!detail::overlaps(out.view(), detail::values_of<void, 1>(v)), {fn, "rewards"},
                                       "the output overlaps the input 'scores'; pass a separate buffer");
            // kl is written before the scores are read.
            posttrain::detail::require(!detail::overlaps(kl.view(), detail::values_of<void, 1>(v)), {fn, "kl"},
                                       "the output overlaps the input 'scores'; pass a separate buffer");
            for (index_t i = 0; i < B; ++i)
                posttrain::detail::require(numeric::is_finite(double(v(i))), {fn, "scores"},
                                           "non-finite value at index " + posttrain::detail::str(i));
        }
    }, s);
    detail::token_values d;
    if constexpr (has_token_rewards) {
        d = detail::token_values_of(token_rewards, {fn, "token_rewards"});
        detail::check_token_shape(d.rows(), d.cols(), B, T, {fn, "token_rewards"}, "log_probs");
        detail::check_token_output(out, B, T, {fn, "rewards"}, "log_probs", d);
        detail::check_token_output(kl, B, T, {fn, "kl"}, "log_probs", d);
    }

    // Validate (nothing is written before every input is known good), and write kl. The mask is read
    // into 0/1 bytes on the way: the score placement and the KL penalty below take it as weights, and
    // here a nonzero entry of any value selects one token (as everywhere in the preference module).
    const auto k1 = detail::rto_kl_options();
    std::vector<detail::row_error> errors(static_cast<std::size_t>(B));
    std::vector<std::uint8_t> selected(static_cast<std::size_t>(B * T));
    posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
        detail::token_log_ratio::row x(T);
        auto& e = errors[std::size_t(i)];
        in.load_checked(i, x, e);
        for (index_t t = 0; t < T; ++t) selected[std::size_t(i * T + t)] = x.m[std::size_t(t)];
        if constexpr (has_token_rewards) {
            std::vector<double> dr(static_cast<std::size_t>(T));
            d.load(i, dr.data());
            const std::vector<unsigned char> all(dr.size(), 1);  // added at every position, so checked at every one
            detail::note_nonfinite(e, dr.data(), all.data(), T, d.name);
        }
    });
    detail::raise_first(errors, fn, "non-finite value at a position that is used");
    if (kl.present())
        posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
            detail::token_log_ratio::row x(T);
            in.load(i, x);
            for (index_t t = 0; t < T; ++t)
                x.p[std::size_t(t)] = x.m[std::size_t(t)] ? posttrain::policy_loss::detail::kl_token(x.p[std::size_t(t)], x.q[std::size_t(t)], k1).value : 0.0;
            detail::write_row(kl, i, x.p.data());
        });

    // The score on the last valid token (T - 1 for an empty row), clamped as the fork does.
    advantage::outcome_token_reward_options place;
    place.clip = options.score_clip > 0;
    place.clip_low = -options.score_clip;
    place.clip_high = options.score_clip;
    place.empty = advantage::empty_response::last_position;
    const tensor_view<const std::uint8_t, 2> valid(selected.data(), B, T);
    advantage::outcome_token_rewards(policy, scores, none, valid, rewards, place);
    // minus kl_coef * k1 on valid tokens, in place.
    const auto kr = posttrain::policy_loss::apply_kl_penalty(policy, rewards, log_probs, ref_log_probs, valid, rewards, c.kl_coef,
                                                             posttrain::policy_loss::kl_reward_options{k1});
    // plus the DPO token rewards, at every position (as the fork adds them).
    if constexpr (has_token_rewards)
        posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
            std::visit([&](auto o, auto dv) {
                if constexpr (!std::is_same_v<decltype(o), std::monostate> && !std::is_same_v<decltype(dv), std::monostate>) {
                    using O = typename decltype(o)::value_type;
                    for (index_t t = 0; t < T; ++t) o(i, t) = static_cast<O>(double(o(i, t)) + double(dv(i, t)));
                }
            }, out.view(), d.view);
        });
    return {kr.mean_kl, kr.tokens};
}

}  // namespace posttrain::preference
