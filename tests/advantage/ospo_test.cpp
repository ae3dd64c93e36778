// advantage::ospo: the one-step mean baseline and its GRPO-style variant over decision-step groups; it
// is advantage::grpo with the matching options, bit for bit.

#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/ospo.hpp>

#include "../support/backends.hpp"
#include "../support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

TEST_CASE_TEMPLATE("ospo: one-step rewards against the decision step's mean", Backend, POSTTRAIN_HOST_BACKENDS) {
    // Five agents acting at two decision steps (ids unsorted, as a dispatch batch arrives).
    const std::vector<double> r = {3.0, 1.0, 2.0, 5.0, 4.0};
    const std::vector<std::int64_t> step = {7, 9, 7, 9, 11};
    const auto groups = pt::grouping::from_ids(pt::exec::seq, step);
    std::vector<double> a(5);
    const auto res = adv::ospo(Backend::policy(), r, groups, a);
    CHECK(a == std::vector<double>{0.5, -2.0, -0.5, 2.0, 0.0});  // the lone agent at step 11 gets 0
    CHECK(res.singleton_groups == 1);

    (void)adv::ospo(Backend::policy(), r, groups, a, adv::ospo_options::grpo_style());
    CHECK(a[0] == doctest::Approx(0.5 / (std::sqrt(0.5) + 1e-6)));
    CHECK(a[1] == doctest::Approx(-2.0 / (std::sqrt(8.0) + 1e-6)));
}

TEST_CASE("ospo: is grpo with the matching options") {
    const auto r = pt::test::random_rewards(1000, 3);
    const auto off = pt::test::random_offsets(100, 12, 4);
    std::vector<double> r2(r.begin(), r.begin() + off.back());
    for (bool norm : {false, true}) {
        adv::ospo_options o;
        o.normalize_by_std = norm;
        std::vector<double> a(r2.size()), b(r2.size());
        (void)adv::ospo(pt::exec::seq, r2, pt::ragged(off), a, o);
        (void)adv::grpo(pt::exec::seq, r2, pt::ragged(off), b, o.grpo());
        CHECK(pt::test::bitwise_equal(a, b));
    }
}

TEST_CASE("ospo: bad input is refused under its own name") {
    const std::vector<double> r = {1.0, 2.0, 3.0};
    std::vector<double> a(2);
    CHECK_THROWS_WITH_AS((void)adv::ospo(pt::exec::seq, r, pt::uniform_groups{3}, a), doctest::Contains("ospo"),
                         pt::invalid_argument);
}

TEST_CASE("ospo: the docs example compiles and runs") {
    const std::vector<double> rewards = {1, 2, 3, 4};
    const std::vector<std::int64_t> step_ids = {0, 1, 0, 1};
    // docs/algorithms/ospo.md
    const auto steps = pt::grouping::from_ids(pt::exec::seq, step_ids);
    std::vector<double> adv(rewards.size());
    (void)pt::advantage::ospo(pt::exec::par, rewards, steps, adv);
    CHECK(adv == std::vector<double>{-1, -1, 1, 1});
}
