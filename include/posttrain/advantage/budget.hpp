#pragma once
// Length- and budget-aware shaping on top of the outcome estimators:
//   hbpo_rewards / hbpo_advantages   HBPO: budget subgroups, a cosine budget-aware reward, and the
//                                    GRPO advantage plus an inter-subgroup term
//   gcpo_rewards                     GCPO (GeometryZero): group contrastive masking of an auxiliary-
//                                    construction reward, plus a length reward for correct answers
// See docs/algorithms/hbpo.md and docs/algorithms/gcpo.md.

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>
#include <vector>

#include "grpo.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

struct hbpo_reward_options {
    double amplitude = 4.0;          // A: f(L) = A cos(pi L / (2 L_max))
    double max_length = 4096;        // L_max: a correct answer longer than this earns incorrect_reward
    double deviation_scale = 4096;   // |b - L| / deviation_scale is the budget-deviation penalty
    double pi = std::numbers::pi;    // the official code uses 3.1416
    double incorrect_reward = 0.0;
    int round_unbudgeted = -1;       // decimals to round f(L) to when a row has no budget (-1: no rounding)

    // ZJU-REAL/HBPO rllm/rewards/math_reward.py: PI_APPROX = 3.1416, np.round(f(L), 2) without a budget.
    static constexpr hbpo_reward_options official() {
        hbpo_reward_options o;
        o.pi = 3.1416;
        o.round_unbudgeted = 2;
        return o;
    }
};

namespace detail {

// A f(x) = A cos(pi x / (2 L_max)): 4 at length 0, 0 at L_max (the official 4 cos(pi x / 8192)).
inline double hbpo_ceiling(double x, const hbpo_reward_options& o) {
    return o.amplitude * std::cos(o.pi * x / (2.0 * o.max_length));
}

inline void check_hbpo_reward_options(const hbpo_reward_options& o, const char* fn) {
    require(o.max_length > 0 && numeric::is_finite(o.max_length), {fn, "options.max_length"},
            "must be > 0 and finite, found " + std::to_string(o.max_length));
    require(o.deviation_scale > 0 && numeric::is_finite(o.deviation_scale), {fn, "options.deviation_scale"},
            "must be > 0 and finite, found " + std::to_string(o.deviation_scale));
    require(numeric::is_finite(o.amplitude) && numeric::is_finite(o.pi) && numeric::is_finite(o.incorrect_reward),
            {fn, "options"}, "amplitude, pi and incorrect_reward must be finite");
    require(o.round_unbudgeted >= -1 && o.round_unbudgeted <= 15, {fn, "options.round_unbudgeted"},
            "must be in [-1, 15], found " + std::to_string(o.round_unbudgeted));
}

}  // namespace detail

// rewards[i] for a response of lengths[i] tokens answering under budgets[i] (<= 0: no budget hint):
//   incorrect, or correct with L > L_max:  incorrect_reward
//   correct, no budget:                    f(L)
//   correct, budget b:                     min(f(L) - |b - L| / deviation_scale, f(b))
template <class Policy, class Correct, class Lengths, class Budgets, class Rewards>
void hbpo_rewards(const Policy& policy, const Correct& correct, const Lengths& lengths, const Budgets& budgets, Rewards&& rewards,
                  const hbpo_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::hbpo_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::hbpo_rewards";
    detail::check_hbpo_reward_options(options, fn);
    std::visit(
        [&](auto c, auto len, auto b, auto r) {
            const index_t n = c.extent(0);
            detail::check_extent(len.extent(0), n, {fn, "lengths"}, "length (one per response)");
            detail::check_extent(b.extent(0), n, {fn, "budgets"}, "length (one per response)");
            detail::check_extent(r.extent(0), n, {fn, "rewards"}, "length (one per response)");
            detail::check_same_or_disjoint(r, c, {fn, "rewards"}, "correct");
            detail::check_same_or_disjoint(r, len, {fn, "rewards"}, "lengths");
            detail::check_same_or_disjoint(r, b, {fn, "rewards"}, "budgets");
            detail::check_finite(len, {fn, "lengths"});
            detail::check_finite(b, {fn, "budgets"});
            for (index_t i = 0; i < n; ++i)
                detail::require(!(len(i) < 0), {fn, "lengths"}, "must be >= 0, found " + std::to_string(double(len(i))) +
                                                                      " at index " + detail::str(i));
            using R = typename decltype(r)::value_type;
            detail::for_each_row(policy, n, 1, [&](index_t i) {
                const double L = len(i), budget = b(i);
                double v = options.incorrect_reward;
                if (detail::mask_weight(c(i)) != 0 && L <= options.max_length) {
                    v = detail::hbpo_ceiling(L, options);
                    if (budget > 0) {
                        const double dev = v - std::fabs(budget - L) / options.deviation_scale;
                        const double cap = detail::hbpo_ceiling(budget, options);
                        v = dev < cap ? dev : cap;
                    } else if (options.round_unbudgeted >= 0) {
                        const double scale = std::pow(10.0, options.round_unbudgeted);
                        v = std::nearbyint(v * scale) / scale;  // numpy.round: rint(x * 10^d) / 10^d
                    }
                }
                r(i) = static_cast<R>(v);
            });
        },
        posttrain::detail::mask_input<1>(correct, {fn, "correct"}), posttrain::detail::floating_input<1>(lengths, {fn, "lengths"}),
        posttrain::detail::floating_input<1>(budgets, {fn, "budgets"}), posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}));
}

// What the inter-subgroup term compares a budget subgroup's mean reward with.
enum class hbpo_inter {
    budget_ceiling,  // f(b): the best reward reachable at that budget (the official code)
    group_mean,      // the mean reward of the whole group (the decomposition r - mu = (r - mu_k) + (mu_k - mu))
};

struct hbpo_advantage_options {
    grpo_options intra = grpo_options::verl();  // the estimator over the whole group
    double inter_weight = 1.0;                  // weight of the inter-subgroup term
    hbpo_inter inter = hbpo_inter::budget_ceiling;
    hbpo_reward_options reward = {};            // f(b) for hbpo_inter::budget_ceiling

    // ZJU-REAL/HBPO core_algos.compute_grpo_outcome_advantage: the inter term is added twice (once in
    // the budget branch and once after it), so its weight is 2.
    static constexpr hbpo_advantage_options official() {
        hbpo_advantage_options o;
        o.inter_weight = 2.0;
        o.reward = hbpo_reward_options::official();
        return o;
    }
};

// advantages = grpo(rewards; options.intra) + inter_weight * (mean of the row's budget subgroup - baseline),
// where the budget subgroup is the rows of the same group with an equal budget. Groups of one row get
// no inter term. Returns grpo's group counts.
template <class Policy, class Rewards, class Budgets, class Groups, class Advantages>
group_stats_result hbpo_advantages(const Policy& policy, const Rewards& rewards, const Budgets& budgets, const Groups& groups,
                                   Advantages&& advantages, const hbpo_advantage_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::hbpo_advantages: host policy expected");
    constexpr const char* fn = "posttrain::advantage::hbpo_advantages";
    detail::check_hbpo_reward_options(options.reward, fn);
    detail::require(numeric::is_finite(options.inter_weight), {fn, "options.inter_weight"}, "must be finite");
    return std::visit(
        [&](auto r, auto b, auto a) {
            const index_t n = r.extent(0);
            detail::check_extent(b.extent(0), n, {fn, "budgets"}, "length (one per reward)");
            detail::check_finite(b, {fn, "budgets"});
            detail::check_no_alias(a, b, {fn, "advantages"}, "budgets");
            const group_stats_result res = detail::grpo_entry(policy, r, groups, a, options.intra, fn);
            const auto layout = posttrain::detail::make_layout(groups, n, {fn, "groups"});
            using A = typename decltype(a)::value_type;
            // Under nonfinite::ignore a NaN reward is missing, as grpo treats it: it enters no mean and its
            // row's advantage (grpo's 0) gets no inter term, so one NaN never poisons its group.
            const bool skip = options.intra.nonfinite_rewards == nonfinite::ignore;
            auto ignored = [&](index_t i) { return skip && double(r(i)) != double(r(i)); };
            detail::for_each_group(policy, layout, n, [&](index_t, auto rows, index_t m) {
                if (m <= 1) return;
                std::vector<std::pair<double, index_t>> order(static_cast<std::size_t>(m));
                for (index_t j = 0; j < m; ++j) order[std::size_t(j)] = {double(b(rows(j))), j};
                std::sort(order.begin(), order.end());  // by budget, then by position in the group
                std::vector<double> vals;
                double group_mean = 0;
                if (options.inter == hbpo_inter::group_mean) {
                    vals.clear();
                    for (index_t j = 0; j < m; ++j)
                        if (!ignored(rows(j))) vals.push_back(double(r(rows(j))));
                    group_mean = posttrain::detail::fixed_order_sum(vals.data(), index_t(vals.size())) / double(vals.size());
                }
                for (std::size_t k = 0; k < order.size();) {
                    std::size_t e = k;
                    while (e < order.size() && order[e].first == order[k].first) ++e;
                    vals.clear();
                    for (std::size_t q = k; q < e; ++q)
                        if (!ignored(rows(order[q].second))) vals.push_back(double(r(rows(order[q].second))));
                    if (!vals.empty()) {  // else every row of the subgroup is ignored: nothing to add
                        const double sub = posttrain::detail::fixed_order_sum(vals.data(), index_t(vals.size())) / double(vals.size());
                        const double base = options.inter == hbpo_inter::group_mean ? group_mean
                                                                                     : detail::hbpo_ceiling(order[k].first, options.reward);
                        const double add = options.inter_weight * (sub - base);
                        for (std::size_t q = k; q < e; ++q) {
                            const index_t i = rows(order[q].second);
                            if (!ignored(i)) a(i) = static_cast<A>(double(a(i)) + add);
                        }
                    }
                    k = e;
                }
            });
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_input<1>(budgets, {fn, "budgets"}),
        posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

struct gcpo_options {
    double aux_reward = 1.0;       // r_aux: magnitude of the auxiliary-construction reward
    double margin = 0.0;           // xi: accuracy gap below which the auxiliary reward is masked
    double length_weight = 1.0;    // w_len (posttrain's choice; not published)
    double target_length = 2048;   // L_target: length earning the full length reward (posttrain's choice)
};

struct [[nodiscard]] gcpo_result {
    index_t positive_groups = 0;  // auxiliary construction helped: +r_aux to its users
    index_t negative_groups = 0;  // it hurt: -r_aux to its users
    index_t masked_groups = 0;    // no clear difference, or one side empty: no auxiliary reward
};

// out[i] = rewards[i] + aux_i + len_i, where, in each group, U = rows with uses_aux, U' = the others,
// acc = mean of `correct` over each part, and
//   aux_i = +r_aux if i in U and acc_U > acc_U' + xi;  -r_aux if i in U and acc_U < acc_U' - xi;  else 0
//   len_i = w_len * min(L_i / L_target, 1) if correct_i, else 0
// rewards is the caller's accuracy + format reward; the result goes to grpo.
template <class Policy, class Rewards, class Correct, class UsesAux, class Lengths, class Groups, class Out>
gcpo_result gcpo_rewards(const Policy& policy, const Rewards& rewards, const Correct& correct, const UsesAux& uses_aux,
                         const Lengths& lengths, const Groups& groups, Out&& out, const gcpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::gcpo_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::gcpo_rewards";
    detail::require(options.margin >= 0 && numeric::is_finite(options.margin), {fn, "options.margin"},
                    "must be >= 0 and finite, found " + std::to_string(options.margin));
    detail::require(options.target_length > 0 && numeric::is_finite(options.target_length), {fn, "options.target_length"},
                    "must be > 0 and finite, found " + std::to_string(options.target_length));
    detail::require(numeric::is_finite(options.aux_reward) && numeric::is_finite(options.length_weight), {fn, "options"},
                    "aux_reward and length_weight must be finite");
    return std::visit(
        [&](auto r, auto c, auto u, auto len, auto o) {
            const index_t n = r.extent(0);
            detail::check_extent(c.extent(0), n, {fn, "correct"}, "length (one per reward)");
            detail::check_extent(u.extent(0), n, {fn, "uses_aux"}, "length (one per reward)");
            detail::check_extent(len.extent(0), n, {fn, "lengths"}, "length (one per reward)");
            detail::check_extent(o.extent(0), n, {fn, "out"}, "length (one per reward)");
            detail::check_no_alias(o, len, {fn, "out"}, "lengths");
            detail::check_finite(r, {fn, "rewards"});
            detail::check_finite(len, {fn, "lengths"});
            for (index_t i = 0; i < n; ++i)
                detail::require(!(len(i) < 0), {fn, "lengths"}, "must be >= 0, found " + std::to_string(double(len(i))) +
                                                                      " at index " + detail::str(i));
            const auto layout = posttrain::detail::make_layout(groups, n, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, o, fn, "out");
            std::vector<signed char> verdict(static_cast<std::size_t>(layout.num_groups()), 0);
            using O = typename decltype(o)::value_type;
            detail::for_each_group(policy, layout, n, [&](index_t g, auto rows, index_t m) {
                index_t nu = 0, nv = 0;
                double cu = 0, cv = 0;
                for (index_t j = 0; j < m; ++j) {
                    const bool is_u = detail::mask_weight(u(rows(j))) != 0;
                    const double ok = detail::mask_weight(c(rows(j))) != 0 ? 1.0 : 0.0;
                    (is_u ? nu : nv) += 1;
                    (is_u ? cu : cv) += ok;
                }
                int sign = 0;
                if (nu > 0 && nv > 0) {
                    const double acc_u = cu / double(nu), acc_v = cv / double(nv);
                    sign = acc_u > acc_v + options.margin ? 1 : (acc_u < acc_v - options.margin ? -1 : 0);
                }
                verdict[std::size_t(g)] = static_cast<signed char>(nu > 0 && nv > 0 ? sign : 2);
                for (index_t j = 0; j < m; ++j) {
                    const index_t i = rows(j);
                    const bool ok = detail::mask_weight(c(i)) != 0;
                    double v = double(r(i));
                    if (detail::mask_weight(u(i)) != 0) v += sign * options.aux_reward;
                    if (ok) {
                        const double frac = double(len(i)) / options.target_length;
                        v += options.length_weight * (frac < 1 ? frac : 1.0);
                    }
                    o(i) = static_cast<O>(v);
                }
            });
            gcpo_result res;
            for (const signed char v : verdict) {
                res.positive_groups += v == 1;
                res.negative_groups += v == -1;
                res.masked_groups += v == 0 || v == 2;
            }
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::mask_input<1>(correct, {fn, "correct"}),
        posttrain::detail::mask_input<1>(uses_aux, {fn, "uses_aux"}), posttrain::detail::floating_input<1>(lengths, {fn, "lengths"}),
        posttrain::detail::floating_output<1>(out, {fn, "out"}));
}

}  // namespace posttrain::advantage
