#pragma once
// Token Hidden Reward (THR, arXiv 2510.03669) and the reweighting it guides, from the old policy's
// final hidden states h and next-token probabilities restricted to the group's vocabulary V*:
//
//   g_{i,k} = e_{y_{i,k}} - pi_old(. | x, y_{i,<k})  restricted to V* (not renormalised)
//   M+      = sum_{i in P} sum_k g_{i,k} h_{i,k}^T                  P = the group's correct responses
//   s_{j,t} = g_{j,t}^T M+ h_{j,t} = sum_{i in P} sum_k <g_{i,k}, g_{j,t}> <h_{i,k}, h_{j,t}>
//   THR_{j,t} = A_j s_{j,t}
//   tau_g   = beta * min_{i in P} mean_k s_{i,k}                      (the NTHR threshold)
//
// token_hidden_reward computes s (and THR, tau); thr_reweight turns them into token advantages for
// policy_loss::compute:
//   thr       A'_{j,t} = A_j (1 + p sign(THR_{j,t})) if |s_{j,t}| > tau_g, else A_j
//   thr_only  ... else 0
//   nthr      incorrect rows with s_{j,t} > tau_g: A'_{j,t} = eta A_j, eta = 2 |0.5 - |P|/n|
// See docs/algorithms/thr.md.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/tokens.hpp"

namespace posttrain::policy_loss {

struct thr_options {
    double beta = 1.0;  // tau = beta * min over correct responses of their mean score (NTHR: beta = 1)
};

struct [[nodiscard]] thr_result {
    index_t groups = 0;
    index_t skipped_groups = 0;  // all-correct, all-incorrect or empty: scores 0, threshold +inf
};

namespace detail {

using posttrain::advantage::detail::check_extent;
using posttrain::advantage::detail::check_same_shape;
using posttrain::advantage::detail::mask_weight;
using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

template <class T>
void check_finite_tokens3(tensor_view<const T, 3> x, auto valid, where w) {
    for (index_t i = 0; i < x.extent(0); ++i)
        for (index_t t = 0; t < x.extent(1); ++t) {
            if (!valid(i, t)) continue;
            for (index_t k = 0; k < x.extent(2); ++k)
                if (!numeric::is_finite(double(x(i, t, k))))
                    posttrain::detail::raise_invalid_argument(w.function, w.argument,
                                                              "non-finite value at [" + str(i) + ", " + str(t) + ", " + str(k) +
                                                                  "] (a valid token)");
        }
}

}  // namespace detail

// scores[b, t] = s (above) for every valid token (mask != 0), 0 elsewhere; thr[b, t] = advantages[b] *
// scores[b, t] (thr may be posttrain::none); threshold[g] = tau_g (+inf for a skipped group).
// hidden [B, T, d]; probs [B, T, K]: pi_old over the group's vocabulary V*, one column per token id of
// V* (the columns may differ between groups; pad with probability 0); targets [B, T]: the column of
// the sampled token; correct [B]: nonzero for the responses of P.
template <class Policy, class Hidden, class Probs, class Targets, class Mask, class Advantages, class Correct, class Groups,
          class Scores, class Thr, class Threshold>
thr_result token_hidden_reward(const Policy& policy, const Hidden& hidden, const Probs& probs, const Targets& targets, const Mask& mask,
                               const Advantages& advantages, const Correct& correct, const Groups& groups, Scores&& scores, Thr&& thr,
                               Threshold&& threshold, const thr_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::token_hidden_reward: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::token_hidden_reward";
    detail::require(numeric::is_finite(options.beta), {fn, "options.beta"}, "must be finite");
    return std::visit(
        [&](auto h, auto p, auto y, auto m, auto a, auto c, auto s, auto tau) {
            const index_t B = m.extent(0), T = m.extent(1), d = h.extent(2), K = p.extent(2);
            detail::require(h.extent(0) == B && h.extent(1) == T, {fn, "hidden"},
                            "expected [B, T, d] with B, T of mask (" + detail::str(B) + ", " + detail::str(T) + ")");
            detail::require(p.extent(0) == B && p.extent(1) == T, {fn, "probs"},
                            "expected [B, T, K] with B, T of mask (" + detail::str(B) + ", " + detail::str(T) + ")");
            detail::check_same_shape(y, m, {fn, "targets"}, "mask");
            detail::check_same_shape(s, m, {fn, "scores"}, "mask");
            detail::check_extent(a.extent(0), B, {fn, "advantages"}, "length (one per response)");
            detail::check_extent(c.extent(0), B, {fn, "correct"}, "length (one per response)");
            // Outputs are written while the inputs (and, for thr, the scores) are still read.
            using posttrain::advantage::detail::check_no_alias;
            check_no_alias(s, h, {fn, "scores"}, "hidden");
            check_no_alias(s, p, {fn, "scores"}, "probs");
            check_no_alias(s, y, {fn, "scores"}, "targets");
            check_no_alias(s, m, {fn, "scores"}, "mask");
            check_no_alias(s, a, {fn, "scores"}, "advantages");
            check_no_alias(s, c, {fn, "scores"}, "correct");
            check_no_alias(tau, h, {fn, "threshold"}, "hidden");
            check_no_alias(tau, p, {fn, "threshold"}, "probs");
            check_no_alias(tau, a, {fn, "threshold"}, "advantages");
            check_no_alias(tau, c, {fn, "threshold"}, "correct");
            check_no_alias(tau, s, {fn, "threshold"}, "scores");
            auto valid = [&](index_t i, index_t t) { return detail::mask_weight(m(i, t)) != 0; };
            detail::check_finite_tokens3(h, valid, {fn, "hidden"});
            detail::check_finite_tokens3(p, valid, {fn, "probs"});
            posttrain::advantage::detail::check_finite(a, {fn, "advantages"});
            for (index_t i = 0; i < B; ++i)
                for (index_t t = 0; t < T; ++t) {
                    if (!valid(i, t)) continue;
                    const auto v = y(i, t);
                    bool neg = false;
                    if constexpr (std::is_signed_v<std::remove_cv_t<typename decltype(y)::value_type>>) neg = v < 0;
                    if (neg || static_cast<std::uint64_t>(v) >= static_cast<std::uint64_t>(K))
                        posttrain::detail::raise_invalid_argument(fn, "targets",
                                                                  "column " + std::to_string(v) + " at [" + detail::str(i) + ", " +
                                                                      detail::str(t) + "] is outside probs' " + detail::str(K) + " columns");
                }
            const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, s, fn, "scores");
            posttrain::detail::check_apart_from_layout(groups, tau, fn, "threshold");
            // thr is checked with the other outputs, before scores is written: shaped like the mask,
            // apart from every input and output.
            if constexpr (!std::is_same_v<std::remove_cvref_t<Thr>, none_t>)
                std::visit(
                    [&](auto o) {
                        posttrain::detail::check_apart_from_layout(groups, o, fn, "thr");
                        detail::check_same_shape(o, m, {fn, "thr"}, "mask");
                        check_no_alias(o, h, {fn, "thr"}, "hidden");
                        check_no_alias(o, p, {fn, "thr"}, "probs");
                        check_no_alias(o, y, {fn, "thr"}, "targets");
                        check_no_alias(o, m, {fn, "thr"}, "mask");
                        check_no_alias(o, a, {fn, "thr"}, "advantages");
                        check_no_alias(o, c, {fn, "thr"}, "correct");
                        check_no_alias(o, s, {fn, "thr"}, "scores");
                        check_no_alias(o, tau, {fn, "thr"}, "threshold");
                    },
                    posttrain::detail::floating_output<2>(thr, {fn, "thr"}));
            detail::check_extent(tau.extent(0), layout.num_groups(), {fn, "threshold"}, "length (one per group)");
            using S = typename decltype(s)::value_type;
            using Tau = typename decltype(tau)::value_type;
            std::vector<unsigned char> skipped(static_cast<std::size_t>(layout.num_groups()), 0);
            const index_t cost = posttrain::detail::capped_work(double(B) * double(T) * double(K + 1) * double(d + 1));
            posttrain::advantage::detail::for_each_group(policy, layout, cost, [&](index_t g, auto rows, index_t n) {
                index_t np = 0;
                for (index_t j = 0; j < n; ++j) np += detail::mask_weight(c(rows(j))) != 0;
                if (np == 0 || np == n) {
                    skipped[std::size_t(g)] = 1;
                    for (index_t j = 0; j < n; ++j)
                        for (index_t t = 0; t < T; ++t) s(rows(j), t) = S(0);
                    tau(g) = static_cast<Tau>(std::numeric_limits<double>::infinity());
                    return;
                }
                // M+ [K x d], accumulated in row, token order: M += e_y h^T - p h^T.
                std::vector<double> M(static_cast<std::size_t>(K * d), 0.0), Mh(static_cast<std::size_t>(K));
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    if (detail::mask_weight(c(i)) == 0) continue;
                    for (index_t t = 0; t < T; ++t) {
                        if (!valid(i, t)) continue;
                        const index_t yt = index_t(y(i, t));
                        for (index_t v = 0; v < K; ++v) {
                            const double gv = (v == yt ? 1.0 : 0.0) - double(p(i, t, v));
                            if (gv == 0) continue;
                            double* row = M.data() + v * d;
                            for (index_t k = 0; k < d; ++k) row[k] += gv * double(h(i, t, k));
                        }
                    }
                }
                double tau_g = std::numeric_limits<double>::infinity();
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    index_t count = 0;
                    double sum = 0;
                    for (index_t t = 0; t < T; ++t) {
                        if (!valid(i, t)) {
                            s(i, t) = S(0);
                            continue;
                        }
                        // s = g^T (M h) = (M h)_y - sum_v p_v (M h)_v
                        for (index_t v = 0; v < K; ++v) {
                            const double* row = M.data() + v * d;
                            Mh[std::size_t(v)] = posttrain::detail::fixed_order_sum(d, [&](index_t k) { return row[k] * double(h(i, t, k)); });
                        }
                        const double expect = posttrain::detail::fixed_order_sum(K, [&](index_t v) { return double(p(i, t, v)) * Mh[std::size_t(v)]; });
                        const double score = Mh[std::size_t(index_t(y(i, t)))] - expect;
                        s(i, t) = static_cast<S>(score);
                        sum += score;
                        ++count;
                    }
                    if (detail::mask_weight(c(i)) != 0 && count > 0) {
                        const double mean = sum / double(count);
                        tau_g = mean < tau_g ? mean : tau_g;
                    }
                }
                tau(g) = static_cast<Tau>(options.beta * tau_g);
            });
            if constexpr (!std::is_same_v<std::remove_cvref_t<Thr>, none_t>) {
                auto o = std::visit([](auto v) { return v; }, posttrain::detail::floating_output<2>(thr, {fn, "thr"}));
                using O = typename decltype(o)::value_type;
                posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
                    for (index_t t = 0; t < T; ++t) o(i, t) = static_cast<O>(double(a(i)) * double(s(i, t)));
                });
            }
            thr_result res;
            res.groups = layout.num_groups();
            for (const unsigned char k : skipped) res.skipped_groups += k;
            return res;
        },
        posttrain::detail::floating_input<3>(hidden, {fn, "hidden"}), posttrain::detail::floating_input<3>(probs, {fn, "probs"}),
        posttrain::detail::id_input<2>(targets, {fn, "targets"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_input<1>(advantages, {fn, "advantages"}), posttrain::detail::mask_input<1>(correct, {fn, "correct"}),
        posttrain::detail::floating_output<2>(scores, {fn, "scores"}), posttrain::detail::floating_output<1>(threshold, {fn, "threshold"}));
}

enum class thr_mode {
    thr,       // dominant tokens: A (1 + p sign(THR)); the others keep A
    thr_only,  // dominant tokens: A (1 + p sign(THR)); the others get 0 (low-|THR| tokens masked)
    nthr,      // NTHR: incorrect-response tokens with s > tau get eta A, eta = 2 |0.5 - |P|/n|
};

struct thr_reweight_options {
    double p = 0.0;                // > 0 favours exploitation (greedy accuracy), < 0 exploration (pass@k); tuned per model
    thr_mode mode = thr_mode::thr;
};

struct [[nodiscard]] thr_reweight_result {
    index_t amplified_tokens = 0;  // weight above 1 (thr modes) or eta applied (nthr)
    index_t damped_tokens = 0;     // weight below 1 (thr modes)
    index_t masked_tokens = 0;     // thr_only: valid tokens set to 0
};

// out[b, t] = the reweighted token advantage (0 on masked tokens), from token_hidden_reward's scores
// and thresholds and the response advantages it was given. Goes to policy_loss::compute as its
// [B, T] advantages.
template <class Policy, class Advantages, class Scores, class Mask, class Correct, class Groups, class Threshold, class Out>
thr_reweight_result thr_reweight(const Policy& policy, const Advantages& advantages, const Scores& scores, const Mask& mask,
                                 const Correct& correct, const Groups& groups, const Threshold& threshold, Out&& out,
                                 const thr_reweight_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::thr_reweight: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::thr_reweight";
    detail::require(numeric::is_finite(options.p), {fn, "options.p"}, "must be finite");
    return std::visit(
        [&](auto a, auto s, auto m, auto c, auto tau, auto o) {
            const index_t B = m.extent(0), T = m.extent(1);
            detail::check_same_shape(s, m, {fn, "scores"}, "mask");
            detail::check_same_shape(o, m, {fn, "out"}, "mask");
            detail::check_extent(a.extent(0), B, {fn, "advantages"}, "length (one per response)");
            detail::check_extent(c.extent(0), B, {fn, "correct"}, "length (one per response)");
            // Rows are written while other rows' inputs are still read.
            using posttrain::advantage::detail::check_no_alias;
            check_no_alias(o, s, {fn, "out"}, "scores");
            check_no_alias(o, a, {fn, "out"}, "advantages");
            check_no_alias(o, m, {fn, "out"}, "mask");
            check_no_alias(o, c, {fn, "out"}, "correct");
            check_no_alias(o, tau, {fn, "out"}, "threshold");
            posttrain::advantage::detail::check_finite(a, {fn, "advantages"});
            // A NaN score fails every threshold test silently (a NaN token would keep or lose its advantage
            // by accident): the valid tokens' scores must be finite.
            for (index_t i = 0; i < B; ++i)
                for (index_t t = 0; t < T; ++t)
                    if (detail::mask_weight(m(i, t)) != 0 && !numeric::is_finite(double(s(i, t))))
                        posttrain::detail::raise_invalid_argument(fn, "scores", "non-finite value at [" + detail::str(i) + ", " +
                                                                                    detail::str(t) + "] (a valid token)");
            const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, o, fn, "out");
            detail::check_extent(tau.extent(0), layout.num_groups(), {fn, "threshold"}, "length (one per group)");
            for (index_t g = 0; g < tau.extent(0); ++g)
                detail::require(tau(g) == tau(g), {fn, "threshold"}, "NaN at group " + detail::str(g));
            using O = typename decltype(o)::value_type;
            std::vector<thr_reweight_result> per(static_cast<std::size_t>(layout.num_groups()));
            posttrain::advantage::detail::for_each_group(policy, layout, B * T, [&](index_t g, auto rows, index_t n) {
                index_t np = 0;
                for (index_t j = 0; j < n; ++j) np += detail::mask_weight(c(rows(j))) != 0;
                const double eta = n > 0 ? 2.0 * std::fabs(0.5 - double(np) / double(n)) : 1.0;
                const double tg = tau(g);
                auto& r = per[std::size_t(g)];
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    const double ai = a(i);
                    const bool is_correct = detail::mask_weight(c(i)) != 0;
                    for (index_t t = 0; t < T; ++t) {
                        if (detail::mask_weight(m(i, t)) == 0) {
                            o(i, t) = O(0);
                            continue;
                        }
                        const double st = s(i, t);
                        double w = 1.0;
                        if (options.mode == thr_mode::nthr) {
                            if (!is_correct && st > tg) {
                                w = eta;
                                ++r.amplified_tokens;
                            }
                        } else if (std::fabs(st) > tg) {
                            const double thr_value = ai * st;
                            const double sign = thr_value > 0 ? 1.0 : (thr_value < 0 ? -1.0 : 0.0);
                            w = 1.0 + options.p * sign;
                            r.amplified_tokens += w > 1;
                            r.damped_tokens += w < 1;
                        } else if (options.mode == thr_mode::thr_only) {
                            w = 0.0;
                            ++r.masked_tokens;
                        }
                        o(i, t) = static_cast<O>(ai * w);
                    }
                }
            });
            thr_reweight_result res;
            for (const auto& r : per) {
                res.amplified_tokens += r.amplified_tokens;
                res.damped_tokens += r.damped_tokens;
                res.masked_tokens += r.masked_tokens;
            }
            return res;
        },
        posttrain::detail::floating_input<1>(advantages, {fn, "advantages"}), posttrain::detail::floating_input<2>(scores, {fn, "scores"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::mask_input<1>(correct, {fn, "correct"}),
        posttrain::detail::floating_input<1>(threshold, {fn, "threshold"}), posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

}  // namespace posttrain::policy_loss
