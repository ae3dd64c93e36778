// policy_loss::disco: hand-computed values, gradients against central finite differences (every score,
// objective and KL estimator, constraint on and off), the code's surrogate values, edge cases, bad
// input, seq == par, and the difficulty-bias table of group_rl.md §4.4.

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/policy_loss/disco.hpp>

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
    std::vector<double> lp, old, mask, rewards;
    std::vector<std::int64_t> offsets;
};

// Groups of the given sizes, T tokens, binary rewards with at least one mixed group; log-probs near
// the behaviour policy (drift sets how far), some masked tokens and one row fully masked.
batch random_batch(std::vector<index_t> sizes, index_t T, std::uint64_t seed, double drift) {
    batch b;
    b.offsets.push_back(0);
    for (index_t s : sizes) b.offsets.push_back(b.offsets.back() + s);
    b.B = b.offsets.back(), b.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-2.5, -0.1), d(-drift, drift);
    b.lp.resize(std::size_t(b.B * T)), b.old.resize(b.lp.size());
    for (std::size_t k = 0; k < b.lp.size(); ++k) b.old[k] = u(rng), b.lp[k] = b.old[k] + d(rng);
    b.mask = pt::test::random_mask(std::size_t(b.B), std::size_t(T), seed + 1);
    for (index_t i = 0; i < b.B; ++i) b.mask[std::size_t(i * T)] = 1;  // every row has a token ...
    for (index_t t = 0; t < T; ++t) b.mask[std::size_t((b.B - 1) * T + t)] = 0;  // ... but the last
    b.rewards = pt::test::random_rewards(std::size_t(b.B), seed + 2, true);
    b.rewards[0] = 1, b.rewards[1] = 0;
    return b;
}

pl::disco_result run(const batch& b, const pl::disco_options& o, std::vector<double>* grad,
                     const pt::exec::sequenced_policy& p = pt::exec::seq) {
    if (!grad)
        return pl::disco(p, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T), b.rewards,
                         pt::ragged(b.offsets), pt::none, o);
    grad->assign(b.lp.size(), -7.0);
    return pl::disco(p, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T), b.rewards,
                     pt::ragged(b.offsets), matrix(*grad, b.B, b.T), o);
}

// d loss / d log_probs by central differences against the written gradient, everywhere.
void check_gradient(const batch& b, const pl::disco_options& o) {
    std::vector<double> g;
    (void)run(b, o, &g);
    batch q = b;
    pt::test::check_gradient(q.lp, g, [&] { return run(q, o, nullptr).loss; }, &b.mask, {1e-6, 1e-8});
}

}  // namespace

TEST_CASE("disco: hand-computed DisCO-b and DisCO values on one group") {
    // One token per row: the scores are the log-probs themselves (log-L).
    const std::vector<double> lp = {-1.0, -2.0, -3.0, -0.5}, old = lp, mask = {1, 1, 1, 1}, r = {1, 0, 0, 1};
    pl::disco_options o;
    o.objective = pl::disco_objective::mean_difference;
    std::vector<double> g(4);
    auto res = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(old, 4, 1), matrix(mask, 4, 1), r, pt::uniform_groups{4},
                         matrix(g, 4, 1), o);
    CHECK(res.objective == doctest::Approx((-1.0 - 0.5) / 2 - (-2.0 - 3.0) / 2));
    CHECK(res.kl == 0.0);
    CHECK(res.penalty == 0.0);
    CHECK(!res.constraint_active);
    CHECK(res.mixed_groups == 1);
    CHECK(res.loss == -res.objective);
    CHECK(g == std::vector<double>{-0.5, 0.5, 0.5, -0.5});

    o.objective = pl::disco_objective::log_sum_exp;
    o.tau = 2;
    res = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(old, 4, 1), matrix(mask, 4, 1), r, pt::uniform_groups{4},
                    matrix(g, 4, 1), o);
    const double e1 = std::exp(-1.0), e2 = std::exp(-1.5);
    CHECK(res.log_mean_exp == doctest::Approx(2 * std::log((e1 + e2) / 2)).epsilon(1e-14));
    CHECK(res.objective == doctest::Approx(-0.75 - 2 * std::log((e1 + e2) / 2)).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx(e1 / (e1 + e2)).epsilon(1e-14));  // softmax over the negatives
    CHECK(g[2] == doctest::Approx(e2 / (e1 + e2)).epsilon(1e-14));

    // The code's surrogate value: tau * S / (S + eps) ~ tau, same gradient up to eps.
    o.reference_values = true;
    std::vector<double> g2(4);
    res = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(old, 4, 1), matrix(mask, 4, 1), r, pt::uniform_groups{4},
                    matrix(g2, 4, 1), o);
    CHECK(res.objective == doctest::Approx(-0.75 - 2.0).epsilon(1e-14));
    for (int k = 0; k < 4; ++k) CHECK(g2[std::size_t(k)] == doctest::Approx(g[std::size_t(k)]).epsilon(1e-14));
}

TEST_CASE("disco: large tau tends to DisCO-b, small tau to the hardest negative") {
    const std::vector<double> lp = {-1.0, -2.0, -3.0, -0.5}, mask = {1, 1, 1, 1}, r = {1, 0, 0, 1};
    pl::disco_options o;
    o.tau = 1e6;
    const auto big = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(lp, 4, 1), matrix(mask, 4, 1), r,
                               pt::uniform_groups{4}, pt::none, o);
    CHECK(big.objective == doctest::Approx(-0.75 + 2.5).epsilon(1e-5));
    o.tau = 1e-3;
    const auto small = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(lp, 4, 1), matrix(mask, 4, 1), r,
                                 pt::uniform_groups{4}, pt::none, o);
    CHECK(small.objective == doctest::Approx(-0.75 + 2.0).epsilon(1e-2));
}

TEST_CASE("disco: gradients against central finite differences") {
    for (auto score : {pl::disco_score::log_likelihood, pl::disco_score::likelihood_ratio})
        for (auto obj : {pl::disco_objective::mean_difference, pl::disco_objective::log_sum_exp})
            for (auto kl : {pl::kl_estimator::k1, pl::kl_estimator::k3, pl::kl_estimator::k2})
                for (double delta : {1e-4, 10.0}) {  // constraint active / inactive
                    pl::disco_options o;
                    o.score = score, o.objective = obj, o.kl = kl, o.delta = delta, o.beta = 50;
                    o.tau = score == pl::disco_score::log_likelihood ? 0.7 : 1.0;
                    INFO("score " << int(score) << " objective " << int(obj) << " kl " << int(kl) << " delta " << delta);
                    const batch b = random_batch({4, 3, 5, 0, 2}, 5, 11 + int(kl), 0.3);
                    const auto res = run(b, o, nullptr);
                    if (kl != pl::kl_estimator::k1) CHECK(res.constraint_active == (delta < 1));
                    check_gradient(b, o);
                }
}

TEST_CASE("disco: the code's values keep the gradient (and the penalty is hinge * KL)") {
    const batch b = random_batch({4, 4, 4}, 6, 5, 0.4);
    pl::disco_options o;
    o.kl = pl::kl_estimator::k3;
    o.beta = 20;
    std::vector<double> g1, g2;
    const auto exact = run(b, o, &g1);
    o.reference_values = true;
    const auto ref = run(b, o, &g2);
    REQUIRE(exact.constraint_active);
    CHECK(ref.kl == exact.kl);
    CHECK(ref.penalty == doctest::Approx(20 * (exact.kl - o.delta) * exact.kl).epsilon(1e-14));
    CHECK(exact.penalty == doctest::Approx(10 * (exact.kl - o.delta) * (exact.kl - o.delta)).epsilon(1e-14));
    for (std::size_t k = 0; k < g1.size(); ++k) CHECK(g2[k] == doctest::Approx(g1[k]).epsilon(1e-13));

    // grad_scale multiplies the gradient, not the value.
    std::vector<double> g3(g2.size());
    const auto scaled = pl::disco(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                                  b.rewards, pt::ragged(b.offsets), matrix(g3, b.B, b.T), o, -2.0);
    CHECK(scaled.loss == ref.loss);
    for (std::size_t k = 0; k < g2.size(); ++k) CHECK(g3[k] == -2.0 * g2[k]);
}

TEST_CASE("disco: edge cases") {
    SUBCASE("no mixed group: the objective is 0 and only the KL term has a gradient") {
        const std::vector<double> lp = {-1.0, -2.0, -1.5, -0.5}, old = {-0.8, -2.0, -1.5, -0.1}, mask = {1, 1, 1, 1};
        const std::vector<double> r = {1, 1, 0, 0};
        pl::disco_options o;
        o.beta = 10;
        std::vector<double> g(4);
        const auto res = pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(old, 4, 1), matrix(mask, 4, 1), r,
                                   pt::uniform_groups{2}, matrix(g, 4, 1), o);
        CHECK(res.mixed_groups == 0);
        CHECK(res.groups == 2);
        CHECK(res.objective == 0.0);
        CHECK(res.kl == doctest::Approx((0.2 + 0.4) / 4));  // k1 of (old, new): old - new
        for (double x : g) CHECK(x == doctest::Approx(-10 * (res.kl - 1e-4) / 4));
    }
    SUBCASE("empty batch and empty groups") {
        std::vector<double> none_v;
        std::vector<std::int64_t> off = {0, 0, 0};
        const auto res = pl::disco(pt::exec::seq, matrix(none_v, 0, 3), matrix(none_v, 0, 3), matrix(none_v, 0, 3), none_v,
                                   pt::ragged(off), pt::none);
        CHECK(res.loss == 0.0);
        CHECK(res.groups == 0);  // empty groups hold no question
    }
    SUBCASE("empty groups do not count in Q") {
        const std::vector<double> lp = {-1.0, -2.0}, mask = {1, 1}, r = {1, 0};
        pl::disco_options o;
        o.objective = pl::disco_objective::mean_difference;
        const std::vector<std::int64_t> alone = {0, 2}, with_empty = {0, 0, 2, 2};
        const auto one = pl::disco(pt::exec::seq, matrix(lp, 2, 1), matrix(lp, 2, 1), matrix(mask, 2, 1), r, pt::ragged(alone),
                                   pt::none, o);
        const auto three = pl::disco(pt::exec::seq, matrix(lp, 2, 1), matrix(lp, 2, 1), matrix(mask, 2, 1), r,
                                     pt::ragged(with_empty), pt::none, o);
        CHECK(one.objective == doctest::Approx(1.0));
        CHECK(three.objective == one.objective);
        CHECK(three.groups == 1);
    }
    SUBCASE("exact_binary labels ignore other rewards; threshold labels use them") {
        const std::vector<double> lp = {-1.0, -2.0, -3.0}, mask = {1, 1, 1}, r = {1, 0.3, 0};
        auto o = pl::disco_options::official(pl::disco_score::log_likelihood, pl::disco_objective::mean_difference);
        auto res = pl::disco(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1), r, pt::uniform_groups{3},
                             pt::none, o);
        CHECK(res.objective == doctest::Approx(-1.0 + 3.0));
        o.labels = pl::disco_labels::threshold;
        res = pl::disco(pt::exec::seq, matrix(lp, 3, 1), matrix(lp, 3, 1), matrix(mask, 3, 1), r, pt::uniform_groups{3},
                        pt::none, o);
        CHECK(res.objective == doctest::Approx(-1.0 + 2.5));
    }
    SUBCASE("num_questions is the global normaliser") {
        const std::vector<double> lp = {-1.0, -2.0}, mask = {1, 1}, r = {1, 0};
        pl::disco_options o;
        o.objective = pl::disco_objective::mean_difference;
        o.num_questions = 4;
        const auto res = pl::disco(pt::exec::seq, matrix(lp, 2, 1), matrix(lp, 2, 1), matrix(mask, 2, 1), r,
                                   pt::uniform_groups{2}, pt::none, o);
        CHECK(res.objective == doctest::Approx(0.25));
    }
    SUBCASE("masked positions may hold anything") {
        const double inf = INFINITY;
        const std::vector<double> lp = {-1.0, inf, -2.0, NAN}, mask = {1, 0, 1, 0}, r = {1, 0};
        std::vector<double> g(4, 9.0);
        const auto res = pl::disco(pt::exec::seq, matrix(lp, 2, 2), matrix(lp, 2, 2), matrix(mask, 2, 2), r,
                                   pt::uniform_groups{2}, matrix(g, 2, 2), pl::disco_options{});
        CHECK(std::isfinite(res.loss));
        CHECK(g[1] == 0.0);
        CHECK(g[3] == 0.0);
    }
}

TEST_CASE("disco: bad input is refused by name") {
    const std::vector<double> lp = {-1.0, -2.0, -3.0, -0.5}, mask = {1, 1, 1, 1}, r = {1, 0, 0, 1};
    auto call = [&](const std::vector<double>& l, const std::vector<double>& rw, pl::disco_options o, index_t k) {
        return pl::disco(pt::exec::seq, matrix(l, 4, 1), matrix(lp, 4, 1), matrix(mask, 4, 1), rw, pt::uniform_groups{k},
                         pt::none, o);
    };
    CHECK_THROWS_WITH_AS((void)call(lp, {1, 0, 0}, {}, 4), doctest::Contains("rewards"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)call(lp, {1, 0, NAN, 1}, {}, 4), doctest::Contains("rewards"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)call(lp, r, {}, 3), doctest::Contains("groups"), pt::invalid_argument);
    pl::disco_options bad;
    bad.tau = 0;
    CHECK_THROWS_WITH_AS((void)call(lp, r, bad, 4), doctest::Contains("tau"), pt::invalid_argument);
    // A NaN threshold would label every response negative in silence; an infinite Q zeroes J.
    pl::disco_options nan_threshold;
    nan_threshold.threshold = NAN;
    CHECK_THROWS_WITH_AS((void)call(lp, r, nan_threshold, 4), doctest::Contains("threshold"), pt::invalid_argument);
    pl::disco_options inf_q;
    inf_q.num_questions = INFINITY;
    CHECK_THROWS_WITH_AS((void)call(lp, r, inf_q, 4), doctest::Contains("num_questions"), pt::invalid_argument);
    const std::vector<double> lp_nan = {-1.0, NAN, -3.0, -0.5};
    CHECK_THROWS_WITH_AS((void)call(lp_nan, r, {}, 4), doctest::Contains("log_probs"), pt::invalid_argument);
    std::vector<double> short_mask = {1, 1};
    CHECK_THROWS_WITH_AS((void)pl::disco(pt::exec::seq, matrix(lp, 4, 1), matrix(lp, 4, 1), matrix(short_mask, 2, 1), r,
                                         pt::uniform_groups{4}, pt::none),
                         doctest::Contains("mask"), pt::invalid_argument);
    std::vector<double> g(4);
    CHECK_THROWS_WITH_AS((void)pl::disco(pt::exec::seq, matrix(g, 4, 1), matrix(lp, 4, 1), matrix(mask, 4, 1), r,
                                         pt::uniform_groups{4}, matrix(g, 4, 1)),
                         doctest::Contains("grad_log_probs"), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("disco: every policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const batch b = random_batch({8, 8, 3, 0, 8, 5, 8, 8, 1, 8, 8, 8}, 17, 3, 0.5);
    pl::disco_options o;
    o.kl = pl::kl_estimator::k3;
    std::vector<double> g0(b.lp.size()), g1(b.lp.size());
    const auto r0 = pl::disco(pt::exec::seq, matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                              b.rewards, pt::ragged(b.offsets), matrix(g0, b.B, b.T), o);
    const auto r1 = pl::disco(Backend::policy(), matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                              b.rewards, pt::ragged(b.offsets), matrix(g1, b.B, b.T), o);
    CHECK(r0.loss == r1.loss);
    CHECK(pt::test::bitwise_equal(g0, g1));
    // A grouping by ids is the same layout.
    std::vector<std::int64_t> ids(std::size_t(b.B));
    for (std::size_t g = 0; g + 1 < b.offsets.size(); ++g)
        for (auto i = b.offsets[g]; i < b.offsets[g + 1]; ++i) ids[std::size_t(i)] = std::int64_t(100 - g);
    const auto by_id = pt::grouping::from_ids(pt::exec::seq, ids);
    const auto r2 = pl::disco(Backend::policy(), matrix(b.lp, b.B, b.T), matrix(b.old, b.B, b.T), matrix(b.mask, b.B, b.T),
                              b.rewards, by_id, pt::none, o);
    // from_ids has no empty group: Q differs by the empty one, the sum over questions does not.
    CHECK(r2.objective * double(r2.groups) == doctest::Approx(r0.objective * double(r0.groups)).epsilon(1e-14));
}

TEST_CASE("disco_scores: log-L and L-ratio") {
    const std::vector<double> lp = {-1.0, -2.0, 0.0, -0.5}, old = {-1.0, -1.0, 5.0, -0.5}, mask = {1, 1, 0, 1};
    std::vector<double> s(2);
    pl::disco_scores(pt::exec::seq, matrix(lp, 2, 2), matrix(old, 2, 2), matrix(mask, 2, 2), s);
    CHECK(s == std::vector<double>{-1.5, -0.5});
    pl::disco_scores(pt::exec::seq, matrix(lp, 2, 2), matrix(old, 2, 2), matrix(mask, 2, 2), s,
                     pl::disco_score::likelihood_ratio);
    CHECK(s[0] == doctest::Approx((1 + std::exp(-1.0)) / 2));
    CHECK(s[1] == 1.0);
}

// group_rl.md §4.4: with binary rewards and pass rate p = n+/G, the weight each method puts on
// (E+[s] - E-[s]) is sqrt(p(1-p)) for GRPO (std-normalised), p(1-p) for Dr. GRPO and 1 for DisCO-b.
// Exact for a finite group when GRPO's std is the population std (ddof 0, epsilon 0): that is the
// convention of this table.
TEST_CASE("reproduction: the difficulty-bias weights of GRPO, Dr. GRPO and DisCO (§4.4)") {
    const index_t G = 8;
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> u(-3, 0);
    MESSAGE("  p      GRPO weight  sqrt(p(1-p))  Dr.GRPO weight  p(1-p)  DisCO-b weight");
    for (index_t npos = 1; npos < G; ++npos) {
        const double p = double(npos) / double(G);
        std::vector<double> r(static_cast<std::size_t>(G)), s(static_cast<std::size_t>(G)), mask(static_cast<std::size_t>(G), 1.0);
        double pos = 0, neg = 0;
        for (index_t i = 0; i < G; ++i) {
            r[std::size_t(i)] = i < npos ? 1.0 : 0.0;
            s[std::size_t(i)] = u(rng);
            (i < npos ? pos : neg) += s[std::size_t(i)];
        }
        const double gap = pos / double(npos) - neg / double(G - npos);  // E+[s] - E-[s]

        auto weight = [&](const pt::advantage::grpo_options& o) {
            std::vector<double> a(static_cast<std::size_t>(G));
            (void)pt::advantage::grpo(pt::exec::seq, r, pt::uniform_groups{G}, a, o);
            double m = 0;
            for (index_t i = 0; i < G; ++i) m += a[std::size_t(i)] * s[std::size_t(i)];
            return m / double(G) / gap;  // mean_i A_i s_i = weight * gap
        };
        pt::advantage::grpo_options grpo;
        grpo.ddof = pt::ddof::population;
        grpo.epsilon = 0;
        const double w_grpo = weight(grpo), w_dr = weight(pt::advantage::grpo_options::dr_grpo());

        pl::disco_options d;
        d.objective = pl::disco_objective::mean_difference;
        const auto res = pl::disco(pt::exec::seq, matrix(s, G, 1), matrix(s, G, 1), matrix(mask, G, 1), r,
                                   pt::uniform_groups{G}, pt::none, d);
        const double w_disco = res.objective / gap;

        CHECK(w_grpo == doctest::Approx(std::sqrt(p * (1 - p))).epsilon(1e-12));
        CHECK(w_dr == doctest::Approx(p * (1 - p)).epsilon(1e-12));
        CHECK(w_disco == doctest::Approx(1.0).epsilon(1e-12));
        MESSAGE("  " << p << "  " << w_grpo << "  " << std::sqrt(p * (1 - p)) << "  " << w_dr << "  " << p * (1 - p) << "  "
                     << w_disco);
    }
}

TEST_CASE("disco: the docs example compiles and runs") {
    const batch b = random_batch({4, 4}, 3, 8, 0.2);
    const auto log_probs = matrix(b.lp, b.B, b.T), old_log_probs = matrix(b.old, b.B, b.T), mask = matrix(b.mask, b.B, b.T);
    const std::vector<double>& rewards = b.rewards;
    const std::vector<std::int64_t> uids = {5, 5, 5, 5, 2, 2, 2, 2};
    std::vector<double> g(b.lp.size());
    auto grad_log_probs = matrix(g, b.B, b.T);
    // docs/algorithms/disco.md
    namespace pl = posttrain::policy_loss;
    auto o = pl::disco_options::official(pl::disco_score::log_likelihood, pl::disco_objective::log_sum_exp);
    auto r = pl::disco(posttrain::exec::par, log_probs, old_log_probs, mask, rewards,
                       posttrain::grouping::from_ids(posttrain::exec::seq, uids), grad_log_probs, o);
    CHECK(std::isfinite(r.loss));
    CHECK(r.groups == 2);
}
