// posttrain::logits::token_log_probs (forward and backward) against a direct two-pass double
// reference, the vectorised exp against std::exp, and the SIMD loops against the portable ones bit for
// bit (this file is also built with -march=native -mprefer-vector-width=512: tests/CMakeLists.txt).

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/logits/token_log_probs.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/gradient.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // the SIMD tests hold eight-double vectors
#endif

namespace pt = posttrain;
namespace lg = posttrain::logits;
using pt::index_t;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

template <class T>
pt::tensor_view<const T, 3> cube(const std::vector<T>& v, index_t b, index_t t, index_t n) {
    return pt::tensor_view<const T, 3>(v.data(), b, t, n);
}
template <class T>
pt::tensor_view<T, 3> cube(std::vector<T>& v, index_t b, index_t t, index_t n) {
    return pt::tensor_view<T, 3>(v.data(), b, t, n);
}

// Bits of a double as an integer, for ulp distances.
std::int64_t ordered_bits(double x) {
    std::int64_t b;
    std::memcpy(&b, &x, sizeof b);
    return b < 0 ? std::numeric_limits<std::int64_t>::min() - b : b;
}
std::int64_t ulps(double a, double b) {
    const std::int64_t d = ordered_bits(a) - ordered_bits(b);
    return d < 0 ? -d : d;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return pt::test::bitwise_equal(a, b);
}

// The direct reference of one position: two passes in double with std::exp.
struct reference {
    double log_p = 0, entropy = 0, lse = 0, one_minus_p = 1;
};
reference reference_of(const double* z, index_t V, index_t y) {
    double m = -inf_v;
    for (index_t v = 0; v < V; ++v) m = std::max(m, z[v]);
    double s = 0, rest = 0, a = 0;
    for (index_t v = 0; v < V; ++v) {
        const double e = std::exp(z[v] - m);
        s += e;
        if (v != y) rest += e;
        if (e != 0) a += e * (z[v] - m);
    }
    reference r;
    r.lse = m + std::log(s);
    r.entropy = std::log(s) - a / s;
    if (y >= 0) {
        r.log_p = z[y] == m ? -std::log1p(rest) : z[y] - m - std::log(s);
        r.one_minus_p = rest / s;
    }
    return r;
}

// dL/dz for L = gl log p_y + gh H of one position (double reference, textbook form).
std::vector<double> reference_grad(const double* z, index_t V, index_t y, double gl, double gh) {
    const reference r = reference_of(z, V, y);
    std::vector<double> g(static_cast<std::size_t>(V));
    for (index_t v = 0; v < V; ++v) {
        const double lp = z[v] - r.lse, p = std::exp(lp);
        g[std::size_t(v)] = (v == y ? gl * r.one_minus_p : -gl * p) - (p == 0 ? 0.0 : gh * p * (r.entropy + lp));
    }
    return g;
}

struct problem {
    index_t B, T, V;
    std::vector<double> z;
    std::vector<std::int64_t> y;
};

// Random logits (normal, scale `scale`, plus `offset`), ~10% -inf entries, ~25% ignored positions whose
// logits are NaN; some labels are the argmax of a position lifted far above the rest (p_y ~ 1).
problem random_problem(index_t B, index_t T, index_t V, double scale, double offset, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0, scale);
    std::uniform_int_distribution<std::int64_t> lab(0, V - 1);
    std::bernoulli_distribution skip(0.25), masked(0.1), peak(0.2);
    problem p{B, T, V, std::vector<double>(std::size_t(B * T * V)), std::vector<std::int64_t>(std::size_t(B * T))};
    for (auto& x : p.z) x = masked(rng) ? -inf_v : offset + n(rng);
    for (index_t i = 0; i < B * T; ++i) {
        double* zi = &p.z[std::size_t(i * V)];
        std::int64_t& y = p.y[std::size_t(i)];
        y = lab(rng);
        if (skip(rng)) {
            y = -100;
            for (index_t v = 0; v < V; ++v) zi[v] = nan_v;
            continue;
        }
        if (zi[y] == -inf_v) zi[y] = offset;  // a label of probability 0 is tested apart
        if (peak(rng)) zi[y] = offset + 40 + 10 * scale;  // p_y = 1 - O(e^-40): 1 - p_y must stay exact
    }
    return p;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
    return std::vector<T>(v.begin(), v.end());
}

}  // namespace

TEST_CASE("vector_exp: within 1 ulp of std::exp, the scalar and SIMD forms bit-identical") {
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> wide(-760.0, 720.0), narrow(-2.0, 2.0);
    std::vector<double> xs = {0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300, 709.78, 709.79, -708.4, -745.13, -745.2, -746.0,
                              -1000.0, 1000.0, -inf_v, inf_v, nan_v, 0.34657359027997264, -0.34657359027997264};
    for (int j = 0; j < 200000; ++j) xs.push_back(j % 2 ? wide(rng) : narrow(rng));
    while (xs.size() % 8) xs.push_back(0.5);
    std::int64_t worst = 0;
    for (double x : xs) {
        const double e = lg::detail::vexp(x), r = std::exp(x);
        if (std::isnan(x)) {
            CHECK(std::isnan(e));
            continue;
        }
        worst = std::max(worst, ulps(e, r));
    }
    CHECK(worst <= 1);
    CHECK(lg::detail::vexp(0.0) == 1.0);
    CHECK(lg::detail::vexp(-inf_v) == 0.0);
    CHECK(lg::detail::vexp(inf_v) == inf_v);
#if POSTTRAIN_LOGITS_SIMD
    bool same = true;
    for (std::size_t j = 0; j < xs.size(); j += 8) {
        lg::detail::d8 x, e;
        std::memcpy(&x, &xs[j], sizeof x);
        lg::detail::vexp(x, e);
        for (int l = 0; l < 8; ++l) {
            const double s = lg::detail::vexp(xs[j + std::size_t(l)]), v = e[l];
            same &= std::memcmp(&s, &v, sizeof s) == 0;
        }
    }
    CHECK(same);
#endif
}

#if POSTTRAIN_LOGITS_SIMD
TEST_CASE_TEMPLATE("token_log_probs: the SIMD chunk and gradient loops give the portable loops' bits", Z, float, double) {
    std::mt19937_64 rng(5);
    std::normal_distribution<double> n(0, 4);
    std::bernoulli_distribution masked(0.15);
    for (index_t len : {1, 5, 8, 9, 16, 31, 64, 77}) {
        std::vector<Z> z(static_cast<std::size_t>(len));
        for (auto& x : z) x = masked(rng) ? Z(-inf_v) : Z(n(rng));
        for (index_t label : {index_t(-1), index_t(0), len / 2, len - 1})
            for (bool ent : {false, true}) {
                lg::detail::softmax_state<double> a, b;
                CHECK(lg::detail::chunk_state_simd(z.data(), len, label, ent, a) == -1);
                CHECK(lg::detail::chunk_state_portable(z.data(), len, label, ent, b) == -1);
                CHECK(std::memcmp(&a, &b, sizeof a) == 0);
            }
        std::vector<Z> g1(static_cast<std::size_t>(len)), g2(static_cast<std::size_t>(len));
        const auto r1 = lg::detail::grad_block_simd(z.data(), len, g1.data(), 2.4, 0.1, 1.25, 0.75, -0.5);
        const auto r2 = lg::detail::grad_block_portable(z.data(), len, g2.data(), 2.4, 0.1, 1.25, 0.75, -0.5);
        CHECK(same_bits(g1, g2));
        CHECK(r1.bad == r2.bad);
        CHECK(r1.any_finite == r2.any_finite);
    }
}
#endif

TEST_CASE_TEMPLATE("token_log_probs: log-prob, entropy and lse against the two-pass reference, every chunk edge", Z, float,
                   double) {
    for (double offset : {0.0, 1e4, -3e4})
        for (index_t V : {1, 2, 7, 8, 16, 17, 33}) {
            const auto p = random_problem(3, 5, V, 3.0, offset, std::uint64_t(V) * 7 + std::uint64_t(offset != 0));
            const std::vector<Z> z = cast<Z>(p.z);
            const std::vector<double> zd(z.begin(), z.end());  // the reference sees the logits the kernel reads
            for (index_t chunk : {index_t(1), index_t(3), index_t(8), V, V > 1 ? V - 1 : 1, index_t(16), index_t(2048)}) {
                lg::token_log_probs_options o;
                o.chunk = chunk;
                std::vector<double> lp(15, 42.0), h(15, 42.0), lse(15, 42.0);
                lg::token_log_probs(pt::exec::seq, cube(z, 3, 5, V), matrix(p.y, 3, 5), matrix(lp, 3, 5), matrix(h, 3, 5),
                                    matrix(lse, 3, 5), o);
                for (index_t i = 0; i < 15; ++i) {
                    const std::size_t s = std::size_t(i);
                    if (p.y[s] == -100) {
                        CHECK(lp[s] == 0.0);
                        CHECK(h[s] == 0.0);
                        CHECK(lse[s] == 0.0);
                        continue;
                    }
                    const reference r = reference_of(&zd[s * std::size_t(V)], V, p.y[s]);
                    CHECK(lp[s] <= 0.0);
                    // log p_y near 0 (p_y ~ 1) is -(1 - p_y) to first order: relative accuracy there too.
                    CHECK(std::fabs(lp[s] - r.log_p) <= 1e-13 * std::fabs(r.log_p) + 1e-300);
                    CHECK(std::fabs(h[s] - r.entropy) <= 1e-12 * std::fabs(r.entropy) + 1e-14);
                    CHECK(std::fabs(lse[s] - r.lse) <= 1e-15 * std::fabs(r.lse) + 1e-14);
                }
            }
        }
}

TEST_CASE("token_log_probs: p_y ~ 1 keeps 1 - p_y exact, -inf entries have probability 0, empty shapes") {
    // log p_y = -log1p(e^-50) = -1.9287e-22: a two-pass 1 - exp(...) would give 0.
    const std::vector<double> z = {50.0, 0.0, -inf_v, -inf_v, 3.0, -inf_v};
    const std::vector<std::int64_t> y = {0, 1};
    std::vector<double> lp(2), h(2), lse(2);
    lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2), matrix(h, 1, 2), matrix(lse, 1, 2));
    CHECK(lp[0] == doctest::Approx(-std::exp(-50.0)).epsilon(1e-14));
    CHECK(lp[1] == 0.0);  // the other entries are masked out: p_y = 1 exactly
    CHECK(h[1] == 0.0);
    CHECK(lse[1] == 3.0);
    // The gradient of log p_y at the label is 1 - p_y = e^-50 / (1 + e^-50), exactly representable in
    // relative terms; the masked entries get exactly 0.
    std::vector<double> g(6, 42.0);
    const std::vector<double> up = {1.0, 1.0};
    lg::token_log_probs_backward(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2), pt::none, cube(g, 1, 2, 3));
    CHECK(g[0] == doctest::Approx(std::exp(-50.0)).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx(-std::exp(-50.0)).epsilon(1e-14));
    CHECK(g[2] == 0.0);
    CHECK(g[3] == 0.0);
    CHECK(g[4] == 0.0);
    CHECK(g[5] == 0.0);
    // V = 1: log p = 0, H = 0, lse = z.
    const std::vector<double> one = {7.5};
    const std::vector<std::int64_t> y0 = {0};
    std::vector<double> a(1), b(1), c(1);
    lg::token_log_probs(pt::exec::seq, cube(one, 1, 1, 1), matrix(y0, 1, 1), matrix(a, 1, 1), matrix(b, 1, 1), matrix(c, 1, 1));
    CHECK(a[0] == 0.0);
    CHECK(b[0] == 0.0);
    CHECK(c[0] == 7.5);
    // T = 0 and B = 0: nothing to do, nothing raised.
    const std::vector<double> none_z;
    const std::vector<std::int64_t> none_y;
    std::vector<double> none_o, none_g;
    lg::token_log_probs(pt::exec::par, cube(none_z, 2, 0, 5), matrix(none_y, 2, 0), matrix(none_o, 2, 0));
    lg::token_log_probs(pt::exec::seq, cube(none_z, 0, 3, 5), matrix(none_y, 0, 3), matrix(none_o, 0, 3), matrix(none_o, 0, 3));
    lg::token_log_probs_backward(pt::exec::seq, cube(none_z, 0, 3, 5), matrix(none_y, 0, 3), matrix(none_o, 0, 3),
                                 matrix(none_o, 0, 3), cube(none_g, 0, 3, 5));
}

TEST_CASE_TEMPLATE("token_log_probs: logits masked with the dtype's lowest value (finfo.min) give the -inf masks' results", Z,
                   float, double) {
    // masked_fill(mask, torch.finfo(dtype).min): a chunk that is all mask has its maximum at -3.4e38
    // (-1.8e308 for double), and rescaling it to the live maximum must add exactly 0 (not
    // 0 * -inf = NaN). Chunks of 8: positions with whole chunks masked before, between and after the
    // live entries, one with only the label live, one with a masked chunk holding the label.
    const Z lowest = std::numeric_limits<Z>::lowest();
    const index_t B = 1, T = 4, V = 40;
    std::vector<double> live(std::size_t(B * T * V), -inf_v);
    const std::vector<std::int64_t> y = {20, 3, 0, 39};
    std::mt19937_64 rng(5);
    std::normal_distribution<double> n(0, 2);
    for (index_t v = 16; v < 24; ++v) live[std::size_t(v)] = n(rng);           // p0: chunk 2 live
    for (index_t v : {3, 30, 31}) live[std::size_t(V + v)] = n(rng);            // p1: chunks 0 and 3
    live[std::size_t(2 * V)] = 1.5;                                             // p2: only the label
    for (index_t v : {5, 39}) live[std::size_t(3 * V + v)] = 40.0 + n(rng);     // p3: label in chunk 4
    std::vector<Z> zi(live.begin(), live.end()), zm = zi;
    for (auto& x : zm)
        if (x == -std::numeric_limits<Z>::infinity()) x = lowest;
    const std::vector<double> gl = {0.5, -1.0, 2.0, 0.25}, gh = {-0.75, 1.5, 0.5, 1.0};
    for (index_t chunk : {index_t(8), index_t(2048)}) {
        lg::token_log_probs_options o;
        o.chunk = chunk;
        std::vector<double> out[2][3], hl[2][2], g[2][2];
        const std::vector<Z>* zs[2] = {&zi, &zm};
        for (int k = 0; k < 2; ++k) {
            const auto z = cube(*zs[k], B, T, V);
            for (auto& v : out[k]) v.assign(std::size_t(T), 42.0);
            for (auto& v : hl[k]) v.assign(std::size_t(T), 42.0);
            for (auto& v : g[k]) v.assign(std::size_t(B * T * V), 42.0);
            lg::token_log_probs(pt::exec::seq, z, matrix(y, B, T), matrix(out[k][0], B, T), matrix(out[k][1], B, T),
                                matrix(out[k][2], B, T), o);
            lg::token_log_probs(pt::exec::seq, z, pt::none, pt::none, matrix(hl[k][0], B, T), matrix(hl[k][1], B, T), o);
            lg::token_log_probs_backward(pt::exec::seq, z, matrix(y, B, T), matrix(gl, B, T), matrix(gh, B, T),
                                         cube(g[k][0], B, T, V), pt::none, pt::none, o);
            lg::token_log_probs_backward(pt::exec::seq, z, matrix(y, B, T), matrix(gl, B, T), matrix(gh, B, T),
                                         cube(g[k][1], B, T, V), matrix(out[k][2], B, T), matrix(out[k][1], B, T), o);
        }
        for (int i = 0; i < 3; ++i) CHECK(same_bits(out[0][i], out[1][i]));
        for (int i = 0; i < 2; ++i) CHECK(same_bits(hl[0][i], hl[1][i]));
        for (int i = 0; i < 2; ++i) CHECK(same_bits(g[0][i], g[1][i]));
        for (index_t t = 0; t < T; ++t) {
            const std::size_t s = std::size_t(t);
            const std::vector<double> zd(zi.begin() + std::ptrdiff_t(t * V), zi.begin() + std::ptrdiff_t((t + 1) * V));
            const reference r = reference_of(zd.data(), V, y[s]);
            CHECK(std::fabs(out[1][0][s] - r.log_p) <= 1e-13 * std::fabs(r.log_p) + 1e-300);
            CHECK(std::fabs(out[1][1][s] - r.entropy) <= 1e-12 * std::fabs(r.entropy) + 1e-14);
            CHECK(std::fabs(out[1][2][s] - r.lse) <= 1e-15 * std::fabs(r.lse) + 1e-14);
        }
        CHECK(out[1][0][2] == 0.0);  // only the label is live: p = 1
        CHECK(out[1][1][2] == 0.0);
    }
}

TEST_CASE("token_log_probs: outputs may be none, labels none gives entropy and lse only") {
    const auto p = random_problem(2, 4, 9, 2.0, 0.0, 11);
    std::vector<double> lp(8), h(8), lse(8), lp2(8), h2(8), lse2(8);
    lg::token_log_probs(pt::exec::seq, cube(p.z, 2, 4, 9), matrix(p.y, 2, 4), matrix(lp, 2, 4), matrix(h, 2, 4), matrix(lse, 2, 4));
    lg::token_log_probs(pt::exec::seq, cube(p.z, 2, 4, 9), matrix(p.y, 2, 4), matrix(lp2, 2, 4));
    CHECK(same_bits(lp, lp2));
    lg::token_log_probs(pt::exec::seq, cube(p.z, 2, 4, 9), matrix(p.y, 2, 4), pt::none, matrix(h2, 2, 4));
    CHECK(same_bits(h, h2));
    lg::token_log_probs(pt::exec::seq, cube(p.z, 2, 4, 9), matrix(p.y, 2, 4), pt::none, pt::none, matrix(lse2, 2, 4));
    CHECK(same_bits(lse, lse2));
    // Without labels every position is scored (so no NaN logits here): the entropy and lse of the
    // whole softmax.
    std::vector<double> z = p.z;
    for (auto& x : z)
        if (std::isnan(x)) x = 1.5;
    std::vector<double> he(8), le(8);
    lg::token_log_probs(pt::exec::seq, cube(z, 2, 4, 9), pt::none, pt::none, matrix(he, 2, 4), matrix(le, 2, 4));
    for (std::size_t s = 0; s < 8; ++s) {
        const reference r = reference_of(&z[s * 9], 9, -1);
        CHECK(he[s] == doctest::Approx(r.entropy).epsilon(1e-13));
        CHECK(le[s] == doctest::Approx(r.lse).epsilon(1e-15));
    }
}

TEST_CASE("token_log_probs: strided logits (non-contiguous vocabulary) give the contiguous bits") {
    const auto p = random_problem(2, 3, 21, 3.0, 100.0, 13);
    // The same logits as the V-slice of a [B, T, 2V] buffer with the vocabulary at stride 2.
    std::vector<float> wide(std::size_t(2 * 3 * 42), 1e30f), dense(p.z.begin(), p.z.end());
    for (std::size_t j = 0; j < dense.size(); ++j) wide[2 * j] = dense[j];
    const pt::tensor_view<const float, 3> zs(wide.data(), {2, 3, 21}, {3 * 42, 42, 2});
    lg::token_log_probs_options o;
    o.chunk = 8;
    std::vector<double> a(6), b(6), ha(6), hb(6);
    lg::token_log_probs(pt::exec::seq, zs, matrix(p.y, 2, 3), matrix(a, 2, 3), matrix(ha, 2, 3), pt::none, o);
    lg::token_log_probs(pt::exec::seq, cube(dense, 2, 3, 21), matrix(p.y, 2, 3), matrix(b, 2, 3), matrix(hb, 2, 3), pt::none, o);
    CHECK(same_bits(a, b));
    CHECK(same_bits(ha, hb));
    // And the backward into a strided gradient.
    std::vector<double> up = {1.0, -0.5, 2.0, 0.25, 1.0, 3.0}, uh = {0.5, 1.0, -1.0, 2.0, 0.0, 1.0};
    std::vector<float> gw(std::size_t(2 * 3 * 42), 9.0f), gd(126);
    const pt::tensor_view<float, 3> gs(gw.data(), {2, 3, 21}, {3 * 42, 42, 2});
    lg::token_log_probs_backward(pt::exec::seq, zs, matrix(p.y, 2, 3), matrix(up, 2, 3), matrix(uh, 2, 3), gs, pt::none,
                                 pt::none, o);
    lg::token_log_probs_backward(pt::exec::seq, cube(dense, 2, 3, 21), matrix(p.y, 2, 3), matrix(up, 2, 3), matrix(uh, 2, 3),
                                 cube(gd, 2, 3, 21), pt::none, pt::none, o);
    bool same = true;
    for (std::size_t j = 0; j < gd.size(); ++j) {
        same &= std::memcmp(&gw[2 * j], &gd[j], sizeof(float)) == 0;
        same &= gw[2 * j + 1] == 9.0f;  // the gaps are not written
    }
    CHECK(same);
}

TEST_CASE_TEMPLATE("token_log_probs: seq == par bitwise, forward and backward", Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto p = random_problem(6, 40, 130, 3.0, 0.0, 17);  // 31200 logits: above the parallel grain
    const std::vector<float> z = cast<float>(p.z);
    std::vector<float> lp(240), h(240), lse(240), lp0(240), h0(240), lse0(240);
    lg::token_log_probs_options o;
    o.chunk = 64;
    lg::token_log_probs(Backend::policy(), cube(z, 6, 40, 130), matrix(p.y, 6, 40), matrix(lp, 6, 40), matrix(h, 6, 40),
                        matrix(lse, 6, 40), o);
    lg::token_log_probs(pt::exec::seq, cube(z, 6, 40, 130), matrix(p.y, 6, 40), matrix(lp0, 6, 40), matrix(h0, 6, 40),
                        matrix(lse0, 6, 40), o);
    CHECK(same_bits(lp, lp0));
    CHECK(same_bits(h, h0));
    CHECK(same_bits(lse, lse0));
    std::vector<float> ul(240, 1.0f), uh(240, -0.5f), g(z.size()), g0(z.size());
    lg::token_log_probs_backward(Backend::policy(), cube(z, 6, 40, 130), matrix(p.y, 6, 40), matrix(ul, 6, 40),
                                 matrix(uh, 6, 40), cube(g, 6, 40, 130), matrix(lse, 6, 40), matrix(h, 6, 40), o);
    lg::token_log_probs_backward(pt::exec::seq, cube(z, 6, 40, 130), matrix(p.y, 6, 40), matrix(ul, 6, 40), matrix(uh, 6, 40),
                                 cube(g0, 6, 40, 130), matrix(lse, 6, 40), matrix(h, 6, 40), o);
    CHECK(same_bits(g, g0));
}

TEST_CASE("token_log_probs_backward: both upstreams, each alone, against the reference and central differences") {
    const index_t B = 2, T = 3, V = 11;
    auto p = random_problem(B, T, V, 2.0, 0.0, 19);
    const std::vector<double> ul = {1.0, -0.5, 2.0, 0.25, 1.5, -1.0}, uh = {0.5, 1.0, -1.0, 2.0, 0.75, -0.25};
    lg::token_log_probs_options o;
    o.chunk = 4;
    for (int which = 0; which < 3; ++which) {  // 0: both, 1: log-prob only, 2: entropy only
        const double wl = which == 2 ? 0.0 : 1.0, wh = which == 1 ? 0.0 : 1.0;
        std::vector<double> g(p.z.size(), 42.0), gs(p.z.size(), 42.0);
        std::vector<double> lse(6), h(6);
        lg::token_log_probs(pt::exec::seq, cube(p.z, B, T, V), matrix(p.y, B, T), pt::none, matrix(h, B, T), matrix(lse, B, T), o);
        auto run = [&](std::vector<double>& out, bool saved) {
            auto go = [&](const auto& gl, const auto& gh) {
                if (saved)
                    lg::token_log_probs_backward(pt::exec::seq, cube(p.z, B, T, V), matrix(p.y, B, T), gl, gh, cube(out, B, T, V),
                                                 matrix(lse, B, T), matrix(h, B, T), o);
                else
                    lg::token_log_probs_backward(pt::exec::seq, cube(p.z, B, T, V), matrix(p.y, B, T), gl, gh, cube(out, B, T, V),
                                                 pt::none, pt::none, o);
            };
            if (which == 0) go(matrix(ul, B, T), matrix(uh, B, T));
            if (which == 1) go(matrix(ul, B, T), pt::none);
            if (which == 2) go(pt::none, matrix(uh, B, T));
        };
        run(g, false);
        run(gs, true);
        std::vector<double> mask(p.z.size(), 1.0);
        for (index_t s = 0; s < B * T; ++s) {
            const std::size_t o0 = std::size_t(s * V);
            if (p.y[std::size_t(s)] == -100) {
                for (index_t v = 0; v < V; ++v) mask[o0 + std::size_t(v)] = 0.0;
                continue;
            }
            const auto r = reference_grad(&p.z[o0], V, p.y[std::size_t(s)], wl * ul[std::size_t(s)], wh * uh[std::size_t(s)]);
            for (index_t v = 0; v < V; ++v) {
                const std::size_t j = o0 + std::size_t(v);
                CHECK(std::fabs(g[j] - r[std::size_t(v)]) <= 1e-14 + 1e-13 * std::fabs(r[std::size_t(v)]));
                // Saved statistics: log p_v = z_v - lse (one rounding of lse) instead of (z_v - m) - log s.
                CHECK(std::fabs(g[j] - gs[j]) <= 1e-14 + 1e-13 * std::fabs(g[j]));
            }
        }
        // Central differences of L = sum (wl ul log p + wh uh H) (the NaN padding is left alone: masked).
        std::vector<double> x = p.z;
        auto f = [&]() {
            double L = 0;
            for (index_t s = 0; s < B * T; ++s) {
                if (p.y[std::size_t(s)] == -100) continue;
                const auto r = reference_of(&x[std::size_t(s * V)], V, p.y[std::size_t(s)]);
                L += wl * ul[std::size_t(s)] * r.log_p + wh * uh[std::size_t(s)] * r.entropy;
            }
            return L;
        };
        // -inf logits have gradient 0 and are not differenced (x +- h stays -inf).
        for (std::size_t j = 0; j < x.size(); ++j)
            if (x[j] == -inf_v) {
                CHECK(g[j] == 0.0);
                mask[j] = 0.0;
            }
        pt::test::check_gradient(x, g, f, &mask, {1e-6, 1e-8});
    }
}

// Far from 0, z_v - lse would carry half an ulp of lse into every log p_v (5.7e-14 at 1e3): where
// p_y ~ 1 the entropy gradient of the label, -gh p_y (H + log p_y), is a difference of two ~1e-9
// terms and lost 9e-5 of itself (found by the CUDA tests, whose device kernel already used the pair).
// The recomputing backward forms (z_v - m) - log s instead: within 1e-12 of a long double reference
// (the label: 1e-9).
TEST_CASE("token_log_probs_backward: logits at 1e3 and 1e4 with p_y ~ 1, against a long double reference") {
    for (const double offset : {1e3, 1e4}) {
        const index_t V = 300, y = 150;
        std::mt19937_64 rng(300);
        std::normal_distribution<double> n(0.0, 3.0);
        std::vector<double> z(static_cast<std::size_t>(V));
        for (auto& x : z) x = offset + n(rng);
        z[std::size_t(y)] = *std::max_element(z.begin(), z.end()) + 25.0;
        // log p_v = (z_v - m) - log s in long double (z_v - m exact), not z_v - lse: lse rounded to a
        // long double would still carry 5e-16 at 1e4.
        long double m = z[0], s = 0, H = 0;
        for (double x : z) m = std::max<long double>(m, x);
        for (double x : z) s += std::exp(static_cast<long double>(x) - m);
        const long double log_s = std::log(s);
        auto log_p = [&](double x) { return (static_cast<long double>(x) - m) - log_s; };
        for (double x : z) H -= std::exp(log_p(x)) * log_p(x);
        for (int labels = 0; labels < 2; ++labels) {
            const double gl = 0.75, gh = -0.5;
            std::vector<double> g(z.size());
            const std::vector<std::int64_t> yy = {y};
            const std::vector<double> ul = {gl}, uh = {gh};
            if (labels)
                lg::token_log_probs_backward(pt::exec::seq, cube(z, 1, 1, V), matrix(yy, 1, 1), matrix(ul, 1, 1), matrix(uh, 1, 1),
                                             cube(g, 1, 1, V));
            else
                lg::token_log_probs_backward(pt::exec::seq, cube(z, 1, 1, V), pt::none, pt::none, matrix(uh, 1, 1), cube(g, 1, 1, V));
            for (index_t v = 0; v < V; ++v) {
                const long double lp = log_p(z[std::size_t(v)]), p = std::exp(lp);
                // The label's 1 - p_y as -expm1: 1 - p would keep only ~1e-10 of it in long double.
                const long double dlp = labels ? (v == y ? -gl * std::expm1(lp) : -gl * p) : 0.0L;
                const long double want = dlp - gh * p * (H + lp);
                CAPTURE(offset);
                CAPTURE(v);
                // The label's gl (1 - p_y) and gh p_y (H + log p_y) (each ~5e-10 here) partly cancel: 1.2e-10
                // relative there at either offset (the old z_v - lse form: 9e-5 at 1e3).
                const double tol = labels && v == y ? 1e-9 : 1e-12;
                CHECK(std::fabs(g[std::size_t(v)] - static_cast<double>(want)) <= tol * std::fabs(static_cast<double>(want)) + 1e-300);
            }
        }
    }
}

TEST_CASE("token_log_probs: ignored positions are never read, nonfinite_logits = propagate gives NaN") {
    const std::vector<double> z = {0.0, 1.0, 2.0, nan_v, nan_v, inf_v};
    const std::vector<std::int64_t> y = {2, -100};
    std::vector<double> lp(2, 42.0), g(6, 42.0);
    const std::vector<double> up = {1.0, nan_v};
    lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2));
    CHECK(lp[1] == 0.0);
    lg::token_log_probs_backward(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2), pt::none, cube(g, 1, 2, 3));
    CHECK(g[3] == 0.0);
    CHECK(g[4] == 0.0);
    CHECK(g[5] == 0.0);
    lg::token_log_probs_options o;
    o.nonfinite_logits = pt::advantage::nonfinite::propagate;
    const std::vector<std::int64_t> y2 = {2, 0};
    const std::vector<double> up2 = {1.0, 1.0};
    std::vector<double> h(2);
    lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y2, 1, 2), matrix(lp, 1, 2), matrix(h, 1, 2), pt::none, o);
    CHECK(std::isfinite(lp[0]));
    CHECK(std::isnan(lp[1]));
    CHECK(std::isnan(h[1]));
    lg::token_log_probs_backward(pt::exec::seq, cube(z, 1, 2, 3), matrix(y2, 1, 2), matrix(up2, 1, 2), pt::none,
                                 cube(g, 1, 2, 3), pt::none, pt::none, o);
    CHECK(std::isfinite(g[0]));
    CHECK(std::isnan(g[3]));
    CHECK(std::isnan(g[5]));
}

TEST_CASE("token_log_probs: bad input raises naming the function and the argument") {
    using doctest::Contains;
    constexpr const char* fw = "posttrain::logits::token_log_probs: ";
    constexpr const char* bw = "posttrain::logits::token_log_probs_backward: ";
    (void)fw;
    (void)bw;
    const std::vector<double> z = {0.0, 1.0, 2.0, 3.0, nan_v, 1.0};
    std::vector<double> lp(2, 42.0), h(2), g(6);
    const std::vector<double> up = {1.0, 1.0};
    const std::vector<std::int64_t> y_out = {3, 0};
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y_out, 1, 2), matrix(lp, 1, 2)),
                         Contains("posttrain::logits::token_log_probs: argument 'labels': label 3 at [0, 0] is outside [0, 3)"),
                         pt::invalid_argument);
    CHECK(lp[1] == 42.0);  // nothing written
    const std::vector<std::int64_t> y = {0, 1};
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2)),
                         Contains("posttrain::logits::token_log_probs: argument 'logits': non-finite value nan at a scored "
                                  "position [0, 1, 1]"),
                         pt::invalid_argument);
    {  // the first bad position in row-major order, whatever thread found it
        std::vector<double> big(8 * 2 * 3000, 0.5);
        big[std::size_t((5 * 2 + 1) * 3000 + 2)] = nan_v;
        big[std::size_t((2 * 2 + 0) * 3000 + 7)] = inf_v;
        const std::vector<std::int64_t> yb(16, 1);
        std::vector<double> ob(16), gb(big.size());
        const std::vector<double> ub(16, 1.0);
        CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::par.with_threads(4), cube(big, 8, 2, 3000), matrix(yb, 8, 2),
                                                 matrix(ob, 8, 2)),
                             Contains("argument 'logits': non-finite value inf at a scored position [2, 0, 7]"), pt::invalid_argument);
        CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::par.with_threads(4), cube(big, 8, 2, 3000), matrix(yb, 8, 2),
                                                          matrix(ub, 8, 2), pt::none, cube(gb, 8, 2, 3000), matrix(ub, 8, 2),
                                                          matrix(ub, 8, 2)),
                             Contains("posttrain::logits::token_log_probs_backward: argument 'logits': non-finite value inf at a "
                                      "scored position [2, 0, 7]"),
                             pt::invalid_argument);
    }
    const std::vector<double> all_ninf = {-inf_v, -inf_v, -inf_v, 0.0, 0.0, 0.0};
    const std::vector<std::int64_t> y_skip = {0, -100};
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(all_ninf, 1, 2, 3), matrix(y_skip, 1, 2), matrix(lp, 1, 2)),
                         Contains("argument 'logits': every logit of the scored position [0, 0] is -inf"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(all_ninf, 1, 2, 3), matrix(y_skip, 1, 2),
                                                      matrix(up, 1, 2), pt::none, cube(g, 1, 2, 3)),
                         Contains("argument 'logits': every logit of the scored position [0, 0] is -inf"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(all_ninf, 1, 2, 3), matrix(y_skip, 1, 2),
                                                      matrix(up, 1, 2), pt::none, cube(g, 1, 2, 3), matrix(up, 1, 2),
                                                      matrix(up, 1, 2)),
                         Contains("argument 'logits': every logit of the scored position [0, 0] is -inf"), pt::invalid_argument);
    // Shapes and aliasing.
    std::vector<double> lp3(3);
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp3, 1, 3)),
                         Contains("posttrain::logits::token_log_probs: argument 'log_probs': shape must match"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), pt::none, matrix(lp3, 1, 3)),
                         Contains("argument 'entropy': shape must match"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), pt::none, pt::none, matrix(lp3, 1, 3)),
                         Contains("argument 'lse': shape must match"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2), matrix(lp, 1, 2)),
                         Contains("argument 'entropy': the output overlaps the input 'log_probs'"), pt::invalid_argument);
    std::vector<double> zw = z;
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(zw, 1, 2, 3), matrix(y, 1, 2), matrix(zw, 1, 2)),
                         Contains("argument 'log_probs': the output overlaps the input 'logits'"), pt::invalid_argument);
    lg::token_log_probs_options bad_chunk;
    bad_chunk.chunk = 0;
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2), pt::none, pt::none,
                                             bad_chunk),
                         Contains("argument 'options': chunk must be at least 1"), pt::invalid_argument);
    lg::token_log_probs_options ignore;
    ignore.nonfinite_logits = pt::advantage::nonfinite::ignore;
    CHECK_THROWS_WITH_AS(lg::token_log_probs(pt::exec::seq, cube(z, 1, 2, 3), matrix(y, 1, 2), matrix(lp, 1, 2), pt::none, pt::none,
                                             ignore),
                         Contains("argument 'options': nonfinite_logits must be"), pt::invalid_argument);
    // The backward.
    const std::vector<double> zf = {0.0, 1.0, 2.0, 3.0, 4.0, 1.0};
    const std::vector<double> up_nan = {nan_v, 1.0};
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up_nan, 1, 2),
                                                      pt::none, cube(g, 1, 2, 3)),
                         Contains("posttrain::logits::token_log_probs_backward: argument 'grad_log_probs': non-finite value at a "
                                  "scored position [0, 0]"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), pt::none,
                                                      matrix(up_nan, 1, 2), cube(g, 1, 2, 3)),
                         Contains("argument 'grad_entropy': non-finite value at a scored position [0, 0]"), pt::invalid_argument);
    // An upstream NaN at an ignored position is not read.
    lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y_skip, 1, 2), pt::none, matrix(std::vector<double>{1.0, nan_v}, 1, 2),
                                 cube(g, 1, 2, 3));
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(g, 1, 2, 3), matrix(up, 1, 2)),
                         Contains("posttrain::logits::token_log_probs_backward: argument 'saved_entropy': saved_lse and "
                                  "saved_entropy are given together"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(g, 1, 2, 3), pt::none, matrix(up, 1, 2)),
                         Contains("argument 'saved_lse': saved_lse and saved_entropy are given together"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(g, 1, 2, 3), matrix(up_nan, 1, 2), matrix(up, 1, 2)),
                         Contains("argument 'saved_lse': non-finite value at a scored position [0, 0]"), pt::invalid_argument);
    std::vector<double> g4(4);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(g4, 1, 2, 2)),
                         Contains("argument 'grad_logits'"), pt::invalid_argument);
    std::vector<double> gz = zf;
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(gz, 1, 2, 3), matrix(y, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(gz, 1, 2, 3)),
                         Contains("argument 'grad_logits': the output overlaps the input 'logits'"), pt::invalid_argument);
    std::vector<double> gu(6);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y, 1, 2), matrix(gu, 1, 2),
                                                      pt::none, cube(gu, 1, 2, 3)),
                         Contains("argument 'grad_logits': the output overlaps the input 'grad_log_probs'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(lg::token_log_probs_backward(pt::exec::seq, cube(zf, 1, 2, 3), matrix(y_out, 1, 2), matrix(up, 1, 2),
                                                      pt::none, cube(g, 1, 2, 3)),
                         Contains("argument 'labels': label 3 at [0, 0] is outside [0, 3)"), pt::invalid_argument);
}

namespace {
// A DLPack view of a vector (dtype dispatched at run time, as for a torch tensor): rank 2 or 3.
struct dl_tensor {
    std::int64_t shape[3];
    DLTensor t{};
    template <class T>
    dl_tensor(const std::vector<T>& v, std::initializer_list<std::int64_t> dims) : shape{} {
        int r = 0;
        for (std::int64_t d : dims) shape[r++] = d;
        t.data = const_cast<T*>(v.data());
        t.device = DLDevice{kDLCPU, 0};
        t.ndim = r;
        t.dtype = std::is_floating_point_v<T> ? DLDataType{kDLFloat, std::uint8_t(sizeof(T) * 8), 1}
                                              : DLDataType{kDLInt, std::uint8_t(sizeof(T) * 8), 1};
        t.shape = shape;
    }
    dl_tensor(const dl_tensor&) = delete;
};
}  // namespace

TEST_CASE("token_log_probs: DLPack arguments (run-time dtypes) give the static views' bits") {
    const auto p = random_problem(2, 3, 10, 2.0, 0.0, 23);
    const std::vector<float> z = cast<float>(p.z);
    std::vector<float> lp(6), lse(6);
    std::vector<double> h(6), g(60), lp0(6), h0(6), lse0(6), g0(60);
    const std::vector<float> ul = {1, 2, 3, 4, 5, 6};
    const dl_tensor dz(z, {2, 3, 10}), dy(p.y, {2, 3}), dlp(lp, {2, 3}), dh(h, {2, 3}), dlse(lse, {2, 3}), dul(ul, {2, 3}),
        dg(g, {2, 3, 10});
    lg::token_log_probs(pt::exec::seq, dz.t, dy.t, dlp.t, dh.t, dlse.t);
    lg::token_log_probs(pt::exec::seq, cube(z, 2, 3, 10), matrix(p.y, 2, 3), matrix(lp0, 2, 3), matrix(h0, 2, 3),
                        matrix(lse0, 2, 3));
    CHECK(same_bits(cast<float>(lp0), lp));
    CHECK(same_bits(h, h0));
    lg::token_log_probs_backward(pt::exec::seq, dz.t, dy.t, dul.t, pt::none, dg.t, dlse.t, dh.t);
    lg::token_log_probs_backward(pt::exec::seq, cube(z, 2, 3, 10), matrix(p.y, 2, 3), matrix(ul, 2, 3), pt::none,
                                 cube(g0, 2, 3, 10), matrix(lse, 2, 3), matrix(h, 2, 3));
    CHECK(same_bits(g, g0));
}
