#pragma once
// GiGPO (Group-in-Group Policy Optimization, arXiv 2505.10978): two levels of group-relative
// advantage for multi-turn agents. See docs/algorithms/gigpo.md.
//
//     episode level (Eq. 3)   A^E = (R(tau) - mean_g R) / F          over the trajectories of an episode group
//     anchor states (Eq. 6)   steps of one episode group whose state keys are equal form a step group
//     step level    (Eq. 7)   A^S = (R_t - mean_{step group} R_t) / F   (a step group of one step: A^S = 0)
//     combination   (Eq. 8)   A   = A^E + omega * A^S
//     F = 1 (gigpo_norm::mean_norm) or std + epsilon (gigpo_norm::mean_std_norm, unbiased std)
//
// Both levels are GRPO over a grouping: advantage::grpo does the arithmetic, grouping::from_ids the
// grouping, so every convention (singletons, zero variance, float32 quirks) is GRPO's and is chosen
// here through gigpo_options.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "../advantage/grpo.hpp"
#include "../advantage/tokens.hpp"
#include "returns.hpp"
#include "steps.hpp"

namespace posttrain::credit {

// Per-step advantages become per-token advantages with advantage::broadcast_to_tokens(exec,
// advantages, mask, out): out[i, t] = advantages[i] * mask[i, t].
using advantage::broadcast_to_tokens;

enum class gigpo_norm {
    mean_norm,      // F = 1: centre only (verl-agent mode "mean_norm", the paper's default for agent benchmarks)
    mean_std_norm,  // F = unbiased std + epsilon (verl-agent mode "mean_std_norm")
};

// Which rows the episode-level mean and std are taken over.
enum class episode_stats {
    per_trajectory,  // one value per trajectory (paper Eq. 3; posttrain's default)
    across_steps,    // one value per step row, so longer trajectories weigh more (verl-agent's default)
};

struct gigpo_options {
    double step_weight = 1.0;  // omega
    gigpo_norm norm = gigpo_norm::mean_norm;
    double epsilon = 1e-6;
    episode_stats episode = episode_stats::per_trajectory;
    advantage::singleton singleton_episodes = advantage::singleton::zero;  // an episode group of one trajectory
    advantage::zero_variance zero_variance_groups = advantage::zero_variance::zero;  // both levels
    advantage::nonfinite nonfinite_returns = advantage::nonfinite::raise;            // raise | propagate
    bool float32_singleton_std = false;  // verl-agent: a singleton's std is the float32 tensor 1.0
    double gamma = 0.95;                 // discount of the step returns gigpo computes from steps.reward
    trajectory_order order = trajectory_order::any;
    // Step groups to use instead of exact anchor-state equality (e.g. similarity_groups); not owned.
    const grouping_result* step_groups = nullptr;

    // verl-agent compute_gigpo_outcome_advantage (mode "mean_norm" or "mean_std_norm", step_advantage_w,
    // epsilon) with episode_norm_reward's default compute_mean_std_cross_steps=True.
    static constexpr gigpo_options verl_agent(gigpo_norm norm = gigpo_norm::mean_norm, double step_weight = 1.0,
                                              double epsilon = 1e-6, double gamma = 0.95) {
        gigpo_options o;
        o.norm = norm;
        o.step_weight = step_weight;
        o.epsilon = epsilon;
        o.gamma = gamma;
        o.episode = episode_stats::across_steps;
        o.singleton_episodes = advantage::singleton::raw;  // mean 0, std 1
        o.zero_variance_groups = advantage::zero_variance::arithmetic;
        o.nonfinite_returns = advantage::nonfinite::propagate;
        o.float32_singleton_std = true;
        return o;
    }
};

struct [[nodiscard]] gigpo_result {
    index_t episode_groups = 0;
    index_t trajectories = 0;
    group_stats_result episode;  // the episode-level GRPO (its groups: episode groups)
    group_stats_result step;     // the step-level GRPO (its groups: step groups; singletons have A^S = 0)
};

// ---- step groups ----

namespace detail {

// The host operations the GiGPO pipeline is written against; thrust/credit.hpp supplies the same
// interface through Thrust, so the pipeline exists once.
template <class Policy>
struct host_ops {
    Policy policy;
    grouping_result group(id_view ids) const { return grouping::from_ids(policy, ids); }
    template <class In, class Out>
    group_stats_result grpo(tensor_view<const In, 1> values, const grouping_result& g, tensor_view<Out, 1> out,
                            const advantage::grpo_options& o) const {
        return advantage::grpo(policy, values, g, out, o);
    }
    template <class Body>
    void each(index_t n, Body&& body) const {
        posttrain::detail::for_blocks(policy, n, 1, [&](index_t lo, index_t hi) {
            for (index_t i = lo; i < hi; ++i) body(i);
        });
    }
};

template <class Ops, class R>
grouping_result anchor_groups_with(const Ops& ops, const step_records<R>& s, bool canonical = true) {
    return group_by_columns({s.group, s.state}, s.size(), [&](id_view ids) { return ops.group(ids); }, false, canonical);
}

}  // namespace detail

// Anchor-state step groups: the steps of one episode group whose state keys are equal. Groups come
// in order of first occurrence and ids[k] is the first row of group k, so group_of is the canonical
// labelling 0, 1, 2, ... by first occurrence. Exact: keys are compared, not only their hash.
template <class Policy, class R>
grouping_result anchor_state_groups(const Policy& policy, const step_records<R>& steps) {
    static_assert(host_policy<Policy>, "posttrain::credit::anchor_state_groups: host policy expected");
    detail::check_records(steps, "posttrain::credit::anchor_state_groups", false);
    return detail::anchor_groups_with(detail::host_ops<Policy>{policy}, steps);
}

// Greedy similarity clustering inside each episode group (verl-agent's enable_similarity): rows are
// visited in row order; a row joins the first existing cluster (in creation order) whose
// representative -- the cluster's first row -- satisfies similar(row, representative), else it opens
// a new cluster. The result depends on row order by construction. Episode groups are independent,
// so exec::par runs them concurrently (similar must then be safe to call from several threads).
// Same output conventions as anchor_state_groups.
template <class Policy, class R, class Similar>
grouping_result similarity_groups(const Policy& policy, const step_records<R>& steps, Similar&& similar) {
    static_assert(host_policy<Policy>, "posttrain::credit::similarity_groups: host policy expected");
    detail::check_records(steps, "posttrain::credit::similarity_groups", false);
    const index_t n = steps.size();
    const grouping_result g = grouping::from_ids(policy, steps.group);
    std::vector<std::int64_t> rep(static_cast<std::size_t>(n));
    const auto layout = posttrain::detail::make_layout(g, n, {"posttrain::credit::similarity_groups", "steps.group"});
    advantage::detail::for_each_group(policy, layout, n, [&](index_t, auto rows, index_t size) {
        std::vector<index_t> reps;
        for (index_t j = 0; j < size; ++j) {
            const index_t row = rows(j);
            index_t found = row;
            for (index_t r : reps)
                if (similar(row, r)) {
                    found = r;
                    break;
                }
            if (found == row) reps.push_back(row);
            rep[std::size_t(row)] = found;
        }
    });
    return grouping::from_ids(policy, id_view(rep.data(), n));
}

// ---- difflib.SequenceMatcher(None, a, b).ratio() ----

namespace detail {

// Python's difflib matching-block search with no junk function: for each sub-range the longest
// matching block (earliest in a, then in b), then recursion on the two sides; b's "popular" elements
// (more than len(b)/100 + 1 occurrences when len(b) >= 200) are not used to start matches when
// autojunk is on, as in Python. Returns the number of matched elements.
template <class T>
index_t difflib_matches(const T* a, index_t la, const T* b, index_t lb, bool autojunk) {
    std::unordered_map<T, std::vector<index_t>> b2j;
    for (index_t j = 0; j < lb; ++j) b2j[b[j]].push_back(j);
    if (autojunk && lb >= 200) {
        const std::size_t ntest = static_cast<std::size_t>(lb / 100 + 1);
        for (auto it = b2j.begin(); it != b2j.end();)
            it = it->second.size() > ntest ? b2j.erase(it) : std::next(it);
    }
    // len[j + 1]: length of the match ending at (i - 1, j); only the entries touched are cleared.
    std::vector<index_t> prev(static_cast<std::size_t>(lb) + 1, 0), next(static_cast<std::size_t>(lb) + 1, 0);
    std::vector<index_t> touched_prev, touched_next;
    struct block {
        index_t i, j, k;
    };
    auto longest = [&](index_t alo, index_t ahi, index_t blo, index_t bhi) {
        block best{alo, blo, 0};
        for (index_t i = alo; i < ahi; ++i) {
            touched_next.clear();
            const auto it = b2j.find(a[i]);
            if (it != b2j.end())
                for (index_t j : it->second) {
                    if (j < blo) continue;
                    if (j >= bhi) break;
                    const index_t k = prev[std::size_t(j)] + 1;
                    next[std::size_t(j) + 1] = k;
                    touched_next.push_back(j + 1);
                    if (k > best.k) best = {i - k + 1, j - k + 1, k};
                }
            for (index_t x : touched_prev) prev[std::size_t(x)] = 0;
            for (index_t x : touched_next) {
                prev[std::size_t(x)] = next[std::size_t(x)];
                next[std::size_t(x)] = 0;
            }
            std::swap(touched_prev, touched_next);
        }
        for (index_t x : touched_prev) prev[std::size_t(x)] = 0;
        touched_prev.clear();
        // Popular elements are not junk: the block grows over equal neighbours on both sides.
        while (best.i > alo && best.j > blo && a[best.i - 1] == b[best.j - 1]) {
            --best.i;
            --best.j;
            ++best.k;
        }
        while (best.i + best.k < ahi && best.j + best.k < bhi && a[best.i + best.k] == b[best.j + best.k]) ++best.k;
        return best;
    };
    index_t matched = 0;
    std::vector<std::array<index_t, 4>> queue{{0, la, 0, lb}};
    while (!queue.empty()) {
        const auto [alo, ahi, blo, bhi] = queue.back();
        queue.pop_back();
        const block m = longest(alo, ahi, blo, bhi);
        if (m.k == 0) continue;
        matched += m.k;
        if (alo < m.i && blo < m.j) queue.push_back({alo, m.i, blo, m.j});
        if (m.i + m.k < ahi && m.j + m.k < bhi) queue.push_back({m.i + m.k, ahi, m.j + m.k, bhi});
    }
    return matched;
}

// UTF-8 to code points, as Python compares str elements; a byte that starts no valid sequence stands
// for itself (offset into a private range so it never equals a decoded code point).
inline std::u32string decode_utf8(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
        bool ok = len > 0 && i + std::size_t(len) <= s.size();
        char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
        for (int k = 1; ok && k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + std::size_t(k)]);
            ok = (cc >> 6) == 0x2;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (!ok) {
            out.push_back(char32_t(0x110000) + c);
            ++i;
            continue;
        }
        out.push_back(cp);
        i += std::size_t(len);
    }
    return out;
}

}  // namespace detail

// difflib.SequenceMatcher(None, a, b).ratio() = 2 M / (len(a) + len(b)) (1 for two empty
// sequences), M the number of elements in matching blocks; autojunk as Python's default. Strings
// are compared by Unicode code point (UTF-8 decoded), as Python compares str.
template <class T>
double sequence_matcher_ratio(const std::vector<T>& a, const std::vector<T>& b, bool autojunk = true) {
    const index_t length = static_cast<index_t>(a.size() + b.size());
    if (length == 0) return 1.0;
    const index_t m = detail::difflib_matches(a.data(), index_t(a.size()), b.data(), index_t(b.size()), autojunk);
    return 2.0 * double(m) / double(length);
}
inline double sequence_matcher_ratio(std::string_view a, std::string_view b, bool autojunk = true) {
    const std::u32string x = detail::decode_utf8(a), y = detail::decode_utf8(b);
    const index_t length = static_cast<index_t>(x.size() + y.size());
    if (length == 0) return 1.0;
    return 2.0 * double(detail::difflib_matches(x.data(), index_t(x.size()), y.data(), index_t(y.size()), autojunk)) /
           double(length);
}

// The similarity verl-agent's enable_similarity uses, for similarity_groups: row i joins the cluster
// of representative r when SequenceMatcher(None, obs[i], obs[r]).ratio() >= threshold. `observations`
// (any random-access range of strings) must outlive the object.
template <class Range>
struct ratio_similarity {
    const Range* observations;
    double threshold = 0.95;
    bool autojunk = true;
    ratio_similarity(const Range& obs, double thresh, bool junk = true) : observations(&obs), threshold(thresh), autojunk(junk) {
        posttrain::detail::require(thresh > 0.0 && thresh <= 1.0, {"posttrain::credit::ratio_similarity", "threshold"},
                                   "must be in (0, 1], found " + std::to_string(thresh));
    }
    bool operator()(index_t row, index_t representative) const {
        const auto& obs = *observations;
        return sequence_matcher_ratio(std::string_view(obs[std::size_t(row)]), std::string_view(obs[std::size_t(representative)]),
                                      autojunk) >= threshold;
    }
};

// ---- the two levels and their combination ----

namespace detail {

inline void check_gigpo_options(const gigpo_options& o, const char* fn) {
    require(std::isfinite(o.step_weight), {fn, "options.step_weight"}, "must be finite, found " + std::to_string(o.step_weight));
    require(o.epsilon >= 0 && std::isfinite(o.epsilon), {fn, "options.epsilon"}, "must be finite and >= 0, found " + std::to_string(o.epsilon));
    require(o.nonfinite_returns != advantage::nonfinite::ignore, {fn, "options.nonfinite_returns"},
            "nonfinite::ignore is not supported here; use raise or propagate");
    require(std::isfinite(o.gamma), {fn, "options.gamma"}, "must be finite, found " + std::to_string(o.gamma));
}

// The GRPO options of one level. A step group of one step has advantage 0 whatever the preset
// (verl-agent: mean = the value itself, std = 1).
inline advantage::grpo_options level_options(const gigpo_options& o, bool step_level) {
    advantage::grpo_options g;
    g.std_scale = o.norm == gigpo_norm::mean_std_norm ? advantage::scale::group : advantage::scale::none;
    g.epsilon = o.epsilon;
    g.singleton_groups = step_level ? advantage::singleton::zero : o.singleton_episodes;
    g.zero_variance_groups = o.zero_variance_groups;
    g.nonfinite_rewards = o.nonfinite_returns;
    g.float32_singleton_std = o.float32_singleton_std;
    return g;
}

inline bool same_value(double a, double b) noexcept { return a == b || (a != a && b != b); }

// A^E for every step row, into out; the trajectory layout is validated on the way.
template <class Ops, class R, class E>
group_stats_result episode_core(const Ops& ops, const step_records<R>& s, tensor_view<const E, 1> ep,
                                tensor_view<double, 1> out, const gigpo_options& o, gigpo_result& res, const char* fn) {
    const trajectory_layout t = make_trajectories(s, o.order, [&](id_view ids) { return ops.group(ids); }, fn);
    res.trajectories = t.count();
    for (index_t k = 0; k < t.count(); ++k) {
        const index_t first = t.first_row(k);
        for (index_t j = t.offsets[std::size_t(k)] + 1; j < t.offsets[std::size_t(k) + 1]; ++j) {
            const index_t row = t.rows[std::size_t(j)];
            if (!same_value(double(ep(row)), double(ep(first))))
                raise_invalid_argument(fn, "episode_returns",
                                       "must be the same on every step of a trajectory, but trajectory " +
                                           std::to_string(s.trajectory(row)) + " has " + std::to_string(double(ep(first))) +
                                           " at row " + str(first) + " and " + std::to_string(double(ep(row))) + " at row " + str(row));
        }
    }
    const advantage::grpo_options go = level_options(o, false);
    if (o.episode == episode_stats::across_steps) {
        const grouping_result g = ops.group(s.group);
        res.episode_groups = g.num_groups();
        return ops.grpo(ep, g, out, go);
    }
    // One score per trajectory, trajectories in order of their first row, so that a group's
    // statistics add its trajectories in batch order (as they do for rows across_steps).
    const index_t trajs = t.count();
    std::vector<index_t> slot(static_cast<std::size_t>(trajs));
    std::vector<double> score(static_cast<std::size_t>(trajs)), adv(static_cast<std::size_t>(trajs));
    std::vector<std::int64_t> group(static_cast<std::size_t>(trajs));
    for (index_t i = 0, next = 0; i < s.size(); ++i) {
        const index_t k = t.traj_of[std::size_t(i)];
        if (t.first_row(k) != i) continue;
        slot[std::size_t(k)] = next;
        score[std::size_t(next)] = double(ep(i));
        group[std::size_t(next++)] = s.group(i);
    }
    const grouping_result g = ops.group(id_view(group.data(), trajs));
    res.episode_groups = g.num_groups();
    const group_stats_result st = ops.grpo(tensor_view<const double, 1>(score.data(), trajs), g,
                                           tensor_view<double, 1>(adv.data(), trajs), go);
    ops.each(s.size(), [&](index_t i) { out(i) = adv[std::size_t(slot[std::size_t(t.traj_of[std::size_t(i)])])]; });
    return st;
}

// The whole pipeline over precomputed step returns; adv may be any float/double view.
template <class Ops, class R, class E, class S, class A>
gigpo_result gigpo_core(const Ops& ops, const step_records<R>& s, tensor_view<const E, 1> ep, tensor_view<const S, 1> sr,
                        tensor_view<A, 1> adv, const gigpo_options& o, const char* fn) {
    check_records(s, fn, false);
    check_gigpo_options(o, fn);
    const index_t n = s.size();
    advantage::detail::check_extent(ep.extent(0), n, {fn, "episode_returns"}, "length (one entry per step)");
    advantage::detail::check_extent(sr.extent(0), n, {fn, "step_returns"}, "length (one entry per step)");
    advantage::detail::check_extent(adv.extent(0), n, {fn, "advantages"}, "length (one entry per step)");
    advantage::detail::check_no_alias(adv, ep, {fn, "advantages"}, "episode_returns");
    advantage::detail::check_no_alias(adv, sr, {fn, "advantages"}, "step_returns");
    if (o.nonfinite_returns == advantage::nonfinite::raise) {
        advantage::detail::check_finite(ep, {fn, "episode_returns"});
        advantage::detail::check_finite(sr, {fn, "step_returns"});
    }
    gigpo_result res;
    std::vector<double> episode(static_cast<std::size_t>(n)), step(static_cast<std::size_t>(n));
    res.episode = episode_core(ops, s, ep, tensor_view<double, 1>(episode.data(), n), o, res, fn);
    grouping_result own;
    const grouping_result* groups = o.step_groups;
    if (groups == nullptr) {
        own = anchor_groups_with(ops, s, false);  // group order does not change any advantage
        groups = &own;
    }
    require(index_t(groups->permutation.size()) == n && index_t(groups->group_of.size()) == n, {fn, "options.step_groups"},
            "must group the " + str(n) + " step rows, found a grouping of " + str(index_t(groups->permutation.size())) + " rows");
    res.step = ops.grpo(sr, *groups, tensor_view<double, 1>(step.data(), n), level_options(o, true));
    const double w = o.step_weight;
    ops.each(n, [&](index_t i) { adv(i) = static_cast<A>(episode[std::size_t(i)] + w * step[std::size_t(i)]); });
    return res;
}

// Float or double views of the caller's episode returns, step returns and advantages.
template <class Run, class Episode, class StepReturns, class Advantages>
gigpo_result visit_gigpo(Run&& run, const Episode& episode_returns, const StepReturns& step_returns, Advantages&& advantages,
                         const char* fn) {
    return std::visit([&](auto e, auto r, auto a) { return run(e, r, a); },
                      posttrain::detail::floating_input<1>(episode_returns, {fn, "episode_returns"}),
                      posttrain::detail::floating_input<1>(step_returns, {fn, "step_returns"}),
                      posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace detail

// Episode-level advantages A^E (one per step row) alone. episode_returns[i]: the return of row i's
// trajectory, the same on each of its rows.
template <class Policy, class R, class Episode, class Out>
gigpo_result episode_advantages(const Policy& policy, const step_records<R>& steps, const Episode& episode_returns, Out&& out,
                                const gigpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::episode_advantages: host policy expected");
    constexpr const char* fn = "posttrain::credit::episode_advantages";
    detail::check_records(steps, fn, false);
    detail::check_gigpo_options(options, fn);
    return std::visit(
        [&](auto e, auto o) {
            const index_t n = steps.size();
            advantage::detail::check_extent(e.extent(0), n, {fn, "episode_returns"}, "length (one entry per step)");
            advantage::detail::check_extent(o.extent(0), n, {fn, "out"}, "length (one entry per step)");
            advantage::detail::check_no_alias(o, e, {fn, "out"}, "episode_returns");
            if (options.nonfinite_returns == advantage::nonfinite::raise) advantage::detail::check_finite(e, {fn, "episode_returns"});
            std::vector<double> tmp(static_cast<std::size_t>(n));
            gigpo_result res;
            res.episode = detail::episode_core(detail::host_ops<Policy>{policy}, steps, e, tensor_view<double, 1>(tmp.data(), n),
                                               options, res, fn);
            using O = typename decltype(o)::value_type;
            for (index_t i = 0; i < n; ++i) o(i) = static_cast<O>(tmp[std::size_t(i)]);
            return res;
        },
        posttrain::detail::floating_input<1>(episode_returns, {fn, "episode_returns"}),
        posttrain::detail::floating_output<1>(out, {fn, "out"}));
}

// Step-level advantages A^S over any step grouping (anchor_state_groups, similarity_groups, or the
// caller's own): GRPO of the step returns with the options' norm; a step group of one step gives 0.
template <class Policy, class StepReturns, class Out>
group_stats_result step_advantages(const Policy& policy, const grouping_result& step_groups, const StepReturns& step_returns,
                                   Out&& out, const gigpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::step_advantages: host policy expected");
    detail::check_gigpo_options(options, "posttrain::credit::step_advantages");
    return advantage::grpo(policy, step_returns, step_groups, std::forward<Out>(out), detail::level_options(options, true));
}

// GiGPO advantages, one per step: A = A^E + omega * A^S, over step returns the caller computed
// (e.g. credit::step_returns, or verl-agent's compute_step_discounted_returns).
template <class Policy, class R, class Episode, class StepReturns, class Advantages>
    requires(!std::is_same_v<std::remove_cvref_t<Advantages>, gigpo_options>)
gigpo_result gigpo(const Policy& policy, const step_records<R>& steps, const Episode& episode_returns,
                   const StepReturns& step_returns, Advantages&& advantages, const gigpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::gigpo: host policy expected (exec::thrust: include "
                                       "<posttrain/thrust/credit.hpp>)");
    constexpr const char* fn = "posttrain::credit::gigpo";
    return detail::visit_gigpo(
        [&](auto e, auto r, auto a) { return detail::gigpo_core(detail::host_ops<Policy>{policy}, steps, e, r, a, options, fn); },
        episode_returns, step_returns, advantages, fn);
}

// GiGPO advantages with the step returns computed from steps.reward (discount options.gamma): what a
// training loop calls with its step records and each trajectory's episode return.
template <class Policy, class R, class Episode, class Advantages>
gigpo_result gigpo(const Policy& policy, const step_records<R>& steps, const Episode& episode_returns, Advantages&& advantages,
                   const gigpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::gigpo: host policy expected");
    step_returns_options ro;
    ro.gamma = options.gamma;
    ro.order = options.order;
    ro.nonfinite_rewards = options.nonfinite_returns;
    std::vector<double> returns(static_cast<std::size_t>(steps.size()));
    static_cast<void>(step_returns(policy, steps, returns, ro));
    return gigpo(policy, steps, episode_returns, returns, std::forward<Advantages>(advantages), options);
}

}  // namespace posttrain::credit
