// exec::thrust(thrust::omp::par) against exec::seq for the credit module: step returns (a
// sequential segmented scan on OMP: bitwise), anchor-state groups (identical), GiGPO (the group
// sums of reduce_by_key may be associated differently: within 1e-12 relative) and SALT (bitwise).

#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <thrust/system/omp/execution_policy.h>

#include <posttrain/adapt/std.hpp>
#include <posttrain/thrust/credit.hpp>

#include "../credit/rollouts.hpp"
#include "../support/backends.hpp"

namespace pt = posttrain;
namespace cr = posttrain::credit;
using pt::index_t;
using pt::test::bitwise_equal;

namespace {
const auto omp = pt::exec::thrust(thrust::omp::par);
}

TEST_CASE("thrust credit: step returns equal seq bitwise (interleaved and contiguous rows, float and double)") {
    for (bool interleave : {true, false}) {
        const auto b = pt::test::make_rollouts(500, 8, 12, 5, 31, interleave);
        cr::step_returns_options o{.gamma = 0.9};
        if (!interleave) o.order = cr::trajectory_order::contiguous;
        std::vector<double> x(b.reward.size()), y(b.reward.size());
        const auto r1 = cr::step_returns(pt::exec::seq, b.records(), x, o);
        const auto r2 = cr::step_returns(omp, b.records(), y, o);
        CHECK(r1.trajectories == r2.trajectories);
        CHECK(bitwise_equal(x, y));
        std::vector<float> xf(b.reward.size()), yf(b.reward.size());
        (void)cr::step_returns(pt::exec::seq, b.records(), xf, o);
        (void)cr::step_returns(omp, b.records(), yf, o);
        CHECK(bitwise_equal(xf, yf));
    }
    std::vector<std::int64_t> e;
    std::vector<double> r, ret;
    CHECK(cr::step_returns(omp, cr::steps(e, e, e, r), ret).trajectories == 0);
}

TEST_CASE("thrust credit: anchor-state groups are identical") {
    const auto b = pt::test::make_rollouts(300, 6, 8, 4, 7);
    const auto g1 = cr::anchor_state_groups(pt::exec::seq, b.records());
    const auto g2 = cr::anchor_state_groups(omp, b.records());
    CHECK(g1.permutation == g2.permutation);
    CHECK(g1.offsets == g2.offsets);
    CHECK(g1.ids == g2.ids);
    CHECK(g1.group_of == g2.group_of);
}

TEST_CASE("thrust credit: GiGPO agrees with seq within 1e-12 relative, every preset") {
    const auto b = pt::test::make_rollouts(800, 8, 10, 5, 3);
    for (auto o : {cr::gigpo_options{}, cr::gigpo_options{.step_weight = 0.5, .norm = cr::gigpo_norm::mean_std_norm},
                   cr::gigpo_options::verl_agent(), cr::gigpo_options::verl_agent(cr::gigpo_norm::mean_std_norm)}) {
        std::vector<double> x(b.reward.size()), y(b.reward.size());
        const auto r1 = cr::gigpo(pt::exec::seq, b.records(), b.episode, x, o);
        const auto r2 = cr::gigpo(omp, b.records(), b.episode, y, o);
        CHECK(r1.step.groups == r2.step.groups);
        CHECK(r1.step.singleton_groups == r2.step.singleton_groups);
        CHECK(r1.episode.groups == r2.episode.groups);
        for (std::size_t i = 0; i < x.size(); ++i) CHECK(y[i] == doctest::Approx(x[i]).epsilon(1e-12).scale(1.0));
    }
}

TEST_CASE("thrust credit: SALT equals seq bitwise, every merge") {
    const auto b = pt::test::make_rollouts(400, 8, 8, 4, 19);
    std::vector<double> base(b.reward.size());
    (void)cr::episode_advantages(pt::exec::seq, b.records(), b.episode, base);
    for (auto merge : {cr::salt_merge::state_action, cr::salt_merge::prefix, cr::salt_merge::state}) {
        std::vector<double> x(b.reward.size()), y(b.reward.size());
        const auto g1 = cr::salt(pt::exec::seq, b.records(), base, x, {.merge = merge, .mixing = 0.8});
        const auto g2 = cr::salt(omp, b.records(), base, y, {.merge = merge, .mixing = 0.8});
        CHECK(bitwise_equal(x, y));
        CHECK(g1.node_of == g2.node_of);
        CHECK(g1.trajectories == g2.trajectories);
        CHECK(g1.edge_count == g2.edge_count);
    }
}

TEST_CASE("thrust credit: bad input gives the host's errors") {
    std::vector<std::int64_t> g{0, 0, 0, 0}, t{1, 2, 1, 2}, s(4, 0), negative{0, 0, -1, 1};
    std::vector<double> r{1, 2, 3, 4}, ret(4);
    CHECK_THROWS_WITH_AS((void)cr::step_returns(omp, cr::steps(g, t, s, r), ret, {.order = cr::trajectory_order::contiguous}),
                         doctest::Contains("interleaved"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)cr::step_returns(omp, cr::steps(g, t, s, r).with_steps(negative), ret),
                         doctest::Contains("must be >= 0"), pt::invalid_argument);
    std::vector<double> varying{1, 0, 2, 0};
    CHECK_THROWS_AS((void)cr::gigpo(omp, cr::steps(g, t, s, r), varying, ret), pt::invalid_argument);
}
