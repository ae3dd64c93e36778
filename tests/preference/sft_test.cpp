#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/sft.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

struct tokens {
    pt::index_t B, T;
    std::vector<double> p, m;
    pref::sequence_input input() const { return pref::sequence_input::tokens(matrix(p, B, T), matrix(m, B, T)); }
};

tokens random_tokens(pt::index_t B, pt::index_t T, std::uint64_t seed) {
    tokens x{B, T, {}, pt::test::random_mask(std::size_t(B), std::size_t(T), seed + 1)};
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-4.0, -0.01);
    x.p.resize(std::size_t(B * T));
    for (auto& v : x.p) v = lp(rng);
    return x;
}

template <class Policy = pt::exec::sequenced_policy>
pref::sft_result run(const tokens& x, std::vector<double>* g, const pref::sft_options& o, const Policy& policy = pt::exec::seq) {
    pref::sequence_grad sg;
    if (g) sg = matrix(*g, x.B, x.T);
    return pref::sft(policy, x.input(), sg, o);
}

}  // namespace

TEST_CASE("sft: hand-computed token mean and sequence mean") {
    // Row 0: tokens -1, -2 valid; row 1: -3 valid, one padding token holding NaN.
    const tokens x{2, 2, {-1.0, -2.0, -3.0, nan_v}, {1, 1, 1, 0}};
    std::vector<double> g(4);
    const auto t = run(x, &g, pref::sft_options::trl());
    CHECK(t.loss == 2.0);  // (1 + 2 + 3) / 3
    CHECK(t.tokens == 3.0);
    CHECK(t.sequences == 2);
    CHECK(g == std::vector<double>{-1.0 / 3, -1.0 / 3, -1.0 / 3, 0.0});
    const auto s = run(x, &g, {.normalization = pref::sft_normalization::sequence_mean, .grad_scale = 2.0});
    CHECK(s.loss == doctest::Approx((1.5 + 3.0) / 2).epsilon(1e-15));
    CHECK(g == std::vector<double>{2.0 * -1.0 / 4, 2.0 * -1.0 / 4, 2.0 * -1.0 / 2, 0.0});
    // Global normalizers (data-parallel): the token count or the response count of every rank.
    CHECK(run(x, nullptr, {.normalizer = 12}).loss == 0.5);
    CHECK(run(x, nullptr, {.normalization = pref::sft_normalization::sequence_mean, .normalizer = 9}).loss == 0.5);
    // sequence_sum (SLiC-HF's regulariser): -(1/B) sum_i S_i, and it needs no lengths.
    const auto q = run(x, &g, {.normalization = pref::sft_normalization::sequence_sum});
    CHECK(q.loss == 3.0);
    CHECK(g == std::vector<double>{-0.5, -0.5, -0.5, 0.0});
    const std::vector<double> S{-3.0, -3.0};
    std::vector<double> gs(2);
    CHECK(pref::sft(pt::exec::seq, pref::sequence_input::sums(S), gs, {.normalization = pref::sft_normalization::sequence_sum}).loss == 3.0);
    CHECK(gs == std::vector<double>{-0.5, -0.5});
}

TEST_CASE("sft: gradient matches central finite differences") {
    auto x = random_tokens(5, 9, 4);
    for (pt::index_t t = 0; t < 9; ++t) x.m[std::size_t(2 * 9 + t)] = 0;  // an empty response
    for (auto mode : {pref::sft_normalization::token_mean, pref::sft_normalization::sequence_mean,
                      pref::sft_normalization::sequence_sum})
        for (double normalizer : {0.0, 50.0}) {
            const pref::sft_options o{.normalization = mode, .normalizer = normalizer, .grad_scale = -0.7};
            std::vector<double> g(x.p.size());
            (void)run(x, &g, o);
            const double h = 1e-6;
            for (std::size_t j = 0; j < x.p.size(); ++j) {
                auto xp = x, xm = x;
                xp.p[j] += h, xm.p[j] -= h;
                const double fd = (run(xp, nullptr, o).loss - run(xm, nullptr, o).loss) / (2 * h);
                INFO("mode " << int(mode) << " j " << j);
                CHECK(g[j] == doctest::Approx(-0.7 * fd).epsilon(1e-7));
            }
        }
}

TEST_CASE("sft: sums with lengths give the token form; zero tokens give 0") {
    const auto x = random_tokens(4, 6, 8);
    std::vector<double> S(4, 0.0), n(4, 0.0);
    pref::sequence_log_probs(pt::exec::seq, matrix(x.p, 4, 6), matrix(x.m, 4, 6), S, n);
    for (auto mode : {pref::sft_normalization::token_mean, pref::sft_normalization::sequence_mean}) {
        std::vector<double> g(4), gt(24);
        const auto r = pref::sft(pt::exec::seq, pref::sequence_input::sums(S, n), g, {.normalization = mode});
        const auto rt = run(x, &gt, {.normalization = mode});
        CHECK(r.loss == doctest::Approx(rt.loss).epsilon(1e-14));
        for (std::size_t i = 0; i < 4; ++i)
            for (std::size_t t = 0; t < 6; ++t)
                if (x.m[i * 6 + t] != 0) CHECK(g[i] == doctest::Approx(gt[i * 6 + t]).epsilon(1e-14));
    }
    // No valid token at all: loss 0 and gradient 0 (TRL's cross-entropy would be 0/0).
    const tokens empty{2, 3, {-1, -1, -1, -1, -1, -1}, {0, 0, 0, 0, 0, 0}};
    std::vector<double> g(6, 5.0);
    const auto r = run(empty, &g, {});
    CHECK(r.loss == 0.0);
    CHECK(r.tokens == 0.0);
    CHECK(g == std::vector<double>(6, 0.0));
}

TEST_CASE_TEMPLATE("sft: every host policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto x = random_tokens(61, 700, 12);
    for (auto mode : {pref::sft_normalization::token_mean, pref::sft_normalization::sequence_mean}) {
        std::vector<double> g0(x.p.size()), g1(x.p.size());
        const auto r0 = run(x, &g0, {.normalization = mode});
        const auto r1 = run(x, &g1, {.normalization = mode}, Backend::policy());
        CHECK(std::memcmp(&r0.loss, &r1.loss, sizeof(double)) == 0);
        CHECK(pt::test::bitwise_equal(g0, g1));
    }
}

TEST_CASE("sft: bad input raises naming the function and the argument") {
    auto raises = [](auto&& f, const std::string& argument, const std::string& what) {
        pt::test::expect_error(f, "posttrain::preference::sft", argument, what);
    };
    auto x = random_tokens(2, 3, 1);
    x.m[0] = 1;
    x.p[0] = nan_v;
    raises([&] { (void)run(x, nullptr, {}); }, "chosen", "non-finite");
    const std::vector<double> S{-1.0, -2.0};
    raises([&] { (void)pref::sft(pt::exec::seq, pref::sequence_input::sums(S), pt::none, {}); }, "chosen", "lengths");
    raises([&] { (void)pref::sft(pt::exec::seq, {}, pt::none, {}); }, "chosen", "required");
    const auto y = random_tokens(2, 3, 2);
    raises([&] { (void)run(y, nullptr, {.normalization = pref::sft_normalization(5)}); }, "options", "sft_normalization");
    raises([&] { (void)run(y, nullptr, {.normalizer = -1}); }, "options", "normalizer");
    raises([&] { (void)run(y, nullptr, {.grad_scale = nan_v}); }, "options", "grad_scale");
    std::vector<double> wrong(5);
    raises([&] { (void)pref::sft(pt::exec::seq, y.input(), wrong, {}); }, "grad", "[B, T]");
}

TEST_CASE_TEMPLATE("sft: responses of T = 0 tokens with a [B, 0] gradient (empty rows, no element to touch)", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    // Every std::vector here is empty (data() == nullptr): the broadcast must not form a reference to
    // element (i, 0) of a row that has none (UBSan: reference binding to null pointer, sequence.hpp
    // write_token_grad). Run under -fsanitize=undefined -fno-sanitize-recover to see it fail.
    std::vector<double> lp, m, g;
    const auto r = pref::sft(Backend::policy(), pref::sequence_input::tokens(matrix(lp, 3, 0), matrix(m, 3, 0)), matrix(g, 3, 0));
    CHECK(r.loss == 0.0);
    CHECK(r.tokens == 0.0);
    CHECK(r.sequences == 3);
}
