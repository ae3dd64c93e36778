#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/logits.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

template <class T>
pt::tensor_view<const T, 3> cube(const std::vector<T>& v, pt::index_t b, pt::index_t t, pt::index_t n) {
    return pt::tensor_view<const T, 3>(v.data(), b, t, n);
}
template <class T>
pt::tensor_view<T, 3> cube(std::vector<T>& v, pt::index_t b, pt::index_t t, pt::index_t n) {
    return pt::tensor_view<T, 3>(v.data(), b, t, n);
}

// log softmax(z)[k] by the textbook formula in long double, for comparison.
double naive_log_prob(const double* z, pt::index_t V, pt::index_t k) {
    long double m = z[0];
    for (pt::index_t v = 1; v < V; ++v) m = z[v] > m ? z[v] : m;
    long double s = 0;
    for (pt::index_t v = 0; v < V; ++v) s += std::exp(static_cast<long double>(z[v]) - m);
    return static_cast<double>(z[k] - m - std::log(s));
}

struct problem {
    pt::index_t B, T, V;
    std::vector<double> z;
    std::vector<std::int64_t> y;
};

// Random logits with scale `scale`, labels with ~25% ignored positions whose logits are NaN garbage.
problem random_problem(pt::index_t B, pt::index_t T, pt::index_t V, double scale, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0, scale);
    std::uniform_int_distribution<std::int64_t> lab(0, V - 1);
    std::bernoulli_distribution skip(0.25);
    problem p{B, T, V, std::vector<double>(std::size_t(B * T * V)), std::vector<std::int64_t>(std::size_t(B * T))};
    for (auto& x : p.z) x = n(rng);
    for (pt::index_t i = 0; i < B * T; ++i) {
        p.y[std::size_t(i)] = skip(rng) ? -100 : lab(rng);
        if (p.y[std::size_t(i)] == -100)
            for (pt::index_t v = 0; v < V; ++v) p.z[std::size_t(i * V + v)] = nan_v;
    }
    return p;
}

}  // namespace

TEST_CASE_TEMPLATE("token_log_probs: log-softmax at the labels, 0 at ignored positions, seq == par bitwise", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto p = random_problem(5, 7, 11, 3.0, 1);
    std::vector<double> out(35, 42.0), ref(35, 42.0);
    pp::token_log_probs(Backend::policy(), cube(p.z, 5, 7, 11), matrix(p.y, 5, 7), matrix(out, 5, 7));
    pp::token_log_probs(pt::exec::seq, cube(p.z, 5, 7, 11), matrix(p.y, 5, 7), matrix(ref, 5, 7));
    CHECK(pt::test::bitwise_equal(out, ref));
    for (pt::index_t i = 0; i < 35; ++i) {
        if (p.y[std::size_t(i)] == -100) {
            CHECK(out[std::size_t(i)] == 0.0);
        } else {
            CHECK(out[std::size_t(i)] == doctest::Approx(naive_log_prob(&p.z[std::size_t(i * 11)], 11, p.y[std::size_t(i)])).epsilon(1e-14));
            CHECK(out[std::size_t(i)] <= 0.0);
        }
    }
    // The backward: seq == par bitwise too, masked positions 0 whatever grad_logp holds there.
    std::vector<double> up(35);
    for (std::size_t i = 0; i < up.size(); ++i) up[i] = p.y[i] == -100 ? nan_v : 0.1 * double(i) - 1.5;
    std::vector<double> g(35 * 11, 7.0), gref(35 * 11, 7.0);
    pp::token_log_probs_backward(Backend::policy(), cube(p.z, 5, 7, 11), matrix(p.y, 5, 7), matrix(up, 5, 7), cube(g, 5, 7, 11));
    pp::token_log_probs_backward(pt::exec::seq, cube(p.z, 5, 7, 11), matrix(p.y, 5, 7), matrix(up, 5, 7), cube(gref, 5, 7, 11));
    CHECK(pt::test::bitwise_equal(g, gref));
    for (pt::index_t i = 0; i < 35; ++i) {
        double row = 0;
        for (pt::index_t v = 0; v < 11; ++v) {
            const double x = g[std::size_t(i * 11 + v)];
            CHECK(std::isfinite(x));
            if (p.y[std::size_t(i)] == -100) CHECK(x == 0.0);
            row += x;
        }
        CHECK(row == doctest::Approx(0.0).scale(1.0).epsilon(1e-14));  // softmax gradients sum to 0 per position
    }
}

TEST_CASE("token_log_probs_backward: central finite differences in double") {
    for (double scale : {1.0, 4.0}) {
        const auto p = random_problem(3, 4, 6, scale, 7 + std::uint64_t(scale));
        std::vector<double> w(12);
        std::mt19937_64 rng(3);
        std::normal_distribution<double> n(0, 1);
        for (auto& x : w) x = n(rng);
        // L(z) = sum_{b,t} w[b,t] * logp[b,t]
        auto loss = [&](const std::vector<double>& z) {
            std::vector<double> lp(12);
            pp::token_log_probs(pt::exec::seq, cube(z, 3, 4, 6), matrix(p.y, 3, 4), matrix(lp, 3, 4));
            double s = 0;
            for (std::size_t i = 0; i < 12; ++i) s += w[i] * lp[i];
            return s;
        };
        std::vector<double> g(72);
        pp::token_log_probs_backward(pt::exec::seq, cube(p.z, 3, 4, 6), matrix(p.y, 3, 4), matrix(w, 3, 4), cube(g, 3, 4, 6));
        const double h = 1e-6;
        for (std::size_t j = 0; j < 72; ++j) {
            if (p.y[j / 6] == -100) {
                CHECK(g[j] == 0.0);
                continue;
            }
            auto zp = p.z, zm = p.z;
            zp[j] += h;
            zm[j] -= h;
            const double fd = (loss(zp) - loss(zm)) / (2 * h);
            CHECK(g[j] == doctest::Approx(fd).epsilon(1e-6).scale(1e-3));
        }
    }
}

TEST_CASE("token_log_probs: extreme logits (+-50, +-1e4) stay finite and exact") {
    // Rows: [1e4, 0, -1e4] label 0 (the argmax by 1e4), [50, -50, 0] label 2, [0, 0, 1e4] label 0 (1e4 below
    // the max), [-1e4, 0, 0] label 0.
    const std::vector<double> z = {1e4, 0.0, -1e4, 50.0, -50.0, 0.0, 0.0, 0.0, 1e4, -1e4, 0.0, 0.0};
    const std::vector<std::int64_t> y = {0, 2, 0, 0};
    std::vector<double> lp(4);
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 4, 3), matrix(y, 1, 4), matrix(lp, 1, 4));
    CHECK(lp[0] == 0.0);
    CHECK(lp[1] == doctest::Approx(-50.0 - std::log1p(std::exp(-50.0) + std::exp(-100.0))).epsilon(1e-15));
    CHECK(lp[2] == -1e4);
    CHECK(lp[3] == doctest::Approx(-1e4 - std::log(2.0)).epsilon(1e-15));
    const std::vector<double> up = {1.0, 1.0, 1.0, 1.0};
    std::vector<double> g(12);
    pp::token_log_probs_backward(pt::exec::seq, cube(z, 1, 4, 3), matrix(y, 1, 4), matrix(up, 1, 4), cube(g, 1, 4, 3));
    for (double x : g) CHECK(std::isfinite(x));
    CHECK(g[0] == 0.0);
    CHECK(g[1] == 0.0);
    CHECK(g[2] == 0.0);
    CHECK(g[3] == doctest::Approx(-1.0).epsilon(1e-15));
    CHECK(g[5] == doctest::Approx(1.0).epsilon(1e-15));
    CHECK(g[6] == 1.0);
    CHECK(g[8] == -1.0);
    CHECK(g[9] == 1.0);
    CHECK(g[10] == -0.5);
    // Near-certain label: 1 - p = rest / s keeps its relative accuracy (1 - p ~ 1e-20 is not 0).
    const std::vector<double> z2 = {46.0, 0.0};
    const std::vector<std::int64_t> y2 = {0};
    std::vector<double> lp2(1), g2(2);
    const std::vector<double> one = {1.0};
    pp::token_log_probs(pt::exec::seq, cube(z2, 1, 1, 2), matrix(y2, 1, 1), matrix(lp2, 1, 1));
    pp::token_log_probs_backward(pt::exec::seq, cube(z2, 1, 1, 2), matrix(y2, 1, 1), matrix(one, 1, 1), cube(g2, 1, 1, 2));
    CHECK(lp2[0] == doctest::Approx(-std::exp(-46.0)).epsilon(1e-14));
    CHECK(g2[0] == doctest::Approx(std::exp(-46.0)).epsilon(1e-14));
    CHECK(g2[1] == doctest::Approx(-std::exp(-46.0)).epsilon(1e-14));
}

TEST_CASE("token_log_probs: -inf logits are probability-0 entries; float views; strided (shifted) views") {
    const std::vector<double> z = {-inf_v, 0.0, 0.0, -inf_v};
    const std::vector<std::int64_t> y = {1, 0};
    std::vector<float> lp(2);
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 2), matrix(y, 1, 2), matrix(lp, 1, 2));
    CHECK(lp[0] == 0.0f);
    CHECK(lp[1] == 0.0f);
    // A -inf label logit has log-prob -inf (the downstream losses reject it at valid positions).
    const std::vector<std::int64_t> y_bad = {0, 0};
    std::vector<double> lpd(2);
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 2), matrix(y_bad, 1, 2), matrix(lpd, 1, 2));
    CHECK(lpd[0] == -inf_v);

    // The causal shift logits[:, :-1] vs labels[:, 1:] as strided views gives the compacted result.
    auto p = random_problem(2, 6, 5, 2.0, 11);
    for (auto& x : p.z) x = std::isnan(x) ? 0.5 : x;  // the shift pairs logits and labels of different positions
    const pt::index_t B = 2, T = 6, V = 5;
    const pt::index_t ze[3] = {B, T - 1, V}, zs[3] = {T * V, V, 1};
    const pt::index_t ye[2] = {B, T - 1}, ys[2] = {T, 1};
    pt::tensor_view<const double, 3> zv(p.z.data(), ze, zs);
    pt::tensor_view<const std::int64_t, 2> yv(p.y.data() + 1, ye, ys);
    std::vector<double> a(std::size_t(B * (T - 1)));
    pp::token_log_probs(pt::exec::seq, zv, yv, matrix(a, B, T - 1));
    std::vector<double> zc, b(a.size());
    std::vector<std::int64_t> yc;
    for (pt::index_t i = 0; i < B; ++i)
        for (pt::index_t t = 0; t < T - 1; ++t) {
            for (pt::index_t v = 0; v < V; ++v) zc.push_back(p.z[std::size_t((i * T + t) * V + v)]);
            yc.push_back(p.y[std::size_t(i * T + t + 1)]);
        }
    pp::token_log_probs(pt::exec::seq, cube(zc, B, T - 1, V), matrix(yc, B, T - 1), matrix(b, B, T - 1));
    CHECK(pt::test::bitwise_equal(a, b));

    // A vocabulary-strided layout (logits stored [V, T], gradient too) gives the contiguous bits.
    {
        const auto q = random_problem(1, 4, 6, 2.0, 13);
        std::vector<double> zt(24), lc(4), ls(4), gc(24), gt(24);
        for (pt::index_t t = 0; t < 4; ++t)
            for (pt::index_t v = 0; v < 6; ++v) zt[std::size_t(v * 4 + t)] = q.z[std::size_t(t * 6 + v)];
        const pt::index_t e3[3] = {1, 4, 6}, s3[3] = {24, 1, 4};
        pt::tensor_view<const double, 3> zs(zt.data(), e3, s3);
        pp::token_log_probs(pt::exec::seq, cube(q.z, 1, 4, 6), matrix(q.y, 1, 4), matrix(lc, 1, 4));
        pp::token_log_probs(pt::exec::seq, zs, matrix(q.y, 1, 4), matrix(ls, 1, 4));
        CHECK(pt::test::bitwise_equal(lc, ls));
        const std::vector<double> w = {0.5, -1.0, 2.0, 1.5};
        pp::token_log_probs_backward(pt::exec::seq, cube(q.z, 1, 4, 6), matrix(q.y, 1, 4), matrix(w, 1, 4), cube(gc, 1, 4, 6));
        pp::token_log_probs_backward(pt::exec::seq, zs, matrix(q.y, 1, 4), matrix(w, 1, 4), pt::tensor_view<double, 3>(gt.data(), e3, s3));
        for (pt::index_t t = 0; t < 4; ++t)
            for (pt::index_t v = 0; v < 6; ++v) CHECK(gt[std::size_t(v * 4 + t)] == gc[std::size_t(t * 6 + v)]);
    }

    // A custom ignore index and int32 labels.
    const std::vector<std::int32_t> y32 = {1, -1};
    std::vector<double> lp32(2, 5.0);
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 2), matrix(y32, 1, 2), matrix(lp32, 1, 2), {.ignore_index = -1});
    CHECK(lp32[0] == 0.0);
    CHECK(lp32[1] == 0.0);
}

TEST_CASE("token_log_probs: bad input raises naming the function and the argument") {
    using doctest::Contains;
    const std::vector<double> z = {0.0, 1.0, 2.0, 3.0, nan_v, 1.0};
    std::vector<double> lp(2), g(6);
    const std::vector<double> up = {1.0, 1.0};
    const std::vector<std::int64_t> y_out = {3, 0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y_out, 1, 2), matrix(lp, 1, 2)),
                         Contains("posttrain::preference::token_log_probs: argument 'labels': label 3 at [0, 0] is outside [0, 3)"),
                         pt::invalid_argument);
    const std::vector<std::int64_t> y_neg = {-5, 0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y_neg, 1, 2), matrix(lp, 1, 2)),
                         Contains("argument 'labels': label -5"), pt::invalid_argument);
    const std::vector<std::int64_t> y = {0, 1};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2)),
                         Contains("posttrain::preference::token_log_probs: argument 'logits': non-finite value nan at a scored position [0, 1, 1]"),
                         pt::invalid_argument);
    // Under exec::par the first bad row is reported whatever thread found it first.
    {
        std::vector<double> big(8 * 2 * 3, 0.5);
        big[std::size_t((5 * 2 + 1) * 3 + 2)] = nan_v;
        big[std::size_t((2 * 2 + 0) * 3 + 0)] = inf_v;
        const std::vector<std::int64_t> yb(16, 1);
        std::vector<double> ob(16);
        CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::par.with_threads(4), cube(big, 8, 2, 3), matrix(yb, 8, 2), matrix(ob, 8, 2)),
                             Contains("argument 'logits': non-finite value inf at a scored position [2, 0, 0]"), pt::invalid_argument);
    }
    // The same NaN at an ignored position is never read.
    const std::vector<std::int64_t> y_skip = {0, -100};
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y_skip, 1, 2), matrix(lp, 1, 2));
    CHECK(lp[1] == 0.0);
    const std::vector<double> all_ninf = {-inf_v, -inf_v, -inf_v, 0.0, 0.0, 0.0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(all_ninf, 1, 2, 3), matrix(y_skip, 1, 2), matrix(lp, 1, 2)),
                         Contains("argument 'logits': every logit of the scored position [0, 0] is -inf"), pt::invalid_argument);
    const std::vector<double> pinf = {inf_v, 0.0, 0.0, 0.0, 0.0, 0.0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(pinf, 1, 2, 3), matrix(y_skip, 1, 2), matrix(lp, 1, 2)),
                         Contains("argument 'logits': non-finite value inf"), pt::invalid_argument);
    std::vector<double> lp3(3);
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y_skip, 1, 2), matrix(lp3, 1, 3)),
                         Contains("argument 'out': shape must match the first two dimensions of 'logits'"), pt::invalid_argument);
    const std::vector<std::int64_t> y3 = {0, 0, 0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y3, 1, 3), matrix(lp, 1, 2)),
                         Contains("argument 'labels': shape must match"), pt::invalid_argument);
    // Aliasing the output with the logits.
    std::vector<double> zz = {0.0, 1.0, 2.0, 3.0, 4.0, 1.0};
    CHECK_THROWS_WITH_AS(pp::token_log_probs(pt::exec::seq, cube(std::as_const(zz), 1, 2, 3), matrix(y, 1, 2), matrix(zz, 1, 2)),
                         Contains("argument 'out': the output overlaps the input 'logits'"), pt::invalid_argument);

    // Backward.
    const std::vector<double> zf = {0.0, 1.0, 2.0, 3.0, 4.0, 1.0};
    const std::vector<double> up_nan = {1.0, nan_v};
    CHECK_THROWS_WITH_AS(
        pp::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up_nan, 1, 2), cube(g, 1, 2, 3)),
        Contains("posttrain::preference::token_log_probs_backward: argument 'grad_logp': non-finite value at a scored position [0, 1]"),
        pt::invalid_argument);
    pp::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y_skip, 1, 2), matrix(up_nan, 1, 2), cube(g, 1, 2, 3));
    CHECK(g[3] == 0.0);
    std::vector<double> g5(5);
    CHECK_THROWS_WITH_AS(
        pp::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2), cube(g5, 1, 1, 5)),
        Contains("argument 'grad_logits': shape must match 'logits'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(
        pp::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y_out, 1, 2), matrix(up, 1, 2), cube(g, 1, 2, 3)),
        Contains("argument 'labels': label 3"), pt::invalid_argument);
}

TEST_CASE("token_log_probs: empty extents are no-ops") {
    const std::vector<double> z;
    const std::vector<std::int64_t> y;
    std::vector<double> lp, g;
    pp::token_log_probs(pt::exec::seq, cube(z, 0, 3, 4), matrix(y, 0, 3), matrix(lp, 0, 3));
    pp::token_log_probs_backward(pt::exec::seq, cube(z, 2, 0, 4), matrix(y, 2, 0), matrix(lp, 2, 0), cube(g, 2, 0, 4));
    // V = 0 with every position ignored is fine; a scored position with V = 0 has no label in range.
    const std::vector<std::int64_t> y_ign = {-100};
    std::vector<double> one(1);
    pp::token_log_probs(pt::exec::seq, cube(z, 1, 1, 0), matrix(y_ign, 1, 1), matrix(one, 1, 1));
    CHECK(one[0] == 0.0);
}
