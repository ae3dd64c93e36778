#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/modpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::check_gradient;

namespace {

struct pairs {
    pt::index_t B = 0, T = 0;
    std::vector<double> pc, pr, rc, rr, mask_c, mask_r, margin_c, margin_r;
};

pairs random_pairs(pt::index_t B, pt::index_t T, pt::index_t K1, std::uint64_t seed) {
    pairs p;
    p.B = B, p.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-3.0, -0.1);
    std::normal_distribution<double> g(0.0, 1.0);
    for (auto* v : {&p.pc, &p.pr, &p.rc, &p.rr}) {
        v->resize(std::size_t(B * T));
        for (auto& x : *v) x = lp(rng);
    }
    p.mask_c = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 1);
    p.mask_r = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 2);
    for (auto* v : {&p.margin_c, &p.margin_r}) {
        v->resize(std::size_t(B * K1));
        for (auto& x : *v) x = g(rng);
    }
    return p;
}

template <class Policy>
pref::modpo_result run(const Policy& policy, const pairs& p, pt::index_t K1, std::vector<double>* gc, std::vector<double>* gr,
                       const pref::modpo_options& o, std::vector<double>* losses = nullptr) {
    const auto in = [&](const std::vector<double>& v, const std::vector<double>& m) {
        return pref::sequence_input::tokens(matrix(v, p.B, p.T), matrix(m, p.B, p.T));
    };
    pref::sequence_grad Gc, Gr;
    if (gc) Gc = matrix(*gc, p.B, p.T);
    if (gr) Gr = matrix(*gr, p.B, p.T);
    pref::modpo_outputs out;
    if (losses) out.losses = *losses;
    return pref::modpo(policy, in(p.pc, p.mask_c), in(p.pr, p.mask_r), in(p.rc, p.mask_c), in(p.rr, p.mask_r),
                       matrix(p.margin_c, p.B, K1), matrix(p.margin_r, p.B, K1), Gc, Gr, out, o);
}
}  // namespace

TEST_CASE_TEMPLATE("modpo: finite differences (sigmoid, hinge) and seq == par bitwise", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto policy = Backend::policy();
    const pt::index_t B = 9, T = 13, K1 = 2;
    pairs p = random_pairs(B, T, K1, 11);
    for (auto loss : {pref::modpo_loss_type::sigmoid, pref::modpo_loss_type::hinge}) {
        auto o = pref::modpo_options::official({0.6, 0.3, 0.1}, 0.5, loss);
        o.grad_scale = 1.7;
        std::vector<double> gc(std::size_t(B * T)), gr(std::size_t(B * T));
        const auto r = run(policy, p, K1, &gc, &gr, o);
        CHECK(std::isfinite(r.loss));
        auto f = [&] {
            auto q = o;
            q.grad_scale = 1;
            return run(pt::exec::seq, p, K1, nullptr, nullptr, q).loss * 1.7;
        };
        // hinge: no pair may sit on the kink for the differences to be valid
        check_gradient(p.pc, gc, f, &p.mask_c);
        check_gradient(p.pr, gr, f, &p.mask_r);
        std::vector<double> gc_seq(gc.size()), gr_seq(gr.size());
        const auto s = run(pt::exec::seq, p, K1, &gc_seq, &gr_seq, o);
        CHECK(pt::test::bitwise_equal(gc, gc_seq));
        CHECK(pt::test::bitwise_equal(gr, gr_seq));
        CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
    }
}

TEST_CASE("modpo: w = (1, 0) is DPO; hand-computed collective rewards; sums form") {
    std::vector<double> pc{-10.0, -4.0}, pr{-12.0, -3.0}, rc{-11.0, -5.0}, rr{-11.5, -2.0}, mc{0.3, -0.2}, mr{-0.4, 0.9};
    std::vector<double> gc(2), gr(2), losses(2), cr(2), rj(2);
    const double beta = 0.1;
    auto r = pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                         pref::sequence_input::sums(rc), pref::sequence_input::sums(rr), mc, mr, gc, gr,
                         {.losses = losses, .chosen_rewards = cr, .rejected_rewards = rj},
                         pref::modpo_options::official({1.0, 0.0}, beta));
    for (int i = 0; i < 2; ++i) {
        const double u = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i]));
        CHECK(losses[i] == doctest::Approx(std::log1p(std::exp(-u))).epsilon(1e-14));
        CHECK(gc[i] == doctest::Approx(-beta / (1 + std::exp(u)) / 2).epsilon(1e-14));
        CHECK(gr[i] == -gc[i]);
    }
    // w = (0.5, 0.5): R = (beta l - 0.5 m) / 0.5
    r = pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                    pref::sequence_input::sums(rc), pref::sequence_input::sums(rr), mc, mr, gc, gr,
                    {.chosen_rewards = cr, .rejected_rewards = rj}, pref::modpo_options::official({0.5, 0.5}, beta));
    CHECK(cr[0] == doctest::Approx((beta * 1.0 - 0.5 * 0.3) / 0.5).epsilon(1e-14));
    CHECK(rj[1] == doctest::Approx((beta * -1.0 - 0.5 * 0.9) / 0.5).epsilon(1e-14));
    CHECK(r.rewards.accuracy == doctest::Approx(((cr[0] > rj[0]) + (cr[1] > rj[1])) / 2.0));
    CHECK(r.pairs == 2);
    // reduction sum: gradients twice those of the mean
    std::vector<double> gs(2), gs2(2);
    auto o = pref::modpo_options::official({0.5, 0.5}, beta);
    o.reduce = pref::reduction::sum;
    (void)pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                      pref::sequence_input::sums(rc), pref::sequence_input::sums(rr), mc, mr, gs, gs2, {}, o);
    CHECK(gs[0] == doctest::Approx(2 * gc[0]).epsilon(1e-14));
}

TEST_CASE("modpo: float inputs and outputs (the computation stays in double)") {
    std::vector<float> pc{-52.0f, -39.3f}, pr{-44.3f, -21.0f}, rc{-54.1f, -41.7f}, rr{-44.1f, -20.0f}, mc{-0.18f, -0.1f}, mr{-0.41f, 0.11f};
    std::vector<float> gc(2), gr(2), losses(2);
    const auto r = pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                               pref::sequence_input::sums(rc), pref::sequence_input::sums(rr), mc, mr, gc, gr, {.losses = losses},
                               pref::modpo_options::official({0.5, 0.5}, 0.1));
    auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    const auto pcd = d(pc), prd = d(pr), rcd = d(rc), rrd = d(rr), mcd = d(mc), mrd = d(mr);
    std::vector<double> gcd(2), grd(2);
    const auto e = pref::modpo(pt::exec::seq, pref::sequence_input::sums(pcd), pref::sequence_input::sums(prd),
                               pref::sequence_input::sums(rcd), pref::sequence_input::sums(rrd), mcd, mrd, gcd, grd, {},
                               pref::modpo_options::official({0.5, 0.5}, 0.1));
    CHECK(r.loss == e.loss);
    CHECK(gc[0] == float(gcd[0]));
    CHECK(gr[1] == float(grd[1]));
}

TEST_CASE("modpo: extreme margins give finite losses and gradients; hinge kink gets 0") {
    for (double m : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> pc{m}, pr{0.0}, z{0.0}, mc{0.0}, mr{0.0}, gc(1), gr(1), losses(1);
        for (auto loss : {pref::modpo_loss_type::sigmoid, pref::modpo_loss_type::hinge}) {
            const auto r = pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                                       pref::sequence_input::sums(z), pref::sequence_input::sums(z), mc, mr, gc, gr,
                                       {.losses = losses}, pref::modpo_options::official({0.5, 0.5}, 1.0, loss));
            CHECK(std::isfinite(r.loss));
            CHECK(std::isfinite(gc[0]));
            CHECK(r.loss >= 0);
            if (m > 0) CHECK(gc[0] == doctest::Approx(0.0).epsilon(1e-12));
            else CHECK(std::fabs(gc[0]) == doctest::Approx(2.0));  // beta / w0 = 2
        }
    }
    // hinge at z = 1 exactly: relu'(0) = 0
    std::vector<double> pc{0.5}, z{0.0}, mc{0.0}, gc(1), gr(1);
    (void)pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(z), pref::sequence_input::sums(z),
                      pref::sequence_input::sums(z), mc, mc, gc, gr, {},
                      pref::modpo_options::official({0.5, 0.5}, 1.0, pref::modpo_loss_type::hinge));
    CHECK(gc[0] == 0.0);
}

TEST_CASE("modpo: zero-length responses are sums of 0 (documented), masked garbage ignored") {
    const double nan_v = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> lp{nan_v, nan_v, -1.0, -2.0}, m{0, 0, 1, 1}, mc{0.0, 0.0}, gc(4), gr(4);
    const auto in = pref::sequence_input::tokens(matrix(lp, 2, 2), matrix(m, 2, 2));
    const auto r = pref::modpo(pt::exec::seq, in, in, in, in, mc, mc, matrix(gc, 2, 2), matrix(gr, 2, 2), {}, {});
    CHECK(r.loss == doctest::Approx(std::log(2.0)));
    CHECK(gc[0] == 0.0);
    CHECK(gc[2] == doctest::Approx(-0.1 / 0.5 * 0.5 / 2));
}

TEST_CASE("modpo: bad input names the function and the argument") {
    std::vector<double> s{-1.0, -2.0}, m1{0.1, 0.2}, m2{0.1, 0.2, 0.3, 0.4}, g(2), g2(2), short_s{-1.0};
    auto S = [](const std::vector<double>& v) { return pref::sequence_input::sums(v); };
    auto expect = [](auto&& call, const std::string& needle) { pt::test::expect_error(call, "posttrain::preference::modpo", needle); };
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g, {}, pref::modpo_options::official({0.6, 0.6})); }, "sum to 1");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g, {}, pref::modpo_options::official({0.01, 0.99})); }, "min_primary_weight");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g, {}, pref::modpo_options::official({1.0})); }, "two objectives");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), matrix(m2, 2, 2), m1, g, g, {}, {}); }, "chosen_margin_rewards");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(short_s), S(s), S(s), m1, m1, g, g, {}, {}); }, "policy_rejected");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g, {}, {.beta = -1}); }, "beta");
    std::vector<double> bad{0.1, std::numeric_limits<double>::infinity()};
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), bad, m1, g, g, {}, {}); }, "non-finite");
    std::vector<double> bad_s{-1.0, std::nan("")};
    expect([&] { (void)pref::modpo(pt::exec::seq, S(bad_s), S(s), S(s), S(s), m1, m1, g, g, {}, {}); }, "policy_chosen");
    std::vector<double> l3(3);
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g2, {.losses = l3}, {}); }, "outputs.losses");
    expect([&] { (void)pref::modpo(pt::exec::seq, S(s), S(s), S(s), S(s), m1, m1, g, g, {}, {}); }, "'grad_chosen': the output overlaps the input 'grad_rejected'");
}

TEST_CASE("modpo: outputs are checked (length, over a gradient or another output) before anything is written") {
    std::vector<double> pc{-10.0, -4.0}, pr{-12.0, -3.0}, rc{-11.0, -5.0}, rr{-11.5, -2.0}, mc{0.3, -0.2}, mr{-0.4, 0.9};
    std::vector<double> gc(2, 7.0), gr(2, 7.0), losses(2, 7.0), short_out(1);
    auto call = [&](const pref::modpo_outputs& out) {
        (void)pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr), pref::sequence_input::sums(rc),
                          pref::sequence_input::sums(rr), mc, mr, gc, gr, out, pref::modpo_options::official({0.5, 0.5}, 0.1));
    };
    CHECK_THROWS_WITH_AS(call({.losses = gr}), doctest::Contains("overlaps the input 'grad_rejected'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.losses = losses, .chosen_rewards = losses}), doctest::Contains("overlaps the input 'outputs.chosen_rewards'"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({.losses = losses, .rejected_rewards = short_out}), doctest::Contains("must have 2 entries, found 1"),
                         pt::invalid_argument);
    CHECK(gc == std::vector<double>(2, 7.0));  // nothing written
    CHECK(losses == std::vector<double>(2, 7.0));
}

TEST_CASE("modpo: both gradients are checked (form, length) before either is written") {
    std::vector<double> pc{-10.0, -4.0}, pr{-12.0, -3.0}, rc{-11.0, -5.0}, rr{-11.5, -2.0}, mc{0.3, -0.2}, mr{-0.4, 0.9};
    std::vector<double> gc(2, 7.0), short_grad(1);
    CHECK_THROWS_WITH_AS((void)pref::modpo(pt::exec::seq, pref::sequence_input::sums(pc), pref::sequence_input::sums(pr),
                                           pref::sequence_input::sums(rc), pref::sequence_input::sums(rr), mc, mr, gc, short_grad, {},
                                           pref::modpo_options::official({0.5, 0.5}, 0.1)),
                         doctest::Contains("'grad_rejected': must have one entry per sequence"), pt::invalid_argument);
    CHECK(gc == std::vector<double>(2, 7.0));  // nothing written
}
