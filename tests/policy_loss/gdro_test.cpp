// policy_loss::gdro: hand-computed cross-entropy and Plackett-Luce values, gradients against central
// finite differences, limits, the corrected score, bad input, seq == par.

#include <cmath>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/gdro.hpp>

#include "../support/backends.hpp"
#include "../support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;

static_assert(pl::gdro_corrected_score(0.8, 0.6, 0.5, 2.0) == 0.8 - 2.0 * (0.6 - 0.5));
static_assert(pl::gdro_corrected_score(0.8, 0.5, 0.6) == 0.8);  // no drop, no correction

TEST_CASE("gdro: hand-computed values on one group") {
    const std::vector<double> s = {0.2, -0.1, 0.4}, r = {1.0, 0.0, 0.5};
    pl::gdro_options o;
    o.beta = 2;
    std::vector<double> g(3);
    auto res = pl::gdro(pt::exec::seq, s, r, pt::uniform_groups{3}, g, o);
    double zq = 0, zp = 0;
    for (int i = 0; i < 3; ++i) zq += std::exp(r[std::size_t(i)]), zp += std::exp(2 * s[std::size_t(i)]);
    double L = 0;
    for (int i = 0; i < 3; ++i) {
        const double q = std::exp(r[std::size_t(i)]) / zq, p = std::exp(2 * s[std::size_t(i)]) / zp;
        L -= q * std::log(p);
        CHECK(g[std::size_t(i)] == doctest::Approx(2 * (p - q)).epsilon(1e-13));
    }
    CHECK(res.loss == doctest::Approx(L).epsilon(1e-13));
    CHECK(res.groups == 1);

    o.target = pl::gdro_target::plackett_luce;
    res = pl::gdro(pt::exec::seq, s, r, pt::uniform_groups{3}, pt::none, o);
    // order by reward: rows 0, 2, 1
    const double a = 0.4, b = 0.8, c = -0.2;
    const double pl_loss = -(a - std::log(std::exp(a) + std::exp(b) + std::exp(c))) - (b - std::log(std::exp(b) + std::exp(c)));
    CHECK(res.loss == doctest::Approx(pl_loss).epsilon(1e-13));
}

TEST_CASE("gdro: gradients against central finite differences") {
    std::mt19937_64 rng(3);
    std::normal_distribution<double> n(0, 1);
    std::vector<double> s(40), r(40);
    for (auto& x : s) x = n(rng);
    for (auto& x : r) x = n(rng);
    r[3] = r[4];  // a tie
    const std::vector<std::int64_t> off = {0, 8, 9, 9, 20, 40};
    for (auto t : {pl::gdro_target::cross_entropy, pl::gdro_target::plackett_luce}) {
        pl::gdro_options o;
        o.target = t, o.beta = 1.7, o.temperature = 0.5;
        std::vector<double> g(s.size());
        (void)pl::gdro(pt::exec::seq, s, r, pt::ragged(off), g, o, 3.0);
        for (std::size_t k = 0; k < s.size(); ++k) {
            auto at = [&](double d) {
                auto q = s;
                q[k] += d;
                return pl::gdro(pt::exec::seq, q, r, pt::ragged(off), pt::none, o).loss;
            };
            const double fd = 3.0 * (at(1e-6) - at(-1e-6)) / 2e-6;
            CHECK(g[k] == doctest::Approx(fd).epsilon(1e-6).scale(1e-3));
        }
    }
}

TEST_CASE("gdro: limits") {
    SUBCASE("implicit rewards equal to the reward targets minimise the cross-entropy") {
        const std::vector<double> r = {1.0, 0.0, 0.5, -1.0};
        std::vector<double> g(4);
        pl::gdro_options o;
        o.beta = 2, o.temperature = 2;  // r / T = beta * s when s = r / 4
        std::vector<double> s(4);
        for (int i = 0; i < 4; ++i) s[std::size_t(i)] = r[std::size_t(i)] / 4;
        (void)pl::gdro(pt::exec::seq, s, r, pt::uniform_groups{4}, g, o);
        for (double x : g) CHECK(x == doctest::Approx(0).scale(1));
    }
    SUBCASE("singleton and empty groups are not in the mean") {
        const std::vector<double> s = {0.1, 0.2, 0.3}, r = {1, 0, 1};
        const std::vector<std::int64_t> off = {0, 1, 1, 3};
        const auto res = pl::gdro(pt::exec::seq, s, r, pt::ragged(off), pt::none);
        CHECK(res.groups == 1);
        const std::vector<std::int64_t> single = {0, 1, 2, 3};
        CHECK(pl::gdro(pt::exec::seq, s, r, pt::ragged(single), pt::none).loss == 0.0);
    }
}

TEST_CASE("gdro: bad input is refused by name") {
    const std::vector<double> s = {0.1, 0.2}, r = {1.0}, nan_r = {1.0, NAN};
    CHECK_THROWS_WITH_AS((void)pl::gdro(pt::exec::seq, s, r, pt::uniform_groups{2}, pt::none), doctest::Contains("rewards"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::gdro(pt::exec::seq, s, nan_r, pt::uniform_groups{2}, pt::none), doctest::Contains("rewards"),
                         pt::invalid_argument);
    pl::gdro_options o;
    o.temperature = 0;
    CHECK_THROWS_WITH_AS((void)pl::gdro(pt::exec::seq, s, s, pt::uniform_groups{2}, pt::none, o),
                         doctest::Contains("temperature"), pt::invalid_argument);
    std::vector<double> g(3);
    CHECK_THROWS_WITH_AS((void)pl::gdro(pt::exec::seq, s, s, pt::uniform_groups{2}, g), doctest::Contains("grad_scores"),
                         pt::invalid_argument);
}

TEST_CASE_TEMPLATE("gdro: every policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto s = pt::test::random_rewards(4000, 1), r = pt::test::random_rewards(4000, 2);
    for (auto t : {pl::gdro_target::cross_entropy, pl::gdro_target::plackett_luce}) {
        pl::gdro_options o;
        o.target = t;
        std::vector<double> g0(s.size()), g1(s.size());
        const auto r0 = pl::gdro(pt::exec::seq, s, r, pt::uniform_groups{16}, g0, o);
        const auto r1 = pl::gdro(Backend::policy(), s, r, pt::uniform_groups{16}, g1, o);
        CHECK(r0.loss == r1.loss);
        CHECK(pt::test::bitwise_equal(g0, g1));
    }
}

TEST_CASE("gdro: the docs example compiles and runs") {
    const auto scores = pt::test::random_rewards(32, 5), rewards = pt::test::random_rewards(32, 6);
    const index_t G = 8;
    const double task = 0.7, quality_base = 0.6, quality_model = 0.55;
    // docs/algorithms/gdro.md
    namespace pl = posttrain::policy_loss;
    std::vector<double> g(scores.size());
    auto r = pl::gdro(posttrain::exec::par, scores, rewards, posttrain::uniform_groups{G}, g,
                      {.target = pl::gdro_target::plackett_luce, .beta = 0.5});
    double eval = pl::gdro_corrected_score(task, quality_base, quality_model, 1.0);
    CHECK(r.groups == 4);
    CHECK(eval == doctest::Approx(0.65));
}
