#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/value_loss.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::test::matrix;

namespace {

constexpr double inf_v = std::numeric_limits<double>::infinity();
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

struct batch {
    std::vector<double> v, vo, R, m;
};

// Values drawn so that some tokens are clipped on either side, some not.
batch random_batch(pt::index_t rows, pt::index_t T, std::uint64_t seed) {
    batch b;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 1.0);
    const std::size_t n = std::size_t(rows * T);
    b.v.resize(n), b.vo.resize(n), b.R.resize(n);
    for (std::size_t j = 0; j < n; ++j) {
        b.vo[j] = g(rng);
        b.v[j] = b.vo[j] + 0.6 * g(rng);
        b.R[j] = b.vo[j] + g(rng);
    }
    b.m = pt::test::random_mask(std::size_t(rows), std::size_t(T), seed + 1);
    return b;
}

pl::value_loss_result run(const batch& b, pt::index_t rows, pt::index_t T, std::vector<double>* g, const pl::value_loss_options& o,
                          double scale = 1.0) {
    if (g) return pl::value_loss(pt::exec::seq, matrix(b.v, rows, T), matrix(b.vo, rows, T), matrix(b.R, rows, T),
                                 matrix(b.m, rows, T), matrix(*g, rows, T), o, scale);
    return pl::value_loss(pt::exec::seq, matrix(b.v, rows, T), matrix(b.vo, rows, T), matrix(b.R, rows, T), matrix(b.m, rows, T),
                          pt::none, o, scale);
}

}  // namespace

TEST_CASE("value_loss: hand-computed tokens, clipfrac, presets") {
    // v = 1, v_old = 0, c = 0.2 -> v_clip = 0.2.
    batch b{{1.0, 1.0}, {0.0, 0.0}, {0.0, 2.0}, {1.0, 1.0}};
    std::vector<double> g(2);
    // Token 0 (R = 0): (v - R)^2 = 1 > (0.2)^2: unclipped branch, d/dv = 2 (v - R) = 2.
    // Token 1 (R = 2): (v - R)^2 = 1 < (1.8)^2 = 3.24: clipped branch wins, gradient 0.
    const auto r = run(b, 1, 2, &g, pl::value_loss_options::openrlhf(0.2));
    CHECK(r.loss == doctest::Approx(0.5 * (1.0 + 3.24) / 2));
    CHECK(r.clipfrac == 0.5);
    CHECK(g[0] == doctest::Approx(0.5 * 2.0 / 2));
    CHECK(g[1] == 0.0);
    CHECK(r.aggregation.loss == doctest::Approx(2 * r.loss));
    CHECK(r.aggregation.tokens == 2.0);
    // verl: masked_mean's +1e-8 in clipfrac.
    const auto rv = run(b, 1, 2, &g, pl::value_loss_options::verl(0.2));
    CHECK(rv.clipfrac == 1.0 / (2.0 + 1e-8));
    CHECK(rv.loss == r.loss);
    // No clipping (the default): plain 0.5 * mean (v - R)^2.
    const auto p = run(b, 1, 2, &g, {});
    CHECK(p.loss == 0.5 * (1.0 + 1.0) / 2);
    CHECK(p.clipfrac == 0.0);
    CHECK(g[0] == 0.5);
    CHECK(g[1] == -0.5);
    // clip 0: v_clip = v_old.
    const auto z = run(b, 1, 2, &g, {.clip = 0.0});
    CHECK(z.loss == 0.5 * (1.0 + 4.0) / 2);
    CHECK(pl::value_loss_options::verl(0.5, pl::aggregation::seq_mean_token_sum).aggregation.mode == pl::aggregation::seq_mean_token_sum);
    CHECK(pl::value_loss_options::openrlhf(0.2, false).aggregation.mode == pl::aggregation::seq_mean_token_mean);
}

TEST_CASE("value_loss: subgradients at the clip bounds and ties") {
    // v exactly at v_old + c: inside the closed interval, the two branches tie: the gradient is 2 (v - R).
    batch b{{0.5}, {0.25}, {1.5}, {1.0}};
    std::vector<double> g(1);
    (void)run(b, 1, 1, &g, {.clip = 0.25});
    CHECK(g[0] == 0.5 * 2 * (0.5 - 1.5));
    // Clipped with equal squared errors on both sides of R (v - R = -(v_clip - R)): the mean of the
    // branch derivatives (torch.max): 0.5 * (2 (v - R) + 0) under the 0.5 factor.
    batch t{{2.0}, {0.0}, {1.5}, {1.0}};  // c = 1: v_clip = 1, (2 - 1.5)^2 = (1 - 1.5)^2
    (void)run(t, 1, 1, &g, {.clip = 1.0});
    CHECK(g[0] == 0.5 * 0.5 * 2 * (2.0 - 1.5));
    CHECK(run(t, 1, 1, nullptr, {.clip = 1.0}).clipfrac == 0.0);  // a tie is not clipped
}

TEST_CASE("value_loss: gradient matches central finite differences in every mode") {
    const pt::index_t rows = 5, T = 8;
    auto b = random_batch(rows, T, 3);
    for (pt::index_t t = 0; t < T; ++t) b.m[std::size_t(3 * T + t)] = 0;  // a fully masked row
    b.v[1] = b.vo[1] + 0.2 + 1e-4;  // just outside the clip
    b.v[2] = b.vo[2] - 0.2 + 1e-4;  // just inside
    b.v[4] = b.vo[4] + 40.0;        // far outside
    b.m[1] = b.m[2] = b.m[4] = 1;
    const double h = 1e-6;
    for (double clip : {0.2, 0.0, inf_v}) {
        for (auto mode : {pl::aggregation::token_mean, pl::aggregation::token_sum, pl::aggregation::seq_mean_token_mean,
                          pl::aggregation::seq_mean_token_sum, pl::aggregation::seq_mean_token_sum_norm}) {
            const auto o = pl::value_loss_options::verl(clip, mode);
            std::vector<double> g(b.v.size());
            (void)run(b, rows, T, &g, o, -2.0);
            for (std::size_t j = 0; j < b.v.size(); ++j) {
                auto bp = b, bm = b;
                bp.v[j] += h, bm.v[j] -= h;
                const double fd = (run(bp, rows, T, nullptr, o).loss - run(bm, rows, T, nullptr, o).loss) / (2 * h);
                INFO("clip " << clip << " mode " << int(mode) << " j " << j);
                CHECK(g[j] == doctest::Approx(-2.0 * fd).epsilon(1e-6).scale(1.0));
                if (b.m[j] == 0) CHECK(g[j] == 0.0);
            }
        }
    }
}

TEST_CASE_TEMPLATE("value_loss: par equals seq bit for bit; float inputs", B, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t rows = 257, T = 61;
    const auto b = random_batch(rows, T, 9);
    for (auto o : {pl::value_loss_options::verl(0.2), pl::value_loss_options::openrlhf(0.5, false), pl::value_loss_options{}}) {
        std::vector<double> g1(b.v.size()), g2(b.v.size());
        const auto a = pl::value_loss(B::policy(), matrix(b.v, rows, T), matrix(b.vo, rows, T), matrix(b.R, rows, T),
                                      matrix(b.m, rows, T), matrix(g1, rows, T), o);
        const auto c = run(b, rows, T, &g2, o);
        CHECK(std::memcmp(&a.loss, &c.loss, sizeof(double)) == 0);
        CHECK(std::memcmp(&a.clipfrac, &c.clipfrac, sizeof(double)) == 0);
        CHECK(pt::test::bitwise_equal(g1, g2));
    }
    std::vector<float> vf(b.v.begin(), b.v.end()), gf(b.v.size());
    std::vector<std::int64_t> mi(b.m.begin(), b.m.end());
    const auto r = pl::value_loss(B::policy(), matrix(vf, rows, T), matrix(b.vo, rows, T), matrix(b.R, rows, T), matrix(mi, rows, T),
                                  matrix(gf, rows, T), pl::value_loss_options::verl(0.2));
    CHECK(std::isfinite(r.loss));
}

TEST_CASE("value_loss: edge shapes, masked garbage, bad input") {
    std::vector<double> e;
    const auto r0 = pl::value_loss(pt::exec::seq, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4));
    CHECK(r0.loss == 0.0);
    CHECK(r0.clipfrac == 0.0);
    batch allmasked{{1.0, 2.0}, {0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}};
    std::vector<double> g(2, 5.0);
    const auto rz = run(allmasked, 2, 1, &g, pl::value_loss_options::verl(0.2));
    CHECK(rz.loss == 0.0);
    CHECK(g[0] == 0.0);
    // Masked positions may hold anything under nonfinite::propagate.
    batch garbage{{1.0, nan_v}, {0.0, inf_v}, {0.0, nan_v}, {1.0, 0.0}};
    pl::value_loss_options prop = pl::value_loss_options::verl(0.2);
    prop.nonfinite_inputs = pt::advantage::nonfinite::propagate;
    const auto rg = run(garbage, 1, 2, &g, prop);
    CHECK(rg.loss == 0.5);
    CHECK(g[1] == 0.0);

    using doctest::Contains;
    batch b = random_batch(2, 3, 1);
    std::vector<double> g6(6), short4(4);
    CHECK_THROWS_WITH_AS((void)run(b, 2, 3, &g6, {.clip = -0.1}),
                         Contains("posttrain::policy_loss::value_loss: argument 'options': clip must be >= 0"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)run(b, 2, 3, &g6, {.clip = nan_v}), Contains("clip must be >= 0"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::value_loss(pt::exec::seq, matrix(b.v, 2, 3), matrix(b.vo, 3, 2), matrix(b.R, 2, 3),
                                              matrix(b.m, 2, 3), pt::none),
                         Contains("argument 'old_values': shape must match 'values'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::value_loss(pt::exec::seq, matrix(b.v, 2, 3), matrix(b.vo, 2, 3), matrix(b.R, 2, 3),
                                              matrix(b.m, 2, 3), matrix(short4, 2, 2)),
                         Contains("argument 'grad_values': shape must match 'values'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::value_loss(pt::exec::seq, matrix(b.v, 2, 3), matrix(b.vo, 2, 3), matrix(b.R, 2, 3),
                                              matrix(b.m, 2, 3), matrix(b.R, 2, 3)),
                         Contains("argument 'grad_values': the output overlaps the input 'returns'"), pt::invalid_argument);
    auto bad = b;
    bad.R[4] = nan_v;
    CHECK_THROWS_WITH_AS((void)run(bad, 2, 3, &g6, {}), Contains("argument 'returns': non-finite value nan at index [1, 1]"),
                         pt::invalid_argument);
    bad = b;
    bad.v[0] = inf_v;
    CHECK_THROWS_WITH_AS((void)run(bad, 2, 3, &g6, {}), Contains("argument 'values': non-finite"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)run(b, 2, 3, &g6, {.nonfinite_inputs = pt::advantage::nonfinite::ignore}),
                         Contains("argument 'options'"), pt::invalid_argument);
}
