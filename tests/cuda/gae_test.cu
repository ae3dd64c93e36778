// GAE and discounted returns on exec::cuda against the host oracle (exec::seq): every masking
// convention and preset, packed tiles (T <= 2048, several rows per tile, T = 1) and chunked rows
// (T > 2048, chunk boundaries inside rows), float and double, interior mask zeros and fully masked
// rows, decoupled, length-adaptive and per-row (gae_per_row_lambda) lambdas, whitening and its
// statistics; strided and mixed layouts (the direct path) against dense ones (the staged path, the
// same bits); plus run-to-run determinism, a caller workspace, the status word and host-detectable
// misuse.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gae.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::column_major;
using pt::test::device_vec;
using pt::test::dout;
using pt::test::dview;

namespace {

template <class T>
struct batch {
    index_t n, t;
    std::vector<T> r, v;
    std::vector<double> m;
};

// Normal rewards and values, a 0/1 mask with interior zeros, a fully masked row and a right-padded one.
template <class T>
batch<T> make_batch(index_t n, index_t t, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    batch<T> b{n, t, std::vector<T>(std::size_t(n * t)), std::vector<T>(std::size_t(n * t)), pt::test::token_mask(n, t, rng)};
    for (std::size_t k = 0; k < b.r.size(); ++k) {
        b.r[k] = static_cast<T>(normal(rng));
        b.v[k] = static_cast<T>(normal(rng));
    }
    return b;
}


// GPU against host for one batch and options; tol relative to max(1, |want|).
template <class T>
void compare_gae(const batch<T>& b, const adv::gae_options& o, double tol, const std::string& what) {
    const index_t n = b.n, t = b.t;
    std::vector<T> a(b.r.size()), ret(b.r.size());
    (void)adv::gae(pt::exec::seq, pt::tensor_view<const T, 2>(b.r.data(), n, t), pt::tensor_view<const T, 2>(b.v.data(), n, t),
                   pt::tensor_view<const double, 2>(b.m.data(), n, t), pt::tensor_view<T, 2>(a.data(), n, t),
                   pt::tensor_view<T, 2>(ret.data(), n, t), o);
    device_vec<T> dr(b.r), dv(b.v), da(b.r.size()), dret(b.r.size());
    device_vec<double> dm(b.m);
    adv::gae(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dout(da, n, t), dout(dret, n, t), o);
    pt::test::close_to(da.host(), a, tol, what + " advantages");
    pt::test::close_to(dret.host(), ret, tol, what + " returns");
}

adv::gae_options raw(adv::gae_masking mode, double gamma, double lambda) {
    adv::gae_options o;
    o.gamma = gamma;
    o.lambda = lambda;
    o.masking = mode;
    o.whiten = false;
    o.mask_output = false;
    return o;
}

const index_t shapes[][2] = {{0, 5}, {3, 0}, {1, 1}, {300, 1}, {37, 29}, {64, 1000}, {9, 2048}, {5, 2049}, {4, 5000}, {2, 70000}};

template <class T>
void gae_matrix(double tol, const char* type) {
    std::uint64_t seed = 1;
    for (const auto& s : shapes) {
        const auto b = make_batch<T>(s[0], s[1], seed++);
        const std::string at = std::string(type) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]);
        for (auto mode : {adv::gae_masking::carry, adv::gae_masking::zero, adv::gae_masking::none})
            compare_gae(b, raw(mode, 0.99, 0.95), tol, at + " mode " + std::to_string(int(mode)));
        if (s[0] * s[1] < 4) continue;  // the presets whiten; too few tokens raise on the host
        compare_gae(b, adv::gae_options::verl(0.999, 0.97), tol, at + " verl");
        compare_gae(b, adv::gae_options::openrlhf(1.0, 0.95), tol, at + " openrlhf");
        compare_gae(b, adv::gae_options::nemo(), tol, at + " nemo");
        compare_gae(b, adv::gae_options::trl(), tol, at + " trl");
        auto decoupled = adv::gae_options::nemo();
        decoupled.lambda_value = 1.0;
        compare_gae(b, decoupled, tol, at + " decoupled");
        auto vapo = decoupled;
        vapo.length_adaptive_alpha = 0.05;
        compare_gae(b, vapo, tol, at + " length-adaptive");
    }
}

}  // namespace

namespace {

// gae_per_row_lambda against the host: lambdas of type L with 0, 1 and values between (and a
// decoupled returns' lambda), packed and chunked rows.
template <class T, class L>
void per_row_lambda_matrix(double tol, const char* type) {
    std::uint64_t seed = 50;
    for (const auto& s : shapes) {
        const auto b = make_batch<T>(s[0], s[1], seed++);
        const index_t n = b.n, t = b.t;
        std::mt19937_64 rng(seed);
        std::vector<L> lambdas(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < lambdas.size(); ++i)
            lambdas[i] = i % 5 == 0 ? L(0) : i % 5 == 1 ? L(1) : static_cast<L>(std::uniform_real_distribution<double>(0, 1)(rng));
        const device_vec<L> dl(lambdas);
        auto decoupled = adv::gae_options::nemo();
        decoupled.lambda_value = 0.9;
        auto raw_carry = raw(adv::gae_masking::carry, 0.99, 0.95);
        auto adaptive = decoupled;  // given lambdas take precedence over a length-adaptive one, as on the host
        adaptive.length_adaptive_alpha = 0.05;
        for (const auto& [o, name] : {std::pair{raw_carry, "raw"}, std::pair{adv::gae_options::verl(0.999, 0.97), "verl"},
                                      std::pair{decoupled, "decoupled"}, std::pair{adaptive, "given over length-adaptive"}}) {
            if (o.whiten && n * t < 4) continue;  // too few tokens raise on the host
            const std::string what = std::string(type) + " " + std::to_string(n) + "x" + std::to_string(t) + " " + name;
            std::vector<T> a(b.r.size()), ret(b.r.size());
            (void)adv::gae_per_row_lambda(pt::exec::seq, pt::tensor_view<const T, 2>(b.r.data(), n, t),
                                          pt::tensor_view<const T, 2>(b.v.data(), n, t),
                                          pt::tensor_view<const double, 2>(b.m.data(), n, t),
                                          pt::tensor_view<const L, 1>(lambdas.data(), n), pt::tensor_view<T, 2>(a.data(), n, t),
                                          pt::tensor_view<T, 2>(ret.data(), n, t), o);
            device_vec<T> dr(b.r), dv(b.v), da(b.r.size()), dret(b.r.size());
            device_vec<double> dm(b.m);
            device_vec<std::uint32_t> status(1, 0u);
            adv::gae_per_row_lambda(pt::exec::cuda.with_status(status.data()), dview(dr, n, t), dview(dv, n, t), dview(dm, n, t),
                                    dl.cview(), dout(da, n, t), dout(dret, n, t), o);
            pt::test::close_to(da.host(), a, tol, what + " advantages");
            pt::test::close_to(dret.host(), ret, tol, what + " returns");
            PT_CHECK(status.host()[0] == 0u);
        }
    }
}

}  // namespace

PT_TEST("gae_per_row_lambda: per-row lambdas against the host, packed and chunked rows") {
    per_row_lambda_matrix<double, double>(1e-10, "double");
    per_row_lambda_matrix<float, float>(2e-5, "float");
    per_row_lambda_matrix<float, double>(2e-5, "float, double lambdas");
}

PT_TEST("gae_per_row_lambda: statistics, exact workspace, status word, misuse") {
    const auto b = make_batch<float>(5, 3000, 60);
    const index_t n = b.n, t = b.t;
    std::vector<double> lambdas{0.9, 0.95, 1.0, 0.0, 0.5};
    device_vec<float> dr(b.r), dv(b.v), da(b.r.size()), da2(b.r.size());
    device_vec<double> dm(b.m), dl(lambdas), stats(3);
    const auto o = adv::gae_options::verl(0.99, 0.95);
    const std::size_t bytes = adv::gae_per_row_lambda_workspace_bytes(n, t, o);
    PT_CHECK(bytes > adv::gae_workspace_bytes(n, t, o));  // the per-row lambdas take scratch too
    device_vec<unsigned char> ws(bytes);
    adv::gae_per_row_lambda(pt::exec::cuda.with(ws.data(), bytes), dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dl.cview(),
                            dout(da, n, t), pt::none, o, stats.view());
    std::vector<float> a(b.r.size());
    const auto host = adv::gae_per_row_lambda(pt::exec::seq, pt::tensor_view<const float, 2>(b.r.data(), n, t),
                                              pt::tensor_view<const float, 2>(b.v.data(), n, t),
                                              pt::tensor_view<const double, 2>(b.m.data(), n, t),
                                              pt::tensor_view<const double, 1>(lambdas.data(), n), pt::tensor_view<float, 2>(a.data(), n, t),
                                              pt::none, o);
    pt::test::close_to(da.host(), a, 2e-5, "per-row lambda with a caller workspace");
    // Strided lambdas: every other entry of a [2n] buffer.
    std::vector<double> every_other(std::size_t(2 * n), -1.0);
    for (index_t i = 0; i < n; ++i) every_other[std::size_t(2 * i)] = lambdas[std::size_t(i)];
    const device_vec<double> dl2(every_other);
    adv::gae_per_row_lambda(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t),
                            pt::device_view<const double, 1>(dl2.data(), {n}, {2}), dout(da2, n, t), pt::none, o);
    PT_CHECK(da2.host() == da.host());
    const auto st = stats.host();
    PT_CHECK(std::fabs(st[0] - host.mean) <= 1e-6 * (1 + std::fabs(host.mean)));
    PT_CHECK(std::fabs(st[1] - host.variance) <= 1e-6 * host.variance);
    PT_CHECK(st[2] == host.count);
    PT_CHECK_THROWS(adv::gae_per_row_lambda(pt::exec::cuda.with(ws.data(), bytes - 1), dview(dr, n, t), dview(dv, n, t),
                                            dview(dm, n, t), dl.cview(), dout(da2, n, t), pt::none, o),
                    pt::invalid_argument);

    // A lambda outside [0, 1] (the host throws) is reported and used as given.
    std::vector<double> bad{0.9, 1.5, 0.95, std::nan(""), 0.5};
    device_vec<double> dbad(bad);
    device_vec<std::uint32_t> status(1, 0u);
    adv::gae_per_row_lambda(pt::exec::cuda.with_status(status.data()), dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dbad.cview(),
                            dout(da2, n, t), pt::none, raw(adv::gae_masking::carry, 0.99, 0.95));
    PT_CHECK((status.host()[0] & pt::status_invalid_value) != 0);
    PT_CHECK_THROWS((void)adv::gae_per_row_lambda(pt::exec::seq, pt::tensor_view<const float, 2>(b.r.data(), n, t),
                                                  pt::tensor_view<const float, 2>(b.v.data(), n, t),
                                                  pt::tensor_view<const double, 2>(b.m.data(), n, t),
                                                  pt::tensor_view<const double, 1>(bad.data(), n),
                                                  pt::tensor_view<float, 2>(a.data(), n, t), pt::none, o),
                    pt::invalid_argument);

    // Host-detectable misuse throws before anything is launched: one lambda per row, statistics only
    // with whitening, the returns' overlaps.
    const device_vec<double> short_l(std::vector<double>(std::size_t(n - 1), 0.9));
    PT_CHECK_THROWS(adv::gae_per_row_lambda(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), short_l.cview(),
                                            dout(da2, n, t), pt::none, o),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gae_per_row_lambda(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dl.cview(),
                                            dout(da2, n, t), pt::none, raw(adv::gae_masking::carry, 0.99, 0.95), stats.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gae_per_row_lambda(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dl.cview(),
                                            dout(da2, n, t), dout(da2, n, t), o),
                    pt::invalid_argument);
}

PT_TEST("gae double: every convention and preset, packed and chunked rows") { gae_matrix<double>(1e-10, "double"); }
PT_TEST("gae float: every convention and preset, packed and chunked rows") { gae_matrix<float>(2e-5, "float"); }

namespace {

// The direct path (strided views: column-major, and dense views beside one strided output) against
// the host, and the staged path (every view dense) against the direct one bit for bit: both run
// the same arithmetic. Shapes: several packed tiles with a partial last one, and chunked rows.
template <class T>
void layouts_case(index_t n, index_t t, const adv::gae_options& o, double tol, const std::string& what) {
    const auto b = make_batch<T>(n, t, 70);
    const auto hv = [&](const auto& v) { return pt::tensor_view<const typename std::decay_t<decltype(v)>::value_type, 2>(v.data(), n, t); };
    std::vector<T> a(b.r.size()), ret(b.r.size()), g(b.r.size());
    (void)adv::gae(pt::exec::seq, hv(b.r), hv(b.v), hv(b.m), pt::tensor_view<T, 2>(a.data(), n, t), pt::tensor_view<T, 2>(ret.data(), n, t), o);
    adv::discounted_returns(pt::exec::seq, hv(b.r), hv(b.m), pt::tensor_view<T, 2>(g.data(), n, t), adv::returns_options{0.99});
    const std::string at = what + " " + std::to_string(n) + "x" + std::to_string(t);
    const column_major<T> cr(b.r, n, t), cv(b.v, n, t), ca(a, n, t), cret(a, n, t), cg(g, n, t);
    const column_major<double> cm(b.m, n, t);
    adv::gae(pt::exec::cuda, cr.cview(), cv.cview(), cm.cview(), ca.view(), cret.view(), o);
    pt::test::close_to(ca.host_rowmajor(), a, tol, "gae strided advantages " + at);
    pt::test::close_to(cret.host_rowmajor(), ret, tol, "gae strided returns " + at);
    adv::discounted_returns(pt::exec::cuda, cr.cview(), cm.cview(), cg.view(), adv::returns_options{0.99});
    pt::test::close_to(cg.host_rowmajor(), g, tol, "discounted returns strided " + at);
    // Dense inputs and advantages with strided returns: the whole launch takes the direct path.
    device_vec<T> dr(b.r), dv(b.v), da(b.r.size()), dret(b.r.size()), dg(b.r.size());
    device_vec<double> dm(b.m);
    adv::gae(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dout(da, n, t), cret.view(), o);
    pt::test::close_to(da.host(), a, tol, "gae mixed layouts advantages " + at);
    pt::test::close_to(cret.host_rowmajor(), ret, tol, "gae mixed layouts returns " + at);
    // Every view dense: the staged path.
    adv::gae(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dout(da, n, t), dout(dret, n, t), o);
    PT_CHECK_MSG(da.host() == ca.host_rowmajor(), "gae staged and direct advantages differ " + at);
    PT_CHECK_MSG(dret.host() == cret.host_rowmajor(), "gae staged and direct returns differ " + at);
    adv::discounted_returns(pt::exec::cuda, dview(dr, n, t), dview(dm, n, t), dout(dg, n, t), adv::returns_options{0.99});
    PT_CHECK_MSG(dg.host() == cg.host_rowmajor(), "discounted returns staged and direct differ " + at);
}

}  // namespace

PT_TEST("gae and discounted returns: strided and mixed layouts (direct path), dense (staged path, the same bits)") {
    auto decoupled = adv::gae_options::nemo();  // the returns' own pass: a flush of the returns alone
    decoupled.lambda_value = 1.0;
    for (const auto& [n, t] : {std::pair<index_t, index_t>{300, 29}, {3, 5000}}) {
        layouts_case<double>(n, t, adv::gae_options::verl(0.99, 0.95), 1e-10, "double verl");
        layouts_case<float>(n, t, adv::gae_options::verl(0.99, 0.95), 2e-5, "float verl");
        layouts_case<float>(n, t, decoupled, 2e-5, "float decoupled");
    }
}

PT_TEST("discounted returns: the three masking conventions, packed and chunked") {
    std::uint64_t seed = 100;
    for (const auto& s : shapes) {
        const auto b = make_batch<double>(s[0], s[1], seed++);
        const index_t n = b.n, t = b.t;
        device_vec<double> dr(b.r), dm(b.m), dg(b.r.size());
        for (auto mode : {adv::masked_tokens::reset, adv::masked_tokens::carry, adv::masked_tokens::zero_rewards}) {
            std::vector<double> g(b.r.size());
            adv::discounted_returns(pt::exec::seq, pt::tensor_view<const double, 2>(b.r.data(), n, t),
                                    pt::tensor_view<const double, 2>(b.m.data(), n, t), pt::tensor_view<double, 2>(g.data(), n, t),
                                    adv::returns_options{0.99, mode});
            adv::discounted_returns(pt::exec::cuda, dview(dr, n, t), dview(dm, n, t), dout(dg, n, t), adv::returns_options{0.99, mode});
            pt::test::close_to(dg.host(), g, 1e-10, "returns " + std::to_string(n) + "x" + std::to_string(t));
        }
    }
}

PT_TEST("gae run-to-run determinism, statistics, caller workspace") {
    const auto b = make_batch<float>(6, 9000, 7);
    const index_t n = b.n, t = b.t;
    device_vec<float> dr(b.r), dv(b.v), da(b.r.size()), da2(b.r.size()), dret(b.r.size());
    device_vec<double> dm(b.m), stats(3), stats2(3);
    const auto o = adv::gae_options::verl(0.99, 0.95);
    adv::gae(pt::exec::cuda, dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dout(da, n, t), dout(dret, n, t), o, stats.view());
    const std::size_t bytes = adv::gae_workspace_bytes(n, t, o);
    PT_CHECK(bytes > 0);
    device_vec<unsigned char> ws(bytes);
    adv::gae(pt::exec::cuda.with(ws.data(), bytes), dview(dr, n, t), dview(dv, n, t), dview(dm, n, t), dout(da2, n, t), pt::none, o,
             stats2.view());
    const auto h1 = da.host(), h2 = da2.host();
    PT_CHECK(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(float)) == 0);
    const auto s1 = stats.host(), s2 = stats2.host();
    PT_CHECK(std::memcmp(s1.data(), s2.data(), 3 * sizeof(double)) == 0);
    std::vector<float> a(b.r.size());
    const auto host = adv::gae(pt::exec::seq, pt::tensor_view<const float, 2>(b.r.data(), n, t),
                               pt::tensor_view<const float, 2>(b.v.data(), n, t), pt::tensor_view<const double, 2>(b.m.data(), n, t),
                               pt::tensor_view<float, 2>(a.data(), n, t), pt::none, o);
    PT_CHECK(std::fabs(s1[0] - host.mean) <= 1e-6 * (1 + std::fabs(host.mean)));
    PT_CHECK(std::fabs(s1[1] - host.variance) <= 1e-6 * host.variance);
    PT_CHECK(s1[2] == host.count);
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda.with(ws.data(), bytes - 1), dview(dr, n, t), dview(dv, n, t), dview(dm, n, t),
                             dout(da2, n, t), pt::none, o),
                    pt::invalid_argument);
}

PT_TEST("gae status word: non-finite input, too few tokens") {
    auto b = make_batch<double>(4, 16, 9);
    b.v[5] = std::nan("");
    device_vec<double> dr(b.r), dv(b.v), dm(b.m), da(b.r.size());
    device_vec<std::uint32_t> status(1, 0u);
    adv::gae(pt::exec::cuda.with_status(status.data()), dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none);
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    std::vector<double> zero(b.m.size(), 0.0);
    device_vec<double> dz(zero), dv2(make_batch<double>(4, 16, 10).v);
    device_vec<std::uint32_t> status2(1, 0u);
    adv::gae(pt::exec::cuda.with_status(status2.data()), dview(dr, 4, 16), dview(dv2, 4, 16), dview(dz, 4, 16), dout(da, 4, 16),
             pt::none, adv::gae_options::verl());
    PT_CHECK((status2.host()[0] & pt::status_empty_reduction) != 0);
    for (double x : da.host()) PT_CHECK(x == 0.0);
}

PT_TEST("gae host-detectable misuse throws before launching") {
    const auto b = make_batch<double>(4, 16, 11);
    device_vec<double> dr(b.r), dv(b.v), dm(b.m), da(b.r.size());
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda, dview(dr, 4, 16), dview(dv, 16, 4), dview(dm, 4, 16), dout(da, 4, 16), pt::none),
                    pt::invalid_argument);
    adv::gae_options o;
    o.gamma = 2;
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda, dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none, o),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda, dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), dout(da, 4, 16)),
                    pt::invalid_argument);
    // The statistics over the advantages or an input (the finalize writes them before the apply).
    const auto verl = adv::gae_options::verl();
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda, dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none, verl,
                             pt::device_view<double, 1>(da.data() + 9, 3)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gae(pt::exec::cuda, dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none, verl,
                             pt::device_view<double, 1>(dm.data(), 3)),
                    pt::invalid_argument);
    // The policy's workspace over the advantages (or the returns), its status word over an input (each
    // workspace within the buffer it overlaps: the overlap is refused before its size is looked at).
    using pt::test::refuses_policy;
    device_vec<double> ret(64);
    PT_CHECK(refuses_policy([&] { adv::gae(pt::exec::cuda.with(da.data(), da.size() * sizeof(double)), dview(dr, 4, 16),
                                           dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none, verl); },
                            "workspace", "advantages"));
    PT_CHECK(refuses_policy([&] { adv::gae(pt::exec::cuda.with(ret.data(), ret.size() * sizeof(double)), dview(dr, 4, 16),
                                           dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), dout(ret, 4, 16), verl); },
                            "workspace", "returns"));
    PT_CHECK(refuses_policy([&] { adv::gae(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(dv.data() + 5)),
                                           dview(dr, 4, 16), dview(dv, 4, 16), dview(dm, 4, 16), dout(da, 4, 16), pt::none); },
                            "status word", "values"));
}
