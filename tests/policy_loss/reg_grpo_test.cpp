// policy_loss::reg_grpo: hand-computed regression values, gradients against central finite differences
// for the three predictions, the on-policy start, edge cases, bad input, seq == par.

#include <cmath>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/policy_loss/reg_grpo.hpp>

#include "../support/backends.hpp"
#include "../support/data.hpp"
#include "../support/gradient.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::test::matrix;

namespace {

struct batch {
    index_t B = 0, T = 0;
    std::vector<double> lp, old, mask, adv;
    std::vector<std::int64_t> offsets;
};

batch random_batch(std::vector<index_t> sizes, index_t T, std::uint64_t seed) {
    batch b;
    b.offsets.push_back(0);
    for (index_t s : sizes) b.offsets.push_back(b.offsets.back() + s);
    b.B = b.offsets.back(), b.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-2.5, -0.1), d(-0.3, 0.3);
    b.lp.resize(std::size_t(b.B * T)), b.old.resize(b.lp.size());
    for (std::size_t k = 0; k < b.lp.size(); ++k) b.old[k] = u(rng), b.lp[k] = b.old[k] + d(rng);
    b.mask = pt::test::random_mask(std::size_t(b.B), std::size_t(T), seed + 1);
    for (index_t i = 0; i < b.B; ++i) b.mask[std::size_t(i * T)] = 1;
    b.adv = pt::test::random_rewards(std::size_t(b.B), seed + 2);
    return b;
}

pl::reg_grpo_result run(const batch& b, const pl::reg_grpo_options& o, std::vector<double>* g) {
    if (!g)
        return pl::reg_grpo(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T), b.adv,
                            pt::ragged(b.offsets), pt::none, o);
    g->assign(b.lp.size(), -7.0);
    return pl::reg_grpo(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T), b.adv,
                        pt::ragged(b.offsets), matrix(*g, b.B, b.T), o);
}

void check_gradient(const batch& b, const pl::reg_grpo_options& o) {
    std::vector<double> g;
    (void)run(b, o, &g);
    batch q = b;
    pt::test::check_gradient(q.lp, g, [&] { return run(q, o, nullptr).loss; }, &b.mask, {1e-6, 1e-7});
}

}  // namespace

TEST_CASE("reg_grpo: hand-computed values") {
    // One token per row: z = lp - old = {0.1, -0.1, 0.3}; one group of three.
    const std::vector<double> lp = {-1.0, -1.1, -0.7}, old = {-1.1, -1.0, -1.0}, mask = {1, 1, 1}, A = {0.5, -1.0, 0.5};
    pl::reg_grpo_options o;
    const auto r = pl::reg_grpo(pt::exec::seq, matrix(lp, 3, 1), matrix(old, 3, 1), matrix(mask, 3, 1), A,
                                pt::uniform_groups{3}, pt::none, o);
    const double z[3] = {0.1, -0.1, 0.3}, mu = 0.1;
    const double sd = std::sqrt(((z[0] - mu) * (z[0] - mu) + (z[1] - mu) * (z[1] - mu) + (z[2] - mu) * (z[2] - mu)) / 2);
    double expect = 0;
    for (int i = 0; i < 3; ++i) expect += std::pow((z[i] - mu) / (sd + 1e-6) - A[std::size_t(i)], 2) / 3;
    CHECK(r.loss == doctest::Approx(expect).epsilon(1e-10));
    CHECK(r.rows == 3);
    o.prediction = pl::reg_grpo_prediction::raw;
    o.beta = 2;
    const auto raw = pl::reg_grpo(pt::exec::seq, matrix(lp, 3, 1), matrix(old, 3, 1), matrix(mask, 3, 1), A,
                                  pt::uniform_groups{3}, pt::none, o);
    CHECK(raw.loss == doctest::Approx((std::pow(0.2 - 0.5, 2) + std::pow(-0.2 + 1, 2) + std::pow(0.6 - 0.5, 2)) / 3).epsilon(1e-10));
}

TEST_CASE("reg_grpo: gradients against central finite differences") {
    for (auto p : {pl::reg_grpo_prediction::group_normalized, pl::reg_grpo_prediction::centered, pl::reg_grpo_prediction::raw})
        for (auto dd : {pt::ddof::sample, pt::ddof::population}) {
            pl::reg_grpo_options o;
            o.prediction = p, o.ddof = dd, o.beta = 3;
            INFO("prediction " << int(p) << " ddof " << int(dd));
            check_gradient(random_batch({4, 1, 5, 0, 3}, 5, 21 + int(p)), o);
        }
}

TEST_CASE("reg_grpo: on-policy start (pi == pi_old) is finite and pushes toward the advantages") {
    batch b = random_batch({4, 4}, 3, 5);
    b.lp = b.old;
    std::vector<double> a(std::size_t(b.B));
    (void)pt::advantage::grpo(pt::exec::seq, b.adv, pt::ragged(b.offsets), a);
    b.adv = a;
    std::vector<double> g;
    pl::reg_grpo_options o;
    o.prediction = pl::reg_grpo_prediction::centered;
    const auto r = run(b, o, &g);
    CHECK(std::isfinite(r.loss));
    // d loss / d z_i = -2 beta (A_i - mean A) / N: rows with larger advantages get their log-probs raised.
    for (index_t i = 0; i < b.B; ++i)
        if (b.adv[std::size_t(i)] > 0.5) CHECK(g[std::size_t(i * b.T)] < 0);
}

TEST_CASE("reg_grpo: a zero-variance group under group_normalized falls back to the centred prediction") {
    batch b = random_batch({4, 3}, 3, 9);
    b.lp = b.old;  // on-policy: every z is 0, every group has std 0
    for (double eps : {0.0, 1e-6}) {
        pl::reg_grpo_options o;
        o.epsilon = eps, o.beta = 2;
        std::vector<double> g, gc;
        const auto r = run(b, o, &g);
        pl::reg_grpo_options c = o;
        c.prediction = pl::reg_grpo_prediction::centered;
        const auto rc = run(b, c, &gc);
        CHECK(std::isfinite(r.loss));
        CHECK(r.loss == rc.loss);
        CHECK(pt::test::bitwise_equal(g, gc));  // no 1/epsilon gradients, no NaN at epsilon = 0
        for (double x : g) CHECK(std::fabs(x) < 100);
    }
    // The old arithmetic on request (epsilon > 0 required): gradient of order 1/epsilon.
    pl::reg_grpo_options a;
    a.zero_variance = pl::reg_grpo_zero_variance::arithmetic;
    std::vector<double> g;
    (void)run(b, a, &g);
    double big = 0;
    for (double x : g) big = std::max(big, std::fabs(x));
    CHECK(big > 1e3);
    a.epsilon = 0;
    CHECK_THROWS_WITH_AS((void)run(b, a, nullptr), doctest::Contains("options.epsilon"), pt::invalid_argument);
    // Groups with spread are untouched by the rule.
    const batch s = random_batch({4, 3}, 3, 9);
    pl::reg_grpo_options d, ar;
    ar.zero_variance = pl::reg_grpo_zero_variance::arithmetic;
    std::vector<double> g1, g2;
    CHECK(run(s, d, &g1).loss == run(s, ar, &g2).loss);
    CHECK(pt::test::bitwise_equal(g1, g2));
}

TEST_CASE("reg_grpo: bad input is refused by name") {
    const std::vector<double> lp = {-1.0, -1.1, -0.7}, mask = {1, 1, 1}, A = {0.5, -1.0};
    CHECK_THROWS_WITH_AS((void)pl::reg_grpo(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1), A,
                                            pt::uniform_groups{3}, pt::none),
                         doctest::Contains("advantages"), pt::invalid_argument);
    pl::reg_grpo_options o;
    o.epsilon = -1;
    const std::vector<double> A3 = {0.5, -1.0, 0};
    CHECK_THROWS_WITH_AS((void)pl::reg_grpo(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1), A3,
                                            pt::uniform_groups{3}, pt::none, o),
                         doctest::Contains("epsilon"), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("reg_grpo: every policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const batch b = random_batch({8, 8, 1, 0, 8, 5, 8, 8, 8}, 11, 4);
    std::vector<double> g0(b.lp.size()), g1(b.lp.size());
    const auto r0 = pl::reg_grpo(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                                 b.adv, pt::ragged(b.offsets), matrix(g0, b.B, b.T));
    const auto r1 = pl::reg_grpo(Backend::policy(), matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                                 b.adv, pt::ragged(b.offsets), matrix(g1, b.B, b.T));
    CHECK(r0.loss == r1.loss);
    CHECK(pt::test::bitwise_equal(g0, g1));
}

TEST_CASE("reg_grpo: the docs example compiles and runs") {
    const batch b = random_batch({4, 4}, 3, 8);
    const index_t B = b.B, G = 4;
    const auto log_probs = matrix(b.lp, b.B, b.T), old_log_probs = matrix(b.old, b.B, b.T), mask = matrix(b.mask, b.B, b.T);
    const std::vector<double>& rewards = b.adv;
    std::vector<double> g(b.lp.size());
    auto grad_log_probs = matrix(g, b.B, b.T);
    // docs/algorithms/reg_grpo.md
    std::vector<double> adv(static_cast<std::size_t>(B));
    (void)pt::advantage::grpo(pt::exec::seq, rewards, pt::uniform_groups{G}, adv);
    auto r = pt::policy_loss::reg_grpo(pt::exec::par, log_probs, old_log_probs, mask, adv, pt::uniform_groups{G}, grad_log_probs);
    CHECK(r.rows == B);
}
