#pragma once
// The online softmax of one position's logits, written once for the host and the device.
//
// token_log_probs reads a position's logits z[0..V) once, a chunk at a time, and keeps a small state
// instead of the softmax: with m the running maximum and y the label (or no label),
//
//   e_y  = exp(z_y - m)                          the label's own term, kept apart
//   rest = sum_{v != y} exp(z_v - m)             so that 1 - p_y = rest / s is exact when p_y ~ 1
//   a    = sum_v exp(z_v - m) (z_v - m)          for the entropy (a term with exp(.) == 0 adds 0)
//   s    = e_y + rest
//
// A chunk is summarised relative to its own maximum (chunk_state), the label on its own
// (label_state), and two states merge by rescaling both to the larger maximum: with c = exp(m_i - m),
// e_y and rest scale by c and a becomes c (a_i + s_i (m_i - m)). Merging is how a thread absorbs its
// chunks and how a block combines its threads; a fixed chunking and merge order give fixed bits.
//
// finish() turns the state into the outputs:
//   log p_y = (z_y - m) - log s                  (log s = log1p(rest) when z_y == m: exact as p_y -> 1)
//   lse     = m + log s                          (the log-normaliser, saved for the backward)
//   H       = log s - a / s                      (= lse - E_p[z])
//
// The backward recomputes p_v = exp(z_v - lse) from the saved lse (or a recomputed state) instead of
// storing the softmax. From upstream gradients gl = dL/dlog p_y and gh = dL/dH:
//   dL/dz_v = gl ([v == y] - p_v) + gh p_v (E_p[z] - z_v)
//           = p_v (-gl - gh (H + log p_v))                        for v != y
//           = gl (1 - p_y) - gh p_y (H + log p_y)                 for v == y
// with log p_v = z_v - lse, which keeps both terms well conditioned at any logit scale (E_p[z] - z_v
// = -(H + log p_v) involves no large m). A logit of -inf is a vocabulary entry of probability 0: it adds
// nothing to the state and gets gradient 0 (never 0 * inf).
//
// Non-finite input (NaN, +inf) is the callers' to detect: the host raises, the device sets a status
// bit. Acc is the accumulation type: double on the host, float (or double) on the device.

#include <cmath>

#include "../config.hpp"

namespace posttrain::logits::detail {

// +inf as Acc, in host and device code alike: std::numeric_limits<Acc>::infinity() is a constexpr
// __host__ function that nvcc does not call from device code without --expt-relaxed-constexpr
// (warning #20013). <cmath>'s INFINITY is the float +inf, which converts exactly to double.
template <class Acc>
POSTTRAIN_HD constexpr Acc acc_inf() noexcept {
    return static_cast<Acc>(INFINITY);
}

template <class Acc>
struct softmax_state {
    Acc m = -acc_inf<Acc>();  // running maximum; -inf: nothing seen yet
    Acc e_y = 0;              // exp(z_y - m), 0 without a label
    Acc rest = 0;             // sum over v != y of exp(z_v - m)
    Acc a = 0;                // sum over v of exp(z_v - m) (z_v - m)
};

// The state of the label alone (z_y finite).
template <class Acc>
POSTTRAIN_HD inline softmax_state<Acc> label_state(Acc z_y) noexcept {
    softmax_state<Acc> r;
    r.m = z_y;
    r.e_y = 1;
    return r;
}

// The state of a chunk of non-label logits summarised relative to their maximum chunk_max:
// rest = sum exp(z_v - chunk_max), a = sum exp(z_v - chunk_max) (z_v - chunk_max).
template <class Acc>
POSTTRAIN_HD inline softmax_state<Acc> chunk_state(Acc chunk_max, Acc rest, Acc a) noexcept {
    softmax_state<Acc> r;
    r.m = chunk_max;
    r.rest = rest;
    r.a = a;
    return r;
}

// One state rescaled to a maximum m >= x.m, as a (scale, a-term) pair.
template <class Acc>
POSTTRAIN_HD inline softmax_state<Acc> rescaled(const softmax_state<Acc>& x, Acc m) noexcept {
    using std::exp;
    if (x.m == m) return x;  // no rescaling: exact, and keeps e_y == 1 exactly for the argmax label
    softmax_state<Acc> r;
    r.m = m;
    if (x.m == -acc_inf<Acc>()) return r;  // empty: 0 * (-inf) must not appear
    const Acc c = exp(x.m - m);
    r.e_y = c * x.e_y;
    r.rest = c * x.rest;
    // c == 0: x's terms underflow to exactly 0, and (e_y + rest) (x.m - m) must not be formed: for a
    // state whose maximum is a mask such as torch.finfo(dtype).min (-3.4e38) it overflows to -inf, and
    // 0 * -inf is NaN. c * x.a (not a plain 0) still carries a NaN the state holds: the device finds NaN
    // logits through the sums. When c > 0, |x.m - m| < 104 (float) / 746 (double): no overflow.
    r.a = c == Acc(0) ? c * x.a : c * (x.a + (x.e_y + x.rest) * (x.m - m));
    return r;
}

// The state of the union of two disjoint sets of logits (at most one of them holds the label).
template <class Acc>
POSTTRAIN_HD inline softmax_state<Acc> merge(const softmax_state<Acc>& x, const softmax_state<Acc>& y) noexcept {
    const Acc m = x.m > y.m ? x.m : y.m;
    if (m == -acc_inf<Acc>()) return x;  // both empty (or all -inf so far)
    const softmax_state<Acc> p = rescaled(x, m), q = rescaled(y, m);
    softmax_state<Acc> r;
    r.m = m;
    r.e_y = p.e_y + q.e_y;
    r.rest = p.rest + q.rest;
    r.a = p.a + q.a;
    return r;
}

// The outputs of one position. A state whose m is -inf (every logit -inf) has no softmax: the callers
// report it before calling finish.
template <class Acc>
struct softmax_outputs {
    Acc log_p = 0;        // log p_y (0 without a label)
    Acc lse = 0;          // m + log s
    Acc m = 0;            // the maximum, and
    Acc log_s = 0;        // log s: lse as the unrounded pair (m, log s) that the backwards use
    Acc entropy = 0;      // H
    Acc one_minus_p = 1;  // 1 - p_y = rest / s (1 without a label)
};

template <class Acc>
POSTTRAIN_HD inline softmax_outputs<Acc> finish(const softmax_state<Acc>& st, Acc z_y, bool has_label) noexcept {
    using std::log;
    using std::log1p;
    softmax_outputs<Acc> r;
    const Acc s = st.e_y + st.rest;
    // e_y == 1: the label is the maximum (kept exact by rescaled), s = 1 + rest and log1p keeps the
    // rest < ulp(1) that log(1 + rest) drops; lse, H and log p_y use the same log s.
    const Acc log_s = st.e_y == Acc(1) ? log1p(st.rest) : log(s);
    r.lse = st.m + log_s;
    r.m = st.m;
    r.log_s = log_s;
    r.entropy = log_s - st.a / s;
    if (has_label) {
        r.log_p = z_y == st.m ? -log_s : (z_y - st.m) - log_s;
        r.one_minus_p = st.rest / s;
    }
    return r;
}

// dL/dz_v for a non-label entry with log p_v = z_v - lse (gl, gh: upstream gradients of log p_y and H).
template <class Acc>
POSTTRAIN_HD inline Acc grad_other(Acc log_p_v, Acc entropy, Acc gl, Acc gh) noexcept {
    using std::exp;
    const Acc p = exp(log_p_v);
    return p == Acc(0) ? Acc(0) : p * (-gl - gh * (entropy + log_p_v));
}

// dL/dz_y for the label entry, with 1 - p_y passed in exactly (rest / s, or -expm1(log p_y)).
template <class Acc>
POSTTRAIN_HD inline Acc grad_label(Acc log_p_y, Acc one_minus_p, Acc entropy, Acc gl, Acc gh) noexcept {
    using std::exp;
    const Acc p = exp(log_p_y);
    return gl * one_minus_p - (p == Acc(0) ? Acc(0) : gh * p * (entropy + log_p_y));
}

}  // namespace posttrain::logits::detail
