// masked_whiten, masked_mean, masked_var, masked_row_mean, masked_normalize, reinforce_pp,
// reinforce_pp_baseline and remax on exec::cuda against the host oracle
// (exec::seq): packed tiles (T <= 2048, several rows per tile, T = 1) and chunked rows (T > 2048),
// empty batches, float and double, interior mask zeros and fully masked rows, strided views, every
// returns masking, the presets (verl, openrlhf); the whitening statistics overloads; in-place
// whitening; run-to-run determinism; a caller workspace of exactly *_workspace_bytes; the status
// word (degenerate whitening under degenerate::raise, non-finite inputs); host-detectable misuse;
// CUDA-graph capture and replay of each function.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/reinforce_pp.cuh>
#include <posttrain/advantage/remax.cuh>
#include <posttrain/advantage/whiten.cuh>

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
    std::vector<T> r;       // token rewards / values [n, t]
    std::vector<double> m;  // 0/1 mask [n, t]
    std::vector<T> b;       // per-row rewards / baselines [n]
};

// Normal values, a 0/1 mask with interior zeros, a fully masked row (1) and a right-padded one (2).
template <class T>
batch<T> make_batch(index_t n, index_t t, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    batch<T> x{n, t, std::vector<T>(std::size_t(n * t)), pt::test::token_mask(n, t, rng), std::vector<T>(std::size_t(n))};
    for (auto& v : x.r) v = static_cast<T>(normal(rng));
    for (auto& v : x.b) v = static_cast<T>(normal(rng));
    return x;
}

template <class T>
pt::tensor_view<const T, 2> hview(const std::vector<T>& v, index_t n, index_t t) {
    return pt::tensor_view<const T, 2>(v.data(), n, t);
}
template <class T>
pt::tensor_view<T, 2> hout(std::vector<T>& v, index_t n, index_t t) {
    return pt::tensor_view<T, 2>(v.data(), n, t);
}

// Runs `host` (which may throw invalid_argument under degenerate::raise). When it returns, the device
// outputs must match within tol and the status word hold no bit; when it throws, the status word must
// hold status_empty_reduction and the device's `zeroed` outputs be zeros.
bool host_ok(const std::function<void()>& host) {
    try {
        host();
        return true;
    } catch (const pt::invalid_argument&) {
        return false;
    }
}

void check_status(bool ok, std::uint32_t status, const std::string& what) {
    if (ok) PT_CHECK_MSG(status == 0, what + ": status " + std::to_string(status));
    else PT_CHECK_MSG(status == pt::status_empty_reduction, what + ": the host raised, status " + std::to_string(status));
}

template <class T>
void check_zeros(const std::vector<T>& v, const std::string& what) {
    bool all = true;
    for (T x : v) all = all && x == T(0);
    PT_CHECK_MSG(all, what + ": expected zeros (degenerate whitening)");
}

void check_stats(const std::vector<double>& got, const pt::moments_result& want, double tol, const std::string& what) {
    pt::test::close_to(got, std::vector<double>{want.mean, want.variance, want.count}, tol, what + " stats");
}

const index_t shapes[][2] = {{0, 5}, {3, 0}, {1, 1}, {300, 1}, {37, 29}, {64, 1000}, {9, 2048}, {5, 2049}, {4, 5000}, {2, 70000}};

std::string at(const char* type, index_t n, index_t t) { return std::string(type) + " " + std::to_string(n) + "x" + std::to_string(t); }

// ---- masked_whiten ---------------------------------------------------------------------------------

template <class T>
void compare_whiten(const batch<T>& x, const adv::whiten_options& o, double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    std::vector<T> want(x.r.size());
    pt::moments_result hs{};
    const bool ok = host_ok([&] { hs = adv::masked_whiten(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(want, n, t), o); });
    device_vec<T> dx(x.r), dout_(x.r.size());
    device_vec<double> dm(x.m), st(3);
    device_vec<std::uint32_t> status(1, 0u);
    const auto p = pt::exec::cuda.with_status(status.data());
    adv::masked_whiten(p, dview(dx, n, t), dview(dm, n, t), dout(dout_, n, t), o, st.view());
    // In place, into the values themselves (as the host allows).
    adv::masked_whiten(p, dview(dx, n, t), dview(dm, n, t), dout(dx, n, t), o);
    check_status(ok, status.host()[0], what);
    if (!ok) {
        check_zeros(dout_.host(), what);
        check_zeros(dx.host(), what + " in place");
        return;
    }
    pt::test::close_to(dout_.host(), want, tol, what);
    pt::test::close_to(dx.host(), want, tol, what + " in place");
    check_stats(st.host(), hs, tol, what);
}

template <class T>
void whiten_matrix(double tol, const char* type) {
    std::uint64_t seed = 1;
    auto shift = adv::whiten_options{};
    shift.shift_mean = false;
    shift.mask_output = true;
    for (const auto& s : shapes) {
        const auto x = make_batch<T>(s[0], s[1], seed++);
        const std::string w = "masked_whiten " + at(type, s[0], s[1]);
        compare_whiten(x, {}, tol, w + " default");
        compare_whiten(x, adv::whiten_options::verl(), tol, w + " verl");
        compare_whiten(x, adv::whiten_options::verl(false), tol, w + " verl scale only");
        compare_whiten(x, adv::whiten_options::openrlhf(), tol, w + " openrlhf");
        compare_whiten(x, adv::whiten_options::openrlhf(true), tol, w + " openrlhf no_std_norm");
        compare_whiten(x, shift, tol, w + " mean added back, masked output");
    }
}

// ---- reinforce_pp ------------------------------------------------------------------------------------

template <class T>
void compare_reinforce_pp(const batch<T>& x, const adv::reinforce_pp_options& o, double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    std::vector<T> a(x.r.size()), g(x.r.size());
    pt::moments_result hs{};
    const bool ok = host_ok(
        [&] { hs = adv::reinforce_pp(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(a, n, t), hout(g, n, t), o); });
    device_vec<T> dr(x.r), da(x.r.size()), dg(x.r.size()), da2(x.r.size());
    device_vec<double> dm(x.m), st(3);
    device_vec<std::uint32_t> status(1, 0u);
    const auto p = pt::exec::cuda.with_status(status.data());
    adv::reinforce_pp(p, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), dout(dg, n, t), o, st.view());
    adv::reinforce_pp(p, dview(dr, n, t), dview(dm, n, t), dout(da2, n, t), pt::none, o);
    check_status(ok, status.host()[0], what);
    pt::test::close_to(dg.host(), g, tol, what + " returns");  // written before the host's whitening raised, too
    if (!ok) {
        check_zeros(da.host(), what);
        return;
    }
    pt::test::close_to(da.host(), a, tol, what + " advantages");
    const auto h1 = da.host(), h2 = da2.host();
    PT_CHECK_MSG(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(T)) == 0, what + ": with and without returns differ");
    check_stats(st.host(), hs, tol, what);
}

template <class T>
void reinforce_pp_matrix(double tol, const char* type) {
    std::uint64_t seed = 100;
    for (const auto& s : shapes) {
        const auto x = make_batch<T>(s[0], s[1], seed++);
        const std::string w = "reinforce_pp " + at(type, s[0], s[1]);
        for (auto mode : {adv::masked_tokens::reset, adv::masked_tokens::carry, adv::masked_tokens::zero_rewards}) {
            adv::reinforce_pp_options o;
            o.returns = {0.99, mode};
            compare_reinforce_pp(x, o, tol, w + " mode " + std::to_string(int(mode)));
        }
        compare_reinforce_pp(x, adv::reinforce_pp_options::verl(0.99), tol, w + " verl");
        compare_reinforce_pp(x, adv::reinforce_pp_options::verl(), tol, w + " verl gamma 1");
        compare_reinforce_pp(x, adv::reinforce_pp_options::openrlhf(0.99), tol, w + " openrlhf");
        compare_reinforce_pp(x, adv::reinforce_pp_options::openrlhf(1.0, true), tol, w + " openrlhf no_std_norm");
    }
}

// ---- reinforce_pp_baseline ---------------------------------------------------------------------------

template <class T, class Groups, class DeviceGroups>
void compare_baseline(const batch<T>& x, const Groups& hg, const DeviceGroups& dg, const adv::reinforce_pp_baseline_options& o,
                      double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    std::vector<T> a(x.r.size());
    pt::moments_result hs{};
    const bool ok = host_ok([&] {
        hs = adv::reinforce_pp_baseline(pt::exec::seq, pt::tensor_view<const T, 1>(x.b.data(), n), hg, hview(x.m, n, t), hout(a, n, t), o);
    });
    device_vec<T> db(x.b), da(x.r.size());
    device_vec<double> dm(x.m), st(3);
    device_vec<std::uint32_t> status(1, 0u);
    const auto p = pt::exec::cuda.with_status(status.data());
    adv::reinforce_pp_baseline(p, db.cview(), dg, dview(dm, n, t), dout(da, n, t), o, st.view());
    check_status(ok, status.host()[0], what);
    if (!ok) {
        check_zeros(da.host(), what);
        return;
    }
    pt::test::close_to(da.host(), a, tol, what);
    check_stats(st.host(), hs, tol, what);
}

std::vector<std::int64_t> ragged_offsets(index_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> off{0};
    while (off.back() < n) off.push_back(std::min<std::int64_t>(n, off.back() + std::int64_t(rng() % 6)));  // empty groups too
    return off;
}

template <class T>
void baseline_matrix(double tol, const char* type) {
    std::uint64_t seed = 200;
    const index_t bshapes[][2] = {{0, 5}, {8, 0}, {1, 1}, {300, 1}, {40, 29}, {64, 1000}, {8, 2049}, {4, 5000}};
    for (const auto& s : bshapes) {
        const auto x = make_batch<T>(s[0], s[1], seed++);
        const std::string w = "reinforce_pp_baseline " + at(type, s[0], s[1]);
        const auto off = ragged_offsets(s[0], seed);
        device_vec<std::int64_t> doff(off);
        const auto hrag = pt::ragged(off);
        const auto drag = pt::ragged(doff.cview());
        const index_t k = s[0] % 4 == 0 && s[0] > 0 ? 4 : 1;
        for (const auto& [name, o] : {std::pair{"default", adv::reinforce_pp_baseline_options{}},
                                      std::pair{"verl", adv::reinforce_pp_baseline_options::verl()},
                                      std::pair{"openrlhf", adv::reinforce_pp_baseline_options::openrlhf()}}) {
            compare_baseline(x, pt::uniform_groups{k}, pt::uniform_groups{k}, o, tol, w + " uniform " + name);
            compare_baseline(x, hrag, drag, o, tol, w + " ragged " + name);
        }
    }
}

// ---- remax -------------------------------------------------------------------------------------------

template <class T>
void compare_remax(const batch<T>& x, double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    std::vector<T> a(x.r.size()), g(x.r.size());
    adv::remax(pt::exec::seq, hview(x.r, n, t), pt::tensor_view<const T, 1>(x.b.data(), n), hview(x.m, n, t), hout(a, n, t),
               hout(g, n, t));
    device_vec<T> dr(x.r), db(x.b), da(x.r.size()), dg(x.r.size()), da2(x.r.size());
    device_vec<double> dm(x.m);
    device_vec<std::uint32_t> status(1, 0u);
    const auto p = pt::exec::cuda.with_status(status.data());
    adv::remax(p, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(da, n, t), dout(dg, n, t));
    adv::remax(p, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(da2, n, t), pt::none);
    PT_CHECK(status.host()[0] == 0);
    pt::test::close_to(da.host(), a, tol, what + " advantages");
    pt::test::close_to(dg.host(), g, tol, what + " returns");
    const auto h1 = da.host(), h2 = da2.host();
    PT_CHECK_MSG(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(T)) == 0, what + ": with and without returns differ");
}

template <class T>
void remax_matrix(double tol, const char* type) {
    std::uint64_t seed = 300;
    for (const auto& s : shapes) compare_remax(make_batch<T>(s[0], s[1], seed++), tol, "remax " + at(type, s[0], s[1]));
}

// With non-finite inputs: non-finite exactly where the host's result is, close elsewhere. The scan
// composes affine maps, so an inf reaching a composition can come out as NaN (inf * 0) where the
// host's recurrence steps to +-inf (seen on an H100): only finiteness is compared there.
void close_or_nonfinite(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
    int bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const bool ok = std::isfinite(want[i]) ? std::isfinite(got[i]) && std::fabs(got[i] - want[i]) <= tol * std::fmax(1.0, std::fabs(want[i]))
                                               : !std::isfinite(got[i]);
        if (!ok && bad++ < 5)
            pt::test::report_failure(__FILE__, __LINE__,
                                     what + ": index " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", want " +
                                         std::to_string(want[i]));
    }
    ++pt::test::state().checks;
}

// Whether `f` throws posttrain::invalid_argument naming `fn` and `arg`.
bool throws_naming(const std::function<void()>& f, const std::string& fn, const std::string& arg) {
    try {
        f();
    } catch (const pt::invalid_argument& e) {
        const bool ok = e.function() == fn && e.argument() == arg;
        if (!ok) pt::test::report_failure(__FILE__, __LINE__, "expected " + fn + " / " + arg + ", got: " + e.what());
        return ok;
    } catch (const std::exception& e) {
        pt::test::report_failure(__FILE__, __LINE__, std::string("expected invalid_argument, got: ") + e.what());
        return false;
    }
    pt::test::report_failure(__FILE__, __LINE__, "expected invalid_argument from " + fn + " / " + arg);
    return false;
}

}  // namespace

// ---- masked_mean, masked_var, masked_row_mean, masked_normalize -------------------------------------

namespace {

template <class T>
void compare_stats(const batch<T>& x, const adv::masked_stats_options& o, double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    const double want_mean = adv::masked_mean(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), o);
    double want_var = 0;
    const bool ok = host_ok([&] { want_var = adv::masked_var(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), o); });
    device_vec<T> dx(x.r);
    device_vec<double> dm(x.m), d_mean(1), d_var(1, -1.0);
    device_vec<std::uint32_t> status(1, 0u);
    const auto p = pt::exec::cuda.with_status(status.data());
    adv::masked_mean(p, dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(d_mean.data()), o);
    adv::masked_var(p, dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(d_var.data()), o);
    const double got_mean = d_mean.host()[0], got_var = d_var.host()[0];
    pt::test::close_to(std::vector<double>{got_mean}, std::vector<double>{want_mean}, tol, what + " mean");
    // The host-returning overloads run the same kernels: the same bits, and the host's error rules.
    const double mean2 = adv::masked_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), o);
    PT_CHECK_MSG(std::memcmp(&mean2, &got_mean, sizeof(double)) == 0, what + ": host-returning mean differs");
    check_status(ok, status.host()[0], what + " variance");
    if (!ok) {
        PT_CHECK_MSG(got_var == 0.0, what + ": degenerate variance not 0");
        PT_CHECK_MSG(throws_naming([&] { (void)adv::masked_var(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), o); },
                                   "posttrain::advantage::masked_var", "mask"),
                     what + ": host-returning variance did not throw");
        return;
    }
    pt::test::close_to(std::vector<double>{got_var}, std::vector<double>{want_var}, tol, what + " variance");
    const double var2 = adv::masked_var(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), o);
    PT_CHECK_MSG(std::memcmp(&var2, &got_var, sizeof(double)) == 0, what + ": host-returning variance differs");
}

template <class T>
void compare_rows(const batch<T>& x, double count_eps, double epsilon, double tol, const std::string& what) {
    const index_t n = x.n, t = x.t;
    adv::masked_stats_options so;
    so.count_epsilon = count_eps;
    adv::normalize_options no;
    no.epsilon = epsilon;
    std::vector<T> want_mean(static_cast<std::size_t>(n)), want(x.r.size());
    adv::masked_row_mean(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), pt::tensor_view<T, 1>(want_mean.data(), n), so);
    adv::masked_normalize(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(want, n, t), no);
    // A uint8 mask on the device: the same weights.
    std::vector<std::uint8_t> m8(x.m.size());
    for (std::size_t k = 0; k < m8.size(); ++k) m8[k] = x.m[k] != 0 ? 1 : 0;
    device_vec<T> dx(x.r), d_mean(static_cast<std::size_t>(n)), d_out(x.r.size());
    device_vec<double> dm(x.m);
    device_vec<std::uint8_t> dm8(m8);
    adv::masked_row_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), d_mean.view(), so);
    adv::masked_normalize(pt::exec::cuda, dview(dx, n, t), dview(dm8, n, t), dout(d_out, n, t), no);
    pt::test::close_to(d_mean.host(), want_mean, tol, what + " row means");
    pt::test::close_to(d_out.host(), want, tol, what + " normalized");
    adv::masked_normalize(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), dout(dx, n, t), no);  // in place
    pt::test::close_to(dx.host(), want, tol, what + " normalized in place");
}

template <class T>
void stats_matrix(double tol, const char* type) {
    std::uint64_t seed = 900;
    adv::masked_stats_options population;
    population.ddof = pt::ddof::population;
    for (const auto& s : shapes) {
        const auto x = make_batch<T>(s[0], s[1], seed++);
        const std::string w = at(type, s[0], s[1]);
        compare_stats(x, {}, tol, "masked stats " + w + " default");
        compare_stats(x, adv::masked_stats_options::verl(), tol, "masked stats " + w + " verl");
        compare_stats(x, adv::masked_stats_options::verl(false), tol, "masked stats " + w + " verl biased");
        compare_stats(x, population, tol, "masked stats " + w + " population");
        compare_rows(x, 0.0, 1e-8, tol, "rows " + w);
        compare_rows(x, 1e-8, 1e-2, tol, "rows " + w + " epsilons");
    }
    // Too few tokens for the unbiased variance: one valid token.
    auto one = make_batch<T>(3, 4, 950);
    for (auto& v : one.m) v = 0;
    one.m[5] = 1;
    compare_stats(one, adv::masked_stats_options::verl(), tol, "masked stats one valid token verl");
    compare_stats(one, {}, tol, "masked stats one valid token default");
}

}  // namespace

PT_TEST("masked_mean, masked_var, masked_row_mean, masked_normalize double: against the host") { stats_matrix<double>(1e-10, "double"); }
PT_TEST("masked_mean, masked_var, masked_row_mean, masked_normalize float: against the host") { stats_matrix<float>(2e-5, "float"); }

PT_TEST("masked statistics: a non-finite value under a zero weight reaches the statistics, as on the host") {
    // A fully masked row of one whole tile (T = 2048) or of three whole chunks (T = 5000): its tiles
    // have no weight, and the host's 0 * NaN still makes the statistics NaN.
    for (const auto& [n, t] : {std::pair<index_t, index_t>{4, 2048}, {2, 5000}}) {
        for (const double bad : {std::nan(""), HUGE_VAL}) {
            auto x = make_batch<double>(n, t, 970);
            for (index_t j = 0; j < t; ++j) x.m[std::size_t(1 * t + j)] = 0;
            x.r[std::size_t(1 * t + 7)] = bad;
            const std::string what = "masked " + at("double", n, t) + (std::isnan(bad) ? " NaN" : " inf");
            std::vector<double> want(x.r.size());
            const auto hs = adv::masked_whiten(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(want, n, t));
            const double hm = adv::masked_mean(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t));
            PT_CHECK_MSG(std::isnan(hs.mean) && std::isnan(hs.variance) && std::isnan(hm), what + ": the host's statistics are NaN");
            device_vec<double> dx(x.r), dm(x.m), out(x.r.size()), st(3), mean(1), var(1);
            adv::masked_whiten(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), dout(out, n, t), {}, st.view());
            adv::masked_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(mean.data()));
            adv::masked_var(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(var.data()));
            check_stats(st.host(), hs, 1e-10, what + " whiten");
            pt::test::close_to(mean.host(), std::vector<double>{hm}, 1e-10, what + " mean");
            PT_CHECK_MSG(std::isnan(var.host()[0]), what + ": variance not NaN");
            pt::test::close_to(out.host(), want, 1e-10, what + " whitened");
        }
    }
}

PT_TEST("masked statistics: caller workspace, strided views, misuse") {
    const index_t n = 5, t = 3000;
    const auto x = make_batch<double>(n, t, 960);
    device_vec<double> dx(x.r), dm(x.m), r1(1), r2(1), rows(static_cast<std::size_t>(n)), out(x.r.size());
    const auto o = adv::masked_stats_options::verl();
    const std::size_t bytes = adv::masked_var_workspace_bytes(n, t);
    PT_CHECK(bytes == adv::masked_mean_workspace_bytes(n, t) && bytes > 0);
    device_vec<unsigned char> ws(bytes);
    adv::masked_var(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(r1.data()), o);
    adv::masked_var(pt::exec::cuda.with(ws.data(), bytes), dview(dx, n, t), dview(dm, n, t), pt::device_view<double, 0>(r2.data()), o);
    PT_CHECK(r1.host()[0] == r2.host()[0]);
    PT_CHECK(throws_naming([&] { adv::masked_mean(pt::exec::cuda.with(ws.data(), bytes - 1), dview(dx, n, t), dview(dm, n, t),
                                                  pt::device_view<double, 0>(r1.data())); },
                           "posttrain::advantage::masked_mean", "policy"));
    // Column-major values and mask.
    const column_major<double> sx(x.r, n, t), sm(x.m, n, t);
    std::vector<double> want_rows(static_cast<std::size_t>(n)), want(x.r.size());
    adv::masked_row_mean(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), pt::tensor_view<double, 1>(want_rows.data(), n));
    adv::masked_normalize(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(want, n, t));
    adv::masked_row_mean(pt::exec::cuda, sx.cview(), sm.cview(), rows.view());
    pt::test::close_to(rows.host(), want_rows, 1e-10, "masked_row_mean strided");
    adv::masked_normalize(pt::exec::cuda, sx.cview(), sm.cview(), dout(out, n, t));
    pt::test::close_to(out.host(), want, 1e-10, "masked_normalize strided");
    const double host_var = adv::masked_var(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), o);
    pt::test::close_to(std::vector<double>{adv::masked_var(pt::exec::cuda, sx.cview(), sm.cview(), o)}, std::vector<double>{host_var}, 1e-10,
                       "masked_var strided");
    // Misuse, before anything is launched.
    const char* rm = "posttrain::advantage::masked_row_mean";
    const char* nz = "posttrain::advantage::masked_normalize";
    PT_CHECK(throws_naming([&] { (void)adv::masked_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, t, n)); }, "posttrain::advantage::masked_mean",
                           "mask"));
    PT_CHECK(throws_naming([&] { adv::masked_row_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t),
                                                      pt::device_view<double, 1>(rows.data(), n - 1)); },
                           rm, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_row_mean(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t),
                                                      pt::device_view<double, 1>(dm.data(), n)); },
                           rm, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_normalize(pt::exec::cuda, dview(dx, n, t), dview(dm, n, t), dout(dm, n, t)); }, nz, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_normalize(pt::exec::cuda, dview(dx, n, t - 1), dview(dm, n, t - 1),
                                                       pt::device_view<double, 2>(dx.data() + 1, n, t - 1)); },
                           nz, "out"));
}

// Double: 1e-10 relative (device FMA contraction and summation order differ from the host); float:
// gae_test.cu's 2e-5 (a value can round to a neighbouring float).
PT_TEST("masked_whiten double: presets, in place, statistics, packed and chunked") { whiten_matrix<double>(1e-10, "double"); }
PT_TEST("masked_whiten float: presets, in place, statistics, packed and chunked") { whiten_matrix<float>(2e-5, "float"); }
PT_TEST("reinforce_pp double: every masking, presets, returns, statistics") { reinforce_pp_matrix<double>(1e-10, "double"); }
PT_TEST("reinforce_pp float: every masking, presets, returns, statistics") { reinforce_pp_matrix<float>(2e-5, "float"); }
PT_TEST("reinforce_pp_baseline double: uniform and ragged groups, presets") { baseline_matrix<double>(1e-10, "double"); }
PT_TEST("reinforce_pp_baseline float: uniform and ragged groups, presets") { baseline_matrix<float>(2e-5, "float"); }
PT_TEST("remax double: packed and chunked rows, with and without returns") { remax_matrix<double>(1e-10, "double"); }
PT_TEST("remax float: packed and chunked rows, with and without returns") { remax_matrix<float>(2e-5, "float"); }

PT_TEST("reinforce_pp family: strided views (and the staged path's same bits) and bool/uint8 masks") {
    const index_t n = 7, t = 2500;  // chunked rows
    const auto x = make_batch<double>(n, t, 400);
    std::vector<std::uint8_t> m8(x.m.size());
    for (std::size_t k = 0; k < m8.size(); ++k) m8[k] = x.m[k] != 0;
    column_major<double> sr(x.r, n, t), sa(std::vector<double>(x.r.size()), n, t), sg(std::vector<double>(x.r.size()), n, t);
    column_major<std::uint8_t> sm(m8, n, t);
    {
        const auto o = adv::reinforce_pp_options::verl(0.99);
        std::vector<double> a(x.r.size()), g(x.r.size());
        (void)adv::reinforce_pp(pt::exec::seq, hview(x.r, n, t), hview(m8, n, t), hout(a, n, t), hout(g, n, t), o);
        adv::reinforce_pp(pt::exec::cuda, sr.cview(), sm.cview(), sa.view(), sg.view(), o);
        pt::test::close_to(sa.host_rowmajor(), a, 1e-10, "reinforce_pp strided advantages");
        pt::test::close_to(sg.host_rowmajor(), g, 1e-10, "reinforce_pp strided returns");
        // Every view dense: the scan's staged path, the same arithmetic as the direct one above.
        device_vec<double> dr(x.r), da(x.r.size()), dg(x.r.size());
        device_vec<std::uint8_t> dm8(m8);
        adv::reinforce_pp(pt::exec::cuda, dview(dr, n, t), dview(dm8, n, t), dout(da, n, t), dout(dg, n, t), o);
        PT_CHECK_MSG(da.host() == sa.host_rowmajor(), "reinforce_pp staged and direct advantages differ");
        PT_CHECK_MSG(dg.host() == sg.host_rowmajor(), "reinforce_pp staged and direct returns differ");
    }
    {
        const auto o = adv::whiten_options::openrlhf();
        std::vector<double> w(x.r.size());
        (void)adv::masked_whiten(pt::exec::seq, hview(x.r, n, t), hview(m8, n, t), hout(w, n, t), o);
        adv::masked_whiten(pt::exec::cuda, sr.cview(), sm.cview(), sa.view(), o);
        pt::test::close_to(sa.host_rowmajor(), w, 1e-10, "masked_whiten strided");
        // Every view dense: the moments pass stages its tiles, the same bits as the direct path.
        device_vec<double> dx(x.r), dw(x.r.size());
        device_vec<std::uint8_t> dm8(m8);
        adv::masked_whiten(pt::exec::cuda, dview(dx, n, t), dview(dm8, n, t), dout(dw, n, t), o);
        PT_CHECK_MSG(dw.host() == sa.host_rowmajor(), "masked_whiten staged and direct differ");
        // Row-major values, column-major output: the apply kernel's general (non-dense) path.
        device_vec<double> dr(x.r);
        adv::masked_whiten(pt::exec::cuda, dview(dr, n, t), sm.cview(), sa.view(), o);
        pt::test::close_to(sa.host_rowmajor(), w, 1e-10, "masked_whiten mixed layouts");
    }
    {
        std::vector<double> a(x.r.size()), g(x.r.size());
        adv::remax(pt::exec::seq, hview(x.r, n, t), pt::tensor_view<const double, 1>(x.b.data(), n), hview(m8, n, t), hout(a, n, t),
                   hout(g, n, t));
        // Baselines strided too: every other element of a [2n] buffer.
        std::vector<double> b2(std::size_t(2 * n), 99.0);
        for (index_t i = 0; i < n; ++i) b2[std::size_t(2 * i)] = x.b[std::size_t(i)];
        device_vec<double> db(b2);
        adv::remax(pt::exec::cuda, sr.cview(), pt::device_view<const double, 1>(db.data(), {n}, {2}), sm.cview(), sa.view(), sg.view());
        pt::test::close_to(sa.host_rowmajor(), a, 1e-10, "remax strided advantages");
        pt::test::close_to(sg.host_rowmajor(), g, 1e-10, "remax strided returns");
        // Every 2-D view dense: the staged path (baseline subtracted), the same bits as the direct one.
        device_vec<double> dr(x.r), da(x.r.size()), dg(x.r.size());
        device_vec<std::uint8_t> dm8(m8);
        adv::remax(pt::exec::cuda, dview(dr, n, t), pt::device_view<const double, 1>(db.data(), {n}, {2}), dview(dm8, n, t),
                   dout(da, n, t), dout(dg, n, t));
        PT_CHECK_MSG(da.host() == sa.host_rowmajor(), "remax staged and direct advantages differ");
        PT_CHECK_MSG(dg.host() == sg.host_rowmajor(), "remax staged and direct returns differ");
    }
    {
        std::vector<char> mb(x.m.size());
        for (std::size_t k = 0; k < mb.size(); ++k) mb[k] = x.m[k] != 0;
        device_vec<char> dmb(mb);
        const pt::device_view<const bool, 2> bm(reinterpret_cast<const bool*>(dmb.data()), n, t);
        std::vector<double> a(x.r.size());
        const auto o = adv::reinforce_pp_baseline_options::verl();
        (void)adv::reinforce_pp_baseline(pt::exec::seq, pt::tensor_view<const double, 1>(x.b.data(), n), pt::uniform_groups{7},
                                         hview(m8, n, t), hout(a, n, t), o);
        device_vec<double> db(x.b);
        adv::reinforce_pp_baseline(pt::exec::cuda, db.cview(), pt::uniform_groups{7}, bm, sa.view(), o);
        pt::test::close_to(sa.host_rowmajor(), a, 1e-10, "reinforce_pp_baseline strided, bool mask");
        device_vec<double> da(x.r.size());  // dense mask and output: the staged broadcast, the same bits
        adv::reinforce_pp_baseline(pt::exec::cuda, db.cview(), pt::uniform_groups{7}, bm, dout(da, n, t), o);
        PT_CHECK_MSG(da.host() == sa.host_rowmajor(), "reinforce_pp_baseline staged and direct differ");
    }
}

PT_TEST("reinforce_pp family: run-to-run determinism and a caller workspace of exactly *_workspace_bytes") {
    const index_t n = 6, t = 9000;
    const auto x = make_batch<float>(n, t, 500);
    device_vec<float> dr(x.r), db(x.b), a1(x.r.size()), a2(x.r.size());
    device_vec<double> dm(x.m), s1(3), s2(3);
    auto same = [&](const std::string& what) {
        const auto h1 = a1.host(), h2 = a2.host();
        PT_CHECK_MSG(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(float)) == 0, what + ": outputs differ");
        const auto t1 = s1.host(), t2 = s2.host();
        PT_CHECK_MSG(std::memcmp(t1.data(), t2.data(), 3 * sizeof(double)) == 0, what + ": statistics differ");
    };
    {
        const auto o = adv::reinforce_pp_options::verl(0.99);
        const std::size_t bytes = adv::reinforce_pp_workspace_bytes(n, t);
        PT_CHECK(bytes > 0);
        device_vec<unsigned char> ws(bytes);
        adv::reinforce_pp(pt::exec::cuda, dview(dr, n, t), dview(dm, n, t), dout(a1, n, t), pt::none, o, s1.view());
        adv::reinforce_pp(pt::exec::cuda.with(ws.data(), bytes), dview(dr, n, t), dview(dm, n, t), dout(a2, n, t), pt::none, o, s2.view());
        same("reinforce_pp");
        PT_CHECK(throws_naming([&] { adv::reinforce_pp(pt::exec::cuda.with(ws.data(), bytes - 1), dview(dr, n, t), dview(dm, n, t),
                                                       dout(a2, n, t), pt::none, o); },
                               "posttrain::advantage::reinforce_pp", "policy"));
    }
    {
        const auto o = adv::whiten_options::verl();
        const std::size_t bytes = adv::masked_whiten_workspace_bytes(n, t);
        device_vec<unsigned char> ws(bytes);
        adv::masked_whiten(pt::exec::cuda, dview(dr, n, t), dview(dm, n, t), dout(a1, n, t), o, s1.view());
        adv::masked_whiten(pt::exec::cuda.with(ws.data(), bytes), dview(dr, n, t), dview(dm, n, t), dout(a2, n, t), o, s2.view());
        same("masked_whiten");
        PT_CHECK(throws_naming([&] { adv::masked_whiten(pt::exec::cuda.with(ws.data(), bytes - 1), dview(dr, n, t), dview(dm, n, t),
                                                        dout(a2, n, t), o); },
                               "posttrain::advantage::masked_whiten", "policy"));
    }
    {
        auto o = adv::reinforce_pp_baseline_options::verl();
        o.centring = adv::grpo_options{};
        o.centring.std_scale = adv::scale::batch;  // grpo needs scratch: carved from the caller's
        const std::size_t bytes = adv::reinforce_pp_baseline_workspace_bytes(n, t, o);
        PT_CHECK(bytes > adv::reinforce_pp_baseline_workspace_bytes(n, t));
        device_vec<unsigned char> ws(bytes);
        adv::reinforce_pp_baseline(pt::exec::cuda, db.cview(), pt::uniform_groups{3}, dview(dm, n, t), dout(a1, n, t), o, s1.view());
        adv::reinforce_pp_baseline(pt::exec::cuda.with(ws.data(), bytes), db.cview(), pt::uniform_groups{3}, dview(dm, n, t),
                                   dout(a2, n, t), o, s2.view());
        same("reinforce_pp_baseline");
        std::vector<float> a(x.r.size());
        (void)adv::reinforce_pp_baseline(pt::exec::seq, pt::tensor_view<const float, 1>(x.b.data(), n), pt::uniform_groups{3},
                                         hview(x.m, n, t), hout(a, n, t), o);
        pt::test::close_to(a2.host(), a, 2e-5, "reinforce_pp_baseline batch-scaled centring");
        PT_CHECK(throws_naming([&] { adv::reinforce_pp_baseline(pt::exec::cuda.with(ws.data(), bytes - 1), db.cview(), pt::uniform_groups{3},
                                                                dview(dm, n, t), dout(a2, n, t), o); },
                               "posttrain::advantage::reinforce_pp_baseline", "policy"));
    }
    {
        const std::size_t bytes = adv::remax_workspace_bytes(n, t);
        PT_CHECK(bytes > 0 && adv::remax_workspace_bytes(n, 2048) == 0);
        device_vec<unsigned char> ws(bytes);
        adv::remax(pt::exec::cuda, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(a1, n, t), pt::none);
        adv::remax(pt::exec::cuda.with(ws.data(), bytes), dview(dr, n, t), db.cview(), dview(dm, n, t), dout(a2, n, t), pt::none);
        const auto h1 = a1.host(), h2 = a2.host();
        PT_CHECK(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(float)) == 0);
    }
}

PT_TEST("reinforce_pp family: status word (degenerate whitening, non-finite inputs)") {
    const index_t n = 4, t = 16;
    auto x = make_batch<double>(n, t, 600);
    device_vec<double> dr(x.r), db(x.b), da(x.r.size()), dz(std::vector<double>(x.r.size(), 0.0)), st(3);
    // All masked under degenerate::raise (the host throws): status_empty_reduction, zeros, count 0.
    for (int f = 0; f < 3; ++f) {
        device_vec<std::uint32_t> status(1, 0u);
        device_vec<double> dfill(std::vector<double>(x.r.size(), 5.0));
        const auto p = pt::exec::cuda.with_status(status.data());
        if (f == 0) adv::reinforce_pp(p, dview(dr, n, t), dview(dz, n, t), dout(dfill, n, t), pt::none, adv::reinforce_pp_options::verl(), st.view());
        if (f == 1) adv::masked_whiten(p, dview(dr, n, t), dview(dz, n, t), dout(dfill, n, t), adv::whiten_options::verl(), st.view());
        if (f == 2)
            adv::reinforce_pp_baseline(p, db.cview(), pt::uniform_groups{2}, dview(dz, n, t), dout(dfill, n, t),
                                       adv::reinforce_pp_baseline_options::verl(), st.view());
        PT_CHECK_MSG(status.host()[0] == pt::status_empty_reduction, "function " + std::to_string(f));
        check_zeros(dfill.host(), "degenerate " + std::to_string(f));
        PT_CHECK(st.host()[2] == 0.0);
    }
    // One valid token under verl (ddof 1) raises on the host; under the default (degenerate::zeros) no bit.
    {
        std::vector<double> one(x.r.size(), 0.0);
        one[5] = 1;
        device_vec<double> d1(one);
        device_vec<std::uint32_t> s1(1, 0u), s2(1, 0u);
        adv::reinforce_pp(pt::exec::cuda.with_status(s1.data()), dview(dr, n, t), dview(d1, n, t), dout(da, n, t), pt::none,
                          adv::reinforce_pp_options::verl());
        adv::reinforce_pp(pt::exec::cuda.with_status(s2.data()), dview(dr, n, t), dview(d1, n, t), dout(da, n, t), pt::none);
        PT_CHECK(s1.host()[0] == pt::status_empty_reduction);
        PT_CHECK(s2.host()[0] == 0);
        check_zeros(da.host(), "one valid token");
    }
    // Non-finite token rewards: the host propagates (no check), so does the device, with no bit.
    x.r[std::size_t(2 * t + 3)] = std::nan("");
    x.r[std::size_t(3 * t + 7)] = INFINITY;
    device_vec<double> dn(x.r), dm(x.m), dg(x.r.size());
    {
        std::vector<double> a(x.r.size()), g(x.r.size());
        (void)adv::reinforce_pp(pt::exec::seq, hview(x.r, n, t), hview(x.m, n, t), hout(a, n, t), hout(g, n, t));
        device_vec<std::uint32_t> status(1, 0u);
        adv::reinforce_pp(pt::exec::cuda.with_status(status.data()), dview(dn, n, t), dview(dm, n, t), dout(da, n, t), dout(dg, n, t));
        PT_CHECK(status.host()[0] == 0);
        close_or_nonfinite(da.host(), a, 1e-10, "reinforce_pp non-finite advantages");
        close_or_nonfinite(dg.host(), g, 1e-10, "reinforce_pp non-finite returns");
    }
    {
        std::vector<double> a(x.r.size()), g(x.r.size());
        adv::remax(pt::exec::seq, hview(x.r, n, t), pt::tensor_view<const double, 1>(x.b.data(), n), hview(x.m, n, t), hout(a, n, t),
                   hout(g, n, t));
        device_vec<std::uint32_t> status(1, 0u);
        adv::remax(pt::exec::cuda.with_status(status.data()), dview(dn, n, t), db.cview(), dview(dm, n, t), dout(da, n, t), dout(dg, n, t));
        PT_CHECK(status.host()[0] == 0);
        close_or_nonfinite(da.host(), a, 1e-10, "remax non-finite advantages");
        close_or_nonfinite(dg.host(), g, 1e-10, "remax non-finite returns");
    }
    // A NaN sequence reward under the centring's nonfinite::raise: grpo's status_nonfinite_input.
    {
        auto b = x.b;
        b[1] = std::nan("");
        device_vec<double> dbn(b);
        device_vec<std::uint32_t> status(1, 0u);
        adv::reinforce_pp_baseline(pt::exec::cuda.with_status(status.data()), dbn.cview(), pt::uniform_groups{2}, dview(dm, n, t),
                                   dout(da, n, t));
        PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    }
}

PT_TEST("reinforce_pp family: host-detectable misuse throws naming function and argument") {
    const index_t n = 4, t = 16;
    const auto x = make_batch<double>(n, t, 700);
    device_vec<double> dr(x.r), dm(x.m), db(x.b), da(x.r.size()), dg(x.r.size()), st(3), st4(4);
    const char* rpp = "posttrain::advantage::reinforce_pp";
    const char* wh = "posttrain::advantage::masked_whiten";
    const char* bl = "posttrain::advantage::reinforce_pp_baseline";
    const char* rx = "posttrain::advantage::remax";
    const auto cu = pt::exec::cuda;
    // reinforce_pp
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, t, n), dout(da, n, t), pt::none); }, rpp, "mask"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t - 1), pt::none); }, rpp,
                           "advantages"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(dr, n, t), pt::none); }, rpp, "advantages"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(dm, n, t), pt::none); }, rpp, "advantages"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), dout(da, n, t)); }, rpp, "returns"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), dout(dr, n, t)); }, rpp, "returns"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), pt::none, {}, st4.view()); }, rpp,
                           "stats"));
    // masked_whiten: in place is allowed, a shifted overlap is not.
    PT_CHECK(throws_naming([&] { adv::masked_whiten(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t + 1)); }, wh, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_whiten(cu, dview(da, n, t - 1), dview(dm, n, t - 1),
                                                    pt::device_view<double, 2>(da.data() + 1, n, t - 1)); },
                           wh, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_whiten(cu, dview(dr, n, t), dview(dm, n, t), dout(dm, n, t)); }, wh, "out"));
    PT_CHECK(throws_naming([&] { adv::masked_whiten(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), {}, st4.view()); }, wh, "stats"));
    // The statistics over a view the call reads or writes (the finalize writes them before the apply).
    const pt::device_view<double, 1> st_over_a(da.data() + 5, 3);
    PT_CHECK(throws_naming([&] { adv::masked_whiten(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), {}, st_over_a); }, wh, "stats"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), pt::none, {}, st_over_a); }, rpp,
                           "stats"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp(cu, dview(dr, n, t), dview(dm, n, t), dout(da, n, t), dout(dg, n, t), {},
                                                   pt::device_view<double, 1>(dg.data(), 3)); },
                           rpp, "stats"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp_baseline(cu, db.cview(), pt::uniform_groups{2}, dview(dm, n, t), dout(da, n, t), {},
                                                            st_over_a); },
                           "posttrain::advantage::reinforce_pp_baseline", "stats"));
    // masked_mean / masked_var: a null device result.
    PT_CHECK(throws_naming([&] { adv::masked_mean(cu, dview(dr, n, t), dview(dm, n, t), pt::device_view<double, 0>()); },
                           "posttrain::advantage::masked_mean", "result"));
    PT_CHECK(throws_naming([&] { adv::masked_var(cu, dview(dr, n, t), dview(dm, n, t), pt::device_view<double, 0>()); },
                           "posttrain::advantage::masked_var", "result"));
    // reinforce_pp_baseline
    PT_CHECK(throws_naming([&] { adv::reinforce_pp_baseline(cu, db.cview(), pt::uniform_groups{2}, dview(dm, n - 1, t), dout(da, n - 1, t)); },
                           bl, "mask"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp_baseline(cu, db.cview(), pt::uniform_groups{2}, dview(dm, n, t), dout(da, n, t - 1)); },
                           bl, "advantages"));
    PT_CHECK(throws_naming([&] { adv::reinforce_pp_baseline(cu, db.cview(), pt::uniform_groups{2}, dview(dm, n, t), dout(dm, n, t)); }, bl,
                           "advantages"));
    // remax
    PT_CHECK(throws_naming([&] { adv::remax(cu, dview(dr, n, t), pt::device_view<const double, 1>(db.data(), n - 1), dview(dm, n, t),
                                            dout(da, n, t), pt::none); },
                           rx, "baselines"));
    PT_CHECK(throws_naming([&] { adv::remax(cu, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(dr, n, t), pt::none); }, rx, "advantages"));
    PT_CHECK(throws_naming([&] { adv::remax(cu, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(da, n, t), dout(da, n, t)); }, rx,
                           "returns"));
    PT_CHECK(throws_naming([&] { adv::remax(cu, dview(dr, n, t), db.cview(), dview(dm, n, t), dout(da, n, t), dout(dm, n, t)); }, rx,
                           "returns"));
}

// ---- CUDA-graph capture and replay (support.cuh) ---------------------------------------------------

namespace {

using pt::test::graph_case;
using pt::test::input_sets;
using pt::test::out_of;

template <class T>
input_sets<T> value_sets(std::size_t n, std::uint64_t seed) {
    auto draw = [n](std::uint64_t s) {
        std::mt19937_64 rng(s);
        std::normal_distribution<double> normal(0.0, 1.0);
        std::vector<T> v(n);
        for (auto& x : v) x = static_cast<T>(normal(rng));
        return v;
    };
    return input_sets<T>(draw(seed), draw(seed + 1000));
}
input_sets<std::uint8_t> mask_sets(std::size_t n, std::uint64_t seed) {
    auto draw = [n](std::uint64_t s) {
        std::mt19937_64 rng(s);
        std::bernoulli_distribution b(0.85);
        std::vector<std::uint8_t> v(n);
        for (auto& x : v) x = b(rng) ? 1 : 0;
        return v;
    };
    return input_sets<std::uint8_t>(draw(seed), draw(seed + 1000));
}

}  // namespace

PT_TEST("graph: masked_whiten, reinforce_pp, reinforce_pp_baseline, remax") {
    const index_t rows = 3, cols = 5000;  // chunked rows: the returns scan takes its chunk passes
    const std::size_t n = std::size_t(rows * cols);
    auto r = value_sets<float>(n, 41);
    auto b = value_sets<float>(std::size_t(rows), 42);
    auto m = mask_sets(n, 43);
    device_vec<float> a(n), g(n);
    device_vec<double> st(3);
    const pt::device_view<const float, 2> rv(r.dev.data(), rows, cols);
    const pt::device_view<const std::uint8_t, 2> mv(m.dev.data(), rows, cols);
    const pt::device_view<float, 2> av(a.data(), rows, cols), gv(g.data(), rows, cols);
    {
        graph_case c;
        c.name = "masked_whiten verl chunked";
        c.workspace = adv::masked_whiten_workspace_bytes(rows, cols);
        c.outputs = {out_of(a), out_of(st)};
        c.load = [&](int k) { r.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) { adv::masked_whiten(p, rv, mv, av, adv::whiten_options::verl(), st.view()); };
        pt::test::graph_replay_both(c);
    }
    {
        graph_case c;
        c.name = "reinforce_pp verl chunked";
        c.workspace = adv::reinforce_pp_workspace_bytes(rows, cols);
        c.outputs = {out_of(a), out_of(g), out_of(st)};
        c.load = [&](int k) { r.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) { adv::reinforce_pp(p, rv, mv, av, gv, adv::reinforce_pp_options::verl(0.99), st.view()); };
        pt::test::graph_replay_both(c);
    }
    {
        const index_t brows = 64, bcols = 700;  // packed; uniform groups of 8
        const std::size_t bn = std::size_t(brows * bcols);
        auto br = value_sets<double>(std::size_t(brows), 44);
        auto bm = mask_sets(bn, 45);
        device_vec<double> ba(bn);
        auto o = adv::reinforce_pp_baseline_options::verl();
        o.centring.std_scale = adv::scale::batch;  // grpo's scratch inside the caller's workspace
        graph_case c;
        c.name = "reinforce_pp_baseline verl, batch-scaled centring";
        c.workspace = adv::reinforce_pp_baseline_workspace_bytes(brows, bcols, o);
        c.outputs = {out_of(ba), out_of(st)};
        c.load = [&](int k) { br.load(k), bm.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) {
            adv::reinforce_pp_baseline(p, br.dev.cview(), pt::uniform_groups{8}, pt::device_view<const std::uint8_t, 2>(bm.dev.data(), brows, bcols),
                                       pt::device_view<double, 2>(ba.data(), brows, bcols), o, st.view());
        };
        pt::test::graph_replay_both(c);
    }
    {
        graph_case c;
        c.name = "remax chunked";
        c.workspace = adv::remax_workspace_bytes(rows, cols);
        c.outputs = {out_of(a), out_of(g)};
        c.load = [&](int k) { r.load(k), b.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) { adv::remax(p, rv, b.dev.cview(), mv, av, gv); };
        pt::test::graph_replay_both(c);
    }
}

PT_TEST("graph: masked_mean, masked_var (device results), masked_row_mean, masked_normalize") {
    const index_t rows = 40, cols = 900;
    const std::size_t n = std::size_t(rows * cols);
    auto x = value_sets<float>(n, 46);
    auto m = mask_sets(n, 47);
    device_vec<double> mean(1), var(1);
    device_vec<float> row_means(static_cast<std::size_t>(rows)), out(n);
    const pt::device_view<const float, 2> xv(x.dev.data(), rows, cols);
    const pt::device_view<const std::uint8_t, 2> mv(m.dev.data(), rows, cols);
    {
        graph_case c;
        c.name = "masked_mean and masked_var verl";
        c.workspace = adv::masked_var_workspace_bytes(rows, cols);
        c.outputs = {out_of(mean), out_of(var)};
        c.load = [&](int k) { x.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) {
            adv::masked_mean(p, xv, mv, pt::device_view<double, 0>(mean.data()), adv::masked_stats_options::verl());
            adv::masked_var(p, xv, mv, pt::device_view<double, 0>(var.data()), adv::masked_stats_options::verl());
        };
        pt::test::graph_replay_both(c);
    }
    {
        graph_case c;
        c.name = "masked_row_mean and masked_normalize";
        c.workspace = 0;
        c.outputs = {out_of(row_means), out_of(out)};
        c.load = [&](int k) { x.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) {
            adv::masked_row_mean(p, xv, mv, row_means.view());
            adv::masked_normalize(p, xv, mv, pt::device_view<float, 2>(out.data(), rows, cols));
        };
        pt::test::graph_replay_both(c);
    }
}
