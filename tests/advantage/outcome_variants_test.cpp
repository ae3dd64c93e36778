// OPO, pass@k, GPG, GDPO: the smaller outcome estimators.
#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gdpo.hpp>
#include <posttrain/advantage/gpg.hpp>
#include <posttrain/advantage/opo.hpp>
#include <posttrain/advantage/passk.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

TEST_CASE_TEMPLATE("opo: length-weighted baseline", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> r{1, 0, 3}, len{3, 1, 5}, a(3);
    std::vector<std::int64_t> off{0, 2, 3};
    (void)adv::opo(B::policy(), r, len, pt::ragged(off), a);
    CHECK(a[0] == doctest::Approx(0.25));  // b = (3*1 + 1*0) / 4
    CHECK(a[1] == doctest::Approx(-0.75));
    CHECK(a[2] == 0.0);
    (void)adv::opo(B::policy(), r, len, pt::ragged(off), a, adv::opo_options::verl());
    CHECK(a[2] == 3.0);
    std::vector<double> neg{1, -1, 1};
    CHECK_THROWS_WITH_AS((void)adv::opo(B::policy(), r, neg, pt::ragged(off), a), doctest::Contains("lengths must be >= 0"),
                         pt::invalid_argument);
    std::vector<double> buf{3, 1, 5, 0};  // advantages one element past the lengths: groups would overwrite them
    CHECK_THROWS_WITH_AS((void)adv::opo(B::policy(), r, pt::tensor_view<const double, 1>(buf.data(), 3), pt::ragged(off),
                                        pt::make_view(buf.data() + 1, 3)),
                         doctest::Contains("overlaps the input 'lengths'"), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("grpo_passk: only the best row is credited", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> r{0.2, 0.9, 0.5, 0.1, 1, 1, 0, 0};
    std::vector<double> a(8);
    (void)adv::grpo_passk(B::policy(), r, pt::uniform_groups{4}, a, {.norm_by_std = false});
    CHECK(a[1] == doctest::Approx(0.4));
    CHECK(a[0] == 0.0);
    CHECK(a[2] == 0.0);
    for (int i = 4; i < 8; ++i) CHECK(a[i] == 0.0);  // a tie for the best: gap 0
    std::vector<double> s{1.0, 2.0, 3.0};
    std::vector<double> as(3);
    CHECK_THROWS_AS((void)adv::grpo_passk(B::policy(), s, pt::uniform_groups{1}, as, adv::passk_options::verl()), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("gpg: alpha from the batch's non-zero rewards", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> r{1, 0, 0, 0, 0, 0, 0, 1};
    std::vector<double> a(8);
    (void)adv::gpg(B::policy(), r, pt::uniform_groups{4}, a);
    // alpha = 8 / 2 = 4; group mean 0.25
    CHECK(a[0] == doctest::Approx(4 * 0.75));
    CHECK(a[1] == doctest::Approx(-4 * 0.25));
    (void)adv::gpg(B::policy(), r, pt::uniform_groups{4}, a, {.f_norm = 2.0, .alpha = 1.0});
    CHECK(a[0] == doctest::Approx(0.375));
}

TEST_CASE_TEMPLATE("gdpo: per-component normalisation then batch z-score", B, POSTTRAIN_HOST_BACKENDS) {
    // Paper toy: G = 2, two binary rewards. Group 1: totals (0, 1) from (0,0),(0,1); group 2: (0, 2) from (0,0),(1,1).
    std::vector<double> r{0, 0, 0, 1, 0, 0, 1, 1};
    const pt::tensor_view<const double, 2> rv(r.data(), 4, 2);
    std::vector<double> a(4), s(4);
    adv::gdpo_options o;
    o.batch_normalize = false;
    o.component.epsilon = 0.0;
    (void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, a, s, o);
    CHECK(s[0] == doctest::Approx(-0.70710678));
    CHECK(s[1] == doctest::Approx(0.70710678));
    CHECK(s[2] == doctest::Approx(-1.41421356));
    CHECK(s[3] == doctest::Approx(1.41421356));
    (void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, a, adv::gdpo_options::gdpo());
    double mean = 0;
    for (double v : a) mean += v / 4;
    CHECK(std::abs(mean) < 1e-12);
    // Weights: one per component.
    adv::gdpo_options bad;
    bad.weights = {1.0};
    CHECK_THROWS_WITH_AS((void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, a, bad),
                         doctest::Contains("expected one weight per reward component (2), found 1"), pt::invalid_argument);
    // sum_then_normalize equals GRPO on the weighted sum.
    std::vector<double> sum{0, 1, 0, 2}, g(4);
    auto trl = adv::gdpo_options::trl(adv::aggregation::sum_then_normalize);
    (void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, a, trl);
    (void)adv::grpo(B::policy(), sum, pt::uniform_groups{2}, g, adv::grpo_options::trl());
    CHECK(pt::test::bitwise_equal(a, g));
    // combined is written after the advantages: refused over them (or a wrong length) before anything is written.
    std::vector<double> keep(4, 7.0), short_combined(3);
    CHECK_THROWS_WITH_AS((void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, keep, keep, o),
                         doctest::Contains("overlaps the input 'advantages'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::gdpo(B::policy(), rv, pt::uniform_groups{2}, keep, short_combined, o),
                         doctest::Contains("expected length"), pt::invalid_argument);
    CHECK(keep == std::vector<double>(4, 7.0));
}

TEST_CASE("outcome variants: NaN, empty responses and option combinations") {
    // OPO: all responses of a group empty -> plain mean; constant group -> exactly 0.
    std::vector<double> r{1, 3, 0.35, 0.35, 0.35}, zero_len{0, 0, 1, 2, 3}, a(5);
    std::vector<std::int64_t> off{0, 2, 5};
    const auto res = adv::opo(pt::exec::seq, r, zero_len, pt::ragged(off), a);
    CHECK(a[0] == -1.0);
    CHECK(a[1] == 1.0);
    CHECK(res.zero_variance_groups == 1);
    for (int i = 2; i < 5; ++i) CHECK(a[i] == 0.0);
    // pass@k under nonfinite::propagate: a NaN poisons its group.
    std::vector<double> rn{std::nan(""), 1, 0, 2};
    (void)adv::grpo_passk(pt::exec::seq, rn, pt::uniform_groups{2}, a = std::vector<double>(4),
                          {.nonfinite_rewards = adv::nonfinite::propagate});
    CHECK(std::isnan(a[0]));
    CHECK(std::isnan(a[1]));
    CHECK(a[3] == doctest::Approx(2 / (std::sqrt(2.0) + 1e-6)));
    // GDPO under nonfinite::propagate: NaN propagates to the sum instead of being dropped.
    std::vector<double> rk{0, std::nan(""), 1, 1, 0, 0, 1, 1};
    std::vector<double> s(4), adv4(4);
    adv::gdpo_options o;
    o.component.nonfinite_rewards = adv::nonfinite::propagate;
    o.batch_normalize = false;
    (void)adv::gdpo(pt::exec::seq, pt::tensor_view<const double, 2>(rk.data(), 4, 2), pt::uniform_groups{2}, adv4, s, o);
    CHECK(std::isnan(s[0]));
    CHECK(std::isnan(s[1]));
    CHECK(!std::isnan(s[2]));
    // float32 statistics reproduce verl only; other combinations are refused.
    std::vector<double> g{1, 0, 1, 1}, ga(4);
    adv::grpo_options f32 = adv::grpo_options::verl_vectorized();
    f32.leave_one_out = true;
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, g, pt::uniform_groups{4}, ga, f32),
                         doctest::Contains("argument 'options.stats'"), pt::invalid_argument);
}
