// COPO: the consistency-based global reward and advantage, the entropy-based blend weights, and the
// blended loss (policy_loss::compute twice) with its gradient against central finite differences.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/copo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/gradient.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
namespace pl = posttrain::policy_loss;
using pt::test::bitwise_equal;

namespace {
pt::tensor_view<const double, 2> mat(const std::vector<double>& v, pt::index_t n, pt::index_t t) {
    return pt::tensor_view<const double, 2>(v.data(), n, t);
}
pt::tensor_view<double, 2> out2(std::vector<double>& v, pt::index_t n, pt::index_t t) { return pt::tensor_view<double, 2>(v.data(), n, t); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace

TEST_CASE("copo_group_scores: answer entropy, lambda_G and the consistency coefficient by hand") {
    // Two groups of four: answers {7, 7, 9, 9} (H = 1 bit) and {3, 3, 3, 3} (H = 0).
    const std::vector<double> r{1, 0, 1, 0, 1, 1, 0, 1};
    const std::vector<std::int64_t> ans{7, 7, 9, 9, 3, 3, 3, 3};
    std::vector<double> R(2), H(2);
    adv::copo_group_scores(pt::exec::seq, r, ans, pt::uniform_groups{4}, R, H);
    CHECK(H[0] == doctest::Approx(1.0));
    CHECK(H[1] == 0.0);
    CHECK(R == std::vector<double>{0.5, 0.75});  // reward_coef off: the mean reward
    adv::copo_group_scores(pt::exec::seq, r, ans, pt::uniform_groups{4}, R, H, {.reward_coef = true});
    const double lambda = (1 - 1 / 4.0) / 2.0;  // (1 - 1/G) / log2 G
    CHECK(R[0] == doctest::Approx(0.5 * (1 - lambda * 1.0)));
    CHECK(R[1] == doctest::Approx(0.75));
    // All-distinct answers reach the maximum entropy log2 G, where c = 1 - (1 - 1/G) = 1/G.
    const std::vector<std::int64_t> distinct{1, 2, 3, 4};
    const std::vector<double> ones(4, 1.0);
    std::vector<double> R1(1), H1(1);
    adv::copo_group_scores(pt::exec::seq, ones, distinct, pt::uniform_groups{4}, R1, H1, {.reward_coef = true});
    CHECK(H1[0] == doctest::Approx(2.0));
    CHECK(R1[0] == doctest::Approx(0.25));
    // G = 1: lambda is 0/0: posttrain takes lambda = 0, the official preset NaN.
    const std::vector<double> one{1};
    const std::vector<std::int64_t> a1{5};
    adv::copo_group_scores(pt::exec::seq, one, a1, pt::uniform_groups{1}, R1, H1, {.reward_coef = true});
    CHECK(R1[0] == 1.0);
    adv::copo_group_scores(pt::exec::seq, one, a1, pt::uniform_groups{1}, R1, H1, adv::copo_options::official(true));
    CHECK(std::isnan(R1[0]));
}

TEST_CASE("copo_global_advantages: a z-score across prompts, broadcast to their rows") {
    const std::vector<double> r{1, 0, 1, 1, 0, 0};
    const std::vector<std::int64_t> ans{1, 2, 1, 1, 1, 2};
    std::vector<double> A(6), H(6);
    const auto res = adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{2}, A, H);
    // R = 0.5, 1, 0: mean 0.5, unbiased std 0.5
    CHECK(res.groups == 3);
    CHECK(res.global_mean == doctest::Approx(0.5));
    CHECK(res.global_std == doctest::Approx(0.5));
    CHECK(A[0] == 0.0);
    CHECK(A[1] == 0.0);
    CHECK(A[2] == doctest::Approx(0.5 / (0.5 + 1e-6)));
    CHECK(A[4] == doctest::Approx(-0.5 / (0.5 + 1e-6)));
    CHECK(H[0] == doctest::Approx(1.0));
    CHECK(H[2] == 0.0);
    // Dr. GRPO form: centre only.
    (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{2}, A, pt::none, {.global_scale = adv::scale::none});
    CHECK(A[2] == doctest::Approx(0.5));
    // One prompt: no spread across prompts: 0 (posttrain) or NaN (official).
    (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{6}, A, pt::none);
    for (double x : A) CHECK(x == 0.0);
    (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{6}, A, pt::none, adv::copo_options::official());
    for (double x : A) CHECK(std::isnan(x));
}

TEST_CASE("copo_blend_weights: every mode") {
    const std::vector<double> H{0.0, 0.5, 1.0, 2.0}, local{0.0, 1.0, -1.0, 0.5}, reward{1, 0, 1, 1};
    std::vector<double> w(4);
    auto run = [&](adv::copo_blend m) {
        adv::copo_blend_weights(pt::exec::seq, H, local, reward, w, {.mode = m, .k = 20, .b = 0.5});
        return w;
    };
    const std::vector<double> soft{sigmoid(-10), 0.5, sigmoid(10), sigmoid(30)};
    auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
        for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-14));
    };
    near(run(adv::copo_blend::only_soft), soft);
    near(run(adv::copo_blend::no_global), {1, 1, 1, 1});
    near(run(adv::copo_blend::only_global), {0, 0, 0, 0});
    near(run(adv::copo_blend::soft_with_forced), {0, soft[1], soft[2], soft[3]});
    near(run(adv::copo_blend::only_forced), {0, 1, 1, 1});
    near(run(adv::copo_blend::soft_with_zero), {soft[0], 0, soft[2], soft[3]});
    near(run(adv::copo_blend::only_zero), {1, 0, 1, 1});
}

namespace {
struct loss_batch {
    pt::index_t B = 6, T = 5;
    std::vector<double> lp, old, la, ga, mask, w;
};
loss_batch make_batch(std::uint64_t seed) {
    loss_batch b;
    std::mt19937_64 g(seed);
    std::uniform_real_distribution<double> u(-1, 1);
    const auto n = std::size_t(b.B * b.T);
    b.lp.resize(n), b.old.resize(n), b.la.resize(n), b.ga.resize(n), b.mask.resize(n);
    std::vector<double> row_la(std::size_t(b.B)), row_ga(std::size_t(b.B));
    for (auto& x : row_la) x = u(g) * 2;
    for (auto& x : row_ga) x = u(g) * 2;
    for (std::size_t k = 0; k < n; ++k) {
        b.old[k] = -1 + 0.5 * u(g);
        b.lp[k] = b.old[k] + 0.5 * u(g);  // ratios on both sides of the clip range
        b.mask[k] = (k % 7) != 3;
        b.la[k] = row_la[k / std::size_t(b.T)];
        b.ga[k] = row_ga[k / std::size_t(b.T)];
    }
    b.w = {0.0, 0.2, 0.5, 0.9, 1.0, 0.35};
    return b;
}
}  // namespace

TEST_CASE("copo_loss: gradient = central finite differences, every aggregation, dual clip and global_coef") {
    for (auto mode : {pl::aggregation::token_mean, pl::aggregation::seq_mean_token_mean, pl::aggregation::seq_mean_token_sum,
                      pl::aggregation::seq_mean_token_sum_norm}) {
        for (double coef : {1.0, 0.5}) {
            auto b = make_batch(42 + std::uint64_t(mode));
            auto o = pl::copo_loss_options::official(mode, 0.2, 0.28, 3.0);
            o.global_coef = coef;
            std::vector<double> grad(b.lp.size());
            const auto base = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                            mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), b.w, out2(grad, b.B, b.T), o);
            CHECK(base.loss == doctest::Approx(base.local.loss + base.global.loss));
            double worst = 0;
            for (std::size_t k = 0; k < b.lp.size(); ++k) {
                const double h = 1e-6, keep = b.lp[k];
                b.lp[k] = keep + h;
                const double up = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                                mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), b.w, pt::none, o).loss;
                b.lp[k] = keep - h;
                const double down = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                                  mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), b.w, pt::none, o).loss;
                b.lp[k] = keep;
                const double fd = (up - down) / (2 * h);
                worst = std::max(worst, std::fabs(fd - grad[k]) / (1e-7 + 1e-6 * std::fabs(grad[k])));
            }
            CHECK(worst <= 1.0);
        }
    }
}

TEST_CASE("copo_loss: w = 1 is the local loss alone, w = 0 the global one") {
    auto b = make_batch(7);
    const auto o = pl::copo_loss_options::official(pl::aggregation::token_mean);
    for (double wv : {0.0, 1.0}) {
        const std::vector<double> w(std::size_t(b.B), wv);
        std::vector<double> g(b.lp.size()), g_ref(b.lp.size());
        const auto res = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                       mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), w, out2(g, b.B, b.T), o);
        const auto ref = pl::compute(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T),
                                     wv == 1.0 ? mat(b.la, b.B, b.T) : mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), out2(g_ref, b.B, b.T), o.loss);
        CHECK(res.loss == doctest::Approx(ref.loss).epsilon(1e-14));
        for (std::size_t k = 0; k < g.size(); ++k) CHECK(g[k] == doctest::Approx(g_ref[k]).epsilon(1e-14));
    }
}

TEST_CASE("copo_loss: the KL and entropy terms count once, whatever the blend") {
    auto b = make_batch(11);
    std::vector<double> ref(b.lp.size()), ent(b.lp.size());
    for (std::size_t k = 0; k < ref.size(); ++k) ref[k] = b.old[k] + 0.1 * std::sin(double(k)), ent[k] = 0.5 + 0.3 * std::cos(double(k));
    auto o = pl::copo_loss_options::official(pl::aggregation::token_mean);
    o.loss.kl_coef = 0.3, o.loss.entropy_coef = 0.01;
    pl::extras x;
    x.ref_log_probs = mat(ref, b.B, b.T);
    x.entropies = mat(ent, b.B, b.T);
    // w = 1: exactly the local loss, KL and entropy included.
    const std::vector<double> ones(std::size_t(b.B), 1.0);
    std::vector<double> g(b.lp.size()), g_ref(b.lp.size());
    const auto res = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                   mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), ones, out2(g, b.B, b.T), o, x);
    const auto loc = pl::compute(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                 mat(b.mask, b.B, b.T), out2(g_ref, b.B, b.T), o.loss, x);
    CHECK(res.loss == loc.loss);
    CHECK(bitwise_equal(g, g_ref));
    CHECK(res.global.loss == 0.0);
    // A general blend: gradient = central differences with KL and entropy on.
    std::vector<double> grad(b.lp.size());
    (void)pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T), mat(b.ga, b.B, b.T),
                        mat(b.mask, b.B, b.T), b.w, out2(grad, b.B, b.T), o, x);
    pt::test::check_gradient(b.lp, grad, [&] {
        return pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T), mat(b.ga, b.B, b.T),
                             mat(b.mask, b.B, b.T), b.w, pt::none, o, x).loss;
    }, &b.mask, {1e-6, 1e-7});
}

TEST_CASE_TEMPLATE("copo: seq == par bitwise", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(200, 9, 13);
    const auto N = std::size_t(off.back());
    const auto r = pt::test::random_rewards(N, 3, true);
    std::vector<std::int64_t> ans(N);
    for (std::size_t i = 0; i < N; ++i) ans[i] = std::int64_t((i * 2654435761u) % 4);
    std::vector<double> a1(N), a2(N), h1(N), h2(N), w1(N), w2(N);
    (void)adv::copo_global_advantages(B::policy(), r, ans, pt::ragged(off), a1, h1, {.reward_coef = true});
    (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::ragged(off), a2, h2, {.reward_coef = true});
    CHECK(bitwise_equal(a1, a2));
    CHECK(bitwise_equal(h1, h2));
    adv::copo_blend_weights(B::policy(), h1, a1, r, w1);
    adv::copo_blend_weights(pt::exec::seq, h2, a2, r, w2);
    CHECK(bitwise_equal(w1, w2));
    auto b = make_batch(99);
    std::vector<double> g1(b.lp.size()), g2(b.lp.size());
    const auto o = pl::copo_loss_options::official(pl::aggregation::seq_mean_token_mean);
    const auto l1 = pl::copo_loss(B::policy(), mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T), mat(b.ga, b.B, b.T),
                                  mat(b.mask, b.B, b.T), b.w, out2(g1, b.B, b.T), o);
    const auto l2 = pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T), mat(b.ga, b.B, b.T),
                                  mat(b.mask, b.B, b.T), b.w, out2(g2, b.B, b.T), o);
    CHECK(l1.loss == l2.loss);
    CHECK(bitwise_equal(g1, g2));
}

TEST_CASE("copo_global_advantages: every single_prompt rule, and NaN by design under nan_singleton_coef") {
    const std::vector<double> r{1, 0, 1, 1};
    const std::vector<std::int64_t> ans{1, 2, 1, 1};
    std::vector<double> A(4);
    for (bool f32 : {false, true}) {
        INFO("float32 " << f32);
        adv::copo_options o;
        o.float32 = f32;
        o.single_prompt = adv::singleton::error;
        CHECK_THROWS_WITH_AS((void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, A, pt::none, o),
                             doctest::Contains("copo_global_advantages: argument 'groups'"), pt::invalid_argument);
        // Two prompts: error does not fire.
        CHECK_NOTHROW((void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{2}, A, pt::none, o));
        o.single_prompt = adv::singleton::raw;  // mean 0, std 1: R_g / (1 + eps)
        (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, A, pt::none, o);
        for (double x : A) CHECK(x == doctest::Approx(0.75 / (1 + 1e-6)).epsilon(1e-7));
        o.global_scale = adv::scale::none;
        (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, A, pt::none, o);
        for (double x : A) CHECK(x == 0.75);
        o.global_scale = adv::scale::group;
        o.single_prompt = adv::singleton::zero;
        (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, A, pt::none, o);
        for (double x : A) CHECK(x == 0.0);
        // A group of one row under nan_singleton_coef: R_g is NaN (the official arithmetic), not an error
        // raised under another function's name.
        o.reward_coef = true, o.nan_singleton_coef = true;
        const std::vector<std::int64_t> off{0, 1, 4};
        (void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::ragged(off), A, pt::none, o);
        CHECK(std::isnan(A[0]));
    }
    // Bad inputs are named by the entry function.
    const std::vector<double> nan_r{1, NAN, 1, 1};
    CHECK_THROWS_WITH_AS((void)adv::copo_global_advantages(pt::exec::seq, nan_r, ans, pt::uniform_groups{2}, A, pt::none),
                         doctest::Contains("copo_global_advantages: argument 'rewards'"), pt::invalid_argument);
    const std::vector<std::int64_t> short_ans{1, 2};
    CHECK_THROWS_WITH_AS((void)adv::copo_global_advantages(pt::exec::seq, r, short_ans, pt::uniform_groups{2}, A, pt::none),
                         doctest::Contains("copo_global_advantages: argument 'answers'"), pt::invalid_argument);
}

TEST_CASE("copo_blend_weights: non-finite entropy, advantage or reward is refused by name") {
    const std::vector<double> ok{0.5, 1.0}, bad{0.5, NAN};
    std::vector<double> w(2);
    CHECK_NOTHROW(adv::copo_blend_weights(pt::exec::seq, ok, ok, ok, w));
    CHECK_THROWS_WITH_AS(adv::copo_blend_weights(pt::exec::seq, bad, ok, ok, w), doctest::Contains("row_entropy"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::copo_blend_weights(pt::exec::seq, ok, bad, ok, w), doctest::Contains("local_advantages"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::copo_blend_weights(pt::exec::seq, ok, ok, bad, w), doctest::Contains("rewards"), pt::invalid_argument);
}

TEST_CASE("copo: bad input names the argument") {
    const std::vector<double> r{1, 0, 1, 0};
    const std::vector<std::int64_t> ans{1, 2, 3};
    std::vector<double> A(4), w(4);
    CHECK_THROWS_WITH_AS((void)adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{2}, A, pt::none),
                         doctest::Contains("answers"), pt::invalid_argument);
    const std::vector<std::int64_t> ans4{1, 2, 3, 4};
    CHECK_THROWS_WITH_AS((void)adv::copo_global_advantages(pt::exec::seq, r, ans4, pt::uniform_groups{2}, A, pt::none,
                                                           {.global_scale = adv::scale::batch}),
                         doctest::Contains("options.global_scale"), pt::invalid_argument);
    const std::vector<double> H{0, 1, 2};
    CHECK_THROWS_WITH_AS(adv::copo_blend_weights(pt::exec::seq, H, r, r, w), doctest::Contains("local_advantages"), pt::invalid_argument);
    auto b = make_batch(1);
    const std::vector<double> short_w(2, 0.5);
    CHECK_THROWS_WITH_AS((void)pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                             mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), short_w, pt::none),
                         doctest::Contains("local_weights"), pt::invalid_argument);
    std::vector<double> nan_w(b.w);
    nan_w[0] = std::nan("");
    CHECK_THROWS_WITH_AS((void)pl::copo_loss(pt::exec::seq, mat(b.lp, b.B, b.T), mat(b.old, b.B, b.T), mat(b.la, b.B, b.T),
                                             mat(b.ga, b.B, b.T), mat(b.mask, b.B, b.T), nan_w, pt::none),
                         doctest::Contains("local_weights"), pt::invalid_argument);
}

TEST_CASE("copo: outputs are checked (length, apart from one another or partly over an input) before writing") {
    const std::vector<double> r{1, 0, 1, 0, 1, 1, 0, 1};
    const std::vector<std::int64_t> ans{7, 7, 9, 9, 3, 3, 3, 3};
    std::vector<double> R(2, 7.0), short_out(1);
    CHECK_THROWS_WITH_AS(adv::copo_group_scores(pt::exec::seq, r, ans, pt::uniform_groups{4}, R, short_out),
                         doctest::Contains("'entropy': expected length"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::copo_group_scores(pt::exec::seq, r, ans, pt::uniform_groups{4}, R, R),
                         doctest::Contains("'global_reward': the output overlaps the input 'entropy'"), pt::invalid_argument);
    CHECK(R == std::vector<double>(2, 7.0));  // nothing written
    std::vector<double> a(8, 7.0);
    CHECK_THROWS_WITH_AS(adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, a, short_out),
                         doctest::Contains("'row_entropy': expected length"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::copo_global_advantages(pt::exec::seq, r, ans, pt::uniform_groups{4}, a, a),
                         doctest::Contains("'row_entropy': the output overlaps the input 'global_advantages'"), pt::invalid_argument);
    CHECK(a == std::vector<double>(8, 7.0));
    // copo_blend_weights: in place over an input is fine, a shifted view is not.
    std::vector<double> h{0.2, 0.9, 1.5, 0.1}, la{1, 0, -1, 1}, rw{1, 0, 1, 1}, w(3);
    const pt::tensor_view<const double, 1> h3(h.data(), 3);
    adv::copo_blend_weights(pt::exec::seq, h3, pt::tensor_view<const double, 1>(la.data(), 3), pt::tensor_view<const double, 1>(rw.data(), 3), w);
    auto hh = h;
    adv::copo_blend_weights(pt::exec::seq, pt::tensor_view<const double, 1>(hh.data(), 3), pt::tensor_view<const double, 1>(la.data(), 3),
                            pt::tensor_view<const double, 1>(rw.data(), 3), pt::tensor_view<double, 1>(hh.data(), 3));
    CHECK(std::vector<double>(hh.begin(), hh.begin() + 3) == w);
    CHECK_THROWS_WITH_AS(adv::copo_blend_weights(pt::exec::seq, pt::tensor_view<const double, 1>(h.data() + 1, 3),
                                                 pt::tensor_view<const double, 1>(la.data(), 3), pt::tensor_view<const double, 1>(rw.data(), 3),
                                                 pt::tensor_view<double, 1>(h.data(), 3)),
                         doctest::Contains("'weights': the output partly overlaps the input 'row_entropy'"), pt::invalid_argument);
    CHECK(h == std::vector<double>{0.2, 0.9, 1.5, 0.1});
}
