#pragma once
// SALT (arXiv 2510.20022): step-level advantages from a trajectory graph. The steps of one episode
// group's trajectories are merged into nodes ("the same step"); a node's advantage is the mean of
// the base (trajectory-level, e.g. GRPO / RLOO) advantages of the trajectories passing through it,
// each trajectory counted once per node:
//
//     A_node(e) = mean_{tau in T(e)} A_tau        A[i] = (1 - alpha) * A_tau(i) + alpha * A_node(e(i))
//
// A step no other trajectory shares keeps its trajectory's advantage (a "decisive" step); a step
// every trajectory shares gets the mean, 0 under GRPO / RLOO (a "neutral" step). The paper's code
// was not available: the merge rule and alpha are a reconstruction, see docs/algorithms/salt.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "gigpo.hpp"
#include "steps.hpp"

namespace posttrain::credit {

// Which steps are "the same step".
enum class salt_merge {
    state_action,  // equal (state, action) keys in the same episode group: a graph where trajectories may re-join
    prefix,        // equal sequences of (state, action) up to and including the step: a prefix tree
    state,         // equal state keys alone (GiGPO's anchor states)
};

struct salt_options {
    salt_merge merge = salt_merge::state_action;
    double mixing = 1.0;  // alpha in [0, 1]: 1 = the node advantage alone (the reconstruction's default)
    trajectory_order order = trajectory_order::any;
};

// The trajectory graph: nodes in order of first occurrence (node k's first step is row
// first_row[k], which gives its group, state and action), edges between consecutive steps of a
// trajectory in order of first occurrence.
struct [[nodiscard]] salt_graph {
    std::vector<index_t> node_of;       // N: the node of each step
    std::vector<index_t> first_row;     // per node: its first step row
    std::vector<index_t> visits;        // per node: step rows on it (a trajectory looping through counts each time)
    std::vector<index_t> trajectories;  // per node: distinct trajectories through it
    std::vector<double> advantage;      // per node: A_node
    std::vector<index_t> edge_from, edge_to, edge_count;  // per edge: nodes and number of transitions

    index_t num_nodes() const noexcept { return static_cast<index_t>(first_row.size()); }
    index_t num_edges() const noexcept { return static_cast<index_t>(edge_from.size()); }
};

namespace detail {

inline void check_salt_options(const salt_options& o, const char* fn) {
    require(o.mixing >= 0.0 && o.mixing <= 1.0, {fn, "options.mixing"}, "must be in [0, 1], found " + std::to_string(o.mixing));
    require(o.merge == salt_merge::state_action || o.merge == salt_merge::prefix || o.merge == salt_merge::state,
            {fn, "options.merge"}, "unknown salt_merge value");
}

// Node of each row as a grouping in first-occurrence order (ids = first rows).
template <class Ops, class R>
grouping_result salt_nodes(const Ops& ops, const step_records<R>& s, const trajectory_layout& t, salt_merge merge) {
    const index_t n = s.size();
    auto group = [&](id_view ids) { return ops.group(ids); };
    const bool with_action = s.has_action() && merge != salt_merge::state;
    if (merge != salt_merge::prefix) {
        std::vector<id_view> cols{s.group, s.state};
        if (with_action) cols.push_back(s.action);
        return group_by_columns(cols, n, group);
    }
    // Prefix tree, one depth at a time: a node at depth d is (parent node, state, action), the
    // parent of a first step being its episode group. label[row] = the first row of the row's node.
    std::vector<std::int64_t> label(static_cast<std::size_t>(n));
    std::vector<index_t> rows;
    for (index_t d = 0;; ++d) {
        rows.clear();
        for (index_t k = 0; k < t.count(); ++k)
            if (t.offsets[std::size_t(k)] + d < t.offsets[std::size_t(k) + 1]) rows.push_back(t.rows[std::size_t(t.offsets[std::size_t(k)] + d)]);
        if (rows.empty()) break;
        std::sort(rows.begin(), rows.end());  // row order, so a node's first member is its first row
        const index_t m = static_cast<index_t>(rows.size());
        std::vector<std::int64_t> parent(static_cast<std::size_t>(m)), state(static_cast<std::size_t>(m)), action(static_cast<std::size_t>(m), 0);
        for (index_t j = 0; j < m; ++j) {
            const index_t row = rows[std::size_t(j)];
            const index_t k = t.traj_of[std::size_t(row)];
            parent[std::size_t(j)] = d == 0 ? s.group(row)
                                                      : label[std::size_t(t.rows[std::size_t(t.offsets[std::size_t(k)] + d - 1)])];
            state[std::size_t(j)] = s.state(row);
            if (with_action) action[std::size_t(j)] = s.action(row);
        }
        const grouping_result g = group_by_columns({id_view(parent.data(), m), id_view(state.data(), m), id_view(action.data(), m)},
                                                   m, group);
        for (index_t j = 0; j < m; ++j)
            label[std::size_t(rows[std::size_t(j)])] = static_cast<std::int64_t>(rows[std::size_t(g.ids[std::size_t(g.group_of[std::size_t(j)])])]);
    }
    return group(id_view(label.data(), n));
}

template <class Ops, class R, class TA, class Out>
salt_graph salt_core(const Ops& ops, const step_records<R>& s, tensor_view<const TA, 1> ta, tensor_view<Out, 1> out,
                     const salt_options& o, const char* fn) {
    check_records(s, fn, false);
    check_salt_options(o, fn);
    const index_t n = s.size();
    advantage::detail::check_extent(ta.extent(0), n, {fn, "trajectory_advantages"}, "length (one entry per step)");
    advantage::detail::check_extent(out.extent(0), n, {fn, "advantages"}, "length (one entry per step)");
    advantage::detail::check_no_alias(out, ta, {fn, "advantages"}, "trajectory_advantages");
    advantage::detail::check_finite(ta, {fn, "trajectory_advantages"});
    const trajectory_layout t = make_trajectories(s, o.order, [&](id_view ids) { return ops.group(ids); }, fn);
    for (index_t k = 0; k < t.count(); ++k)
        for (index_t j = t.offsets[std::size_t(k)] + 1; j < t.offsets[std::size_t(k) + 1]; ++j)
            if (!same_value(double(ta(t.rows[std::size_t(j)])), double(ta(t.first_row(k)))))
                raise_invalid_argument(fn, "trajectory_advantages",
                                       "must be the same on every step of a trajectory; trajectory " +
                                           std::to_string(s.trajectory(t.first_row(k))) + " differs at row " +
                                           str(t.rows[std::size_t(j)]));

    salt_graph graph;
    const grouping_result nodes = salt_nodes(ops, s, t, o.merge);
    const index_t count = nodes.num_groups();
    graph.node_of = nodes.group_of;
    graph.first_row.resize(std::size_t(count));
    graph.visits.resize(std::size_t(count));
    for (index_t e = 0; e < count; ++e) {
        graph.first_row[std::size_t(e)] = static_cast<index_t>(nodes.ids[std::size_t(e)]);
        graph.visits[std::size_t(e)] = nodes.offsets[std::size_t(e) + 1] - nodes.offsets[std::size_t(e)];
    }
    // Distinct (node, trajectory) pairs, in order of first occurrence; each adds its trajectory's
    // advantage once to its node, in that order (a fixed order, so every policy gives the same bits).
    std::vector<std::int64_t> node64(nodes.group_of.begin(), nodes.group_of.end()), traj64(t.traj_of.begin(), t.traj_of.end());
    const grouping_result pairs = group_by_columns({id_view(node64.data(), n), id_view(traj64.data(), n)}, n,
                                                   [&](id_view ids) { return ops.group(ids); });
    std::vector<double> sum(std::size_t(count), 0.0);
    graph.trajectories.assign(std::size_t(count), 0);
    for (index_t p = 0; p < pairs.num_groups(); ++p) {
        const auto row = static_cast<index_t>(pairs.ids[std::size_t(p)]);
        const auto e = std::size_t(graph.node_of[std::size_t(row)]);
        sum[e] += double(ta(row));
        ++graph.trajectories[e];
    }
    graph.advantage.resize(std::size_t(count));
    for (index_t e = 0; e < count; ++e)
        graph.advantage[std::size_t(e)] = sum[std::size_t(e)] / double(graph.trajectories[std::size_t(e)]);
    const double alpha = o.mixing;
    ops.each(n, [&](index_t i) {
        const double node = graph.advantage[std::size_t(graph.node_of[std::size_t(i)])];
        const double base = double(ta(i));
        // alpha = 1 and 0 take one side exactly (no 0 * base, which is NaN for an infinite base).
        const double v = alpha == 1.0 ? node : alpha == 0.0 ? base : (1.0 - alpha) * base + alpha * node;
        out(i) = static_cast<Out>(v);
    });
    // Edges: consecutive steps of each trajectory, deduplicated with counts.
    std::vector<std::int64_t> from, to;
    for (index_t k = 0; k < t.count(); ++k)
        for (index_t j = t.offsets[std::size_t(k)] + 1; j < t.offsets[std::size_t(k) + 1]; ++j) {
            from.push_back(graph.node_of[std::size_t(t.rows[std::size_t(j) - 1])]);
            to.push_back(graph.node_of[std::size_t(t.rows[std::size_t(j)])]);
        }
    const index_t m = static_cast<index_t>(from.size());
    const grouping_result edges = group_by_columns({id_view(from.data(), m), id_view(to.data(), m)}, m,
                                                   [&](id_view ids) { return ops.group(ids); });
    for (index_t e = 0; e < edges.num_groups(); ++e) {
        const auto first = std::size_t(edges.ids[std::size_t(e)]);
        graph.edge_from.push_back(static_cast<index_t>(from[first]));
        graph.edge_to.push_back(static_cast<index_t>(to[first]));
        graph.edge_count.push_back(edges.offsets[std::size_t(e) + 1] - edges.offsets[std::size_t(e)]);
    }
    return graph;
}

}  // namespace detail

// SALT step advantages of every step row, and the graph they came from. trajectory_advantages[i]:
// the base advantage of row i's trajectory (the same on each of its rows), e.g. GRPO of the episode
// returns (credit::episode_advantages). Graphs never span episode groups.
template <class Policy, class R, class TrajectoryAdvantages, class Advantages>
salt_graph salt(const Policy& policy, const step_records<R>& steps, const TrajectoryAdvantages& trajectory_advantages,
                Advantages&& advantages, const salt_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::salt: host policy expected (exec::thrust: include "
                                       "<posttrain/thrust/credit.hpp>)");
    constexpr const char* fn = "posttrain::credit::salt";
    return std::visit(
        [&](auto ta, auto out) { return detail::salt_core(detail::host_ops<Policy>{policy}, steps, ta, out, options, fn); },
        posttrain::detail::floating_input<1>(trajectory_advantages, {fn, "trajectory_advantages"}),
        posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::credit
