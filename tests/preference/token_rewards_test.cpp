#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/token_rewards.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

struct batch {
    pt::index_t B, T;
    std::vector<double> p, q;
    std::vector<std::int64_t> m;
};

// Log-probs with NaN garbage at masked positions (interior holes included), one row fully masked.
batch random_batch(pt::index_t B, pt::index_t T, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-4.0, -0.05), d(-1.0, 1.0);
    std::bernoulli_distribution keep(0.7);
    batch b{B, T, {}, {}, {}};
    for (pt::index_t j = 0; j < B * T; ++j) {
        const bool valid = j / T != 1 && keep(rng);
        const double p = lp(rng);
        b.m.push_back(valid ? 1 : 0);
        b.p.push_back(valid ? p : nan_v);
        b.q.push_back(valid ? p + d(rng) : nan_v);
    }
    return b;
}

}  // namespace

TEST_CASE_TEMPLATE("token_rewards: beta (p - q), prefix sums and totals; masked garbage never read; seq == par bitwise", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto b = random_batch(23, 17, 3);
    const double beta = 0.3;
    std::vector<double> r(b.p.size(), 7.0), pre(b.p.size(), 7.0), tot(23, 7.0);
    std::vector<double> r0(b.p.size(), 7.0), pre0(b.p.size(), 7.0), tot0(23, 7.0);
    const auto res = pp::token_rewards(Backend::policy(), matrix(b.p, 23, 17), matrix(b.q, 23, 17), matrix(b.m, 23, 17),
                                       matrix(r, 23, 17), matrix(pre, 23, 17), tot, {beta});
    const auto res0 = pp::token_rewards(pt::exec::seq, matrix(b.p, 23, 17), matrix(b.q, 23, 17), matrix(b.m, 23, 17),
                                        matrix(r0, 23, 17), matrix(pre0, 23, 17), tot0, {beta});
    CHECK(pt::test::bitwise_equal(r, r0));
    CHECK(pt::test::bitwise_equal(pre, pre0));
    CHECK(pt::test::bitwise_equal(tot, tot0));
    CHECK(res.mean_total == res0.mean_total);
    double count = 0, mean = 0;
    for (pt::index_t i = 0; i < 23; ++i) {
        double run = 0;
        for (pt::index_t t = 0; t < 17; ++t) {
            const std::size_t j = std::size_t(i * 17 + t);
            if (b.m[j] == 0) {
                CHECK(r[j] == 0.0);
                CHECK(pre[j] == 0.0);
                continue;
            }
            ++count;
            CHECK(r[j] == beta * (b.p[j] - b.q[j]));
            run += r[j];
            CHECK(pre[j] == run);
        }
        CHECK(tot[std::size_t(i)] == doctest::Approx(run).epsilon(1e-14));
        mean += tot[std::size_t(i)] / 23;
    }
    CHECK(tot[1] == 0.0);  // the fully masked row
    CHECK(res.tokens == count);
    CHECK(res.mean_total == doctest::Approx(mean).epsilon(1e-13));
}

TEST_CASE("token_rewards: the totals are DPO's implicit rewards; their difference is the DPO margin") {
    // r -> Q*: softplus(-(sum r(y_w) - sum r(y_l))) is the DPO loss; prefix sums end at the total.
    const std::vector<double> pw = {-1.0, -0.5, -2.0}, qw = {-1.25, -0.75, -2.0}, pl = {-0.5, -3.0, nan_v}, ql = {-0.75, -2.0, nan_v};
    const std::vector<std::uint8_t> mw = {1, 1, 1}, ml = {1, 1, 0};
    std::vector<float> rw(3), pre(3);
    std::vector<double> tw(1), tl(1);
    (void)pp::token_rewards(pt::exec::seq, matrix(pw, 1, 3), matrix(qw, 1, 3), matrix(mw, 1, 3), matrix(rw, 1, 3), matrix(pre, 1, 3), tw,
                            {0.5});
    (void)pp::token_rewards(pt::exec::seq, matrix(pl, 1, 3), matrix(ql, 1, 3), matrix(ml, 1, 3), pt::none, pt::none, tl, {0.5});
    CHECK(rw[0] == 0.125f);
    CHECK(rw[1] == 0.125f);
    CHECK(rw[2] == 0.0f);
    CHECK(pre[2] == 0.25f);
    CHECK(tw[0] == 0.25);
    CHECK(tl[0] == 0.5 * (0.25 - 1.0));
    const double dpo = std::log1p(std::exp(-(tw[0] - tl[0])));
    CHECK(dpo == doctest::Approx(std::log1p(std::exp(-0.625))).epsilon(1e-15));
}

TEST_CASE("token_rewards: extreme log-ratios (+-50, +-1e4) stay finite") {
    const std::vector<double> p = {-1.0, -1e4, 49.0, -51.0}, q = {-1e4 - 1.0, -1.0, -1.0, -1.0};
    const std::vector<double> m = {1, 1, 1, 1};
    std::vector<double> r(4), pre(4), tot(1);
    const auto res = pp::token_rewards(pt::exec::seq, matrix(p, 1, 4), matrix(q, 1, 4), matrix(m, 1, 4), matrix(r, 1, 4),
                                       matrix(pre, 1, 4), tot, {1.0});
    CHECK(r[0] == 1e4);
    CHECK(r[1] == -1e4 + 1.0);
    CHECK(r[2] == 50.0);
    CHECK(r[3] == -50.0);
    CHECK(pre[3] == doctest::Approx(1.0));
    CHECK(tot[0] == doctest::Approx(1.0));
    CHECK(res.tokens == 4.0);
}

TEST_CASE("token_rewards: bad input raises naming the function and the argument") {
    using doctest::Contains;
    const std::vector<double> p = {-1.0, nan_v, -1.0, -1.0}, q = {-1.0, -1.0, -1.0, -1.0}, m = {1, 1, 1, 0};
    std::vector<double> r(4), t(2);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(p, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), matrix(r, 2, 2)),
                         Contains("posttrain::preference::token_rewards: argument 'log_probs': non-finite value at a valid position [0, 1]"),
                         pt::invalid_argument);
    const std::vector<double> m2 = {1, 0, 1, 0};
    (void)pp::token_rewards(pt::exec::seq, matrix(p, 2, 2), matrix(q, 2, 2), matrix(m2, 2, 2), matrix(r, 2, 2));  // masked NaN: fine
    CHECK(r[1] == 0.0);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(q, 2, 2), matrix(q, 1, 4), matrix(m, 2, 2), matrix(r, 2, 2)),
                         Contains("argument 'ref_log_probs': shape must match 'log_probs'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(q, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), matrix(r, 1, 4)),
                         Contains("argument 'rewards': shape must match 'log_probs'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(q, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), matrix(r, 2, 2),
                                                 matrix(r, 2, 2)),
                         Contains("argument 'prefix': the output overlaps the output 'rewards'"), pt::invalid_argument);
    auto qq = q;
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(std::as_const(qq), 2, 2), matrix(q, 2, 2), matrix(m, 2, 2),
                                                 matrix(qq, 2, 2)),
                         Contains("argument 'rewards': the output overlaps the input 'log_probs'"), pt::invalid_argument);
    std::vector<double> t3(3);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(q, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), pt::none, pt::none, t3),
                         Contains("argument 'totals': must have one entry per row"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(q, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), pt::none, pt::none, t,
                                                 {nan_v}),
                         Contains("argument 'options': beta must be finite"), pt::invalid_argument);
    // Empty batch.
    const std::vector<double> e;
    const auto z = pp::token_rewards(pt::exec::seq, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), pt::none);
    CHECK(z.mean_total == 0.0);
    CHECK(z.tokens == 0.0);
}

TEST_CASE("token_rewards: totals over rewards or prefix is refused before anything is written") {
    const std::vector<double> p = {-1.0, -2.0, -1.5, -0.5}, q = {-1.2, -1.8, -1.0, -0.7}, m = {1, 1, 1, 1};
    std::vector<double> r(4, 7.0), pre(4, 7.0);
    CHECK_THROWS_WITH_AS((void)pp::token_rewards(pt::exec::seq, matrix(p, 2, 2), matrix(q, 2, 2), matrix(m, 2, 2), matrix(r, 2, 2),
                                                 matrix(pre, 2, 2), pt::tensor_view<double, 1>(pre.data() + 1, 2)),
                         doctest::Contains("argument 'totals': the output overlaps the input 'prefix'"), pt::invalid_argument);
    CHECK(r == std::vector<double>(4, 7.0));  // nothing written
    CHECK(pre == std::vector<double>(4, 7.0));
}
