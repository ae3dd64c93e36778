#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gae.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using posttrain::index_t;
using pt::test::matrix;

namespace {

// The reference, written as the closed form rather than as the recurrence: A_t is the
// (gamma*lambda)-discounted sum of the TD errors from t on, over the tokens the convention keeps.
// Binary masks. Returns (advantages, returns).
struct reference_result {
    std::vector<double> a, ret;
};
reference_result reference_gae(const std::vector<double>& r, const std::vector<double>& v, const std::vector<double>& m,
                               index_t N, index_t T, double gamma, double lambda, adv::gae_masking mode) {
    reference_result out{std::vector<double>(r.size()), std::vector<double>(r.size())};
    const double gl = gamma * lambda;
    for (index_t i = 0; i < N; ++i) {
        auto at = [&](const std::vector<double>& x, index_t t) { return x[std::size_t(i * T + t)]; };
        if (mode == adv::gae_masking::carry) {
            std::vector<index_t> valid;
            for (index_t t = 0; t < T; ++t)
                if (at(m, t) != 0) valid.push_back(t);
            const std::size_t n = valid.size();
            std::vector<double> delta(n), A(n);
            for (std::size_t k = 0; k < n; ++k) {
                const double next = k + 1 < n ? at(v, valid[k + 1]) : 0.0;
                delta[k] = at(r, valid[k]) + gamma * next - at(v, valid[k]);
            }
            for (std::size_t k = 0; k < n; ++k) {
                double s = 0, w = 1;
                for (std::size_t l = k; l < n; ++l, w *= gl) s += w * delta[l];
                A[k] = s;
            }
            for (index_t t = 0; t < T; ++t) {
                // a masked token carries the advantage of the next valid one (0 after the last)
                double a = 0;
                for (std::size_t k = 0; k < n; ++k)
                    if (valid[k] >= t) {
                        a = A[k];
                        break;
                    }
                out.a[std::size_t(i * T + t)] = a;
                out.ret[std::size_t(i * T + t)] = a + at(v, t);
            }
        } else {
            const bool zero = mode == adv::gae_masking::zero;
            auto rr = [&](index_t t) { return zero ? at(r, t) * at(m, t) : at(r, t); };
            auto vv = [&](index_t t) { return t >= T ? 0.0 : (zero ? at(v, t) * at(m, t) : at(v, t)); };
            for (index_t t = 0; t < T; ++t) {
                double s = 0, w = 1;
                for (index_t k = t; k < T; ++k, w *= gl) s += w * (rr(k) + gamma * vv(k + 1) - vv(k));
                out.a[std::size_t(i * T + t)] = s;
                out.ret[std::size_t(i * T + t)] = s + vv(t);
            }
        }
    }
    return out;
}

double max_rel_error(const std::vector<double>& got, const std::vector<double>& want) {
    double worst = 0;
    for (std::size_t k = 0; k < got.size(); ++k) {
        const double e = std::abs(got[k] - want[k]) / (1.0 + std::abs(want[k]));
        worst = e > worst ? e : worst;
    }
    return worst;
}

// Random data with interior mask zeros (observation tokens), a fully masked row, right padding.
struct batch {
    index_t N, T;
    std::vector<double> r, v, m;
};
batch random_batch(index_t N, index_t T, std::uint64_t seed) {
    batch b{N, T, pt::test::random_rewards(std::size_t(N * T), seed), pt::test::random_rewards(std::size_t(N * T), seed + 1),
            pt::test::random_mask(std::size_t(N), std::size_t(T), seed + 2)};
    if (N > 2)
        for (index_t t = 0; t < T; ++t) b.m[std::size_t(2 * T + t)] = 0;  // fully masked row
    if (N > 3)
        for (index_t t = T / 2; t < T; ++t) b.m[std::size_t(3 * T + t)] = 0;  // right padding
    return b;
}

adv::gae_options plain(adv::gae_masking mode, double gamma, double lambda) {
    adv::gae_options o;
    o.gamma = gamma;
    o.lambda = lambda;
    o.masking = mode;
    o.whiten = false;
    o.mask_output = false;
    return o;
}

constexpr adv::gae_masking all_modes[] = {adv::gae_masking::carry, adv::gae_masking::zero, adv::gae_masking::none};

}  // namespace

TEST_CASE("gae: one row by hand, the three masking conventions") {
    // rewards [0, 1, 0, 2], values [1, 2, 3, 4], mask [1, 0, 1, 1], gamma 0.5, lambda 1
    std::vector<double> r{0, 1, 0, 2}, v{1, 2, 3, 4}, m{1, 0, 1, 1}, a(4), ret(4);
    (void)adv::gae(pt::exec::seq, matrix(r, 1, 4), matrix(v, 1, 4), matrix(m, 1, 4), matrix(a, 1, 4), matrix(ret, 1, 4),
                   plain(adv::gae_masking::carry, 0.5, 1.0));
    // t=3: delta = 2 - 4 = -2; t=2: delta = 0 + 0.5*4 - 3 = -1, A = -1 + 0.5*-2 = -2
    // t=1 masked: carries A = -2; t=0: delta = 0 + 0.5*3 - 1 = 0.5 (V_next skips the masked token), A = 0.5 - 1 = -0.5
    CHECK(a == std::vector<double>{-0.5, -2, -2, -2});
    CHECK(ret == std::vector<double>{0.5, 0, 1, 2});
    (void)adv::gae(pt::exec::seq, matrix(r, 1, 4), matrix(v, 1, 4), matrix(m, 1, 4), matrix(a, 1, 4), matrix(ret, 1, 4),
                   plain(adv::gae_masking::zero, 0.5, 1.0));
    // masked token: r = V = 0; t=1: delta = 0 + 0.5*3 - 0 = 1.5, A = 1.5 - 1 = 0.5; t=0: delta = 0 + 0 - 1, A = -1 + 0.25
    CHECK(a == std::vector<double>{-0.75, 0.5, -2, -2});
    CHECK(ret == std::vector<double>{0.25, 0.5, 1, 2});
    (void)adv::gae(pt::exec::seq, matrix(r, 1, 4), matrix(v, 1, 4), matrix(m, 1, 4), matrix(a, 1, 4), matrix(ret, 1, 4),
                   plain(adv::gae_masking::none, 0.5, 1.0));
    CHECK(a[1] == 1 + 0.5 * 3 - 2 - 1.0);  // the masked token counts as any other
}

TEST_CASE_TEMPLATE("gae: the closed form, every convention, interior zeros and fully masked rows", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const index_t N = 37, T = 29;
    const auto b = random_batch(N, T, 11);
    for (auto mode : all_modes)
        for (auto [gamma, lambda] : {std::pair{1.0, 1.0}, std::pair{0.99, 0.95}, std::pair{0.9, 0.0}, std::pair{0.0, 0.5}}) {
            CAPTURE(int(mode));
            CAPTURE(gamma);
            CAPTURE(lambda);
            std::vector<double> a(b.r.size()), ret(b.r.size());
            const auto st = adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                                     matrix(ret, N, T), plain(mode, gamma, lambda));
            CHECK(st.count == 0.0);  // no whitening
            const auto want = reference_gae(b.r, b.v, b.m, N, T, gamma, lambda, mode);
            CHECK(max_rel_error(a, want.a) < 1e-13);
            CHECK(max_rel_error(ret, want.ret) < 1e-13);
        }
}

TEST_CASE_TEMPLATE("gae: par equals seq bit for bit, with whitening and every preset", Backend, POSTTRAIN_HOST_BACKENDS) {
    const index_t N = 301, T = 97;  // > the parallel grain, and N not a multiple of the interleave
    auto b = random_batch(N, T, 21);
    for (auto o : {adv::gae_options{}, adv::gae_options::verl(0.99, 0.95), adv::gae_options::openrlhf(0.99, 0.95),
                   adv::gae_options::nemo(), adv::gae_options::trl()}) {
        std::vector<double> a(b.r.size()), ret(b.r.size()), a_seq(b.r.size()), ret_seq(b.r.size());
        const auto st = adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                                 matrix(ret, N, T), o);
        const auto st_seq = adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T),
                                     matrix(a_seq, N, T), matrix(ret_seq, N, T), o);
        CHECK(pt::test::bitwise_equal(a, a_seq));
        CHECK(pt::test::bitwise_equal(ret, ret_seq));
        CHECK(st.mean == st_seq.mean);
        CHECK(st.variance == st_seq.variance);
    }
}

TEST_CASE("gae: interleaved rows give the bits of rows run one at a time") {
    const index_t N = 11, T = 23;
    const auto b = random_batch(N, T, 31);
    const auto o = plain(adv::gae_masking::carry, 0.97, 0.9);
    std::vector<double> a(b.r.size()), ret(b.r.size());
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T), o);
    for (index_t i = 0; i < N; ++i) {
        const auto row = [&](const std::vector<double>& x) {
            return std::vector<double>(x.begin() + i * T, x.begin() + (i + 1) * T);
        };
        std::vector<double> r = row(b.r), v = row(b.v), m = row(b.m), a1(static_cast<std::size_t>(T)), ret1(static_cast<std::size_t>(T));
        (void)adv::gae(pt::exec::seq, matrix(r, 1, T), matrix(v, 1, T), matrix(m, 1, T), matrix(a1, 1, T), matrix(ret1, 1, T), o);
        CHECK(pt::test::bitwise_equal(a1, row(a)));
        CHECK(pt::test::bitwise_equal(ret1, row(ret)));
    }
}

TEST_CASE_TEMPLATE("gae: chunked rows agree with the plain recurrence and are policy independent", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const index_t N = 3, T = 5000;
    const auto b = random_batch(N, T, 41);
    for (auto mode : all_modes)
        for (bool decoupled : {false, true}) {
            CAPTURE(int(mode));
            auto o = plain(mode, 0.999, 0.97);
            if (decoupled) o.lambda_value = 1.0;
            std::vector<double> a(b.r.size()), ret(b.r.size()), a0(b.r.size()), ret0(b.r.size()), a_seq(b.r.size()),
                ret_seq(b.r.size());
            (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a0, N, T),
                           matrix(ret0, N, T), o);
            o.time_chunk = 333;  // not a divisor of T: the last chunk is short
            (void)adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                           matrix(ret, N, T), o);
            (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a_seq, N, T),
                           matrix(ret_seq, N, T), o);
            CHECK(pt::test::bitwise_equal(a, a_seq));
            CHECK(pt::test::bitwise_equal(ret, ret_seq));
            CHECK(max_rel_error(a, a0) < 1e-12);
            CHECK(max_rel_error(ret, ret0) < 1e-12);
            // chunk boundaries change only the incoming states, so the last chunk of a row is exact
            for (index_t i = 0; i < N; ++i)
                for (index_t t = 333 * 15; t < T; ++t) CHECK(a[std::size_t(i * T + t)] == a0[std::size_t(i * T + t)]);
        }
    // a chunk at least as long as the row is the plain recurrence
    auto o = plain(adv::gae_masking::carry, 0.99, 0.95);
    std::vector<double> a(b.r.size()), a0(b.r.size());
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a0, N, T), pt::none, o);
    o.time_chunk = T;
    (void)adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), pt::none, o);
    CHECK(pt::test::bitwise_equal(a, a0));
}

TEST_CASE_TEMPLATE("gae: per-row and length-adaptive lambdas, decoupled returns", Backend, POSTTRAIN_HOST_BACKENDS) {
    const index_t N = 9, T = 17;
    const auto b = random_batch(N, T, 51);
    auto o = plain(adv::gae_masking::carry, 0.99, 0.9);
    std::vector<double> lambdas{0.0, 0.5, 1.0, 0.95, 0.3, 0.99, 0.7, 0.1, 0.8};
    std::vector<double> a(b.r.size()), ret(b.r.size());
    (void)adv::gae_per_row_lambda(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), lambdas,
                                  matrix(a, N, T), matrix(ret, N, T), o);
    std::vector<double> a1(b.r.size()), ret1(b.r.size());
    for (index_t i = 0; i < N; ++i) {
        auto oi = o;
        oi.lambda = lambdas[std::size_t(i)];
        (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a1, N, T), pt::none, oi);
        for (index_t t = 0; t < T; ++t) CHECK(a[std::size_t(i * T + t)] == a1[std::size_t(i * T + t)]);
    }
    // the returns come from the options' lambda
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a1, N, T), matrix(ret1, N, T), o);
    CHECK(pt::test::bitwise_equal(ret, ret1));

    // decoupled: advantages from lambda, returns from lambda_value
    auto od = o;
    od.lambda_value = 1.0;
    std::vector<double> ad(b.r.size()), retd(b.r.size()), a_v(b.r.size()), ret_v(b.r.size());
    (void)adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(ad, N, T),
                   matrix(retd, N, T), od);
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a_v, N, T), matrix(ret_v, N, T),
                   plain(adv::gae_masking::carry, 0.99, 1.0));
    CHECK(pt::test::bitwise_equal(ad, a1));
    CHECK(pt::test::bitwise_equal(retd, ret_v));

    // VAPO: lambda_i = clamp(1 - 1/max(alpha * len_i, 1), 0, 1)
    auto ol = o;
    ol.length_adaptive_alpha = 0.05;
    std::vector<double> lens(static_cast<std::size_t>(N)), la(static_cast<std::size_t>(N));
    for (index_t i = 0; i < N; ++i) {
        for (index_t t = 0; t < T; ++t) lens[std::size_t(i)] += b.m[std::size_t(i * T + t)];
        const double x = std::max(0.05 * lens[std::size_t(i)], 1.0);
        la[std::size_t(i)] = std::clamp(1.0 - 1.0 / x, 0.0, 1.0);
    }
    (void)adv::gae(Backend::policy(), matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T), ol);
    (void)adv::gae_per_row_lambda(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), la, matrix(a1, N, T),
                                  matrix(ret1, N, T), o);
    CHECK(pt::test::bitwise_equal(a, a1));
    CHECK(pt::test::bitwise_equal(ret, ret1));
    CHECK(adv::detail::length_adaptive_lambda(0.05, 10) == 0.0);   // alpha * len < 1
    CHECK(adv::detail::length_adaptive_lambda(0.5, 10) == 0.8);
}

TEST_CASE("gae: whitening is masked_whiten of the raw advantages; returns stay raw") {
    const index_t N = 6, T = 10;
    const auto b = random_batch(N, T, 61);
    for (auto o : {adv::gae_options::verl(0.99, 0.95), adv::gae_options::openrlhf(1.0, 0.95), adv::gae_options::nemo(),
                   adv::gae_options::trl()}) {
        auto raw = o;
        raw.whiten = false;
        raw.mask_output = false;
        std::vector<double> a(b.r.size()), ret(b.r.size()), a0(b.r.size()), ret0(b.r.size()), w(b.r.size());
        const auto st = adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                                 matrix(ret, N, T), o);
        (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a0, N, T),
                       matrix(ret0, N, T), raw);
        auto wo = o.whitening;
        wo.mask_output = o.mask_output;
        const auto st0 = adv::masked_whiten(pt::exec::seq, matrix(a0, N, T), matrix(b.m, N, T), matrix(w, N, T), wo);
        CHECK(pt::test::bitwise_equal(a, w));
        CHECK(pt::test::bitwise_equal(ret, ret0));
        CHECK(st.mean == st0.mean);
        CHECK(st.count == st0.count);
    }
    // verl does not re-mask: the fully masked row 2 keeps (A - mean) * rstd, not 0
    std::vector<double> a(b.r.size()), ret(b.r.size());
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T),
                   adv::gae_options::verl());
    CHECK(a[std::size_t(2 * T)] != 0.0);
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T),
                   adv::gae_options::nemo());
    for (index_t t = 0; t < T; ++t) CHECK(a[std::size_t(2 * T + t)] == 0.0);
}

TEST_CASE("gae: mask_output without whitening zeroes the masked advantages only") {
    const index_t N = 4, T = 8;
    const auto b = random_batch(N, T, 71);
    auto o = plain(adv::gae_masking::carry, 1.0, 0.95);
    std::vector<double> a(b.r.size()), ret(b.r.size()), a0(b.r.size()), ret0(b.r.size());
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a0, N, T), matrix(ret0, N, T), o);
    o.mask_output = true;
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T), o);
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == a0[k] * b.m[k]);
    CHECK(pt::test::bitwise_equal(ret, ret0));
}

TEST_CASE("gae: float tensors, integer masks, T = 1, B = 0, no returns") {
    const index_t N = 5, T = 7;
    const auto b = random_batch(N, T, 81);
    std::vector<float> rf(b.r.begin(), b.r.end()), vf(b.v.begin(), b.v.end()), af(b.r.size()), retf(b.r.size());
    std::vector<std::int64_t> mi(b.m.begin(), b.m.end());
    std::vector<double> a(b.r.size());
    const auto o = plain(adv::gae_masking::zero, 0.99, 0.95);
    (void)adv::gae(pt::exec::seq, matrix(rf, N, T), matrix(vf, N, T), matrix(mi, N, T), matrix(af, N, T), matrix(retf, N, T), o);
    std::vector<double> rd(rf.begin(), rf.end()), vd(vf.begin(), vf.end());
    (void)adv::gae(pt::exec::seq, matrix(rd, N, T), matrix(vd, N, T), matrix(b.m, N, T), matrix(a, N, T), pt::none, o);
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(af[k] == static_cast<float>(a[k]));  // double accumulation

    // T = 1: A = r - V (carry: times nothing, the token is its own row end)
    std::vector<double> r1{2, 3}, v1{0.5, 1}, m1{1, 0}, a1(2), ret1(2);
    (void)adv::gae(pt::exec::seq, matrix(r1, 2, 1), matrix(v1, 2, 1), matrix(m1, 2, 1), matrix(a1, 2, 1), matrix(ret1, 2, 1),
                   plain(adv::gae_masking::carry, 0.9, 0.9));
    CHECK(a1 == std::vector<double>{1.5, 0.0});
    CHECK(ret1 == std::vector<double>{2.0, 1.0});

    // B = 0 and T = 0
    std::vector<double> e;
    const auto st = adv::gae(pt::exec::par, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), pt::none);
    CHECK(st.count == 0.0);
    CHECK_THROWS_AS((void)adv::gae(pt::exec::seq, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), pt::none,
                                   adv::gae_options::verl()),
                    pt::invalid_argument);  // verl's masked_whiten raises on an empty mask
    (void)adv::gae(pt::exec::seq, matrix(e, 3, 0), matrix(e, 3, 0), matrix(e, 3, 0), matrix(e, 3, 0), pt::none);
}

TEST_CASE("gae: bad input names the argument") {
    const index_t N = 3, T = 4;
    const auto b = random_batch(N, T, 91);
    std::vector<double> a(b.r.size()), ret(b.r.size()), lam{0.5, 0.5, 0.5};
    auto message = [&](auto&& call) -> std::string {
        try {
            call();
        } catch (const pt::invalid_argument& e) {
            return e.what();
        }
        return "no exception";
    };
    auto run = [&](const adv::gae_options& o) {
        (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), matrix(ret, N, T), o);
    };
    CHECK(message([&] {
              (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, T, N), matrix(b.m, N, T), matrix(a, N, T), pt::none);
          }).find("'values'") != std::string::npos);
    CHECK(message([&] {
              (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                             matrix(ret, T, N));
          }).find("'returns'") != std::string::npos);
    CHECK(message([&] {
              (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T),
                             matrix(a, N, T));
          }).find("'returns'") != std::string::npos);  // returns alias the advantages
    adv::gae_options o;
    o.gamma = 1.5;
    CHECK(message([&] { run(o); }).find("'options.gamma'") != std::string::npos);
    o = {};
    o.lambda = -0.1;
    CHECK(message([&] { run(o); }).find("'options.lambda'") != std::string::npos);
    o = {};
    o.lambda = std::nan("");
    CHECK(message([&] { run(o); }).find("'options.lambda'") != std::string::npos);
    o = {};
    o.lambda_value = 2.0;
    CHECK(message([&] { run(o); }).find("'options.lambda_value'") != std::string::npos);
    o = {};
    o.length_adaptive_alpha = -1;
    CHECK(message([&] { run(o); }).find("'options.length_adaptive_alpha'") != std::string::npos);
    o = {};
    o.time_chunk = -1;
    CHECK(message([&] { run(o); }).find("'options.time_chunk'") != std::string::npos);
    o = {};
    o.nonfinite_inputs = adv::nonfinite::ignore;
    CHECK(message([&] { run(o); }).find("'options.nonfinite_inputs'") != std::string::npos);
    lam[1] = 1.5;
    CHECK(message([&] {
              (void)adv::gae_per_row_lambda(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), lam,
                                            matrix(a, N, T), pt::none);
          }).find("'lambdas'") != std::string::npos);
    lam.pop_back();
    CHECK(message([&] {
              (void)adv::gae_per_row_lambda(pt::exec::seq, matrix(b.r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), lam,
                                            matrix(a, N, T), pt::none);
          }).find("'lambdas'") != std::string::npos);

    // non-finite values: raised with the first bad index; propagated on request
    auto v = b.v;
    v[std::size_t(1 * T + 2)] = std::nan("");
    const std::string msg = message([&] {
        (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(v, N, T), matrix(b.m, N, T), matrix(a, N, T), pt::none);
    });
    CHECK(msg.find("'values'") != std::string::npos);
    CHECK(msg.find("[1, 2]") != std::string::npos);
    auto r = b.r;
    r[0] = std::numeric_limits<double>::infinity();
    CHECK(message([&] {
              (void)adv::gae(pt::exec::par, matrix(r, N, T), matrix(b.v, N, T), matrix(b.m, N, T), matrix(a, N, T), pt::none);
          }).find("'token_rewards'") != std::string::npos);
    o = plain(adv::gae_masking::carry, 1.0, 1.0);
    o.nonfinite_inputs = adv::nonfinite::propagate;
    (void)adv::gae(pt::exec::seq, matrix(b.r, N, T), matrix(v, N, T), matrix(b.m, N, T), matrix(a, N, T), pt::none, o);
    CHECK(std::isnan(a[std::size_t(1 * T)]));
    // values large enough to overflow are finite input: no error
    std::vector<double> big(b.r.size(), 1e308), one(b.r.size(), 1.0);
    (void)adv::gae(pt::exec::seq, matrix(big, N, T), matrix(one, N, T), matrix(one, N, T), matrix(a, N, T), pt::none,
                   plain(adv::gae_masking::carry, 1.0, 1.0));
    CHECK(!std::isfinite(a[0]));  // (1 - m) * inf is NaN in the frameworks too
}
