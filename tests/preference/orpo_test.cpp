#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/orpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::close;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// A pair batch given per token; `nll` is a second view of the chosen responses with a longer mask
// (prompt + response, as TRL's cross-entropy covers), over its own log-probs.
struct batch {
    pt::index_t B = 0, T = 0;
    std::vector<double> c, r, mc, mr, n, mn;
    pref::sequence_input chosen() const { return pref::sequence_input::tokens(matrix(c, B, T), matrix(mc, B, T)); }
    pref::sequence_input rejected() const { return pref::sequence_input::tokens(matrix(r, B, T), matrix(mr, B, T)); }
    pref::sequence_input nll() const { return pref::sequence_input::tokens(matrix(n, B, T), matrix(mn, B, T)); }
};

batch random_batch(pt::index_t B, pt::index_t T, std::uint64_t seed) {
    batch b;
    b.B = B, b.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-2.5, -0.02);
    const std::size_t N = std::size_t(B * T);
    b.c.resize(N), b.r.resize(N), b.n.resize(N);
    for (std::size_t j = 0; j < N; ++j) b.c[j] = lp(rng), b.r[j] = lp(rng), b.n[j] = lp(rng);
    b.mc = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 1);
    b.mr = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 2);
    b.mn = pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 3);
    for (pt::index_t i = 0; i < B; ++i) b.mc[std::size_t(i * T)] = b.mr[std::size_t(i * T)] = 1;
    return b;
}

struct grads {
    std::vector<double> c, r, n;
};

template <class Policy = pt::exec::sequenced_policy>
pref::orpo_result run_orpo(const batch& b, grads* g, bool separate_nll, const pref::orpo_options& o,
                           const Policy& policy = pt::exec::seq) {
    pref::sequence_grad gc, gr, gn;
    if (g) {
        gc = matrix(g->c, b.B, b.T);
        gr = matrix(g->r, b.B, b.T);
        if (separate_nll) gn = matrix(g->n, b.B, b.T);
    }
    return separate_nll ? pref::orpo(policy, b.chosen(), b.rejected(), b.nll(), gc, gr, gn, {}, o)
                        : pref::orpo(policy, b.chosen(), b.rejected(), gc, gr, {}, o);
}

pref::odds_ratio_result run_or(const batch& b, grads* g, const pref::odds_ratio_options& o) {
    pref::sequence_grad gc, gr;
    if (g) gc = matrix(g->c, b.B, b.T), gr = matrix(g->r, b.B, b.T);
    return pref::odds_ratio(pt::exec::seq, b.chosen(), b.rejected(), gc, gr, {}, o);
}

// Central differences of `loss(b)` w.r.t. every token of the chosen, rejected and nll log-probs.
template <class Loss>
void check_fd(batch b, const grads& g, double grad_scale, bool with_nll, Loss&& loss) {
    const double h = 1e-6;
    for (int s = 0; s < (with_nll ? 3 : 2); ++s) {
        auto& x = s == 0 ? b.c : s == 1 ? b.r : b.n;
        const auto& gx = s == 0 ? g.c : s == 1 ? g.r : g.n;
        for (std::size_t j = 0; j < x.size(); ++j) {
            const double x0 = x[j];
            x[j] = x0 + h;
            const double lp = loss(b);
            x[j] = x0 - h;
            const double lm = loss(b);
            x[j] = x0;
            const double fd = (lp - lm) / (2 * h);
            INFO("input " << s << " j " << j << " analytic " << gx[j] << " fd " << fd);
            CHECK(close(gx[j], grad_scale * fd));
        }
    }
}

double log1mexp_ref(double x) { return std::log(-std::expm1(x)); }
}  // namespace

TEST_CASE("odds_ratio: hand-computed pair, TRL's sign convention and metrics") {
    const std::vector<double> a{-0.5}, b{-1.5};
    std::vector<double> ga(1), gb(1), losses(1), ra(1), rb(1);
    const auto r = pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(a), pref::sequence_input::sums(b), ga, gb,
                                    {losses, ra, rb}, {.lambda = 0.25, .length_normalize = false});
    const double z = (-0.5 - log1mexp_ref(-0.5)) - (-1.5 - log1mexp_ref(-1.5));
    const double sig_neg = 1 / (1 + std::exp(z));
    CHECK(r.mean_log_odds == doctest::Approx(z).epsilon(1e-14));
    CHECK(r.mean_log_sigmoid == doctest::Approx(-std::log1p(std::exp(-z))).epsilon(1e-14));
    CHECK(losses[0] == doctest::Approx(0.25 * std::log1p(std::exp(-z))).epsilon(1e-14));
    CHECK(r.loss == losses[0]);
    CHECK(ga[0] == doctest::Approx(-0.25 * sig_neg / (1 - std::exp(-0.5))).epsilon(1e-13));
    CHECK(gb[0] == doctest::Approx(0.25 * sig_neg / (1 - std::exp(-1.5))).epsilon(1e-13));
    CHECK(ra[0] == 0.25 * -0.5);
    CHECK(rb[0] == 0.25 * -1.5);
    CHECK(r.rewards.chosen == ra[0]);
    CHECK(r.rewards.accuracy == 1.0);
    CHECK(r.rewards.logps_chosen == -0.5);
    CHECK(r.pairs == 1);
}

TEST_CASE("orpo: gradients match central finite differences (tokens)") {
    auto b = random_batch(4, 7, 3);
    for (pt::index_t t = 0; t < 7; ++t) b.mn[std::size_t(1 * 7 + t)] = 0;  // an nll row without tokens
    for (bool separate : {false, true})
        for (auto nll : {pref::sft_normalization::token_mean, pref::sft_normalization::sequence_mean})
            for (auto red : {pref::reduction::mean, pref::reduction::sum}) {
                const pref::orpo_options o{.lambda = 0.8, .reduction = red, .nll_normalization = nll, .grad_scale = 1.7};
                grads g{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), std::vector<double>(b.n.size())};
                (void)run_orpo(b, &g, separate, o);
                INFO("separate " << separate << " nll " << int(nll) << " reduction " << int(red));
                check_fd(b, g, 1.7, separate, [&](const batch& x) { return run_orpo(x, nullptr, separate, o).loss; });
                // Masked positions get exactly 0.
                for (std::size_t j = 0; j < b.c.size(); ++j) {
                    if (b.mc[j] == 0) CHECK(g.c[j] == 0.0);
                    if (b.mr[j] == 0) CHECK(g.r[j] == 0.0);
                }
            }
    // Global normalizers.
    const pref::orpo_options o{.normalizer = 10, .nll_normalizer = 100};
    grads g{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), std::vector<double>(b.n.size())};
    (void)run_orpo(b, &g, true, o);
    check_fd(b, g, 1.0, true, [&](const batch& x) { return run_orpo(x, nullptr, true, o).loss; });
    // The odds-ratio term alone.
    for (bool norm : {true, false}) {
        const pref::odds_ratio_options oo{.lambda = 0.3, .length_normalize = norm, .grad_scale = -2.0};
        grads h{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), {}};
        (void)run_or(b, &h, oo);
        check_fd(b, h, -2.0, false, [&](const batch& x) { return run_or(x, nullptr, oo).loss; });
    }
}

TEST_CASE("orpo: loss = nll + odds ratio; shared nll equals a separate nll over the same tokens") {
    const auto b = random_batch(5, 6, 17);
    auto same = b;
    same.n = b.c, same.mn = b.mc;
    grads g1{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), std::vector<double>(b.n.size())};
    grads g2 = g1;
    const auto o = pref::orpo_options::trl(0.1);
    const auto r1 = run_orpo(same, &g1, false, o);
    const auto r2 = run_orpo(same, &g2, true, o);
    CHECK(r1.loss == r2.loss);
    for (std::size_t j = 0; j < b.c.size(); ++j) CHECK(g1.c[j] == doctest::Approx(g2.c[j] + g2.n[j]).epsilon(1e-14));
    const auto nll = pref::sft(pt::exec::seq, same.chosen(), pt::none, pref::sft_options::trl());
    const auto orr = run_or(same, nullptr, pref::odds_ratio_options::trl(0.1));
    CHECK(r1.nll_loss == nll.loss);
    CHECK(r1.nll_tokens == nll.tokens);
    CHECK(r1.odds_ratio.loss == orr.loss);
    CHECK(r1.loss == nll.loss + orr.loss);
}

TEST_CASE("orpo: sums with lengths give the token form") {
    const auto b = random_batch(3, 8, 23);
    std::vector<double> Sc(3), nc(3), Sr(3), nr(3);
    pref::sequence_log_probs(pt::exec::seq, matrix(b.c, 3, 8), matrix(b.mc, 3, 8), Sc, nc);
    pref::sequence_log_probs(pt::exec::seq, matrix(b.r, 3, 8), matrix(b.mr, 3, 8), Sr, nr);
    std::vector<double> gc(3), gr(3);
    grads g{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), {}};
    const pref::orpo_options o{.lambda = 0.5};
    const auto rs = pref::orpo(pt::exec::seq, pref::sequence_input::sums(Sc, nc), pref::sequence_input::sums(Sr, nr), gc, gr, {}, o);
    const auto rt = run_orpo(b, &g, false, o);
    CHECK(rs.loss == doctest::Approx(rt.loss).epsilon(1e-14));
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(gc[i] == doctest::Approx(g.c[i * 8]).epsilon(1e-13));
        CHECK(gr[i] == doctest::Approx(g.r[i * 8]).epsilon(1e-13));
    }
    // Finite differences on the sums themselves (lengths are counts: constants).
    const double h = 1e-6;
    auto L = [&](const std::vector<double>& x, const std::vector<double>& y) {
        return pref::orpo(pt::exec::seq, pref::sequence_input::sums(x, nc), pref::sequence_input::sums(y, nr), pt::none, pt::none, {}, o)
            .loss;
    };
    for (std::size_t i = 0; i < 3; ++i) {
        auto p = Sc, m = Sc;
        p[i] += h, m[i] -= h;
        CHECK(close(gc[i], (L(p, Sr) - L(m, Sr)) / (2 * h)));
        p = Sr, m = Sr;
        p[i] += h, m[i] -= h;
        CHECK(close(gr[i], (L(Sc, p) - L(Sc, m)) / (2 * h)));
    }
}

TEST_CASE("orpo: a -> 0- and b -> 0- stay finite (ceiling clamp), gradient correct below the ceiling") {
    for (double a : {-1e-3, -2e-6, -1e-6, -1e-7, -1e-12, -1e-300, -0.0, 0.0, 1e-9}) {
        for (double b : {-2.0, -1e-4, -1e-9, 0.0}) {
            for (bool f32 : {false, true}) {
                const std::vector<double> va{a}, vb{b};
                std::vector<double> ga(1), gb(1), l(1);
                const auto r = pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(va), pref::sequence_input::sums(vb), ga,
                                                gb, {.losses = l}, {.length_normalize = false, .float32 = f32});
                INFO("a " << a << " b " << b << " float32 " << f32);
                CHECK(std::isfinite(r.loss));
                CHECK(std::isfinite(r.mean_log_odds));
                CHECK(std::isfinite(ga[0]));
                CHECK(std::isfinite(gb[0]));
                CHECK(ga[0] <= 0.0);
                CHECK(gb[0] >= 0.0);
                if (a > -1e-6) CHECK(ga[0] == 0.0);  // clamped: the derivative of the clamp
            }
        }
    }
    // Below the ceiling the gradient is the true one, however large (b = -1e-5: 1/(1 - e^b) ~ 1e5).
    for (double a : {-1e-5, -3e-3}) {
        for (double b : {-1e-5, -0.7}) {
            const std::vector<double> va{a}, vb{b};
            std::vector<double> ga(1), gb(1);
            const pref::odds_ratio_options o{.length_normalize = false};
            (void)pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(va), pref::sequence_input::sums(vb), ga, gb, {}, o);
            const double h = 1e-10;
            auto L = [&](double x, double y) {
                const std::vector<double> u{x}, v{y};
                return pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(u), pref::sequence_input::sums(v), pt::none,
                                        pt::none, {}, o)
                    .loss;
            };
            INFO("a " << a << " b " << b);
            CHECK(close(ga[0], (L(a + h, b) - L(a - h, b)) / (2 * h), 1e-5));
            CHECK(close(gb[0], (L(a, b + h) - L(a, b - h)) / (2 * h), 1e-5));
        }
    }
}

TEST_CASE("orpo: extreme margins give finite losses and gradients") {
    for (double big : {50.0, 1e4}) {
        for (int sign : {1, -1}) {
            // Mean log-probs far apart in either direction, and sequence sums of that size.
            const std::vector<double> a{sign > 0 ? -1e-2 : -big}, b{sign > 0 ? -big : -1e-2};
            for (bool f32 : {false, true}) {
                std::vector<double> ga(1), gb(1), l(1);
                const auto r = pref::orpo(pt::exec::seq, pref::sequence_input::sums(a, std::vector<double>{1.0}),
                                          pref::sequence_input::sums(b, std::vector<double>{1.0}), ga, gb, {.losses = l},
                                          {.lambda = 1.0, .float32 = f32});
                INFO("big " << big << " sign " << sign << " float32 " << f32);
                CHECK(std::isfinite(r.loss));
                CHECK(std::isfinite(ga[0]));
                CHECK(std::isfinite(gb[0]));
                if (sign < 0) CHECK(l[0] == doctest::Approx(-r.odds_ratio.mean_log_odds).epsilon(1e-6));  // lambda |z|
                else CHECK(l[0] < 1e-6);
            }
        }
    }
}

TEST_CASE("odds_ratio: float32 reproduces TRL's odds_ratio_loss on its near-zero case (finite rows)") {
    // trl/odds_ratio_loss.json, near_zero_and_very_negative__beta0.1 (TRL f2cd577): rows 0-3 as TRL
    // gives them; row 4 (a = -1e-12) is where TRL's gradient is NaN and posttrain's is finite.
    const std::vector<double> a{-1e-06, -0.69, -0.7, -500.0, -1e-12}, b{-2.0, -0.6931471805599453, -0.0001, -0.01, -700.0};
    const std::vector<double> trl_losses{-1.5651774987190947e-08, -0.0689999982714653, -0.9224047064781189, -50.460018157958984, 0.0};
    const std::vector<double> trl_ga{0.003130356315523386, 0.020000003278255463, 0.03972476348280907, 0.020000001415610313};
    const std::vector<double> trl_gb{-3.6203107178778282e-09, -0.01993696019053459, -199.99029541015625, -2.010016918182373};
    std::vector<double> ga(5), gb(5), l(5);
    auto o = pref::odds_ratio_options::trl(0.1);
    o.length_normalize = false;
    const auto r = pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(a), pref::sequence_input::sums(b), ga, gb,
                                    {.losses = l}, o);
    for (std::size_t i = 0; i < 4; ++i) {
        INFO("row " << i);
        CHECK(close(-l[i], trl_losses[i], 1e-6, 1e-6));
        CHECK(close(-ga[i], trl_ga[i], 1e-6, 1e-6));
        CHECK(close(-gb[i], trl_gb[i], 1e-6, 1e-6));
    }
    CHECK(l[4] == 0.0);
    CHECK(ga[4] == 0.0);
    CHECK(std::isfinite(gb[4]));
    CHECK(close(r.mean_log_sigmoid, -102.90284729003906, 1e-6, 1e-6));
    // In double the same rows agree with TRL's float32 numbers to float32 precision (no cast needed).
    auto od = o;
    od.float32 = false;
    std::vector<double> gad(5), gbd(5), ld(5);
    (void)pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(a), pref::sequence_input::sums(b), gad, gbd, {.losses = ld}, od);
    CHECK(close(-ld[3], trl_losses[3], 1e-6, 1e-6));
    CHECK(close(-gbd[2], trl_gb[2], 1e-5, 1e-6));
}

TEST_CASE_TEMPLATE("orpo: every host policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto b = random_batch(53, 400, 31);
    for (bool separate : {false, true}) {
        grads g0{std::vector<double>(b.c.size()), std::vector<double>(b.r.size()), std::vector<double>(b.n.size())};
        grads g1 = g0;
        const auto o = pref::orpo_options::trl(0.2);
        const auto r0 = run_orpo(b, &g0, separate, o);
        const auto r1 = run_orpo(b, &g1, separate, o, Backend::policy());
        CHECK(std::memcmp(&r0.loss, &r1.loss, sizeof(double)) == 0);
        CHECK(std::memcmp(&r0.odds_ratio.mean_log_odds, &r1.odds_ratio.mean_log_odds, sizeof(double)) == 0);
        CHECK(pt::test::bitwise_equal(g0.c, g1.c));
        CHECK(pt::test::bitwise_equal(g0.r, g1.r));
        CHECK(pt::test::bitwise_equal(g0.n, g1.n));
    }
}

TEST_CASE("orpo: bad input raises naming the function and the argument") {
    auto raises = [](auto&& f, const std::string& function, const std::string& argument, const std::string& what = "") {
        pt::test::expect_error(f, function, argument, what);
    };
    const std::string fo = "posttrain::preference::orpo", fr = "posttrain::preference::odds_ratio";
    const auto b = random_batch(3, 4, 41);
    const auto c = random_batch(2, 4, 42);
    // Mismatched pair counts, and an nll view of another batch.
    raises([&] { (void)pref::orpo(pt::exec::seq, b.chosen(), c.rejected(), pt::none, pt::none); }, fo, "rejected", "pair");
    raises([&] { (void)pref::odds_ratio(pt::exec::seq, b.chosen(), c.rejected(), pt::none, pt::none); }, fr, "rejected", "pair");
    raises([&] { (void)pref::orpo(pt::exec::seq, b.chosen(), b.rejected(), c.nll(), pt::none, pt::none, pt::none); }, fo, "nll_chosen");
    raises([&] { (void)pref::orpo(pt::exec::seq, {}, b.rejected(), pt::none, pt::none); }, fo, "chosen", "required");
    // NaN at a valid position.
    auto bad = b;
    bad.r[4] = nan_v;
    raises([&] { (void)run_orpo(bad, nullptr, false, {}); }, fo, "rejected", "non-finite");
    // Sums without lengths cannot be length-normalised (nor give the NLL's token count).
    const std::vector<double> S{-1.0, -2.0, -3.0};
    raises([&] { (void)pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(S), pref::sequence_input::sums(S), pt::none, pt::none); },
           fr, "chosen", "lengths");
    raises([&] { (void)pref::orpo(pt::exec::seq, pref::sequence_input::sums(S), pref::sequence_input::sums(S), pt::none, pt::none, {}, {.length_normalize = false}); },
           fo, "chosen", "lengths");
    // grad_nll without nll_chosen.
    std::vector<double> gn(b.c.size());
    raises([&] { (void)pref::orpo(pt::exec::seq, b.chosen(), b.rejected(), {}, pt::none, pt::none, matrix(gn, 3, 4)); }, fo, "grad_nll");
    // Options.
    raises([&] { (void)run_orpo(b, nullptr, false, {.lambda = 0}); }, fo, "options", "lambda");
    raises([&] { (void)run_orpo(b, nullptr, false, {.lambda = -1}); }, fo, "options", "lambda");
    raises([&] { (void)run_orpo(b, nullptr, false, {.log_prob_ceiling = 0}); }, fo, "options", "log_prob_ceiling");
    raises([&] { (void)run_orpo(b, nullptr, false, {.normalizer = -2}); }, fo, "options", "normalizer");
    raises([&] { (void)run_orpo(b, nullptr, false, {.nll_normalization = pref::sft_normalization(4)}); }, fo, "options", "sft_normalization");
    raises([&] { (void)run_orpo(b, nullptr, false, {.nll_normalizer = nan_v}); }, fo, "options", "normalizer");
    raises([&] { (void)run_orpo(b, nullptr, false, {.grad_scale = nan_v}); }, fo, "options", "grad_scale");
    raises([&] { (void)run_or(b, nullptr, {.reduction = pref::reduction(3)}); }, fr, "options", "reduction");
    // Outputs of the wrong size or form.
    std::vector<double> l2(2), g3(3);
    raises([&] { (void)pref::odds_ratio(pt::exec::seq, b.chosen(), b.rejected(), pt::none, pt::none, {.losses = l2}); }, fr, "outputs.losses");
    raises([&] { (void)pref::orpo(pt::exec::seq, b.chosen(), b.rejected(), g3, pt::none); }, fo, "grad_chosen");
}

TEST_CASE("odds_ratio and orpo: outputs are checked (length, over a gradient or another output) before anything is written") {
    const std::vector<double> a{-0.5, -0.7}, b{-1.5, -0.9}, n{2, 3}, nb{1, 2};
    std::vector<double> ga(2, 7.0), gb(2, 7.0), gn(2, 7.0), losses(2, 7.0), short_out(1);
    auto odds = [&](const pref::odds_ratio_outputs& out) {
        (void)pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(a), pref::sequence_input::sums(b), ga, gb, out,
                               {.length_normalize = false});
    };
    CHECK_THROWS_WITH_AS(odds({.losses = gb}), doctest::Contains("overlaps the input 'grad_rejected'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(odds({.losses = losses, .rejected_rewards = losses}), doctest::Contains("overlaps the input 'outputs.rejected_rewards'"),
                         pt::invalid_argument);
    auto orpo = [&](const pref::odds_ratio_outputs& out) {
        (void)pref::orpo(pt::exec::seq, pref::sequence_input::sums(a, n), pref::sequence_input::sums(b, nb),
                         pref::sequence_input::sums(a, n), ga, gb, gn, out);
    };
    CHECK_THROWS_WITH_AS(orpo({.chosen_rewards = gn}), doctest::Contains("overlaps the input 'grad_nll'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(orpo({.losses = losses, .rejected_rewards = short_out}), doctest::Contains("must have 2 entries, found 1"),
                         pt::invalid_argument);
    CHECK(ga == std::vector<double>(2, 7.0));  // nothing written
    CHECK(gn == std::vector<double>(2, 7.0));
    CHECK(losses == std::vector<double>(2, 7.0));
}

TEST_CASE("odds_ratio and orpo: every gradient is checked (form, length) before the first is written") {
    const std::vector<double> a{-0.5, -0.7}, b{-1.5, -0.9}, n{2, 3}, nb{1, 2};
    std::vector<double> ga(2, 7.0), gb(2, 7.0), short_grad(1), wide(4);
    const pt::tensor_view<double, 2> tokens(wide.data(), 2, 2);
    CHECK_THROWS_WITH_AS((void)pref::odds_ratio(pt::exec::seq, pref::sequence_input::sums(a), pref::sequence_input::sums(b), ga,
                                                short_grad, {}, {.length_normalize = false}),
                         doctest::Contains("'grad_rejected': must have one entry per sequence"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pref::orpo(pt::exec::seq, pref::sequence_input::sums(a, n), pref::sequence_input::sums(b, nb),
                                          pref::sequence_input::sums(a, n), ga, gb, tokens),
                         doctest::Contains("'grad_nll': must be a [B] view"), pt::invalid_argument);
    CHECK(ga == std::vector<double>(2, 7.0));  // nothing written
    CHECK(gb == std::vector<double>(2, 7.0));
}
