#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/d3po.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::check_gradient;

namespace {

struct trajectories {
    pt::index_t B = 0, S = 0;
    std::vector<double> lp0, lr0, lp1, lr1;
    std::vector<std::int64_t> h0, h1;
};

// Log-ratios spread over [-0.15, 0.15] (some outside the eps = 0.1 band, none within 1e-4 of its edges).
trajectories random_trajectories(pt::index_t B, pt::index_t S, std::uint64_t seed) {
    trajectories t;
    t.B = B, t.S = S;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> base(-2.0, 0.0), ratio(-0.15, 0.15);
    std::uniform_int_distribution<int> score(0, 3);
    auto far_from_edges = [&] {
        for (;;) {
            const double r = ratio(rng);
            if (std::fabs(r - std::log1p(0.1)) > 1e-4 && std::fabs(r - std::log1p(-0.1)) > 1e-4) return r;
        }
    };
    for (pt::index_t j = 0; j < B * S; ++j) {
        t.lr0.push_back(base(rng));
        t.lp0.push_back(t.lr0.back() + far_from_edges());
        t.lr1.push_back(base(rng));
        t.lp1.push_back(t.lr1.back() + far_from_edges());
    }
    for (pt::index_t i = 0; i < B; ++i) {
        t.h0.push_back(score(rng));
        t.h1.push_back(score(rng));
    }
    return t;
}

template <class Policy>
pref::d3po_result run(const Policy& policy, const trajectories& t, std::vector<double>* g0, std::vector<double>* g1,
                      const pref::d3po_options& o) {
    if (g0)
        return pref::d3po(policy, matrix(t.lp0, t.B, t.S), matrix(t.lr0, t.B, t.S), matrix(t.lp1, t.B, t.S),
                          matrix(t.lr1, t.B, t.S), t.h0, t.h1, matrix(*g0, t.B, t.S), matrix(*g1, t.B, t.S), o);
    return pref::d3po(policy, matrix(t.lp0, t.B, t.S), matrix(t.lr0, t.B, t.S), matrix(t.lp1, t.B, t.S), matrix(t.lr1, t.B, t.S),
                      t.h0, t.h1, pt::none, pt::none, o);
}
}  // namespace

TEST_CASE_TEMPLATE("d3po: finite differences over [B, S] steps (inside and outside the clip band), seq == par", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto policy = Backend::policy();
    trajectories t = random_trajectories(7, 5, 3);
    auto o = pref::d3po_options::official(2.0, 0.1);
    o.grad_scale = 0.7;
    std::vector<double> g0(t.lp0.size()), g1(t.lp1.size());
    const auto r = run(policy, t, &g0, &g1, o);
    CHECK_FALSE(r.skipped);
    CHECK(r.steps == 5);
    CHECK(r.clip_fraction > 0);
    CHECK(r.clip_fraction < 1);
    auto f = [&] {
        auto q = o;
        q.grad_scale = 1;
        return run(pt::exec::seq, t, nullptr, nullptr, q).loss * 0.7;
    };
    check_gradient(t.lp0, g0, f);
    check_gradient(t.lp1, g1, f);
    // clipped entries get exactly 0
    for (std::size_t j = 0; j < g0.size(); ++j)
        if (t.lp0[j] - t.lr0[j] > std::log1p(0.1) || t.lp0[j] - t.lr0[j] < std::log1p(-0.1)) CHECK(g0[j] == 0.0);
    std::vector<double> s0(g0.size()), s1(g1.size());
    const auto s = run(pt::exec::seq, t, &s0, &s1, o);
    CHECK(pt::test::bitwise_equal(g0, s0));
    CHECK(pt::test::bitwise_equal(g1, s1));
    CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
}

TEST_CASE("d3po: hand-computed [B] step, tie rows add log 2 with no gradient, all ties skip") {
    const double beta = 0.1;
    std::vector<double> lp0{-1.0, -1.0}, lr0{-1.05, -1.0}, lp1{-2.0, -2.0}, lr1{-1.98, -2.0};
    std::vector<int> h0{3, 2}, h1{1, 2};
    std::vector<double> g0(2), g1(2);
    auto r = pref::d3po(pt::exec::seq, lp0, lr0, lp1, lr1, h0, h1, g0, g1, {});
    const double z = beta * ((0.05) - (-0.02));
    CHECK(r.loss == doctest::Approx((std::log1p(std::exp(-z)) + std::log(2.0)) / 2).epsilon(1e-12));
    CHECK(g0[0] == doctest::Approx(-beta / (1 + std::exp(z)) / 2).epsilon(1e-12));
    CHECK(g1[0] == doctest::Approx(beta / (1 + std::exp(z)) / 2).epsilon(1e-12));
    CHECK(g0[1] == 0.0);
    CHECK(g1[1] == 0.0);
    CHECK(r.tied_pairs == 1);
    CHECK(r.preferred_reward == doctest::Approx(beta * 0.05));
    CHECK(pref::d3po_sign(3, 1) == 1);
    CHECK(pref::d3po_sign(1, 3) == -1);
    CHECK(pref::d3po_sign(2, 2) == 0);
    // every pair ties: skipped (official `continue`), zero loss and gradients
    std::vector<int> same{2, 2};
    g0 = {5.0, 5.0};
    r = pref::d3po(pt::exec::seq, lp0, lr0, lp1, lr1, same, same, g0, g1, {});
    CHECK(r.skipped);
    CHECK(r.loss == 0.0);
    CHECK(g0[0] == 0.0);
    // ... or, without the skip, log 2 and zero gradient
    r = pref::d3po(pt::exec::seq, lp0, lr0, lp1, lr1, same, same, g0, g1, {.skip_all_ties = false});
    CHECK_FALSE(r.skipped);
    CHECK(r.loss == doctest::Approx(std::log(2.0)));
    CHECK(g0[0] == 0.0);
}

TEST_CASE("d3po: extreme log-ratios are clipped: finite loss, zero gradient") {
    for (double x : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> lp0{x}, lr0{0.0}, lp1{0.0}, lr1{0.0}, g0(1), g1(1);
        std::vector<int> h0{1}, h1{0};
        const auto r = pref::d3po(pt::exec::seq, lp0, lr0, lp1, lr1, h0, h1, g0, g1, {.beta = 1e4});
        CHECK(std::isfinite(r.loss));
        CHECK(g0[0] == 0.0);
        CHECK(r.clip_fraction == 0.5);
    }
}

TEST_CASE("d3po: bad input") {
    std::vector<double> a{-1.0, -1.0}, b3{-1.0, -1.0, -1.0}, g(2), bad{-1.0, std::nan("")};
    std::vector<int> h{1, 0};
    auto expect = [](auto&& call, const std::string& needle) { pt::test::expect_error(call, "posttrain::preference::d3po", needle); };
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, b3, a, h, h, g, g, {}); }, "policy_logps_1");
    expect([&] { (void)pref::d3po(pt::exec::seq, a, bad, a, a, h, h, g, g, {}); }, "reference_logps_0");
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, a, a, h, h, g, g, {.clip_epsilon = 1.0}); }, "clip_epsilon");
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, a, a, h, h, g, g, {.beta = 0}); }, "beta");
    std::vector<int> h3{1, 0, 1};
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, a, a, h3, h, g, g, {}); }, "prefer_0");
    std::vector<double> g3(3);
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, a, a, h, h, g3, g, {}); }, "grad_0");
    std::vector<double> m(4);
    expect([&] { (void)pref::d3po(pt::exec::seq, a, a, a, a, h, h, matrix(m, 2, 2), g, {}); }, "grad_0");
    // empty batch: nothing to do, not skipped
    std::vector<double> e;
    std::vector<int> he;
    const auto r = pref::d3po(pt::exec::seq, e, e, e, e, he, he, pt::none, pt::none, {});
    CHECK(r.loss == 0.0);
    CHECK_FALSE(r.skipped);
}
