#pragma once
// Step records: one row per agent step (one LLM turn of a multi-turn episode), as views of the
// caller's columns. The step-level credit algorithms (step_returns, gigpo, salt) all read them.
//
//     group[N]       episode group: the trajectories of one task / initial state (any 64-bit id)
//     trajectory[N]  trajectory id (any 64-bit id; a trajectory lies in one episode group)
//     state[N]       64-bit key of the step's observation without history (the anchor state)
//     reward[N]      immediate step reward (optional where an algorithm does not read it)
//     step[N]        step index >= 0 (optional: without it, row order within a trajectory is step order)
//     action[N]      64-bit key of the step's action (optional; SALT merges on (state, action))
//
// Rows of a trajectory may be interleaved with other trajectories' rows (trajectory_order::any, the
// default: a rollout loop appends one row per environment per turn) or be required to be contiguous
// (trajectory_order::contiguous: interleaving is then an error). Either way the rows of a trajectory
// must appear in increasing step order; sort_steps gives the permutation that puts them so.
// Keys are the caller's: hash observations with state_key / state_keys (or any 64-bit hash).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain::credit {

using id_view = tensor_view<const std::int64_t, 1>;

// Whether the rows of one trajectory may be interleaved with other trajectories' rows.
enum class trajectory_order {
    any,         // rows of a trajectory may be anywhere (grouped by id, O(N)); row order within it is kept
    contiguous,  // each trajectory is one run of consecutive rows; an id seen in two runs is an error
};

template <class Reward = double>
struct step_records {
    id_view group;       // episode group of each step
    id_view trajectory;  // trajectory of each step
    id_view state;       // anchor-state key of each step
    tensor_view<const Reward, 1> reward{};  // step reward (absent: default-constructed view)
    id_view step{};                         // step index (absent: row order is step order)
    id_view action{};                       // action key (absent: no actions)

    using reward_type = Reward;
    index_t size() const noexcept { return group.extent(0); }
    bool has_reward() const noexcept { return reward.data() != nullptr || (size() == 0 && reward.extent(0) == 0); }
    bool has_step() const noexcept { return step.data() != nullptr; }
    bool has_action() const noexcept { return action.data() != nullptr; }

    // The same records with step indices / action keys (any adapted 1-D int64 tensor).
    template <class Steps>
    step_records with_steps(const Steps& s) const {
        step_records r = *this;
        r.step = as_view<const std::int64_t, 1>(s, {"posttrain::credit::step_records::with_steps", "steps"});
        return r;
    }
    template <class Actions>
    step_records with_actions(const Actions& a) const {
        step_records r = *this;
        r.action = as_view<const std::int64_t, 1>(a, {"posttrain::credit::step_records::with_actions", "actions"});
        return r;
    }
};

// Step records over adapted containers (std::vector<std::int64_t>, spans, Eigen, ...); the
// containers must outlive the records. Add steps / actions with .with_steps(...) / .with_actions(...).
template <class Group, class Trajectory, class State>
step_records<double> steps(const Group& group, const Trajectory& trajectory, const State& state) {
    constexpr const char* fn = "posttrain::credit::steps";
    return {as_view<const std::int64_t, 1>(group, {fn, "group"}), as_view<const std::int64_t, 1>(trajectory, {fn, "trajectory"}),
            as_view<const std::int64_t, 1>(state, {fn, "state"})};
}
template <class Group, class Trajectory, class State, class Reward>
auto steps(const Group& group, const Trajectory& trajectory, const State& state, const Reward& reward) {
    using R = typename posttrain::static_view_t<const Reward>::value_type;
    static_assert(std::is_floating_point_v<R>, "posttrain::credit::steps: rewards must be float or double");
    constexpr const char* fn = "posttrain::credit::steps";
    return step_records<R>{as_view<const std::int64_t, 1>(group, {fn, "group"}),
                           as_view<const std::int64_t, 1>(trajectory, {fn, "trajectory"}),
                           as_view<const std::int64_t, 1>(state, {fn, "state"}),
                           as_view<const R, 1>(reward, {fn, "reward"})};
}

// ---- keys ----

// 64-bit key of a string or of raw bytes (posttrain::hash_id: FNV-1a + splitmix64 finalizer).
inline std::int64_t state_key(std::string_view s) noexcept { return grouping::hash_id(s); }
inline std::int64_t state_key(const void* bytes, std::size_t size) noexcept {
    return grouping::hash_id(std::string_view(static_cast<const char*>(bytes), size));
}
// Keys of a range of strings; two distinct strings that collide are an invalid_argument (so equal
// keys mean equal observations, as verl-agent's exact grouping requires).
template <class Range>
std::vector<std::int64_t> state_keys(const Range& strings) {
    std::vector<std::int64_t> keys = grouping::hash_ids(strings);
    static_cast<void>(grouping::from_string_ids(exec::seq, strings));  // throws on a collision
    return keys;
}

// Combines two 64-bit keys into one (order matters): e.g. a state key from several fields.
constexpr std::int64_t combine_keys(std::int64_t a, std::int64_t b) noexcept {
    std::uint64_t h = static_cast<std::uint64_t>(a) * 0x9e3779b97f4a7c15ull;
    h ^= static_cast<std::uint64_t>(b) + 0x7f4a7c159e3779b9ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    return static_cast<std::int64_t>(h);
}

namespace detail {

using posttrain::detail::raise_invalid_argument;
using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

// Lengths of the present columns, and steps >= 0.
template <class R>
void check_records(const step_records<R>& s, const char* fn, bool need_reward) {
    const index_t n = s.size();
    auto same = [&](index_t len, const char* what) {
        require(len == n, {fn, what}, std::string("must have one entry per step (") + str(n) + "), found " + str(len));
    };
    same(s.trajectory.extent(0), "steps.trajectory");
    same(s.state.extent(0), "steps.state");
    if (need_reward) {
        require(s.has_reward(), {fn, "steps.reward"}, "is required by this algorithm but absent");
        same(s.reward.extent(0), "steps.reward");
    }
    if (s.has_step()) {
        same(s.step.extent(0), "steps.step");
        for (index_t i = 0; i < n; ++i)
            if (s.step(i) < 0)
                raise_invalid_argument(fn, "steps.step",
                                       "step indices must be >= 0, found steps.step[" + str(i) + "] = " + str(s.step(i)));
    }
    if (s.has_action()) same(s.action.extent(0), "steps.action");
}

// The trajectories of a batch: positions 0..N-1 in trajectory order, each trajectory's rows in step
// order; trajectory k holds rows[offsets[k] .. offsets[k+1]).
struct trajectory_layout {
    std::vector<index_t> rows;
    std::vector<index_t> offsets;
    std::vector<index_t> traj_of;  // dense trajectory of each row
    index_t count() const noexcept { return static_cast<index_t>(offsets.size()) - 1; }
    index_t first_row(index_t k) const noexcept { return rows[std::size_t(offsets[std::size_t(k)])]; }
};

// Contiguous runs: trajectory k is the k-th run of equal ids; an id in two runs is an error.
inline trajectory_layout contiguous_trajectories(id_view traj, const char* fn) {
    const index_t n = traj.extent(0);
    trajectory_layout t;
    t.rows.resize(std::size_t(n));
    t.traj_of.resize(std::size_t(n));
    t.offsets.assign(1, 0);
    std::vector<std::pair<std::int64_t, index_t>> runs;  // (id, first row)
    for (index_t i = 0; i < n; ++i) {
        if (i > 0 && traj(i) != traj(i - 1)) t.offsets.push_back(i);
        if (i == 0 || traj(i) != traj(i - 1)) runs.emplace_back(traj(i), i);
        t.rows[std::size_t(i)] = i;
        t.traj_of[std::size_t(i)] = static_cast<index_t>(runs.size()) - 1;
    }
    if (n > 0) t.offsets.push_back(n);
    std::sort(runs.begin(), runs.end());
    for (std::size_t k = 1; k < runs.size(); ++k)
        if (runs[k].first == runs[k - 1].first)
            raise_invalid_argument(fn, "steps.trajectory",
                                   "trajectory " + std::to_string(runs[k].first) + " is interleaved with other trajectories (rows " +
                                       str(runs[k - 1].second) + " and " + str(runs[k].second) +
                                       " start separate runs) but trajectory_order::contiguous requires each trajectory's "
                                       "steps to be consecutive rows; use trajectory_order::any or reorder with sort_steps");
    return t;
}

// Any order: a grouping of the rows by trajectory id (rows keep their order inside a trajectory).
inline trajectory_layout grouped_trajectories(grouping_result&& g) {
    trajectory_layout t;
    t.rows = std::move(g.permutation);
    t.offsets = std::move(g.offsets);
    t.traj_of = std::move(g.group_of);
    return t;
}

// Rows of every trajectory in strictly increasing step order, and every trajectory in one episode group.
template <class R>
void check_trajectories(const step_records<R>& s, const trajectory_layout& t, const char* fn) {
    for (index_t k = 0; k < t.count(); ++k) {
        const index_t lo = t.offsets[std::size_t(k)], hi = t.offsets[std::size_t(k) + 1];
        const index_t first = t.rows[std::size_t(lo)];
        for (index_t j = lo + 1; j < hi; ++j) {
            const index_t row = t.rows[std::size_t(j)], prev = t.rows[std::size_t(j) - 1];
            if (s.group(row) != s.group(first))
                raise_invalid_argument(fn, "steps.group",
                                       "trajectory " + std::to_string(s.trajectory(row)) + " has steps in two episode groups (rows " +
                                           str(first) + " and " + str(row) + "); a trajectory belongs to one group");
            if (s.has_step() && !(s.step(row) > s.step(prev)))
                raise_invalid_argument(fn, "steps.step",
                                       "the rows of trajectory " + std::to_string(s.trajectory(row)) +
                                           " are not in increasing step order (row " + str(row) + " has step " +
                                           str(s.step(row)) + " after row " + str(prev) + " with step " + str(s.step(prev)) +
                                           "); reorder the rows with credit::sort_steps");
        }
    }
}

// The trajectory layout of the records under the given order; Group(ids) is grouping::from_ids of
// the caller's policy (host or Thrust), so both paths build the same layout.
template <class R, class Group>
trajectory_layout make_trajectories(const step_records<R>& s, trajectory_order order, Group&& group, const char* fn) {
    trajectory_layout t = order == trajectory_order::contiguous ? contiguous_trajectories(s.trajectory, fn)
                                                               : grouped_trajectories(group(s.trajectory));
    check_trajectories(s, t, fn);
    return t;
}

inline std::uint64_t mix_key(std::uint64_t h, std::int64_t v) noexcept {
    return static_cast<std::uint64_t>(combine_keys(static_cast<std::int64_t>(h), v));
}

// Rows grouped by exact equality of a tuple of 64-bit columns, rows in row order inside a group and
// ids = the first row of each group. canonical: groups in order of first occurrence (group_of is
// then the labelling 0, 1, 2, ... by first occurrence), at the cost of one more grouping pass;
// otherwise in an order fixed by the keys (same groups, same rows, same order inside each).
// The tuple is hashed into one key and grouped by Group (grouping::from_ids of the caller's policy);
// the groups are then verified column by column, and if two distinct tuples ever shared a hash the
// rows are grouped by an exact lexicographic sort instead. O(N) (O(N log N) on that fallback).
template <class Group>
grouping_result group_by_columns(const std::vector<id_view>& cols, index_t n, Group&& group, bool force_exact_sort = false,
                                 bool canonical = true) {
    std::vector<index_t> rep(static_cast<std::size_t>(n));
    bool verified = false;
    if (!force_exact_sort) {
        std::vector<std::int64_t> h(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) {
            std::uint64_t k = 0x51ed270b27e3a6f1ull;
            for (const id_view& c : cols) k = mix_key(k, c(i));
            h[std::size_t(i)] = static_cast<std::int64_t>(k);
        }
        grouping_result g = group(id_view(h.data(), n));
        if (!canonical) {
            bool exact = true;
            for (index_t k = 0; k < g.num_groups() && exact; ++k) {
                const index_t first = g.permutation[std::size_t(g.offsets[std::size_t(k)])];
                for (index_t j = g.offsets[std::size_t(k)] + 1; j < g.offsets[std::size_t(k) + 1]; ++j)
                    for (const id_view& c : cols) exact &= c(g.permutation[std::size_t(j)]) == c(first);
                g.ids[std::size_t(k)] = first;
            }
            if (exact) return g;
        }
        verified = true;
        for (index_t k = 0; k < g.num_groups() && verified; ++k) {
            const index_t lo = g.offsets[std::size_t(k)], hi = g.offsets[std::size_t(k) + 1];
            const index_t first = g.permutation[std::size_t(lo)];
            for (index_t j = lo; j < hi; ++j) {
                const index_t row = g.permutation[std::size_t(j)];
                for (const id_view& c : cols) verified &= c(row) == c(first);
                rep[std::size_t(row)] = first;  // rows keep their order in a group: the first is the earliest
            }
        }
    }
    if (!verified) {
        std::vector<index_t> order(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) order[std::size_t(i)] = i;
        auto less = [&](index_t a, index_t b) {
            for (const id_view& c : cols)
                if (c(a) != c(b)) return c(a) < c(b);
            return false;
        };
        std::stable_sort(order.begin(), order.end(), less);
        for (index_t j = 0; j < n; ++j) {
            const index_t row = order[std::size_t(j)];
            const bool head = j == 0 || less(order[std::size_t(j) - 1], row);
            rep[std::size_t(row)] = head ? row : rep[std::size_t(order[std::size_t(j) - 1])];
        }
    }
    // Representatives are rows, so grouping by them orders the groups by first occurrence.
    std::vector<std::int64_t> rep64(rep.begin(), rep.end());
    return group(id_view(rep64.data(), n));
}

}  // namespace detail

// The permutation that orders rows by (trajectory id, step index), stable: rows[k] is the row to
// put at position k. Apply it to every column (and invert it on the outputs) when a producer wrote
// a trajectory's steps out of order.
template <class Policy, class R>
std::vector<index_t> sort_steps(const Policy&, const step_records<R>& s) {
    static_assert(host_policy<Policy>, "posttrain::credit::sort_steps: host policy expected");
    constexpr const char* fn = "posttrain::credit::sort_steps";
    detail::check_records(s, fn, false);
    std::vector<index_t> rows(static_cast<std::size_t>(s.size()));
    for (index_t i = 0; i < s.size(); ++i) rows[std::size_t(i)] = i;
    std::stable_sort(rows.begin(), rows.end(), [&](index_t a, index_t b) {
        if (s.trajectory(a) != s.trajectory(b)) return s.trajectory(a) < s.trajectory(b);
        return s.has_step() && s.step(a) < s.step(b);
    });
    return rows;
}

}  // namespace posttrain::credit
