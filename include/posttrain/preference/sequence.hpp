#pragma once
// Sequence log-probs for the preference losses: the masked sum of per-token log-probs of each
// response, its length, and the backward that maps a per-sequence gradient back onto the tokens.
//
// Every sequence-level preference loss depends on token log-probs p_t only through
//   S(y) = sum_t [m_t != 0] p_t   (and n(y) = sum_t [m_t != 0]),
// so dL/dp_t = [m_t != 0] * dL/dS: a constant broadcast along the response. A loss therefore reads its
// inputs once (the reduction), does O(B) work per pair, and writes its gradients once (the broadcast).
//
// Masks select, they do not multiply: a masked position contributes nothing whatever it holds (NaN or
// -inf padding included), and a nonzero mask entry of any value counts as one token. Non-finite
// log-probs at valid positions raise invalid_argument naming the argument and the first bad index.
// Sums are taken in double in posttrain's fixed order (eight lanes), so every host policy gives the
// same bits.

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../advantage/tokens.hpp"
#include "../core/exec.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"

namespace posttrain::preference {

namespace detail {

using namespace posttrain::detail;
using posttrain::advantage::detail::check_same_shape;
using posttrain::advantage::detail::for_each_row;

template <class T, int R>
using values_of = std::variant<std::monostate, tensor_view<const float, R>, tensor_view<const double, R>>;
using mask_of = std::variant<std::monostate, tensor_view<const bool, 2>, tensor_view<const float, 2>,
                             tensor_view<const double, 2>, tensor_view<const std::int64_t, 2>,
                             tensor_view<const std::int32_t, 2>, tensor_view<const std::uint8_t, 2>,
                             tensor_view<const std::int8_t, 2>>;
using lengths_of = std::variant<std::monostate, tensor_view<const bool, 1>, tensor_view<const float, 1>,
                                tensor_view<const double, 1>, tensor_view<const std::int64_t, 1>,
                                tensor_view<const std::int32_t, 1>, tensor_view<const std::uint8_t, 1>,
                                tensor_view<const std::int8_t, 1>>;
template <class T, int R>
using outputs_of = std::variant<std::monostate, tensor_view<float, R>, tensor_view<double, R>>;

// Widens the single-alternative variant a static argument gives into one of the variants above.
template <class Target, class Variant>
Target widen(Variant&& v) {
    return std::visit([](auto x) { return Target(x); }, std::forward<Variant>(v));
}

// A nonzero mask entry of any value selects the token (host and device).
template <class M>
POSTTRAIN_HD inline bool is_valid(M m) noexcept {
    if constexpr (std::is_same_v<M, bool>) return m;
    else return m != M(0);
}

}  // namespace detail

// The log-probs of a batch of B responses under one model, in one of two forms:
//  - tokens(log_probs [B, T], mask [B, T]): per-token log-probs and the response mask; the library
//    reduces them and maps gradients back to tokens;
//  - sums(sums [B]) or sums(sums [B], lengths [B]): log-probs already summed per sequence (lengths are
//    needed only by the length-normalised losses).
// A default-constructed input is absent (e.g. no reference model). Non-owning: the caller's memory
// must outlive the call that uses it.
class sequence_input {
public:
    sequence_input() = default;

    template <class LogProbs, class Mask>
    static sequence_input tokens(const LogProbs& log_probs, const Mask& mask) {
        constexpr const char* fn = "posttrain::preference::sequence_input::tokens";
        sequence_input s;
        s.tokens_ = detail::widen<detail::values_of<void, 2>>(posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}));
        s.mask_ = detail::widen<detail::mask_of>(posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
        std::visit(
            [&](auto v, auto m) {
                if constexpr (!std::is_same_v<decltype(v), std::monostate> && !std::is_same_v<decltype(m), std::monostate>)
                    detail::check_same_shape(m, v, {fn, "mask"}, "log_probs");
            },
            s.tokens_, s.mask_);
        return s;
    }

    template <class Sums>
    static sequence_input sums(const Sums& sums) {
        constexpr const char* fn = "posttrain::preference::sequence_input::sums";
        sequence_input s;
        s.sums_ = detail::widen<detail::values_of<void, 1>>(posttrain::detail::floating_input<1>(sums, {fn, "sums"}));
        return s;
    }

    template <class Sums, class Lengths>
    static sequence_input sums(const Sums& sums, const Lengths& lengths) {
        constexpr const char* fn = "posttrain::preference::sequence_input::sums";
        sequence_input s = sequence_input::sums(sums);
        s.lengths_ = detail::widen<detail::lengths_of>(posttrain::detail::mask_input<1>(lengths, {fn, "lengths"}));
        posttrain::detail::require(s.batch() == std::visit([](auto l) -> index_t {
                    if constexpr (std::is_same_v<decltype(l), std::monostate>) return 0;
                    else return l.extent(0);
                }, s.lengths_),
                {fn, "lengths"}, "must have one entry per sequence (the length of 'sums')");
        return s;
    }

    bool present() const noexcept { return per_token() || tokens_.index() != 0 || sums_.index() != 0; }
    bool per_token() const noexcept { return tokens_.index() != 0; }
    bool has_lengths() const noexcept { return per_token() || lengths_.index() != 0; }
    // B (0 when absent).
    index_t batch() const noexcept {
        return std::visit(
            [](auto v) -> index_t {
                if constexpr (std::is_same_v<decltype(v), std::monostate>) return 0;
                else return v.extent(0);
            },
            per_token() ? to_any(tokens_) : to_any(sums_));
    }
    // T (0 for the summed form).
    index_t tokens_per_row() const noexcept {
        return std::visit(
            [](auto v) -> index_t {
                if constexpr (std::is_same_v<decltype(v), std::monostate>) return 0;
                else return v.extent(1);
            },
            tokens_);
    }

    const detail::values_of<void, 2>& token_view() const noexcept { return tokens_; }
    const detail::mask_of& mask_view() const noexcept { return mask_; }
    const detail::values_of<void, 1>& sums_view() const noexcept { return sums_; }
    const detail::lengths_of& lengths_view() const noexcept { return lengths_; }

private:
    using any_view = std::variant<std::monostate, tensor_view<const float, 2>, tensor_view<const double, 2>,
                                  tensor_view<const float, 1>, tensor_view<const double, 1>>;
    static any_view to_any(const detail::values_of<void, 2>& v) { return std::visit([](auto x) { return any_view(x); }, v); }
    static any_view to_any(const detail::values_of<void, 1>& v) { return std::visit([](auto x) { return any_view(x); }, v); }

    detail::values_of<void, 2> tokens_;
    detail::mask_of mask_;
    detail::values_of<void, 1> sums_;
    detail::lengths_of lengths_;
};

// Where a loss writes dL/d(log-probs) of one batch of responses: a [B, T] view for an input given as
// tokens (masked positions get 0), a [B] view for one given as sums, or nothing (default).
class sequence_grad {
public:
    sequence_grad() = default;
    sequence_grad(none_t) {}  // NOLINT: implicit, so that posttrain::none reads naturally
    template <class G>
        requires(!std::is_same_v<std::remove_cvref_t<G>, sequence_grad> && !std::is_same_v<std::remove_cvref_t<G>, none_t>)
    sequence_grad(G&& g) {  // NOLINT: implicit, like the views the other losses take
        constexpr const char* fn = "posttrain::preference::sequence_grad";
        using V = std::remove_cvref_t<G>;
        if constexpr (static_viewable<V>) {
            if constexpr (static_view_t<V>::rank == 2) set_tokens(g, fn);
            else set_sums(g, fn);
        } else {
            if (tensor_traits<V>::dlpack(g).ndim == 2) set_tokens(g, fn);
            else set_sums(g, fn);
        }
    }
    bool present() const noexcept { return tokens_.index() != 0 || sums_.index() != 0; }
    bool per_token() const noexcept { return tokens_.index() != 0; }
    const detail::outputs_of<void, 2>& token_view() const noexcept { return tokens_; }
    const detail::outputs_of<void, 1>& sums_view() const noexcept { return sums_; }

private:
    template <class G>
    void set_tokens(G&& g, const char* fn) {
        tokens_ = detail::widen<detail::outputs_of<void, 2>>(posttrain::detail::floating_output<2>(g, {fn, "grad"}));
    }
    template <class G>
    void set_sums(G&& g, const char* fn) {
        sums_ = detail::widen<detail::outputs_of<void, 1>>(posttrain::detail::floating_output<1>(g, {fn, "grad"}));
    }

    detail::outputs_of<void, 2> tokens_;
    detail::outputs_of<void, 1> sums_;
};

// Length-desensitised weighting (LD-DPO, TRL ld_alpha): the first shared[b] valid tokens of row b weigh
// 1, the later ones alpha. Absent (shared == nullptr): every valid token weighs 1.
struct token_weighting {
    const double* shared = nullptr;
    double alpha = 1.0;
};

// Per-sequence quantities of one sequence_input: S = sum of the (weighted) valid log-probs and n = the
// number of valid tokens (NaN when the summed form came without lengths).
struct sequence_values {
    std::vector<double> sum;
    std::vector<double> length;
};

namespace detail {

#if defined(__GNUC__) && !defined(__CUDACC__)
// The contiguous, unweighted masked sums of one row at SIMD speed: of x1 and, when Two, of x2 too
// (a policy and its reference under one mask, read in one pass), and the count of valid tokens.
// Eight values at a time are converted to double and selected by their mask entries with GCC/clang
// vector extensions; lane l adds the positions t = l mod 8 (the tail included), the order of
// fixed_order_sum, so each sum has the bits of the portable loop below.
template <bool Two, class T1, class T2, class M>
void row_sums_simd(const T1* POSTTRAIN_RESTRICT x1, const T2* POSTTRAIN_RESTRICT x2, const M* POSTTRAIN_RESTRICT y,
                   index_t n, double (&acc_1)[8], double (&acc_2)[8], double (&acc_c)[8]) noexcept {
    if constexpr (std::is_same_v<M, bool>) {
        row_sums_simd<Two>(x1, x2, reinterpret_cast<const std::uint8_t*>(y), n, acc_1, acc_2, acc_c);
    } else {
        typedef double d8 __attribute__((vector_size(8 * sizeof(double))));
        typedef long long l8 __attribute__((vector_size(8 * sizeof(long long))));
        typedef T1 a8 __attribute__((vector_size(8 * sizeof(T1))));
        typedef T2 b8 __attribute__((vector_size(8 * sizeof(T2))));
        typedef M m8 __attribute__((vector_size(8 * sizeof(M))));
        // acc += x where `keep` is all ones, +0 where it is zero: a bitwise and (keep is the mask entry
        // != 0, widened to 64-bit lanes), so a masked NaN never reaches the sum. (By reference: vectors
        // passed by value change the ABI between instruction sets, -Wpsabi.)
        auto add_masked = [](d8& acc, const d8& x, const l8& keep) {
            l8 bits;
            std::memcpy(&bits, &x, sizeof bits);
            bits &= keep;
            d8 kept;
            std::memcpy(&kept, &bits, sizeof kept);
            acc += kept;
        };
        d8 v1, v2, c;
        std::memcpy(&v1, acc_1, sizeof v1);
        std::memcpy(&v2, acc_2, sizeof v2);
        std::memcpy(&c, acc_c, sizeof c);
        const d8 one = d8{} + 1.0;
        const index_t blocked = n - n % 8;
        for (index_t j = 0; j < blocked; j += 8) {
            a8 xa;
            m8 mv;
            std::memcpy(&xa, x1 + j, sizeof xa);
            std::memcpy(&mv, y + j, sizeof mv);
            const l8 keep = __builtin_convertvector(mv != m8{}, l8);
            add_masked(v1, __builtin_convertvector(xa, d8), keep);
            if constexpr (Two) {
                b8 xb;
                std::memcpy(&xb, x2 + j, sizeof xb);
                add_masked(v2, __builtin_convertvector(xb, d8), keep);
            }
            add_masked(c, one, keep);
        }
        std::memcpy(acc_1, &v1, sizeof v1);
        std::memcpy(acc_2, &v2, sizeof v2);
        std::memcpy(acc_c, &c, sizeof c);
        for (index_t j = blocked; j < n; ++j) {
            const bool ok = is_valid(y[j]);
            acc_1[j - blocked] += ok ? double(x1[j]) : 0.0;
            if constexpr (Two) acc_2[j - blocked] += ok ? double(x2[j]) : 0.0;
            acc_c[j - blocked] += ok ? 1.0 : 0.0;
        }
    }
}
#endif

// sum over the valid tokens of row i (weight 1 for the first `shared` valid tokens, `tail` after;
// shared < 0: all weigh 1) and the count of valid tokens; fixed lane order, so every policy gives the
// same bits.
template <class T, class M>
void row_sum_and_count(tensor_view<const T, 2> lp, tensor_view<const M, 2> m, index_t i, index_t shared, double tail,
                       double& sum, double& count) noexcept {
    const index_t T_ = lp.extent(1);
    double acc_v[8] = {}, acc_c[8] = {};
#if defined(__GNUC__) && !defined(__CUDACC__)
    if (shared < 0 && lp.stride(1) == 1 && m.stride(1) == 1) {
        const T* x = T_ > 0 ? &lp(i, 0) : nullptr;
        const M* y = T_ > 0 ? &m(i, 0) : nullptr;
        double unused[8] = {};  // the second stream's lanes, not read (one stream)
        row_sums_simd<false>(x, x, y, T_, acc_v, unused, acc_c);
        sum = combine_lanes(acc_v);
        count = combine_lanes(acc_c);
        return;
    }
#endif
    constexpr index_t chunk = 512;  // a multiple of the lanes: the order is that of one long sum
    double v[chunk], c[chunk];
    double seen = 0;
    for (index_t t0 = 0; t0 < T_; t0 += chunk) {
        const index_t len = T_ - t0 < chunk ? T_ - t0 : chunk;
        for (index_t j = 0; j < len; ++j) {
            const bool ok = is_valid(m(i, t0 + j));
            const double w = shared < 0 || seen < double(shared) ? 1.0 : tail;
            v[j] = ok ? w * double(lp(i, t0 + j)) : 0.0;
            c[j] = ok ? 1.0 : 0.0;
            seen += c[j];
        }
        const index_t blocked = len - len % 8;
        accumulate_lanes(acc_v, v, blocked);
        accumulate_lanes(acc_c, c, blocked);
        for (index_t j = blocked; j < len; ++j) {  // only in the last chunk
            acc_v[j - blocked] += v[j];
            acc_c[j - blocked] += c[j];
        }
    }
    sum = combine_lanes(acc_v);
    count = combine_lanes(acc_c);
}

// The first valid non-finite log-prob of row i, or -1.
template <class T, class M>
index_t first_nonfinite(tensor_view<const T, 2> lp, tensor_view<const M, 2> m, index_t i) noexcept {
    for (index_t t = 0; t < lp.extent(1); ++t)
        if (is_valid(m(i, t)) && !numeric::is_finite(lp(i, t))) return t;
    return -1;
}

[[noreturn]] inline void raise_nonfinite(where w, index_t i, index_t t) {
    raise_invalid_argument(w.function, w.argument,
                           "non-finite log-prob at a valid position [" + str(i) + (t >= 0 ? ", " + str(t) : std::string()) + "]");
}

// Raises unless every row sum is finite. A finite sum cannot hide a non-finite valid term, so the row is
// searched for the term only when its sum is not; a row of finite terms whose sum overflows is named too.
template <class T, class M>
void check_row_sums(const std::vector<double>& sums, tensor_view<const T, 2> lp, tensor_view<const M, 2> m, where w) {
    for (index_t i = 0; i < index_t(sums.size()); ++i)
        if (!numeric::is_finite(sums[std::size_t(i)])) {
            const index_t t = first_nonfinite(lp, m, i);
            if (t >= 0) raise_nonfinite(w, i, t);
            raise_invalid_argument(w.function, w.argument, "sum of row " + str(i) + " overflows (log-probs too large)");
        }
}

// S and n of every row of `in` (which must hold `batch` rows). Raises on non-finite valid values.
template <class Policy>
sequence_values reduce(const Policy& policy, const sequence_input& in, index_t batch, where w,
                       token_weighting weighting = {}) {
    posttrain::detail::require(in.present(), w, "is required");
    posttrain::detail::require(in.batch() == batch, w,
            "must hold one sequence per row of the batch: it has " + str(in.batch()) + ", expected " + str(batch));
    sequence_values out;
    out.sum.assign(std::size_t(batch), 0.0);
    out.length.assign(std::size_t(batch), std::nan(""));
    if (in.per_token()) {
        std::visit(
            [&](auto lp, auto m) {
                if constexpr (!std::is_same_v<decltype(lp), std::monostate> && !std::is_same_v<decltype(m), std::monostate>) {
                    for_each_row(policy, batch, lp.extent(1), [&](index_t i) {
                        const index_t shared = weighting.shared ? index_t(weighting.shared[i]) : -1;
                        double s, n;
                        row_sum_and_count(lp, m, i, shared, weighting.alpha, s, n);
                        out.sum[std::size_t(i)] = s;
                        out.length[std::size_t(i)] = n;
                    });
                    check_row_sums(out.sum, lp, m, w);
                }
            },
            in.token_view(), in.mask_view());
    } else {
        posttrain::detail::require(weighting.shared == nullptr, w, "ld_alpha needs per-token log-probs (sequence_input::tokens)");
        std::visit(
            [&](auto s) {
                if constexpr (!std::is_same_v<decltype(s), std::monostate>) {
                    for (index_t i = 0; i < batch; ++i) {
                        const double v = double(s(i));
                        if (!numeric::is_finite(v)) raise_nonfinite(w, i, -1);
                        out.sum[std::size_t(i)] = v;
                    }
                }
            },
            in.sums_view());
        std::visit(
            [&](auto l) {
                if constexpr (!std::is_same_v<decltype(l), std::monostate>) {
                    for (index_t i = 0; i < batch; ++i) {
                        const double v = double(l(i));
                        posttrain::detail::require(v >= 0 && numeric::is_finite(v), w, "lengths must be finite and non-negative");
                        out.length[std::size_t(i)] = v;
                    }
                }
            },
            in.lengths_view());
    }
    return out;
}

// g[i, t] = coef[i] * (LD weight of token t) on the valid tokens of row i, 0 elsewhere.
template <class Policy, class M, class G>
void write_token_grad(const Policy& policy, tensor_view<const M, 2> m, const std::vector<double>& coef,
                      tensor_view<G, 2> g, token_weighting weighting) {
    const index_t T_ = g.extent(1);
    if (T_ == 0) return;  // nothing to write (and no row start to take the address of)
    for_each_row(policy, g.extent(0), T_, [&](index_t i) {
        const double c = coef[std::size_t(i)];
        if (weighting.shared == nullptr && g.stride(1) == 1 && m.stride(1) == 1) {
            G* POSTTRAIN_RESTRICT y = &g(i, 0);
            const M* POSTTRAIN_RESTRICT k = &m(i, 0);
            const G cg = static_cast<G>(c);
            for (index_t t = 0; t < T_; ++t) y[t] = is_valid(k[t]) ? cg : G(0);
        } else {
            const double shared = weighting.shared ? weighting.shared[i] : -1;
            double seen = 0;
            for (index_t t = 0; t < T_; ++t) {
                const bool ok = is_valid(m(i, t));
                const double wt = shared < 0 || seen < shared ? 1.0 : weighting.alpha;
                g(i, t) = ok ? static_cast<G>(c * wt) : G(0);
                seen += ok ? 1.0 : 0.0;
            }
        }
    });
}

// A gradient output may not overlap an input of another side either (one side's gradient is written
// while the other side is still to be read): raises naming `w` and `in_name`.
inline void check_grad_disjoint(const sequence_grad& g, const sequence_input& in, where w, const char* in_name) {
    if (!g.present() || !in.present()) return;
    auto against = [&](const auto& out_variant) {
        std::visit(
            [&](auto o) {
                if constexpr (!std::is_same_v<decltype(o), std::monostate>) {
                    auto check = [&](const auto& in_variant) {
                        std::visit(
                            [&](auto v) {
                                if constexpr (!std::is_same_v<decltype(v), std::monostate>)
                                    posttrain::advantage::detail::check_no_alias(o, v, w, in_name);
                            },
                            in_variant);
                    };
                    check(in.token_view());
                    check(in.mask_view());
                    check(in.sums_view());
                    check(in.lengths_view());
                }
            },
            out_variant);
    };
    against(g.token_view());
    against(g.sums_view());
}

// Two gradient outputs may not overlap each other.
inline void check_grads_disjoint(const sequence_grad& a, const sequence_grad& b, where w, const char* b_name) {
    if (!a.present() || !b.present()) return;
    auto any_of = [](const sequence_grad& g) {
        using any = std::variant<std::monostate, tensor_view<float, 2>, tensor_view<double, 2>, tensor_view<float, 1>,
                                 tensor_view<double, 1>>;
        return g.per_token() ? std::visit([](auto v) { return any(v); }, g.token_view())
                             : std::visit([](auto v) { return any(v); }, g.sums_view());
    };
    std::visit(
        [&](auto x, auto y) {
            if constexpr (!std::is_same_v<decltype(x), std::monostate> && !std::is_same_v<decltype(y), std::monostate>)
                posttrain::advantage::detail::check_no_alias(x, y, w, b_name);
        },
        any_of(a), any_of(b));
}

struct named_grad {
    const sequence_grad& grad;
    const char* name;
    const sequence_input& of;  // the input it is the gradient of
};
struct named_input {
    const sequence_input& input;
    const char* name;
};

// The gradient `out` of `in` (when given): the form of `in` ([B, T] per token, [B] for sums), its
// shape, and not over `in`'s log-probs, mask or sums. Raises naming `w`; writes nothing.
inline void check_grad_of(const sequence_input& in, const sequence_grad& out, where w) {
    if (!out.present()) return;
    posttrain::detail::require(out.per_token() == in.per_token(), w,
            in.per_token() ? "must be a [B, T] view (its log-probs were given per token)"
                           : "must be a [B] view (its log-probs were given as sums)");
    if (in.per_token()) {
        std::visit(
            [&](auto g, auto lp, auto m) {
                if constexpr (!std::is_same_v<decltype(g), std::monostate> && !std::is_same_v<decltype(lp), std::monostate> &&
                              !std::is_same_v<decltype(m), std::monostate>) {
                    check_same_shape(g, lp, w, "log_probs");
                    posttrain::advantage::detail::check_no_alias(g, lp, w, "log_probs");
                    posttrain::advantage::detail::check_no_alias(g, m, w, "mask");
                }
            },
            out.token_view(), in.token_view(), in.mask_view());
    } else {
        std::visit(
            [&](auto g, auto s) {
                if constexpr (!std::is_same_v<decltype(g), std::monostate> && !std::is_same_v<decltype(s), std::monostate>) {
                    posttrain::detail::require(g.extent(0) == s.extent(0), w, "must have one entry per sequence");
                    posttrain::advantage::detail::check_no_alias(g, s, w, "sums");
                }
            },
            out.sums_view(), in.sums_view());
    }
}

// The gradients of a multi-input loss, checked before the first is written: each against its own
// input (check_grad_of: form, shape), none over an input of the call (one is written while others
// are still read) nor over another gradient.
inline void check_grads_against(const char* fn, std::initializer_list<named_grad> grads,
                                std::initializer_list<named_input> inputs) {
    for (auto g = grads.begin(); g != grads.end(); ++g) {
        check_grad_of(g->of, g->grad, {fn, g->name});
        for (const named_input& in : inputs) check_grad_disjoint(g->grad, in.input, {fn, g->name}, in.name);
        for (auto h = g + 1; h != grads.end(); ++h) check_grads_disjoint(g->grad, h->grad, {fn, g->name}, h->name);
    }
}

// The views of one dtype pair under one mask, if `a` and `b` are per-token, contiguous in T and share
// the same mask view: then both are reduced in one pass over the mask.
inline bool same_mask_view(const sequence_input& a, const sequence_input& b) noexcept {
    if (!a.per_token() || !b.per_token() || a.mask_view().index() != b.mask_view().index()) return false;
    return std::visit(
        [&](auto ma) {
            if constexpr (std::is_same_v<decltype(ma), std::monostate>) {
                return false;
            } else {
                const auto mb = std::get<decltype(ma)>(b.mask_view());
                return ma.data() == mb.data() && ma.extent(0) == mb.extent(0) && ma.extent(1) == mb.extent(1) &&
                       ma.stride(0) == mb.stride(0) && ma.stride(1) == mb.stride(1);
            }
        },
        a.mask_view());
}

// S and n of a policy side and of its reference side: one pass when they share a mask view (and no
// LD weighting applies), else two reductions. Same bits either way; errors name the right argument.
template <class Policy>
std::pair<sequence_values, sequence_values> reduce_with_reference(const Policy& policy, const sequence_input& in,
                                                                  const sequence_input& ref, index_t batch, where w,
                                                                  where w_ref, token_weighting weighting = {}) {
#if defined(__GNUC__) && !defined(__CUDACC__)
    if (weighting.shared == nullptr && in.present() && ref.present() && in.batch() == batch && ref.batch() == batch &&
        same_mask_view(in, ref)) {
        std::pair<sequence_values, sequence_values> out;
        bool fused = false;
        std::visit(
            [&](auto a, auto b, auto m) {
                if constexpr (!std::is_same_v<decltype(a), std::monostate> && !std::is_same_v<decltype(b), std::monostate> &&
                              !std::is_same_v<decltype(m), std::monostate>) {
                    const index_t T_ = a.extent(1);
                    if (a.stride(1) != 1 || b.stride(1) != 1 || m.stride(1) != 1 || T_ == 0 || b.extent(1) != T_) return;
                    fused = true;
                    // Named references, not a structured binding: clang before 16 cannot capture bindings.
                    auto& va = out.first;
                    auto& vb = out.second;
                    va.sum.assign(std::size_t(batch), 0.0);
                    vb.sum.assign(std::size_t(batch), 0.0);
                    va.length.assign(std::size_t(batch), 0.0);
                    for_each_row(policy, batch, 2 * T_, [&](index_t i) {
                        double acc_a[8] = {}, acc_b[8] = {}, acc_c[8] = {};
                        const auto* x = &a(i, 0);
                        const auto* z = &b(i, 0);
                        const auto* y = &m(i, 0);
                        row_sums_simd<true>(x, z, y, T_, acc_a, acc_b, acc_c);
                        va.sum[std::size_t(i)] = combine_lanes(acc_a);
                        vb.sum[std::size_t(i)] = combine_lanes(acc_b);
                        va.length[std::size_t(i)] = combine_lanes(acc_c);
                    });
                    vb.length = va.length;
                    check_row_sums(va.sum, a, m, w);
                    check_row_sums(vb.sum, b, m, w_ref);
                }
            },
            in.token_view(), ref.token_view(), in.mask_view());
        if (fused) return out;
    }
#endif
    auto a = reduce(policy, in, batch, w, in.per_token() ? weighting : token_weighting{});
    auto b = reduce(policy, ref, batch, w_ref, ref.per_token() ? weighting : token_weighting{});
    return {std::move(a), std::move(b)};
}

// Writes dL/d(log-probs) of `in` into `out`: coef[i] on every valid token of row i (times the token's
// LD weight), 0 on masked tokens; coef[i] itself for the summed form. Checks `out` (check_grad_of)
// first; a loss with several gradients checks them all (check_grads_against) before the first write.
template <class Policy>
void broadcast(const Policy& policy, const sequence_input& in, const std::vector<double>& coef, const sequence_grad& out,
               where w, token_weighting weighting = {}) {
    if (!out.present()) return;
    check_grad_of(in, out, w);
    if (in.per_token()) {
        std::visit(
            [&](auto g, auto lp, auto m) {
                if constexpr (!std::is_same_v<decltype(g), std::monostate> && !std::is_same_v<decltype(lp), std::monostate> &&
                              !std::is_same_v<decltype(m), std::monostate>)
                    write_token_grad(policy, m, coef, g, weighting);
            },
            out.token_view(), in.token_view(), in.mask_view());
    } else {
        std::visit(
            [&](auto g, auto s) {
                if constexpr (!std::is_same_v<decltype(g), std::monostate> && !std::is_same_v<decltype(s), std::monostate>) {
                    using G = typename decltype(g)::value_type;
                    for (index_t i = 0; i < g.extent(0); ++i) g(i) = static_cast<G>(coef[std::size_t(i)]);
                }
            },
            out.sums_view(), in.sums_view());
    }
}

}  // namespace detail

// sums[b] = sum_t [mask[b, t] != 0] log_probs[b, t] and (unless posttrain::none) lengths[b] = the number
// of valid tokens of row b. The reduction every sequence-level preference loss starts from, exposed
// for callers who want the sums themselves (e.g. to cache reference log-probs).
template <class Policy, class LogProbs, class Mask, class Sums, class Lengths = none_t>
void sequence_log_probs(const Policy& policy, const LogProbs& log_probs, const Mask& mask, Sums&& sums,
                        Lengths&& lengths = Lengths{0}) {
    static_assert(host_policy<Policy>, "posttrain::preference::sequence_log_probs: host policy expected");
    constexpr const char* fn = "posttrain::preference::sequence_log_probs";
    const sequence_input in = sequence_input::tokens(log_probs, mask);
    const auto v = detail::reduce(policy, in, in.batch(), {fn, "log_probs"});
    // Both outputs are checked (lengths, lengths apart from sums) before sums is written.
    const auto out_sums = posttrain::detail::floating_output<1>(sums, {fn, "sums"});
    auto check = [&](const auto& out, const char* name) {
        std::visit([&](auto o) {
            posttrain::detail::require(o.extent(0) == in.batch(), {fn, name}, "must have one entry per row of 'log_probs'");
        }, out);
    };
    auto write = [&](const auto& out, const std::vector<double>& x) {
        std::visit([&](auto o) {
            using O = typename decltype(o)::value_type;
            for (index_t i = 0; i < o.extent(0); ++i) o(i) = static_cast<O>(x[std::size_t(i)]);
        }, out);
    };
    check(out_sums, "sums");
    if constexpr (!std::is_same_v<std::remove_cvref_t<Lengths>, none_t>) {
        const auto out_lengths = posttrain::detail::floating_output<1>(lengths, {fn, "lengths"});
        check(out_lengths, "lengths");
        std::visit([&](auto l, auto s) { posttrain::advantage::detail::check_no_alias(l, s, {fn, "lengths"}, "sums"); },
                   out_lengths, out_sums);
        write(out_sums, v.sum);
        write(out_lengths, v.length);
    } else {
        write(out_sums, v.sum);
    }
}

// The backward of sequence_log_probs: grad_log_probs[b, t] = [mask[b, t] != 0] * grad_sums[b].
template <class Policy, class GradSums, class Mask, class GradLogProbs>
void sequence_log_probs_backward(const Policy& policy, const GradSums& grad_sums, const Mask& mask,
                                 GradLogProbs&& grad_log_probs) {
    static_assert(host_policy<Policy>, "posttrain::preference::sequence_log_probs_backward: host policy expected");
    constexpr const char* fn = "posttrain::preference::sequence_log_probs_backward";
    std::visit(
        [&](auto gs, auto m, auto g) {
            posttrain::detail::require(gs.extent(0) == m.extent(0), {fn, "grad_sums"}, "must have one entry per row of 'mask'");
            detail::check_same_shape(g, m, {fn, "grad_log_probs"}, "mask");
            std::vector<double> coef(std::size_t(gs.extent(0)));
            for (index_t i = 0; i < gs.extent(0); ++i) coef[std::size_t(i)] = double(gs(i));
            posttrain::advantage::detail::check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            detail::write_token_grad(policy, m, coef, g, {});
        },
        posttrain::detail::floating_input<1>(grad_sums, {fn, "grad_sums"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(grad_log_probs, {fn, "grad_log_probs"}));
}

}  // namespace posttrain::preference
