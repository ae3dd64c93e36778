#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/reinforce_pp.hpp>
#include <posttrain/advantage/remax.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using posttrain::index_t;
using pt::test::matrix;

TEST_CASE("discounted returns: the three masking conventions by hand") {
    // one row: rewards [1, 2, 3, 4], mask [1, 0, 1, 1], gamma 0.5
    std::vector<double> r{1, 2, 3, 4}, m{1, 0, 1, 1}, g(4);
    adv::discounted_returns(pt::exec::seq, matrix(r, 1, 4), matrix(m, 1, 4), matrix(g, 1, 4), {0.5, adv::masked_tokens::reset});
    CHECK(g[3] == 4.0);
    CHECK(g[2] == 5.0);
    CHECK(g[1] == 4.5);  // written unmasked, then the running sum is cut
    CHECK(g[0] == 1.0);
    adv::discounted_returns(pt::exec::seq, matrix(r, 1, 4), matrix(m, 1, 4), matrix(g, 1, 4), {0.5, adv::masked_tokens::carry});
    CHECK(g[1] == 0.0);
    CHECK(g[0] == 1.0 + 0.5 * 5.0);  // carried through the masked token
    adv::discounted_returns(pt::exec::seq, matrix(r, 1, 4), matrix(m, 1, 4), matrix(g, 1, 4), {0.5, adv::masked_tokens::zero_rewards});
    CHECK(g[1] == 2.5);
    CHECK(g[0] == 1.0 + 0.5 * 2.5);
}

TEST_CASE_TEMPLATE("reinforce_pp: returns whitened over the batch, masked rows zero", B, POSTTRAIN_HOST_BACKENDS) {
    const index_t N = 300, T = 40;
    const auto r = pt::test::random_rewards(std::size_t(N * T), 8);
    auto m = pt::test::random_mask(std::size_t(N), std::size_t(T), 9);
    for (index_t t = 0; t < T; ++t) m[std::size_t(5 * T + t)] = 0;  // a fully masked row
    std::vector<double> a(r.size()), ret(r.size()), a_seq(r.size());
    const auto st = adv::reinforce_pp(B::policy(), matrix(r, N, T), matrix(m, N, T), matrix(a, N, T), matrix(ret, N, T),
                                      adv::reinforce_pp_options::verl(0.99));
    (void)adv::reinforce_pp(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(a_seq, N, T), pt::none,
                            adv::reinforce_pp_options::verl(0.99));
    CHECK(pt::test::bitwise_equal(a, a_seq));
    for (index_t t = 0; t < T; ++t) CHECK(a[std::size_t(5 * T + t)] == 0.0);
    // whitened valid tokens have mean ~0 and (unbiased) variance ~1
    double s = 0, s2 = 0, c = 0;
    for (std::size_t k = 0; k < a.size(); ++k)
        if (m[k] != 0) {
            s += a[k];
            s2 += a[k] * a[k];
            c += 1;
        }
    CHECK(std::abs(s / c) < 1e-9);
    CHECK(s2 / (c - 1) == doctest::Approx(st.variance / (st.variance + 1e-8)).epsilon(1e-6));
}

TEST_CASE("reinforce_pp_baseline: group-centred outcome, whitened") {
    std::vector<double> r{1, 0, 1, 1, 4};
    std::vector<std::int64_t> off{0, 4, 5};
    std::vector<double> m{1, 1, 1, 1, 1, 0, 1, 1, 1, 1}, a(10);
    (void)adv::reinforce_pp_baseline(pt::exec::seq, r, pt::ragged(off), matrix(m, 5, 2), matrix(a, 5, 2),
                                     adv::reinforce_pp_baseline_options::verl());
    CHECK(a[5] == 0.0);              // masked token
    CHECK(a[0] == a[1]);             // the same scalar on every valid token of a row
    CHECK(a[0] < a[8]);              // singleton keeps its raw score 4 in verl's form, the largest
    CHECK_THROWS_AS((void)adv::reinforce_pp_baseline(pt::exec::seq, r, pt::ragged(off), matrix(m, 2, 5), matrix(a, 2, 5)),
                    pt::invalid_argument);
}

TEST_CASE("remax: reverse cumulative reward minus the greedy baseline") {
    std::vector<double> r{0, 0, 1, 0, 2, 0}, b{0.5, 1.0}, m{1, 1, 1, 1, 1, 0}, a(6), ret(6);
    adv::remax(pt::exec::seq, matrix(r, 2, 3), b, matrix(m, 2, 3), matrix(a, 2, 3), matrix(ret, 2, 3));
    CHECK(ret[0] == 1.0);
    CHECK(a[0] == 0.5);
    CHECK(ret[3] == 2.0);
    CHECK(a[5] == 0.0);  // masked token: return 0, baseline masked
    CHECK_THROWS_AS(adv::remax(pt::exec::seq, matrix(r, 2, 3), std::vector<double>{1.0}, matrix(m, 2, 3), matrix(a, 2, 3), pt::none),
                    pt::invalid_argument);
}

TEST_CASE("returns-based estimators refuse outputs over their inputs, before writing anything") {
    const index_t N = 3, T = 4;
    const std::vector<double> r{1, 2, 3, 4, 0, 1, 0, 1, 2, 2, 2, 2}, b{0.5, 1.0, 0.0};
    std::vector<double> m{1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0};
    const std::vector<double> m0 = m;
    std::vector<double> a(r.size(), -7.0), ret(r.size(), -7.0), wide(r.size() + T, -7.0);
    const auto untouched = [](const std::vector<double>& v) {
        for (double x : v)
            if (x != -7.0) return false;
        return true;
    };
    const auto opts = adv::reinforce_pp_options::verl(0.99);

    // discounted_returns: the returns over the mask.
    CHECK_THROWS_AS(adv::discounted_returns(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(m, N, T)), pt::invalid_argument);

    // reinforce_pp: the advantages over the mask; the returns over the rewards, the mask, or of the
    // wrong shape (checked before the advantages are written).
    CHECK_THROWS_AS((void)adv::reinforce_pp(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(m, N, T), pt::none, opts),
                    pt::invalid_argument);
    std::vector<double> r_copy = r;
    CHECK_THROWS_AS((void)adv::reinforce_pp(pt::exec::seq, matrix(r_copy, N, T), matrix(m, N, T), matrix(a, N, T),
                                            matrix(r_copy, N, T), opts),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::reinforce_pp(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(a, N, T), matrix(m, N, T), opts),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::reinforce_pp(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(a, N, T),
                                            matrix(wide, N + 1, T), opts),
                    pt::invalid_argument);
    CHECK(untouched(a));
    CHECK(untouched(wide));
    CHECK(r_copy == r);
    CHECK(m == m0);

    // reinforce_pp_baseline: the advantages over the mask.
    std::vector<double> rewards{1, 0, 1};
    std::vector<std::int64_t> off{0, 3};
    CHECK_THROWS_AS((void)adv::reinforce_pp_baseline(pt::exec::seq, rewards, pt::ragged(off), matrix(m, N, T), matrix(m, N, T)),
                    pt::invalid_argument);

    // remax: the advantages over the mask; the returns over the baselines (one row's worth) or the mask.
    CHECK_THROWS_AS(adv::remax(pt::exec::seq, matrix(r, N, T), b, matrix(m, N, T), matrix(m, N, T), pt::none), pt::invalid_argument);
    std::vector<double> b_wide(r.size(), 0.5);
    CHECK_THROWS_AS(adv::remax(pt::exec::seq, matrix(r, N, T), pt::tensor_view<const double, 1>(b_wide.data(), N), matrix(m, N, T),
                               matrix(a, N, T), matrix(b_wide, N, T)),
                    pt::invalid_argument);
    CHECK_THROWS_AS(adv::remax(pt::exec::seq, matrix(r, N, T), b, matrix(m, N, T), matrix(a, N, T), matrix(m, N, T)),
                    pt::invalid_argument);
    CHECK(untouched(a));
    CHECK(m == m0);

    // The checks pass for separate buffers: the same calls then write.
    (void)adv::reinforce_pp(pt::exec::seq, matrix(r, N, T), matrix(m, N, T), matrix(a, N, T), matrix(ret, N, T), opts);
    CHECK(ret[0] == doctest::Approx(1 + 0.99 * (2 + 0.99 * 3)));
}
