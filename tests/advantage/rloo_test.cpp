#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/rloo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

TEST_CASE_TEMPLATE("rloo: leave-one-out baseline, bitwise equal across policies", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(2000, 24, 21);
    const auto r = pt::test::random_rewards(std::size_t(off.back()), 22);
    std::vector<double> got(r.size()), oracle(r.size());
    (void)adv::rloo(B::policy(), r, pt::ragged(off), got);
    (void)adv::rloo(pt::exec::seq, r, pt::ragged(off), oracle);
    CHECK(pt::test::bitwise_equal(got, oracle));
    for (std::size_t g = 0; g + 1 < off.size(); ++g) {
        const auto lo = std::size_t(off[g]), hi = std::size_t(off[g + 1]);
        if (hi - lo < 2) continue;
        double sum = 0;
        for (auto i = lo; i < hi; ++i) sum += r[i];
        for (auto i = lo; i < hi; ++i) REQUIRE(got[i] == doctest::Approx(r[i] - (sum - r[i]) / double(hi - lo - 1)).epsilon(1e-12));
    }
}

TEST_CASE("rloo: singleton and zero-variance policies, presets") {
    std::vector<double> r{2, 2, 2, 5, 1, 0};
    std::vector<std::int64_t> off{0, 3, 4, 6};
    std::vector<double> a(6);
    auto res = adv::rloo(pt::exec::seq, r, pt::ragged(off), a);
    CHECK(res.singleton_groups == 1);
    CHECK(res.zero_variance_groups == 1);
    CHECK(a[0] == 0.0);
    CHECK(a[3] == 0.0);
    CHECK(a[4] == 1.0);
    CHECK(a[5] == -1.0);
    (void)adv::rloo(pt::exec::seq, r, pt::ragged(off), a, adv::rloo_options::verl());
    CHECK(a[3] == 5.0);  // the loop form keeps the raw score
    (void)adv::rloo(pt::exec::seq, r, pt::ragged(off), a, adv::rloo_options::verl_vectorized());
    CHECK(a[3] == 0.0);
    std::vector<double> shifted{12, 12, 12, 15, 11, 10};
    std::vector<double> b(6);
    (void)adv::rloo(pt::exec::seq, shifted, pt::ragged(off), b, adv::rloo_options::verl_vectorized());
    CHECK(pt::test::bitwise_equal(a, b));  // shift invariance (exact for these values)
}

TEST_CASE("rloo: bad input") {
    std::vector<double> r{1, 2}, a(3);
    CHECK_THROWS_WITH_AS((void)adv::rloo(pt::exec::seq, r, pt::uniform_groups{2}, a),
                         doctest::Contains("posttrain::advantage::rloo: argument 'advantages'"), pt::invalid_argument);
}
