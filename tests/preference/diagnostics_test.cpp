#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/diagnostics.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::index_t;
using pt::test::matrix;
using pt::test::error_of;
using pt::test::mentions;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
}  // namespace

TEST_CASE("kl_budget: k1 and k3 sums, means, sqrt, masked padding and empty rows") {
    // Row 0: two valid tokens (left padding NaN), row 1: none.
    std::vector<double> p = {nan_v, -1.0, -2.0, nan_v, nan_v, nan_v};
    std::vector<double> q = {nan_v, -1.5, -1.0, nan_v, nan_v, nan_v};
    std::vector<double> m = {0, 1, 1, 0, 0, 0};
    std::vector<double> k1(2), k3(2);
    const auto r = pp::kl_budget(pt::exec::seq, matrix(p, 2, 3), matrix(q, 2, 3), matrix(m, 2, 3), k1, k3);
    // d = q - p = (-0.5, 1): k1 = 0.5 - 1 = -0.5; k3 = (e^-0.5 + 0.5 - 1) + (e^1 - 1 - 1).
    CHECK(k1[0] == doctest::Approx(-0.5));
    CHECK(k3[0] == doctest::Approx(std::exp(-0.5) - 0.5 + std::exp(1.0) - 2.0));
    CHECK(k1[1] == 0.0);
    CHECK(k3[1] == 0.0);
    CHECK(r.k1_mean == doctest::Approx(-0.25));
    CHECK(r.k1_negative);
    CHECK(r.sqrt_k1 == 0.0);
    CHECK(r.k3_mean == doctest::Approx(k3[0] / 2));
    CHECK(r.sqrt_k3 == doctest::Approx(std::sqrt(k3[0] / 2)));
    CHECK(r.tokens == 2.0);
    CHECK(r.sequences == 2.0);
    // k3 stays accurate for tiny log-ratios (expm1 form) and is never negative.
    std::vector<double> ps = {-1.0}, qs = {-1.0 + 1e-9}, ms = {1};
    const auto t = pp::kl_budget(pt::exec::seq, matrix(ps, 1, 1), matrix(qs, 1, 1), matrix(ms, 1, 1));
    CHECK(t.k3_mean == doctest::Approx(0.5e-18).epsilon(1e-6));
    // No outputs, empty batch.
    std::vector<double> e;
    const auto z = pp::kl_budget(pt::exec::seq, matrix(e, 0, 3), matrix(e, 0, 3), matrix(e, 0, 3));
    CHECK(z.k1_mean == 0.0);
    CHECK(z.sequences == 0.0);
}

TEST_CASE("kl_budget and ensemble_disagreement: bad input names function and argument") {
    std::vector<double> p = {-1.0, nan_v}, q = {-1.0, -1.0}, m = {1, 1};
    CHECK(mentions(error_of([&] { (void)pp::kl_budget(pt::exec::seq, matrix(p, 1, 2), matrix(q, 1, 2), matrix(m, 1, 2)); }),
                   "kl_budget", "log_probs"));
    CHECK(mentions(error_of([&] { (void)pp::kl_budget(pt::exec::seq, matrix(q, 1, 2), matrix(q, 2, 1), matrix(m, 1, 2)); }),
                   "kl_budget", "ref_log_probs"));
    std::vector<double> k(3);
    CHECK(mentions(error_of([&] { (void)pp::kl_budget(pt::exec::seq, matrix(q, 1, 2), matrix(q, 1, 2), matrix(m, 1, 2), k); }),
                   "kl_budget", "k1"));
    std::vector<double> one = {1.0, 2.0};
    CHECK(mentions(error_of([&] { (void)pp::ensemble_disagreement(pt::exec::seq, matrix(one, 2, 1)); }), "ensemble_disagreement",
                   "rewards"));
    std::vector<double> bad = {1.0, INFINITY};
    CHECK(mentions(error_of([&] { (void)pp::ensemble_disagreement(pt::exec::seq, matrix(bad, 1, 2)); }), "ensemble_disagreement",
                   "rewards"));
}

TEST_CASE("held-out implicit rewards, pair metrics and their drift from a baseline") {
    std::vector<double> p = {-1.0, -2.0, nan_v, -0.5, nan_v, nan_v};
    std::vector<double> q = {-1.5, -1.5, nan_v, -1.0, nan_v, nan_v};
    std::vector<double> m = {1, 1, 0, 1, 0, 0};
    const auto P = pp::sequence_input::tokens(matrix(p, 2, 3), matrix(m, 2, 3));
    const auto Q = pp::sequence_input::tokens(matrix(q, 2, 3), matrix(m, 2, 3));
    std::vector<double> rew(2);
    const auto h = pp::held_out_implicit_rewards(pt::exec::seq, P, Q, 0.5, rew);
    // S = (-3, -0.5), S_ref = (-3, -1): rewards (0, 0.25); token means (-1.5, -0.5).
    CHECK(rew[0] == 0.0);
    CHECK(rew[1] == 0.25);
    CHECK(h.reward_mean == 0.125);
    CHECK(h.logps_mean == -1.75);
    CHECK(h.token_logp_mean == -1.0);
    pp::held_out_stats base;
    base.reward_mean = 0.5, base.logps_mean = -1.0, base.token_logp_mean = -0.5;
    const auto d = pp::drift(h, base);
    CHECK(d.reward == -0.375);
    CHECK(d.logps == -0.75);
    CHECK(d.token_logp == -0.5);
    // Sums without lengths: no per-token mean.
    std::vector<double> s = {-3.0, -0.5}, sr = {-3.0, -1.0};
    const auto hs = pp::held_out_implicit_rewards(pt::exec::seq, pp::sequence_input::sums(s), pp::sequence_input::sums(sr), 0.5);
    CHECK(hs.reward_mean == 0.125);
    CHECK(std::isnan(hs.token_logp_mean));
    // Pairs: chosen = row sums s, rejected = sr (as policy), reference all zero.
    std::vector<double> z = {0.0, 0.0};
    const auto mtr = pp::pair_implicit_rewards(pt::exec::seq, pp::sequence_input::sums(s), pp::sequence_input::sums(sr),
                                               pp::sequence_input::sums(z), pp::sequence_input::sums(z), 0.5);
    CHECK(mtr.chosen == doctest::Approx(0.5 * -1.75));
    CHECK(mtr.rejected == doctest::Approx(0.5 * -2.0));
    CHECK(mtr.accuracy == 0.5);  // (-1.5 vs -1.5) tie, (-0.25 > -0.5)
    const auto md = pp::drift(mtr, pp::reward_metrics{});
    CHECK(md.chosen == mtr.chosen);
    CHECK(md.logps_rejected == mtr.logps_rejected);
    CHECK(mentions(error_of([&] { (void)pp::held_out_implicit_rewards(pt::exec::seq, P, Q, 0.0); }), "held_out_implicit_rewards", "beta"));
    std::vector<double> s3 = {1.0, 2.0, 3.0};
    CHECK(mentions(error_of([&] { (void)pp::held_out_implicit_rewards(pt::exec::seq, P, pp::sequence_input::sums(s3), 0.1); }),
                   "held_out_implicit_rewards", "ref_log_probs"));
}

TEST_CASE("length_exploitation: slope, intercept, R^2 and degenerate variance") {
    // Exactly linear: reward = 0.5 - 0.25 * length.
    std::vector<double> len = {1, 2, 3, 4}, rew = {0.25, 0.0, -0.25, -0.5};
    const auto r = pp::length_exploitation(pt::exec::seq, rew, len);
    CHECK(r.slope == doctest::Approx(-0.25));
    CHECK(r.intercept == doctest::Approx(0.5));
    CHECK(r.r_squared == doctest::Approx(1.0));
    CHECK(r.mean_length == 2.5);
    CHECK(!r.length_degenerate);
    // Hand example: x = (0, 1, 2), y = (0, 2, 1): slope 0.5, R^2 = 0.25.
    std::vector<double> x = {0, 1, 2}, y = {0, 2, 1};
    const auto h = pp::length_exploitation(pt::exec::seq, y, x);
    CHECK(h.slope == doctest::Approx(0.5));
    CHECK(h.intercept == doctest::Approx(0.5));
    CHECK(h.r_squared == doctest::Approx(0.25));
    // All lengths equal: no fit.
    std::vector<double> same = {3, 3, 3};
    const auto d = pp::length_exploitation(pt::exec::seq, y, same);
    CHECK(d.length_degenerate);
    CHECK(d.slope == 0.0);
    CHECK(d.r_squared == 0.0);
    CHECK(d.intercept == 1.0);
    // All rewards equal.
    std::vector<double> flat = {2, 2, 2};
    const auto f = pp::length_exploitation(pt::exec::seq, flat, x);
    CHECK(f.reward_degenerate);
    CHECK(f.r_squared == 0.0);
    // From sequence inputs: lengths from the mask, reward beta * (S - S_ref).
    std::vector<double> p = {-1.0, nan_v, nan_v, -1.0, -1.0, nan_v, -1.0, -1.0, -1.0};
    std::vector<double> q(9, 0.0), m = {1, 0, 0, 1, 1, 0, 1, 1, 1};
    const auto s = pp::length_exploitation(pt::exec::seq, pp::sequence_input::tokens(matrix(p, 3, 3), matrix(m, 3, 3)),
                                           pp::sequence_input::tokens(matrix(q, 3, 3), matrix(m, 3, 3)), 0.1);
    CHECK(s.mean_length == 2.0);
    CHECK(s.slope == doctest::Approx(-0.1));
    CHECK(s.r_squared == doctest::Approx(1.0));
    // Bad input.
    std::vector<double> neg = {1, -1, 2};
    CHECK(mentions(error_of([&] { (void)pp::length_exploitation(pt::exec::seq, y, neg); }), "length_exploitation", "lengths"));
    std::vector<double> two = {1, 2};
    CHECK(mentions(error_of([&] { (void)pp::length_exploitation(pt::exec::seq, y, two); }), "length_exploitation", "lengths"));
    std::vector<double> sums = {1.0, 2.0};
    CHECK(mentions(error_of([&] {
              (void)pp::length_exploitation(pt::exec::seq, pp::sequence_input::sums(sums), pp::sequence_input::sums(sums), 0.1);
          }),
          "length_exploitation", "policy_log_probs"));
    const auto e = pp::length_exploitation(pt::exec::seq, std::vector<double>{}, std::vector<double>{});
    CHECK(e.samples == 0.0);
    CHECK(e.length_degenerate);
}

TEST_CASE("length_exploitation: tiny or huge spreads neither underflow nor overflow the fit") {
    // Squared deviations of 1e-170 underflow to 0 and of 1e200 overflow to inf in a plain two-pass sum;
    // the fit is scale-free, so these must give the answers of the same data at unit scale.
    std::vector<double> x = {1, 2, 3};
    const auto a = pp::length_exploitation(pt::exec::seq, std::vector<double>{0, 1e-170, 0}, x);
    CHECK(a.r_squared == 0.0);
    CHECK(a.slope == 0.0);
    const auto b = pp::length_exploitation(pt::exec::seq, std::vector<double>{1, 2, 3}, std::vector<double>{0, 1e-170, 2e-170});
    CHECK(b.slope == doctest::Approx(1e170));
    CHECK(b.intercept == doctest::Approx(1.0));
    CHECK(b.r_squared == doctest::Approx(1.0));
    const auto c = pp::length_exploitation(pt::exec::seq, std::vector<double>{-1e200, 1e200, 0}, x);
    CHECK(c.slope == doctest::Approx(5e199));
    CHECK(c.r_squared == doctest::Approx(0.25));
    CHECK(std::isfinite(c.intercept));
}

TEST_CASE("ensemble_disagreement: worst case, uncertainty-weighted, variance") {
    std::vector<double> R = {1.0, 2.0, 3.0,   // mean 2, population var 2/3
                             0.5, 0.5, 0.5};  // agreement: var exactly 0
    std::vector<double> wc(2), uwo(2), var(2);
    pp::ensemble_options o;
    o.lambda = 0.5;
    const auto r = pp::ensemble_disagreement(pt::exec::seq, matrix(R, 2, 3), wc, uwo, var, o);
    CHECK(wc[0] == 1.0);
    CHECK(wc[1] == 0.5);
    CHECK(var[0] == doctest::Approx(2.0 / 3));
    CHECK(var[1] == 0.0);
    CHECK(uwo[0] == doctest::Approx(2.0 - 0.5 * 2.0 / 3));
    CHECK(uwo[1] == 0.5);
    CHECK(r.worst_case_mean == 0.75);
    CHECK(r.reward_mean == 1.25);
    CHECK(r.variance_mean == doctest::Approx(1.0 / 3));
    o.variance = pt::ddof::sample;
    const auto s = pp::ensemble_disagreement(pt::exec::seq, matrix(R, 2, 3), pp::batch_output(), pp::batch_output(), var, o);
    CHECK(var[0] == doctest::Approx(1.0));
    CHECK(s.samples == 2.0);
}

TEST_CASE_TEMPLATE("diagnostics: exec::par gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const index_t B = 97, T = 301, M = 5, N = 4001;  // above the parallel grain
    std::mt19937_64 rng(17);
    std::uniform_real_distribution<double> u(-3.0, -0.1), d(-0.5, 0.5);
    std::vector<double> p(std::size_t(B * T)), q(p.size()), R(std::size_t(N * M));
    for (std::size_t j = 0; j < p.size(); ++j) p[j] = u(rng), q[j] = p[j] + d(rng);
    for (auto& x : R) x = d(rng);
    const auto m = pt::test::random_mask(std::size_t(B), std::size_t(T), 3);
    std::vector<double> a1(static_cast<std::size_t>(B)), a2(a1.size()), b1(a1.size()), b2(a1.size());
    const auto r1 = pp::kl_budget(pt::exec::seq, matrix(p, B, T), matrix(q, B, T), matrix(m, B, T), a1, b1);
    const auto r2 = pp::kl_budget(Backend::policy(), matrix(p, B, T), matrix(q, B, T), matrix(m, B, T), a2, b2);
    CHECK(pt::test::bitwise_equal(a1, a2));
    CHECK(pt::test::bitwise_equal(b1, b2));
    CHECK(r1.k3_mean == r2.k3_mean);
    const auto P = pp::sequence_input::tokens(matrix(p, B, T), matrix(m, B, T));
    const auto Q = pp::sequence_input::tokens(matrix(q, B, T), matrix(m, B, T));
    const auto l1 = pp::length_exploitation(pt::exec::seq, P, Q, 0.1), l2 = pp::length_exploitation(Backend::policy(), P, Q, 0.1);
    CHECK(l1.slope == l2.slope);
    CHECK(l1.r_squared == l2.r_squared);
    const auto h1 = pp::held_out_implicit_rewards(pt::exec::seq, P, Q, 0.1), h2 = pp::held_out_implicit_rewards(Backend::policy(), P, Q, 0.1);
    CHECK(h1.reward_mean == h2.reward_mean);
    CHECK(h1.token_logp_mean == h2.token_logp_mean);
    std::vector<double> v1(static_cast<std::size_t>(N)), v2(static_cast<std::size_t>(N));
    const auto e1 = pp::ensemble_disagreement(pt::exec::seq, matrix(R, N, M), pp::batch_output(), pp::batch_output(), v1);
    const auto e2 = pp::ensemble_disagreement(Backend::policy(), matrix(R, N, M), pp::batch_output(), pp::batch_output(), v2);
    CHECK(pt::test::bitwise_equal(v1, v2));
    CHECK(e1.variance_mean == e2.variance_mean);
}

TEST_CASE("kl_budget and ensemble_disagreement: outputs are checked (length, over another output) before anything is written") {
    std::vector<double> p = {-1.0, -2.0}, q = {-1.5, -1.0}, m = {1, 1}, a(2, 7.0), b(2, 7.0), short_out(1);
    CHECK(mentions(error_of([&] { (void)pp::kl_budget(pt::exec::seq, matrix(p, 2, 1), matrix(q, 2, 1), matrix(m, 2, 1), a, short_out); }),
                   "kl_budget", "k3"));
    CHECK(mentions(error_of([&] { (void)pp::kl_budget(pt::exec::seq, matrix(p, 2, 1), matrix(q, 2, 1), matrix(m, 2, 1), a, a); }),
                   "kl_budget", "the output overlaps the input 'k3'"));
    std::vector<double> r = {1.0, 2.0, 3.0, 5.0};
    CHECK(mentions(error_of([&] { (void)pp::ensemble_disagreement(pt::exec::seq, matrix(r, 2, 2), a, b, short_out); }),
                   "ensemble_disagreement", "variance"));
    CHECK(mentions(error_of([&] { (void)pp::ensemble_disagreement(pt::exec::seq, matrix(r, 2, 2), a, b, a); }),
                   "ensemble_disagreement", "the output overlaps the input 'variance'"));
    CHECK(a == std::vector<double>(2, 7.0));  // nothing written
    CHECK(b == std::vector<double>(2, 7.0));
}
