#pragma once
// Per-token log-probs of the labels under a model's logits, and the backward of that map.
//
// The preference trainers (TRL DPOTrainer, SimPO, TGDPO, ...) start from logits [B, T, V] and labels
// [B, T] and take log_softmax(logits)[b, t, labels[b, t]]; their golden gradients are w.r.t. the
// logits. With m = max_v z_v and s = sum_v exp(z_v - m) (both in double, fixed summation order):
//
//   logp       = z_y - m - log s                               (never exp of a positive number)
//   dlogp/dz_v = [v == y] - exp(z_v - m) / s                   (= [v == y] - softmax(z)_v)
//
// A label equal to options.ignore_index (-100, the Hugging Face convention) marks a position that is
// not scored: its log-prob is written as 0 and its logits gradient as 0, and its logits and upstream
// gradient are never read (select, not multiply: padding may hold NaN). Any other label must lie in
// [0, V) (checked before anything is written). NaN or +inf logits at scored positions raise (found
// inside the parallel loop, raised after it for the first bad row); -inf logits are vocabulary entries
// of probability 0 (masked vocabularies) and are allowed unless every logit of the position is -inf.
//
// Shifting for causal models (logits[:, :-1] against labels[:, 1:]) is the caller's: pass strided
// views. Host policies only; rows are independent, so exec::par gives the bits of exec::seq.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/tokens.hpp"
#include "../core/exec.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"

namespace posttrain::preference {

struct token_log_probs_options {
    // Labels equal to this value are not scored (log-prob 0, gradient 0).
    std::int64_t ignore_index = -100;
};

namespace detail {

using namespace posttrain::detail;

// The normaliser of one scored position with label k: m = max_v z_v, e[0..V) = exp(z_v - m), and the
// sum split as s = e_k + rest. Splitting keeps 1 - p_k = rest / s and log p_k = -log1p(rest) exact
// when the label is the argmax and p_k is close to 1 (where 1 - e_k / s would cancel).
struct label_normalizer {
    double m = 0, e_k = 1, rest = 0;
    index_t bad = -2;  // -2: valid; v >= 0: logit v is NaN or +inf; -1: every logit is -inf
    double log_p = 0;  // filled by the forward
    bool ok() const noexcept { return bad == -2; }
    double s() const noexcept { return e_k + rest; }
    // log softmax(z)_k
    template <class Z>
    double log_prob(const Z& z, index_t k) const noexcept {
        const double d = double(z(k)) - m;  // z_k - m first: both are moderate even for huge logits
        return d == 0 ? -std::log1p(rest) : d - std::log(s());
    }
};

// Validates the position while taking its max (one branch-free pass over the vocabulary for both), so
// that the check runs inside the parallel loop; a bad position is reported, not computed.
template <class Z>
label_normalizer label_normalizer_of(const Z& z, index_t V, index_t k, double* e) noexcept {
    constexpr double inf = std::numeric_limits<double>::infinity();
    label_normalizer r;
    double m = -inf;
    bool bad = false;
    for (index_t v = 0; v < V; ++v) {
        const double x = double(z(v));
        bad |= !(x < inf);  // NaN or +inf
        m = x > m ? x : m;
    }
    if (bad) {
        for (index_t v = 0; v < V; ++v)
            if (!(double(z(v)) < inf)) {
                r.bad = v;
                return r;
            }
    }
    if (m == -inf) {
        r.bad = -1;
        return r;
    }
    r.m = m;
    for (index_t v = 0; v < V; ++v) e[v] = std::exp(double(z(v)) - m);  // -inf logit: 0
    r.e_k = e[k];
    e[k] = 0;  // the label's term is kept apart (rest)
    r.rest = fixed_order_sum(e, V);
    e[k] = r.e_k;
    return r;
}

// The first bad scored position of a row (t = -1: none), raised after the parallel loop in row order
// (nothing may throw inside a parallel region, and the message must not depend on the thread count).
struct logits_error {
    index_t t = -1, v = -2;
};

template <class Z>
void raise_logits_errors(tensor_view<const Z, 3> z, const std::vector<logits_error>& errors, where w) {
    for (std::size_t i = 0; i < errors.size(); ++i) {
        const auto& e = errors[i];
        if (e.t < 0) continue;
        if (e.v >= 0)
            raise_invalid_argument(w.function, w.argument,
                                   "non-finite value " + std::to_string(double(z(index_t(i), e.t, e.v))) +
                                       " at a scored position [" + str(index_t(i)) + ", " + str(e.t) + ", " + str(e.v) + "]");
        raise_invalid_argument(w.function, w.argument,
                               "every logit of the scored position [" + str(index_t(i)) + ", " + str(e.t) + "] is -inf");
    }
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

// Shapes shared by the forward and the backward: labels [B, T] match the logits' first two extents.
template <class A, class Z>
void check_leading_shape(tensor_view<A, 2> x, tensor_view<const Z, 3> z, where w) {
    for (int r = 0; r < 2; ++r)
        require(x.extent(r) == z.extent(r), w,
                "shape must match the first two dimensions of 'logits': dimension " + str(r) + " is " + str(x.extent(r)) +
                    ", expected " + str(z.extent(r)));
}

// The labels are checked before anything is written, so a bad label leaves the outputs untouched.
template <class L>
void check_labels(tensor_view<const L, 2> y, index_t V, std::int64_t ignore, where w) {
    for (index_t i = 0; i < y.extent(0); ++i)
        for (index_t t = 0; t < y.extent(1); ++t) (void)label_index(y(i, t), V, ignore, i, t, w);
}

// The logits of one position as an accessor v -> z[i, t, v]; over a raw pointer when the vocabulary is
// contiguous, so that the loops over it vectorize.
template <class Z>
struct position_accessor {
    const Z* p;
    index_t stride;
    double operator()(index_t v) const noexcept { return double(p[v * stride]); }
};
template <class Z>
struct contiguous_accessor {
    const Z* p;
    double operator()(index_t v) const noexcept { return double(p[v]); }
};

template <class Z, class F>
decltype(auto) with_position_logits(tensor_view<const Z, 3> z, index_t i, index_t t, F&& f) {
    const Z* p = z.extent(2) > 0 ? &z(i, t, 0) : z.data();
    if (z.stride(2) == 1) return f(contiguous_accessor<Z>{p});
    return f(position_accessor<Z>{p, z.stride(2)});
}

// The pass the forward and the backward share: the positions of each row in order; ignored(i, t) where
// the label is the ignore index, otherwise the position's normaliser n = measure(zt, k, e) over its
// logits accessor zt (e: V doubles of scratch, as label_normalizer_of fills it), then scored(i, t, k, e, n).
// A bad position stops its row (nothing written from it on) and is raised after the parallel loop.
template <class Policy, class Z, class L, class Ignored, class Measure, class Scored>
void for_each_position(const Policy& policy, tensor_view<const Z, 3> z, tensor_view<const L, 2> y, std::int64_t ignore,
                       const char* fn, Ignored&& ignored, Measure&& measure, Scored&& scored) {
    const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
    std::vector<logits_error> errors(static_cast<std::size_t>(B));
    posttrain::advantage::detail::for_each_row(policy, B, T * V, [&](index_t i) {
        std::vector<double> e(static_cast<std::size_t>(V));
        for (index_t t = 0; t < T; ++t) {
            const index_t k = label_index(y(i, t), V, ignore, i, t, {fn, "labels"});
            if (k < 0) {
                ignored(i, t);
                continue;
            }
            const label_normalizer n = with_position_logits(z, i, t, [&](auto zt) { return measure(zt, k, e.data()); });
            if (!n.ok()) {
                errors[std::size_t(i)] = {t, n.bad};
                return;
            }
            scored(i, t, k, e.data(), n);
        }
    });
    raise_logits_errors(z, errors, {fn, "logits"});
}

}  // namespace detail

// out[b, t] = log_softmax(logits[b, t, :])[labels[b, t]] for logits [B, T, V] and integer labels
// [B, T] (0 where labels[b, t] == options.ignore_index). out is a float or double [B, T] view.
template <class Policy, class Logits, class Labels, class Out>
void token_log_probs(const Policy& policy, const Logits& logits, const Labels& labels, Out&& out,
                     const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::token_log_probs: host policy expected");
    constexpr const char* fn = "posttrain::preference::token_log_probs";
    std::visit(
        [&](auto z, auto y, auto o) {
            const index_t V = z.extent(2);
            detail::check_leading_shape(y, z, {fn, "labels"});
            detail::check_leading_shape(o, z, {fn, "out"});
            posttrain::advantage::detail::check_no_alias(o, z, {fn, "out"}, "logits");
            posttrain::advantage::detail::check_no_alias(o, y, {fn, "out"}, "labels");
            detail::check_labels(y, V, options.ignore_index, {fn, "labels"});
            using O = typename decltype(o)::value_type;
            detail::for_each_position(
                policy, z, y, options.ignore_index, fn, [&](index_t i, index_t t) { o(i, t) = O(0); },
                [&](auto zt, index_t k, double* e) {
                    auto r = detail::label_normalizer_of(zt, V, k, e);
                    r.log_p = r.ok() ? r.log_prob(zt, k) : 0.0;
                    return r;
                },
                [&](index_t i, index_t t, index_t, const double*, const detail::label_normalizer& n) {
                    o(i, t) = static_cast<O>(n.log_p);
                });
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::id_input<2>(labels, {fn, "labels"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

// The backward of token_log_probs: grad_logits[b, t, v] = grad_logp[b, t] * ([v == labels[b, t]] -
// softmax(logits[b, t, :])_v), and 0 on every ignored position (whose grad_logp is not read).
// grad_logp must be finite at scored positions.
template <class Policy, class Logits, class Labels, class GradLogp, class GradLogits>
void token_log_probs_backward(const Policy& policy, const Logits& logits, const Labels& labels, const GradLogp& grad_logp,
                              GradLogits&& grad_logits, const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::token_log_probs_backward: host policy expected");
    constexpr const char* fn = "posttrain::preference::token_log_probs_backward";
    std::visit(
        [&](auto z, auto y, auto up, auto g) {
            const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
            detail::check_leading_shape(y, z, {fn, "labels"});
            detail::check_leading_shape(up, z, {fn, "grad_logp"});
            posttrain::advantage::detail::check_same_shape(g, z, {fn, "grad_logits"}, "logits");
            posttrain::advantage::detail::check_no_alias(g, z, {fn, "grad_logits"}, "logits");
            posttrain::advantage::detail::check_no_alias(g, y, {fn, "grad_logits"}, "labels");
            posttrain::advantage::detail::check_no_alias(g, up, {fn, "grad_logits"}, "grad_logp");
            detail::check_labels(y, V, options.ignore_index, {fn, "labels"});
            for (index_t i = 0; i < B; ++i)
                for (index_t t = 0; t < T; ++t) {
                    if (detail::label_index(y(i, t), V, options.ignore_index, i, t, {fn, "labels"}) < 0) continue;
                    detail::require(numeric::is_finite(double(up(i, t))), {fn, "grad_logp"},
                                    "non-finite value at a scored position [" + posttrain::detail::str(i) + ", " + posttrain::detail::str(t) + "]");
                }
            using G = typename decltype(g)::value_type;
            detail::for_each_position(
                policy, z, y, options.ignore_index, fn, [&](index_t i, index_t t) {
                    for (index_t v = 0; v < V; ++v) g(i, t, v) = G(0);
                },
                [&](auto zt, index_t k, double* e) { return detail::label_normalizer_of(zt, V, k, e); },
                [&](index_t i, index_t t, index_t k, const double* e, const detail::label_normalizer& n) {
                    const double u = double(up(i, t)), f = u / n.s();
                    if (g.stride(2) == 1 && V > 0) {
                        G* POSTTRAIN_RESTRICT out = &g(i, t, 0);
                        for (index_t v = 0; v < V; ++v) out[v] = static_cast<G>(-f * e[v]);
                        out[k] = static_cast<G>(f * n.rest);
                    } else {
                        for (index_t v = 0; v < V; ++v) g(i, t, v) = static_cast<G>(v == k ? f * n.rest : -f * e[v]);
                    }
                });
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::id_input<2>(labels, {fn, "labels"}),
        posttrain::detail::floating_input<2>(grad_logp, {fn, "grad_logp"}),
        posttrain::detail::floating_output<3>(grad_logits, {fn, "grad_logits"}));
}

}  // namespace posttrain::preference
