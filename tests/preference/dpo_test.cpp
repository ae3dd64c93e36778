// preference::dpo (the DPO family), the sequence reduction it rests on, and wpo_weights: gradients
// against central finite differences for every loss and option in both input forms, extreme margins,
// hand-checked values at initialisation, seq == par bitwise, masks holding garbage, and bad input.

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/dpo.hpp>
#include <posttrain/preference/wpo.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pref::pair_loss;
using pt::index_t;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// A batch of B pairs of token log-probs [B, T] for policy and reference, chosen and rejected, with
// right padding of random length (row 0 of the rejected side has a hole inside), garbage (NaN) at
// masked positions.
struct pairs {
    index_t B = 0, T = 0;
    std::vector<double> pw, pl, rw, rl;              // [B, T]
    std::vector<std::uint8_t> mw, ml;                // [B, T]
    pt::tensor_view<const double, 2> v(const std::vector<double>& x) const { return pt::tensor_view<const double, 2>(x.data(), B, T); }
    pt::tensor_view<const std::uint8_t, 2> m(const std::vector<std::uint8_t>& x) const {
        return pt::tensor_view<const std::uint8_t, 2>(x.data(), B, T);
    }
    pref::sequence_input chosen() const { return pref::sequence_input::tokens(v(pw), m(mw)); }
    pref::sequence_input rejected() const { return pref::sequence_input::tokens(v(pl), m(ml)); }
    pref::sequence_input ref_chosen() const { return pref::sequence_input::tokens(v(rw), m(mw)); }
    pref::sequence_input ref_rejected() const { return pref::sequence_input::tokens(v(rl), m(ml)); }
};

pairs make_pairs(index_t B, index_t T, std::uint64_t seed, double spread = 0.3) {
    pairs p;
    p.B = B;
    p.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-3.0, -0.1), d(-spread, spread);
    std::uniform_int_distribution<index_t> len(1, T);
    const std::size_t n = std::size_t(B * T);
    p.pw.resize(n), p.pl.resize(n), p.rw.resize(n), p.rl.resize(n), p.mw.resize(n), p.ml.resize(n);
    for (index_t i = 0; i < B; ++i) {
        const index_t lw = len(rng), ll = len(rng);
        for (index_t t = 0; t < T; ++t) {
            const std::size_t k = std::size_t(i * T + t);
            p.mw[k] = t < lw;
            p.ml[k] = t < ll && !(i == 0 && t == 1);
            p.rw[k] = lp(rng);
            p.rl[k] = lp(rng);
            p.pw[k] = p.mw[k] ? p.rw[k] + d(rng) : nan_v;
            p.pl[k] = p.ml[k] ? p.rl[k] + d(rng) : nan_v;
        }
    }
    return p;
}

struct run_out {
    pref::dpo_result r;
    std::vector<double> gw, gl;
};

template <class Policy>
run_out run_tokens(const Policy& policy, const pairs& p, const pref::dpo_options& o, const pref::pair_extras& extras = {}) {
    run_out out;
    out.gw.assign(p.pw.size(), -7.0);
    out.gl.assign(p.pl.size(), -7.0);
    const bool ref = !o.reference_free;
    out.r = pref::dpo(policy, p.chosen(), p.rejected(), ref ? p.ref_chosen() : pref::sequence_input{},
                      ref ? p.ref_rejected() : pref::sequence_input{}, pt::tensor_view<double, 2>(out.gw.data(), p.B, p.T),
                      pt::tensor_view<double, 2>(out.gl.data(), p.B, p.T), o, {}, extras);
    return out;
}

double loss_of(const pairs& p, const pref::dpo_options& o, const pref::pair_extras& extras = {}) {
    const bool ref = !o.reference_free;
    return pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), ref ? p.ref_chosen() : pref::sequence_input{},
                     ref ? p.ref_rejected() : pref::sequence_input{}, pt::none, pt::none, o, {}, extras)
        .loss;
}

// Central differences w.r.t. every valid policy token of both sides.
void check_gradients(pairs p, const pref::dpo_options& o, const std::string& what, const pref::pair_extras& extras = {},
                     double tol = 2e-6) {
    const run_out a = run_tokens(pt::exec::seq, p, o, extras);
    const double h = 1e-6;
    for (int side = 0; side < 2; ++side) {
        std::vector<double>& x = side == 0 ? p.pw : p.pl;
        const std::vector<std::uint8_t>& m = side == 0 ? p.mw : p.ml;
        const std::vector<double>& g = side == 0 ? a.gw : a.gl;
        for (std::size_t k = 0; k < x.size(); ++k) {
            if (!m[k]) {
                CHECK_MESSAGE(g[k] == 0.0, what, " masked gradient must be 0");
                continue;
            }
            const double x0 = x[k];
            x[k] = x0 + h;
            const double up = loss_of(p, o, extras);
            x[k] = x0 - h;
            const double down = loss_of(p, o, extras);
            x[k] = x0;
            const double fd = (up - down) / (2 * h);
            CHECK_MESSAGE(std::fabs(fd - g[k]) <= tol * (1 + std::fabs(fd)), what, " side ", side, " token ", k, ": fd ", fd,
                          " analytic ", g[k]);
        }
    }
}

const std::vector<pair_loss> all_pair_losses = {
    pair_loss::sigmoid,  pair_loss::robust,    pair_loss::ipo,          pair_loss::hinge,    pair_loss::exo_pair,
    pair_loss::nca_pair, pair_loss::bco_pair,  pair_loss::sppo_hard,    pair_loss::aot,      pair_loss::aot_unpaired,
    pair_loss::apo_zero, pair_loss::apo_down,  pair_loss::discopop,     pair_loss::sigmoid_norm, pair_loss::sft};

}  // namespace

TEST_CASE("preference::dpo: every loss type's gradient matches finite differences (tokens, with reference)") {
    const pairs p = make_pairs(5, 7, 11, 2.0);
    for (pair_loss l : all_pair_losses) {
        auto o = pref::dpo_options::trl(l, 0.7, 0.1);
        if (l == pair_loss::exo_pair) o.label_smoothing = 0.05;
        check_gradients(p, o, pref::detail::pair_loss_name(l));
        auto v = pref::dpo_options::trl_v028(l, 0.4, 0.2);
        if (l == pair_loss::aot || l == pair_loss::aot_unpaired) v.label_smoothing = 0.1;
        if (l == pair_loss::bco_pair) {  // the batch-mean shift is detached (TRL): fix it for the finite differences
            v.bco = pref::bco_shift::value;
            v.bco_delta = 0.3;
        }
        check_gradients(p, v, std::string("v0.28 ") + pref::detail::pair_loss_name(l));
    }
}

TEST_CASE("preference::dpo: options (label smoothing, margins, scores, length averaging, LD, weights, multi-loss)") {
    const pairs p = make_pairs(4, 6, 12, 1.0);
    SUBCASE("cDPO and robust with label smoothing, gamma margins") {
        check_gradients(p, pref::dpo_options::trl_v028(pair_loss::sigmoid, 0.5, 0.2), "cdpo");
        auto o = pref::dpo_options::trl(pair_loss::robust, 0.5, 0.3);
        o.gamma = 0.4;
        check_gradients(p, o, "robust gamma");
        auto h = pref::dpo_options::trl(pair_loss::hinge, 1.5);
        h.gamma = 0.2;
        check_gradients(p, h, "hinge gamma");
    }
    SUBCASE("score transforms") {
        using F = pref::score_transform;
        for (F f : {F::forward_kl, F::js_divergence, F::alpha_divergence, F::alpha_divergence_v028, F::alphapo}) {
            for (pair_loss l : {pair_loss::sigmoid, pair_loss::nca_pair, pair_loss::ipo, pair_loss::apo_down}) {
                auto o = pref::dpo_options::trl(l, 0.5);
                o.divergence = f;
                o.alpha_coef = 0.5;
                check_gradients(p, o, "score transform " + std::to_string(int(f)) + " " + pref::detail::pair_loss_name(l));
            }
        }
    }
    SUBCASE("SimPO and CPO: reference-free, length-averaged, with the SFT term") {
        check_gradients(p, pref::dpo_options::simpo(2.5, 0.55), "simpo");
        check_gradients(p, pref::dpo_options::simpo(2.0, 0.3, 0.1), "simpo smoothed");
        check_gradients(p, pref::dpo_options::simpo(2.0, 0.5, 0, pair_loss::hinge), "simpo hinge");
        auto s = pref::dpo_options::simpo(2.0, 0.5);
        s.losses = {{pair_loss::sigmoid, 1.0}, {pair_loss::sft, 0.3}};
        check_gradients(p, s, "simpo + sft");
        auto c = pref::dpo_options::cpo_simpo(0.5, 0.5, 0, 0.2);
        check_gradients(p, c, "cpo alphapo simpo");
        check_gradients(p, pref::dpo_options::slic(1.0, 0.1), "slic");
        auto ipo = pref::dpo_options::cpo(pair_loss::ipo, 0.5);
        ipo.average_log_prob = true;
        check_gradients(p, ipo, "cpo ipo averaged");
    }
    SUBCASE("LD-DPO, WPO-style weights, margins, multi-loss, sum reduction, normalizer, grad_scale") {
        auto ld = pref::dpo_options::trl(pair_loss::sigmoid, 0.5);
        ld.ld_alpha = 0.3;
        check_gradients(p, ld, "ld_alpha");
        std::vector<double> w = {0.5, 1.5, 0.0, 2.0}, m = {0.1, -0.2, 0.3, 0.0};
        pref::pair_extras e;
        e.weights = pref::sequence_input::sums(w);
        e.margins = pref::sequence_input::sums(m);
        check_gradients(p, pref::dpo_options::trl(pair_loss::sigmoid, 0.5), "weights + margins", e);
        auto mpo = pref::dpo_options::trl({{pair_loss::sigmoid, 0.8}, {pair_loss::bco_pair, 0.2}, {pair_loss::sft, 1.0}}, 0.5);
        check_gradients(p, mpo, "mpo");
        pref::pair_extras we;
        we.weights = pref::sequence_input::sums(w);
        check_gradients(p, mpo, "mpo + weights (the token-mean sft carries mean(w))", we);
        mpo.reduce = pref::reduction::sum;
        check_gradients(p, mpo, "sum reduction");
    }
}

TEST_CASE("preference::dpo: grad_scale and normalizer") {
    const pairs p = make_pairs(4, 6, 13);
    auto o = pref::dpo_options::trl(pair_loss::sigmoid, 0.3);
    const run_out a = run_tokens(pt::exec::seq, p, o);
    o.grad_scale = -2.5;
    o.normalizer = 10;
    const run_out b = run_tokens(pt::exec::seq, p, o);
    CHECK(b.r.loss == doctest::Approx(a.r.loss * 4 / 10).epsilon(1e-14));
    for (std::size_t k = 0; k < a.gw.size(); ++k) CHECK(b.gw[k] == doctest::Approx(a.gw[k] * -2.5 * 4 / 10).epsilon(1e-14));
}

TEST_CASE("preference::dpo: the summed form gives the bits of the token form") {
    const pairs p = make_pairs(6, 9, 14);
    std::vector<double> sw(6), sl(6), rw(6), rl(6), nw(6), nl(6);
    pref::sequence_log_probs(pt::exec::seq, p.v(p.pw), p.m(p.mw), sw, nw);
    pref::sequence_log_probs(pt::exec::seq, p.v(p.pl), p.m(p.ml), sl, nl);
    pref::sequence_log_probs(pt::exec::seq, p.v(p.rw), p.m(p.mw), rw);
    pref::sequence_log_probs(pt::exec::seq, p.v(p.rl), p.m(p.ml), rl);
    for (pair_loss l : all_pair_losses) {
        const auto o = pref::dpo_options::trl(l, 0.5, 0.1);
        const run_out a = run_tokens(pt::exec::seq, p, o);
        std::vector<double> gw(6), gl(6);
        const auto b = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw, nw), pref::sequence_input::sums(sl, nl),
                                 pref::sequence_input::sums(rw), pref::sequence_input::sums(rl), gw, gl, o);
        CHECK(b.loss == a.r.loss);
        for (index_t i = 0; i < 6; ++i) CHECK(gw[std::size_t(i)] == a.gw[std::size_t(i * 9)]);  // token 0 is always valid
    }
}

TEST_CASE("preference::dpo: hand-checked values at initialisation (policy == reference)") {
    pairs p = make_pairs(3, 5, 15);
    p.pw = p.rw;
    p.pl = p.rl;
    const run_out a = run_tokens(pt::exec::seq, p, pref::dpo_options::trl(pair_loss::sigmoid, 0.1));
    CHECK(a.r.loss == doctest::Approx(std::log(2.0)).epsilon(1e-15));
    CHECK(a.gw[0] == doctest::Approx(-0.1 / 2 / 3).epsilon(1e-15));  // -beta sigma(0) / B on every chosen token
    CHECK(a.gl[0] == doctest::Approx(0.1 / 2 / 3).epsilon(1e-15));
    CHECK(a.r.metrics.accuracy == 0.0);  // strict >: ties are not wins
    CHECK(a.r.metrics.tie_fraction == 1.0);
    const run_out ipo = run_tokens(pt::exec::seq, p, pref::dpo_options::trl(pair_loss::ipo, 0.1));
    CHECK(ipo.r.loss == doctest::Approx(25.0).epsilon(1e-14));  // (1 / (2 beta))^2
}

TEST_CASE("preference::dpo: TRL's current sigmoid ignores label smoothing, also inside a multi-loss") {
    const pairs p = make_pairs(4, 6, 22);
    const double a = loss_of(p, pref::dpo_options::trl({{pair_loss::sigmoid, 1.0}, {pair_loss::robust, 1.0}}, 0.5, 0.1));
    const double s = loss_of(p, pref::dpo_options::trl(pair_loss::sigmoid, 0.5));
    const double r = loss_of(p, pref::dpo_options::trl(pair_loss::robust, 0.5, 0.1));
    CHECK(a == doctest::Approx(s + r).epsilon(1e-14));
    CHECK(loss_of(p, pref::dpo_options::trl_v028(pair_loss::sigmoid, 0.5, 0.1)) != doctest::Approx(s));
}

TEST_CASE("preference::dpo: SLiC-HF by hand") {
    // h = S_w - S_l: pair 0 violates the margin delta = 1 (h = 0.5), pair 1 satisfies it (h = 3).
    std::vector<double> sw = {-2.0, -1.0}, sl = {-2.5, -4.0}, gw(2), gl(2);
    const auto r = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl), {}, {}, gw, gl,
                             pref::dpo_options::slic(1.0, 0.1));
    CHECK(r.loss == doctest::Approx(((1.0 - 0.5) + 0.1 * 2.0 + 0.0 + 0.1 * 1.0) / 2).epsilon(1e-15));
    CHECK(gw[0] == doctest::Approx((-1.0 - 0.1) / 2).epsilon(1e-15));
    CHECK(gw[1] == doctest::Approx(-0.1 / 2).epsilon(1e-15));
    CHECK(gl[0] == doctest::Approx(0.5).epsilon(1e-15));
    CHECK(gl[1] == 0.0);
}

TEST_CASE("preference::dpo: margins of +-50 and +-1e4 stay finite") {
    for (double margin : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> sw = {margin, 0.5 * margin}, sl = {0.0, 0.0}, ref = {0.0, 0.0}, n = {10, 20};
        for (pair_loss l : all_pair_losses) {
            auto o = pref::dpo_options::trl(l, 1.0, 0.1);
            std::vector<double> gw(2), gl(2);
            const auto r = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw, n), pref::sequence_input::sums(sl, n),
                                     pref::sequence_input::sums(ref), pref::sequence_input::sums(ref), gw, gl, o);
            INFO(pref::detail::pair_loss_name(l), " margin ", margin);
            CHECK(std::isfinite(r.loss));
            CHECK(std::isfinite(gw[0]));
            CHECK(std::isfinite(gl[0]));
            CHECK(std::isfinite(gw[1]));
        }
        // The saturating losses reach exact limits: DPO's loss -> 0 or |u|, gradient -> 0 or -beta / B.
        std::vector<double> gw(2), gl(2);
        const auto r = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl),
                                 pref::sequence_input::sums(ref), pref::sequence_input::sums(ref), gw, gl,
                                 pref::dpo_options::trl(pair_loss::sigmoid, 1.0));
        if (margin > 0) CHECK(gw[0] == doctest::Approx(0.0));
        else CHECK(gw[0] == doctest::Approx(-0.5).epsilon(1e-12));
        CHECK(std::isfinite(r.loss));
    }
}

TEST_CASE("preference::dpo: an empty response contributes S = 0 (and average 0), never NaN") {
    pairs p = make_pairs(3, 4, 16);
    for (index_t t = 0; t < 4; ++t) p.ml[std::size_t(1 * 4 + t)] = 0;  // rejected row 1 is empty
    for (auto o : {pref::dpo_options::trl(pair_loss::sigmoid), pref::dpo_options::simpo(),
                   pref::dpo_options::trl(pair_loss::sigmoid_norm)}) {
        const run_out a = run_tokens(pt::exec::seq, p, o);
        CHECK(std::isfinite(a.r.loss));
        for (index_t t = 0; t < 4; ++t) CHECK(a.gl[std::size_t(4 + t)] == 0.0);
        check_gradients(p, o, "empty response");
    }
}

TEST_CASE_TEMPLATE("preference::dpo: every host policy gives the bits of seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const pairs p = make_pairs(64, 700, 17);  // above the parallel grain
    for (pair_loss l : {pair_loss::sigmoid, pair_loss::aot, pair_loss::ipo}) {
        auto o = pref::dpo_options::trl(l, 0.2, 0.1);
        o.ld_alpha = l == pair_loss::ipo ? 0.5 : 1.0;
        const run_out a = run_tokens(pt::exec::seq, p, o);
        const run_out b = run_tokens(Backend::policy(), p, o);
        CHECK(a.r.loss == b.r.loss);
        CHECK(pt::test::bitwise_equal(a.gw, b.gw));
        CHECK(pt::test::bitwise_equal(a.gl, b.gl));
        CHECK(a.r.metrics.margin == b.r.metrics.margin);
    }
}

TEST_CASE("preference::dpo: float log-probs, bool masks and strided views") {
    const pairs p = make_pairs(3, 5, 18);
    std::vector<float> fw(p.pw.begin(), p.pw.end()), fl(p.pl.begin(), p.pl.end()), frw(p.rw.begin(), p.rw.end()),
        frl(p.rl.begin(), p.rl.end());
    std::vector<char> bw(p.mw.begin(), p.mw.end()), bl(p.ml.begin(), p.ml.end());
    auto fv = [&](const std::vector<float>& x) { return pt::tensor_view<const float, 2>(x.data(), 3, 5); };
    const bool* bwp = reinterpret_cast<const bool*>(bw.data());
    const bool* blp = reinterpret_cast<const bool*>(bl.data());
    std::vector<float> gw(15), gl(15);
    const auto r = pref::dpo(pt::exec::seq, pref::sequence_input::tokens(fv(fw), pt::tensor_view<const bool, 2>(bwp, 3, 5)),
                             pref::sequence_input::tokens(fv(fl), pt::tensor_view<const bool, 2>(blp, 3, 5)),
                             pref::sequence_input::tokens(fv(frw), pt::tensor_view<const bool, 2>(bwp, 3, 5)),
                             pref::sequence_input::tokens(fv(frl), pt::tensor_view<const bool, 2>(blp, 3, 5)),
                             pt::tensor_view<float, 2>(gw.data(), 3, 5), pt::tensor_view<float, 2>(gl.data(), 3, 5));
    const run_out d = run_tokens(pt::exec::seq, p, {});
    CHECK(r.loss == doctest::Approx(d.r.loss).epsilon(1e-6));
    CHECK(gw[0] == doctest::Approx(d.gw[0]).epsilon(1e-6));
    // A strided view (every other column of a [3, 26] buffer, the portable loop) gives the bits of the
    // contiguous one (the SIMD loop), float and double.
    const pairs q = make_pairs(3, 13, 21);
    std::vector<double> wide(78, nan_v);
    std::vector<std::uint8_t> wmask(78, 0);
    for (std::size_t k = 0; k < 39; ++k) {
        wide[2 * k] = q.pw[k];
        wmask[2 * k] = q.mw[k];
    }
    const pt::index_t ext[2] = {3, 13}, str[2] = {26, 2};
    std::vector<double> s1(3), s2(3);
    pref::sequence_log_probs(pt::exec::seq, pt::tensor_view<const double, 2>(wide.data(), ext, str),
                             pt::tensor_view<const std::uint8_t, 2>(wmask.data(), ext, str), s1);
    pref::sequence_log_probs(pt::exec::seq, q.v(q.pw), q.m(q.mw), s2);
    CHECK(pt::test::bitwise_equal(s1, s2));
}

TEST_CASE("preference::sequence_log_probs and its backward") {
    std::vector<double> lp = {-1, -2, nan_v, -4, -0.5, -0.25, -0.125, 1e300};
    std::vector<std::int64_t> m = {1, 1, 0, 1, 1, 1, 1, 0};
    std::vector<double> s(2), n(2);
    pref::sequence_log_probs(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), 2, 4),
                             pt::tensor_view<const std::int64_t, 2>(m.data(), 2, 4), s, n);
    CHECK(s[0] == -7.0);
    CHECK(s[1] == -0.875);
    CHECK(n[0] == 3.0);
    CHECK(n[1] == 3.0);
    std::vector<double> gs = {2.0, -1.0}, g(8, 9.0);
    pref::sequence_log_probs_backward(pt::exec::seq, gs, pt::tensor_view<const std::int64_t, 2>(m.data(), 2, 4),
                                      pt::tensor_view<double, 2>(g.data(), 2, 4));
    CHECK(g == std::vector<double>{2, 2, 0, 2, -1, -1, -1, 0});
    lp[1] = nan_v;
    CHECK_THROWS_WITH_AS(pref::sequence_log_probs(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), 2, 4),
                                                  pt::tensor_view<const std::int64_t, 2>(m.data(), 2, 4), s),
                         doctest::Contains("non-finite log-prob at a valid position [0, 1]"), pt::invalid_argument);
}

TEST_CASE("preference::wpo_weights") {
    // Row 0: tokens (-1, -2) valid, sum pi^2 = (0.5, 0.25): mean of (-1 - log 0.5, -2 - log 0.25).
    std::vector<double> lp = {-1, -2, -3, -0.5}, sq = {0.5, 0.25, 0.9, 0.1}, w(2);
    std::vector<std::uint8_t> m = {1, 1, 0, 0};
    pref::wpo_weights(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), 2, 2),
                      pt::tensor_view<const double, 2>(sq.data(), 2, 2), pt::tensor_view<const std::uint8_t, 2>(m.data(), 2, 2), w);
    CHECK(w[0] == doctest::Approx(std::exp(((-1 - std::log(0.5)) + (-2 - std::log(0.25))) / 2)).epsilon(1e-15));
    CHECK(w[1] == 1.0);  // an empty response has weight exp(0)
    sq[0] = 0;
    CHECK_THROWS_AS(pref::wpo_weights(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), 2, 2),
                                      pt::tensor_view<const double, 2>(sq.data(), 2, 2),
                                      pt::tensor_view<const std::uint8_t, 2>(m.data(), 2, 2), w),
                    pt::invalid_argument);
}

TEST_CASE("preference::dpo: bad input raises invalid_argument naming the argument") {
    const pairs p = make_pairs(3, 4, 19);
    const pairs q = make_pairs(2, 4, 20);
    auto call = [&](const pref::sequence_input& c, const pref::sequence_input& r, const pref::sequence_input& rc,
                    const pref::sequence_input& rr, const pref::dpo_options& o) {
        (void)pref::dpo(pt::exec::seq, c, r, rc, rr, pt::none, pt::none, o);
    };
    const pref::dpo_options base;
    CHECK_THROWS_WITH_AS(call(p.chosen(), q.rejected(), p.ref_chosen(), p.ref_rejected(), base),
                         doctest::Contains("'rejected': must hold one sequence per row of the batch: it has 2, expected 3"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(p.chosen(), p.rejected(), p.ref_chosen(), q.ref_rejected(), base),
                         doctest::Contains("ref_rejected"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(p.chosen(), p.rejected(), {}, {}, base), doctest::Contains("'ref_chosen': is required unless"),
                         pt::invalid_argument);
    pairs bad = p;
    bad.pw[0] = nan_v;
    CHECK_THROWS_WITH_AS(call(bad.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), base),
                         doctest::Contains("'chosen': non-finite log-prob at a valid position [0, 0]"), pt::invalid_argument);
    pairs bad_ref = p;  // the reference shares the policy's mask: read in the same pass, named on its own
    bad_ref.rl[5] = nan_v;
    bad_ref.ml[5] = 1;
    CHECK_THROWS_WITH_AS(call(p.chosen(), bad_ref.rejected(), p.ref_chosen(), bad_ref.ref_rejected(), base),
                         doctest::Contains("'ref_rejected': non-finite log-prob at a valid position [1, 1]"), pt::invalid_argument);
    std::vector<double> empty;
    CHECK_THROWS_WITH_AS(call(pref::sequence_input::sums(empty), pref::sequence_input::sums(empty),
                              pref::sequence_input::sums(empty), pref::sequence_input::sums(empty), base),
                         doctest::Contains("at least one pair"), pt::invalid_argument);
    auto opt = [&](pref::dpo_options o, const char* what) {
        CHECK_THROWS_WITH_AS(call(p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), o), doctest::Contains(what),
                             pt::invalid_argument);
    };
    opt(pref::dpo_options::trl(pair_loss::sigmoid, 0.0), "beta must be");
    opt(pref::dpo_options::trl(pair_loss::robust, 0.1, 0.5), "robust needs label_smoothing < 0.5");
    opt(pref::dpo_options::trl(pair_loss::exo_pair, 0.1, 0.0), "exo_pair needs label_smoothing > 0");
    auto g = pref::dpo_options::trl(pair_loss::ipo);
    g.gamma = 1;
    opt(g, "gamma (a target margin) applies to");
    auto nt = pref::dpo_options::trl(pair_loss::discopop);
    nt.discopop_tau = 0;
    opt(nt, "discopop_tau");
    std::vector<double> w3 = {1, 2, 3}, neg3 = {1, -2, 3};
    auto with_extras = [&](pref::dpo_options o, pref::pair_extras e, const char* what) {
        CHECK_THROWS_WITH_AS((void)pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), pt::none,
                                             pt::none, o, {}, e),
                             doctest::Contains(what), pt::invalid_argument);
    };
    pref::pair_extras ew;
    ew.weights = pref::sequence_input::sums(w3);
    with_extras(pref::dpo_options::trl(pair_loss::aot), ew, "do not apply to the batch-sorted 'aot'");
    pref::pair_extras en;
    en.weights = pref::sequence_input::sums(neg3);
    with_extras(pref::dpo_options::trl(), en, "weights must be finite and >= 0");
    std::vector<double> nan3 = {1, nan_v, 3};
    pref::pair_extras enan;
    enan.margins = pref::sequence_input::sums(nan3);
    with_extras(pref::dpo_options::trl(), enan, "'extras.margins': entry 1 is not finite");
    pref::pair_extras em;
    em.margins = pref::sequence_input::sums(w3);
    with_extras(pref::dpo_options::trl(pair_loss::ipo), em, "margins apply to");
    // Lengths are needed by the length-normalised losses when sums are given.
    std::vector<double> s3 = {-1, -2, -3};
    CHECK_THROWS_WITH_AS(call(pref::sequence_input::sums(s3), pref::sequence_input::sums(s3), pref::sequence_input::sums(s3),
                              pref::sequence_input::sums(s3), pref::dpo_options::trl(pair_loss::sigmoid_norm)),
                         doctest::Contains("needs lengths"), pt::invalid_argument);
    // The gradient's form must match its input's.
    std::vector<double> g3(3);
    CHECK_THROWS_WITH_AS((void)pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), g3, pt::none),
                         doctest::Contains("'grad_chosen': must be a [B, T] view"), pt::invalid_argument);
    std::vector<double> g34(12);
    const auto inplace = pt::tensor_view<double, 2>(const_cast<double*>(p.pw.data()), 3, 4);
    CHECK_THROWS_AS((void)pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), inplace, pt::none),
                    pt::invalid_argument);
    (void)g34;
    // One buffer for both gradients, or a gradient over the other side's input, is refused.
    std::vector<double> both(12);
    const auto shared = pt::tensor_view<double, 2>(both.data(), 3, 4);
    CHECK_THROWS_WITH_AS((void)pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), shared, shared),
                         doctest::Contains("'grad_chosen': the output overlaps the input 'grad_rejected'"), pt::invalid_argument);
    const auto over_ref = pt::tensor_view<double, 2>(const_cast<double*>(p.rl.data()), 3, 4);
    CHECK_THROWS_WITH_AS((void)pref::dpo(pt::exec::seq, p.chosen(), p.rejected(), p.ref_chosen(), p.ref_rejected(), over_ref, pt::none),
                         doctest::Contains("'grad_chosen': the output overlaps the input 'ref_rejected'"), pt::invalid_argument);
}

TEST_CASE("preference::dpo: outputs are checked (length, over a gradient or another output) before anything is written") {
    std::vector<double> sw{-1, -2}, sl{-3, -1}, rw{-1.5, -2}, rl{-2, -1};
    std::vector<double> gw(2, 7.0), gl(2, 7.0), losses(2, 7.0), short_out(1);
    auto call = [&](const pref::pair_outputs& out) {
        (void)pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl), pref::sequence_input::sums(rw),
                        pref::sequence_input::sums(rl), gw, gl, pref::dpo_options{}, out);
    };
    CHECK_THROWS_WITH_AS(call({.losses = gw}), doctest::Contains("overlaps the input 'grad_chosen'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.losses = losses, .chosen_rewards = losses}), doctest::Contains("overlaps the input 'outputs.chosen_rewards'"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.losses = losses, .rejected_logps = short_out}), doctest::Contains("must have 2 entries, found 1"),
                         pt::invalid_argument);
    CHECK(gw == std::vector<double>(2, 7.0));  // nothing written
    CHECK(losses == std::vector<double>(2, 7.0));
}

TEST_CASE("preference::dpo: both gradients are checked (form, length) before either is written") {
    std::vector<double> sw{-1, -2}, sl{-3, -1}, rw{-1.5, -2}, rl{-2, -1}, gw(2, 7.0), short_grad(1), wide(4);
    const pt::tensor_view<double, 2> tokens(wide.data(), 2, 2);
    auto call = [&](const pref::sequence_grad& grad_rejected) {
        (void)pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl), pref::sequence_input::sums(rw),
                        pref::sequence_input::sums(rl), gw, grad_rejected);
    };
    CHECK_THROWS_WITH_AS(call(short_grad), doctest::Contains("'grad_rejected': must have one entry per sequence"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(tokens), doctest::Contains("'grad_rejected': must be a [B] view"), pt::invalid_argument);
    CHECK(gw == std::vector<double>(2, 7.0));  // nothing written
}

TEST_CASE("preference::sequence_log_probs checks lengths (length, apart from sums) before writing sums") {
    std::vector<double> lp = {-1, -2, -3, -4}, s(2, 7.0), short_n(1), both(3, 7.0);
    std::vector<std::int64_t> m = {1, 1, 0, 1};
    const pt::tensor_view<const double, 2> v(lp.data(), 2, 2);
    const pt::tensor_view<const std::int64_t, 2> mv(m.data(), 2, 2);
    CHECK_THROWS_WITH_AS(pref::sequence_log_probs(pt::exec::seq, v, mv, s, short_n),
                         doctest::Contains("'lengths': must have one entry per row"), pt::invalid_argument);
    CHECK(s == std::vector<double>(2, 7.0));  // nothing written
    // lengths one past sums (sums[1] is lengths[0]) would overwrite sums[1] with a length.
    CHECK_THROWS_WITH_AS(pref::sequence_log_probs(pt::exec::seq, v, mv, pt::tensor_view<double, 1>(both.data(), 2),
                                                  pt::tensor_view<double, 1>(both.data() + 1, 2)),
                         doctest::Contains("'lengths': the output overlaps the input 'sums'"), pt::invalid_argument);
    CHECK(both == std::vector<double>(3, 7.0));
}
