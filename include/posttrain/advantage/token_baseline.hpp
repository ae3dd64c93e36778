#pragma once
// Optimal token baseline (OTB; verl "optimal_token_baseline" and its multi-turn form
// "tir_optimal_token_baseline"): a baseline per position t, shared by the rows of a group, that
// weights each row's reward-to-go by its accumulated path variance up to t:
//
//     G_{i,t} = sum_{s >= t} r_{i,s} m_{i,s}                      reward-to-go (the returns)
//     w_{i,t} = (1 - 2 pi_{i,t} + sum_v pi_v^2) * rho_{i,t}^2     pi_t = exp(old_log_prob_t); rho = 1 without IS
//     W_{i,t} = sum_{s <= t} w_{i,s} m_{i,s}                      cumulative path-variance proxy
//     B_t     = sum_i G_{i,t} W_{i,t} m_{i,t} / (sum_i W_{i,t} m_{i,t} + epsilon)
//     A_{i,t} = (G_{i,t} - B_t) m_{i,t}
//
// The multi-turn form aligns rows by their k-th valid token instead of by column t (tool observation
// tokens inside a response are skipped), and leaves rows without a valid token out of their group.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../config.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

struct token_baseline_options {
    // The unique longest row of a group gets baseline 0 beyond the second-longest row's length: there
    // it is the only row, and the group "baseline" would be its own return (advantage ~0, no signal).
    // posttrain's default (true) treats those positions like a singleton group (baseline 0).
    bool handle_zero_tail = true;
    double epsilon = 1e-8;  // added to the denominator; >= 0
    nonfinite nonfinite_inputs = nonfinite::raise;  // ignore is treated as propagate

    // verl compute_optimal_token_baseline_advantage (b178a3c: handle_zero_tail defaults to False).
    static constexpr token_baseline_options verl() { return {false, 1e-8, nonfinite::propagate}; }
    // verl compute_multi_turn_optimal_token_baseline_advantage (handle_zero_tail defaults to True).
    static constexpr token_baseline_options verl_multi_turn() { return {true, 1e-8, nonfinite::propagate}; }
};

// What a token-baseline computation saw.
struct [[nodiscard]] token_baseline_result {
    index_t groups = 0;            // groups in the layout
    index_t empty_groups = 0;      // no row (multi-turn: no row with a valid token); advantages 0
    index_t singleton_groups = 0;  // one row (multi-turn: one row with valid tokens); baseline 0
    index_t zero_tail_groups = 0;  // groups whose unique longest row had its tail baseline zeroed
};

// The path-variance weight of one token, ||s_t||^2 ~ 1 - 2 pi_t + sum_v pi_v^2, times rho_t^2 under
// rollout importance sampling (rho = 1 without it: multiplying by 1 is exact). Evaluated in verl's
// order ((1 - 2 pi) + sum pi^2) * rho^2 so that the reference's bits are reproduced.
POSTTRAIN_HD inline double token_path_weight(double old_log_prob, double sum_pi_squared, double rho) noexcept {
    using std::exp;
    return ((1.0 - 2.0 * exp(old_log_prob)) + sum_pi_squared) * (rho * rho);
}

// sum_v pi_v^2 of softmax(z) over the last axis: exp(logsumexp(2z) - 2 logsumexp(z)), evaluated as
// S2 / S1^2 with S1 = sum exp(z - max), S2 = sum exp(z - max)^2 (no exp/log round trip; S1 >= 1, so
// nothing overflows or underflows to a wrong value). A -inf logit is a probability of 0.
namespace detail {
template <class Z>
double sum_pi_squared_row(Z z, index_t n) noexcept {
    double hi = -std::numeric_limits<double>::infinity();
    for (index_t v = 0; v < n; ++v) hi = std::max(hi, double(z(v)));
    double acc1[8] = {}, acc2[8] = {};
    // Eight interleaved lanes (the fixed_order_sum order) for both sums in one pass over the row.
    index_t v = 0;
    for (; v + 8 <= n; v += 8)
        for (int l = 0; l < 8; ++l) {
            const double e = std::exp(double(z(v + l)) - hi);
            acc1[l] += e;
            acc2[l] += e * e;
        }
    for (int l = 0; v < n; ++v, ++l) {
        const double e = std::exp(double(z(v)) - hi);
        acc1[l] += e;
        acc2[l] += e * e;
    }
    auto combine = [](const double* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); };
    const double s1 = combine(acc1), s2 = combine(acc2);
    return s2 / (s1 * s1);
}
}  // namespace detail

// out[b, t] = sum_v softmax(logits[b, t, :])_v^2 (what verl's calculate_sum_pi_squared_from_logits
// gives). Logits may hold -inf (masked vocabulary entries); NaN, +inf, an empty vocabulary or a row
// of only -inf is an invalid_argument naming the first bad (b, t).
template <class Policy, class Logits, class Out>
void sum_pi_squared_from_logits(const Policy& policy, const Logits& logits, Out&& out) {
    static_assert(host_policy<Policy>, "posttrain::advantage::sum_pi_squared_from_logits: host policy expected");
    constexpr const char* fn = "posttrain::advantage::sum_pi_squared_from_logits";
    std::visit(
        [&](auto z, auto o) {
            const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
            detail::require(o.extent(0) == B && o.extent(1) == T, {fn, "out"},
                            "shape must be [B, T] of logits [B, T, V] = [" + detail::str(B) + ", " + detail::str(T) + ", " +
                                detail::str(V) + "], found [" + detail::str(o.extent(0)) + ", " + detail::str(o.extent(1)) + "]");
            detail::check_no_alias(o, z, {fn, "out"}, "logits");
            detail::require(V > 0 || B * T == 0, {fn, "logits"}, "the vocabulary axis is empty (V = 0)");
            using O = typename decltype(o)::value_type;
            // A bad row is flagged where it is found and reported after the loop, so that the message
            // names the first one whatever the policy.
            std::vector<unsigned char> bad(static_cast<std::size_t>(B * T), 0);
            posttrain::detail::for_blocks(policy, B * T, V + 1, [&](index_t lo, index_t hi) {
                for (index_t k = lo; k < hi; ++k) {
                    const index_t b = k / T, t = k % T;
                    const double s = detail::sum_pi_squared_row([&](index_t v) { return z(b, t, v); }, V);
                    bad[std::size_t(k)] = !numeric::is_finite(s);
                    o(b, t) = static_cast<O>(s);
                }
            });
            for (index_t k = 0; k < B * T; ++k)
                if (bad[std::size_t(k)])
                    posttrain::detail::raise_invalid_argument(
                        fn, "logits",
                        "the softmax over the vocabulary at [" + detail::str(k / T) + ", " + detail::str(k % T) +
                            "] is undefined (a NaN or +inf logit, or every logit -inf)");
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

namespace detail {

// Reads rho = 1 when no rollout IS weights are given.
struct unit_is_weights {
    double operator()(index_t, index_t) const noexcept { return 1.0; }
};
template <class T>
struct is_weights_reader {
    tensor_view<const T, 2> v;
    double operator()(index_t i, index_t t) const noexcept { return double(v(i, t)); }
};

// An optional [N,T] input or output as a variant over its views; posttrain::none gives the one
// alternative none_t.
template <class X>
auto optional_input(const X& x, where w) {
    if constexpr (std::is_same_v<std::remove_cvref_t<X>, none_t>) return std::variant<none_t>(none);
    else return posttrain::detail::floating_input<2>(x, w);
}
template <class X>
auto optional_output(X&& x, where w) {
    if constexpr (std::is_same_v<std::remove_cvref_t<X>, none_t>) return std::variant<none_t>(none);
    else return posttrain::detail::floating_output<2>(std::forward<X>(x), w);
}

// Per-thread scratch of one group, O(T + n): the baseline's numerator and denominator per slot, one
// row's returns, and each row's valid-token count. Nothing of size n * T: a group of thousands of
// long rows needs no copy of its inputs.
struct token_baseline_scratch {
    std::vector<double> num, den, g;
    std::vector<index_t> len;
    void reserve(index_t n, index_t T) {
        if (num.size() < std::size_t(T)) num.resize(std::size_t(T)), den.resize(std::size_t(T)), g.resize(std::size_t(T));
        if (len.size() < std::size_t(n)) len.resize(std::size_t(n));
    }
};
inline token_baseline_scratch& token_baseline_buffers() {
    thread_local token_baseline_scratch s;
    return s;
}

// g[t] = sum_{s >= t} r(i, s) m(i, s): a row's reward-to-go (verl: flip, cumsum, flip).
template <class R, class M>
void reward_to_go(R r, M m, index_t i, index_t T, double* g) {
    double run = 0;
    for (index_t t = T - 1; t >= 0; --t) {
        run += double(r(i, t)) * mask_weight(m(i, t));
        g[t] = run;
    }
}

// Validates every argument and runs the per-group kernel. compact = true is the multi-turn form.
template <class Policy, class TokenRewards, class Mask, class OldLogProbs, class SumPiSquared, class IsWeights, class Groups,
          class Advantages, class Returns>
token_baseline_result token_baseline_entry(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask,
                                           const OldLogProbs& old_log_probs, const SumPiSquared& sum_pi_squared,
                                           const IsWeights& rollout_is_weights, const Groups& groups, Advantages&& advantages,
                                           Returns&& returns, const token_baseline_options& options, bool compact,
                                           const char* fn) {
    require(options.epsilon >= 0 && numeric::is_finite(options.epsilon), {fn, "options.epsilon"},
            "must be finite and >= 0, found " + std::to_string(options.epsilon));
    return std::visit(
        [&](auto r, auto m, auto lp, auto sp, auto is, auto a, auto ret) {
            const index_t N = r.extent(0), T = r.extent(1);
            check_same_shape(m, r, {fn, "mask"}, "token_rewards");
            check_same_shape(lp, r, {fn, "old_log_probs"}, "token_rewards");
            check_same_shape(sp, r, {fn, "sum_pi_squared"}, "token_rewards");
            check_same_shape(a, r, {fn, "advantages"}, "token_rewards");
            check_no_alias(a, r, {fn, "advantages"}, "token_rewards");
            check_no_alias(a, m, {fn, "advantages"}, "mask");
            check_no_alias(a, lp, {fn, "advantages"}, "old_log_probs");
            check_no_alias(a, sp, {fn, "advantages"}, "sum_pi_squared");
            const bool check = options.nonfinite_inputs == nonfinite::raise;
            if (check) {
                check_finite(r, {fn, "token_rewards"});
                check_finite(lp, {fn, "old_log_probs"});
                check_finite(sp, {fn, "sum_pi_squared"});
            }
            constexpr bool has_is = !std::is_same_v<decltype(is), none_t>;
            constexpr bool has_ret = !std::is_same_v<decltype(ret), none_t>;
            if constexpr (has_is) {
                check_same_shape(is, r, {fn, "rollout_is_weights"}, "token_rewards");
                check_no_alias(a, is, {fn, "advantages"}, "rollout_is_weights");
                if (check) check_finite(is, {fn, "rollout_is_weights"});
            }
            if constexpr (has_ret) {
                check_same_shape(ret, r, {fn, "returns"}, "token_rewards");
                check_no_alias(ret, a, {fn, "returns"}, "advantages");
                check_no_alias(ret, r, {fn, "returns"}, "token_rewards");
                check_no_alias(ret, m, {fn, "returns"}, "mask");
                check_no_alias(ret, lp, {fn, "returns"}, "old_log_probs");
                check_no_alias(ret, sp, {fn, "returns"}, "sum_pi_squared");
                if constexpr (has_is) check_no_alias(ret, is, {fn, "returns"}, "rollout_is_weights");
            }
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            posttrain::detail::check_apart_from_layout(groups, ret, fn, "returns");
            auto rho = [&] {
                if constexpr (has_is) return is_weights_reader<typename decltype(is)::value_type>{is};
                else return unit_is_weights{};
            }();

            using AT = typename decltype(a)::value_type;
            token_baseline_result res;
            res.groups = layout.num_groups();
            // 1 empty, 2 singleton; bit 4: tail zeroed.
            std::vector<unsigned char> kind(static_cast<std::size_t>(res.groups), 0);
            for_each_group(policy, layout, N * (T + 1), [&](index_t grp, auto rows, index_t n) {
                token_baseline_scratch& s = token_baseline_buffers();
                s.reserve(n, T);
                double* num = s.num.data();
                double* den = s.den.data();
                double* g = s.g.data();
                index_t* len = s.len.data();
                std::fill(num, num + T, 0.0);
                std::fill(den, den + T, 0.0);
                // Pass 1, row by row in the group's order (one thread, so a fixed order; it is also the
                // reference's order): returns, cumulative weights W, and their contributions to the
                // numerator sum_i G W m and denominator sum_i W m of every slot. A slot is the column t,
                // or in the compacted form the index of the valid token (mask != 0).
                index_t members = 0;
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    reward_to_go(r, m, i, T, g);
                    if constexpr (has_ret) {
                        using RT = typename decltype(ret)::value_type;
                        for (index_t t = 0; t < T; ++t) ret(i, t) = static_cast<RT>(g[t]);
                    }
                    double cum = 0;
                    index_t count = 0;
                    for (index_t t = 0; t < T; ++t) {
                        const double mw = mask_weight(m(i, t));
                        cum += token_path_weight(double(lp(i, t)), double(sp(i, t)), rho(i, t)) * mw;
                        if (!compact) {
                            // Multiplied in even where the mask is 0, so that IEEE propagation (NaN/inf
                            // under nonfinite::propagate) matches the reference.
                            num[t] += g[t] * cum * mw;
                            den[t] += cum * mw;
                        } else if (mw != 0) {
                            num[count] += g[t] * cum;
                            den[count] += cum;
                        }
                        count += mw != 0;
                    }
                    len[j] = count;
                    // The compacted form leaves rows without a valid token out of the group.
                    if (!compact || count > 0) ++members;
                }
                kind[std::size_t(grp)] = members == 0 ? 1 : members == 1 ? 2 : 0;
                // B = num / (den + epsilon) for >= 2 rows, else 0 (a singleton keeps its reward-to-go).
                // Without any weight (only possible with epsilon = 0) there is no baseline rather than 0/0.
                double* b = num;
                for (index_t k = 0; k < T; ++k)
                    b[k] = members >= 2 && den[k] + options.epsilon != 0 ? num[k] / (den[k] + options.epsilon) : 0.0;
                // The unique longest row beyond the second-longest length (lengths are valid-token
                // counts, rows of the group that take part; in the column form the cut is that count
                // taken as a column, as verl does).
                index_t tail_row = -1, cut = 0;
                if (options.handle_zero_tail && members >= 2) {
                    index_t longest = -1, ties = 0, second = -1;
                    for (index_t j = 0; j < n; ++j) {
                        const index_t l = len[j];
                        if (compact && l == 0) continue;
                        if (l > longest) second = longest, longest = l, ties = 1, tail_row = j;
                        else if (l == longest) ++ties;
                        else second = std::max(second, l);
                    }
                    if (ties == 1) {
                        cut = second;
                        kind[std::size_t(grp)] |= 4;
                    } else {
                        tail_row = -1;
                    }
                }
                // Pass 2: A = (G - B) m on every slot of a row, scattered back to the columns of the
                // valid tokens in the compacted form (0 elsewhere).
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    reward_to_go(r, m, i, T, g);
                    index_t k = 0;
                    for (index_t t = 0; t < T; ++t) {
                        const double mw = mask_weight(m(i, t));
                        if (compact && mw == 0) {
                            a(i, t) = AT(0);
                            continue;
                        }
                        const index_t slot = compact ? k++ : t;
                        const double bk = j == tail_row && slot >= cut ? 0.0 : b[slot];
                        a(i, t) = static_cast<AT>((g[t] - bk) * mw);
                    }
                }
            });
            for (auto k : kind) {
                res.empty_groups += (k & 3) == 1;
                res.singleton_groups += (k & 3) == 2;
                res.zero_tail_groups += (k & 4) != 0;
            }
            return res;
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::floating_input<2>(sum_pi_squared, {fn, "sum_pi_squared"}),
        optional_input(rollout_is_weights, {fn, "rollout_is_weights"}),
        posttrain::detail::floating_output<2>(std::forward<Advantages>(advantages), {fn, "advantages"}),
        optional_output(std::forward<Returns>(returns), {fn, "returns"}));
}

}  // namespace detail

// Optimal token baseline over [N, T] token tensors, rows aligned by column t (verl
// compute_optimal_token_baseline_advantage). sum_pi_squared comes from sum_pi_squared_from_logits (or
// the trainer); rollout_is_weights and returns may be posttrain::none. A group of one row gets
// baseline 0 (advantage = reward-to-go).
template <class Policy, class TokenRewards, class Mask, class OldLogProbs, class SumPiSquared, class IsWeights, class Groups,
          class Advantages, class Returns>
token_baseline_result optimal_token_baseline(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask,
                                             const OldLogProbs& old_log_probs, const SumPiSquared& sum_pi_squared,
                                             const IsWeights& rollout_is_weights, const Groups& groups, Advantages&& advantages,
                                             Returns&& returns, const token_baseline_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::optimal_token_baseline: host policy expected");
    return detail::token_baseline_entry(policy, token_rewards, mask, old_log_probs, sum_pi_squared, rollout_is_weights, groups,
                                        std::forward<Advantages>(advantages), std::forward<Returns>(returns), options, false,
                                        "posttrain::advantage::optimal_token_baseline");
}

// The multi-turn form (verl compute_multi_turn_optimal_token_baseline_advantage, estimator
// "tir_optimal_token_baseline"): each row is compacted to its valid tokens (mask != 0), so that the
// k-th generated token of every row shares a baseline whatever tool observations came before it;
// rows without a valid token leave their group. Use token_baseline_options::verl_multi_turn() for
// verl's numbers.
template <class Policy, class TokenRewards, class Mask, class OldLogProbs, class SumPiSquared, class IsWeights, class Groups,
          class Advantages, class Returns>
token_baseline_result multi_turn_optimal_token_baseline(const Policy& policy, const TokenRewards& token_rewards, const Mask& mask,
                                                        const OldLogProbs& old_log_probs, const SumPiSquared& sum_pi_squared,
                                                        const IsWeights& rollout_is_weights, const Groups& groups,
                                                        Advantages&& advantages, Returns&& returns,
                                                        const token_baseline_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::multi_turn_optimal_token_baseline: host policy expected");
    return detail::token_baseline_entry(policy, token_rewards, mask, old_log_probs, sum_pi_squared, rollout_is_weights, groups,
                                        std::forward<Advantages>(advantages), std::forward<Returns>(returns), options, true,
                                        "posttrain::advantage::multi_turn_optimal_token_baseline");
}

}  // namespace posttrain::advantage
