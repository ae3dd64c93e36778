// credit::salt: reduction to the base estimator when nothing merges, 0 for a step every trajectory
// shares under GRPO, the graph (nodes, visits, distinct trajectories, edges) by hand, prefix tree vs
// (state, action) graph, loops counted once per trajectory, mixing, seq == par bitwise, bad input.

#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/credit/salt.hpp>

#include "rollouts.hpp"
#include "support/backends.hpp"

namespace pt = posttrain;
namespace cr = posttrain::credit;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::bitwise_equal;

TEST_CASE_TEMPLATE("salt: nothing merges -> the base advantages, exactly", B, POSTTRAIN_HOST_BACKENDS) {
    auto b = pt::test::make_rollouts(30, 5, 6, 4, 8);
    for (index_t i = 0; i < b.size(); ++i) b.state[std::size_t(i)] = i;
    std::vector<double> base(b.reward.size()), a(b.reward.size());
    (void)cr::episode_advantages(pt::exec::seq, b.records(), b.episode, base, {.norm = cr::gigpo_norm::mean_std_norm});
    for (auto merge : {cr::salt_merge::state_action, cr::salt_merge::prefix, cr::salt_merge::state}) {
        const auto g = cr::salt(B::policy(), b.records(), base, a, {.merge = merge});
        CHECK(g.num_nodes() == b.size());
        for (index_t i = 0; i < b.size(); ++i) CHECK(a[std::size_t(i)] == base[std::size_t(i)]);
    }
}

TEST_CASE("salt: a step shared by every trajectory of the group gets 0 under GRPO; unique steps keep theirs") {
    // Four trajectories start in the same (state, action), then part.
    std::vector<std::int64_t> g(8, 0), t{0, 1, 2, 3, 0, 1, 2, 3}, s{1, 1, 1, 1, 2, 3, 4, 5}, act{0, 0, 0, 0, 1, 1, 1, 1};
    std::vector<double> ret{1, 0, 0, 1, 1, 0, 0, 1}, base(8), a(8);
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g, t, s), ret, base, {.norm = cr::gigpo_norm::mean_std_norm});
    const auto graph = cr::salt(pt::exec::seq, cr::steps(g, t, s).with_actions(act), base, a);
    for (int i = 0; i < 4; ++i) CHECK(a[std::size_t(i)] == doctest::Approx(0.0).epsilon(1e-15));
    for (int i = 4; i < 8; ++i) CHECK(a[std::size_t(i)] == base[std::size_t(i)]);
    CHECK(graph.num_nodes() == 5);
    CHECK(graph.visits[0] == 4);
    CHECK(graph.trajectories[0] == 4);
    CHECK(graph.num_edges() == 4);
    CHECK(graph.edge_from == std::vector<index_t>{0, 0, 0, 0});
    CHECK(graph.edge_to == std::vector<index_t>{1, 2, 3, 4});
}

TEST_CASE("salt: (state, action) graph re-joins, the prefix tree does not; loops count a trajectory once") {
    // Trajectory 0: A B C; trajectory 1: D B C (re-joins at B); trajectory 2: A B B C (loops on B).
    std::vector<std::int64_t> g(10, 0), t{0, 0, 0, 1, 1, 1, 2, 2, 2, 2}, s{'A', 'B', 'C', 'D', 'B', 'C', 'A', 'B', 'B', 'C'};
    std::vector<double> base{3, 3, 3, -1, -1, -1, -2, -2, -2, -2}, a(10);
    const auto graph = cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a);
    // Nodes by first occurrence: A, B, C, D.
    CHECK(graph.node_of == std::vector<index_t>{0, 1, 2, 3, 1, 2, 0, 1, 1, 2});
    CHECK(graph.visits == std::vector<index_t>{2, 4, 3, 1});
    CHECK(graph.trajectories == std::vector<index_t>{2, 3, 3, 1});
    CHECK(graph.advantage[0] == 0.5);   // (3 - 2) / 2
    CHECK(graph.advantage[1] == 0.0);   // (3 - 1 - 2) / 3, trajectory 2 once
    CHECK(a[3] == -1.0);                // D: decisive, its own advantage
    // Edges: A->B (2), B->C (3), D->B (1), B->B (1).
    CHECK(graph.num_edges() == 4);
    CHECK(graph.edge_count == std::vector<index_t>{2, 3, 1, 1});
    CHECK(graph.edge_from == std::vector<index_t>{0, 1, 3, 1});
    CHECK(graph.edge_to == std::vector<index_t>{1, 2, 1, 1});
    // Prefix tree: A(0,2) -> B(0,2) -> C(0) | B(2) -> C(2); D -> B -> C alone.
    const auto tree = cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a, {.merge = cr::salt_merge::prefix});
    CHECK(tree.num_nodes() == 8);
    CHECK(tree.node_of[0] == tree.node_of[6]);
    CHECK(tree.node_of[1] == tree.node_of[7]);
    CHECK(tree.node_of[2] != tree.node_of[8]);
    CHECK(tree.node_of[4] != tree.node_of[1]);
    CHECK(a[0] == 0.5);
    CHECK(a[2] == 3.0);
    // Mixing toward the original advantage.
    (void)cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a, {.mixing = 0.25});
    CHECK(a[0] == doctest::Approx(0.75 * 3 + 0.25 * 0.5));
    (void)cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a, {.mixing = 0.0});
    CHECK(a == base);
}

TEST_CASE("salt: graphs never span episode groups; actions split states") {
    std::vector<std::int64_t> g{0, 1, 0, 0}, t{0, 1, 2, 3}, s{5, 5, 5, 5}, act{0, 0, 0, 1};
    std::vector<double> base{1, 2, -1, 4}, a(4);
    const auto graph = cr::salt(pt::exec::seq, cr::steps(g, t, s).with_actions(act), base, a);
    CHECK(graph.node_of == std::vector<index_t>{0, 1, 0, 2});
    CHECK(a == std::vector<double>{0.0, 2.0, 0.0, 4.0});
    const auto states = cr::salt(pt::exec::seq, cr::steps(g, t, s).with_actions(act), base, a, {.merge = cr::salt_merge::state});
    CHECK(states.num_nodes() == 2);
    CHECK(a[3] == doctest::Approx(4.0 / 3));
}

TEST_CASE("salt: seq == par bitwise on a large batch, every merge") {
    const auto b = pt::test::make_rollouts(2000, 8, 8, 4, 13);
    std::vector<double> base(b.reward.size());
    (void)cr::episode_advantages(pt::exec::seq, b.records(), b.episode, base);
    for (auto merge : {cr::salt_merge::state_action, cr::salt_merge::prefix, cr::salt_merge::state}) {
        std::vector<double> x(b.reward.size()), y(b.reward.size());
        const auto g1 = cr::salt(pt::exec::seq, b.records(), base, x, {.merge = merge, .mixing = 0.6});
        const auto g2 = cr::salt(pt::exec::par.with_threads(4), b.records(), base, y, {.merge = merge, .mixing = 0.6});
        CHECK(bitwise_equal(x, y));
        CHECK(g1.node_of == g2.node_of);
        CHECK(bitwise_equal(g1.advantage, g2.advantage));
        CHECK(g1.edge_count == g2.edge_count);
    }
}

TEST_CASE("salt: bad input") {
    std::vector<std::int64_t> g{0, 0, 0}, t{0, 1, 0}, s{1, 2, 3};
    std::vector<double> base{1, -1, 1}, a(3);
    CHECK_THROWS_WITH_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a, {.order = cr::trajectory_order::contiguous}),
                         doctest::Contains("interleaved"), pt::invalid_argument);
    std::vector<double> varying{1, -1, 0.5};
    CHECK_THROWS_WITH_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s), varying, a),
                         doctest::Contains("must be the same on every step of a trajectory"), pt::invalid_argument);
    CHECK_THROWS_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s), base, a, {.mixing = 1.5}), pt::invalid_argument);
    std::vector<std::int64_t> negative{0, 0, -1};
    CHECK_THROWS_WITH_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s).with_steps(negative), base, a),
                         doctest::Contains("must be >= 0"), pt::invalid_argument);
    std::vector<double> nan_base{NAN, 0, NAN};
    CHECK_THROWS_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s), nan_base, a), pt::invalid_argument);
    CHECK_THROWS_AS((void)cr::salt(pt::exec::seq, cr::steps(g, t, s), base, base), pt::invalid_argument);
}
