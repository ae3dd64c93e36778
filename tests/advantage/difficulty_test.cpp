#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/difficulty.hpp>
#include <posttrain/advantage/grpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::bitwise_equal;

TEST_CASE("difficulty_scaled_rewards: product and sum forms by hand") {
    const std::vector<double> r{1, 0, 1, 1};
    const std::vector<double> hard{0.5, 1.0}, gap{2.0, -4.0};  // d_model = 0.5, 1.0 after normalising by max |gap| = 4
    std::vector<double> s(4);
    const auto res = adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{2}, s, {.alpha = 2.0});
    CHECK(res.groups == 2);
    CHECK(res.max_gap == 4.0);
    CHECK(s[0] == doctest::Approx(1 + 2 * 0.5 * 0.5));
    CHECK(s[1] == 0.0);
    CHECK(s[2] == doctest::Approx(1 + 2 * 1.0 * 1.0));
    (void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{2}, s,
                                         {.alpha = 1.0, .alpha_data = 0.5, .combine = adv::difficulty_combine::sum, .normalize_gap = false});
    CHECK(s[0] == doctest::Approx(1 + 0.5 * 0.5 + 2.0));
    CHECK(s[3] == doctest::Approx(1 + 0.5 * 1.0 + 4.0));
    // All-zero gaps: no model-level boost.
    const std::vector<double> zero{0, 0};
    (void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, zero, pt::uniform_groups{2}, s);
    CHECK(s == r);
}

TEST_CASE("difficulty scaling before GRPO: a uniform scale cancels in a group z-score, it survives Dr. GRPO") {
    const std::vector<double> r{1, 0, 1, 0};
    const std::vector<double> hard{1.0}, gap{1.0};
    std::vector<double> s(4), a(4), b(4);
    (void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{4}, s, {.alpha = 1.0});
    (void)adv::grpo(pt::exec::seq, s, pt::uniform_groups{4}, a, {.epsilon = 0});
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{4}, b, {.epsilon = 0});
    for (int i = 0; i < 4; ++i) CHECK(a[i] == doctest::Approx(b[i]));
    (void)adv::grpo(pt::exec::seq, s, pt::uniform_groups{4}, a, adv::grpo_options::dr_grpo());
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{4}, b, adv::grpo_options::dr_grpo());
    for (int i = 0; i < 4; ++i) CHECK(a[i] == doctest::Approx(2 * b[i]));
}

TEST_CASE_TEMPLATE("difficulty_scaled_rewards: seq == par bitwise, in place", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(300, 9, 5);
    const auto N = std::size_t(off.back());
    const auto r = pt::test::random_rewards(N, 6), hard = pt::test::random_rewards(300, 7), gap = pt::test::random_rewards(300, 8);
    std::vector<double> got(r), want(N);
    (void)adv::difficulty_scaled_rewards(B::policy(), got, hard, gap, pt::ragged(off), got);
    (void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::ragged(off), want);
    CHECK(bitwise_equal(got, want));
}

TEST_CASE("difficulty_scaled_rewards: bad input names the argument") {
    const std::vector<double> r{1, 0}, hard{0.5}, gap{1.0}, two{1, 2};
    std::vector<double> s(2);
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, r, two, gap, pt::uniform_groups{2}, s),
                         doctest::Contains("hardness"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, two, pt::uniform_groups{2}, s),
                         doctest::Contains("gap"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{2}, s, {.alpha = NAN}),
                         doctest::Contains("options"), pt::invalid_argument);
}

TEST_CASE("difficulty_scaled_rewards: scaled may alias rewards, never hardness or gap") {
    // One buffer: rewards[0..2), hardness at [2], gap at [3]; scaled over [1..3) overlaps hardness.
    std::vector<double> buf{1, 2, 0.5, 1.0};
    const pt::tensor_view<const double, 1> r(buf.data(), 2), hard(buf.data() + 2, 1), gap(buf.data() + 3, 1);
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{2},
                                                              pt::tensor_view<double, 1>(buf.data() + 1, 2)),
                         doctest::Contains("hardness"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, pt::tensor_view<const double, 1>(buf.data() + 2, 2),
                                                              pt::tensor_view<const double, 1>(buf.data(), 1), gap, pt::uniform_groups{2},
                                                              pt::tensor_view<double, 1>(buf.data() + 2, 2)),
                         doctest::Contains("gap"), pt::invalid_argument);
    // Partly over rewards (another group's rewards would be overwritten before they are read): refused.
    std::vector<double> rb{1, 2, 3}, h2{0.5, 0.5}, g2{1, 1};
    CHECK_THROWS_WITH_AS((void)adv::difficulty_scaled_rewards(pt::exec::seq, pt::tensor_view<const double, 1>(rb.data(), 2), h2, g2,
                                                              pt::uniform_groups{1}, pt::tensor_view<double, 1>(rb.data() + 1, 2)),
                         doctest::Contains("partly overlaps the input 'rewards'"), pt::invalid_argument);
    // In place over rewards stays allowed.
    CHECK_NOTHROW((void)adv::difficulty_scaled_rewards(pt::exec::seq, r, hard, gap, pt::uniform_groups{2},
                                                       pt::tensor_view<double, 1>(buf.data(), 2)));
    CHECK(buf[0] == 1.5);
}
