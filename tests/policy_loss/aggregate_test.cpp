// policy_loss::aggregate and count_tokens: every mode by hand, global normalizers and multipliers,
// the row-mean and empty-row variants, a zero divisor, finite differences, seq == par bitwise, garbage
// at masked positions, mask dtypes, presets and bad options.

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/aggregate.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pl::aggregation;
using pt::index_t;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

pl::aggregation_options mode(aggregation a) {
    pl::aggregation_options o;
    o.mode = a;
    return o;
}

const aggregation all_modes[] = {aggregation::token_mean, aggregation::token_sum, aggregation::seq_mean_token_mean,
                                 aggregation::seq_mean_token_sum, aggregation::seq_mean_token_sum_norm};

// A spread of options: every mode, with and without the global normalizers, multipliers and variants.
std::vector<pl::aggregation_options> option_grid() {
    std::vector<pl::aggregation_options> out;
    for (aggregation a : all_modes) {
        for (int v = 0; v < 4; ++v) {
            pl::aggregation_options o = mode(a);
            if (v == 1) o.global_tokens = 123, o.global_sequences = 17, o.multiplier = 4;
            if (v == 2) o.row_denominator = pl::row_mean::plus_epsilon, o.empty = pl::empty_rows::counted, o.norm_constant = 50;
            if (v == 3) o.row_denominator = pl::row_mean::at_least_one, o.norm_per_sequence = true, o.multiplier = 0.125;
            out.push_back(o);
        }
    }
    return out;
}

// Random [B, T] losses and a mask with right padding, interior zeros, fractional weights and (row 1)
// a fully masked row.
void random_batch(index_t B, index_t T, std::uint64_t seed, std::vector<double>& L, std::vector<double>& m) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0, 1);
    L.resize(std::size_t(B * T));
    m.resize(std::size_t(B * T));
    for (index_t i = 0; i < B; ++i) {
        const index_t len = i == 1 ? 0 : 1 + index_t(u(rng) * double(T));
        for (index_t t = 0; t < T; ++t) {
            const std::size_t k = std::size_t(i * T + t);
            L[k] = 4 * u(rng) - 2;
            const double c = u(rng);
            m[k] = t < len ? (c < 0.15 ? 0.0 : (c < 0.25 ? 0.5 : 1.0)) : 0.0;
        }
    }
}

template <class F>
void expect_invalid(F&& f, const std::string& fn, const std::string& argument, const std::string& words) {
    try {
        f();
        FAIL_CHECK("no posttrain::invalid_argument (expected one naming '" << argument << "')");
    } catch (const pt::invalid_argument& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(e.argument() == argument);
        CHECK(e.function() == fn);
        CHECK(what.find("'" + argument + "'") != std::string::npos);
        CHECK(what.find(words) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("aggregate: every mode on a 3x3 batch by hand") {
    // L = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], mask = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]: row sums 3 and 4
    // over n = (2, 1, 0) tokens; 3 tokens, 2 non-empty rows of 3; T = 3. Masked positions hold garbage.
    const std::vector<double> L{1, 2, nan_v, 4, inf_v, -inf_v, nan_v, 1e308, -7};
    const std::vector<double> M{1, 1, 0, 1, 0, 0, 0, 0, 0};
    struct expect {
        const char* label;
        pl::aggregation_options o;
        double loss, g0, g1;  // the loss and the gradient on rows 0 and 1 (row 2 and masked: 0)
        double divisor, sequences;
    };
    auto with = [](aggregation a, auto f) {
        pl::aggregation_options o = mode(a);
        f(o);
        return o;
    };
    using pl::empty_rows;
    using pl::row_mean;
    const double e = 1e-8;
    const expect cases[] = {
        // token_mean: 7 / 3.
        {"token_mean", mode(aggregation::token_mean), 7.0 / 3, 1.0 / 3, 1.0 / 3, 3, 2},
        // token_mean over 10 global tokens, times 2 ranks: 2 * 7 / 10.
        {"token_mean global 10 x2", with(aggregation::token_mean, [](auto& o) { o.global_tokens = 10, o.multiplier = 2; }),
         1.4, 0.2, 0.2, 10, 2},
        // token_sum ignores the global normalizers: 7 (x 2).
        {"token_sum", mode(aggregation::token_sum), 7, 1, 1, 1, 2},
        {"token_sum x2", with(aggregation::token_sum, [](auto& o) { o.multiplier = 2, o.global_tokens = 99; }), 14, 2, 2, 1, 2},
        // seq_mean_token_mean: (3/2 + 4/1) / 2 = 2.75; d/dL = 1 / (n_i * 2).
        {"seq_mean_token_mean", mode(aggregation::seq_mean_token_mean), 2.75, 0.25, 0.5, 2, 2},
        {"seq_mean_token_mean plus_epsilon",
         with(aggregation::seq_mean_token_mean, [](auto& o) { o.row_denominator = row_mean::plus_epsilon; }),
         (3 / (2 + e) + 4 / (1 + e)) / 2, 1 / (2 + e) / 2, 1 / (1 + e) / 2, 2, 2},
        {"seq_mean_token_mean at_least_one",
         with(aggregation::seq_mean_token_mean, [](auto& o) { o.row_denominator = row_mean::at_least_one; }), 2.75, 0.25,
         0.5, 2, 2},
        // Counting the empty row as a sequence: 5.5 / 3.
        {"seq_mean_token_mean counted", with(aggregation::seq_mean_token_mean, [](auto& o) { o.empty = empty_rows::counted; }),
         5.5 / 3, 1.0 / 6, 1.0 / 3, 3, 3},
        // Global sequences 4, multiplier 3: 3 * 5.5 / 4.
        {"seq_mean_token_mean global 4 x3",
         with(aggregation::seq_mean_token_mean, [](auto& o) { o.global_sequences = 4, o.multiplier = 3, o.global_tokens = 99; }),
         3 * 5.5 / 4, 3.0 / 8, 3.0 / 4, 4, 2},
        // seq_mean_token_sum: 7 / 2; counted 7 / 3; global 8 x 0.5: 7 / 16.
        {"seq_mean_token_sum", mode(aggregation::seq_mean_token_sum), 3.5, 0.5, 0.5, 2, 2},
        {"seq_mean_token_sum counted", with(aggregation::seq_mean_token_sum, [](auto& o) { o.empty = empty_rows::counted; }),
         7.0 / 3, 1.0 / 3, 1.0 / 3, 3, 3},
        {"seq_mean_token_sum global 8 x0.5",
         with(aggregation::seq_mean_token_sum, [](auto& o) { o.global_sequences = 8, o.multiplier = 0.5; }), 7.0 / 16,
         1.0 / 16, 1.0 / 16, 8, 2},
        // seq_mean_token_sum_norm: divided by T = 3, by norm_constant 10, times the sequences if asked.
        {"seq_mean_token_sum_norm T", mode(aggregation::seq_mean_token_sum_norm), 7.0 / 3, 1.0 / 3, 1.0 / 3, 3, 2},
        {"seq_mean_token_sum_norm 10", with(aggregation::seq_mean_token_sum_norm, [](auto& o) { o.norm_constant = 10; }), 0.7,
         0.1, 0.1, 10, 2},
        {"seq_mean_token_sum_norm T per sequence",
         with(aggregation::seq_mean_token_sum_norm, [](auto& o) { o.norm_per_sequence = true; }), 7.0 / 6, 1.0 / 6,
         1.0 / 6, 6, 2},
        {"seq_mean_token_sum_norm 4 per sequence counted",
         with(aggregation::seq_mean_token_sum_norm,
              [](auto& o) { o.norm_constant = 4, o.norm_per_sequence = true, o.empty = empty_rows::counted; }),
         7.0 / 12, 1.0 / 12, 1.0 / 12, 12, 3},
        {"seq_mean_token_sum_norm 4 per global sequence 5 x2",
         with(aggregation::seq_mean_token_sum_norm,
              [](auto& o) { o.norm_constant = 4, o.norm_per_sequence = true, o.global_sequences = 5, o.multiplier = 2; }),
         0.7, 0.1, 0.1, 20, 2},
        // Without norm_per_sequence the sequence count does not enter.
        {"seq_mean_token_sum_norm 4, global sequences unused",
         with(aggregation::seq_mean_token_sum_norm, [](auto& o) { o.norm_constant = 4, o.global_sequences = 5; }), 1.75,
         0.25, 0.25, 4, 2},
    };
    for (const expect& c : cases) {
        CAPTURE(c.label);
        std::vector<double> g(9, 12345.0);
        const auto r = pl::aggregate(pt::exec::seq, matrix(L, 3, 3), matrix(M, 3, 3), matrix(g, 3, 3), c.o);
        CHECK(r.loss == doctest::Approx(c.loss).epsilon(1e-15));
        CHECK(r.tokens == 3);
        CHECK(r.sequences == c.sequences);
        CHECK(r.divisor == c.divisor);
        for (int k = 0; k < 9; ++k) {
            CAPTURE(k);
            const double want = M[std::size_t(k)] == 0 ? 0.0 : (k < 3 ? c.g0 : c.g1);
            CHECK(g[std::size_t(k)] == doctest::Approx(want).epsilon(1e-15));
            if (want == 0) CHECK(g[std::size_t(k)] == 0.0);
        }
        // Without a gradient output: the same result.
        const auto r2 = pl::aggregate(pt::exec::seq, matrix(L, 3, 3), matrix(M, 3, 3), pt::none, c.o);
        CHECK(r2.loss == r.loss);
        CHECK(r2.divisor == r.divisor);
    }
}

TEST_CASE("aggregate: fractional mask weights and the row-mean denominators") {
    // mask = [[0.5, 0, 0], [1, 1, 0], [0, 0, 0]]: n = (0.5, 2, 0), 2.5 tokens, 2 sequences.
    // L row 0 = 1 (weighted 0.5), row 1 = 4 + 5 = 9.
    const std::vector<double> L{1, 2, 3, 4, 5, 6, 7, 8, 9}, M{0.5, 0, 0, 1, 1, 0, 0, 0, 0};
    std::vector<double> g(9);
    auto go = [&](pl::aggregation_options o) {
        return pl::aggregate(pt::exec::seq, matrix(L, 3, 3), matrix(M, 3, 3), matrix(g, 3, 3), o);
    };
    // token_mean: (0.5 + 9) / 2.5 = 3.8, d/dL = weight / 2.5.
    auto r = go(mode(aggregation::token_mean));
    CHECK(r.loss == doctest::Approx(3.8).epsilon(1e-15));
    CHECK(r.tokens == 2.5);
    CHECK(g[0] == doctest::Approx(0.2).epsilon(1e-15));
    CHECK(g[3] == doctest::Approx(0.4).epsilon(1e-15));
    // seq_mean_token_mean exact: (0.5 / 0.5 + 9 / 2) / 2 = 2.75; row 0's weight 0.5 / (0.5 * 2) = 0.5.
    pl::aggregation_options o = mode(aggregation::seq_mean_token_mean);
    r = go(o);
    CHECK(r.loss == doctest::Approx(2.75).epsilon(1e-15));
    CHECK(g[0] == doctest::Approx(0.5).epsilon(1e-15));
    CHECK(g[3] == doctest::Approx(0.25).epsilon(1e-15));
    // at_least_one (TRL's clamp(min=1)): row 0 divides by 1: (0.5 + 4.5) / 2 = 2.5, weight 0.25.
    o.row_denominator = pl::row_mean::at_least_one;
    r = go(o);
    CHECK(r.loss == doctest::Approx(2.5).epsilon(1e-15));
    CHECK(g[0] == doctest::Approx(0.25).epsilon(1e-15));
    CHECK(g[3] == doctest::Approx(0.25).epsilon(1e-15));
    // plus_epsilon (verl): n + 1e-8, visible at 1e-8 relative.
    o.row_denominator = pl::row_mean::plus_epsilon;
    r = go(o);
    CHECK(r.loss == doctest::Approx((0.5 / (0.5 + 1e-8) + 9 / (2 + 1e-8)) / 2).epsilon(1e-15));
    CHECK(r.loss != 2.75);
    // count_tokens sees the same counts.
    const auto c = pl::count_tokens(pt::exec::seq, matrix(M, 3, 3));
    CHECK(c.tokens == 2.5);
    CHECK(c.sequences == 2);
    CHECK(c.rows == 3);
}

TEST_CASE("aggregate: a zero divisor gives loss 0 and gradient 0, never NaN") {
    std::vector<double> L{1, nan_v, 3, inf_v, 5, 6}, M(6, 0.0), g(6, 7.0);
    for (aggregation a : all_modes) {
        for (bool counted : {false, true}) {
            CAPTURE(int(a));
            CAPTURE(counted);
            pl::aggregation_options o = mode(a);
            o.empty = counted ? pl::empty_rows::counted : pl::empty_rows::excluded;
            o.multiplier = 3;
            const auto r = pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 2, 3), matrix(g, 2, 3), o);
            CHECK(r.loss == 0.0);
            CHECK(r.tokens == 0.0);
            for (double x : g) CHECK(x == 0.0);
            // The divisors that have nothing to count are 0 (token_mean, sequence means of an uncounted batch).
            if (a == aggregation::token_mean || (!counted && (a == aggregation::seq_mean_token_mean ||
                                                               a == aggregation::seq_mean_token_sum)))
                CHECK(r.divisor == 0.0);
        }
    }
    // T = 0: seq_mean_token_sum_norm divides by T = 0; B = 0: nothing at all.
    std::vector<double> e;
    for (aggregation a : all_modes) {
        CAPTURE(int(a));
        auto r = pl::aggregate(pt::exec::seq, matrix(e, 3, 0), matrix(e, 3, 0), matrix(e, 3, 0), mode(a));
        CHECK(r.loss == 0.0);
        r = pl::aggregate(pt::exec::par.with_threads(4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), mode(a));
        CHECK(r.loss == 0.0);
        CHECK(r.sequences == 0.0);
    }
    pl::aggregation_options o = mode(aggregation::seq_mean_token_sum_norm);
    CHECK(pl::aggregate(pt::exec::seq, matrix(e, 3, 0), matrix(e, 3, 0), pt::none, o).divisor == 0.0);
    const auto c = pl::count_tokens(pt::exec::seq, matrix(e, 0, 4));
    CHECK(c.tokens == 0);
    CHECK(c.sequences == 0);
    CHECK(c.rows == 0);
}

TEST_CASE("aggregate: gradient = central finite differences") {
    std::vector<double> L, M;
    random_batch(6, 7, 5, L, M);
    for (const auto& o : option_grid()) {
        CAPTURE(int(o.mode));
        CAPTURE(o.multiplier);
        std::vector<double> g(L.size());
        (void)pl::aggregate(pt::exec::seq, matrix(L, 6, 7), matrix(M, 6, 7), matrix(g, 6, 7), o);
        const double h = 1e-6;
        for (std::size_t k = 0; k < L.size(); ++k) {
            auto at = [&](double s) {
                std::vector<double> x = L;
                x[k] += s;
                return pl::aggregate(pt::exec::seq, matrix(x, 6, 7), matrix(M, 6, 7), pt::none, o).loss;
            };
            const double fd = (at(h) - at(-h)) / (2 * h);
            CHECK(std::fabs(fd - g[k]) <= 1e-8 + 1e-7 * std::fabs(g[k]));
        }
    }
}

TEST_CASE("aggregate: grad_scale multiplies the gradient only") {
    std::vector<double> L, M;
    random_batch(5, 6, 9, L, M);
    for (const auto& o : option_grid()) {
        std::vector<double> g1(L.size()), g2(L.size());
        const auto r1 = pl::aggregate(pt::exec::seq, matrix(L, 5, 6), matrix(M, 5, 6), matrix(g1, 5, 6), o);
        const auto r2 = pl::aggregate(pt::exec::seq, matrix(L, 5, 6), matrix(M, 5, 6), matrix(g2, 5, 6), o, -0.5);
        CHECK(r1.loss == r2.loss);
        for (std::size_t k = 0; k < L.size(); ++k) CHECK(g2[k] == doctest::Approx(-0.5 * g1[k]).epsilon(1e-15));
    }
}

TEST_CASE_TEMPLATE("aggregate: every policy gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    // 257 x 129 is above the parallel grain: exec::par splits the rows.
    const index_t B = 257, T = 129;
    std::vector<double> L, M;
    random_batch(B, T, 13, L, M);
    for (const auto& o : option_grid()) {
        CAPTURE(int(o.mode));
        std::vector<double> gs(L.size()), gp(L.size());
        const auto rs = pl::aggregate(pt::exec::seq, matrix(L, B, T), matrix(M, B, T), matrix(gs, B, T), o);
        const auto rp = pl::aggregate(Backend::policy(), matrix(L, B, T), matrix(M, B, T), matrix(gp, B, T), o);
        CHECK(rs.loss == rp.loss);
        CHECK(rs.tokens == rp.tokens);
        CHECK(rs.sequences == rp.sequences);
        CHECK(rs.divisor == rp.divisor);
        CHECK(pt::test::bitwise_equal(gs, gp));
    }
    const auto cs = pl::count_tokens(pt::exec::seq, matrix(M, B, T));
    const auto cp = pl::count_tokens(Backend::policy(), matrix(M, B, T));
    CHECK(cs.tokens == cp.tokens);
    CHECK(cs.sequences == cp.sequences);
    CHECK(cs.rows == double(B));
}

TEST_CASE_TEMPLATE("aggregate: masked positions never leak, whatever they hold", Backend, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> L, M;
    random_batch(9, 11, 17, L, M);
    std::vector<double> dirty = L;
    const double garbage[] = {nan_v, inf_v, -inf_v, 1e308, -1e308};
    for (std::size_t k = 0; k < L.size(); ++k)
        if (M[k] == 0) dirty[k] = garbage[k % 5];
    for (const auto& o : option_grid()) {
        std::vector<double> gc(L.size()), gd(L.size());
        const auto rc = pl::aggregate(Backend::policy(), matrix(L, 9, 11), matrix(M, 9, 11), matrix(gc, 9, 11), o);
        const auto rd = pl::aggregate(Backend::policy(), matrix(dirty, 9, 11), matrix(M, 9, 11), matrix(gd, 9, 11), o);
        CHECK(std::isfinite(rc.loss));
        CHECK(rc.loss == rd.loss);
        CHECK(pt::test::bitwise_equal(gc, gd));
        for (std::size_t k = 0; k < L.size(); ++k)
            if (M[k] == 0) CHECK(gc[k] == 0.0);
    }
}

TEST_CASE("aggregate: bool, integer and float masks, float losses") {
    std::vector<double> L, M;
    random_batch(6, 5, 21, L, M);
    for (double& m : M) m = m != 0 ? 1.0 : 0.0;  // 0/1 so that every dtype holds it
    const std::size_t n = M.size();
    std::unique_ptr<bool[]> mb(new bool[n]);
    std::vector<std::int64_t> mi(n);
    std::vector<std::int32_t> mi32(n);
    std::vector<float> mf(n);
    std::vector<std::uint8_t> mu(n);
    for (std::size_t k = 0; k < n; ++k) {
        mb[k] = M[k] != 0, mi[k] = std::int64_t(M[k]), mi32[k] = std::int32_t(M[k]), mf[k] = float(M[k]);
        mu[k] = std::uint8_t(M[k]);
    }
    const auto o = mode(aggregation::seq_mean_token_mean);
    std::vector<double> g_ref(n);
    const auto r_ref = pl::aggregate(pt::exec::seq, matrix(L, 6, 5), matrix(M, 6, 5), matrix(g_ref, 6, 5), o);
    auto check_mask = [&](auto mask_view) {
        std::vector<double> g(n);
        const auto r = pl::aggregate(pt::exec::seq, matrix(L, 6, 5), mask_view, matrix(g, 6, 5), o);
        CHECK(r.loss == r_ref.loss);
        CHECK(r.tokens == r_ref.tokens);
        CHECK(pt::test::bitwise_equal(g, g_ref));
        const auto c = pl::count_tokens(pt::exec::seq, mask_view);
        CHECK(c.tokens == r_ref.tokens);
    };
    check_mask(pt::tensor_view<const bool, 2>(mb.get(), 6, 5));
    check_mask(matrix(mi, 6, 5));
    check_mask(matrix(mi32, 6, 5));
    check_mask(matrix(mf, 6, 5));
    check_mask(matrix(mu, 6, 5));
    // float losses and a float gradient: the double computation, rounded once.
    std::vector<float> Lf(L.begin(), L.end()), gf(n);
    std::vector<double> Ld(Lf.begin(), Lf.end()), gd(n);
    const auto rf = pl::aggregate(pt::exec::seq, matrix(Lf, 6, 5), matrix(M, 6, 5), matrix(gf, 6, 5), o);
    const auto rd = pl::aggregate(pt::exec::seq, matrix(Ld, 6, 5), matrix(M, 6, 5), matrix(gd, 6, 5), o);
    CHECK(rf.loss == doctest::Approx(rd.loss).epsilon(1e-6));
    for (std::size_t k = 0; k < n; ++k) CHECK(double(gf[k]) == doctest::Approx(gd[k]).epsilon(1e-6));
}

TEST_CASE("aggregate: framework presets") {
    using o = pl::aggregation_options;
    // verl: dp_size multiplies except under seq_mean_token_sum_norm, whose divisor is loss_scale_factor.
    auto v = o::verl(aggregation::token_mean, 8, 1000, 64, 0);
    CHECK(v.multiplier == 8);
    CHECK(v.global_tokens == 1000);
    CHECK(v.global_sequences == 64);
    CHECK(v.row_denominator == pl::row_mean::plus_epsilon);
    CHECK(v.empty == pl::empty_rows::excluded);
    v = o::verl(aggregation::seq_mean_token_sum_norm, 8, 1000, 64, 512);
    CHECK(v.multiplier == 1);
    CHECK(v.norm_constant == 512);
    CHECK(!v.norm_per_sequence);
    const auto a = o::verl_agent(aggregation::seq_mean_token_mean);
    CHECK(a.empty == pl::empty_rows::counted);
    CHECK(a.row_denominator == pl::row_mean::exact);
    CHECK(a.multiplier == 1);
    auto r = o::openrlhf(true, 4, 300, 16);
    CHECK(r.mode == aggregation::token_mean);
    CHECK(r.multiplier == 4);
    CHECK(r.global_tokens == 300);
    r = o::openrlhf(false);
    CHECK(r.mode == aggregation::seq_mean_token_mean);
    CHECK(r.row_denominator == pl::row_mean::exact);
    // The default: token_mean over this batch's tokens.
    const o d;
    CHECK(d.mode == aggregation::token_mean);
    CHECK(d.multiplier == 1);
    CHECK(d.global_tokens == 0);
}

TEST_CASE("aggregate: bad options and arguments raise invalid_argument naming them") {
    std::vector<double> L(6, 1.0), M(6, 1.0), g(6), small(4, 1.0);
    const char* fn = "posttrain::policy_loss::aggregate";
    auto bad = [&](auto set, const std::string& words) {
        pl::aggregation_options o;
        set(o);
        expect_invalid([&] { (void)pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 2, 3), matrix(g, 2, 3), o); },
                       fn, "options.aggregation", words);
    };
    bad([](auto& o) { o.global_tokens = -1; }, "global_tokens");
    bad([](auto& o) { o.global_tokens = nan_v; }, "global_tokens");
    bad([](auto& o) { o.global_sequences = -2; }, "global_sequences");
    bad([](auto& o) { o.global_sequences = nan_v; }, "global_sequences");
    bad([](auto& o) { o.norm_constant = -1; }, "norm_constant");
    bad([](auto& o) { o.norm_constant = nan_v; }, "norm_constant");
    bad([](auto& o) { o.multiplier = inf_v; }, "multiplier");
    bad([](auto& o) { o.multiplier = nan_v; }, "multiplier");
    bad([](auto& o) { o.mode = static_cast<aggregation>(9); }, "aggregation mode");
    const pl::aggregation_options ok;
    expect_invalid([&] { (void)pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 3, 2), matrix(g, 2, 3), ok); }, fn,
                   "mask", "shape");
    expect_invalid([&] { (void)pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 2, 3), matrix(small, 2, 2), ok); },
                   fn, "grad_loss_mat", "shape");
    expect_invalid([&] { (void)pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 2, 3), matrix(L, 2, 3), ok); }, fn,
                   "grad_loss_mat", "overlaps");
    expect_invalid([&] { (void)pl::aggregate(pt::exec::seq, matrix(L, 2, 3), matrix(M, 2, 3), matrix(M, 2, 3), ok); }, fn,
                   "grad_loss_mat", "overlaps");
}
