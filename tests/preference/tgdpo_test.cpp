#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/tgdpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// One side of a TGDPO batch: policy, reference and guide log-probs [B, T] and a 0/1 mask; masked
// positions hold NaN garbage (they must never be read).
struct side {
    pt::index_t B = 0, T = 0;
    std::vector<double> p, q, g, m;
};

side random_side(pt::index_t B, pt::index_t T, std::uint64_t seed, double guide_spread = 2.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-3.0, -0.1), d(-0.5, 0.5), gd(-guide_spread, guide_spread);
    std::bernoulli_distribution keep(0.75);
    side s{B, T, {}, {}, {}, {}};
    for (pt::index_t j = 0; j < B * T; ++j) {
        const bool valid = keep(rng);
        const double p = lp(rng), q = p + d(rng), g = q + gd(rng);
        s.m.push_back(valid ? 1.0 : 0.0);
        s.p.push_back(valid ? p : nan_v);
        s.q.push_back(valid ? q : nan_v);
        s.g.push_back(valid ? g : nan_v);
    }
    return s;
}

struct run_result {
    pp::tgdpo_result r;
    std::vector<double> gw, gl, losses, rw, rl, trw, trl;
};

template <class Policy>
run_result run(const Policy& policy, const side& w, const side& l, const pp::tgdpo_options& o) {
    run_result out{{}, std::vector<double>(w.p.size(), 9.0), std::vector<double>(l.p.size(), 9.0), std::vector<double>(std::size_t(w.B)),
                   std::vector<double>(std::size_t(w.B)), std::vector<double>(std::size_t(w.B)), std::vector<double>(w.p.size()),
                   std::vector<double>(l.p.size())};
    pp::tgdpo_outputs outs{out.losses, out.rw, out.rl, matrix(out.trw, w.B, w.T), matrix(out.trl, l.B, l.T)};
    out.r = pp::tgdpo(policy, matrix(w.p, w.B, w.T), matrix(l.p, l.B, l.T), matrix(w.q, w.B, w.T), matrix(l.q, l.B, l.T),
                      matrix(w.g, w.B, w.T), matrix(l.g, l.B, l.T), matrix(w.m, w.B, w.T), matrix(l.m, l.B, l.T),
                      matrix(out.gw, w.B, w.T), matrix(out.gl, l.B, l.T), outs, o);
    return out;
}

double loss_of(const side& w, const side& l, const pp::tgdpo_options& o) {
    auto r = pp::tgdpo(pt::exec::seq, matrix(w.p, w.B, w.T), matrix(l.p, l.B, l.T), matrix(w.q, w.B, w.T), matrix(l.q, l.B, l.T),
                       matrix(w.g, w.B, w.T), matrix(l.g, l.B, l.T), matrix(w.m, w.B, w.T), matrix(l.m, l.B, l.T), pt::none,
                       pt::none, {}, o);
    return r.loss;
}

// Central differences of the reduced loss w.r.t. every valid policy log-prob of one side.
void check_fd(side& w, side& l, const pp::tgdpo_options& o) {
    const auto res = run(pt::exec::seq, w, l, o);
    const double h = 1e-6;
    for (int which = 0; which < 2; ++which) {
        side& s = which == 0 ? w : l;
        const auto& g = which == 0 ? res.gw : res.gl;
        for (std::size_t j = 0; j < s.p.size(); ++j) {
            if (s.m[j] == 0) {
                CHECK(g[j] == 0.0);
                continue;
            }
            const double x = s.p[j];
            s.p[j] = x + h;
            const double up = loss_of(w, l, o);
            s.p[j] = x - h;
            const double dn = loss_of(w, l, o);
            s.p[j] = x;
            const double fd = (up - dn) / (2 * h) * o.grad_scale;
            CHECK(g[j] == doctest::Approx(fd).epsilon(1e-6).scale(1e-4));
        }
    }
}

}  // namespace

TEST_CASE("tgdpo: gradients match central finite differences (options, reductions, unequal lengths)") {
    pp::tgdpo_options cases[5];
    cases[0] = pp::tgdpo_options::official();
    cases[1] = pp::tgdpo_options::official(0.5, 1.0);
    cases[2] = pp::tgdpo_options::official(0.1, 0.5, 0.3);  // SFT term
    cases[3] = pp::tgdpo_options::official(0.3, 2.0);
    cases[3].clamp_weights = true;
    cases[3].reduce = pp::reduction::sum;
    cases[3].grad_scale = -0.7;
    cases[4] = pp::tgdpo_options::official();
    cases[4].normalizer = 11;
    std::uint64_t seed = 1;
    for (const auto& o : cases) {
        auto w = random_side(4, 9, seed++, 30.0);  // guide log-ratios up to +-30: some weights negative
        auto l = random_side(4, 6, seed++, 30.0);
        check_fd(w, l, o);
    }
}

TEST_CASE("tgdpo: alpha = 0 is DPO (sigmoid) on summed log-ratios") {
    auto w = random_side(5, 8, 21), l = random_side(5, 7, 22);
    const double beta = 0.25;
    const auto res = run(pt::exec::seq, w, l, pp::tgdpo_options::official(beta, 0.0));
    double loss = 0;
    for (pt::index_t i = 0; i < 5; ++i) {
        double lw = 0, ll = 0;
        for (pt::index_t t = 0; t < 8; ++t)
            if (w.m[std::size_t(i * 8 + t)] != 0) lw += w.p[std::size_t(i * 8 + t)] - w.q[std::size_t(i * 8 + t)];
        for (pt::index_t t = 0; t < 7; ++t)
            if (l.m[std::size_t(i * 7 + t)] != 0) ll += l.p[std::size_t(i * 7 + t)] - l.q[std::size_t(i * 7 + t)];
        const double u = beta * (lw - ll);
        const double li = std::log1p(std::exp(-u));
        loss += li / 5;
        CHECK(res.losses[std::size_t(i)] == doctest::Approx(li).epsilon(1e-13));
        CHECK(res.rw[std::size_t(i)] == doctest::Approx(beta * lw).epsilon(1e-13));
        const double coef = beta / (1 + std::exp(u)) / 5;  // beta * sigmoid(-u) / B
        for (pt::index_t t = 0; t < 8; ++t)
            CHECK(res.gw[std::size_t(i * 8 + t)] == (w.m[std::size_t(i * 8 + t)] != 0 ? doctest::Approx(-coef).epsilon(1e-13) : doctest::Approx(0.0)));
        for (pt::index_t t = 0; t < 7; ++t)
            CHECK(res.gl[std::size_t(i * 7 + t)] == (l.m[std::size_t(i * 7 + t)] != 0 ? doctest::Approx(coef).epsilon(1e-13) : doctest::Approx(0.0)));
    }
    CHECK(res.r.loss == doctest::Approx(loss).epsilon(1e-13));
    CHECK(res.r.preference_loss == doctest::Approx(loss).epsilon(1e-13));
    CHECK(res.r.sft_loss != 0.0);  // computed (and reported) even with sft_weight 0
    CHECK(res.r.negative_weights == 0.0);
}

TEST_CASE("tgdpo: negative weights (guide log-ratio beyond 1/(alpha beta)) flip a token unless clamped") {
    // One pair, two tokens per side. Chosen token 1 has g - q = -30: weight 0.1 * (1 - 0.05 * 30) = -0.05.
    const std::vector<double> pw = {-1.0, -2.0}, qw = {-1.5, -1.0}, gw = {-1.5, -31.0}, m = {1, 1};
    const std::vector<double> pl = {-2.0, -1.0}, ql = {-1.0, -1.0}, gl = {-1.0, -1.0};
    std::vector<double> dw(2), dl(2);
    auto call = [&](const pp::tgdpo_options& o) {
        return pp::tgdpo(pt::exec::seq, matrix(pw, 1, 2), matrix(pl, 1, 2), matrix(qw, 1, 2), matrix(ql, 1, 2), matrix(gw, 1, 2),
                         matrix(gl, 1, 2), matrix(m, 1, 2), matrix(m, 1, 2), matrix(dw, 1, 2), matrix(dl, 1, 2), {}, o);
    };
    const auto r = call(pp::tgdpo_options::official());
    // z = 0.1 * 0.5 + (-0.05) * (-1) - (0.1 * (-1) + 0.1 * 0) = 0.05 + 0.05 + 0.1 = 0.2
    CHECK(r.margin == doctest::Approx(0.2).epsilon(1e-14));
    CHECK(r.loss == doctest::Approx(std::log1p(std::exp(-0.2))).epsilon(1e-14));
    CHECK(r.negative_weights == 1.0);
    const double s = 1 / (1 + std::exp(0.2));
    CHECK(dw[0] == doctest::Approx(-s * 0.1).epsilon(1e-14));
    CHECK(dw[1] == doctest::Approx(s * 0.05).epsilon(1e-14));  // flipped: pushes the chosen token down
    auto o = pp::tgdpo_options::official();
    o.clamp_weights = true;
    const auto c = call(o);
    CHECK(c.margin == doctest::Approx(0.15).epsilon(1e-14));
    CHECK(c.negative_weights == 1.0);
    CHECK(dw[1] == 0.0);
    // Rewards are DPO's, unweighted: 0.1 * ((0.5 - 1) - (-1 + 0)).
    CHECK(r.rewards.margin == doctest::Approx(0.1 * (-0.5 + 1.0)).epsilon(1e-14));
    CHECK(r.rewards.chosen == doctest::Approx(-0.05).epsilon(1e-14));
    CHECK(r.logps_ref_chosen == doctest::Approx(-2.5));
    CHECK(r.logps_ref_rejected == doctest::Approx(-2.0));
    CHECK(r.rewards.logps_chosen == doctest::Approx(-3.0));
}

TEST_CASE_TEMPLATE("tgdpo: seq == par bitwise, and every output is written", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto w = random_side(37, 13, 5, 25.0), l = random_side(37, 11, 6, 25.0);
    auto o = pp::tgdpo_options::official(0.2, 1.0, 0.2);
    const auto a = run(Backend::policy(), w, l, o), b = run(pt::exec::seq, w, l, o);
    CHECK(pt::test::bitwise_equal(a.gw, b.gw));
    CHECK(pt::test::bitwise_equal(a.gl, b.gl));
    CHECK(pt::test::bitwise_equal(a.losses, b.losses));
    CHECK(pt::test::bitwise_equal(a.trw, b.trw));
    CHECK(pt::test::bitwise_equal(a.trl, b.trl));
    CHECK(a.r.loss == b.r.loss);
    CHECK(a.r.rewards.accuracy == b.r.rewards.accuracy);
    for (std::size_t j = 0; j < w.p.size(); ++j) {
        CHECK(std::isfinite(a.gw[j]));
        CHECK(a.trw[j] == (w.m[j] != 0 ? 0.2 * (w.p[j] - w.q[j]) : 0.0));
    }
    for (double x : a.gl) CHECK(std::isfinite(x));
}

TEST_CASE("tgdpo: extreme margins (+-50, +-1e4) give finite losses and gradients") {
    for (double target : {50.0, -50.0, 1e4, -1e4}) {
        // alpha = 0, beta = 1: z = p - q of the one chosen token.
        const std::vector<double> pw = {target - 1.0}, qw = {-1.0}, gw = {-1.0}, z0 = {-1.0}, m = {1};
        std::vector<double> dw(1), dl(1);
        const auto r = pp::tgdpo(pt::exec::seq, matrix(pw, 1, 1), matrix(z0, 1, 1), matrix(qw, 1, 1), matrix(z0, 1, 1), matrix(gw, 1, 1),
                                 matrix(z0, 1, 1), matrix(m, 1, 1), matrix(m, 1, 1), matrix(dw, 1, 1), matrix(dl, 1, 1), {},
                                 pp::tgdpo_options::official(1.0, 0.0));
        CHECK(std::isfinite(r.loss));
        CHECK(std::isfinite(dw[0]));
        CHECK(std::isfinite(dl[0]));
        CHECK(r.loss == doctest::Approx(target > 0 ? std::log1p(std::exp(-target)) : -target + std::log1p(std::exp(target))).epsilon(1e-14));
        CHECK(dw[0] == doctest::Approx(-1 / (1 + std::exp(target))).epsilon(1e-14));
        if (target == 1e4) CHECK(dw[0] == 0.0);
        if (target == -1e4) CHECK(dw[0] == -1.0);
    }
}

TEST_CASE("tgdpo: zero-length responses contribute nothing (documented zero), B = 0 is loss 0") {
    const std::vector<double> p = {-1.0, -2.0}, q = {-1.5, -1.5}, g = {-1.0, -1.0};
    const std::vector<double> none_valid = {0, 0}, all = {1, 1};
    std::vector<double> dw(2, 5.0), dl(2, 5.0);
    const auto r = pp::tgdpo(pt::exec::seq, matrix(p, 1, 2), matrix(p, 1, 2), matrix(q, 1, 2), matrix(q, 1, 2), matrix(g, 1, 2),
                             matrix(g, 1, 2), matrix(none_valid, 1, 2), matrix(all, 1, 2), matrix(dw, 1, 2), matrix(dl, 1, 2), {},
                             pp::tgdpo_options::official(0.1, 0.5, 1.0));
    CHECK(std::isfinite(r.loss));
    CHECK(r.sft_loss == 0.0);  // -S / max(n, 1) with n = 0
    CHECK(dw[0] == 0.0);
    CHECK(dw[1] == 0.0);
    const std::vector<double> e;
    const auto z = pp::tgdpo(pt::exec::seq, matrix(e, 0, 3), matrix(e, 0, 2), matrix(e, 0, 3), matrix(e, 0, 2), matrix(e, 0, 3),
                             matrix(e, 0, 2), matrix(e, 0, 3), matrix(e, 0, 2), pt::none, pt::none);
    CHECK(z.loss == 0.0);
    CHECK(z.pairs == 0);
}

TEST_CASE("tgdpo: bad input raises naming the function and the argument") {
    using doctest::Contains;
    std::vector<double> p = {-1.0, -2.0, -1.0, -2.0}, q = {-1.5, -1.5, -1.5, -1.5}, g = q, m = {1, 1, 1, 0};
    std::vector<double> dw(4), dl(4);
    auto call = [&](const std::vector<double>& pw, const pp::tgdpo_options& o = pp::tgdpo_options::official()) {
        return pp::tgdpo(pt::exec::seq, matrix(pw, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2),
                         matrix(g, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), matrix(dw, 2, 2), matrix(dl, 2, 2), {}, o);
    };
    auto bad = p;
    bad[2] = nan_v;
    CHECK_THROWS_WITH_AS((void)call(bad), Contains("posttrain::preference::tgdpo: argument 'policy_chosen': non-finite value at a valid position [1, 0]"),
                         pt::invalid_argument);
    bad = p;
    bad[3] = nan_v;  // masked: fine
    CHECK(std::isfinite(call(bad).loss));
    auto ob = pp::tgdpo_options::official();
    ob.beta = 0;
    CHECK_THROWS_WITH_AS((void)call(p, ob), Contains("argument 'options': beta must be > 0"), pt::invalid_argument);
    ob = pp::tgdpo_options::official();
    ob.alpha = nan_v;
    CHECK_THROWS_WITH_AS((void)call(p, ob), Contains("alpha must be finite"), pt::invalid_argument);
    ob = pp::tgdpo_options::official();
    ob.sft_weight = -1;
    CHECK_THROWS_WITH_AS((void)call(p, ob), Contains("sft_weight must be >= 0"), pt::invalid_argument);
    // Shapes: one rejected row too few, a mask of the wrong width, gradients of the wrong shape.
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 1, 2), matrix(q, 2, 2), matrix(q, 1, 2), matrix(g, 2, 2),
                                         matrix(g, 1, 2), matrix(m, 2, 2), matrix(m, 1, 2), pt::none, pt::none),
                         Contains("argument 'policy_rejected': must have one row per pair"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2),
                                         matrix(g, 2, 2), matrix(m, 1, 4), matrix(m, 2, 2), pt::none, pt::none),
                         Contains("argument 'chosen_mask': shape must match 'policy_chosen'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2),
                                         matrix(g, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), matrix(dw, 4, 1), pt::none),
                         Contains("argument 'grad_chosen': shape must match"), pt::invalid_argument);
    // Aliasing: a gradient written over the policy log-probs, or both gradients in one buffer.
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(std::as_const(p), 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2),
                                         matrix(g, 2, 2), matrix(g, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), matrix(p, 2, 2), pt::none),
                         Contains("argument 'grad_chosen': the output overlaps the input 'policy_chosen'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2),
                                         matrix(g, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), matrix(dw, 2, 2), matrix(dw, 2, 2)),
                         Contains("argument 'grad_rejected': the output overlaps the output 'grad_chosen'"), pt::invalid_argument);
    std::vector<double> three(3);
    CHECK_THROWS_WITH_AS((void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2),
                                         matrix(g, 2, 2), matrix(m, 2, 2), matrix(m, 2, 2), pt::none, pt::none,
                                         pp::tgdpo_outputs{.losses = three}),
                         Contains("argument 'losses': must have one entry per pair"), pt::invalid_argument);
}

TEST_CASE("tgdpo: per-pair outputs over a [B, T] output or over one another are refused before anything is written") {
    std::vector<double> p = {-1.0, -2.0, -1.5, -0.5}, q = {-1.2, -1.8, -1.0, -0.7}, g = {-1.1, -1.9, -1.2, -0.6}, m = {1, 1, 1, 1};
    std::vector<double> dw(4, 7.0), dl(4, 7.0), tr(4, 7.0), losses(2, 7.0);
    auto call = [&](const pp::tgdpo_outputs& out) {
        (void)pp::tgdpo(pt::exec::seq, matrix(p, 2, 2), matrix(p, 2, 2), matrix(q, 2, 2), matrix(q, 2, 2), matrix(g, 2, 2), matrix(g, 2, 2),
                        matrix(m, 2, 2), matrix(m, 2, 2), matrix(dw, 2, 2), matrix(dl, 2, 2), out);
    };
    CHECK_THROWS_WITH_AS(call({.losses = pt::tensor_view<double, 1>(dl.data() + 2, 2)}),
                         doctest::Contains("argument 'losses': the output overlaps the input 'grad_rejected'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.chosen_rewards = pt::tensor_view<double, 1>(tr.data(), 2), .chosen_token_rewards = matrix(tr, 2, 2)}),
                         doctest::Contains("argument 'chosen_rewards': the output overlaps the input 'chosen_token_rewards'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.losses = losses, .chosen_rewards = losses}), doctest::Contains("argument 'losses': the output overlaps the input 'chosen_rewards'"),
                         pt::invalid_argument);
    CHECK(dw == std::vector<double>(4, 7.0));  // nothing written
    CHECK(dl == std::vector<double>(4, 7.0));
    CHECK(tr == std::vector<double>(4, 7.0));
}
