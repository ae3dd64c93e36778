// credit::step_returns: hand values, interleaved and contiguous rows, -0.0 and the first step, the
// O(N) scan against a per-trajectory reference loop, seq == par, and bad input.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/returns.hpp>

#include "rollouts.hpp"
#include "support/backends.hpp"

namespace pt = posttrain;
namespace cr = posttrain::credit;
using pt::index_t;
using pt::test::bitwise_equal;

namespace {
// R_t = sum_{k >= t} gamma^(k - t) r_k over the rows of the same trajectory, in row order (O(N^2)).
std::vector<double> reference_returns(const pt::test::rollout_batch& b, double gamma) {
    std::vector<double> out(b.reward.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
        double acc = 0, w = 1;
        for (std::size_t k = i; k < out.size(); ++k)
            if (b.traj[k] == b.traj[i]) {
                acc += w * b.reward[k];
                w *= gamma;
            }
        out[i] = acc;
    }
    return out;
}
}  // namespace

TEST_CASE("step_returns: two interleaved trajectories by hand") {
    std::vector<std::int64_t> g{0, 0, 0, 0, 0}, t{10, 11, 10, 11, 11}, s(5, 0);
    std::vector<double> r{0, 0, 1, 0, 2}, ret(5);
    const auto res = cr::step_returns(pt::exec::seq, cr::steps(g, t, s, r), ret, {.gamma = 0.5});
    CHECK(res.trajectories == 2);
    CHECK(ret == std::vector<double>{0.5, 0.5, 1.0, 1.0, 2.0});
}

TEST_CASE("step_returns: a -0.0 last reward stays -0.0; gamma 1 sums; float output") {
    std::vector<std::int64_t> g{0, 0}, t{1, 1}, s{0, 0};
    std::vector<double> r{0.0, -0.0}, ret(2);
    (void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, r), ret, {.gamma = 0.9});
    CHECK(std::signbit(ret[1]));
    std::vector<float> rf{1.0f, 2.0f}, retf(2);
    (void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, rf), retf, {.gamma = 1.0});
    CHECK(retf == std::vector<float>{3.0f, 2.0f});
}

TEST_CASE_TEMPLATE("step_returns: interleaved and contiguous rows against the O(N^2) reference", B, POSTTRAIN_HOST_BACKENDS) {
    for (bool interleave : {true, false}) {
        const auto b = pt::test::make_rollouts(40, 6, 9, 5, 17, interleave);
        std::vector<double> ret(b.reward.size());
        cr::step_returns_options o{.gamma = 0.95};
        if (!interleave) o.order = cr::trajectory_order::contiguous;
        const auto res = cr::step_returns(B::policy(), b.records(), ret, o);
        CHECK(res.trajectories == 240);
        const auto ref = reference_returns(b, 0.95);
        for (std::size_t i = 0; i < ret.size(); ++i) CHECK(ret[i] == doctest::Approx(ref[i]).epsilon(1e-14));
        std::vector<double> seq_ret(b.reward.size());
        (void)cr::step_returns(pt::exec::seq, b.records(), seq_ret, o);
        CHECK(bitwise_equal(ret, seq_ret));
    }
}

TEST_CASE("step_returns: par equals seq bitwise on a large batch") {
    const auto b = pt::test::make_rollouts(3000, 8, 12, 6, 5);
    std::vector<double> a(b.reward.size()), c(b.reward.size());
    (void)cr::step_returns(pt::exec::seq, b.records(), a);
    (void)cr::step_returns(pt::exec::par.with_threads(4), b.records(), c);
    CHECK(bitwise_equal(a, c));
}

TEST_CASE("step_returns: bad input") {
    std::vector<std::int64_t> g{0, 0, 0, 0}, t{1, 2, 1, 2}, s(4, 0), step{0, 0, 1, 1};
    std::vector<double> r{1, 2, 3, 4}, ret(4);
    const auto recs = cr::steps(g, t, s, r).with_steps(step);
    // Interleaved trajectories are fine by default but refused when contiguity is required.
    CHECK_NOTHROW((void)cr::step_returns(pt::exec::seq, recs, ret));
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, recs, ret, {.order = cr::trajectory_order::contiguous}),
                         doctest::Contains("trajectory 1 is interleaved with other trajectories"), pt::invalid_argument);
    std::vector<std::int64_t> negative{0, 0, -1, 1};
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, r).with_steps(negative), ret),
                         doctest::Contains("step indices must be >= 0, found steps.step[2] = -1"), pt::invalid_argument);
    std::vector<std::int64_t> backwards{1, 0, 0, 1};
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, r).with_steps(backwards), ret),
                         doctest::Contains("not in increasing step order"), pt::invalid_argument);
    std::vector<std::int64_t> two_groups{0, 0, 1, 0};
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(two_groups, t, s, r), ret),
                         doctest::Contains("has steps in two episode groups"), pt::invalid_argument);
    std::vector<double> short_out(3);
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, recs, short_out), doctest::Contains("returns"), pt::invalid_argument);
    std::vector<double> nan_r{1, std::nan(""), 3, 4};
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, nan_r), ret),
                         doctest::Contains("non-finite value"), pt::invalid_argument);
    CHECK_NOTHROW((void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s, nan_r), ret, cr::step_returns_options::verl_agent()));
    CHECK_THROWS_AS((void)cr::step_returns(pt::exec::seq, recs, ret, {.gamma = INFINITY}), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(g, t, s), ret), doctest::Contains("steps.reward"),
                         pt::invalid_argument);
    // The returns may not overwrite the rewards they are computed from.
    CHECK_THROWS_AS((void)cr::step_returns(pt::exec::seq, recs, r), pt::invalid_argument);
}

TEST_CASE("step_returns: sort_steps orders rows by (trajectory, step)") {
    std::vector<std::int64_t> g{0, 0, 0, 0}, t{2, 1, 2, 1}, s(4, 0), step{1, 1, 0, 0};
    const auto rows = cr::sort_steps(pt::exec::seq, cr::steps(g, t, s).with_steps(step));
    CHECK(rows == std::vector<index_t>{3, 1, 2, 0});
}

TEST_CASE("step_returns: empty batch") {
    std::vector<std::int64_t> e;
    std::vector<double> r, ret;
    CHECK(cr::step_returns(pt::exec::seq, cr::steps(e, e, e, r), ret).trajectories == 0);
}
