#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/dpo.hpp>
#include <posttrain/preference/iterative.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::check_gradient;
using pt::test::expect_error;
using pt::test::uniform;

namespace {

pref::sequence_input S(const std::vector<double>& v) { return pref::sequence_input::sums(v); }
}  // namespace

// ---- DNO

TEST_CASE_TEMPLATE("dno: finite differences (tokens), seq == par", Backend, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t B = 6, T = 9;
    std::vector<double> p1 = uniform(std::size_t(B * T), -3, -0.1, 41), p2 = uniform(std::size_t(B * T), -3, -0.1, 42);
    const std::vector<double> t1 = uniform(std::size_t(B * T), -3, -0.1, 43), t2 = uniform(std::size_t(B * T), -3, -0.1, 44);
    const std::vector<double> m1 = pt::test::random_mask(std::size_t(B), std::size_t(T), 45), m2 = pt::test::random_mask(std::size_t(B), std::size_t(T), 46);
    const std::vector<double> q = uniform(std::size_t(B), 0.0, 1.0, 47);
    auto tok = [&](const std::vector<double>& v, const std::vector<double>& m) {
        return pref::sequence_input::tokens(matrix(v, B, T), matrix(m, B, T));
    };
    auto call = [&](const auto& pol, std::vector<double>* g1, std::vector<double>* g2, double scale) {
        pref::sequence_grad G1, G2;
        if (g1) G1 = matrix(*g1, B, T);
        if (g2) G2 = matrix(*g2, B, T);
        return pref::dno(pol, tok(p1, m1), tok(p2, m2), tok(t1, m1), tok(t2, m2), q, G1, G2, {},
                         {.eta = 0.5, .grad_scale = scale});
    };
    std::vector<double> g1(p1.size()), g2(p2.size()), s1(p1.size()), s2(p2.size());
    const auto r = call(Backend::policy(), &g1, &g2, 0.8);
    check_gradient(p1, g1, [&] { return call(pt::exec::seq, nullptr, nullptr, 1).loss * 0.8; }, &m1);
    check_gradient(p2, g2, [&] { return call(pt::exec::seq, nullptr, nullptr, 1).loss * 0.8; }, &m2);
    const auto s = call(pt::exec::seq, &s1, &s2, 0.8);
    CHECK(pt::test::bitwise_equal(g1, s1));
    CHECK(pt::test::bitwise_equal(g2, s2));
    CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
}

TEST_CASE("dno: q = 1 is DPO with the previous iterate as reference; q = 1/2 pulls u to 0; extremes finite") {
    std::vector<double> p1{-10.0}, p2{-12.0}, t1{-11.0}, t2{-11.0}, one{1.0}, half{0.5}, g1(1), g2(1), losses(1);
    const double eta = 0.1, u = eta * ((-10.0 + 11.0) - (-12.0 + 11.0));
    auto r = pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), one, g1, g2, losses, {.eta = eta});
    CHECK(r.loss == doctest::Approx(std::log1p(std::exp(-u))).epsilon(1e-14));
    CHECK(g1[0] == doctest::Approx(-eta / (1 + std::exp(u))).epsilon(1e-14));
    CHECK(losses[0] == r.loss);
    r = pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), half, g1, g2, {}, {.eta = eta});
    CHECK(g1[0] > 0);  // u > 0 is pushed back toward 0
    CHECK(pref::dno_target(0.7, 0.7) == 0.5);
    CHECK(pref::dno_target(1.0, 0.0) == doctest::Approx(1 / (1 + std::exp(-1.0))));
    for (double m : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> a{m}, z{0.0};
        r = pref::dno(pt::exec::seq, S(a), S(z), S(z), S(z), half, g1, g2, {}, {.eta = 1.0});
        CHECK(std::isfinite(r.loss));
        CHECK(std::isfinite(g1[0]));
    }
}

TEST_CASE("dno: targets 1 = DNO-Prct = preference::dpo with the previous iterate as reference") {
    std::vector<double> p1{-10.0, -3.0, -7.0}, p2{-12.0, -2.0, -7.5}, t1{-11.0, -3.5, -6.0}, t2{-11.0, -2.5, -8.0};
    std::vector<double> one(3, 1.0), g1(3), g2(3), d1(3), d2(3);
    const auto r = pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), one, g1, g2, {}, {.eta = 0.05});
    const auto d = pref::dpo(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), d1, d2, pref::dpo_options::trl(pref::pair_loss::sigmoid, 0.05));
    CHECK(r.loss == doctest::Approx(d.loss).epsilon(1e-14));
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(g1[i] == doctest::Approx(d1[i]).epsilon(1e-14));
        CHECK(g2[i] == doctest::Approx(d2[i]).epsilon(1e-14));
    }
}

TEST_CASE("dno: bad input") {
    const std::string fn = "posttrain::preference::dno";
    std::vector<double> s{-1.0, -2.0}, q{0.5, 1.5}, g(2), q1{0.5};
    expect_error([&] { (void)pref::dno(pt::exec::seq, S(s), S(s), S(s), S(s), q, g, g, {}, {}); }, fn, "targets");
    expect_error([&] { (void)pref::dno(pt::exec::seq, S(s), S(s), S(s), S(s), q1, g, g, {}, {}); }, fn, "targets");
    std::vector<double> ok{0.5, 0.5};
    expect_error([&] { (void)pref::dno(pt::exec::seq, S(s), S(s), S(s), S(s), ok, g, g, {}, {.eta = -1}); }, fn, "eta");
    expect_error([&] { (void)pref::dno(pt::exec::seq, S(s), S(s), S(q1), S(s), ok, g, g, {}, {}); }, fn, "previous_1");
}

// ---- APO

TEST_CASE("apo_reference: (1 + alpha) S_t - alpha S_{t-1}, sums and masked tokens; DPO on it sees only differences") {
    std::vector<double> cur{-10.0, -4.0}, prev{-12.0, -3.0}, out(2);
    pref::apo_reference(pt::exec::seq, cur, prev, out, {.alpha = 0.25});
    CHECK(out[0] == doctest::Approx(1.25 * -10.0 - 0.25 * -12.0).epsilon(1e-15));
    CHECK(out[1] == doctest::Approx(1.25 * -4.0 - 0.25 * -3.0).epsilon(1e-15));
    pref::apo_reference(pt::exec::seq, cur, prev, out, {.alpha = 0.0});
    CHECK(out == cur);
    const double nan_v = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> ct{-1.0, -2.0, nan_v, -0.5}, pt_{-1.5, -1.0, 3.0, nan_v}, m{1, 1, 0, 0}, ot(4);
    pref::apo_reference(pt::exec::seq, matrix(ct, 2, 2), matrix(pt_, 2, 2), matrix(m, 2, 2), matrix(ot, 2, 2), {.alpha = 0.5});
    CHECK(ot[0] == doctest::Approx(1.5 * -1.0 - 0.5 * -1.5));
    CHECK(ot[1] == doctest::Approx(1.5 * -2.0 - 0.5 * -1.0));
    CHECK(ot[2] == 0.0);
    CHECK(ot[3] == 0.0);
    // the extrapolated reference may exceed 0 (only differences matter)
    std::vector<double> c2{-0.1}, p2{-5.0}, o2(1);
    pref::apo_reference(pt::exec::seq, c2, p2, o2, {.alpha = 0.9});
    CHECK(o2[0] > 0);
}

TEST_CASE("apo_reference: bad input") {
    const std::string fn = "posttrain::preference::apo_reference";
    std::vector<double> a{-1.0, -2.0}, b{-1.0}, o(2), bad{-1.0, std::nan("")};
    expect_error([&] { pref::apo_reference(pt::exec::seq, a, a, o, {.alpha = 1.0}); }, fn, "alpha");
    expect_error([&] { pref::apo_reference(pt::exec::seq, a, a, o, {.alpha = -0.1}); }, fn, "alpha");
    expect_error([&] { pref::apo_reference(pt::exec::seq, a, b, o, {}); }, fn, "previous");
    expect_error([&] { pref::apo_reference(pt::exec::seq, a, bad, o, {}); }, fn, "previous");
    std::vector<double> o1(1);
    expect_error([&] { pref::apo_reference(pt::exec::seq, a, a, o1, {}); }, fn, "out");
    std::vector<double> t{-1.0, std::nan(""), -1.0, -1.0}, m{1, 1, 1, 1}, ot(4);
    expect_error([&] { pref::apo_reference(pt::exec::seq, matrix(t, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), matrix(ot, 2, 2), {}); },
                 fn, "current");
    // The masked form names the argument whose shape is wrong (not always 'mask').
    std::vector<double> c4{-1.0, -2.0, -3.0, -4.0}, p2{-1.0, -2.0}, m4{1, 1, 1, 1}, o4(4);
    auto named = [&](auto&& call, const char* arg, const char* not_arg) {
        const std::string what = pt::test::error_of(call);
        CHECK_MESSAGE(pt::test::mentions(what, "apo_reference", arg), what);
        CHECK_MESSAGE(what.find(std::string("'") + not_arg + "'") == std::string::npos, what);
    };
    named([&] { pref::apo_reference(pt::exec::seq, matrix(c4, 2, 2), matrix(p2, 2, 1), matrix(m4, 2, 2), matrix(o4, 2, 2), {}); },
          "'previous'", "mask");
    named([&] { pref::apo_reference(pt::exec::seq, c4, c4, m4, o4, {}); }, "'current'", "mask");
}

// ---- P3O

TEST_CASE_TEMPLATE("p3o: finite differences for separate and joint clipping, inside and outside the band, seq == par", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t B = 12;
    // log-ratios in [-0.4, 0.4]: both sides of eps = 0.2, kept away from the band edges
    std::vector<double> s1(static_cast<std::size_t>(B)), s2(static_cast<std::size_t>(B)), o1 = uniform(std::size_t(B), -30, -5, 51), o2 = uniform(std::size_t(B), -30, -5, 52);
    const auto x1 = uniform(std::size_t(B), -0.4, 0.4, 53), x2 = uniform(std::size_t(B), -0.4, 0.4, 54);
    const auto r1 = uniform(std::size_t(B), -1, 1, 55), r2 = uniform(std::size_t(B), -1, 1, 56);
    for (std::size_t i = 0; i < std::size_t(B); ++i) {
        s1[i] = o1[i] + x1[i];
        s2[i] = o2[i] + x2[i];
    }
    for (auto mode : {pref::p3o_clip::separate, pref::p3o_clip::joint}) {
        const pref::p3o_options o{.clip = mode, .epsilon = 0.2, .grad_scale = 1.5};
        auto call = [&](const auto& pol, std::vector<double>* g1, std::vector<double>* g2, double scale) {
            auto q = o;
            q.grad_scale = scale;
            pref::sequence_grad G1, G2;
            if (g1) G1 = *g1;
            if (g2) G2 = *g2;
            return pref::p3o(pol, S(s1), S(s2), S(o1), S(o2), r1, r2, G1, G2, q);
        };
        std::vector<double> g1(static_cast<std::size_t>(B)), g2(static_cast<std::size_t>(B)), h1(static_cast<std::size_t>(B)), h2(static_cast<std::size_t>(B));
        const auto r = call(Backend::policy(), &g1, &g2, 1.5);
        CHECK(r.clip_fraction > 0);
        CHECK(r.clip_fraction < 1);
        check_gradient(s1, g1, [&] { return call(pt::exec::seq, nullptr, nullptr, 1).loss * 1.5; });
        check_gradient(s2, g2, [&] { return call(pt::exec::seq, nullptr, nullptr, 1).loss * 1.5; });
        const auto s = call(pt::exec::seq, &h1, &h2, 1.5);
        CHECK(pt::test::bitwise_equal(g1, h1));
        CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
    }
}

TEST_CASE("p3o: on-policy gradient is the pairwise policy gradient; extremes are finite; delta = 0 gives 0") {
    std::vector<double> s{-5.0}, t{-7.0}, r1{1.0}, r2{0.2}, g1(1), g2(1);
    // rho = 1: separate -> -delta/2 on y1, +delta/2 on y2; joint -> -delta, +delta
    (void)pref::p3o(pt::exec::seq, S(s), S(t), S(s), S(t), r1, r2, g1, g2, {.clip = pref::p3o_clip::separate});
    CHECK(g1[0] == doctest::Approx(-0.4));
    CHECK(g2[0] == doctest::Approx(0.4));
    (void)pref::p3o(pt::exec::seq, S(s), S(t), S(s), S(t), r1, r2, g1, g2, {.clip = pref::p3o_clip::joint});
    CHECK(g1[0] == doctest::Approx(-0.8));
    CHECK(g2[0] == doctest::Approx(0.8));
    for (double m : {50.0, -50.0, 1e4, -1e4})
        for (auto mode : {pref::p3o_clip::separate, pref::p3o_clip::joint}) {
            std::vector<double> a{m}, z{0.0};
            for (const auto& [ra, rb] : {std::pair{r1, r2}, std::pair{r2, r1}}) {
                const auto r = pref::p3o(pt::exec::seq, S(a), S(z), S(z), S(z), ra, rb, g1, g2, {.clip = mode});
                CHECK(std::isfinite(r.loss));
                CHECK(std::isfinite(g1[0]));
            }
        }
    (void)pref::p3o(pt::exec::seq, S(s), S(t), S(t), S(s), r1, r1, g1, g2, {});
    CHECK(g1[0] == 0.0);
}

TEST_CASE("p3o: bad input") {
    const std::string fn = "posttrain::preference::p3o";
    std::vector<double> s{-1.0, -2.0}, r{0.0, 1.0}, g(2), r1{0.0}, bad{0.0, std::nan("")};
    expect_error([&] { (void)pref::p3o(pt::exec::seq, S(s), S(s), S(s), S(s), r1, r, g, g, {}); }, fn, "rewards_1");
    expect_error([&] { (void)pref::p3o(pt::exec::seq, S(s), S(s), S(s), S(s), r, bad, g, g, {}); }, fn, "rewards_2");
    expect_error([&] { (void)pref::p3o(pt::exec::seq, S(s), S(s), S(s), S(s), r, r, g, g, {.epsilon = 0}); }, fn, "epsilon");
    expect_error([&] { (void)pref::p3o(pt::exec::seq, S(s), S(s), S(r1), S(s), r, r, g, g, {}); }, fn, "old_1");
}

// ---- DPA

TEST_CASE("dpa_select: argmax of v^T r per group, lowest row on ties, non-finite candidates dropped") {
    // 3 prompts: 3 candidates, 2 candidates (one NaN), 2 candidates both NaN; m = 2 heads
    const double nan_v = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> r{80, 20, 60, 60, 70, 50,  //
                          90, nan_v, 10, 10,       //
                          nan_v, 1, 2, nan_v};
    std::vector<double> v{std::cos(0.3), std::sin(0.3)};
    const std::vector<std::int64_t> off{0, 3, 5, 7};
    const auto sel = pref::dpa_select(pt::exec::seq, matrix(r, 7, 2), v, pt::ragged(off));
    REQUIRE(sel.selected.size() == 3);
    const double d0 = v[0] * 80 + v[1] * 20, d1 = v[0] * 60 + v[1] * 60, d2 = v[0] * 70 + v[1] * 50;
    const pt::index_t best = d0 >= d1 && d0 >= d2 ? 0 : (d1 >= d2 ? 1 : 2);
    CHECK(sel.selected[0] == best);
    CHECK(sel.selected[1] == 4);
    CHECK(sel.selected[2] == -1);
    CHECK(std::isnan(sel.directional_reward[2]));
    CHECK(sel.dropped == 3);
    // ties break to the lowest row; normalisation changes the reported reward, not the choice
    std::vector<double> tie{1, 1, 1, 1}, v2{2.0, 0.0};
    const auto t = pref::dpa_select(pt::exec::seq, matrix(tie, 2, 2), v2, pt::uniform_groups{2});
    CHECK(t.selected[0] == 0);
    CHECK(t.directional_reward[0] == 1.0);
    const auto u = pref::dpa_select(pt::exec::seq, matrix(tie, 2, 2), v2, pt::uniform_groups{2}, {.normalize_direction = false});
    CHECK(u.directional_reward[0] == 2.0);
    // a group of one: its only candidate
    const auto one = pref::dpa_select(pt::exec::seq, matrix(tie, 2, 2), v2, pt::uniform_groups{1});
    CHECK(one.selected == std::vector<pt::index_t>{0, 1});
}

TEST_CASE("dpa_select: bad input") {
    const std::string fn = "posttrain::preference::dpa_select";
    std::vector<double> r{1, 2, 3, 4}, zero{0.0, 0.0}, v3{1.0, 0.0, 0.0}, inf_v{std::numeric_limits<double>::infinity(), 0.0};
    expect_error([&] { (void)pref::dpa_select(pt::exec::seq, matrix(r, 2, 2), zero, pt::uniform_groups{2}); }, fn, "direction");
    expect_error([&] { (void)pref::dpa_select(pt::exec::seq, matrix(r, 2, 2), v3, pt::uniform_groups{2}); }, fn, "direction");
    expect_error([&] { (void)pref::dpa_select(pt::exec::seq, matrix(r, 2, 2), inf_v, pt::uniform_groups{2}); }, fn, "direction");
    std::vector<double> v{1.0, 0.0};
    expect_error([&] { (void)pref::dpa_select(pt::exec::seq, matrix(r, 2, 2), v, pt::uniform_groups{3}); }, fn, "groups");
}

TEST_CASE("dno: losses is checked (length, over a gradient) before anything is written") {
    std::vector<double> p1{-10.0, -9.0}, p2{-12.0, -8.0}, t1{-11.0, -9.5}, t2{-11.0, -8.5}, q{1.0, 0.5}, g1(2, 7.0), g2(2, 7.0), short_out(1);
    CHECK_THROWS_WITH_AS((void)pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), q, g1, g2, g2),
                         doctest::Contains("'losses': the output overlaps the input 'grad_2'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), q, g1, g2, short_out),
                         doctest::Contains("'losses': must have 2 entries, found 1"), pt::invalid_argument);
    CHECK(g1 == std::vector<double>(2, 7.0));  // nothing written
}

TEST_CASE("dno and p3o: both gradients are checked (form, length) before either is written") {
    std::vector<double> p1{-10.0, -9.0}, p2{-12.0, -8.0}, t1{-11.0, -9.5}, t2{-11.0, -8.5}, q{1.0, 0.5}, r1{1.0, 0.0}, r2{0.0, 1.0};
    std::vector<double> g1(2, 7.0), short_grad(1);
    CHECK_THROWS_WITH_AS((void)pref::dno(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), q, g1, short_grad),
                         doctest::Contains("'grad_2': must have one entry per sequence"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pref::p3o(pt::exec::seq, S(p1), S(p2), S(t1), S(t2), r1, r2, g1, short_grad),
                         doctest::Contains("'grad_2': must have one entry per sequence"), pt::invalid_argument);
    CHECK(g1 == std::vector<double>(2, 7.0));  // nothing written
}
