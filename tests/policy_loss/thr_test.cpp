// Token Hidden Reward and THR / NTHR reweighting: a hand-computed group, the M+ form against the
// pairwise definition, skipped groups, bad input, composition with policy_loss::compute, seq == par.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/policy_loss/policy_loss.hpp>
#include <posttrain/policy_loss/thr.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::test::matrix;

namespace {

template <class T>
pt::tensor_view<const T, 3> cube(const std::vector<T>& v, index_t a, index_t b, index_t c) {
    return pt::tensor_view<const T, 3>(v.data(), a, b, c);
}

// s_{j,t} straight from the pairwise definition, for checking the M+ form.
double pairwise_score(const std::vector<double>& h, const std::vector<double>& p, const std::vector<std::int64_t>& y,
                      const std::vector<std::uint8_t>& m, const std::vector<std::uint8_t>& ok, index_t lo, index_t hi, index_t T,
                      index_t d, index_t K, index_t j, index_t t) {
    auto g = [&](index_t i, index_t k, index_t v) { return (v == y[std::size_t(i * T + k)] ? 1.0 : 0.0) - p[std::size_t((i * T + k) * K + v)]; };
    double s = 0;
    for (index_t i = lo; i < hi; ++i) {
        if (!ok[std::size_t(i)]) continue;
        for (index_t k = 0; k < T; ++k) {
            if (!m[std::size_t(i * T + k)]) continue;
            double gg = 0, hh = 0;
            for (index_t v = 0; v < K; ++v) gg += g(i, k, v) * g(j, t, v);
            for (index_t e = 0; e < d; ++e) hh += h[std::size_t((i * T + k) * d + e)] * h[std::size_t((j * T + t) * d + e)];
            s += gg * hh;
        }
    }
    return s;
}

}  // namespace

TEST_CASE_TEMPLATE("THR: a group by hand and the three reweightings", B, POSTTRAIN_HOST_BACKENDS) {
    // Row 0 correct: y = 0, p = (0.6, 0.4), h = (1, 0). Row 1 incorrect: y = 1, p = (0.5, 0.5), h = (1, 1).
    std::vector<double> h{1, 0, 1, 1}, p{0.6, 0.4, 0.5, 0.5};
    std::vector<std::int64_t> y{0, 1};
    std::vector<std::uint8_t> m{1, 1}, ok{1, 0};
    std::vector<double> r{1, 0}, a(2), s(2), thr(2), tau(1);
    (void)pt::advantage::grpo(B::policy(), r, pt::uniform_groups{2}, a);
    const auto res = pl::token_hidden_reward(B::policy(), cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a, ok,
                                             pt::uniform_groups{2}, matrix(s, 2, 1), matrix(thr, 2, 1), tau);
    CHECK(res.skipped_groups == 0);
    // g0 = (0.4, -0.4), g1 = (-0.5, 0.5): s0 = |g0|^2 |h0|^2 = 0.32, s1 = <g0,g1><h0,h1> = -0.4
    CHECK(s[0] == doctest::Approx(0.32));
    CHECK(s[1] == doctest::Approx(-0.4));
    CHECK(tau[0] == doctest::Approx(0.32));
    CHECK(thr[1] == doctest::Approx(a[1] * -0.4));
    CHECK(thr[1] > 0);  // a negative advantage on a token pulling against the correct one

    std::vector<double> out(2);
    auto rw = pl::thr_reweight(B::policy(), a, matrix(s, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, tau, matrix(out, 2, 1),
                               {.p = 0.5, .mode = pl::thr_mode::thr});
    CHECK(out[0] == a[0]);  // |0.32| is not > 0.32: not dominant
    CHECK(out[1] == doctest::Approx(a[1] * 1.5));
    CHECK(rw.amplified_tokens == 1);
    rw = pl::thr_reweight(B::policy(), a, matrix(s, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, tau, matrix(out, 2, 1),
                          {.p = -0.5, .mode = pl::thr_mode::thr_only});
    CHECK(out[0] == 0.0);
    CHECK(out[1] == doctest::Approx(a[1] * 0.5));
    CHECK(rw.masked_tokens == 1);
    CHECK(rw.damped_tokens == 1);
    // NTHR: s1 = -0.4 is not above tau; lower the threshold to see eta = 2 |0.5 - 1/2| = 0.
    std::vector<double> low{-1.0};
    rw = pl::thr_reweight(B::policy(), a, matrix(s, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, low, matrix(out, 2, 1),
                          {.mode = pl::thr_mode::nthr});
    CHECK(out[0] == a[0]);
    CHECK(out[1] == 0.0);
    CHECK(rw.amplified_tokens == 1);
}

TEST_CASE("THR: M+ form equals the pairwise definition; skipped groups; composition with the loss") {
    const index_t B = 6, T = 5, d = 4, K = 3;
    std::vector<double> h(static_cast<std::size_t>(B * T * d)), p(static_cast<std::size_t>(B * T * K));
    std::vector<std::int64_t> y(static_cast<std::size_t>(B * T));
    std::vector<std::uint8_t> m(static_cast<std::size_t>(B * T)), ok{1, 0, 1, 1, 1, 1};  // group 1 (rows 3..5) is all correct
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = std::sin(double(i) * 0.7);
    for (std::size_t i = 0; i < y.size(); ++i) {
        y[i] = std::int64_t(i % 3);
        m[i] = i % 4 != 3;
        const double w0 = 1 + std::cos(double(i)), w1 = 1 + std::sin(double(i)), w2 = 0.5;
        p[i * 3] = w0 / (w0 + w1 + w2 + 0.3);  // V* mass < 1: not renormalised
        p[i * 3 + 1] = w1 / (w0 + w1 + w2 + 0.3);
        p[i * 3 + 2] = w2 / (w0 + w1 + w2 + 0.3);
    }
    std::vector<double> adv{0.5, -1, 0.5, 0, 0, 0}, s(static_cast<std::size_t>(B * T)), tau(2);
    const auto res = pl::token_hidden_reward(pt::exec::seq, cube(h, B, T, d), cube(p, B, T, K), matrix(y, B, T), matrix(m, B, T), adv, ok,
                                             pt::uniform_groups{3}, matrix(s, B, T), pt::none, tau);
    CHECK(res.skipped_groups == 1);
    CHECK(tau[1] == std::numeric_limits<double>::infinity());
    double min_mean = 1e300;
    for (index_t j = 0; j < 3; ++j) {
        double sum = 0;
        int cnt = 0;
        for (index_t t = 0; t < T; ++t) {
            if (!m[std::size_t(j * T + t)]) {
                CHECK(s[std::size_t(j * T + t)] == 0.0);
                continue;
            }
            const double ref = pairwise_score(h, p, y, m, ok, 0, 3, T, d, K, j, t);
            CHECK(s[std::size_t(j * T + t)] == doctest::Approx(ref).epsilon(1e-12));
            sum += ref;
            ++cnt;
        }
        if (ok[std::size_t(j)] && cnt > 0) min_mean = std::min(min_mean, sum / cnt);
    }
    CHECK(tau[0] == doctest::Approx(min_mean));
    for (index_t t = 0; t < 3 * T; ++t) CHECK(s[std::size_t(3 * T + t)] == 0.0);

    // The reweighted advantages are the loss's [B, T] advantages; a skipped group keeps its A.
    std::vector<double> tok(static_cast<std::size_t>(B * T)), lp(static_cast<std::size_t>(B * T), -1.0), old(static_cast<std::size_t>(B * T), -1.0), grad(static_cast<std::size_t>(B * T));
    (void)pl::thr_reweight(pt::exec::seq, adv, matrix(s, B, T), matrix(m, B, T), ok, pt::uniform_groups{3}, tau, matrix(tok, B, T),
                           {.p = 0.3});
    const auto loss = pl::compute(pt::exec::seq, matrix(lp, B, T), matrix(old, B, T), matrix(tok, B, T), matrix(m, B, T), matrix(grad, B, T));
    double expect = 0, cnt = 0;
    for (std::size_t i = 0; i < tok.size(); ++i)
        if (m[i]) {
            expect -= tok[i];
            cnt += 1;
        }
    CHECK(loss.loss == doctest::Approx(expect / cnt));  // ratio 1: token-mean of -A'
}

TEST_CASE("THR: bad input") {
    std::vector<double> h{1, 0, 1, 1}, p{0.6, 0.4, 0.5, 0.5}, a{1, -1}, s(2), tau(1);
    std::vector<std::int64_t> y{0, 2};
    std::vector<std::uint8_t> m{1, 1}, ok{1, 0};
    CHECK_THROWS_AS((void)pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a,
                                                  ok, pt::uniform_groups{2}, matrix(s, 2, 1), pt::none, tau),
                    pt::invalid_argument);  // target column 2 of 2
    y[1] = 1;
    std::vector<double> tau2(2);
    CHECK_THROWS_AS((void)pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a,
                                                  ok, pt::uniform_groups{2}, matrix(s, 2, 1), pt::none, tau2),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)pl::token_hidden_reward(pt::exec::seq, cube(h, 1, 2, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a,
                                                  ok, pt::uniform_groups{2}, matrix(s, 2, 1), pt::none, tau),
                    pt::invalid_argument);
    h[0] = std::nan("");
    CHECK_THROWS_AS((void)pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a,
                                                  ok, pt::uniform_groups{2}, matrix(s, 2, 1), pt::none, tau),
                    pt::invalid_argument);
    m[0] = 0;  // a NaN on a masked token is ignored
    CHECK_NOTHROW((void)pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a,
                                                ok, pt::uniform_groups{2}, matrix(s, 2, 1), pt::none, tau));
    std::vector<double> out(2), nan_tau{std::nan("")};
    CHECK_THROWS_AS((void)pl::thr_reweight(pt::exec::seq, a, matrix(s, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, nan_tau,
                                           matrix(out, 2, 1)),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)pl::thr_reweight(pt::exec::seq, a, matrix(s, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, tau,
                                           matrix(out, 2, 1), {.p = INFINITY}),
                    pt::invalid_argument);
}

TEST_CASE("THR: outputs aliasing inputs and non-finite scores are refused by name") {
    std::vector<double> h{1, 0, 1, 1}, p{0.6, 0.4, 0.5, 0.5}, a{1, -1}, s(2), tau(1), thr(2);
    std::vector<std::int64_t> y{0, 1};
    std::vector<std::uint8_t> m{1, 1}, ok{1, 0};
    auto ths = [&](auto scores, auto thr_out) {
        return pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a, ok,
                                       pt::uniform_groups{2}, scores, thr_out, tau);
    };
    CHECK_THROWS_WITH_AS((void)ths(matrix(s, 2, 1), matrix(a, 2, 1)), doctest::Contains("advantages"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)ths(matrix(h, 2, 1), matrix(thr, 2, 1)), doctest::Contains("hidden"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)ths(matrix(p, 2, 1), matrix(thr, 2, 1)), doctest::Contains("probs"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)ths(matrix(a, 2, 1), pt::none), doctest::Contains("advantages"), pt::invalid_argument);
    CHECK_NOTHROW((void)ths(matrix(s, 2, 1), matrix(thr, 2, 1)));
    // thr is checked before scores are written: over the threshold, over hidden, or of the wrong shape.
    std::vector<double> s_before{7, 7}, thr_wide(3), tau_wide(2);
    auto ths_into = [&](std::vector<double>& tau_out, auto thr_out) {
        return pl::token_hidden_reward(pt::exec::seq, cube(h, 2, 1, 2), cube(p, 2, 1, 2), matrix(y, 2, 1), matrix(m, 2, 1), a, ok,
                                       pt::uniform_groups{2}, matrix(s_before, 2, 1), thr_out,
                                       pt::tensor_view<double, 1>(tau_out.data(), 1));
    };
    CHECK_THROWS_WITH_AS((void)ths_into(tau_wide, pt::tensor_view<double, 2>(tau_wide.data(), 2, 1)), doctest::Contains("threshold"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)ths_into(tau, matrix(h, 2, 1)), doctest::Contains("hidden"), pt::invalid_argument);
    CHECK_THROWS_AS((void)ths_into(tau, pt::tensor_view<double, 2>(thr_wide.data(), 3, 1)), pt::invalid_argument);
    CHECK(s_before == std::vector<double>{7, 7});
    std::vector<double> out(2);
    auto rw = [&](const std::vector<double>& sc, auto o) {
        return pl::thr_reweight(pt::exec::seq, a, matrix(sc, 2, 1), matrix(m, 2, 1), ok, pt::uniform_groups{2}, tau, o);
    };
    CHECK_THROWS_WITH_AS((void)rw(s, matrix(a, 2, 1)), doctest::Contains("advantages"), pt::invalid_argument);
    CHECK_NOTHROW((void)rw(s, matrix(out, 2, 1)));
    std::vector<double> bad = s;
    bad[1] = std::nan("");
    CHECK_THROWS_WITH_AS((void)rw(bad, matrix(out, 2, 1)), doctest::Contains("scores"), pt::invalid_argument);
    m[1] = 0;  // a masked token's score is never read
    CHECK_NOTHROW((void)rw(bad, matrix(out, 2, 1)));
}

TEST_CASE("THR: a work estimate B T (K + 1) (d + 1) past 2^63 does not overflow") {
    // Stride-0 views: huge K and d with no memory behind them; no valid token and no correct row, so no
    // work is done, but the estimate is formed (UBSan flags a signed overflow there).
    const index_t B = 2, T = index_t(1) << 20, K = index_t(1) << 21, d = index_t(1) << 22;
    const double one = 0.5;
    const std::int64_t zero_id = 0;
    const std::uint8_t zero = 0;
    const index_t e3h[3] = {B, T, d}, e3p[3] = {B, T, K}, s3[3] = {0, 0, 0}, e2[2] = {B, T}, s2[2] = {0, 0};
    const pt::tensor_view<const double, 3> h(&one, e3h, s3), p(&one, e3p, s3);
    const pt::tensor_view<const std::int64_t, 2> y(&zero_id, e2, s2);
    const pt::tensor_view<const std::uint8_t, 2> m(&zero, e2, s2);
    std::vector<double> a{1, -1}, s(static_cast<std::size_t>(B * T)), tau(1);
    std::vector<std::uint8_t> ok{0, 0};
    const auto r = pl::token_hidden_reward(pt::exec::par.with_threads(2), h, p, y, m, a, ok, pt::uniform_groups{2}, matrix(s, B, T), pt::none, tau);
    CHECK(r.skipped_groups == 1);
}

TEST_CASE("THR: seq == par bitwise") {
    const index_t B = 64, T = 16, d = 8, K = 6;
    std::vector<double> h(static_cast<std::size_t>(B * T * d)), p(static_cast<std::size_t>(B * T * K)), a(static_cast<std::size_t>(B));
    std::vector<std::int64_t> y(static_cast<std::size_t>(B * T));
    std::vector<std::uint8_t> m(static_cast<std::size_t>(B * T)), ok(static_cast<std::size_t>(B));
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = std::sin(double(i) * 0.37);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = (1 + std::cos(double(i))) / (2.0 * double(K));
    for (std::size_t i = 0; i < y.size(); ++i) {
        y[i] = std::int64_t((i * 7) % std::size_t(K));
        m[i] = i % 5 != 0;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        ok[i] = (i * 3) % 4 == 0;
        a[i] = ok[i] ? 1.0 : -0.5;
    }
    auto run = [&](auto pol, std::vector<double>& s, std::vector<double>& thr, std::vector<double>& tau, std::vector<double>& out) {
        (void)pl::token_hidden_reward(pol, cube(h, B, T, d), cube(p, B, T, K), matrix(y, B, T), matrix(m, B, T), a, ok, pt::uniform_groups{8},
                                      matrix(s, B, T), matrix(thr, B, T), tau);
        (void)pl::thr_reweight(pol, a, matrix(s, B, T), matrix(m, B, T), ok, pt::uniform_groups{8}, tau, matrix(out, B, T), {.p = 0.2});
    };
    std::vector<double> s1(static_cast<std::size_t>(B * T)), s2(s1.size()), t1(s1.size()), t2(s1.size()), u1(8), u2(8), o1(s1.size()), o2(s1.size());
    run(pt::exec::seq, s1, t1, u1, o1);
    run(pt::exec::par.with_threads(4), s2, t2, u2, o2);
    CHECK(pt::test::bitwise_equal(s1, s2));
    CHECK(pt::test::bitwise_equal(t1, t2));
    CHECK(pt::test::bitwise_equal(u1, u2));
    CHECK(pt::test::bitwise_equal(o1, o2));
}
