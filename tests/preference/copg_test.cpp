#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/copg.hpp>
#include <posttrain/preference/dpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::check_gradient;
using pt::test::uniform;

TEST_CASE_TEMPLATE("copg: finite differences over ragged groups (tokens), seq == par", Backend, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t N = 10, T = 7;
    const std::vector<std::int64_t> offsets{0, 2, 2, 6, 10};
    std::vector<double> lp = uniform(std::size_t(N * T), -3.0, -0.1, 31), lr = uniform(std::size_t(N * T), -3.0, -0.1, 32);
    const std::vector<double> mask = pt::test::random_mask(std::size_t(N), std::size_t(T), 33), R = uniform(std::size_t(N), 0.0, 1.0, 34);
    pref::copg_options o{.beta = 0.3, .grad_scale = 2.5};
    auto call = [&](const auto& pol, std::vector<double>* g, double scale) {
        auto q = o;
        q.grad_scale = scale;
        pref::sequence_grad G;
        if (g) G = matrix(*g, N, T);
        return pref::copg(pol, pref::sequence_input::tokens(matrix(lp, N, T), matrix(mask, N, T)),
                          pref::sequence_input::tokens(matrix(lr, N, T), matrix(mask, N, T)), R, pt::ragged(offsets), G, q);
    };
    std::vector<double> g(lp.size()), gs(lp.size());
    const auto r = call(Backend::policy(), &g, 2.5);
    CHECK(r.groups == 3);
    CHECK(r.pairs == 1 + 6 + 6);
    check_gradient(lp, g, [&] { return call(pt::exec::seq, nullptr, 1.0).loss * 2.5; }, &mask);
    const auto s = call(pt::exec::seq, &gs, 2.5);
    CHECK(pt::test::bitwise_equal(g, gs));
    CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
}

TEST_CASE("copg: the pairwise definition, and k = 2 with a reward gap of 1/2 is beta^2 * IPO (sum form)") {
    // k = 3, hand pairwise sum
    std::vector<double> s{-4.0, -6.0, -5.0}, r{-5.0, -5.0, -5.0}, R{1.0, 0.0, 0.5}, g(3);
    const double beta = 0.2;
    const auto res = pref::copg(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), R, pt::uniform_groups{3},
                                g, {.beta = beta});
    double a[3], loss = 0;
    for (int i = 0; i < 3; ++i) a[i] = R[std::size_t(i)] - beta * (s[std::size_t(i)] - r[std::size_t(i)]);
    for (int i = 0; i < 3; ++i)
        for (int j = i + 1; j < 3; ++j) loss += (a[i] - a[j]) * (a[i] - a[j]);
    CHECK(res.loss == doctest::Approx(loss / 2).epsilon(1e-14));
    CHECK(g[0] == doctest::Approx(-beta * ((a[0] - a[1]) + (a[0] - a[2]))).epsilon(1e-14));  // 2 beta / (k-1) = beta
    // k = 2 vs IPO: (h - 1/(2 beta))^2 with h = l_w - l_l
    std::vector<double> s2{-7.0, -9.0, -3.0, -2.5}, r2{-8.0, -8.0, -3.0, -3.0}, R2{0.5, 0.0, 0.5, 0.0}, g2(4);
    const auto k2 = pref::copg(pt::exec::seq, pref::sequence_input::sums(s2), pref::sequence_input::sums(r2), R2,
                               pt::uniform_groups{2}, g2, {.beta = beta});
    double ipo = 0;
    for (int p = 0; p < 2; ++p) {
        const double h = (s2[std::size_t(2 * p)] - r2[std::size_t(2 * p)]) - (s2[std::size_t(2 * p + 1)] - r2[std::size_t(2 * p + 1)]);
        const double term = h - 1 / (2 * beta);
        ipo += term * term;
        // IPO gradient 2 (h - 1/(2 beta)) times beta^2, over the two pairs
        CHECK(g2[std::size_t(2 * p)] == doctest::Approx(beta * beta * 2 * term / 2).epsilon(1e-12));
        CHECK(g2[std::size_t(2 * p + 1)] == doctest::Approx(-g2[std::size_t(2 * p)]).epsilon(1e-14));
    }
    CHECK(k2.loss == doctest::Approx(beta * beta * ipo / 2).epsilon(1e-12));
}

TEST_CASE("copg: k = 2, reward gap 1/2 equals beta^2 * preference::dpo(ipo on sums)") {
    const double beta = 0.25;
    std::vector<double> s{-7.0, -9.0, -3.0, -2.5}, r{-8.0, -8.0, -3.0, -3.0}, R{0.5, 0.0, 0.5, 0.0}, g(4);
    const auto c = pref::copg(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), R,
                              pt::uniform_groups{2}, g, {.beta = beta});
    std::vector<double> sw{s[0], s[2]}, sl{s[1], s[3]}, rw{r[0], r[2]}, rl{r[1], r[3]}, gw(2), gl(2);
    const auto d = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl),
                             pref::sequence_input::sums(rw), pref::sequence_input::sums(rl), gw, gl,
                             pref::dpo_options::openrlhf(beta, 0, /*ipo=*/true));
    CHECK(c.loss == doctest::Approx(beta * beta * d.loss).epsilon(1e-13));
    for (int p = 0; p < 2; ++p) {
        CHECK(g[std::size_t(2 * p)] == doctest::Approx(beta * beta * gw[std::size_t(p)]).epsilon(1e-13));
        CHECK(g[std::size_t(2 * p + 1)] == doctest::Approx(beta * beta * gl[std::size_t(p)]).epsilon(1e-13));
    }
}

TEST_CASE("copg: extreme log-ratios give finite (huge) values; identical rewards pull log-ratios together") {
    for (double m : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> s{m, 0.0}, r{0.0, 0.0}, R{1.0, 0.0}, g(2);
        const auto res = pref::copg(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), R,
                                    pt::uniform_groups{2}, g, {});
        CHECK(std::isfinite(res.loss));
        CHECK(std::isfinite(g[0]));
    }
    std::vector<double> s{-1.0, -2.0}, r{-1.5, -1.5}, R{0.3, 0.3}, g(2);
    (void)pref::copg(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), R, pt::uniform_groups{2}, g, {});
    CHECK(g[0] > 0);  // the higher log-ratio is pushed down
    CHECK(g[1] == -g[0]);
}

TEST_CASE("copg: bad input") {
    std::vector<double> s{-1.0, -2.0, -3.0}, R{1.0, 0.0, 0.5}, R2{1.0, 0.0}, g(3), bad{1.0, std::nan(""), 0.0};
    auto S = [](const std::vector<double>& v) { return pref::sequence_input::sums(v); };
    auto expect = [](auto&& call, const std::string& needle) { pt::test::expect_error(call, "posttrain::preference::copg", needle); };
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), R2, pt::uniform_groups{3}, g, {}); }, "rewards");
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), bad, pt::uniform_groups{3}, g, {}); }, "non-finite");
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), R, pt::uniform_groups{1}, g, {}); }, "at least 2");
    const std::vector<std::int64_t> off{0, 2, 3};
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), R, pt::ragged(off), g, {}); }, "group 1");
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), R, pt::uniform_groups{3}, g, {.beta = 0}); }, "beta");
    std::vector<double> g2(2);
    expect([&] { (void)pref::copg(pt::exec::seq, S(s), S(s), R, pt::uniform_groups{3}, g2, {}); }, "grad_policy");
}
