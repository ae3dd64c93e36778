// HBPO budget-aware rewards and advantages, GCPO contrastive masking and length reward:
// hand-computed values, the official presets, edge cases, bad input, seq == par bitwise.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/budget.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

TEST_CASE_TEMPLATE("hbpo_rewards: by hand", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<std::uint8_t> ok{1, 1, 1, 0, 1, 1};
    std::vector<double> len{1000, 600, 1000, 100, 5000, 2048}, bud{512, 1024, 0, 512, 0, 2048}, r(6);
    adv::hbpo_rewards(B::policy(), ok, len, bud, r);
    const double pi = std::numbers::pi;
    auto f = [&](double x) { return 4 * std::cos(pi * x / 8192); };
    CHECK(r[0] == doctest::Approx(std::min(f(1000) - 488.0 / 4096, f(512))));  // over budget: deviation penalty binds
    CHECK(r[1] == doctest::Approx(std::min(f(600) - 424.0 / 4096, f(1024))));  // under budget: still penalised by |b - L|
    CHECK(r[1] < f(600));
    CHECK(r[2] == doctest::Approx(f(1000)));
    CHECK(r[3] == 0.0);  // incorrect
    CHECK(r[4] == 0.0);  // correct but longer than L_max
    CHECK(r[5] == doctest::Approx(f(2048)));
    // The official constants: PI_APPROX and rounding to 2 decimals without a budget.
    adv::hbpo_rewards(B::policy(), ok, len, bud, r, adv::hbpo_reward_options::official());
    CHECK(r[2] == std::nearbyint(4 * std::cos(3.1416 * 1000 / 8192) * 100) / 100);
    CHECK(r[2] == doctest::Approx(3.71));
    CHECK(r[0] == doctest::Approx(std::min(4 * std::cos(3.1416 * 1000 / 8192) - 488.0 / 4096, 4 * std::cos(3.1416 * 512 / 8192))));
}

TEST_CASE_TEMPLATE("hbpo_advantages: grpo plus the inter-subgroup term", B, POSTTRAIN_HOST_BACKENDS) {
    // one group of 4: budgets 512, 512, 1024, 1024
    std::vector<double> r{1, 3, 2, 2}, bud{512, 512, 1024, 1024}, a(4), g(4);
    const auto res = adv::hbpo_advantages(B::policy(), r, bud, pt::uniform_groups{4}, a);
    CHECK(res.groups == 1);
    (void)adv::grpo(B::policy(), r, pt::uniform_groups{4}, g, adv::grpo_options::verl());
    auto f = [&](double x) { return 4 * std::cos(std::numbers::pi * x / 8192); };
    CHECK(a[0] == doctest::Approx(g[0] + (2.0 - f(512))));
    CHECK(a[1] == doctest::Approx(g[1] + (2.0 - f(512))));
    CHECK(a[2] == doctest::Approx(g[2] + (2.0 - f(1024))));
    // group_mean baseline: the subgroup means equal the group mean here, so the term vanishes.
    adv::hbpo_advantage_options gm;
    gm.inter = adv::hbpo_inter::group_mean;
    (void)adv::hbpo_advantages(B::policy(), r, bud, pt::uniform_groups{4}, a, gm);
    for (int i = 0; i < 4; ++i) CHECK(a[std::size_t(i)] == doctest::Approx(g[std::size_t(i)]));
    std::vector<double> r2{0, 0, 4, 4};
    (void)adv::hbpo_advantages(B::policy(), r2, bud, pt::uniform_groups{4}, a, gm);
    (void)adv::grpo(B::policy(), r2, pt::uniform_groups{4}, g, adv::grpo_options::verl());
    CHECK(a[0] == doctest::Approx(g[0] - 2.0));
    CHECK(a[3] == doctest::Approx(g[3] + 2.0));
    // official: the inter term counted twice.
    (void)adv::hbpo_advantages(B::policy(), r, bud, pt::uniform_groups{4}, a, adv::hbpo_advantage_options::official());
    CHECK(a[0] == doctest::Approx((r[0] - 2.0) / (std::sqrt(2.0 / 3) + 1e-6) + 2 * (2.0 - 4 * std::cos(3.1416 * 512 / 8192))));
}

TEST_CASE("hbpo_advantages: under nonfinite::ignore a NaN reward is missing, not poison") {
    const double nan = std::nan("");
    // budgets 512, 512, 1024, 1024; the NaN row sits in the first subgroup.
    std::vector<double> r{1, nan, 2, 4}, bud{512, 512, 1024, 1024}, a(4), g(4);
    for (auto inter : {adv::hbpo_inter::budget_ceiling, adv::hbpo_inter::group_mean}) {
        adv::hbpo_advantage_options o;
        o.intra.nonfinite_rewards = adv::nonfinite::ignore;
        o.inter = inter;
        (void)adv::hbpo_advantages(pt::exec::seq, r, bud, pt::uniform_groups{4}, a, o);
        (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{4}, g, o.intra);
        auto f = [&](double x) { return 4 * std::cos(std::numbers::pi * x / 8192); };
        const double base0 = inter == adv::hbpo_inter::group_mean ? 7.0 / 3 : f(512);
        const double base1 = inter == adv::hbpo_inter::group_mean ? 7.0 / 3 : f(1024);
        CHECK(a[0] == doctest::Approx(g[0] + (1.0 - base0)));  // subgroup mean over its one valid row
        CHECK(a[1] == g[1]);                                      // the ignored row: grpo's value, nothing added
        CHECK(a[2] == doctest::Approx(g[2] + (3.0 - base1)));
        CHECK(a[3] == doctest::Approx(g[3] + (3.0 - base1)));
        for (double x : a) CHECK(std::isfinite(x));
    }
    // A subgroup of ignored rows only: no term anywhere in it.
    std::vector<double> r2{nan, nan, 2, 4};
    adv::hbpo_advantage_options o;
    o.intra.nonfinite_rewards = adv::nonfinite::ignore;
    (void)adv::hbpo_advantages(pt::exec::seq, r2, bud, pt::uniform_groups{4}, a, o);
    (void)adv::grpo(pt::exec::seq, r2, pt::uniform_groups{4}, g, o.intra);
    CHECK(a[0] == g[0]);
    CHECK(a[1] == g[1]);
    for (double x : a) CHECK(std::isfinite(x));
}

TEST_CASE("hbpo: edge cases and bad input") {
    std::vector<double> r{5}, bud{512}, a(1);
    (void)adv::hbpo_advantages(pt::exec::seq, r, bud, pt::uniform_groups{1}, a);
    CHECK(a[0] == doctest::Approx(5 / (1 + 1e-6)));  // verl's singleton (mean 0, std 1), no inter term
    std::vector<double> shortb{};
    CHECK_THROWS_AS((void)adv::hbpo_advantages(pt::exec::seq, r, shortb, pt::uniform_groups{1}, a), pt::invalid_argument);
    std::vector<std::uint8_t> ok{1};
    std::vector<double> len{-1}, out(1);
    CHECK_THROWS_AS(adv::hbpo_rewards(pt::exec::seq, ok, len, bud, out), pt::invalid_argument);
    len[0] = 10;
    adv::hbpo_reward_options bad;
    bad.max_length = 0;
    CHECK_THROWS_AS(adv::hbpo_rewards(pt::exec::seq, ok, len, bud, out, bad), pt::invalid_argument);
    bud[0] = std::nan("");
    CHECK_THROWS_AS(adv::hbpo_rewards(pt::exec::seq, ok, len, bud, out), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("gcpo_rewards: contrastive masking and length reward, by hand", B, POSTTRAIN_HOST_BACKENDS) {
    // group 0: aux rows 0,1 (both correct), non-aux rows 2,3 (one correct): aux helps.
    // group 1: aux rows 4 (wrong), non-aux 5 (correct): aux hurts.
    // group 2: all aux: masked.  group 3: equal accuracy: masked.
    std::vector<double> base{1, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    std::vector<std::uint8_t> ok{1, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    std::vector<std::uint8_t> aux{1, 1, 0, 0, 1, 0, 1, 1, 1, 0};
    std::vector<double> len{1024, 4096, 512, 100, 50, 2048, 10, 10, 10, 10}, out(10);
    std::vector<std::int64_t> off{0, 4, 6, 8, 10};
    const auto res = adv::gcpo_rewards(B::policy(), base, ok, aux, len, pt::ragged(off), out);
    CHECK(res.positive_groups == 1);
    CHECK(res.negative_groups == 1);
    CHECK(res.masked_groups == 2);
    CHECK(out[0] == doctest::Approx(1 + 1 + 0.5));
    CHECK(out[1] == doctest::Approx(1 + 1 + 1));  // length capped at the target
    CHECK(out[2] == doctest::Approx(1 + 0.25));   // no aux: no aux reward
    CHECK(out[3] == 0.0);                         // incorrect: no length reward
    CHECK(out[4] == -1.0);                        // aux hurt: -r_aux
    CHECK(out[5] == doctest::Approx(2.0));
    CHECK(out[6] == doctest::Approx(1 + 10.0 / 2048));
    CHECK(out[8] == 0.0);
    adv::gcpo_options wide;
    wide.margin = 0.6;  // the gaps of 0.5 and 1.0: only group 1's survives
    const auto r2 = adv::gcpo_rewards(B::policy(), base, ok, aux, len, pt::ragged(off), out, wide);
    CHECK(r2.positive_groups == 0);
    CHECK(r2.negative_groups == 1);
}

TEST_CASE("gcpo: bad input, seq == par bitwise") {
    std::vector<double> base{1}, len{-5}, out(1);
    std::vector<std::uint8_t> ok{1}, aux{1};
    CHECK_THROWS_AS((void)adv::gcpo_rewards(pt::exec::seq, base, ok, aux, len, pt::uniform_groups{1}, out), pt::invalid_argument);
    len[0] = 5;
    adv::gcpo_options bad;
    bad.target_length = 0;
    CHECK_THROWS_AS((void)adv::gcpo_rewards(pt::exec::seq, base, ok, aux, len, pt::uniform_groups{1}, out, bad), pt::invalid_argument);
    std::vector<double> out2(2);
    CHECK_THROWS_AS((void)adv::gcpo_rewards(pt::exec::seq, base, ok, aux, len, pt::uniform_groups{1}, out2), pt::invalid_argument);

    const std::size_t n = 32768;
    std::vector<double> rb(n), ln(n), bg(n), o1(n), o2(n), h1(n), h2(n), a1(n), a2(n);
    std::vector<std::uint8_t> c(n), u(n);
    for (std::size_t i = 0; i < n; ++i) {
        c[i] = (i * 7) % 3 == 0;
        u[i] = (i * 5) % 4 == 0;
        rb[i] = c[i];
        ln[i] = double((i * 131) % 5000);
        bg[i] = double(512 * (1 + i % 4));
    }
    auto par = pt::exec::par.with_threads(4);
    (void)adv::gcpo_rewards(pt::exec::seq, rb, c, u, ln, pt::uniform_groups{16}, o1);
    (void)adv::gcpo_rewards(par, rb, c, u, ln, pt::uniform_groups{16}, o2);
    CHECK(pt::test::bitwise_equal(o1, o2));
    adv::hbpo_rewards(pt::exec::seq, c, ln, bg, h1);
    adv::hbpo_rewards(par, c, ln, bg, h2);
    CHECK(pt::test::bitwise_equal(h1, h2));
    (void)adv::hbpo_advantages(pt::exec::seq, h1, bg, pt::uniform_groups{16}, a1);
    (void)adv::hbpo_advantages(par, h1, bg, pt::uniform_groups{16}, a2);
    CHECK(pt::test::bitwise_equal(a1, a2));
}

TEST_CASE("hbpo_rewards: rewards may be lengths or budgets themselves, but not partly over them") {
    std::vector<std::uint8_t> ok{1, 1, 1};
    std::vector<double> len{1000, 600, 1000, 7}, bud{512, 1024, 0}, r(3);
    adv::hbpo_rewards(pt::exec::seq, ok, pt::tensor_view<const double, 1>(len.data(), 3), bud, r);
    auto in_place = len;
    adv::hbpo_rewards(pt::exec::seq, ok, pt::tensor_view<const double, 1>(in_place.data(), 3), bud,
                      pt::tensor_view<double, 1>(in_place.data(), 3));
    CHECK(std::vector<double>(in_place.begin(), in_place.begin() + 3) == r);
    CHECK_THROWS_WITH_AS(adv::hbpo_rewards(pt::exec::seq, ok, pt::tensor_view<const double, 1>(len.data() + 1, 3), bud,
                                           pt::tensor_view<double, 1>(len.data(), 3)),
                         doctest::Contains("'rewards': the output partly overlaps the input 'lengths'"), pt::invalid_argument);
    CHECK(len == std::vector<double>{1000, 600, 1000, 7});  // nothing written
}
