#pragma once
// Moving between sequence-level and token-level quantities: row sums of token rewards (the scalar
// outcome score), response lengths under a mask, and broadcasting a per-sequence advantage to tokens.

#include <variant>

#include "common.hpp"

namespace posttrain::advantage {

namespace detail {

// body(i) for every row i of an [N, T] problem; rows are independent.
template <class Policy, class Body>
void for_each_row(const Policy& p, index_t rows, index_t cols, Body&& body) {
    posttrain::detail::for_blocks(p, rows, cols + 1, [&](index_t lo, index_t hi) {
        for (index_t i = lo; i < hi; ++i) body(i);
    });
}

template <class M>
inline double mask_weight(M m) noexcept {
    return static_cast<double>(m);
}
inline double mask_weight(bool m) noexcept { return m ? 1.0 : 0.0; }

// a's extents must be b's. Host and device views alike (S: both in one memory space).
template <class A, int R, class B, int Q, class S>
void check_same_shape(tensor_view<A, R, S> a, tensor_view<B, Q, S> b, where w, const char* other) {
    static_assert(R == Q);
    for (int r = 0; r < R; ++r)
        require(a.extent(r) == b.extent(r), w,
                std::string("shape must match '") + other + "': dimension " + str(r) + " is " + str(a.extent(r)) +
                    ", expected " + str(b.extent(r)));
}

}  // namespace detail

// scores[i] = sum_t token_rewards[i, t] (no mask applied, as verl does: rewards live on valid tokens).
template <class Policy, class TokenRewards, class Scores>
void sequence_scores(const Policy& policy, const TokenRewards& token_rewards, Scores&& scores) {
    static_assert(host_policy<Policy>, "posttrain::advantage::sequence_scores: host policy expected");
    constexpr const char* fn = "posttrain::advantage::sequence_scores";
    std::visit(
        [&](auto r, auto s) {
            detail::check_extent(s.extent(0), r.extent(0), {fn, "scores"}, "length (one score per row of token_rewards)");
            detail::check_no_alias(s, r, {fn, "scores"}, "token_rewards");
            using S = typename decltype(s)::value_type;
            detail::for_each_row(policy, r.extent(0), r.extent(1), [&](index_t i) {
                s(i) = static_cast<S>(posttrain::detail::fixed_order_sum(r.extent(1), [&](index_t t) { return double(r(i, t)); }));
            });
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::floating_output<1>(scores, {fn, "scores"}));
}

// lengths[i] = sum_t mask[i, t] (the number of valid tokens for 0/1 masks).
template <class Policy, class Mask, class Lengths>
void sequence_lengths(const Policy& policy, const Mask& mask, Lengths&& lengths) {
    static_assert(host_policy<Policy>, "posttrain::advantage::sequence_lengths: host policy expected");
    constexpr const char* fn = "posttrain::advantage::sequence_lengths";
    std::visit(
        [&](auto m, auto l) {
            detail::check_extent(l.extent(0), m.extent(0), {fn, "lengths"}, "length (one entry per row of mask)");
            detail::check_no_alias(l, m, {fn, "lengths"}, "mask");
            using L = typename decltype(l)::value_type;
            detail::for_each_row(policy, m.extent(0), m.extent(1), [&](index_t i) {
                double n = 0;
                for (index_t t = 0; t < m.extent(1); ++t) n += detail::mask_weight(m(i, t));
                l(i) = static_cast<L>(n);
            });
        },
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<1>(lengths, {fn, "lengths"}));
}

// out[i, t] = values[i] * mask[i, t]: the outcome broadcast every framework applies.
template <class Policy, class Values, class Mask, class Out>
void broadcast_to_tokens(const Policy& policy, const Values& values, const Mask& mask, Out&& out) {
    static_assert(host_policy<Policy>, "posttrain::advantage::broadcast_to_tokens: host policy expected");
    constexpr const char* fn = "posttrain::advantage::broadcast_to_tokens";
    std::visit(
        [&](auto v, auto m, auto o) {
            detail::check_extent(v.extent(0), m.extent(0), {fn, "values"}, "length (one value per row of mask)");
            detail::check_same_shape(o, m, {fn, "out"}, "mask");
            detail::check_no_alias(o, v, {fn, "out"}, "values");
            detail::check_same_or_disjoint(o, m, {fn, "out"}, "mask");  // each element read before it is written
            using O = typename decltype(o)::value_type;
            detail::for_each_row(policy, m.extent(0), m.extent(1), [&](index_t i) {
                const double a = v(i);
                for (index_t t = 0; t < m.extent(1); ++t) o(i, t) = static_cast<O>(a * detail::mask_weight(m(i, t)));
            });
        },
        posttrain::detail::floating_input<1>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

}  // namespace posttrain::advantage
