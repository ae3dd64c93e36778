// logits::token_log_probs and token_log_probs_backward on exec::cuda against the host oracle
// (exec::seq, token_log_probs.hpp, in double on the same rounded inputs): float, double, __half and
// __nv_bfloat16 logits; V from 1 to 151936 (warp teams up to 2048, block teams above, both sides of
// the boundary); contiguous rows (16-byte packs), rows padded so that they start misaligned (the
// element-wise head and tail of the pack path) and a strided vocabulary (the element path); the padding
// holds NaN (never read) and the gradient's padding a sentinel (never written); ignore_index, -inf
// entries, a -inf label, an argmax label far above the rest; entropy-only calls (labels = none);
// output dtypes mixed (double log-probs, float entropy, double lse); int64, int32, uint8 and uint64
// labels; the backward with recomputed and with saved statistics, from the workspace or
// cudaMallocAsync; the status word (NaN, +inf, all -inf positions under raise and propagate; labels
// out of range); run-to-run bitwise determinism; CUDA-graph capture and replay; host-detectable
// misuse. Under QUICK=1 (compute-sanitizer runs) the vocabularies above 5000 are left out.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <posttrain/logits/token_log_probs.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace lg = posttrain::logits;
using pt::index_t;
using pt::test::device_vec;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

template <class T>
T to_t(double x) {
    return pt::detail::from_double<T>(x);
}
template <class T>
double to_d(T x) {
    return pt::detail::to_double(x);
}

// How the [B, T, V] logits sit in device memory.
enum class layout { contiguous, padded_rows, strided_vocab };

// One batch: logits (already rounded to the tested dtype), labels, upstream gradients.
struct batch {
    index_t B = 0, T = 0, V = 0;
    std::vector<double> z;            // [B, T, V] dense, the values the device sees
    std::vector<std::int64_t> y;      // [B, T]
    std::vector<double> gl, gh;       // upstream gradients [B, T]
};

// Normal logits (scale 3, plus offset); position 0 has an argmax label 25 above the rest; position 1 a -inf label
// (V > 1); some -inf entries; every 5th position ignored (-100); the rest random labels.
template <class T>
batch make_batch(index_t B, index_t Tn, index_t V, std::uint64_t seed, double offset = 0.0) {
    batch d;
    d.B = B, d.T = Tn, d.V = V;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0.0, 3.0);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    d.z.resize(std::size_t(B * Tn * V));
    for (auto& x : d.z) x = to_d(to_t<T>(offset + n(rng)));
    d.y.resize(std::size_t(B * Tn));
    for (index_t p = 0; p < B * Tn; ++p) {
        double* row = d.z.data() + p * V;
        d.y[std::size_t(p)] = p % 5 == 4 ? -100 : std::int64_t(rng() % std::uint64_t(V));
        if (V > 8 && p % 3 == 2)
            for (int k = 0; k < 3; ++k) row[rng() % std::uint64_t(V)] = -inf;
    }
    if (B * Tn > 0) {
        double mx = -inf;
        for (index_t v = 0; v < V; ++v) mx = std::fmax(mx, d.z[std::size_t(v)]);
        d.y[0] = std::int64_t(V / 2);
        d.z[std::size_t(V / 2)] = to_d(to_t<T>(mx + 25.0));
    }
    if (B * Tn > 1 && V > 1) {
        d.y[1] = 0;
        d.z[std::size_t(V)] = -inf;
    }
    for (index_t p = 0; p < B * Tn; ++p) {
        d.gl.push_back(u(rng));
        d.gh.push_back(u(rng));
    }
    return d;
}

// The logits in device memory in a given layout (padding NaN, never read), and a gradient buffer of
// the same layout (padding holds a sentinel, never written).
template <class T>
struct device_logits {
    index_t ext[3], str[3];
    std::size_t off = 0, total = 0;
    std::vector<T> host;
    T* d = nullptr;
    T* g = nullptr;
    static constexpr double sentinel = 7.0;

    device_logits(const batch& b, layout l) {
        ext[0] = b.B, ext[1] = b.T, ext[2] = b.V;
        index_t vs = 1, row = b.V;
        if (l == layout::padded_rows) row = b.V + 3, off = 1;  // rows start at every phase mod 16 bytes
        if (l == layout::strided_vocab) vs = 2, row = 2 * b.V + 1;
        str[2] = vs, str[1] = row, str[0] = row * b.T + (l == layout::contiguous ? 0 : 5);
        total = off + std::size_t(str[0] * b.B) + 8;
        host.assign(total, to_t<T>(nan_v));
        for (index_t i = 0; i < b.B; ++i)
            for (index_t t = 0; t < b.T; ++t)
                for (index_t v = 0; v < b.V; ++v)
                    host[off + std::size_t(i * str[0] + t * str[1] + v * str[2])] = to_t<T>(b.z[std::size_t((i * b.T + t) * b.V + v)]);
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&d, total * sizeof(T)));
        POSTTRAIN_CUDA_CHECK(cudaMemcpy(d, host.data(), total * sizeof(T), cudaMemcpyHostToDevice));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&g, total * sizeof(T)));
        reset_grad();
    }
    ~device_logits() {
        cudaFree(d);
        cudaFree(g);
    }
    device_logits(const device_logits&) = delete;
    device_logits& operator=(const device_logits&) = delete;

    void reset_grad() const {
        const std::vector<T> s(total, to_t<T>(sentinel));
        POSTTRAIN_CUDA_CHECK(cudaMemcpy(g, s.data(), total * sizeof(T), cudaMemcpyHostToDevice));
    }
    pt::device_view<const T, 3> view() const { return pt::device_view<const T, 3>(d + off, ext, str); }
    pt::device_view<T, 3> grad_view() const { return pt::device_view<T, 3>(g + off, ext, str); }
    // The gradient as [B, T, V] doubles; false if the padding was written.
    bool grad_host(std::vector<double>& out) const {
        std::vector<T> h(total);
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        POSTTRAIN_CUDA_CHECK(cudaMemcpy(h.data(), g, total * sizeof(T), cudaMemcpyDeviceToHost));
        out.assign(std::size_t(ext[0] * ext[1] * ext[2]), 0.0);
        std::vector<char> used(total, 0);
        for (index_t i = 0; i < ext[0]; ++i)
            for (index_t t = 0; t < ext[1]; ++t)
                for (index_t v = 0; v < ext[2]; ++v) {
                    const std::size_t k = off + std::size_t(i * str[0] + t * str[1] + v * str[2]);
                    used[k] = 1;
                    out[std::size_t((i * ext[1] + t) * ext[2] + v)] = to_d(h[k]);
                }
        for (std::size_t k = 0; k < total; ++k)
            if (!used[k] && to_d(h[k]) != sentinel) return false;
        return true;
    }
};

// The host oracle's forward (propagate: bad positions are NaN instead of raising).
struct forward_ref {
    std::vector<double> lp, h, lse;
};

forward_ref host_forward(const batch& b, bool labels, std::int64_t ignore = -100) {
    forward_ref r;
    const std::size_t P = std::size_t(b.B * b.T);
    r.lp.assign(P, 0.0), r.h.assign(P, 0.0), r.lse.assign(P, 0.0);
    lg::token_log_probs_options o;
    o.ignore_index = ignore;
    o.nonfinite_logits = pt::advantage::nonfinite::propagate;
    const pt::tensor_view<const double, 3> z(b.z.data(), b.B, b.T, b.V);
    const pt::tensor_view<double, 2> lp(r.lp.data(), b.B, b.T), h(r.h.data(), b.B, b.T), lse(r.lse.data(), b.B, b.T);
    if (labels) lg::token_log_probs(pt::exec::seq, z, pt::tensor_view<const std::int64_t, 2>(b.y.data(), b.B, b.T), lp, h, lse, o);
    else lg::token_log_probs(pt::exec::seq, z, pt::none, pt::none, h, lse, o);
    return r;
}

std::vector<double> host_backward(const batch& b, bool labels, bool with_gl, bool with_gh) {
    std::vector<double> g(b.z.size(), 0.0);
    lg::token_log_probs_options o;
    o.nonfinite_logits = pt::advantage::nonfinite::propagate;
    const pt::tensor_view<const double, 3> z(b.z.data(), b.B, b.T, b.V);
    const pt::tensor_view<double, 3> gv(g.data(), b.B, b.T, b.V);
    const pt::tensor_view<const double, 2> ul(b.gl.data(), b.B, b.T), uh(b.gh.data(), b.B, b.T);
    const pt::tensor_view<const std::int64_t, 2> y(b.y.data(), b.B, b.T);
    if (labels && with_gl && with_gh) lg::token_log_probs_backward(pt::exec::seq, z, y, ul, uh, gv, pt::none, pt::none, o);
    else if (labels && with_gl) lg::token_log_probs_backward(pt::exec::seq, z, y, ul, pt::none, gv, pt::none, pt::none, o);
    else if (labels) lg::token_log_probs_backward(pt::exec::seq, z, y, pt::none, uh, gv, pt::none, pt::none, o);
    else lg::token_log_probs_backward(pt::exec::seq, z, pt::none, pt::none, uh, gv, pt::none, pt::none, o);
    return g;
}

// |got - want| <= tol (|want| + floor); NaN matches NaN, infinities match exactly.
bool close_abs(const std::vector<double>& got, const std::vector<double>& want, double tol, double floor,
               const std::string& what) {
    ++pt::test::state().checks;
    if (got.size() != want.size()) {
        pt::test::report_failure(__FILE__, __LINE__, what + ": size mismatch");
        return false;
    }
    int bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        const bool ok = (std::isnan(g) && std::isnan(w)) || g == w || std::fabs(g - w) <= tol * (std::fabs(w) + floor);
        if (!ok && bad++ < 5) {
            char buf[320];
            std::snprintf(buf, sizeof buf, "%s: index %zu: got %.17g, want %.17g", what.c_str(), i, g, w);
            pt::test::report_failure(__FILE__, __LINE__, buf);
        }
    }
    return bad == 0;
}

template <class T>
constexpr bool is_double = std::is_same_v<T, double>;

// Tolerances: the forward accumulates in float for float/half/bf16 (fast exp, ~1e-6 relative), in
// double for double; the gradient is rounded to T.
template <class T>
double fwd_tol() {
    return is_double<T> ? 1e-11 : 3e-5;
}
template <class T>
double grad_tol() {
    if constexpr (is_double<T>) return 1e-10;
    else if constexpr (std::is_same_v<T, float>) return 1e-4;
    else if constexpr (std::is_same_v<T, __half>) return 3e-3;
    else return 2e-2;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v)
        if (std::isfinite(x)) m = std::fmax(m, std::fabs(x));
    return m;
}

// The device forward with mixed output dtypes (double log-probs, float entropy, double lse).
struct forward_out {
    std::vector<double> lp, h, lse;
    std::uint32_t status = 0;
};

template <class T, class Labels>
forward_out device_forward(const device_logits<T>& dl, const Labels& labels, index_t B, index_t Tn,
                           const lg::token_log_probs_options& o = {}) {
    const std::size_t P = std::size_t(B * Tn);
    device_vec<double> lp(P, -1.0), lse(P, -1.0);
    device_vec<float> h(P, -1.0f);
    device_vec<std::uint32_t> status(1, 0u);
    const auto pol = pt::exec::cuda.with_status(status.data());
    if constexpr (std::is_same_v<Labels, pt::none_t>)
        lg::token_log_probs(pol, dl.view(), pt::none, pt::none, pt::device_view<float, 2>(h.data(), B, Tn),
                            pt::device_view<double, 2>(lse.data(), B, Tn), o);
    else
        lg::token_log_probs(pol, dl.view(), labels, pt::device_view<double, 2>(lp.data(), B, Tn),
                            pt::device_view<float, 2>(h.data(), B, Tn), pt::device_view<double, 2>(lse.data(), B, Tn), o);
    forward_out r;
    r.lp = lp.host();
    r.lse = lse.host();
    for (float x : h.host()) r.h.push_back(double(x));
    r.status = status.host()[0];
    return r;
}

template <class T>
void check_forward(const batch& b, layout l, const std::string& what) {
    const device_logits<T> dl(b, l);
    const device_vec<std::int64_t> y(b.y);
    const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), b.B, b.T);
    const forward_ref want = host_forward(b, true);
    const forward_out got = device_forward(dl, labels, b.B, b.T);
    // The entropy is written to a float view: its rounding (6e-8) bounds the double case too.
    const double h_tol = fwd_tol<T>() > 2e-7 ? fwd_tol<T>() : 2e-7;
    close_abs(got.lp, want.lp, fwd_tol<T>(), 1.0, what + " log_probs");
    close_abs(got.h, want.h, h_tol, 1.0, what + " entropy");
    close_abs(got.lse, want.lse, fwd_tol<T>(), 1.0, what + " lse");
    PT_CHECK_MSG(got.status == 0u, what);
    // Entropy only: every position scored.
    const forward_ref want_h = host_forward(b, false);
    const forward_out got_h = device_forward(dl, pt::none, b.B, b.T);
    close_abs(got_h.h, want_h.h, h_tol, 1.0, what + " entropy (no labels)");
    close_abs(got_h.lse, want_h.lse, fwd_tol<T>(), 1.0, what + " lse (no labels)");
}

// The backward in both modes against the host's (recomputed, double) gradient.
template <class T>
void check_backward(const batch& b, layout l, const std::string& what) {
    const device_logits<T> dl(b, l);
    const index_t B = b.B, Tn = b.T;
    const device_vec<std::int64_t> y(b.y);
    const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), B, Tn);
    const device_vec<double> ul(b.gl);
    std::vector<float> ghf(b.gh.begin(), b.gh.end());
    const device_vec<float> uh(ghf);
    batch bf = b;  // the host sees the float-rounded entropy upstream the device reads
    for (std::size_t k = 0; k < bf.gh.size(); ++k) bf.gh[k] = double(ghf[k]);
    const std::vector<double> want = host_backward(bf, true, true, true);
    const double scale = max_abs(want);
    const auto gl_v = pt::device_view<const double, 2>(ul.data(), B, Tn);
    const auto gh_v = pt::device_view<const float, 2>(uh.data(), B, Tn);
    std::vector<double> got;
    // Recomputed statistics, scratch from cudaMallocAsync.
    {
        device_vec<std::uint32_t> status(1, 0u);
        lg::token_log_probs_backward(pt::exec::cuda.with_status(status.data()), dl.view(), labels, gl_v, gh_v, dl.grad_view());
        PT_CHECK_MSG(dl.grad_host(got), what + ": recomputed: gradient padding written");
        close_abs(got, want, grad_tol<T>(), 1e-3 * scale, what + " grad (recomputed)");
        PT_CHECK_MSG(status.host()[0] == 0u, what);
    }
    // Recomputed, scratch from an exact caller workspace; bitwise equal to the first run.
    {
        const std::size_t bytes = lg::token_log_probs_backward_workspace_bytes(B, Tn, b.V, false);
        device_vec<unsigned char> ws(bytes == 0 ? 1 : bytes);
        dl.reset_grad();
        lg::token_log_probs_backward(pt::exec::cuda.with(ws.data(), bytes), dl.view(), labels, gl_v, gh_v, dl.grad_view());
        std::vector<double> again;
        PT_CHECK(dl.grad_host(again));
        PT_CHECK_MSG(std::memcmp(again.data(), got.data(), got.size() * sizeof(double)) == 0,
                     what + ": recomputed backward not bitwise reproducible");
    }
    // Saved statistics from the device forward (double lse; the entropy float, double for double logits
    // so that the double comparison is not bounded by its rounding).
    {
        using S = std::conditional_t<is_double<T>, double, float>;
        device_vec<double> lse(std::size_t(B * Tn), 0.0);
        device_vec<S> h(std::size_t(B * Tn), S(0));
        lg::token_log_probs(pt::exec::cuda, dl.view(), labels, pt::none, pt::device_view<S, 2>(h.data(), B, Tn),
                            pt::device_view<double, 2>(lse.data(), B, Tn));
        dl.reset_grad();
        device_vec<std::uint32_t> status(1, 0u);
        lg::token_log_probs_backward(pt::exec::cuda.with_status(status.data()), dl.view(), labels, gl_v, gh_v, dl.grad_view(),
                                     pt::device_view<const double, 2>(lse.data(), B, Tn),
                                     pt::device_view<const S, 2>(h.data(), B, Tn));
        std::vector<double> saved;
        PT_CHECK_MSG(dl.grad_host(saved), what + ": saved: gradient padding written");
        // 1 - p_y = -expm1(z_y - lse) carries the saved lse's rounding, half an ulp of |lse|, as an
        // absolute error (the recomputed path has 1 - p_y exactly): for float statistics ~1e-7 |lse|
        // relative to the scale, for double ones an allowance of ulp(lse) times the label's upstream
        // (measured on an H100: 1.8e-13 at logits ~1e4, whose ulp is 1.8e-12).
        double lse_ulp = 0;
        for (const double l : lse.host())
            if (std::isfinite(l) && l != 0) lse_ulp = std::fmax(lse_ulp, std::ldexp(1.0, std::ilogb(l) - 52));
        const double label_floor = is_double<T> ? lse_ulp * max_abs(b.gl) / grad_tol<T>() : 0.0;
        close_abs(saved, want, grad_tol<T>() + (is_double<T> ? 0.0 : 2e-4), 1e-3 * scale + label_floor, what + " grad (saved)");
        PT_CHECK_MSG(status.host()[0] == 0u, what);
    }
    // Only one upstream each; and entropy only (labels none).
    {
        dl.reset_grad();
        lg::token_log_probs_backward(pt::exec::cuda, dl.view(), labels, gl_v, pt::none, dl.grad_view());
        const std::vector<double> w1 = host_backward(bf, true, true, false);
        std::vector<double> g1;
        PT_CHECK(dl.grad_host(g1));
        close_abs(g1, w1, grad_tol<T>(), 1e-3 * max_abs(w1), what + " grad (log-probs upstream only)");
        dl.reset_grad();
        lg::token_log_probs_backward(pt::exec::cuda, dl.view(), pt::none, pt::none, gh_v, dl.grad_view());
        const std::vector<double> w2 = host_backward(bf, false, false, true);
        std::vector<double> g2;
        PT_CHECK(dl.grad_host(g2));
        close_abs(g2, w2, grad_tol<T>(), 1e-3 * max_abs(w2), what + " grad (entropy only, no labels)");
    }
}

// Both sides of the warp/block team boundary (2048), tiny rows (all head, no pack), rows of a few packs.
std::vector<index_t> vocab_sizes() {
    if (pt::test::quick()) return {1, 7, 33, 2048, 2049, 5000};
    return {1, 2, 7, 33, 1000, 2048, 2049, 5000, 32771};
}

template <class T>
void forward_all(const char* name) {
    std::uint64_t seed = 1;
    for (index_t V : vocab_sizes())
        for (layout l : {layout::contiguous, layout::padded_rows, layout::strided_vocab}) {
            const batch b = make_batch<T>(3, 7, V, seed++);
            check_forward<T>(b, l, std::string(name) + " V=" + std::to_string(V) + " layout " + std::to_string(int(l)));
        }
    if (pt::test::quick()) return;
    const batch big = make_batch<T>(1, 3, 151936, 99);
    check_forward<T>(big, layout::contiguous, std::string(name) + " V=151936");
    check_forward<T>(big, layout::padded_rows, std::string(name) + " V=151936 padded");
}

template <class T>
void backward_all(const char* name) {
    std::uint64_t seed = 100;
    for (index_t V : vocab_sizes())
        for (layout l : {layout::contiguous, layout::padded_rows, layout::strided_vocab}) {
            const batch b = make_batch<T>(2, 6, V, seed++);
            check_backward<T>(b, l, std::string(name) + " V=" + std::to_string(V) + " layout " + std::to_string(int(l)));
        }
    if (pt::test::quick()) return;
    const batch big = make_batch<T>(1, 3, 151936, 199);
    check_backward<T>(big, layout::contiguous, std::string(name) + " V=151936");
}

// Logits far from 0 (offset 1e3 and 1e4, float and double): the backward forms log p_v = (z_v - m) -
// log s (or a double saved lse split into hi + lo), whose error does not grow with the offset, so the
// offset-0 tolerances hold (grad_tol<float> = 1e-4: float accumulation and __expf, ~1e-6). Subtracting a
// float-rounded lse instead would err by up to half its ulp in every log p_v: 3e-5 relative at 1e3,
// 5e-4 at 1e4 (above the tolerance; a host emulation of 5000 float logits at 1e4 gave 1.6e-4, the new
// forms 1.1e-7).
template <class T>
void offset_all(const char* name) {
    std::uint64_t seed = 300;
    for (const double offset : {1e3, 1e4})
        for (const index_t V : {index_t{300}, index_t{5000}}) {
            const batch b = make_batch<T>(2, 5, V, seed++, offset);
            const std::string what = std::string(name) + " offset " + std::to_string(int(offset)) + " V=" + std::to_string(V);
            check_forward<T>(b, layout::contiguous, what);
            check_backward<T>(b, layout::contiguous, what);
            check_backward<T>(b, layout::padded_rows, what + " padded");
        }
}

// Logits masked with the dtype's lowest finite value (HF's masked_fill(mask, torch.finfo(dtype).min))
// instead of -inf: most of each row masked, so that whole chunks, whole thread shares and whole warps
// hold nothing but the mask (a state whose maximum is -3.4e38, rescaled to the live maximum with
// c = exp(-3.4e38 - m) = 0: it must add exactly 0, not 0 * -inf = NaN); the labels are live. Position
// 1 has only its label live (p = 1). The results are those of the same rows masked with -inf: bitwise
// on the device (every masked term is an exact 0 either way) and the host oracle's within the usual
// tolerances; no status bit.
// torch.finfo(dtype).min (std::numeric_limits has no __half / __nv_bfloat16 specialisation).
template <class T>
double lowest_of() {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return -3.3895313892515355e38;  // 0xff7f
    else if constexpr (std::is_same_v<T, __half>) return -65504.0;
    else return double(std::numeric_limits<T>::lowest());
}

template <class T>
void lowest_mask_all(const char* name) {
    const double lowest = lowest_of<T>();
    for (const index_t V : {index_t{300}, index_t{5000}}) {  // a warp team and a block team
        batch inf_b = make_batch<T>(2, 4, V, 400 + std::uint64_t(V));
        for (index_t p = 0; p < 8; ++p) {
            double* row = inf_b.z.data() + p * V;
            std::int64_t& y = inf_b.y[std::size_t(p)];
            if (y < 0) y = std::int64_t(p);  // every position scored
            for (index_t v = 0; v < V; ++v) {
                const bool live = v == y || (p != 1 && (v < 24 || v % 97 == 5));
                if (!live) row[v] = -inf;
            }
            if (!(row[y] > -inf)) row[y] = 1.0;
        }
        batch low_b = inf_b;
        for (auto& x : low_b.z)
            if (x == -inf) x = lowest;
        for (const layout l : {layout::contiguous, layout::padded_rows}) {
            const std::string what = std::string(name) + " finfo.min mask V=" + std::to_string(V) + " layout " + std::to_string(int(l));
            const device_logits<T> di(inf_b, l), dm(low_b, l);
            const device_vec<std::int64_t> y(inf_b.y);
            const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), 2, 4);
            const forward_out ri = device_forward(di, labels, 2, 4), rm = device_forward(dm, labels, 2, 4);
            PT_CHECK_MSG(rm.status == 0u, what);
            PT_CHECK_MSG(std::memcmp(ri.lp.data(), rm.lp.data(), ri.lp.size() * sizeof(double)) == 0, what + " log_probs bits");
            PT_CHECK_MSG(std::memcmp(ri.h.data(), rm.h.data(), ri.h.size() * sizeof(double)) == 0, what + " entropy bits");
            PT_CHECK_MSG(std::memcmp(ri.lse.data(), rm.lse.data(), ri.lse.size() * sizeof(double)) == 0, what + " lse bits");
            const forward_ref want = host_forward(inf_b, true);
            const double h_tol = fwd_tol<T>() > 2e-7 ? fwd_tol<T>() : 2e-7;
            close_abs(rm.lp, want.lp, fwd_tol<T>(), 1.0, what + " log_probs");
            close_abs(rm.h, want.h, h_tol, 1.0, what + " entropy");
            close_abs(rm.lse, want.lse, fwd_tol<T>(), 1.0, what + " lse");
            PT_CHECK_MSG(rm.lp[1] == 0.0 && rm.h[1] == 0.0, what + " only the label live");
            const forward_out hm = device_forward(dm, pt::none, 2, 4);
            PT_CHECK_MSG(hm.status == 0u, what + " (no labels)");
            close_abs(hm.h, host_forward(inf_b, false).h, h_tol, 1.0, what + " entropy (no labels)");
            // The backward, recomputed and from saved statistics: the host's gradient (the masked
            // entries get exactly 0).
            const device_vec<double> ul(inf_b.gl), uh(inf_b.gh);
            const auto gl_v = pt::device_view<const double, 2>(ul.data(), 2, 4);
            const auto gh_v = pt::device_view<const double, 2>(uh.data(), 2, 4);
            const std::vector<double> gw = host_backward(inf_b, true, true, true);
            for (const bool saved : {false, true}) {
                device_vec<double> lse(std::size_t(8), 0.0), h(std::size_t(8), 0.0);
                device_vec<std::uint32_t> status(1, 0u);
                const auto pol = pt::exec::cuda.with_status(status.data());
                dm.reset_grad();
                if (saved) {
                    lg::token_log_probs(pt::exec::cuda, dm.view(), labels, pt::none, pt::device_view<double, 2>(h.data(), 2, 4),
                                        pt::device_view<double, 2>(lse.data(), 2, 4));
                    lg::token_log_probs_backward(pol, dm.view(), labels, gl_v, gh_v, dm.grad_view(),
                                                 pt::device_view<const double, 2>(lse.data(), 2, 4),
                                                 pt::device_view<const double, 2>(h.data(), 2, 4));
                } else {
                    lg::token_log_probs_backward(pol, dm.view(), labels, gl_v, gh_v, dm.grad_view());
                }
                std::vector<double> g;
                PT_CHECK(dm.grad_host(g));
                PT_CHECK_MSG(status.host()[0] == 0u, what + (saved ? " saved" : " recomputed"));
                close_abs(g, gw, grad_tol<T>() + (saved && !is_double<T> ? 2e-4 : 0.0), 1e-3 * max_abs(gw),
                          what + (saved ? " grad (saved)" : " grad (recomputed)"));
                for (std::size_t k = 0; k < g.size(); ++k)
                    if (low_b.z[k] == lowest) PT_CHECK_MSG(g[k] == 0.0, what + " masked entry's gradient");
            }
        }
    }
}

}  // namespace

PT_TEST("token_log_probs logits at offsets 1e3 and 1e4 (float, double)") {
    offset_all<float>("float");
    offset_all<double>("double");
}

PT_TEST("token_log_probs logits masked with finfo.min (float, double, bf16)") {
    lowest_mask_all<float>("float");
    lowest_mask_all<double>("double");
    lowest_mask_all<__nv_bfloat16>("bf16");
}

PT_TEST("token_log_probs_backward: a non-finite upstream gradient gives a whole NaN row") {
    for (const index_t V : {index_t{300}, index_t{5000}}) {  // a warp team and a block team
        batch b = make_batch<float>(2, 4, V, 500 + std::uint64_t(V));
        b.y[2] = 1, b.y[3] = 2;  // scored positions
        b.gl[2] = nan_v;
        b.gh[3] = inf;
        // -inf entries (p = 0, whose gradient would otherwise be an exact 0) in both rows.
        b.z[std::size_t(2 * V + 7)] = b.z[std::size_t(3 * V + 9)] = -inf;
        const device_logits<float> dl(b, layout::contiguous);
        const device_vec<std::int64_t> y(b.y);
        const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), 2, 4);
        const device_vec<double> ul(b.gl), uh(b.gh);
        batch ok = b;  // the host oracle for the other rows (it raises on a non-finite upstream)
        ok.gl[2] = ok.gh[3] = 0.0;
        const std::vector<double> want = host_backward(ok, true, true, true);
        for (const bool raise : {true, false}) {
            lg::token_log_probs_options o;
            o.nonfinite_logits = raise ? pt::advantage::nonfinite::raise : pt::advantage::nonfinite::propagate;
            dl.reset_grad();
            device_vec<std::uint32_t> status(1, 0u);
            lg::token_log_probs_backward(pt::exec::cuda.with_status(status.data()), dl.view(), labels,
                                         pt::device_view<const double, 2>(ul.data(), 2, 4),
                                         pt::device_view<const double, 2>(uh.data(), 2, 4), dl.grad_view(), pt::none, pt::none, o);
            std::vector<double> g;
            PT_CHECK(dl.grad_host(g));
            const std::string what = "V=" + std::to_string(V) + (raise ? " raise" : " propagate");
            PT_CHECK_MSG((status.host()[0] & pt::status_nonfinite_input) != 0, what);
            for (index_t p = 0; p < 8; ++p) {
                bool all_nan = true;
                for (index_t v = 0; v < V; ++v) all_nan &= std::isnan(g[std::size_t(p * V + v)]);
                if (p == 2 || p == 3) {
                    PT_CHECK_MSG(all_nan, what + " row " + std::to_string(p));
                } else {
                    const std::vector<double> gr(g.begin() + p * V, g.begin() + (p + 1) * V),
                        wr(want.begin() + p * V, want.begin() + (p + 1) * V);
                    close_abs(gr, wr, grad_tol<float>(), 1e-3 * max_abs(want), what + " row " + std::to_string(p));
                }
            }
        }
    }
}

PT_TEST("token_log_probs forward float") { forward_all<float>("float"); }
PT_TEST("token_log_probs forward double") { forward_all<double>("double"); }
PT_TEST("token_log_probs forward half") { forward_all<__half>("half"); }
PT_TEST("token_log_probs forward bfloat16") { forward_all<__nv_bfloat16>("bf16"); }
PT_TEST("token_log_probs backward float") { backward_all<float>("float"); }
PT_TEST("token_log_probs backward double") { backward_all<double>("double"); }
PT_TEST("token_log_probs backward half") { backward_all<__half>("half"); }
PT_TEST("token_log_probs backward bfloat16") { backward_all<__nv_bfloat16>("bf16"); }

PT_TEST("token_log_probs empty batch and other label dtypes") {
    // B * T = 0: nothing launched, nothing written.
    {
        const batch b = make_batch<float>(0, 4, 100, 5);
        const device_logits<float> dl(b, layout::contiguous);
        device_vec<std::int64_t> y(1, 0);
        const forward_out r = device_forward(dl, pt::device_view<const std::int64_t, 2>(y.data(), 0, 4), 0, 4);
        PT_CHECK(r.lp.empty() && r.status == 0u);
    }
    // int32, uint8 labels and uint64 labels (one above INT64_MAX: out of range, never the ignore index).
    const batch b = make_batch<float>(2, 5, 200, 6);
    const device_logits<float> dl(b, layout::contiguous);
    const forward_ref want = host_forward(b, true);
    {
        std::vector<std::int32_t> y32(b.y.begin(), b.y.end());
        const device_vec<std::int32_t> y(y32);
        const forward_out r = device_forward(dl, pt::device_view<const std::int32_t, 2>(y.data(), 2, 5), 2, 5);
        close_abs(r.lp, want.lp, 3e-5, 1.0, "int32 labels");
    }
    {
        // uint8: ignore_index 255 instead of -100 (-100 is never an unsigned label's value).
        std::vector<std::uint8_t> y8;
        batch b8 = b;
        for (auto& v : b8.y) v = v < 0 ? 255 : v;
        for (auto v : b8.y) y8.push_back(std::uint8_t(v));
        const device_vec<std::uint8_t> y(y8);
        lg::token_log_probs_options o;
        o.ignore_index = 255;
        const forward_out r = device_forward(dl, pt::device_view<const std::uint8_t, 2>(y.data(), 2, 5), 2, 5, o);
        close_abs(r.lp, host_forward(b8, true, 255).lp, 3e-5, 1.0, "uint8 labels");
    }
    {
        std::vector<std::uint64_t> yu;
        for (auto v : b.y) yu.push_back(v < 0 ? ~std::uint64_t{0} : std::uint64_t(v));
        const device_vec<std::uint64_t> y(yu);
        const forward_out r = device_forward(dl, pt::device_view<const std::uint64_t, 2>(y.data(), 2, 5), 2, 5);
        PT_CHECK((r.status & pt::status_id_out_of_range) != 0);
        for (std::size_t p = 0; p < yu.size(); ++p) {
            if (b.y[p] < 0) PT_CHECK(std::isnan(r.lp[p]) && std::isnan(r.h[p]) && std::isnan(r.lse[p]));
            else PT_CHECK(r.lp[p] == want.lp[p] || std::fabs(r.lp[p] - want.lp[p]) <= 3e-5 * (1 + std::fabs(want.lp[p])));
        }
    }
}

PT_TEST("token_log_probs status word: non-finite logits and labels out of range") {
    for (const index_t V : {index_t{300}, index_t{5000}}) {  // a warp team and a block team
        batch b = make_batch<float>(2, 4, V, 7);
        // position 2: a NaN; position 3: +inf; position 5: all -inf (label 0); position 6: label V; 7: label -3.
        b.y[2] = 1, b.y[3] = 1, b.y[5] = 0;
        b.z[std::size_t(2 * V + V - 1)] = nan_v;
        b.z[std::size_t(3 * V + 3)] = inf;
        for (index_t v = 0; v < V; ++v) b.z[std::size_t(5 * V + v)] = -inf;
        b.y[6] = std::int64_t(V);
        b.y[7] = -3;
        const device_logits<float> dl(b, layout::padded_rows);
        const device_vec<std::int64_t> y(b.y);
        const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), 2, 4);
        batch ok = b;  // the host oracle with the bad labels ignored (their outputs are checked apart)
        ok.y[6] = ok.y[7] = -100;
        const forward_ref want = host_forward(ok, true);
        for (const bool raise : {true, false}) {
            lg::token_log_probs_options o;
            o.nonfinite_logits = raise ? pt::advantage::nonfinite::raise : pt::advantage::nonfinite::propagate;
            const forward_out r = device_forward(dl, labels, 2, 4, o);
            const std::string what = std::string("V=") + std::to_string(V) + (raise ? " raise" : " propagate");
            PT_CHECK_MSG(((r.status & pt::status_nonfinite_input) != 0) == raise, what);
            PT_CHECK_MSG((r.status & pt::status_id_out_of_range) != 0, what);
            for (std::size_t p : {2, 3, 5, 6, 7})
                PT_CHECK_MSG(std::isnan(r.lp[p]) && std::isnan(r.h[p]) && std::isnan(r.lse[p]), what + " p=" + std::to_string(p));
            for (std::size_t p : {0, 1, 4})
                PT_CHECK_MSG(std::fabs(r.lp[p] - want.lp[p]) <= 3e-5 * (1 + std::fabs(want.lp[p])) || r.lp[p] == want.lp[p],
                             what + " p=" + std::to_string(p));
            // The backward: NaN rows at the bad positions (both modes), zero rows at ignored ones.
            const device_vec<double> ul(b.gl), uh(b.gh);
            const auto gl_v = pt::device_view<const double, 2>(ul.data(), 2, 4);
            const auto gh_v = pt::device_view<const double, 2>(uh.data(), 2, 4);
            for (const bool saved : {false, true}) {
                dl.reset_grad();
                device_vec<std::uint32_t> status(1, 0u);
                const auto pol = pt::exec::cuda.with_status(status.data());
                device_vec<double> lse(std::size_t(8), 0.0), h(std::size_t(8), 0.0);
                if (saved) {
                    lg::token_log_probs(pt::exec::cuda, dl.view(), labels, pt::none, pt::device_view<double, 2>(h.data(), 2, 4),
                                        pt::device_view<double, 2>(lse.data(), 2, 4), o);
                    lg::token_log_probs_backward(pol, dl.view(), labels, gl_v, gh_v, dl.grad_view(),
                                                 pt::device_view<const double, 2>(lse.data(), 2, 4),
                                                 pt::device_view<const double, 2>(h.data(), 2, 4), o);
                } else {
                    lg::token_log_probs_backward(pol, dl.view(), labels, gl_v, gh_v, dl.grad_view(), pt::none, pt::none, o);
                }
                std::vector<double> g;
                PT_CHECK(dl.grad_host(g));
                const std::uint32_t st = status.host()[0];
                PT_CHECK_MSG((st & pt::status_id_out_of_range) != 0, what);
                PT_CHECK_MSG(((st & pt::status_nonfinite_input) != 0) == raise, what + (saved ? " saved" : " recomputed"));
                for (index_t p : {2, 3, 5, 6, 7}) {
                    bool all_nan = true;
                    for (index_t v = 0; v < V; ++v) all_nan &= std::isnan(g[std::size_t(p * V + v)]);
                    PT_CHECK_MSG(all_nan, what + " grad row " + std::to_string(p));
                }
                bool zero = true;  // position 4 is ignored
                for (index_t v = 0; v < V; ++v) zero &= g[std::size_t(4 * V + v)] == 0.0;
                PT_CHECK_MSG(zero, what + " ignored grad row");
            }
        }
    }
}

PT_TEST("token_log_probs determinism: bitwise equal runs (bf16, V = 128256; float, V = 1500)") {
    auto twice = [](auto tag, index_t V) {
        using T = decltype(tag);
        const batch b = make_batch<T>(2, 3, V, 11);
        const device_logits<T> dl(b, layout::contiguous);
        const device_vec<std::int64_t> y(b.y);
        const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), 2, 3);
        const forward_out r1 = device_forward(dl, labels, 2, 3), r2 = device_forward(dl, labels, 2, 3);
        PT_CHECK(std::memcmp(r1.lp.data(), r2.lp.data(), r1.lp.size() * sizeof(double)) == 0);
        PT_CHECK(std::memcmp(r1.h.data(), r2.h.data(), r1.h.size() * sizeof(double)) == 0);
        PT_CHECK(std::memcmp(r1.lse.data(), r2.lse.data(), r1.lse.size() * sizeof(double)) == 0);
        const device_vec<double> ul(b.gl), uh(b.gh);
        std::vector<double> g1, g2;
        for (std::vector<double>* g : {&g1, &g2}) {
            dl.reset_grad();
            lg::token_log_probs_backward(pt::exec::cuda, dl.view(), labels, pt::device_view<const double, 2>(ul.data(), 2, 3),
                                         pt::device_view<const double, 2>(uh.data(), 2, 3), dl.grad_view());
            PT_CHECK(dl.grad_host(*g));
        }
        PT_CHECK(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(double)) == 0);
    };
    twice(__nv_bfloat16{}, pt::test::quick() ? 20000 : 128256);
    twice(float{}, 1500);
}

// The forward (log-probs, entropy, lse) and the backward with recomputed statistics captured into a
// CUDA graph and replayed on new logits (support.cuh's graph_replay): no hidden synchronisation, the
// backward's scratch exactly token_log_probs_backward_workspace_bytes or a graph memory node. A warp
// team (V = 300) and a block team (V = 5000, its shared-memory merge: racecheck runs this test).
PT_TEST("token_log_probs graph capture and replay (forward + recomputed backward)") {
    for (const index_t V : {index_t{300}, index_t{5000}}) {
        const index_t B = 2, Tn = 5, P = B * Tn;
        const batch b0 = make_batch<float>(B, Tn, V, 21), b1 = make_batch<float>(B, Tn, V, 22);
        auto as_float = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
        const pt::test::input_sets<float> z(as_float(b0.z), as_float(b1.z));
        const device_vec<std::int64_t> y(b0.y);
        const device_vec<double> ul(b0.gl), uh(b0.gh);
        device_vec<float> lp{static_cast<std::size_t>(P)}, h{static_cast<std::size_t>(P)}, lse{static_cast<std::size_t>(P)},
            g{static_cast<std::size_t>(P * V)};
        pt::test::graph_case c;
        c.name = "token_log_probs V=" + std::to_string(V);
        c.workspace = lg::token_log_probs_backward_workspace_bytes(B, Tn, V, false);
        c.outputs = {pt::test::out_of(lp), pt::test::out_of(h), pt::test::out_of(lse), pt::test::out_of(g)};
        c.load = [&](int k) { z.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) {
            const auto zv = pt::device_view<const float, 3>(z.dev.data(), B, Tn, V);
            const auto yv = pt::device_view<const std::int64_t, 2>(y.data(), B, Tn);
            lg::token_log_probs(p, zv, yv, pt::device_view<float, 2>(lp.data(), B, Tn), pt::device_view<float, 2>(h.data(), B, Tn),
                                pt::device_view<float, 2>(lse.data(), B, Tn));
            lg::token_log_probs_backward(p, zv, yv, pt::device_view<const double, 2>(ul.data(), B, Tn),
                                         pt::device_view<const double, 2>(uh.data(), B, Tn),
                                         pt::device_view<float, 3>(g.data(), B, Tn, V));
        };
        pt::test::graph_replay_both(c);
    }
}

PT_TEST("token_log_probs host-detectable misuse") {
    const batch b = make_batch<float>(2, 3, 50, 13);
    const device_logits<float> dl(b, layout::contiguous);
    const device_vec<std::int64_t> y(b.y);
    const auto labels = pt::device_view<const std::int64_t, 2>(y.data(), 2, 3);
    device_vec<float> out(6, 0.0f), wide(8, 0.0f);
    const auto o2 = pt::device_view<float, 2>(out.data(), 2, 3);
    const auto bad_shape = pt::device_view<float, 2>(wide.data(), 2, 4);
    const auto ex = pt::exec::cuda;
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), pt::device_view<const std::int64_t, 2>(y.data(), 3, 2), o2),
                    pt::invalid_argument);
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), labels, bad_shape), pt::invalid_argument);
    // An output overlapping the logits, or another output.
    const auto over = pt::device_view<float, 2>(const_cast<float*>(dl.view().data()), 2, 3);
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), labels, over), pt::invalid_argument);
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), labels, o2, o2), pt::invalid_argument);
    lg::token_log_probs_options bad_chunk;
    bad_chunk.chunk = 0;
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), labels, o2, pt::none, pt::none, bad_chunk), pt::invalid_argument);
    lg::token_log_probs_options ignore;
    ignore.nonfinite_logits = pt::advantage::nonfinite::ignore;
    PT_CHECK_THROWS(lg::token_log_probs(ex, dl.view(), labels, o2, pt::none, pt::none, ignore), pt::invalid_argument);
    // The policy's workspace over an output, its status word over an input (the logits, the labels).
    using pt::test::refuses_policy;
    PT_CHECK(refuses_policy([&] { lg::token_log_probs(ex.with(out.data(), out.size() * sizeof(float)), dl.view(), labels, o2); },
                            "workspace", "log_probs"));
    PT_CHECK(refuses_policy([&] {
        lg::token_log_probs(ex.with(wide.data(), wide.size() * sizeof(float)), dl.view(), labels, o2,
                            pt::device_view<float, 2>(wide.data(), 2, 3));
    }, "workspace", "entropy"));
    PT_CHECK(refuses_policy([&] {
        lg::token_log_probs(ex.with_status(reinterpret_cast<std::uint32_t*>(const_cast<float*>(dl.view().data()) + 7)), dl.view(),
                            labels, o2);
    }, "status word", "logits"));
    PT_CHECK(refuses_policy([&] {
        lg::token_log_probs(ex.with_status(reinterpret_cast<std::uint32_t*>(y.data() + 1)), dl.view(), labels, o2);
    }, "status word", "labels"));
    // The backward: gradient shape and dtype, aliasing, saved statistics both or neither, workspace too small.
    const device_vec<float> u(std::vector<float>(6, 1.0f));
    const auto uv = pt::device_view<const float, 2>(u.data(), 2, 3);
    device_vec<double> gd(300, 0.0);
    PT_CHECK_THROWS(lg::token_log_probs_backward(ex, dl.view(), labels, uv, pt::none, pt::device_view<double, 3>(gd.data(), 2, 3, 50)),
                    pt::invalid_argument);
    device_vec<float> gs(2 * 3 * 49, 0.0f);
    PT_CHECK_THROWS(lg::token_log_probs_backward(ex, dl.view(), labels, uv, pt::none, pt::device_view<float, 3>(gs.data(), 2, 3, 49)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(lg::token_log_probs_backward(ex, dl.view(), labels, uv, pt::none,
                                                 pt::device_view<float, 3>(const_cast<float*>(dl.view().data()), 2, 3, 50)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(lg::token_log_probs_backward(ex, dl.view(), labels, uv, pt::none, dl.grad_view(), uv), pt::invalid_argument);
    unsigned char* small = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&small, 16));
    PT_CHECK_THROWS(lg::token_log_probs_backward(ex.with(small, 16), dl.view(), labels, uv, pt::none, dl.grad_view()),
                    pt::invalid_argument);
    cudaFree(small);
    // Saved statistics make the backward need no workspace at all.
    PT_CHECK(lg::token_log_probs_backward_workspace_bytes(2, 3, 50, true) == 0);
    PT_CHECK(lg::token_log_probs_backward_workspace_bytes(2, 3, 50, false) >= 6 * sizeof(lg::detail::stat_record<double>));
    PT_CHECK(lg::token_log_probs_workspace_bytes(2, 3, 50) == 0);
}
