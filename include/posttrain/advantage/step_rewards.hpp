#pragma once
// Step- and action-wise rewards combined with group-relative advantages:
//   step_grpo            Step-GRPO (R1-Router): step rewards normalised across the group at the same step index
//   hrpo_advantages      HRPO (MasHost): GRPO outcome advantage + lambda * (normalised) action-wise reward
//   thought_spans        TP-GRPO: contiguous same-label steps merged into thoughts
//   tp_grpo_advantages   TP-GRPO: outcome advantage + capability-adaptive thought-level process reward
//   steps_to_tokens      broadcast of any [N, S] step quantity to the tokens of each step
// Normalisation reuses grpo's kernel and options. See docs/algorithms/step_grpo.md and tp_grpo.md.

#include <cstdint>
#include <type_traits>
#include <vector>

#include "grpo.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

struct step_grpo_options {
    grpo_options normalization = {};  // conventions of the per-step normalisation (scale::batch is refused)
    bool returns_to_go = false;       // normalise G_{i,s} = sum_{s' >= s} gamma^(s'-s) r_{i,s'} instead of r_{i,s}
    double gamma = 1.0;
};

struct [[nodiscard]] step_grpo_result {
    index_t groups = 0;
    index_t steps = 0;                 // S
    index_t normalized_columns = 0;    // (group, step) pairs with at least one row
    index_t singleton_columns = 0;     // ... with exactly one row
};

namespace detail {

template <class M>
bool step_valid(const tensor_view<const M, 2>& m, index_t i, index_t s) {
    return mask_weight(m(i, s)) != 0;
}

// The per-(group, step) normalisation shared by step_grpo and hrpo_advantages: for every group and
// every step index, the rows of the group where the step exists are normalised with grpo's kernel.
template <class Policy, class R, class M, class Layout, class Out>
step_grpo_result step_normalize(const Policy& policy, tensor_view<const R, 2> r, tensor_view<const M, 2> m, const Layout& layout,
                                Out&& write, const step_grpo_options& o, const char* fn) {
    require(o.normalization.std_scale != scale::batch, {fn, "options.normalization.std_scale"},
            "scale::batch is not defined per step; use scale::group or scale::none");
    require(o.normalization.stats == statistics::float64, {fn, "options.normalization.stats"}, "only statistics::float64");
    require(numeric::is_finite(o.gamma), {fn, "options.gamma"}, "must be finite");
    if (o.normalization.nonfinite_rewards == nonfinite::raise) check_finite(r, {fn, "step_rewards"});
    const index_t N = r.extent(0), S = r.extent(1);
    std::vector<index_t> used(static_cast<std::size_t>(layout.num_groups()), 0), single(used.size(), 0);
    for_each_group(policy, layout, N * (S + 1), [&](index_t g, auto rows, index_t n) {
        if (n == 0) return;
        // Returns-to-go per row over its valid steps (masked steps neither add nor receive).
        std::vector<double> value(static_cast<std::size_t>(n * S), 0.0);
        for (index_t j = 0; j < n; ++j) {
            const index_t i = rows(j);
            double acc = 0;
            for (index_t s = S - 1; s >= 0; --s) {
                if (!step_valid(m, i, s)) continue;
                acc = o.returns_to_go ? double(r(i, s)) + o.gamma * acc : double(r(i, s));
                value[std::size_t(j * S + s)] = acc;
            }
        }
        std::vector<double> col, adv;
        std::vector<index_t> who;
        for (index_t s = 0; s < S; ++s) {
            col.clear();
            who.clear();
            for (index_t j = 0; j < n; ++j)
                if (step_valid(m, rows(j), s)) {
                    col.push_back(value[std::size_t(j * S + s)]);
                    who.push_back(j);
                }
            const index_t k = index_t(col.size());
            if (k == 0) continue;
            ++used[std::size_t(g)];
            single[std::size_t(g)] += k == 1;
            adv.assign(col.size(), 0.0);
            grpo_options no_check = o.normalization;
            if (no_check.nonfinite_rewards == nonfinite::raise) no_check.nonfinite_rewards = nonfinite::propagate;  // checked above
            const auto one = posttrain::detail::make_layout(uniform_groups{k}, k, {fn, "groups"});
            (void)grpo_impl(exec::seq, tensor_view<const double, 1>(col.data(), k), one, tensor_view<double, 1>(adv.data(), k),
                            no_check, fn);
            for (index_t q = 0; q < k; ++q) write(rows(who[std::size_t(q)]), s, adv[std::size_t(q)]);
        }
    });
    step_grpo_result res;
    res.groups = layout.num_groups();
    res.steps = S;
    for (std::size_t g = 0; g < used.size(); ++g) {
        res.normalized_columns += used[g];
        res.singleton_columns += single[g];
    }
    return res;
}

}  // namespace detail

// advantages[i, s] = the grpo advantage of step_rewards[i, s] (or its return-to-go) among the rows of
// i's group that have step s (step_mask != 0); 0 where step s does not exist.
template <class Policy, class StepRewards, class StepMask, class Groups, class Advantages>
step_grpo_result step_grpo(const Policy& policy, const StepRewards& step_rewards, const StepMask& step_mask, const Groups& groups,
                           Advantages&& advantages, const step_grpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::step_grpo: host policy expected");
    constexpr const char* fn = "posttrain::advantage::step_grpo";
    return std::visit(
        [&](auto r, auto m, auto a) {
            detail::check_same_shape(m, r, {fn, "step_mask"}, "step_rewards");
            detail::check_same_shape(a, r, {fn, "advantages"}, "step_rewards");
            detail::check_no_alias(a, r, {fn, "advantages"}, "step_rewards");
            detail::check_no_alias(a, m, {fn, "advantages"}, "step_mask");  // zeroed before the mask is read
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            using A = typename decltype(a)::value_type;
            detail::for_each_row(policy, r.extent(0), r.extent(1), [&](index_t i) {
                for (index_t s = 0; s < r.extent(1); ++s) a(i, s) = A(0);
            });
            return detail::step_normalize(policy, r, m, layout, [&](index_t i, index_t s, double v) { a(i, s) = static_cast<A>(v); },
                                          options, fn);
        },
        posttrain::detail::floating_input<2>(step_rewards, {fn, "step_rewards"}),
        posttrain::detail::mask_input<2>(step_mask, {fn, "step_mask"}),
        posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
}

struct hrpo_options {
    double action_weight = 1.0;          // lambda (not published)
    bool normalize_actions = true;       // normalise action rewards across the group at the same action index
    step_grpo_options normalization = {};
};

// out[i, t] = outcome_advantages[i] + lambda * r~[i, t] for valid actions (action_mask != 0), else 0;
// r~ = step_grpo(action_rewards) when normalize_actions, else the raw action reward. outcome_advantages
// is typically grpo's advantage of the final objective.
template <class Policy, class Outcome, class ActionRewards, class ActionMask, class Groups, class Out>
step_grpo_result hrpo_advantages(const Policy& policy, const Outcome& outcome_advantages, const ActionRewards& action_rewards,
                                 const ActionMask& action_mask, const Groups& groups, Out&& out, const hrpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::hrpo_advantages: host policy expected");
    constexpr const char* fn = "posttrain::advantage::hrpo_advantages";
    detail::require(numeric::is_finite(options.action_weight), {fn, "options.action_weight"}, "must be finite");
    return std::visit(
        [&](auto base, auto r, auto m, auto o) {
            const index_t N = r.extent(0), S = r.extent(1);
            detail::check_extent(base.extent(0), N, {fn, "outcome_advantages"}, "length (one per row of action_rewards)");
            detail::check_same_shape(m, r, {fn, "action_mask"}, "action_rewards");
            detail::check_same_shape(o, r, {fn, "out"}, "action_rewards");
            detail::check_no_alias(o, r, {fn, "out"}, "action_rewards");
            detail::check_no_alias(o, base, {fn, "out"}, "outcome_advantages");
            detail::check_no_alias(o, m, {fn, "out"}, "action_mask");  // zeroed before the mask is read
            detail::check_finite(base, {fn, "outcome_advantages"});
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, o, fn, "out");
            using O = typename decltype(o)::value_type;
            step_grpo_result res;
            if (options.normalize_actions) {
                detail::for_each_row(policy, N, S, [&](index_t i) {
                    for (index_t s = 0; s < S; ++s) o(i, s) = O(0);
                });
                res = detail::step_normalize(
                    policy, r, m, layout,
                    [&](index_t i, index_t s, double v) { o(i, s) = static_cast<O>(double(base(i)) + options.action_weight * v); },
                    options.normalization, fn);
            } else {
                detail::check_finite(r, {fn, "action_rewards"});
                detail::for_each_row(policy, N, S, [&](index_t i) {
                    for (index_t s = 0; s < S; ++s)
                        o(i, s) = detail::step_valid(m, i, s) ? static_cast<O>(double(base(i)) + options.action_weight * double(r(i, s)))
                                                              : O(0);
                });
                res.groups = layout.num_groups();
                res.steps = S;
            }
            return res;
        },
        posttrain::detail::floating_input<1>(outcome_advantages, {fn, "outcome_advantages"}),
        posttrain::detail::floating_input<2>(action_rewards, {fn, "action_rewards"}),
        posttrain::detail::mask_input<2>(action_mask, {fn, "action_mask"}), posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

// out[i, t] = step_values[i, token_steps[i, t]] where token_steps[i, t] >= 0 (the step that token t
// belongs to), else 0. A step index >= S is an invalid_argument.
template <class Policy, class StepValues, class TokenSteps, class Out>
void steps_to_tokens(const Policy& policy, const StepValues& step_values, const TokenSteps& token_steps, Out&& out) {
    static_assert(host_policy<Policy>, "posttrain::advantage::steps_to_tokens: host policy expected");
    constexpr const char* fn = "posttrain::advantage::steps_to_tokens";
    std::visit(
        [&](auto v, auto ts, auto o) {
            const index_t N = v.extent(0), S = v.extent(1), T = ts.extent(1);
            detail::check_extent(ts.extent(0), N, {fn, "token_steps"}, "rows (one per row of step_values)");
            detail::check_same_shape(o, ts, {fn, "out"}, "token_steps");
            detail::check_no_alias(o, v, {fn, "out"}, "step_values");
            for (index_t i = 0; i < N; ++i)
                for (index_t t = 0; t < T; ++t) {
                    const auto s = ts(i, t);
                    bool neg = false;
                    if constexpr (std::is_signed_v<std::remove_cv_t<typename decltype(ts)::value_type>>) neg = s < 0;
                    if (!neg && static_cast<std::uint64_t>(s) >= static_cast<std::uint64_t>(S))
                        posttrain::detail::raise_invalid_argument(fn, "token_steps",
                                                                  "step " + std::to_string(s) + " at [" + detail::str(i) + ", " +
                                                                      detail::str(t) + "] is outside [0, " + detail::str(S) + ")");
                }
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, N, T, [&](index_t i) {
                for (index_t t = 0; t < T; ++t) {
                    const auto s = ts(i, t);
                    bool neg = false;
                    if constexpr (std::is_signed_v<std::remove_cv_t<typename decltype(ts)::value_type>>) neg = s < 0;
                    o(i, t) = neg ? O(0) : static_cast<O>(v(i, index_t(s)));
                }
            });
        },
        posttrain::detail::floating_input<2>(step_values, {fn, "step_values"}),
        posttrain::detail::id_input<2>(token_steps, {fn, "token_steps"}), posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

namespace detail {

// Step label: > 0 correct, == 0 incorrect, < 0 no step (padding). Signed ids only carry padding.
template <class L>
int step_label(L v) {
    if constexpr (std::is_signed_v<L>) {
        if (v < 0) return -1;
    }
    return v != 0 ? 1 : 0;
}

}  // namespace detail

// thoughts[i, s] = the index (0, 1, ...) of the thought step s belongs to in row i, where a thought
// is a maximal run of consecutive steps with the same label; -1 for padding steps (label < 0), which
// also end a run. counts[i] = the number of thoughts of row i (counts may be posttrain::none).
template <class Policy, class StepLabels, class Thoughts, class Counts>
index_t thought_spans(const Policy& policy, const StepLabels& step_labels, Thoughts&& thoughts, Counts&& counts) {
    static_assert(host_policy<Policy>, "posttrain::advantage::thought_spans: host policy expected");
    constexpr const char* fn = "posttrain::advantage::thought_spans";
    auto tv = std::visit([](auto x) { return x; }, posttrain::detail::id_input<2>(step_labels, {fn, "step_labels"}));
    auto out = posttrain::as_view<std::int64_t, 2>(thoughts, {fn, "thoughts"});
    detail::check_same_shape(out, tv, {fn, "thoughts"}, "step_labels");
    detail::check_same_or_disjoint(out, tv, {fn, "thoughts"}, "step_labels");
    const index_t N = tv.extent(0), S = tv.extent(1);
    auto c = [&] {
        if constexpr (std::is_same_v<std::remove_cvref_t<Counts>, none_t>) return none;
        else return posttrain::as_view<std::int64_t, 1>(counts, {fn, "counts"});
    }();
    if constexpr (!std::is_same_v<decltype(c), none_t>) {
        detail::check_extent(c.extent(0), N, {fn, "counts"}, "length (one per row of step_labels)");
        detail::check_no_alias(c, out, {fn, "counts"}, "thoughts");
    }
    std::vector<index_t> per_row(static_cast<std::size_t>(N), 0);
    detail::for_each_row(policy, N, S, [&](index_t i) {
        index_t id = -1;
        int prev = -1;
        for (index_t s = 0; s < S; ++s) {
            const int l = detail::step_label(tv(i, s));
            if (l < 0) {
                out(i, s) = -1;
                prev = -1;
                continue;
            }
            if (l != prev) ++id;
            prev = l;
            out(i, s) = id;
        }
        per_row[std::size_t(i)] = id + 1;
    });
    if constexpr (!std::is_same_v<decltype(c), none_t>)
        for (index_t i = 0; i < N; ++i) c(i) = per_row[std::size_t(i)];
    index_t total = 0;
    for (const index_t c : per_row) total += c;
    return total;
}

struct tp_grpo_options {
    double scale = 1.0;       // magnitude of the thought reward before the capability factor
    double accuracy = -1.0;   // the model's current accuracy in [0, 1]; < 0: the batch mean of `correct`
    bool per_thought = true;  // divide a thought's reward by its number of steps, so each thought weighs the same
};

struct [[nodiscard]] tp_grpo_result {
    double accuracy = 0;          // the capability factor used
    index_t thoughts = 0;         // over all rows
    index_t penalized_thoughts = 0;  // incorrect thoughts in correct solutions
    index_t rewarded_thoughts = 0;   // correct thoughts in incorrect solutions
};

// out[i, s] = outcome_advantages[i] + r_thought(i, s) for valid steps, else 0, with thoughts from
// thought_spans and the capability-adaptive process reward
//   incorrect thought in a correct solution:  -scale * acc
//   correct thought in an incorrect solution: +scale * (1 - acc)
//   otherwise 0
// (divided by the thought's step count when per_thought). acc = options.accuracy, or the batch mean
// of `correct`.
template <class Policy, class Outcome, class Correct, class StepLabels, class Out>
tp_grpo_result tp_grpo_advantages(const Policy& policy, const Outcome& outcome_advantages, const Correct& correct,
                                  const StepLabels& step_labels, Out&& out, const tp_grpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::tp_grpo_advantages: host policy expected");
    constexpr const char* fn = "posttrain::advantage::tp_grpo_advantages";
    detail::require(numeric::is_finite(options.scale), {fn, "options.scale"}, "must be finite");
    detail::require(options.accuracy <= 1.0 && numeric::is_finite(options.accuracy), {fn, "options.accuracy"},
                    "must be <= 1 (or < 0 for the batch accuracy), found " + std::to_string(options.accuracy));
    return std::visit(
        [&](auto base, auto c, auto lab, auto o) {
            const index_t N = lab.extent(0), S = lab.extent(1);
            detail::check_extent(base.extent(0), N, {fn, "outcome_advantages"}, "length (one per row of step_labels)");
            detail::check_extent(c.extent(0), N, {fn, "correct"}, "length (one per row of step_labels)");
            detail::check_same_shape(o, lab, {fn, "out"}, "step_labels");
            // Rows are written while other rows' inputs are still read.
            detail::check_no_alias(o, base, {fn, "out"}, "outcome_advantages");
            detail::check_no_alias(o, c, {fn, "out"}, "correct");
            detail::check_no_alias(o, lab, {fn, "out"}, "step_labels");
            detail::check_finite(base, {fn, "outcome_advantages"});
            std::vector<std::int64_t> ids(static_cast<std::size_t>(N * S));
            tp_grpo_result res;
            res.thoughts = thought_spans(policy, lab, tensor_view<std::int64_t, 2>(ids.data(), N, S), none);
            double acc = options.accuracy;
            if (acc < 0) {
                const double hits = posttrain::detail::fixed_order_sum(N, [&](index_t i) { return detail::mask_weight(c(i)) != 0 ? 1.0 : 0.0; });
                acc = N > 0 ? hits / double(N) : 0.0;
            }
            res.accuracy = acc;
            std::vector<index_t> pen(static_cast<std::size_t>(N), 0), rew(static_cast<std::size_t>(N), 0);
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, N, S, [&](index_t i) {
                const bool solved = detail::mask_weight(c(i)) != 0;
                const double a = base(i);
                for (index_t s = 0; s < S;) {
                    const std::int64_t id = ids[std::size_t(i * S + s)];
                    if (id < 0) {
                        o(i, s) = O(0);
                        ++s;
                        continue;
                    }
                    index_t e = s;
                    while (e < S && ids[std::size_t(i * S + e)] == id) ++e;
                    const bool right = detail::step_label(lab(i, s)) > 0;
                    double r = 0;
                    if (solved && !right) {
                        r = -options.scale * acc;
                        ++pen[std::size_t(i)];
                    } else if (!solved && right) {
                        r = options.scale * (1.0 - acc);
                        ++rew[std::size_t(i)];
                    }
                    if (options.per_thought) r /= double(e - s);
                    for (index_t q = s; q < e; ++q) o(i, q) = static_cast<O>(a + r);
                    s = e;
                }
            });
            for (index_t i = 0; i < N; ++i) {
                res.penalized_thoughts += pen[std::size_t(i)];
                res.rewarded_thoughts += rew[std::size_t(i)];
            }
            return res;
        },
        posttrain::detail::floating_input<1>(outcome_advantages, {fn, "outcome_advantages"}),
        posttrain::detail::mask_input<1>(correct, {fn, "correct"}), posttrain::detail::id_input<2>(step_labels, {fn, "step_labels"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

}  // namespace posttrain::advantage
