#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/entropy.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::test::matrix;

namespace {

constexpr double inf_v = std::numeric_limits<double>::infinity();
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

std::vector<double> random_logits(std::size_t n, std::uint64_t seed, double scale = 3.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, scale);
    std::vector<double> z(n);
    for (auto& x : z) x = g(rng);
    return z;
}

template <class T>
pt::tensor_view<const T, 3> cube(const std::vector<T>& v, pt::index_t b, pt::index_t t, pt::index_t V) {
    return pt::tensor_view<const T, 3>(v.data(), b, t, V);
}
template <class T>
pt::tensor_view<T, 3> cube(std::vector<T>& v, pt::index_t b, pt::index_t t, pt::index_t V) {
    return pt::tensor_view<T, 3>(v.data(), b, t, V);
}

// H = -sum p log p, the textbook form, in long double.
double reference_entropy(const double* z, pt::index_t V) {
    long double m = z[0], s = 0, h = 0;
    for (pt::index_t v = 1; v < V; ++v) m = std::max<long double>(m, z[v]);
    for (pt::index_t v = 0; v < V; ++v) s += std::exp((long double)z[v] - m);
    for (pt::index_t v = 0; v < V; ++v) {
        const long double lp = (long double)z[v] - m - std::log(s);
        h -= std::exp(lp) * lp;
    }
    return double(h);
}

}  // namespace

TEST_CASE("entropy_from_logits: values against -sum p log p, uniform and one-hot limits") {
    const pt::index_t B = 3, T = 4, V = 7;
    auto z = random_logits(std::size_t(B * T * V), 1);
    for (pt::index_t v = 0; v < V; ++v) z[std::size_t(v)] = 2.5;  // token (0, 0): uniform
    z[std::size_t(V + 2)] = 800;                                   // token (0, 1): one logit dominates, no overflow
    for (pt::index_t v = 0; v < V; ++v) z[std::size_t(2 * V + v)] = -1000.0 + v;  // very negative
    std::vector<double> h(std::size_t(B * T));
    pl::entropy_from_logits(pt::exec::seq, cube(z, B, T, V), matrix(h, B, T));
    for (pt::index_t j = 0; j < B * T; ++j)
        CHECK(h[std::size_t(j)] == doctest::Approx(reference_entropy(&z[std::size_t(j * V)], V)).epsilon(1e-13).scale(1e-300));
    CHECK(h[0] == doctest::Approx(std::log(double(V))).epsilon(1e-15));
    CHECK(h[1] == 0.0);  // exp(z - m) underflows to 0 for every other entry
    // V = 1: entropy 0, gradient 0.
    std::vector<double> one{4.0}, h1(1), g1(1, 7.0);
    pl::entropy_from_logits(pt::exec::seq, cube(one, 1, 1, 1), matrix(h1, 1, 1), cube(g1, 1, 1, 1));
    CHECK(h1[0] == 0.0);
    CHECK(g1[0] == 0.0);
}

TEST_CASE("entropy_from_logits: gradient matches central finite differences, scalar and [B, T] upstream") {
    const pt::index_t B = 2, T = 3, V = 6;
    auto z = random_logits(std::size_t(B * T * V), 2, 4.0);
    z[5] = 60.0;  // a nearly one-hot token
    const auto up = pt::test::random_rewards(std::size_t(B * T), 3);
    std::vector<double> g(z.size()), gs(z.size()), h(std::size_t(B * T)), hp(h.size()), hm(h.size());
    pl::entropy_from_logits(pt::exec::seq, cube(z, B, T, V), pt::none, cube(g, B, T, V), matrix(up, B, T));
    pl::entropy_from_logits(pt::exec::seq, cube(z, B, T, V), pt::none, cube(gs, B, T, V), -0.5);
    const double step = 1e-6;
    for (std::size_t j = 0; j < z.size(); ++j) {
        auto zp = z, zm = z;
        zp[j] += step, zm[j] -= step;
        pl::entropy_from_logits(pt::exec::seq, cube(zp, B, T, V), matrix(hp, B, T));
        pl::entropy_from_logits(pt::exec::seq, cube(zm, B, T, V), matrix(hm, B, T));
        double fd = 0, fs = 0;
        for (std::size_t k = 0; k < h.size(); ++k) {
            fd += up[k] * (hp[k] - hm[k]) / (2 * step);
            fs += -0.5 * (hp[k] - hm[k]) / (2 * step);
        }
        CHECK(g[j] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
        CHECK(gs[j] == doctest::Approx(fs).epsilon(1e-6).scale(1.0));
    }
    // The gradient of one token's entropy sums to 0 over the vocabulary (softmax is shift-invariant).
    for (pt::index_t k = 0; k < B * T; ++k) {
        double s = 0;
        for (pt::index_t v = 0; v < V; ++v) s += g[std::size_t(k * V + v)];
        CHECK(std::fabs(s) < 1e-14);
    }
}

TEST_CASE("entropy_from_logits: -inf logits are masked vocabulary entries under nonfinite::propagate") {
    std::vector<double> z{1.0, -inf_v, 2.0, -inf_v}, zf{1.0, -800.0, 2.0, -800.0};
    std::vector<double> h(1), hf(1), g(4), gf(4);
    pl::entropy_options prop;
    prop.nonfinite_logits = pt::advantage::nonfinite::propagate;
    pl::entropy_from_logits(pt::exec::seq, cube(z, 1, 1, 4), matrix(h, 1, 1), cube(g, 1, 1, 4), 1.0, prop);
    pl::entropy_from_logits(pt::exec::seq, cube(zf, 1, 1, 4), matrix(hf, 1, 1), cube(gf, 1, 1, 4), 1.0, prop);
    CHECK(h[0] == hf[0]);
    for (int v = 0; v < 4; ++v) CHECK(g[std::size_t(v)] == gf[std::size_t(v)]);
    CHECK(g[1] == 0.0);
    // By default a non-finite logit is an error naming its index; NaN propagates under propagate.
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z, 1, 1, 4), matrix(h, 1, 1)),
                         doctest::Contains("posttrain::policy_loss::entropy_from_logits: argument 'logits': non-finite value -inf at index [0, 0, 1]"),
                         pt::invalid_argument);
    z[0] = nan_v;
    pl::entropy_from_logits(pt::exec::seq, cube(z, 1, 1, 4), matrix(h, 1, 1), pt::none, 1.0, prop);
    CHECK(std::isnan(h[0]));
}

TEST_CASE_TEMPLATE("entropy: par equals seq bit for bit; float logits", B, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t rows = 40, T = 13, V = 33;
    const auto z = random_logits(std::size_t(rows * T * V), 4);
    const auto m = pt::test::random_mask(rows, T, 5);
    std::vector<double> h1(std::size_t(rows * T)), h2(h1.size()), g1(z.size()), g2(z.size());
    pl::entropy_from_logits(B::policy(), cube(z, rows, T, V), matrix(h1, rows, T), cube(g1, rows, T, V));
    pl::entropy_from_logits(pt::exec::seq, cube(z, rows, T, V), matrix(h2, rows, T), cube(g2, rows, T, V));
    CHECK(pt::test::bitwise_equal(h1, h2));
    CHECK(pt::test::bitwise_equal(g1, g2));
    for (auto mode : {pl::aggregation::token_mean, pl::aggregation::seq_mean_token_mean, pl::aggregation::token_sum}) {
        const auto a = pl::entropy_loss(B::policy(), cube(z, rows, T, V), matrix(m, rows, T), matrix(h1, rows, T),
                                        cube(g1, rows, T, V), {.mode = mode}, -0.01);
        const auto b = pl::entropy_loss(pt::exec::seq, cube(z, rows, T, V), matrix(m, rows, T), matrix(h2, rows, T),
                                        cube(g2, rows, T, V), {.mode = mode}, -0.01);
        CHECK(std::memcmp(&a.loss, &b.loss, sizeof(double)) == 0);
        CHECK(pt::test::bitwise_equal(g1, g2));
        CHECK(pt::test::bitwise_equal(h1, h2));
    }
    std::vector<float> zf(z.begin(), z.end()), hf(h1.size()), gf(z.size());
    pl::entropy_from_logits(B::policy(), cube(zf, rows, T, V), matrix(hf, rows, T), cube(gf, rows, T, V));
    std::vector<double> zd(zf.begin(), zf.end());
    pl::entropy_from_logits(pt::exec::seq, cube(zd, rows, T, V), matrix(h2, rows, T), cube(g2, rows, T, V));
    for (std::size_t k = 0; k < hf.size(); ++k) CHECK(hf[k] == float(h2[k]));  // double inside, rounded once
}

TEST_CASE("entropy_loss: aggregate of the entropies, gradient against finite differences") {
    const pt::index_t B = 4, T = 5, V = 4;
    auto z = random_logits(std::size_t(B * T * V), 7);
    auto m = pt::test::random_mask(B, T, 8);
    for (pt::index_t t = 0; t < T; ++t) m[std::size_t(1 * T + t)] = 0;  // a fully masked row
    m[std::size_t(2 * T + 2)] = 0;                                       // an interior hole
    const double step = 1e-6;
    for (auto mode : {pl::aggregation::token_mean, pl::aggregation::token_sum, pl::aggregation::seq_mean_token_mean,
                      pl::aggregation::seq_mean_token_sum, pl::aggregation::seq_mean_token_sum_norm}) {
        const auto agg = pl::aggregation_options::verl(mode);
        std::vector<double> h(std::size_t(B * T)), g(z.size()), ga(h.size());
        const auto r = pl::entropy_loss(pt::exec::seq, cube(z, B, T, V), matrix(m, B, T), matrix(h, B, T), cube(g, B, T, V), agg, 3.0);
        const auto a = pl::aggregate(pt::exec::seq, matrix(h, B, T), matrix(m, B, T), matrix(ga, B, T), agg);
        CHECK(r.loss == doctest::Approx(a.loss).epsilon(1e-14));
        CHECK(r.sequences == a.sequences);
        for (std::size_t j = 0; j < z.size(); ++j) {
            auto zp = z, zm = z;
            zp[j] += step, zm[j] -= step;
            const double fp = pl::entropy_loss(pt::exec::seq, cube(zp, B, T, V), matrix(m, B, T), pt::none, pt::none, agg).loss;
            const double fm = pl::entropy_loss(pt::exec::seq, cube(zm, B, T, V), matrix(m, B, T), pt::none, pt::none, agg).loss;
            CHECK(g[j] == doctest::Approx(3.0 * (fp - fm) / (2 * step)).epsilon(1e-6).scale(1.0));
            if (m[j / std::size_t(V)] == 0) CHECK(g[j] == 0.0);
        }
    }
    // Masked logits may hold anything under propagate; their entropy is still reported.
    auto zn = z;
    zn[std::size_t((1 * T + 2) * V + 1)] = nan_v;
    pl::entropy_options prop;
    prop.nonfinite_logits = pt::advantage::nonfinite::propagate;
    std::vector<double> h(std::size_t(B * T)), g(z.size());
    const auto r = pl::entropy_loss(pt::exec::seq, cube(zn, B, T, V), matrix(m, B, T), matrix(h, B, T), cube(g, B, T, V), {}, 1.0, prop);
    CHECK(std::isfinite(r.loss));
    CHECK(std::isnan(h[std::size_t(1 * T + 2)]));
    for (double x : g) CHECK(std::isfinite(x));
}

TEST_CASE("entropy: edge shapes and bad input") {
    std::vector<double> e;
    pl::entropy_from_logits(pt::exec::seq, cube(e, 0, 3, 5), matrix(e, 0, 3), cube(e, 0, 3, 5));  // B = 0
    const auto r0 = pl::entropy_loss(pt::exec::seq, cube(e, 0, 3, 5), matrix(e, 0, 3), pt::none, pt::none);
    CHECK(r0.loss == 0.0);
    std::vector<double> z{0.0, 0.0}, m{1}, g(2), h(1);  // T = 1, V = 2: log 2
    const auto r = pl::entropy_loss(pt::exec::seq, cube(z, 1, 1, 2), matrix(m, 1, 1), matrix(h, 1, 1), cube(g, 1, 1, 2));
    CHECK(r.loss == doctest::Approx(std::log(2.0)));
    CHECK(g[0] == 0.0);  // maximum entropy: stationary

    using doctest::Contains;
    std::vector<double> z6(6), h2(2), h3(3), g6(6), m3(3);
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), matrix(h3, 1, 3)),
                         Contains("argument 'entropy': shape must match the first two dimensions of 'logits'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), matrix(h2, 1, 2), cube(g6, 1, 3, 2)),
                         Contains("argument 'grad_logits': shape must match 'logits'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), pt::none, cube(g6, 1, 2, 3), matrix(h3, 1, 3)),
                         Contains("argument 'grad_entropy': shape must match"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), pt::none, cube(z6, 1, 2, 3)),
                         Contains("argument 'grad_logits': the output overlaps the input 'logits'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), pt::none, cube(g6, 1, 2, 3), nan_v),
                         Contains("argument 'grad_entropy': must be finite"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pl::entropy_loss(pt::exec::seq, cube(z6, 1, 2, 3), matrix(m3, 1, 3), pt::none, pt::none),
                         Contains("posttrain::policy_loss::entropy_loss: argument 'mask'"), pt::invalid_argument);
    pl::entropy_options ign;
    ign.nonfinite_logits = pt::advantage::nonfinite::ignore;
    CHECK_THROWS_WITH_AS(pl::entropy_from_logits(pt::exec::seq, cube(z6, 1, 2, 3), matrix(h2, 1, 2), pt::none, 1.0, ign),
                         Contains("argument 'options'"), pt::invalid_argument);
    pl::aggregation_options bad;
    bad.global_tokens = -1;
    CHECK_THROWS_WITH_AS((void)pl::entropy_loss(pt::exec::seq, cube(z6, 1, 2, 3), matrix(h2, 1, 2), pt::none, pt::none, bad),
                         Contains("global_tokens must be >= 0"), pt::invalid_argument);
}
