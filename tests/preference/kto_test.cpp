#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/kto.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::close;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// One side of a KTO batch given per token: policy and reference log-probs [B, T] and the mask.
struct side {
    pt::index_t B = 0, T = 0;
    std::vector<double> p, q, m;
    pref::kto_items tokens() const {
        return {pref::sequence_input::tokens(matrix(p, B, T), matrix(m, B, T)),
                pref::sequence_input::tokens(matrix(q, B, T), matrix(m, B, T))};
    }
    // The same side as sequence sums.
    std::vector<double> sums(const std::vector<double>& x) const {
        std::vector<double> s(std::size_t(B), 0.0);
        for (pt::index_t i = 0; i < B; ++i)
            for (pt::index_t t = 0; t < T; ++t)
                if (m[std::size_t(i * T + t)] != 0) s[std::size_t(i)] += x[std::size_t(i * T + t)];
        return s;
    }
};

side random_side(pt::index_t B, pt::index_t T, std::uint64_t seed, double spread = 0.3) {
    side s;
    s.B = B, s.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-3.0, -0.05);
    std::normal_distribution<double> d(0.0, spread);
    s.p.resize(std::size_t(B * T)), s.q.resize(std::size_t(B * T));
    for (std::size_t j = 0; j < s.p.size(); ++j) {
        s.q[j] = lp(rng);
        s.p[j] = s.q[j] + d(rng);
    }
    s.m = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 7);
    for (pt::index_t i = 0; i < B; ++i) s.m[std::size_t(i * T)] = 1;  // no empty response
    return s;
}

struct batch {
    side d, u, kl;
};

batch random_batch(pt::index_t bd, pt::index_t bu, pt::index_t T, std::uint64_t seed) {
    return {random_side(bd, T, seed), random_side(bu, T, seed + 100), random_side(bd + bu, T, seed + 200, 0.2)};
}

template <class Policy = pt::exec::sequenced_policy>
pref::kto_result run_tokens(const batch& b, std::vector<double>* gd, std::vector<double>* gu, const pref::kto_options& o,
                            const Policy& policy = pt::exec::seq, std::vector<double>* losses = nullptr) {
    pref::sequence_grad sd, su;
    if (gd) sd = matrix(*gd, b.d.B, b.d.T);
    if (gu) su = matrix(*gu, b.u.B, b.u.T);
    pref::kto_outputs out;
    if (losses) out.losses = *losses;
    return pref::kto(policy, b.d.tokens(), b.u.tokens(), b.kl.tokens(), sd, su, out, o);
}

// Central differences of the loss w.r.t. every policy token (valid or not) of both sides.
void check_fd_tokens(batch b, const pref::kto_options& o) {
    std::vector<double> gd(b.d.p.size()), gu(b.u.p.size());
    (void)run_tokens(b, &gd, &gu, o);
    const double h = 1e-6;
    for (int s = 0; s < 2; ++s) {
        auto& x = s == 0 ? b.d.p : b.u.p;
        const auto& g = s == 0 ? gd : gu;
        const auto& m = s == 0 ? b.d.m : b.u.m;
        for (std::size_t j = 0; j < x.size(); ++j) {
            const double x0 = x[j];
            x[j] = x0 + h;
            const double lp = run_tokens(b, nullptr, nullptr, o).loss;
            x[j] = x0 - h;
            const double lm = run_tokens(b, nullptr, nullptr, o).loss;
            x[j] = x0;
            const double fd = (lp - lm) / (2 * h);
            INFO("side " << s << " j " << j << " analytic " << g[j] << " fd " << fd);
            CHECK(close(g[j], o.grad_scale * fd));
            if (m[j] == 0) CHECK(g[j] == 0.0);
        }
    }
}
}  // namespace

TEST_CASE("kto: hand-computed items, anchor and rewards") {
    // One desirable item with l = 2 and one undesirable with l = -1, z0 supplied as 0.5, beta = 0.5.
    const std::vector<double> pd{-1.0}, rd{-3.0}, pu{-4.0}, ru{-3.0};
    std::vector<double> gd(1), gu(1), losses(2), cr(1), rr(1);
    const pref::kto_options o{.beta = 0.5, .desirable_weight = 2.0, .undesirable_weight = 0.5,
                              .anchor = pref::kto_anchor::supplied, .kl = 0.5};
    const auto r = pref::kto(pt::exec::seq, {pref::sequence_input::sums(pd), pref::sequence_input::sums(rd)},
                             {pref::sequence_input::sums(pu), pref::sequence_input::sums(ru)}, {}, gd, gu,
                             {losses, cr, rr}, o);
    auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
    const double xd = 0.5 * (2.0 - 0.5), xu = 0.5 * (0.5 - (-1.0));
    CHECK(losses[0] == doctest::Approx(2.0 * (1 - sig(xd))).epsilon(1e-14));
    CHECK(losses[1] == doctest::Approx(0.5 * (1 - sig(xu))).epsilon(1e-14));
    CHECK(r.loss == doctest::Approx((losses[0] + losses[1]) / 2).epsilon(1e-14));
    CHECK(gd[0] == doctest::Approx(-2.0 * 0.5 * sig(xd) * sig(-xd) / 2).epsilon(1e-14));
    CHECK(gu[0] == doctest::Approx(0.5 * 0.5 * sig(xu) * sig(-xu) / 2).epsilon(1e-14));
    CHECK(cr[0] == 1.0);
    CHECK(rr[0] == -0.5);
    CHECK(r.kl == 0.5);
    CHECK(r.rewards_chosen == 1.0);
    CHECK(r.rewards_rejected == -0.5);
    CHECK(r.margin == 1.5);
    CHECK(r.logps_chosen == -1.0);
    CHECK(r.logps_rejected == -4.0);
    CHECK(r.desirable == 1);
    CHECK(r.undesirable == 1);
    // A negative supplied estimate is clamped at 0, as TRL clamps after its gather.
    const auto neg = pref::kto(pt::exec::seq, {pref::sequence_input::sums(pd), pref::sequence_input::sums(rd)}, {}, {},
                               pt::none, pt::none, {}, {.anchor = pref::kto_anchor::supplied, .kl = -3.0});
    CHECK(neg.kl == 0.0);
    CHECK(neg.margin == 0.0);  // one side only
    // apo_zero_unpaired: the kto formula anchored at 0, whatever the estimate; kl still reported.
    const auto apo = pref::kto(pt::exec::seq, {pref::sequence_input::sums(pd), pref::sequence_input::sums(rd)}, {}, {},
                               pt::none, pt::none, {},
                               {.beta = 0.5, .loss_type = pref::kto_loss_type::apo_zero_unpaired,
                                .anchor = pref::kto_anchor::supplied, .kl = 0.5});
    CHECK(apo.loss == doctest::Approx(1 - sig(1.0)).epsilon(1e-14));
    CHECK(apo.kl == 0.5);
}

TEST_CASE("kto: computed anchor is max(0, mean log-ratio of the mismatched pairs), detached") {
    auto b = random_batch(3, 2, 6, 11);
    const auto kl_sum_p = b.kl.sums(b.kl.p), kl_sum_q = b.kl.sums(b.kl.q);
    double mean = 0;
    for (std::size_t i = 0; i < kl_sum_p.size(); ++i) mean += kl_sum_p[i] - kl_sum_q[i];
    mean /= double(kl_sum_p.size());
    const double est = pref::kto_kl_estimate(pt::exec::seq, b.kl.tokens());
    CHECK(est == doctest::Approx(mean).epsilon(1e-14));
    const auto r = run_tokens(b, nullptr, nullptr, pref::kto_options::trl());
    CHECK(r.kl == doctest::Approx(std::fmax(mean, 0.0)).epsilon(1e-14));
    // Supplying the estimate gives the same bits as computing it.
    const auto s = run_tokens(b, nullptr, nullptr, {.anchor = pref::kto_anchor::supplied, .kl = est});
    CHECK(s.loss == r.loss);
    // A positive estimate: shift the kl policy log-probs up.
    for (auto& x : b.kl.p) x += 0.5;
    const auto up = run_tokens(b, nullptr, nullptr, pref::kto_options::trl());
    CHECK(up.kl > 0);
    CHECK(up.kl == doctest::Approx(pref::kto_kl_estimate(pt::exec::seq, b.kl.tokens())).epsilon(1e-14));
    // calculate_KL=False: z0 = 0.
    CHECK(run_tokens(b, nullptr, nullptr, pref::kto_options::trl(0.1, pref::kto_loss_type::kto, false)).kl == 0.0);
}

TEST_CASE("kto: gradients match central finite differences (tokens)") {
    const auto b = random_batch(4, 3, 7, 5);
    for (auto lt : {pref::kto_loss_type::kto, pref::kto_loss_type::apo_zero_unpaired})
        for (auto an : {pref::kto_anchor::computed, pref::kto_anchor::zero, pref::kto_anchor::supplied})
            for (auto red : {pref::reduction::mean, pref::reduction::sum}) {
                pref::kto_options o{.beta = 0.7, .desirable_weight = 1.33, .undesirable_weight = 0.75, .loss_type = lt,
                                    .anchor = an, .kl = 0.4, .reduction = red, .grad_scale = -1.5};
                INFO("loss_type " << int(lt) << " anchor " << int(an) << " reduction " << int(red));
                check_fd_tokens(b, o);
            }
    // A global normalizer replaces the item count.
    check_fd_tokens(b, {.normalizer = 64});
    auto shifted = b;
    for (auto& x : shifted.kl.p) x += 0.3;  // z0 > 0
    check_fd_tokens(shifted, {.beta = 2.0});
}

TEST_CASE("kto: sums form gives the token form's values and per-sequence gradients") {
    const auto b = random_batch(3, 4, 9, 21);
    std::vector<double> gd(b.d.p.size()), gu(b.u.p.size()), ld(7);
    const auto o = pref::kto_options::trl(0.3, pref::kto_loss_type::kto, true, 1.2, 0.8);
    const auto rt = run_tokens(b, &gd, &gu, o, pt::exec::seq, &ld);
    const auto sdp = b.d.sums(b.d.p), sdq = b.d.sums(b.d.q), sup = b.u.sums(b.u.p), suq = b.u.sums(b.u.q);
    const auto skp = b.kl.sums(b.kl.p), skq = b.kl.sums(b.kl.q);
    std::vector<double> sgd(3), sgu(4), ls(7);
    const auto rs = pref::kto(pt::exec::seq, {pref::sequence_input::sums(sdp), pref::sequence_input::sums(sdq)},
                              {pref::sequence_input::sums(sup), pref::sequence_input::sums(suq)},
                              {pref::sequence_input::sums(skp), pref::sequence_input::sums(skq)}, sgd, sgu, {.losses = ls}, o);
    CHECK(rs.loss == doctest::Approx(rt.loss).epsilon(1e-13));
    CHECK(rs.kl == doctest::Approx(rt.kl).epsilon(1e-12));
    for (pt::index_t i = 0; i < 3; ++i) CHECK(sgd[std::size_t(i)] == doctest::Approx(gd[std::size_t(i * 9)]).epsilon(1e-12));
    for (pt::index_t i = 0; i < 4; ++i) CHECK(sgu[std::size_t(i)] == doctest::Approx(gu[std::size_t(i * 9)]).epsilon(1e-12));
    // Finite differences on the sums themselves.
    const double h = 1e-6;
    auto loss_at = [&](std::vector<double> a, std::vector<double> c) {
        return pref::kto(pt::exec::seq, {pref::sequence_input::sums(a), pref::sequence_input::sums(sdq)},
                         {pref::sequence_input::sums(c), pref::sequence_input::sums(suq)},
                         {pref::sequence_input::sums(skp), pref::sequence_input::sums(skq)}, pt::none, pt::none, {}, o)
            .loss;
    };
    for (std::size_t i = 0; i < 3; ++i) {
        auto a = sdp, c = sdp;
        a[i] += h, c[i] -= h;
        CHECK(close(sgd[i], (loss_at(a, sup) - loss_at(c, sup)) / (2 * h)));
    }
    for (std::size_t i = 0; i < 4; ++i) {
        auto a = sup, c = sup;
        a[i] += h, c[i] -= h;
        CHECK(close(sgu[i], (loss_at(sdp, a) - loss_at(sdp, c)) / (2 * h)));
    }
}

TEST_CASE_TEMPLATE("kto: every host policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto b = random_batch(37, 29, 300, 3);
    const auto o = pref::kto_options::trl(0.2);
    std::vector<double> gd0(b.d.p.size()), gu0(b.u.p.size()), l0(66), gd1 = gd0, gu1 = gu0, l1 = l0;
    const auto r0 = run_tokens(b, &gd0, &gu0, o, pt::exec::seq, &l0);
    const auto r1 = run_tokens(b, &gd1, &gu1, o, Backend::policy(), &l1);
    CHECK(std::memcmp(&r0.loss, &r1.loss, sizeof(double)) == 0);
    CHECK(std::memcmp(&r0.kl, &r1.kl, sizeof(double)) == 0);
    CHECK(pt::test::bitwise_equal(gd0, gd1));
    CHECK(pt::test::bitwise_equal(gu0, gu1));
    CHECK(pt::test::bitwise_equal(l0, l1));
}

TEST_CASE("kto: extreme margins give finite losses and gradients") {
    for (double margin : {50.0, -50.0, 1e4, -1e4}) {
        for (double beta : {0.1, 1.0}) {
            const std::vector<double> p{margin - 10.0, -10.0}, q{-10.0, -10.0 - margin};
            std::vector<double> gd(2), gu(2), losses(4);
            const auto r = pref::kto(pt::exec::seq, {pref::sequence_input::sums(p), pref::sequence_input::sums(q)},
                                     {pref::sequence_input::sums(p), pref::sequence_input::sums(q)},
                                     {pref::sequence_input::sums(p), pref::sequence_input::sums(q)}, gd, gu, {.losses = losses},
                                     {.beta = beta});
            INFO("margin " << margin << " beta " << beta);
            CHECK(std::isfinite(r.loss));
            CHECK(std::isfinite(r.kl));
            for (double x : losses) CHECK((std::isfinite(x) && x >= 0 && x <= 1));
            for (double g : gd) CHECK((std::isfinite(g) && g <= 0));
            for (double g : gu) CHECK((std::isfinite(g) && g >= 0));
        }
    }
    // Far past saturation the derivative is exactly 0, not 0 * inf.
    const std::vector<double> p{1e4}, q{0.0};
    std::vector<double> gd(1);
    (void)pref::kto(pt::exec::seq, {pref::sequence_input::sums(p), pref::sequence_input::sums(q)}, {}, {}, gd, pt::none, {},
                    {.beta = 1.0, .anchor = pref::kto_anchor::zero});
    CHECK(gd[0] == 0.0);
}

TEST_CASE("kto: empty sides") {
    const auto b = random_batch(3, 2, 5, 8);
    // Only desirable items: the mean over them; undesirable absent or given with zero rows.
    std::vector<double> gd(b.d.p.size());
    const auto only = pref::kto(pt::exec::seq, b.d.tokens(), {}, b.kl.tokens(), matrix(gd, 3, 5), pt::none, {},
                                pref::kto_options::trl());
    CHECK(only.undesirable == 0);
    CHECK(only.rewards_rejected == 0.0);
    CHECK(std::isfinite(only.loss));
    const std::vector<double> none_p, none_q;
    std::vector<double> none_g;
    const auto zero_rows = pref::kto(pt::exec::seq, b.d.tokens(), {pref::sequence_input::sums(none_p), pref::sequence_input::sums(none_q)},
                                     b.kl.tokens(), pt::none, none_g, {}, pref::kto_options::trl());
    CHECK(zero_rows.loss == only.loss);
    // No item at all: loss 0, nothing written, no NaN.
    const auto empty = pref::kto(pt::exec::seq, {}, {}, {}, pt::none, pt::none, {}, {.anchor = pref::kto_anchor::zero});
    CHECK(empty.loss == 0.0);
    CHECK(empty.desirable + empty.undesirable == 0);
}

TEST_CASE("kto: bad input raises naming the function and the argument") {
    const auto b = random_batch(3, 2, 5, 9);
    auto raises = [](auto&& f, const std::string& argument, const std::string& what = "") {
        pt::test::expect_error(f, "posttrain::preference::kto", argument, what);
    };
    // Mismatched batch sizes between policy and reference.
    const std::vector<double> p3{-1, -2, -3}, q2{-1, -2};
    raises([&] { (void)pref::kto(pt::exec::seq, {pref::sequence_input::sums(p3), pref::sequence_input::sums(q2)}, {}, {}, pt::none, pt::none, {}, {.anchor = pref::kto_anchor::zero}); },
           "desirable.reference");
    // Reference without policy; policy without reference.
    raises([&] { (void)pref::kto(pt::exec::seq, {{}, pref::sequence_input::sums(q2)}, {}, {}, pt::none, pt::none, {}, {.anchor = pref::kto_anchor::zero}); },
           "desirable.policy");
    raises([&] { (void)pref::kto(pt::exec::seq, {}, {pref::sequence_input::sums(q2), {}}, {}, pt::none, pt::none, {}, {.anchor = pref::kto_anchor::zero}); },
           "undesirable.reference");
    // NaN at a valid position (the first valid token of row 1), and in the mismatched pairs.
    auto bad = b;
    bad.d.p[5] = nan_v;
    raises([&] { (void)run_tokens(bad, nullptr, nullptr, {}); }, "desirable.policy", "non-finite");
    bad = b;
    bad.kl.q[0] = nan_v;
    raises([&] { (void)run_tokens(bad, nullptr, nullptr, {}); }, "kl.reference", "non-finite");
    // NaN at a masked position is padding: ignored.
    bad = b;
    for (std::size_t j = 0; j < bad.u.m.size(); ++j)
        if (bad.u.m[j] == 0) bad.u.p[j] = nan_v;
    CHECK(run_tokens(bad, nullptr, nullptr, {}).loss == run_tokens(b, nullptr, nullptr, {}).loss);
    // Options.
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.beta = 0}); }, "options", "beta");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.beta = nan_v}); }, "options", "beta");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.desirable_weight = 0}); }, "options", "desirable_weight");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.undesirable_weight = -1}); }, "options", "undesirable_weight");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.anchor = pref::kto_anchor::supplied, .kl = nan_v}); }, "options", "kl");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.normalizer = -1}); }, "options", "normalizer");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.grad_scale = nan_v}); }, "options", "grad_scale");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.loss_type = pref::kto_loss_type(7)}); }, "options", "loss_type");
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {.anchor = pref::kto_anchor(9)}); }, "options", "anchor");
    // The computed anchor needs mismatched pairs.
    raises([&] { (void)pref::kto(pt::exec::seq, b.d.tokens(), b.u.tokens(), {}, pt::none, pt::none, {}, {}); }, "kl.policy");
    // Outputs: wrong sizes, gradient of the wrong form, gradient for an absent side.
    std::vector<double> short_losses(2), g_sums(3), g_tok(b.d.p.size());
    raises([&] { (void)run_tokens(b, nullptr, nullptr, {}, pt::exec::seq, &short_losses); }, "outputs.losses");
    raises([&] { (void)pref::kto(pt::exec::seq, b.d.tokens(), b.u.tokens(), b.kl.tokens(), g_sums, pt::none, {}, {}); },
           "grad_desirable");
    raises([&] { (void)pref::kto(pt::exec::seq, b.d.tokens(), {}, b.kl.tokens(), pt::none, matrix(g_tok, 3, 5), {}, {}); },
           "grad_undesirable");
}

TEST_CASE("kto: outputs and gradients are checked (lengths, overlaps, absent sides) before anything is written") {
    const std::vector<double> pd{-1, -2}, rd{-1.5, -2}, pu{-3, -1}, ru{-2, -1};
    std::vector<double> gd(2, 7.0), gu(2, 7.0), losses(4, 7.0), rew(2, 7.0), short_out(1);
    const pref::kto_items d{pref::sequence_input::sums(pd), pref::sequence_input::sums(rd)};
    const pref::kto_items u{pref::sequence_input::sums(pu), pref::sequence_input::sums(ru)};
    auto call = [&](const pref::kto_items& undesirable, const pref::sequence_grad& grad_u, const pref::kto_outputs& out) {
        (void)pref::kto(pt::exec::seq, d, undesirable, {}, gd, grad_u, out, {.anchor = pref::kto_anchor::zero});
    };
    CHECK_THROWS_WITH_AS(call(u, gu, {.chosen_rewards = gd}), doctest::Contains("overlaps the input 'grad_desirable'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(u, gu, {.chosen_rewards = rew, .rejected_rewards = rew}),
                         doctest::Contains("overlaps the input 'outputs.rejected_rewards'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(u, gu, {.losses = losses, .rejected_rewards = short_out}), doctest::Contains("must have 2 entries, found 1"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call({}, gu, {}), doctest::Contains("given without undesirable items"), pt::invalid_argument);
    CHECK(gd == std::vector<double>(2, 7.0));  // nothing written
    CHECK(losses == std::vector<double>(4, 7.0));
    CHECK(rew == std::vector<double>(2, 7.0));
    // Valid: each output has its side's length.
    call(u, gu, {.losses = losses, .chosen_rewards = rew});
    CHECK(rew[0] != 7.0);
}

TEST_CASE("kto: both gradients are checked (form, length) before either is written") {
    const std::vector<double> pd{-1, -2}, rd{-1.5, -2}, pu{-3, -1}, ru{-2, -1};
    std::vector<double> gd(2, 7.0), short_grad(1);
    const pref::kto_items d{pref::sequence_input::sums(pd), pref::sequence_input::sums(rd)};
    const pref::kto_items u{pref::sequence_input::sums(pu), pref::sequence_input::sums(ru)};
    CHECK_THROWS_WITH_AS((void)pref::kto(pt::exec::seq, d, u, {}, gd, short_grad, {}, {.anchor = pref::kto_anchor::zero}),
                         doctest::Contains("'grad_undesirable': must have one entry per sequence"), pt::invalid_argument);
    CHECK(gd == std::vector<double>(2, 7.0));  // nothing written
}
