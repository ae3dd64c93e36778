// The exec::thrust paths (ranking, credit, sampling) compiled by nvcc: their POSTTRAIN_HD functors
// must build for sm_90 as well as for the host compiler. Run through thrust::cpp::par (host memory;
// exec::thrust takes host systems) and compared with exec::seq. The Thrust-OMP tests check them in
// depth on every CI run; this file is the "compiled for CUDA" half.

#include <cstdint>
#include <vector>

#include <thrust/system/cpp/execution_policy.h>

#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/gigpo.hpp>
#include <posttrain/ranking/ratings.hpp>
#include <posttrain/ranking/tournament.hpp>
#include <posttrain/sampling/samplers.hpp>
#include <posttrain/thrust/credit.hpp>
#include <posttrain/thrust/ranking.hpp>
#include <posttrain/thrust/sampling.hpp>

#include "harness.hpp"

namespace pt = posttrain;
using pt::index_t;

namespace {
const auto cpp = pt::exec::thrust(thrust::cpp::par);
}

PT_TEST("thrust paths under nvcc: ranking fits and rank transforms equal seq") {
    std::vector<double> q{0.1, 0.9, 0.4, 0.7, 0.3, 0.8, 0.2, 0.6};
    auto judge = [&](index_t a, index_t b) { return pt::ranking::scores{q[std::size_t(a)], q[std::size_t(b)]}; };
    std::vector<double> r(8);
    const auto t = pt::ranking::round_robin(pt::exec::seq, pt::uniform_groups{4}, judge, r, pt::none);
    std::vector<double> a(8), b(8);
    (void)pt::ranking::bradley_terry(pt::exec::seq, t.comparisons, pt::uniform_groups{4}, a);
    (void)pt::ranking::bradley_terry(cpp, t.comparisons, pt::uniform_groups{4}, b);
    PT_CHECK(a == b);
    pt::ranking::rank_rewards(pt::exec::seq, q, pt::uniform_groups{4}, a);
    pt::ranking::rank_rewards(cpp, q, pt::uniform_groups{4}, b);
    PT_CHECK(a == b);
}

PT_TEST("thrust paths under nvcc: step returns and GiGPO") {
    const std::vector<std::int64_t> group{0, 0, 0, 0, 0, 0}, traj{0, 0, 0, 1, 1, 1}, state{1, 2, 3, 1, 2, 4};
    const std::vector<double> reward{0, 0, 1, 0, 0, 0}, episode{1, 1, 1, 0, 0, 0};
    const auto steps = pt::credit::steps(group, traj, state, reward);
    std::vector<double> a(6), b(6);
    (void)pt::credit::step_returns(pt::exec::seq, steps, a);
    (void)pt::credit::step_returns(cpp, steps, b);
    PT_CHECK(a == b);
    (void)pt::credit::gigpo(pt::exec::seq, steps, episode, a);
    (void)pt::credit::gigpo(cpp, steps, episode, b);
    for (std::size_t i = 0; i < a.size(); ++i) PT_CHECK(a[i] - b[i] < 1e-12 && b[i] - a[i] < 1e-12);
}

PT_TEST("thrust paths under nvcc: weighted draws equal seq") {
    const std::vector<double> w{1, 0, 3, 2, 5};
    std::vector<index_t> a(64), b(64), c(3), d(3);
    (void)pt::sampling::sample_with_replacement(pt::exec::seq, w, a, {.seed = 9});
    (void)pt::sampling::sample_with_replacement(cpp, w, b, {.seed = 9});
    PT_CHECK(a == b);
    (void)pt::sampling::sample_without_replacement(pt::exec::seq, w, c, {.seed = 9});
    (void)pt::sampling::sample_without_replacement(cpp, w, d, {.seed = 9});
    PT_CHECK(c == d);
}
