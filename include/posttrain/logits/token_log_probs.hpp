#pragma once
// The fused token-log-prob primitive on the host: from logits [B, T, V] and labels [B, T], the
// per-token log-prob of the label, the entropy and the log-normaliser in one pass over each
// position's vocabulary, and the backward that recomputes the softmax instead of storing it.
//
//   log_probs[b, t] = log softmax(z)[y]     entropy[b, t] = H(softmax(z))     lse[b, t] = logsumexp(z)
//   (z = logits[b, t, :], y = labels[b, t])
//
// The maths is softmax_math.hpp's (shared with the CUDA path, token_log_probs.cuh). The forward reads
// the vocabulary a chunk of options.chunk logits at a time: the chunk's maximum (which also finds NaN
// and +inf), then sum exp(z_v - max) and sum exp(z_v - max) (z_v - max) over the chunk in eight
// interleaved lanes (the label's term kept apart), merged into the position's running state in chunk
// order; the label's own state is merged last. The chunk is read from L1 the second time, so the
// vocabulary comes from memory once. The chunking and the lanes fix the summation order: the bits
// depend on options.chunk, never on the policy (rows of positions are independent: exec::par gives
// exec::seq's bits) or on the instruction set (the SIMD and portable loops are the same IEEE operations,
// exp included: vector_exp.hpp).
//
// The backward: grad_logits[b, t, v] = grad_log_probs[b, t] dlog p_y/dz_v + grad_entropy[b, t] dH/dz_v
// (softmax_math.hpp's grad_label / grad_other). With the forward's lse and entropy passed back
// (saved_lse, saved_entropy) it is one read of the logits and one write of the gradient; without them
// the statistics are recomputed first (two reads). The saved form takes 1 - p_y = -expm1(z_y - lse),
// whose absolute error is that of lse (~1e-16 |lse|); the recomputed form has rest / s, exact as
// p_y -> 1 (the preference losses' golden gradients need it at large logits). Elsewhere both give the
// same bits when the saved statistics are doubles (float statistics round them).
//
// Labels equal to options.ignore_index mark positions that are not scored: every output is written 0
// (the gradient row too) and their logits and upstream gradients are never read. Other labels must lie
// in [0, V) (checked before anything is written). A -inf logit is a vocabulary entry of probability 0
// (masked vocabularies); NaN or +inf logits at a scored position, or a position whose logits are all
// -inf, raise (found inside the parallel loop, raised after it for the first bad position in row-major
// order), or under nonfinite_logits = propagate make that position's outputs and gradient NaN.
// Accumulation is in double whatever the element types.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/tokens.hpp"
#include "../core/exec.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"
#include "softmax_math.hpp"
#include "vector_exp.hpp"

namespace posttrain::logits {

struct token_log_probs_options {
    // Labels equal to this value are not scored (outputs 0, gradient 0, logits never read).
    std::int64_t ignore_index = -100;
    // Logits per chunk of the online pass: a chunk is read twice from L1 (max, then the exp sums) and
    // the chunks are merged in order, so the value is part of the bits. 2048 float logits (8 KiB)
    // measured fastest on the reference machine (docs/algorithms/token_log_probs.md). At least 1.
    index_t chunk = 2048;
    // NaN/+inf logits at scored positions (and all -inf positions): raise (default) or propagate (the
    // position's outputs and gradient are NaN). nonfinite::ignore is not accepted.
    advantage::nonfinite nonfinite_logits = advantage::nonfinite::raise;
};

namespace detail {

using namespace posttrain::detail;

template <class X>
constexpr bool is_none_v = std::is_same_v<std::remove_cvref_t<X>, none_t>;

// The statistics of one position, or why there are none: bad = -2 valid, v >= 0 logit v is NaN or
// +inf, -1 every logit is -inf.
struct position_stats {
    softmax_outputs<double> out;
    index_t bad = -2;
    bool ok() const noexcept { return bad == -2; }
};

// The names a caller's messages use (the preference and policy-loss front ends keep theirs).
struct forward_names {
    const char* fn;
    const char* log_probs = "log_probs";
    const char* entropy = "entropy";
    const char* lse = "lse";
};
struct backward_names {
    const char* fn;
    const char* grad_log_probs = "grad_log_probs";
    const char* grad_entropy = "grad_entropy";
};

}  // namespace detail
}  // namespace posttrain::logits

POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN

namespace posttrain::logits::detail {

constexpr double inf = std::numeric_limits<double>::infinity();

// ---- one chunk of the forward -------------------------------------------------------------------
// The state of z[0..n) with z[label] left out (label < 0: none), relative to the chunk's maximum;
// returns the index of the first NaN/+inf logit, or -1. An all -inf chunk gives the empty state.
// Lane l of the sums takes z[j] with j = l mod 8; the last block is padded with -inf (adds +0).

#if POSTTRAIN_LOGITS_SIMD
template <class Z>
inline void load8(const Z* z, index_t n, d8& x) noexcept {  // n < 8: the rest is -inf
    if (n >= 8) {
        if constexpr (std::is_same_v<Z, double>) {
            std::memcpy(&x, z, sizeof x);
        } else {
            f8 f;
            std::memcpy(&f, z, sizeof f);
            x = __builtin_convertvector(f, d8);
        }
    } else {
        x = d8{} - inf;
        for (index_t l = 0; l < n; ++l) x[l] = double(z[l]);
    }
}

template <class Z>
index_t chunk_state_simd(const Z* z, index_t n, index_t label, bool entropy, softmax_state<double>& st) noexcept {
    using lmask = decltype(d8{} < d8{});
    d8 mx = d8{} - inf;
    lmask bad = lmask{};
    for (index_t j = 0; j < n; j += 8) {
        d8 x;
        load8(z + j, n - j, x);
        bad |= ~(x < inf);  // NaN or +inf (the -inf padding is neither)
        mx = x > mx ? x : mx;
    }
    bool any_bad = false;
    for (int l = 0; l < 8; ++l) any_bad |= bad[l] != 0;
    if (any_bad)
        for (index_t j = 0; j < n; ++j)
            if (!(double(z[j]) < inf)) return j;
    double m = mx[0];
    for (int l = 1; l < 8; ++l) m = mx[l] > m ? mx[l] : m;
    st = softmax_state<double>{};
    if (m == -inf) return -1;
    const d8 mv = d8{} + m;
    const lmask lane = {0, 1, 2, 3, 4, 5, 6, 7};
    d8 rest = d8{}, a = d8{};
    for (index_t j = 0; j < n; j += 8) {
        d8 x, e;
        load8(z + j, n - j, x);
        const d8 d = x - mv;
        vexp(d, e);
        if (label >= j && label < j + 8) e = lane + j == label ? d8{} : e;
        rest += e;
        if (entropy) {
            d8 t = e * d;
            t = e == 0.0 ? d8{} : t;  // exp(-inf) (-inf) must add 0, not NaN
            a += t;
        }
    }
    double rl[8], al[8];
    std::memcpy(rl, &rest, sizeof rl);
    std::memcpy(al, &a, sizeof al);
    st = chunk_state(m, combine_lanes(rl), combine_lanes(al));
    return -1;
}
#endif

// The same operations one lane at a time: the bits of chunk_state_simd (tested), for compilers
// without vector extensions and as the reference of the SIMD form.
template <class Z>
index_t chunk_state_portable(const Z* z, index_t n, index_t label, bool entropy, softmax_state<double>& st) noexcept {
    double m = -inf;
    for (index_t j = 0; j < n; ++j) {
        const double x = double(z[j]);
        if (!(x < inf)) return j;
        m = x > m ? x : m;
    }
    st = softmax_state<double>{};
    if (m == -inf) return -1;
    double rest[8] = {}, a[8] = {};
    for (index_t j = 0; j < n; j += 8)
        for (index_t l = 0; l < 8; ++l) {
            const double x = j + l < n ? double(z[j + l]) : -inf;
            const double d = x - m;
            double e = vexp(d);
            if (j + l == label) e = 0.0;
            rest[l] += e;
            if (entropy) {
                double t = e * d;
                t = e == 0.0 ? 0.0 : t;
                a[l] += t;
            }
        }
    st = chunk_state(m, combine_lanes(rest), combine_lanes(a));
    return -1;
}

template <class Z>
index_t chunk_state_of(const Z* z, index_t n, index_t label, bool entropy, softmax_state<double>& st) noexcept {
#if POSTTRAIN_LOGITS_SIMD
    return chunk_state_simd(z, n, label, entropy, st);
#else
    return chunk_state_portable(z, n, label, entropy, st);
#endif
}

// ---- one position of the forward ----------------------------------------------------------------
// The statistics of the logits z[v * stride], v in [0, V), with label y (< 0: none). entropy = false
// skips the entropy sums (out.entropy is then meaningless). buf: `chunk` doubles of scratch, used
// when stride != 1 (a chunk is gathered there; double holds every float exactly, so the bits are
// those of the contiguous path).
template <class Z>
position_stats position_forward(const Z* z, index_t stride, index_t V, index_t y, index_t chunk, bool entropy,
                                double* buf) noexcept {
    position_stats r;
    softmax_state<double> st;
    for (index_t c0 = 0; c0 < V; c0 += chunk) {
        const index_t n = V - c0 < chunk ? V - c0 : chunk;
        const index_t label = y >= c0 && y < c0 + n ? y - c0 : -1;
        softmax_state<double> cs;
        index_t bad;
        if (stride == 1) {
            bad = chunk_state_of(z + c0, n, label, entropy, cs);
        } else {
            for (index_t j = 0; j < n; ++j) buf[j] = double(z[(c0 + j) * stride]);
            bad = chunk_state_of(buf, n, label, entropy, cs);
        }
        if (bad >= 0) {
            r.bad = c0 + bad;
            return r;
        }
        st = merge(st, cs);
    }
    const double zy = y >= 0 ? double(z[y * stride]) : 0.0;
    if (y >= 0) st = merge(st, label_state(zy));
    if (st.m == -inf) {
        r.bad = -1;
        return r;
    }
    r.out = finish(st, zy, y >= 0);
    return r;
}

// ---- one position of the backward ---------------------------------------------------------------
// g[v] = p_v (-gl - gh (H + log p_v)), log p_v = (z_v - hi) - lo with lse = hi + lo unrounded:
// softmax_math.hpp's grad_other, in a form that is the same text for a double and for eight (so that
// the SIMD and portable loops agree).
template <class D>
inline void grad_other_lanes(const D& z, double hi, double lo, double H, double gl, double gh, D& out) noexcept {
    const D lp = (z - hi) - lo;
    D p;
#if POSTTRAIN_LOGITS_SIMD
    if constexpr (std::is_same_v<D, d8>) vexp(lp, p);
    else p = vexp(lp);
#else
    p = vexp(lp);
#endif
    const D u = lp + H;
    const D w = u * gh;
    const D q = -gl - w;
    const D g = p * q;
    out = p == 0.0 ? D{} : g;  // p = 0 (a -inf logit, or underflow): exactly 0, never 0 * inf
}

// What the pass over z found: the first NaN/+inf logit (-1: none) and whether any logit is > -inf.
struct scan_result {
    index_t bad = -1;
    bool any_finite = false;
};

#if POSTTRAIN_LOGITS_SIMD
template <class Z, class G>
scan_result grad_block_simd(const Z* z, index_t n, G* out, double hi, double lo, double H, double gl, double gh) noexcept {
    using lmask = decltype(d8{} < d8{});
    lmask bad = lmask{}, finite = lmask{};
    index_t j = 0;
    for (; j + 8 <= n; j += 8) {
        d8 x;
        load8(z + j, 8, x);
        bad |= ~(x < inf);
        finite |= x > -inf;
        d8 g;
        grad_other_lanes(x, hi, lo, H, gl, gh, g);
        if constexpr (std::is_same_v<G, double>) {
            std::memcpy(out + j, &g, sizeof g);
        } else {
            const f8 f = __builtin_convertvector(g, f8);
            std::memcpy(out + j, &f, sizeof f);
        }
    }
    scan_result r;
    for (int l = 0; l < 8; ++l) r.any_finite |= finite[l] != 0;
    bool any_bad = false;
    for (int l = 0; l < 8; ++l) any_bad |= bad[l] != 0;
    for (; j < n; ++j) {
        const double x = double(z[j]);
        any_bad |= !(x < inf);
        r.any_finite |= x > -inf;
        double g;
        grad_other_lanes(x, hi, lo, H, gl, gh, g);
        out[j] = static_cast<G>(g);
    }
    if (any_bad)
        for (index_t v = 0; v < n; ++v)
            if (!(double(z[v]) < inf)) {
                r.bad = v;
                break;
            }
    return r;
}
#endif

template <class Z, class G>
scan_result grad_block_portable(const Z* z, index_t n, G* out, double hi, double lo, double H, double gl, double gh) noexcept {
    scan_result r;
    for (index_t j = 0; j < n; ++j) {
        const double x = double(z[j]);
        if (!(x < inf) && r.bad < 0) r.bad = j;
        r.any_finite |= x > -inf;
        double g;
        grad_other_lanes(x, hi, lo, H, gl, gh, g);
        out[j] = static_cast<G>(g);
    }
    return r;
}

template <class Z, class G>
scan_result grad_block(const Z* z, index_t n, G* out, double hi, double lo, double H, double gl, double gh) noexcept {
#if POSTTRAIN_LOGITS_SIMD
    return grad_block_simd(z, n, out, hi, lo, H, gl, gh);
#else
    return grad_block_portable(z, n, out, hi, lo, H, gl, gh);
#endif
}

// The upstream gradients and statistics of one scored position.
struct position_grad_args {
    // lse = hi + lo, unrounded: the recomputed (m, log s), whose log p_v = (z_v - m) - log s is exact
    // to an ulp of log p_v at any logit offset, where z_v - lse carries half an ulp of lse (1e-13 at
    // logits ~1e3: 9e-5 relative in the entropy gradient of a position whose H + log p_y is 1e-9);
    // or a saved lse and 0.
    double hi = 0, lo = 0;
    double entropy = 0;                 // of the softmax
    double log_p = 0, one_minus_p = 1;  // of the label (unused without one)
    double gl = 0, gh = 0;              // dL/dlog p_y, dL/dH
};

// g[v * gstride] for the logits z[v * stride] of one position (label y, < 0: none); the non-label
// entries in one pass (scanning for NaN/+inf as it goes), then the label's. buf, gbuf: `chunk`
// doubles each, for strided logits or gradients.
template <class Z, class G>
scan_result position_backward(const Z* z, index_t stride, G* g, index_t gstride, index_t V, index_t y, index_t chunk,
                              const position_grad_args& s, double* buf, double* gbuf) noexcept {
    scan_result r;
    if (stride == 1 && gstride == 1) {
        r = grad_block(z, V, g, s.hi, s.lo, s.entropy, s.gl, s.gh);
    } else {
        for (index_t c0 = 0; c0 < V; c0 += chunk) {
            const index_t n = V - c0 < chunk ? V - c0 : chunk;
            for (index_t j = 0; j < n; ++j) buf[j] = double(z[(c0 + j) * stride]);
            const scan_result c = grad_block(buf, n, gbuf, s.hi, s.lo, s.entropy, s.gl, s.gh);
            for (index_t j = 0; j < n; ++j) g[(c0 + j) * gstride] = static_cast<G>(gbuf[j]);
            if (c.bad >= 0 && r.bad < 0) r.bad = c0 + c.bad;
            r.any_finite |= c.any_finite;
        }
    }
    if (y >= 0) g[y * gstride] = static_cast<G>(grad_label(s.log_p, s.one_minus_p, s.entropy, s.gl, s.gh));
    return r;
}

}  // namespace posttrain::logits::detail

POSTTRAIN_LOGITS_NO_CONTRACT_END

namespace posttrain::logits {
namespace detail {

// ---- validation shared with the preference and policy-loss front ends ----------------------------

inline void check_options(const token_log_probs_options& o, const char* fn) {
    require(o.chunk >= 1, {fn, "options"}, "chunk must be at least 1, found " + str(o.chunk));
    require(o.nonfinite_logits == advantage::nonfinite::raise || o.nonfinite_logits == advantage::nonfinite::propagate,
            {fn, "options"}, "nonfinite_logits must be nonfinite::raise or nonfinite::propagate");
}

// The label of one position as a vocabulary index, or -1 when the position is ignored; raises on a
// label outside [0, V) that is not the ignore index.
template <class L>
index_t label_index(L y, index_t V, std::int64_t ignore, index_t i, index_t t, where w) {
    const std::int64_t x = static_cast<std::int64_t>(y);
    if constexpr (std::is_signed_v<L>) {
        if (x == ignore) return -1;
    } else {
        if (ignore >= 0 && x == ignore) return -1;
    }
    if (x < 0 || (std::is_unsigned_v<L> && static_cast<std::uint64_t>(y) >= static_cast<std::uint64_t>(V)) || x >= V)
        raise_invalid_argument(w.function, w.argument,
                               "label " + std::to_string(x) + " at [" + str(i) + ", " + str(t) + "] is outside [0, " +
                                   str(V) + ") and is not the ignore_index " + std::to_string(ignore));
    return index_t(x);
}

// The labels are checked before anything is written, so a bad label leaves the outputs untouched.
template <class L>
void check_labels(tensor_view<const L, 2> y, index_t V, std::int64_t ignore, where w) {
    for (index_t i = 0; i < y.extent(0); ++i)
        for (index_t t = 0; t < y.extent(1); ++t) (void)label_index(y(i, t), V, ignore, i, t, w);
}

// A [B, T] view's extents must be the logits' first two.
template <class A, class Z>
void check_leading_shape(tensor_view<A, 2> x, tensor_view<const Z, 3> z, where w) {
    for (int r = 0; r < 2; ++r)
        require(x.extent(r) == z.extent(r), w,
                "shape must match the first two dimensions of 'logits': dimension " + str(r) + " is " + str(x.extent(r)) +
                    ", expected " + str(z.extent(r)));
}

// The first bad scored position in row-major order (bad[p] as position_stats::bad, p = i T + t),
// raised after the parallel loop (nothing may throw inside a parallel region, and the message must not
// depend on the thread count).
template <class Z>
void raise_logits_errors(tensor_view<const Z, 3> z, const std::vector<index_t>& bad, where w) {
    const index_t T = z.extent(1);
    for (std::size_t p = 0; p < bad.size(); ++p) {
        const index_t e = bad[p];
        if (e == -2) continue;
        const index_t i = index_t(p) / T, t = index_t(p) % T;
        if (e >= 0)
            raise_invalid_argument(w.function, w.argument,
                                   "non-finite value " + std::to_string(double(z(i, t, e))) + " at a scored position [" +
                                       str(i) + ", " + str(t) + ", " + str(e) + "]");
        raise_invalid_argument(w.function, w.argument,
                               "every logit of the scored position [" + str(i) + ", " + str(t) + "] is -inf");
    }
}

// A position's logits as (pointer, stride); the pointer is valid only when V > 0.
template <class Z>
const Z* position_logits(tensor_view<const Z, 3> z, index_t i, index_t t) noexcept {
    return z.extent(2) > 0 ? &z(i, t, 0) : z.data();
}

// The labels, an optional output or an optional input as a variant of views (DLPack arguments: one
// alternative per element type), or one empty view for posttrain::none (every position scored, no label;
// nothing written; 0).
template <class Labels>
auto labels_input(const Labels& labels, const char* fn) {
    if constexpr (is_none_v<Labels>) return std::variant<tensor_view<const std::int64_t, 2>>();
    else return id_input<2>(labels, {fn, "labels"});
}
template <class X>
auto optional_output2(X&& x, const char* fn, const char* name) {
    if constexpr (is_none_v<X>) return std::variant<tensor_view<double, 2>>();
    else return floating_output<2>(x, {fn, name});
}
template <class X>
auto optional_input2(const X& x, const char* fn, const char* name) {
    if constexpr (is_none_v<X>) return std::variant<tensor_view<const double, 2>>();
    else return floating_input<2>(x, {fn, name});
}

// ---- the forward on views --------------------------------------------------------------------------
// HasLabels: y holds the labels (else every position is scored without one). lp, h, lse: outputs,
// written where their Want* is set.
template <bool HasLabels, bool WantLp, bool WantH, bool WantLse, class Policy, class Z, class L, class O1, class O2, class O3>
void forward(const Policy& policy, tensor_view<const Z, 3> z, tensor_view<const L, 2> y, tensor_view<O1, 2> lp,
             tensor_view<O2, 2> h, tensor_view<O3, 2> lse, const token_log_probs_options& opt, const forward_names& nm) {
    const char* fn = nm.fn;
    const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
    check_options(opt, fn);
    if constexpr (HasLabels) check_leading_shape(y, z, {fn, "labels"});
    if constexpr (WantLp) check_leading_shape(lp, z, {fn, nm.log_probs});
    if constexpr (WantH) check_leading_shape(h, z, {fn, nm.entropy});
    if constexpr (WantLse) check_leading_shape(lse, z, {fn, nm.lse});
    using posttrain::advantage::detail::check_no_alias;
    check_no_alias(lp, z, {fn, nm.log_probs}, "logits");
    check_no_alias(h, z, {fn, nm.entropy}, "logits");
    check_no_alias(lse, z, {fn, nm.lse}, "logits");
    if constexpr (HasLabels) {
        check_no_alias(lp, y, {fn, nm.log_probs}, "labels");
        check_no_alias(h, y, {fn, nm.entropy}, "labels");
        check_no_alias(lse, y, {fn, nm.lse}, "labels");
    }
    check_no_alias(h, lp, {fn, nm.entropy}, nm.log_probs);
    check_no_alias(lse, lp, {fn, nm.lse}, nm.log_probs);
    check_no_alias(lse, h, {fn, nm.lse}, nm.entropy);
    if constexpr (HasLabels) check_labels(y, V, opt.ignore_index, {fn, "labels"});
    const bool raise = opt.nonfinite_logits == advantage::nonfinite::raise;
    const index_t chunk = opt.chunk < V ? opt.chunk : (V > 0 ? V : 1);
    std::vector<index_t> bad(static_cast<std::size_t>(raise ? B * T : 0), -2);
    posttrain::detail::for_blocks(policy, B * T, V + 1, [&](index_t lo, index_t hi) {
        std::vector<double> buf(z.stride(2) == 1 ? 0 : static_cast<std::size_t>(chunk));
        for (index_t p = lo; p < hi; ++p) {
            const index_t i = p / T, t = p % T;
            index_t k = -1;
            if constexpr (HasLabels) {
                k = label_index(y(i, t), V, opt.ignore_index, i, t, {fn, "labels"});
                if (k < 0) {
                    if constexpr (WantLp) lp(i, t) = O1(0);
                    if constexpr (WantH) h(i, t) = O2(0);
                    if constexpr (WantLse) lse(i, t) = O3(0);
                    continue;
                }
            }
            const position_stats s =
                position_forward(position_logits(z, i, t), z.stride(2), V, k, chunk, WantH, buf.data());
            softmax_outputs<double> o = s.out;
            if (!s.ok()) {
                if (raise) {
                    bad[std::size_t(p)] = s.bad;
                    continue;
                }
                const double nan = std::numeric_limits<double>::quiet_NaN();
                o.log_p = o.lse = o.entropy = nan;
            }
            if constexpr (WantLp) lp(i, t) = static_cast<O1>(o.log_p);
            if constexpr (WantH) h(i, t) = static_cast<O2>(o.entropy);
            if constexpr (WantLse) lse(i, t) = static_cast<O3>(o.lse);
        }
    });
    if (raise) raise_logits_errors(z, bad, {fn, "logits"});
}

// ---- the backward on views -------------------------------------------------------------------------
// Upstreams ul (dL/dlog p_y) and uh (dL/dH) where HasUl / HasUh; saved statistics where Saved.
template <bool HasLabels, bool HasUl, bool HasUh, bool Saved, class Policy, class Z, class L, class U1, class U2, class S1,
          class S2, class G>
void backward(const Policy& policy, tensor_view<const Z, 3> z, tensor_view<const L, 2> y, tensor_view<const U1, 2> ul,
              tensor_view<const U2, 2> uh, tensor_view<G, 3> g, tensor_view<const S1, 2> slse, tensor_view<const S2, 2> sh,
              const token_log_probs_options& opt, const backward_names& nm) {
    const char* fn = nm.fn;
    const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
    check_options(opt, fn);
    if constexpr (HasLabels) check_leading_shape(y, z, {fn, "labels"});
    if constexpr (HasUl) check_leading_shape(ul, z, {fn, nm.grad_log_probs});
    if constexpr (HasUh) check_leading_shape(uh, z, {fn, nm.grad_entropy});
    if constexpr (Saved) {
        check_leading_shape(slse, z, {fn, "saved_lse"});
        check_leading_shape(sh, z, {fn, "saved_entropy"});
    }
    using posttrain::advantage::detail::check_no_alias;
    posttrain::advantage::detail::check_same_shape(g, z, {fn, "grad_logits"}, "logits");
    check_no_alias(g, z, {fn, "grad_logits"}, "logits");
    if constexpr (HasLabels) check_no_alias(g, y, {fn, "grad_logits"}, "labels");
    check_no_alias(g, ul, {fn, "grad_logits"}, nm.grad_log_probs);
    check_no_alias(g, uh, {fn, "grad_logits"}, nm.grad_entropy);
    check_no_alias(g, slse, {fn, "grad_logits"}, "saved_lse");
    check_no_alias(g, sh, {fn, "grad_logits"}, "saved_entropy");
    if constexpr (HasLabels) check_labels(y, V, opt.ignore_index, {fn, "labels"});
    const bool raise = opt.nonfinite_logits == advantage::nonfinite::raise;
    // Upstream gradients (and saved statistics, under raise) must be finite where a position is scored.
    auto scored = [&](index_t i, index_t t) {
        if constexpr (HasLabels) return label_index(y(i, t), V, opt.ignore_index, i, t, {fn, "labels"}) >= 0;
        else return true;
    };
    auto check_finite_at = [&](auto x, const char* name) {
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < T; ++t)
                if (scored(i, t))
                    require(numeric::is_finite(double(x(i, t))), {fn, name},
                            "non-finite value at a scored position [" + str(i) + ", " + str(t) + "]");
    };
    if constexpr (HasUl) check_finite_at(ul, nm.grad_log_probs);
    if constexpr (HasUh) check_finite_at(uh, nm.grad_entropy);
    if constexpr (Saved)
        if (raise) {
            check_finite_at(slse, "saved_lse");
            if constexpr (HasUh) check_finite_at(sh, "saved_entropy");
        }
    const index_t chunk = opt.chunk < V ? opt.chunk : (V > 0 ? V : 1);
    const bool contiguous = z.stride(2) == 1 && g.stride(2) == 1;
    std::vector<index_t> bad(static_cast<std::size_t>(raise ? B * T : 0), -2);
    posttrain::detail::for_blocks(policy, B * T, 2 * V + 1, [&](index_t lo, index_t hi) {
        std::vector<double> buf(contiguous && Saved ? 0 : static_cast<std::size_t>(chunk)),
            gbuf(contiguous ? 0 : static_cast<std::size_t>(chunk));
        for (index_t p = lo; p < hi; ++p) {
            const index_t i = p / T, t = p % T;
            G* gp = V > 0 ? &g(i, t, 0) : g.data();
            index_t k = -1;
            if constexpr (HasLabels) {
                k = label_index(y(i, t), V, opt.ignore_index, i, t, {fn, "labels"});
                if (k < 0) {
                    for (index_t v = 0; v < V; ++v) gp[v * g.stride(2)] = G(0);
                    continue;
                }
            }
            const Z* zp = position_logits(z, i, t);
            position_grad_args a;
            if constexpr (HasUl) a.gl = double(ul(i, t));
            if constexpr (HasUh) a.gh = double(uh(i, t));
            index_t why = -2;  // as position_stats::bad
            if constexpr (Saved) {
                a.hi = double(slse(i, t));
                a.entropy = HasUh ? double(sh(i, t)) : 0.0;
                if (k >= 0) {
                    a.log_p = double(zp[k * z.stride(2)]) - a.hi;
                    a.one_minus_p = -std::expm1(a.log_p);
                }
            } else {
                const position_stats s = position_forward(zp, z.stride(2), V, k, chunk, HasUh, buf.data());
                why = s.bad;
                a.hi = s.out.m;
                a.lo = s.out.log_s;
                a.entropy = HasUh ? s.out.entropy : 0.0;
                a.log_p = s.out.log_p;
                a.one_minus_p = s.out.one_minus_p;
            }
            if (why == -2) {
                const scan_result r =
                    position_backward(zp, z.stride(2), gp, g.stride(2), V, k, chunk, a, buf.data(), gbuf.data());
                why = r.bad >= 0 ? r.bad : r.any_finite ? -2 : -1;
            }
            if (why != -2) {
                if (raise) {
                    bad[std::size_t(p)] = why;
                    continue;
                }
                for (index_t v = 0; v < V; ++v) gp[v * g.stride(2)] = static_cast<G>(std::numeric_limits<double>::quiet_NaN());
            }
        }
    });
    if (raise) raise_logits_errors(z, bad, {fn, "logits"});
}

}  // namespace detail

// log_probs[b, t] = log_softmax(logits[b, t, :])[labels[b, t]], entropy[b, t] = H(softmax(logits[b, t, :]))
// and lse[b, t] = logsumexp(logits[b, t, :]) for logits [B, T, V] (float or double, any strides; fastest
// with a contiguous vocabulary) and integer labels [B, T], or labels = posttrain::none (every position
// scored, entropy and lse only: log_probs must then be none). Each output is a float or double [B, T]
// view or posttrain::none. Ignored positions get 0 in every output.
template <class Policy, class Logits, class Labels, class LogProbs, class Entropy = none_t, class Lse = none_t>
void token_log_probs(const Policy& policy, const Logits& logits, const Labels& labels, LogProbs&& log_probs,
                     Entropy&& entropy = Entropy{0}, Lse&& lse = Lse{0}, const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::logits::token_log_probs: host policy expected (exec::cuda: token_log_probs.cuh)");
    constexpr bool has_labels = !detail::is_none_v<Labels>;
    static_assert(has_labels || detail::is_none_v<LogProbs>,
                  "posttrain::logits::token_log_probs: log_probs must be posttrain::none when labels is posttrain::none");
    constexpr const char* fn = "posttrain::logits::token_log_probs";
    std::visit(
        [&](auto z, auto y, auto lp, auto h, auto ls) {
            detail::forward<has_labels, !detail::is_none_v<LogProbs>, !detail::is_none_v<Entropy>, !detail::is_none_v<Lse>>(
                policy, z, y, lp, h, ls, options, {fn});
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), detail::labels_input(labels, fn),
        detail::optional_output2(log_probs, fn, "log_probs"), detail::optional_output2(entropy, fn, "entropy"),
        detail::optional_output2(lse, fn, "lse"));
}

// grad_logits[b, t, v] = grad_log_probs[b, t] dlog_probs[b, t]/dlogits[b, t, v] + grad_entropy[b, t]
// dentropy[b, t]/dlogits[b, t, v]; each upstream a float or double [B, T] view or posttrain::none (0),
// grad_log_probs none when labels is none. saved_lse and saved_entropy: the forward's lse and entropy
// (both, or both none: recomputed). Ignored positions get a zero gradient row and their upstream
// gradients are not read; upstream gradients must be finite at scored positions.
template <class Policy, class Logits, class Labels, class GradLogProbs, class GradEntropy, class GradLogits,
          class SavedLse = none_t, class SavedEntropy = none_t>
void token_log_probs_backward(const Policy& policy, const Logits& logits, const Labels& labels, const GradLogProbs& grad_log_probs,
                              const GradEntropy& grad_entropy, GradLogits&& grad_logits, const SavedLse& saved_lse = none,
                              const SavedEntropy& saved_entropy = none, const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>,
                  "posttrain::logits::token_log_probs_backward: host policy expected (exec::cuda: token_log_probs.cuh)");
    constexpr bool has_labels = !detail::is_none_v<Labels>;
    static_assert(has_labels || detail::is_none_v<GradLogProbs>,
                  "posttrain::logits::token_log_probs_backward: grad_log_probs must be posttrain::none when labels is "
                  "posttrain::none");
    constexpr const char* fn = "posttrain::logits::token_log_probs_backward";
    constexpr bool has_lse = !detail::is_none_v<SavedLse>, has_h = !detail::is_none_v<SavedEntropy>;
    posttrain::detail::require(has_lse == has_h, {fn, has_lse ? "saved_entropy" : "saved_lse"},
                               "saved_lse and saved_entropy are given together (or both posttrain::none)");
    std::visit(
        [&](auto z, auto y, auto g, auto ul, auto uh, auto sl, auto sh) {
            detail::backward<has_labels, !detail::is_none_v<GradLogProbs>, !detail::is_none_v<GradEntropy>, has_lse && has_h>(
                policy, z, y, ul, uh, g, sl, sh, options, {fn});
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), detail::labels_input(labels, fn),
        posttrain::detail::floating_output<3>(grad_logits, {fn, "grad_logits"}),
        detail::optional_input2(grad_log_probs, fn, "grad_log_probs"), detail::optional_input2(grad_entropy, fn, "grad_entropy"),
        detail::optional_input2(saved_lse, fn, "saved_lse"), detail::optional_input2(saved_entropy, fn, "saved_entropy"));
}

}  // namespace posttrain::logits
