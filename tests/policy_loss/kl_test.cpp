#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/shaping.hpp>
#include <posttrain/policy_loss/kl.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pl::kl_estimator;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// Random log-probs in (-8, 0) and references around them, with some log-ratios pushed to +-30.
void random_pair(std::size_t n, std::uint64_t seed, std::vector<double>& lp, std::vector<double>& ref) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-8, 0), d(-3, 3), coin(0, 1);
    lp.resize(n);
    ref.resize(n);
    for (std::size_t j = 0; j < n; ++j) {
        lp[j] = u(rng);
        const double c = coin(rng);
        ref[j] = lp[j] + (c < 0.1 ? 30.0 : c < 0.2 ? -30.0 : d(rng));
    }
}

const pl::kl_options all_options[] = {
    pl::kl_options::verl(kl_estimator::k1),      pl::kl_options::verl(kl_estimator::abs),
    pl::kl_options::verl(kl_estimator::k2),      pl::kl_options::verl(kl_estimator::k3),
    pl::kl_options::verl(kl_estimator::k3, true), pl::kl_options::verl(kl_estimator::abs, true),
    pl::kl_options::openrlhf(kl_estimator::k1),  pl::kl_options::openrlhf(kl_estimator::k2),
    pl::kl_options::openrlhf(kl_estimator::k3),  pl::kl_options::trl(),
    pl::kl_options::nemo(kl_estimator::k1),      pl::kl_options::nemo(kl_estimator::k2),
    pl::kl_options::nemo(kl_estimator::k3),
};

}  // namespace

TEST_CASE("kl_token: the four estimators, their clamps and presets") {
    const double lp = -1.0, ref = -1.5, r = lp - ref;  // r = 0.5
    auto at = [&](pl::kl_options o) { return pl::detail::kl_token(lp, ref, o); };
    pl::kl_options o;
    o.estimator = kl_estimator::k1;
    CHECK(at(o).value == r);
    CHECK(at(o).grad == 1.0);
    o.estimator = kl_estimator::abs;
    CHECK(at(o).value == r);
    CHECK(at(o).grad == 1.0);
    CHECK(pl::detail::kl_token(-2.0, -1.0, o).grad == -1.0);
    CHECK(pl::detail::kl_token(-2.0, -2.0, o).grad == 0.0);  // torch.sign(0) = 0
    o.estimator = kl_estimator::k2;
    CHECK(at(o).value == 0.125);
    CHECK(at(o).grad == 0.5);
    o.estimator = kl_estimator::k3;
    CHECK(at(o).value == doctest::Approx(std::exp(-r) + r - 1).epsilon(1e-15));
    CHECK(at(o).grad == doctest::Approx(1 - std::exp(-r)).epsilon(1e-15));
    // k3 is >= 0 and accurate for tiny log-ratios (expm1 form): ~ r^2 / 2.
    CHECK(pl::detail::kl_token(-1.0, -1.0 - 1e-6, o).value == doctest::Approx(0.5e-12).epsilon(1e-5));
    CHECK(pl::detail::kl_token(-1.0, -1.0, o).value == 0.0);

    // Presets: verl clamps only k3; OpenRLHF clamps every value at 10; NeMo clamps both; TRL none.
    CHECK(pl::kl_options::verl(kl_estimator::k3).log_ratio_clamp == 20);
    CHECK(pl::kl_options::verl(kl_estimator::k3).value_clamp == 10);
    CHECK(pl::kl_options::verl(kl_estimator::k1).value_clamp == 0);
    CHECK(pl::kl_options::openrlhf(kl_estimator::k2).value_clamp == 10);
    CHECK(pl::kl_options::openrlhf(kl_estimator::k2).log_ratio_clamp == 0);
    CHECK(pl::kl_options::nemo(kl_estimator::k1).log_ratio_clamp == 20);
    CHECK(pl::kl_options::trl().value_clamp == 0);
    CHECK(pl::kl_options::trl().estimator == kl_estimator::k3);

    // verl k3 at a log-ratio of -30: d = 30 clamped to 20, exp(20) - 21 clamped to 10, gradient 0.
    const auto v = pl::detail::kl_token(-31.0, -1.0, pl::kl_options::verl(kl_estimator::k3));
    CHECK(v.value == 10.0);
    CHECK(v.grad == 0.0);
    // TRL k3 unclamped: exp(30) - 31.
    const auto t = pl::detail::kl_token(-31.0, -1.0, pl::kl_options::trl());
    CHECK(t.value == doctest::Approx(std::expm1(30.0) - 30.0));
    CHECK(t.grad == doctest::Approx(-std::expm1(30.0)));
    // NeMo k1 at d = 30: d clamped to 20, value -20 clamped to -10, gradient 0.
    CHECK(pl::detail::kl_token(-31.0, -1.0, pl::kl_options::nemo(kl_estimator::k1)).value == -10.0);
    // Straight-through: verl k3's value, k2's gradient lp - ref, even where the value is clamped.
    const auto s = pl::detail::kl_token(-31.0, -1.0, pl::kl_options::verl(kl_estimator::k3, true));
    CHECK(s.value == 10.0);
    CHECK(s.grad == -30.0);
}

TEST_CASE("kl_token: subgradients at the clamp kinks follow torch.clamp (closed interval)") {
    // log_ratio_clamp: d = ref - lp exactly at +-c passes the gradient, just outside gives 0.
    pl::kl_options o;
    o.estimator = kl_estimator::k1;
    o.log_ratio_clamp = 2;
    CHECK(pl::detail::kl_token(-3.0, -1.0, o).grad == 1.0);                       // d = 2: inside
    CHECK(pl::detail::kl_token(-3.0 - 1e-12, -1.0, o).grad == 0.0);  // d just above 2
    CHECK(pl::detail::kl_token(-1.0, -3.0, o).grad == 1.0);                       // d = -2: inside
    CHECK(pl::detail::kl_token(-1.0 + 1e-12, -3.0, o).grad == 0.0);
    // value_clamp: k2 = r^2/2 exactly at c passes, above gives 0; negative values clamp at -c (k1).
    o.log_ratio_clamp = 0;
    o.estimator = kl_estimator::k2;
    o.value_clamp = 2;  // r = 2 -> k2 = 2
    CHECK(pl::detail::kl_token(1.0, -1.0, o).value == 2.0);
    CHECK(pl::detail::kl_token(1.0, -1.0, o).grad == 2.0);
    CHECK(pl::detail::kl_token(1.0 + 1e-12, -1.0, o).grad == 0.0);
    o.estimator = kl_estimator::k1;
    CHECK(pl::detail::kl_token(-5.0, 0.0, o).value == -2.0);
    CHECK(pl::detail::kl_token(-5.0, 0.0, o).grad == 0.0);
    // Infinite log-probs (nonfinite::propagate): the clamps give verl's k3 a finite value and gradient 0,
    // and straight-through the infinite k2 gradient; neither branch poisons the other with 0 * inf.
    const double ninf = -std::numeric_limits<double>::infinity();
    for (const auto& [lp, ref] : {std::pair{ninf, -1.0}, std::pair{-1.0, ninf}}) {
        const auto k = pl::detail::kl_token(lp, ref, pl::kl_options::verl(kl_estimator::k3));
        CHECK(k.value == 10.0);
        CHECK(k.grad == 0.0);
        const auto st = pl::detail::kl_token(lp, ref, pl::kl_options::verl(kl_estimator::k3, true));
        CHECK(st.value == 10.0);
        CHECK(st.grad == lp - ref);
    }
    // NaN propagates through the estimate (the public functions reject it first by default).
    CHECK(std::isnan(pl::detail::kl_token(nan_v, -1.0, pl::kl_options::verl(kl_estimator::k3)).value));
}

TEST_CASE("kl_penalty: gradient matches central finite differences for every preset") {
    std::vector<double> lp, ref;
    random_pair(4 * 9, 11, lp, ref);
    // Points near the clamp boundaries (but further than h from the kink).
    lp[0] = -1.0, ref[0] = 19.0 - 1e-4;   // d just inside 20
    lp[1] = -1.0, ref[1] = -21.0 + 1e-4;  // d just inside -20
    lp[2] = -1.0, ref[2] = 19.0 + 1e-4;   // d just outside 20
    lp[3] = -2.0, ref[3] = std::log(12.0) - 2.0;  // k3 ~ 12 - 1 - 2.48 = 8.5: below the value clamp
    lp[4] = -2.0, ref[4] = -2.0;          // r = 0
    const double h = 1e-6;
    for (const auto& o : all_options) {
        std::vector<double> kl(lp.size()), g(lp.size()), kp(lp.size()), km(lp.size());
        pl::kl_penalty(pt::exec::seq, matrix(lp, 4, 9), matrix(ref, 4, 9), matrix(kl, 4, 9), matrix(g, 4, 9), o, 1.0);
        for (std::size_t j = 0; j < lp.size(); ++j) {
            if (o.estimator == kl_estimator::abs && j == 4) continue;  // |r| has no derivative at 0
            auto lpp = lp, lpm = lp;
            lpp[j] += h, lpm[j] -= h;
            pl::kl_penalty(pt::exec::seq, matrix(lpp, 4, 9), matrix(ref, 4, 9), matrix(kp, 4, 9), pt::none, o);
            pl::kl_penalty(pt::exec::seq, matrix(lpm, 4, 9), matrix(ref, 4, 9), matrix(km, 4, 9), pt::none, o);
            double fd = (kp[j] - km[j]) / (2 * h);
            if (o.straight_through) fd = lp[j] - ref[j];  // by definition: k2's gradient
            INFO("estimator " << int(o.estimator) << " j " << j << " lp " << lp[j] << " ref " << ref[j]);
            CHECK(g[j] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
        }
        // grad_scale multiplies the gradient only.
        std::vector<double> g2(lp.size()), kl2(lp.size());
        pl::kl_penalty(pt::exec::seq, matrix(lp, 4, 9), matrix(ref, 4, 9), matrix(kl2, 4, 9), matrix(g2, 4, 9), o, -0.25);
        for (std::size_t j = 0; j < lp.size(); ++j) {
            CHECK(g2[j] == g[j] * -0.25);
            CHECK(kl2[j] == kl[j]);
        }
    }
}

TEST_CASE_TEMPLATE("kl_penalty and kl_loss: par equals seq bit for bit; float outputs", B, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t rows = 300, T = 70;
    std::vector<double> lp, ref;
    random_pair(std::size_t(rows * T), 5, lp, ref);
    const auto m = pt::test::random_mask(rows, T, 6);
    for (const auto& o : all_options) {
        std::vector<double> k1(lp.size()), g1(lp.size()), k2(lp.size()), g2(lp.size());
        pl::kl_penalty(B::policy(), matrix(lp, rows, T), matrix(ref, rows, T), matrix(k1, rows, T), matrix(g1, rows, T), o);
        pl::kl_penalty(pt::exec::seq, matrix(lp, rows, T), matrix(ref, rows, T), matrix(k2, rows, T), matrix(g2, rows, T), o);
        CHECK(pt::test::bitwise_equal(k1, k2));
        CHECK(pt::test::bitwise_equal(g1, g2));
        for (auto mode : {pl::aggregation::token_mean, pl::aggregation::seq_mean_token_mean, pl::aggregation::seq_mean_token_sum_norm}) {
            const auto a = pl::kl_loss(B::policy(), matrix(lp, rows, T), matrix(ref, rows, T), matrix(m, rows, T),
                                       matrix(g1, rows, T), o, {.mode = mode});
            const auto b = pl::kl_loss(pt::exec::seq, matrix(lp, rows, T), matrix(ref, rows, T), matrix(m, rows, T),
                                       matrix(g2, rows, T), o, {.mode = mode});
            CHECK(std::memcmp(&a.loss, &b.loss, sizeof(double)) == 0);
            CHECK(pt::test::bitwise_equal(g1, g2));
        }
    }
    // float in, float out: the double computation rounded once.
    std::vector<float> lpf(lp.begin(), lp.end()), reff(ref.begin(), ref.end()), kf(lp.size());
    pl::kl_penalty(B::policy(), matrix(lpf, rows, T), matrix(reff, rows, T), matrix(kf, rows, T), pt::none);
    const auto o = pl::kl_options{};
    for (std::size_t j = 0; j < lp.size(); j += 97)
        CHECK(kf[j] == float(pl::detail::kl_token(double(lpf[j]), double(reff[j]), o).value));
}

TEST_CASE("kl_loss: value and gradient are the aggregated per-token KL") {
    const pt::index_t rows = 5, T = 7;
    std::vector<double> lp, ref;
    random_pair(std::size_t(rows * T), 21, lp, ref);
    auto m = pt::test::random_mask(rows, T, 22);
    for (pt::index_t t = 0; t < T; ++t) m[std::size_t(2 * T + t)] = 0;  // a fully masked row
    const double h = 1e-6;
    const pl::kl_options o = pl::kl_options::verl(kl_estimator::k3);
    for (auto mode : {pl::aggregation::token_mean, pl::aggregation::token_sum, pl::aggregation::seq_mean_token_mean,
                      pl::aggregation::seq_mean_token_sum, pl::aggregation::seq_mean_token_sum_norm}) {
        const pl::aggregation_options agg = pl::aggregation_options::verl(mode);
        std::vector<double> g(lp.size()), kl(lp.size()), ga(lp.size());
        const auto r = pl::kl_loss(pt::exec::seq, matrix(lp, rows, T), matrix(ref, rows, T), matrix(m, rows, T),
                                   matrix(g, rows, T), o, agg, 2.0);
        // Same as kl_penalty followed by aggregate.
        pl::kl_penalty(pt::exec::seq, matrix(lp, rows, T), matrix(ref, rows, T), matrix(kl, rows, T), pt::none, o);
        const auto a = pl::aggregate(pt::exec::seq, matrix(kl, rows, T), matrix(m, rows, T), matrix(ga, rows, T), agg);
        CHECK(r.loss == doctest::Approx(a.loss).epsilon(1e-14));
        CHECK(r.tokens == a.tokens);
        for (std::size_t j = 0; j < lp.size(); ++j) {
            auto lpp = lp, lpm = lp;
            lpp[j] += h, lpm[j] -= h;
            const double fp = pl::kl_loss(pt::exec::seq, matrix(lpp, rows, T), matrix(ref, rows, T), matrix(m, rows, T), pt::none, o, agg).loss;
            const double fm = pl::kl_loss(pt::exec::seq, matrix(lpm, rows, T), matrix(ref, rows, T), matrix(m, rows, T), pt::none, o, agg).loss;
            CHECK(g[j] == doctest::Approx(2.0 * (fp - fm) / (2 * h)).epsilon(1e-6).scale(1.0));
            if (m[j] == 0) CHECK(g[j] == 0.0);
        }
    }
    // Masked positions may hold anything under nonfinite::propagate: they never reach the result.
    auto lpn = lp;
    lpn[std::size_t(2 * T + 3)] = nan_v;
    pl::kl_options prop = o;
    prop.nonfinite_inputs = pt::advantage::nonfinite::propagate;
    std::vector<double> g(lp.size());
    const auto r = pl::kl_loss(pt::exec::seq, matrix(lpn, rows, T), matrix(ref, rows, T), matrix(m, rows, T), matrix(g, rows, T), prop);
    CHECK(std::isfinite(r.loss));
    CHECK(g[std::size_t(2 * T + 3)] == 0.0);
}

TEST_CASE("kl_penalty / kl_loss: edge shapes") {
    std::vector<double> e;
    pl::kl_penalty(pt::exec::seq, matrix(e, 0, 5), matrix(e, 0, 5), matrix(e, 0, 5), matrix(e, 0, 5));  // B = 0
    const auto r0 = pl::kl_loss(pt::exec::seq, matrix(e, 0, 5), matrix(e, 0, 5), matrix(e, 0, 5), pt::none);
    CHECK(r0.loss == 0.0);
    std::vector<double> lp{-1}, ref{-2}, m{1}, g(1);  // T = 1
    const auto r = pl::kl_loss(pt::exec::seq, matrix(lp, 1, 1), matrix(ref, 1, 1), matrix(m, 1, 1), matrix(g, 1, 1),
                               pl::kl_options::verl(kl_estimator::k1));
    CHECK(r.loss == 1.0);
    CHECK(g[0] == 1.0);
    m[0] = 0;  // nothing valid: loss 0, gradient 0
    const auto z = pl::kl_loss(pt::exec::seq, matrix(lp, 1, 1), matrix(ref, 1, 1), matrix(m, 1, 1), matrix(g, 1, 1));
    CHECK(z.loss == 0.0);
    CHECK(g[0] == 0.0);
}

TEST_CASE("kl: bad input names the argument") {
    std::vector<double> lp{-1, -2, -3, -4}, ref{-1, -1, -1, -1}, out(4), m{1, 1, 1, 1}, ref3(3);
    using doctest::Contains;
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref3, 1, 3), matrix(out, 2, 2), pt::none),
                         Contains("posttrain::policy_loss::kl_penalty: argument 'ref_log_probs': shape must match 'log_probs'"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(out, 1, 4), pt::none),
                         Contains("argument 'kl': shape must match 'log_probs'"), pt::invalid_argument);
    auto bad = lp;
    bad[3] = nan_v;
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(bad, 2, 2), matrix(ref, 2, 2), matrix(out, 2, 2), pt::none),
                         Contains("argument 'log_probs': non-finite value"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(ref, 2, 2), matrix(bad, 2, 2), matrix(out, 2, 2), pt::none),
                         Contains("argument 'ref_log_probs': non-finite value nan at index [1, 1]"), pt::invalid_argument);
    pl::kl_options neg;
    neg.log_ratio_clamp = -1;
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(out, 2, 2), pt::none, neg),
                         Contains("argument 'options': log_ratio_clamp must be >= 0"), pt::invalid_argument);
    neg = {};
    neg.value_clamp = nan_v;
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(out, 2, 2), pt::none, neg),
                         Contains("value_clamp must be >= 0"), pt::invalid_argument);
    neg = {};
    neg.nonfinite_inputs = pt::advantage::nonfinite::ignore;
    CHECK_THROWS_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(out, 2, 2), pt::none, neg),
                    pt::invalid_argument);
    // Outputs may not overlap inputs or each other.
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(lp, 2, 2), pt::none),
                         Contains("argument 'kl': the output overlaps the input 'log_probs'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::kl_penalty(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(out, 2, 2), matrix(out, 2, 2)),
                         Contains("argument 'grad_log_probs': the output overlaps the input 'kl'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::kl_loss(pt::exec::seq, matrix(lp, 2, 2), matrix(ref, 2, 2), matrix(ref3, 1, 3), pt::none),
                         Contains("posttrain::policy_loss::kl_loss: argument 'mask'"), pt::invalid_argument);
    // verl's names: 'full' needs logits; unknown names are rejected; '+' is straight-through.
    CHECK_THROWS_WITH_AS(pl::kl_options::verl("full"), Contains("argument 'name': \"full\" is the full-vocabulary KL"),
                         pt::invalid_argument);
    CHECK_THROWS_AS(pl::kl_options::verl("k4"), pt::invalid_argument);
    CHECK_THROWS_AS(pl::kl_options::openrlhf("low_var_kl"), pt::invalid_argument);
    CHECK(pl::kl_options::verl("low_var_kl+").straight_through);
    CHECK(pl::kl_options::verl("low_var_kl+").estimator == kl_estimator::k3);
    CHECK(pl::kl_options::verl("mse").estimator == kl_estimator::k2);
    CHECK(pl::kl_options::verl("kl").estimator == kl_estimator::k1);
    CHECK(pl::kl_options::openrlhf("k3").value_clamp == 10);
}

TEST_CASE_TEMPLATE("apply_kl_penalty: KL in the reward and its metric", B, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t rows = 6, T = 9;
    std::vector<double> lp, ref;
    random_pair(std::size_t(rows * T), 31, lp, ref);
    const auto sc = pt::test::random_rewards(std::size_t(rows * T), 32);
    auto m = pt::test::random_mask(rows, T, 33);
    for (pt::index_t t = 0; t < T; ++t) m[std::size_t(4 * T + t)] = 0;
    // k1 without a mask is verl compute_rewards (advantage::kl_penalized_rewards), bit for bit.
    std::vector<double> a(sc.size()), b(sc.size());
    const auto r = pl::apply_kl_penalty(B::policy(), matrix(sc, rows, T), matrix(lp, rows, T), matrix(ref, rows, T), pt::none,
                                        matrix(a, rows, T), 0.05);
    pt::advantage::kl_penalized_rewards(pt::exec::seq, matrix(sc, rows, T), matrix(lp, rows, T), matrix(ref, rows, T),
                                        matrix(b, rows, T), 0.05);
    CHECK(pt::test::bitwise_equal(a, b));
    CHECK(r.tokens == double(rows * T));
    // With a mask: masked tokens keep their score; mean_kl is the mean over rows of each row's mean.
    const auto o = pl::kl_reward_options::verl(kl_estimator::k3);
    const auto rm = pl::apply_kl_penalty(B::policy(), matrix(sc, rows, T), matrix(lp, rows, T), matrix(ref, rows, T),
                                         matrix(m, rows, T), matrix(a, rows, T), 0.1, o);
    double mean = 0;
    for (pt::index_t i = 0; i < rows; ++i) {
        double s = 0, n = 0;
        for (pt::index_t t = 0; t < T; ++t) {
            const std::size_t j = std::size_t(i * T + t);
            const double k = pl::detail::kl_token(lp[j], ref[j], o.kl).value;
            CHECK(a[j] == (m[j] != 0 ? sc[j] - 0.1 * k : sc[j]));
            s += m[j] * k, n += m[j];
        }
        mean += s / (n + 1e-8);
    }
    CHECK(rm.mean_kl == doctest::Approx(mean / rows).epsilon(1e-14));
    // In place over the scores.
    auto inplace = sc;
    (void)pl::apply_kl_penalty(B::policy(), matrix(inplace, rows, T), matrix(lp, rows, T), matrix(ref, rows, T),
                               matrix(m, rows, T), matrix(inplace, rows, T), 0.1, o);
    CHECK(pt::test::bitwise_equal(inplace, a));
    CHECK_THROWS_WITH_AS((void)pl::apply_kl_penalty(B::policy(), matrix(sc, rows, T), matrix(lp, rows, T), matrix(ref, rows, T),
                                                    pt::none, matrix(a, rows, T), nan_v),
                         doctest::Contains("argument 'beta'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::apply_kl_penalty(B::policy(), matrix(sc, rows, T), matrix(lp, rows, T), matrix(ref, rows, T),
                                                    pt::none, matrix(lp, rows, T), 0.1),
                         doctest::Contains("argument 'rewards': the output overlaps the input 'log_probs'"), pt::invalid_argument);
}

TEST_CASE("kl controllers") {
    pl::fixed_kl_controller f{0.05};
    f.update(100, 256);
    CHECK(f.value == 0.05);
    auto c = pl::adaptive_kl_controller::trl();  // 0.2, target 6, horizon 10000
    c.update(3.0, 256);                          // error -0.5 clipped to -0.2
    CHECK(c.value == 0.2 * (1 + -0.2 * 256 / 10000));
    c.update(12.0, 256);  // +1 clipped to +0.2
    CHECK(c.value == doctest::Approx(0.2 * (1 - 0.2 * 0.0256) * (1 + 0.2 * 0.0256)).epsilon(1e-15));
    const double before = c.value;
    c.update(6.0, 512);  // on target: unchanged
    CHECK(c.value == before);
    c.update(6.6, 100);  // error 0.1 inside the clip
    CHECK(c.value == doctest::Approx(before * (1 + 0.1 * 100 / 10000)).epsilon(1e-14));
    const auto v = pl::adaptive_kl_controller::verl();
    CHECK(v.value == 0.001);
    CHECK(v.target == 0.1);
    CHECK(v.horizon == 10000);
    using doctest::Contains;
    CHECK_THROWS_WITH_AS(c.update(nan_v, 1), Contains("argument 'current_kl'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(c.update(1, -1), Contains("argument 'n_steps'"), pt::invalid_argument);
    pl::adaptive_kl_controller z{0.1, 0.0, 100};
    CHECK_THROWS_WITH_AS(z.update(1, 1), Contains("argument 'target'"), pt::invalid_argument);
    pl::adaptive_kl_controller hz{0.1, 1.0, 0.0};
    CHECK_THROWS_WITH_AS(hz.update(1, 1), Contains("argument 'horizon'"), pt::invalid_argument);
}
