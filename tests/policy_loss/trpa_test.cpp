// policy_loss::trpa_pairwise_loss and trpa: hand-computed pairs, the fallback, gradients against central
// finite differences (pairs, fallback, trust region linear and sqrt), bad input, seq == par.

#include <cmath>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/trpa.hpp>

#include "../support/backends.hpp"
#include "../support/data.hpp"
#include "../support/gradient.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::test::matrix;

namespace {

double softplus(double x) { return std::log1p(std::exp(x)); }

struct batch {
    index_t B = 0, T = 0;
    std::vector<double> lp, ref, old, mask;
    std::vector<std::int64_t> levels, offsets;
};

batch random_batch(std::vector<index_t> sizes, index_t T, std::uint64_t seed, bool one_level = false) {
    batch b;
    b.offsets.push_back(0);
    for (index_t s : sizes) b.offsets.push_back(b.offsets.back() + s);
    b.B = b.offsets.back(), b.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-2.5, -0.1), d(-0.5, 0.5);
    std::uniform_int_distribution<int> lv(1, 4);
    const std::size_t n = std::size_t(b.B * T);
    b.lp.resize(n), b.ref.resize(n), b.old.resize(n);
    for (std::size_t k = 0; k < n; ++k) b.lp[k] = u(rng), b.ref[k] = b.lp[k] + d(rng), b.old[k] = b.lp[k] + d(rng);
    b.mask = pt::test::random_mask(std::size_t(b.B), std::size_t(T), seed + 1);
    for (index_t i = 0; i < b.B; ++i) b.mask[std::size_t(i * T)] = 1;
    for (index_t i = 0; i < b.B; ++i) b.levels.push_back(one_level ? 2 : lv(rng));
    return b;
}

template <bool Full>
pl::trpa_result run(const batch& b, const pl::trpa_options& o, std::vector<double>* g) {
    auto call = [&](auto&& grad) {
        if constexpr (Full)
            return pl::trpa(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T), matrix(b.old, b.B, b.T),
                            matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), grad, o);
        else
            return pl::trpa_pairwise_loss(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T),
                                          matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), grad, o);
    };
    if (!g) return call(pt::none);
    g->assign(b.lp.size(), -7.0);
    return call(matrix(*g, b.B, b.T));
}

template <bool Full>
void check_gradient(const batch& b, const pl::trpa_options& o) {
    std::vector<double> g;
    (void)run<Full>(b, o, &g);
    batch q = b;
    pt::test::check_gradient(q.lp, g, [&] { return run<Full>(q, o, nullptr).loss; }, &b.mask, {1e-6, 1e-8});
}

}  // namespace

TEST_CASE("trpa_pairwise_loss: hand-computed pairs, anisotropy on the top level") {
    // One token per row: z = lp - ref.
    const std::vector<double> lp = {-1.0, -1.2, -0.7}, ref = {-1.1, -1.0, -0.9}, mask = {1, 1, 1};
    const std::vector<std::int64_t> levels = {1, 2, 3};
    pl::trpa_options o;
    std::vector<double> g(3);
    const auto r = pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 3, 1), matrix(ref, 3, 1), matrix(mask, 3, 1), levels,
                                          pt::uniform_groups{3}, matrix(g, 3, 1), o);
    const double z0 = 0.1, z1 = -0.2, z2 = 0.2;
    const double h01 = 0.25 * (z0 - z1), h02 = 0.25 * (z0 - z2), h12 = 0.1 * (z1 - z2);
    CHECK(r.pairs == 3);
    CHECK(!r.fallback);
    CHECK(r.loss == doctest::Approx((softplus(-h01) + softplus(-h02) + softplus(-h12)) / 3).epsilon(1e-14));
    CHECK(r.log_delta == doctest::Approx((h01 + h02 + h12) / 3 / 0.1).epsilon(1e-14));
    CHECK(r.h_high == doctest::Approx((z0 + z0 + z1) / 3).epsilon(1e-14));
    CHECK(r.h_low == doctest::Approx((z1 + z2 + z2) / 3).epsilon(1e-14));
    auto s = [](double h) { return 1 / (1 + std::exp(h)); };  // sigma(-h)
    CHECK(g[0] == doctest::Approx(-(s(h01) * 0.25 + s(h02) * 0.25) / 3).epsilon(1e-13));
}

TEST_CASE("trpa_pairwise_loss: the fallback when no group holds two levels") {
    const std::vector<double> lp = {-1.0, -1.2, -0.7, -0.4}, ref = {-1.1, -1.0, -0.9, -0.4}, mask = {1, 1, 1, 1};
    const std::vector<std::int64_t> levels = {1, 1, 3, 3};
    const auto r = pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 4, 1), matrix(ref, 4, 1), matrix(mask, 4, 1), levels,
                                          pt::uniform_groups{2}, pt::none);
    CHECK(r.fallback);
    CHECK(r.pairs == 0);
    const double z[4] = {0.1, -0.2, 0.2, 0.0};
    CHECK(r.loss == doctest::Approx((softplus(-z[0]) + softplus(-z[1]) + softplus(z[2]) + softplus(z[3])) / 4).epsilon(1e-14));
    CHECK(r.log_delta == doctest::Approx(0.025).epsilon(1e-14));
    CHECK(r.h_high == doctest::Approx(-0.05).epsilon(1e-14));
    CHECK(r.h_low == doctest::Approx(0.1).epsilon(1e-14));
}

TEST_CASE("trpa: gradients against central finite differences") {
    pl::trpa_options o;
    o.beta = 0.7;
    SUBCASE("pairs") { check_gradient<false>(random_batch({5, 3, 1, 0, 6}, 4, 3), o); }
    SUBCASE("fallback") { check_gradient<false>(random_batch({3, 4}, 4, 4, true), o); }
    SUBCASE("trust region, linear") {
        o.trust_region_coef = 0.5;
        check_gradient<true>(random_batch({5, 3, 6}, 4, 5), o);
    }
    SUBCASE("trust region, sqrt") {
        o.trust_region_coef = 0.5;
        o.sqrt_trust_region = true;
        check_gradient<true>(random_batch({5, 3, 6}, 4, 6), o);
    }
}

TEST_CASE("trpa: the objective is the pairwise loss plus the trust region") {
    const batch b = random_batch({4, 4}, 5, 9);
    pl::trpa_options o;
    o.trust_region_coef = 0.3;
    const auto p = run<false>(b, o, nullptr);
    const auto f = run<true>(b, o, nullptr);
    const auto kl = pl::kl_loss(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                                pt::none, pl::trpa_options::trpa_kl());
    CHECK(f.preference_loss == p.loss);
    CHECK(f.trust_region_kl == doctest::Approx(kl.loss).epsilon(1e-14));
    CHECK(f.loss == doctest::Approx(p.loss + 0.3 * kl.loss).epsilon(1e-14));

    // grad_scale multiplies the gradient, not the value.
    std::vector<double> g1(b.lp.size()), g2(b.lp.size());
    (void)pl::trpa(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T), matrix(b.old, b.B, b.T),
                   matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), matrix(g1, b.B, b.T), o);
    const auto s = pl::trpa(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T), matrix(b.old, b.B, b.T),
                            matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), matrix(g2, b.B, b.T), o, 0.5);
    CHECK(s.loss == f.loss);
    for (std::size_t k = 0; k < g1.size(); ++k) CHECK(g2[k] == 0.5 * g1[k]);
}

TEST_CASE("trpa: bad input is refused by name") {
    const std::vector<double> lp = {-1.0, -1.2, -0.7}, mask = {1, 1, 1};
    const std::vector<std::int64_t> levels = {1, 2, 3}, short_levels = {1, 2};
    CHECK_THROWS_WITH_AS((void)pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1),
                                                      short_levels, pt::uniform_groups{3}, pt::none),
                         doctest::Contains("levels"), pt::invalid_argument);
    pl::trpa_options o;
    o.beta = 0;
    CHECK_THROWS_WITH_AS((void)pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1),
                                                      levels, pt::uniform_groups{3}, pt::none, o),
                         doctest::Contains("beta"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1),
                                                      levels, pt::uniform_groups{2}, pt::none),
                         doctest::Contains("groups"), pt::invalid_argument);
    const std::vector<double> bad = {-1.0, NAN, -0.7};
    CHECK_THROWS_WITH_AS((void)pl::trpa_pairwise_loss(pt::exec::seq, matrix(lp, 3, 1), matrix(bad, 3, 1), matrix(mask, 3, 1),
                                                      levels, pt::uniform_groups{3}, pt::none),
                         doctest::Contains("ref_log_probs"), pt::invalid_argument);
}

TEST_CASE("trpa: the sqrt trust region refuses the k1 estimator, which can go below -1/4") {
    batch b = random_batch({4, 4}, 5, 9);
    for (auto& x : b.lp) x -= 1.0;  // mean log-ratio to old about -1: k1 = -1, sqrt(-1 + 0.25) would be NaN
    pl::trpa_options o;
    o.sqrt_trust_region = true;
    o.trust_region_kl.estimator = pl::kl_estimator::k1;
    CHECK_THROWS_WITH_AS((void)run<true>(b, o, nullptr), doctest::Contains("options.sqrt_trust_region"), pt::invalid_argument);
    // The pairwise loss has no trust region: the option does not concern it.
    CHECK_NOTHROW((void)run<false>(b, o, nullptr));
    // k2, k3, abs are non-negative: finite.
    for (auto e : {pl::kl_estimator::k2, pl::kl_estimator::k3, pl::kl_estimator::abs}) {
        o.trust_region_kl.estimator = e;
        CHECK(std::isfinite(run<true>(b, o, nullptr).loss));
    }
    // The linear trust region takes k1.
    o.sqrt_trust_region = false;
    o.trust_region_kl.estimator = pl::kl_estimator::k1;
    CHECK(std::isfinite(run<true>(b, o, nullptr).loss));
}

TEST_CASE_TEMPLATE("trpa: every policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const batch b = random_batch({16, 16, 3, 0, 16, 7, 16, 16, 16}, 9, 2);
    pl::trpa_options o;
    std::vector<double> g0(b.lp.size()), g1(b.lp.size());
    const auto r0 = pl::trpa(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T), matrix(b.old, b.B, b.T),
                             matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), matrix(g0, b.B, b.T), o);
    const auto r1 = pl::trpa(Backend::policy(), matrix(b.lp, b.B, b.T), matrix(b.ref, b.B, b.T), matrix(b.old, b.B, b.T),
                             matrix(b.mask, b.B, b.T), b.levels, pt::ragged(b.offsets), matrix(g1, b.B, b.T), o);
    CHECK(r0.loss == r1.loss);
    CHECK(r0.pairs == r1.pairs);
    CHECK(pt::test::bitwise_equal(g0, g1));
}

TEST_CASE("trpa: the docs example compiles and runs") {
    const batch b = random_batch({4, 4}, 3, 8);
    const auto log_probs = matrix(b.lp, b.B, b.T), ref_log_probs = matrix(b.ref, b.B, b.T),
               old_log_probs = matrix(b.old, b.B, b.T), mask = matrix(b.mask, b.B, b.T);
    const std::vector<std::int64_t> uids = {5, 5, 5, 5, 2, 2, 2, 2};
    std::vector<double> g(b.lp.size());
    auto grad_log_probs = matrix(g, b.B, b.T);
    // docs/algorithms/trpa.md
    namespace pl = posttrain::policy_loss;
    std::vector<std::int64_t> levels = b.levels; /* trpa_preference_level(verifier(response)) */
    auto r = pl::trpa(posttrain::exec::par, log_probs, ref_log_probs, old_log_probs, mask, levels,
                      posttrain::grouping::from_ids(posttrain::exec::seq, uids), grad_log_probs, pl::trpa_options::official());
    CHECK(std::isfinite(r.loss));
}
