#pragma once
// The token-level view of DPO (Rafailov et al. 2024, "From r to Q*"): per-token implicit rewards
//
//   r_t = beta * (p_t - q_t)          p = policy log-prob, q = reference log-prob, valid tokens only
//
// their prefix sums sum_{i <= t} r_i (a value proxy: beta * log pi/pi_ref of the prefix, i.e.
// Q*(s_t, a_t) - V*(s_0) at the optimum) and each response's total beta * l(y), the DPO implicit
// reward. No gradient: these are diagnostics and inputs to token-level methods (TGDPO logs them,
// RTO turns a DPO model's into a dense PPO reward).
//
// Also the [B, T] vocabulary the token-level preference losses share: an optional [B, T] output
// (token_output) and row-wise reading of [B, T] inputs of any dtype into doubles.

#include <cmath>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "common.hpp"

namespace posttrain::preference {

// An optional [B, T] output (per-token rewards, prefix sums, gradients): any writable float or double
// matrix view; default-constructed or posttrain::none means "not wanted".
class token_output {
public:
    token_output() = default;
    token_output(none_t) {}  // NOLINT: implicit
    template <class X>
        requires(!std::is_same_v<std::remove_cvref_t<X>, token_output> && !std::is_same_v<std::remove_cvref_t<X>, none_t>)
    token_output(X&& x)  // NOLINT: implicit, like the views the losses take
        : view_(detail::widen<detail::outputs_of<void, 2>>(
              posttrain::detail::floating_output<2>(x, {"posttrain::preference::token_output", "output"}))) {}

    bool present() const noexcept { return view_.index() != 0; }
    const detail::outputs_of<void, 2>& view() const noexcept { return view_; }

private:
    detail::outputs_of<void, 2> view_;
};

namespace detail {

// Extent r of a type-erased view (0 for an absent one).
template <class Variant>
index_t erased_extent(const Variant& view, int r) noexcept {
    return std::visit([r](auto v) -> index_t {
        if constexpr (std::is_same_v<decltype(v), std::monostate>) return 0;
        else return v.extent(r);
    }, view);
}

// A [B, T] floating input held type-erased, with its name for error messages.
struct token_values {
    values_of<void, 2> view;
    const char* name = "";
    bool present() const noexcept { return view.index() != 0; }
    index_t rows() const noexcept { return erased_extent(view, 0); }
    index_t cols() const noexcept { return erased_extent(view, 1); }
    // dst[t] = row i as doubles (every position, masked ones included: the caller selects).
    void load(index_t i, double* dst) const noexcept {
        std::visit([&](auto v) {
            if constexpr (!std::is_same_v<decltype(v), std::monostate>)
                for (index_t t = 0; t < v.extent(1); ++t) dst[t] = double(v(i, t));
        }, view);
    }
};

template <class X>
token_values token_values_of(const X& x, where w) {
    return {widen<values_of<void, 2>>(posttrain::detail::floating_input<2>(x, w)), w.argument};
}

// A [B, T] mask held type-erased; row i loads as 0/1 bytes (nonzero = valid).
struct token_mask {
    mask_of view;
    const char* name = "";
    index_t rows() const noexcept { return erased_extent(view, 0); }
    index_t cols() const noexcept { return erased_extent(view, 1); }
    void load(index_t i, unsigned char* dst) const noexcept {
        std::visit([&](auto v) {
            if constexpr (!std::is_same_v<decltype(v), std::monostate>)
                for (index_t t = 0; t < v.extent(1); ++t) dst[t] = is_valid(v(i, t)) ? 1 : 0;
        }, view);
    }
};

template <class X>
token_mask token_mask_of(const X& x, where w) {
    return {widen<mask_of>(posttrain::detail::mask_input<2>(x, w)), w.argument};
}

// The [B, T] shape of one argument against the expected one.
inline void check_token_shape(index_t rows, index_t cols, index_t B, index_t T, where w, const char* like) {
    require(rows == B && cols == T, w,
            std::string("shape must match '") + like + "': found [" + str(rows) + ", " + str(cols) + "], expected [" +
                str(B) + ", " + str(T) + "]");
}

// The bytes a type-erased view touches (none for an absent one), for the aliasing checks.
template <class Variant>
bool overlaps(const Variant& a, const void* begin, const void* end) noexcept {
    return std::visit([&](auto v) {
        if constexpr (std::is_same_v<decltype(v), std::monostate>) return false;
        else return views_overlap(v, begin, end);
    }, a);
}
template <class VariantA, class VariantB>
bool overlaps(const VariantA& a, const VariantB& b) noexcept {
    return std::visit([&](auto v) {
        if constexpr (std::is_same_v<decltype(v), std::monostate>) return false;
        else {
            if (v.size() == 0) return false;
            index_t last = 0;
            for (int r = 0; r < decltype(v)::rank; ++r) last += (v.extent(r) - 1) * v.stride(r);
            return overlaps(a, static_cast<const void*>(v.data()), static_cast<const void*>(v.data() + last + 1));
        }
    }, b);
}

// Checks that a present output has shape [B, T] and overlaps none of `inputs`.
template <class... Inputs>
void check_token_output(const token_output& out, index_t B, index_t T, where w, const char* like, const Inputs&... inputs) {
    if (!out.present()) return;
    std::visit([&](auto v) {
        if constexpr (!std::is_same_v<decltype(v), std::monostate>) check_token_shape(v.extent(0), v.extent(1), B, T, w, like);
    }, out.view());
    auto one = [&](const auto& in) {
        require(!overlaps(out.view(), in.view), w, std::string("the output overlaps the input '") + in.name + "'; pass a separate buffer");
    };
    (one(inputs), ...);
}

// Two outputs must not overlap each other.
inline void check_outputs_disjoint(const token_output& a, const token_output& b, where w, const char* other) {
    require(!overlaps(a.view(), b.view()), w, std::string("the output overlaps the output '") + other + "'; pass a separate buffer");
}

inline void write_row(const token_output& out, index_t i, const double* src) noexcept {
    std::visit([&](auto v) {
        if constexpr (!std::is_same_v<decltype(v), std::monostate>) {
            using V = typename decltype(v)::value_type;
            for (index_t t = 0; t < v.extent(1); ++t) v(i, t) = static_cast<V>(src[t]);
        }
    }, out.view());
}

// The first non-finite value at a valid position of a row, found while reading it: recorded per row
// by the parallel loops and raised afterwards in row order (nothing may throw inside a parallel
// region, and the error must not depend on the thread count).
struct row_error {
    const char* argument = nullptr;
    index_t t = -1;
};

inline void raise_first(const std::vector<row_error>& errors, const char* fn, const char* what = "non-finite value at a valid position") {
    for (std::size_t i = 0; i < errors.size(); ++i)
        if (errors[i].argument)
            raise_invalid_argument(fn, errors[i].argument,
                                   std::string(what) + " [" + str(index_t(i)) + ", " + str(errors[i].t) + "]");
}

// Marks the first valid non-finite entry of x (if none recorded yet).
inline void note_nonfinite(row_error& e, const double* x, const unsigned char* m, index_t T, const char* name) noexcept {
    if (e.argument) return;
    for (index_t t = 0; t < T; ++t)
        if (m[t] && !numeric::is_finite(x[t])) {
            e = {name, t};
            return;
        }
}

// How many of a row's T positions are valid (a fixed-order sum, as every count here is).
inline double valid_count(const unsigned char* m, index_t T) noexcept {
    return fixed_order_sum(T, [&](index_t t) { return m[t] ? 1.0 : 0.0; });
}

// An option that must be finite, named in the message as options.<what>.
inline void require_finite_option(double x, const char* fn, const char* what) {
    require(numeric::is_finite(x), {fn, "options"}, std::string(what) + " must be finite, found " + std::to_string(x));
}

// The argument triple the token-reward functions read: log-probs [B, T] of a model (named p_name),
// the reference's (always "ref_log_probs") and the mask, each checked against the first's shape.
struct token_log_ratio {
    token_values p, q;
    token_mask m;
    index_t B = 0, T = 0;
    const char* p_name = "";

    // One row of them as doubles and bytes (every position: the caller selects the valid ones).
    struct row {
        std::vector<double> p, q;
        std::vector<unsigned char> m;
        explicit row(index_t T) : p(static_cast<std::size_t>(T)), q(p.size()), m(p.size()) {}
    };
    void load(index_t i, row& r) const noexcept {
        p.load(i, r.p.data());
        q.load(i, r.q.data());
        m.load(i, r.m.data());
    }
    // Loads row i and records in e the first non-finite log-prob at a valid position (p's before q's).
    void load_checked(index_t i, row& r, row_error& e) const noexcept {
        load(i, r);
        note_nonfinite(e, r.p.data(), r.m.data(), T, p.name);
        note_nonfinite(e, r.q.data(), r.m.data(), T, q.name);
    }
    // A present [B, T] output (named w.argument) must have this shape and overlap none of the three.
    void check_output(const token_output& out, where w) const { check_token_output(out, B, T, w, p_name, p, q, m); }
};

template <class P, class Q, class M>
token_log_ratio token_log_ratio_of(const P& log_probs, const Q& ref_log_probs, const M& mask, const char* fn, const char* p_name) {
    token_log_ratio in{token_values_of(log_probs, {fn, p_name}), token_values_of(ref_log_probs, {fn, "ref_log_probs"}),
                       token_mask_of(mask, {fn, "mask"})};
    in.B = in.p.rows(), in.T = in.p.cols(), in.p_name = p_name;
    check_token_shape(in.q.rows(), in.q.cols(), in.B, in.T, {fn, "ref_log_probs"}, p_name);
    check_token_shape(in.m.rows(), in.m.cols(), in.B, in.T, {fn, "mask"}, p_name);
    return in;
}

// r_t = beta * (p_t - q_t) on valid tokens, 0 elsewhere.
inline void token_reward_row(const double* p, const double* q, const unsigned char* m, index_t T, double beta,
                             double* r) noexcept {
    for (index_t t = 0; t < T; ++t) r[t] = m[t] ? beta * (p[t] - q[t]) : 0.0;
}

}  // namespace detail

struct token_reward_options {
    double beta = 0.1;  // the DPO beta of the policy whose implicit reward this is
};

struct [[nodiscard]] token_reward_result {
    double mean_total = 0;  // mean over responses of beta * l(y) (TRL's rewards/chosen for a batch of chosen)
    double tokens = 0;      // valid tokens in the batch
};

// rewards[b, t] = beta * (log_probs - ref_log_probs)[b, t] on valid tokens (0 on masked ones);
// prefix[b, t] = sum of rewards[b, 0..t] on valid tokens (0 on masked ones), a left-to-right running
// sum; totals[b] = sum_t rewards[b, t] (fixed-order sum: the DPO implicit reward beta * l(y)). Each of
// rewards, prefix, totals may be posttrain::none. Inputs at masked positions are never read; non-finite
// log-probs at valid positions raise.
template <class Policy, class LogProbs, class RefLogProbs, class Mask>
token_reward_result token_rewards(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                                  const Mask& mask, const token_output& rewards, const token_output& prefix = {},
                                  const batch_output& totals = {}, const token_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::token_rewards: host policy expected");
    constexpr const char* fn = "posttrain::preference::token_rewards";
    detail::require_finite_option(options.beta, fn, "beta");
    const auto in = detail::token_log_ratio_of(log_probs, ref_log_probs, mask, fn, "log_probs");
    const index_t B = in.B, T = in.T;
    in.check_output(rewards, {fn, "rewards"});
    in.check_output(prefix, {fn, "prefix"});
    detail::check_outputs_disjoint(rewards, prefix, {fn, "prefix"}, "rewards");
    if (totals.present())
        posttrain::detail::require(totals.size() == B, {fn, "totals"},
                                   "must have one entry per row: " + posttrain::detail::str(B) + ", found " +
                                       posttrain::detail::str(totals.size()));
    detail::check_outputs_before_writes(fn, B, {{totals, "totals"}}, {{rewards.view(), "rewards"}, {prefix.view(), "prefix"}});
    std::vector<double> total(static_cast<std::size_t>(B)), count(static_cast<std::size_t>(B));
    std::vector<detail::row_error> errors(static_cast<std::size_t>(B));
    posttrain::advantage::detail::for_each_row(policy, B, T, [&](index_t i) {
        detail::token_log_ratio::row x(T);
        std::vector<double> r(static_cast<std::size_t>(T));
        auto& e = errors[std::size_t(i)];
        in.load_checked(i, x, e);
        if (e.argument) return;
        detail::token_reward_row(x.p.data(), x.q.data(), x.m.data(), T, options.beta, r.data());
        total[std::size_t(i)] = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return r[std::size_t(t)]; });
        count[std::size_t(i)] = detail::valid_count(x.m.data(), T);
        if (rewards.present()) detail::write_row(rewards, i, r.data());
        if (prefix.present()) {
            double run = 0;
            for (index_t t = 0; t < T; ++t) {
                run += r[std::size_t(t)];  // r is 0 on masked tokens, so the sum carries across holes
                r[std::size_t(t)] = x.m[std::size_t(t)] ? run : 0.0;
            }
            detail::write_row(prefix, i, r.data());
        }
    });
    detail::raise_first(errors, fn);
    totals.write(total, {fn, "totals"});
    token_reward_result res;
    if (B > 0) res.mean_total = posttrain::detail::fixed_order_sum(B, [&](index_t i) { return total[std::size_t(i)]; }) / double(B);
    res.tokens = posttrain::detail::fixed_order_sum(B, [&](index_t i) { return count[std::size_t(i)]; });
    return res;
}

}  // namespace posttrain::preference
