#pragma once
// Generalized advantage estimation (Schulman et al. 2016) over [N, T] token tensors, with the
// frameworks' treatments of masked tokens, decoupled value/policy lambdas (VAPO, NeMo RL), a
// length-adaptive lambda, and the optional batch whitening of the advantages.
//
// Per row, backwards in time:  delta_t = r_t + gamma * V_next - V_t,  A_t = delta_t + gamma*lambda*A_{t+1},
// returns_t = A_t + V_t. Each step is an affine map of the state after the next token, so a row is
// a reverse linear recurrence (a scan under map composition): O(N*T) work. The host runs rows in
// parallel, each row as the plain backward recurrence (the frameworks' arithmetic, bit for bit), and
// can cut long rows into fixed chunks whose composed maps give each chunk its incoming state
// (gae_options::time_chunk). The CUDA path (gae.cuh) is the same scan on the device.

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "returns.hpp"
#include "whiten.hpp"

namespace posttrain::advantage {

// How masked tokens (padding, observation tokens inside a multi-turn response) enter the recurrence.
enum class gae_masking {
    carry,  // a masked token passes the next value and the running advantage through unchanged;
            // its own advantage is the carried one (verl, NeMo RL)
    zero,   // rewards and values are multiplied by the mask first; V_next is the next token's
            // (masked) value, nothing is carried (OpenRLHF, RTO)
    none,   // the recurrence ignores the mask (the caller zeroed what it wanted); the mask still
            // weights the whitening and the output masking (TRL PPO)
};

struct gae_options {
    double gamma = 1.0;
    double lambda = 0.95;  // the advantages' lambda (NeMo gae_lambda_policy)
    gae_masking masking = gae_masking::carry;
    // The returns' lambda (NeMo gae_lambda_value, VAPO): returns come from a second pass with it.
    // Unset: the returns use the advantages' lambda (one pass).
    std::optional<double> lambda_value{};
    // > 0: each row's advantage lambda is clamp(1 - 1/max(alpha * length, 1), 0, 1), length = the
    // row's mask sum (VAPO's length-adaptive lambda, NeMo length_adaptive_alpha).
    double length_adaptive_alpha = 0;
    bool whiten = true;           // whiten the advantages over the batch (after the returns are taken)
    whiten_options whitening{};   // its statistics; its mask_output is replaced by the one below
    bool mask_output = true;      // advantages * mask (masked tokens get 0); returns are never masked
    nonfinite nonfinite_inputs = nonfinite::raise;  // raise (first bad index) or propagate
    // 0: every row is one backward recurrence. > 0: rows longer than this are cut into chunks of
    // this many tokens, each chunk's maps are composed to give the next chunk its incoming state,
    // and chunks run in parallel. The bits depend on the chunk length, never on the policy or the
    // thread count; they differ from the unchunked recurrence by rounding only.
    index_t time_chunk = 0;

    // verl compute_gae_advantage_return: carry masking, returns = A + V, advantages whitened by
    // masked_whiten (unbiased, not re-masked: a fully masked row gets (A - mean) * rstd).
    static constexpr gae_options verl(double gamma = 1.0, double lambda = 1.0) {
        gae_options o;
        o.gamma = gamma;
        o.lambda = lambda;
        o.whitening = whiten_options::verl();
        o.mask_output = false;
        return o;
    }
    // OpenRLHF get_advantages_and_returns (values and rewards masked, no carry), then the advantage
    // whitening of compute_advantages_and_returns (biased, clamp(var, 1e-8); centring only with
    // no_std_norm). get_advantages_and_returns alone: set whiten = false.
    static constexpr gae_options openrlhf(double gamma = 1.0, double lambda = 1.0, bool no_std_norm = false) {
        gae_options o;
        o.gamma = gamma;
        o.lambda = lambda;
        o.masking = gae_masking::zero;
        o.whitening = whiten_options::openrlhf(no_std_norm);
        o.mask_output = false;
        return o;
    }
    // NeMo RL GeneralizedAdvantageEstimator: carry masking, normalize_advantages (masked mean with a
    // 1e-8 count epsilon, unbiased variance, rsqrt(var + 1e-8)), masked advantages set to 0. Set
    // lambda_value / length_adaptive_alpha for the decoupled (VAPO) form.
    static constexpr gae_options nemo(double gamma = 1.0, double lambda = 0.95) {
        gae_options o;
        o.gamma = gamma;
        o.lambda = lambda;
        o.whitening = whiten_options::verl();
        o.whitening.on_degenerate = degenerate::zeros;  // NeMo has no guard; its arithmetic gives 0 there
        return o;
    }
    // TRL (experimental) PPOTrainer: the plain loop over values the caller masked, advantages
    // whitened with trl's masked_whiten (no count epsilon, unbiased) and set to 0 on padding.
    static constexpr gae_options trl(double gamma = 1.0, double lambda = 0.95) {
        gae_options o;
        o.gamma = gamma;
        o.lambda = lambda;
        o.masking = gae_masking::none;
        o.whitening.on_degenerate = degenerate::raise;
        return o;
    }
};

namespace detail {

// ---- The per-token arithmetic as affine maps (shared with the CUDA scan in gae.cuh) --------------
//
// A backward step maps the state after the next token, (n = the next value, a = the running
// advantage), to the state after this token:  n' = p*n + q,  a' = a_*a + c*n + b. The discounted
// returns fit the same form with n = the running return and a = the written return.
struct scan_map {
    double p, q, a, c, b;
};

POSTTRAIN_HD inline scan_map scan_identity() noexcept { return {1.0, 0.0, 1.0, 0.0, 0.0}; }

// `first` (nearer the end of the row) followed by `then`.
POSTTRAIN_HD inline scan_map scan_then(const scan_map& first, const scan_map& then) noexcept {
    return {then.p * first.p, then.p * first.q + then.q, then.a * first.a, then.a * first.c + then.c * first.p,
            then.a * first.b + then.c * first.q + then.b};
}

// The state (n, a) after f.
POSTTRAIN_HD inline void scan_apply(const scan_map& f, double& n, double& a) noexcept {
    const double next = f.p * n + f.q;
    a = f.a * a + f.c * n + f.b;
    n = next;
}

// One GAE token: rewards r, value v, mask weight m; gl = gamma * lambda.
POSTTRAIN_HD inline scan_map gae_token_map(gae_masking mode, double r, double v, double m, double gamma, double gl) noexcept {
    switch (mode) {
        case gae_masking::carry:
            return {1.0 - m, m * v, m * gl + (1.0 - m), m * gamma, m * (r - v)};
        case gae_masking::zero:
            return {0.0, m * v, gl, gamma, m * r - m * v};
        default:
            return {0.0, v, gl, gamma, r - v};
    }
}

// One discounted-returns token (returns.hpp's three conventions): n = the running sum the next
// token sees, a = the return written at this token.
POSTTRAIN_HD inline scan_map returns_token_map(masked_tokens mode, double r, double m, double gamma) noexcept {
    switch (mode) {
        case masked_tokens::reset:  // g = r + gamma*run; run = g*m
            return {m * gamma, m * r, 0.0, gamma, r};
        case masked_tokens::carry:  // g = (r + gamma*run)*m; run = g + run*(1-m)
            return {m * gamma + (1.0 - m), m * r, 0.0, m * gamma, m * r};
        default:  // zero_rewards: g = r*m + gamma*run; run = g
            return {gamma, r * m, 0.0, gamma, r * m};
    }
}

// ---- The host recurrence, written in the frameworks' order of operations -------------------------

// D is double, or a vector of doubles holding several rows (one per lane, each with the same
// arithmetic in the same order).
template <class D>
struct gae_state_of {
    D next{};       // the value the previous token (in time: the next one) hands back
    D adv{};        // running advantage (lambda of the advantages)
    D adv_value{};  // running advantage of the returns' pass (decoupled lambdas only)
};
using gae_state = gae_state_of<double>;

// One backward step; `used` receives the value the recurrence used for V_t (returns = A + that).
// (Vectors pass by reference: by value they would change the ABI between instruction sets.)
template <gae_masking Mode, bool Decoupled, class D>
inline void gae_step(const D& r, const D& v, const D& m, double gamma, const D& gl, double glv, gae_state_of<D>& s,
                     D& used) noexcept {
    if constexpr (Mode == gae_masking::carry) {
        // verl / NeMo: new = delta + gl*run; next = v*m + (1-m)*next; run = new*m + (1-m)*run.
        const D delta = r + gamma * s.next - v;
        const D fresh = delta + gl * s.adv;
        s.adv = fresh * m + (1.0 - m) * s.adv;
        if constexpr (Decoupled) s.adv_value = (delta + glv * s.adv_value) * m + (1.0 - m) * s.adv_value;
        s.next = v * m + (1.0 - m) * s.next;
        used = v;
    } else {
        // OpenRLHF multiplies rewards and values by the mask first; TRL uses them as given.
        D rm = r, vm = v;
        if constexpr (Mode == gae_masking::zero) rm = m * r, vm = m * v;
        const D delta = rm + gamma * s.next - vm;
        s.adv = delta + gl * s.adv;
        if constexpr (Decoupled) s.adv_value = delta + glv * s.adv_value;
        s.next = vm;
        used = vm;
    }
}

// What one call needs per row and per token, resolved from the options once.
struct gae_plan {
    gae_masking masking = gae_masking::carry;
    bool decoupled = false;   // a second running advantage for the returns
    bool mask_output = false; // multiply the written advantages by the mask (no whitening follows)
    double gamma = 1;
    double gl = 1;            // gamma * lambda of the advantages (when not per row)
    double glv = 1;           // gamma * lambda of the returns
    const double* row_gl = nullptr;  // per-row gamma * lambda of the advantages, or null
    index_t chunk = 0;        // > 0: rows are cut into chunks of this many tokens
};

// Rows run their recurrences in pairs: two independent dependency chains per loop iteration instead
// of one (each row keeps its own order of operations, so the bits are the same). More rows mean more
// concurrent streams (five per row) at the same offset within a page when T is a power of two,
// which costs more in cache-set conflicts than the extra chains gain (measured on one core at
// 2^22 tokens: 1 row 14.7 ms, 2 rows 10.9 ms, 4 rows 22.6 ms at T = 1024; 12.7 / 10.8 / 20.9 ms at
// T = 4096; 18.8 / 14.4 / 11.7 ms at T = 1000). Streaming the whitening's count and sum into
// this pass instead of masked_whiten's own passes was measured too: no faster.
inline constexpr int gae_interleave = 2;

// Runs the exact recurrence on rows [i0, i0 + K) over tokens [lo, hi), backwards, from the states
// s[0..K); writes the advantages and (unless none) the returns; adds adv * 0 into probe (NaN when a
// non-finite value went through).
template <gae_masking Mode, bool Decoupled, int K, class R, class V, class M, class A, class Ret>
inline void gae_rows(const gae_plan& plan, R r, V v, M m, A a, Ret* ret, index_t i0, index_t lo, index_t hi, gae_state* s,
                     double& probe) {
    using AT = typename A::value_type;
    double gl[K], p = 0;
    for (int k = 0; k < K; ++k) gl[k] = plan.row_gl ? plan.row_gl[i0 + k] : plan.gl;
    const double gamma = plan.gamma, glv = plan.glv;
    const bool mask_output = plan.mask_output;
    for (index_t t = hi - 1; t >= lo; --t) {
        for (int k = 0; k < K; ++k) {
            const index_t i = i0 + k;
            const double w = mask_weight(m(i, t));
            double vt;
            gae_step<Mode, Decoupled, double>(double(r(i, t)), double(v(i, t)), w, gamma, gl[k], glv, s[k], vt);
            a(i, t) = static_cast<AT>(mask_output ? s[k].adv * w : s[k].adv);
            if constexpr (!std::is_same_v<Ret, none_t>) {
                using RT = typename Ret::value_type;
                (*ret)(i, t) = static_cast<RT>((Decoupled ? s[k].adv_value : s[k].adv) + vt);
            }
            p += s[k].adv * 0.0;
        }
    }
    probe += p;
}

#if defined(__GNUC__) && !defined(__CUDACC__)
#define POSTTRAIN_GAE_LANES 1
// Eight rows at once, one per lane of a vector of doubles: eight independent recurrences per step
// hide the latency of each row's dependency chain. Each lane runs gae_step's arithmetic in its
// order; tiles of 256 tokens are transposed into lane order through small local buffers, so every
// row is still read and written contiguously (no power-of-two strides between concurrent streams,
// the cache-set conflicts that made interleaving more scalar rows slower). Rows past the end of
// the batch are zero lanes whose results are dropped.
inline constexpr int gae_lanes = 8;

template <gae_masking Mode, bool Decoupled, class R, class V, class M, class A, class Ret>
void gae_rows_lanes(const gae_plan& plan, R r, V v, M m, A a, Ret* ret, index_t i0, index_t count, index_t T,
                    double& probe) {
    typedef double lanes_t __attribute__((vector_size(gae_lanes * sizeof(double))));
    using AT = typename A::value_type;
    constexpr index_t tile = 256;
    lanes_t gl = {}, p = {};
    for (int k = 0; k < gae_lanes; ++k) gl[k] = k < count ? (plan.row_gl ? plan.row_gl[i0 + k] : plan.gl) : 0.0;
    gae_state_of<lanes_t> s;
    lanes_t rt[tile], vt[tile], mt[tile], at[tile], rett[tile];
    for (index_t hi = T; hi > 0; hi -= tile) {
        const index_t lo = hi > tile ? hi - tile : 0, n = hi - lo;
        for (int k = 0; k < gae_lanes; ++k) {
            const index_t i = i0 + k;
            for (index_t j = 0; j < n; ++j) {
                const bool row = k < count;
                rt[j][k] = row ? double(r(i, lo + j)) : 0.0;
                vt[j][k] = row ? double(v(i, lo + j)) : 0.0;
                mt[j][k] = row ? mask_weight(m(i, lo + j)) : 0.0;
            }
        }
        for (index_t j = n - 1; j >= 0; --j) {
            lanes_t used;
            gae_step<Mode, Decoupled, lanes_t>(rt[j], vt[j], mt[j], plan.gamma, gl, plan.glv, s, used);
            at[j] = plan.mask_output ? s.adv * mt[j] : s.adv;
            if constexpr (Decoupled) rett[j] = s.adv_value + used;
            else rett[j] = s.adv + used;
            p += s.adv * 0.0;
        }
        for (int k = 0; k < count; ++k) {
            const index_t i = i0 + k;
            for (index_t j = 0; j < n; ++j) a(i, lo + j) = static_cast<AT>(at[j][k]);
            if constexpr (!std::is_same_v<Ret, none_t>) {
                using RT = typename Ret::value_type;
                for (index_t j = 0; j < n; ++j) (*ret)(i, lo + j) = static_cast<RT>(rett[j][k]);
            }
        }
    }
    for (int k = 0; k < count; ++k) probe += p[k];
}
#else
#define POSTTRAIN_GAE_LANES 0
#endif

// The composed map of tokens [lo, hi) of row i (for the advantages' lambda, or the returns').
template <class R, class V, class M>
inline scan_map gae_chunk_map(const gae_plan& plan, R r, V v, M m, index_t i, index_t lo, index_t hi, bool value_pass) {
    const double gl = value_pass ? plan.glv : (plan.row_gl ? plan.row_gl[i] : plan.gl);
    scan_map f = scan_identity();
    for (index_t t = hi - 1; t >= lo; --t)
        f = scan_then(f, gae_token_map(plan.masking, double(r(i, t)), double(v(i, t)), mask_weight(m(i, t)), plan.gamma, gl));
    return f;
}

// Every row's recurrence, rows in parallel (and, with plan.chunk, chunks of long rows in parallel).
// Returns false when a non-finite value went through the recurrence.
template <gae_masking Mode, bool Decoupled, class Policy, class R, class V, class M, class A, class Ret>
bool gae_run(const Policy& policy, const gae_plan& plan, R r, V v, M m, A a, Ret* ret) {
    const index_t rows = r.extent(0), T = r.extent(1);
    if (rows == 0 || T == 0) return true;
    constexpr int K = gae_interleave;
    if (plan.chunk <= 0 || T <= plan.chunk) {
#if POSTTRAIN_GAE_LANES
        // Blocks of eight rows fixed by the row index (not by the thread split): every policy runs
        // each row through the same code, so par stays bitwise equal to seq.
        if (rows >= gae_lanes) {
            const index_t blocks = (rows + gae_lanes - 1) / gae_lanes;
            std::vector<double> probes(static_cast<std::size_t>(blocks), 0.0);
            posttrain::detail::for_blocks(policy, blocks, gae_lanes * (T + 1), [&](index_t lo, index_t hi) {
                for (index_t b = lo; b < hi; ++b) {
                    const index_t i0 = b * gae_lanes, count = std::min<index_t>(gae_lanes, rows - i0);
                    gae_rows_lanes<Mode, Decoupled>(plan, r, v, m, a, ret, i0, count, T, probes[std::size_t(b)]);
                }
            });
            return posttrain::detail::fixed_order_sum(blocks, [&](index_t b) { return probes[std::size_t(b)]; }) == 0.0;
        }
#endif
        const index_t groups = (rows + K - 1) / K;
        std::vector<double> probes(static_cast<std::size_t>(groups), 0.0);
        posttrain::detail::for_blocks(policy, groups, K * (T + 1), [&](index_t lo, index_t hi) {
            for (index_t g = lo; g < hi; ++g) {
                const index_t i0 = g * K;
                gae_state s[K] = {};
                double& probe = probes[static_cast<std::size_t>(g)];
                if (i0 + K <= rows) {
                    gae_rows<Mode, Decoupled, K>(plan, r, v, m, a, ret, i0, 0, T, s, probe);
                } else {
                    for (index_t i = i0; i < rows; ++i) gae_rows<Mode, Decoupled, 1>(plan, r, v, m, a, ret, i, 0, T, &s[i - i0], probe);
                }
            }
        });
        return posttrain::detail::fixed_order_sum(groups, [&](index_t g) { return probes[std::size_t(g)]; }) == 0.0;
    }
    // Fixed chunks: (1) each chunk's composed map, (2) per row, the state entering each chunk from the
    // right, composed chunk by chunk in a fixed order, (3) each chunk's exact recurrence from it.
    const index_t L = plan.chunk, chunks = (T + L - 1) / L, items = rows * chunks;
    const int passes = Decoupled ? 2 : 1;
    std::vector<scan_map> maps(static_cast<std::size_t>(items * passes));
    std::vector<gae_state> entry(static_cast<std::size_t>(items));
    std::vector<double> probes(static_cast<std::size_t>(items), 0.0);
    auto bounds = [&](index_t c) { return std::pair<index_t, index_t>{c * L, c + 1 == chunks ? T : (c + 1) * L}; };
    posttrain::detail::for_blocks(policy, items, L, [&](index_t lo, index_t hi) {
        for (index_t k = lo; k < hi; ++k) {
            const index_t i = k / chunks, c = k % chunks;
            if (c == 0) continue;  // nothing lies to the left of the first chunk
            const auto [b, e] = bounds(c);
            for (int pass = 0; pass < passes; ++pass)
                maps[std::size_t(k * passes + pass)] = gae_chunk_map(plan, r, v, m, i, b, e, pass == 1);
        }
    });
    posttrain::detail::for_blocks(policy, rows, chunks, [&](index_t lo, index_t hi) {
        for (index_t i = lo; i < hi; ++i) {
            gae_state s{};
            for (index_t c = chunks - 1; c >= 0; --c) {
                const index_t k = i * chunks + c;
                entry[std::size_t(k)] = s;
                if (c == 0) break;
                double n = s.next;  // both passes start from the same next value
                scan_apply(maps[std::size_t(k * passes)], s.next, s.adv);
                if constexpr (Decoupled) scan_apply(maps[std::size_t(k * passes + 1)], n, s.adv_value);
            }
        }
    });
    posttrain::detail::for_blocks(policy, items, L, [&](index_t lo, index_t hi) {
        for (index_t k = lo; k < hi; ++k) {
            const auto [b, e] = bounds(k % chunks);
            gae_state s = entry[std::size_t(k)];
            gae_rows<Mode, Decoupled, 1>(plan, r, v, m, a, ret, k / chunks, b, e, &s, probes[std::size_t(k)]);
        }
    });
    return posttrain::detail::fixed_order_sum(items, [&](index_t k) { return probes[std::size_t(k)]; }) == 0.0;
}

inline void check_unit_interval(double x, where w) {
    require(x >= 0.0 && x <= 1.0, w, "expected a value in [0, 1], found " + std::to_string(x));
}

// Validates the options that do not depend on the data.
inline void check_gae_options(const gae_options& o, const char* fn) {
    check_unit_interval(o.gamma, {fn, "options.gamma"});
    check_unit_interval(o.lambda, {fn, "options.lambda"});
    if (o.lambda_value) check_unit_interval(*o.lambda_value, {fn, "options.lambda_value"});
    require(o.length_adaptive_alpha >= 0.0 && numeric::is_finite(o.length_adaptive_alpha), {fn, "options.length_adaptive_alpha"},
            "expected a finite value >= 0, found " + std::to_string(o.length_adaptive_alpha));
    require(o.time_chunk >= 0, {fn, "options.time_chunk"}, "expected a chunk length >= 0 (0: no chunking), found " + str(o.time_chunk));
    require(o.nonfinite_inputs != nonfinite::ignore, {fn, "options.nonfinite_inputs"},
            "nonfinite::ignore has no meaning inside a recurrence; use raise or propagate");
}

// VAPO's length-adaptive lambda of a row of this mask sum.
POSTTRAIN_HD inline double length_adaptive_lambda(double alpha, double length) noexcept {
    double x = alpha * length;
    x = x < 1.0 ? 1.0 : x;
    const double l = 1.0 - 1.0 / x;
    return l < 0.0 ? 0.0 : (l > 1.0 ? 1.0 : l);
}

// The shape and aliasing checks of gae's [B, T] views, shared by the host and CUDA entries (views of
// either memory space).
template <class R, class V, class M, class A>
void check_gae_views(R r, V v, M m, A a, const char* fn) {
    check_same_shape(v, r, {fn, "values"}, "token_rewards");
    check_same_shape(m, r, {fn, "mask"}, "token_rewards");
    check_same_shape(a, r, {fn, "advantages"}, "token_rewards");
    check_no_alias(a, r, {fn, "advantages"}, "token_rewards");
    check_no_alias(a, v, {fn, "advantages"}, "values");
    check_no_alias(a, m, {fn, "advantages"}, "mask");
}

// The same for gae's optional returns output `ret`.
template <class Ret, class R, class V, class M, class A>
void check_gae_returns(Ret ret, R r, V v, M m, A a, const char* fn) {
    check_same_shape(ret, r, {fn, "returns"}, "token_rewards");
    check_no_alias(ret, r, {fn, "returns"}, "token_rewards");
    check_no_alias(ret, v, {fn, "returns"}, "values");
    check_no_alias(ret, m, {fn, "returns"}, "mask");
    check_no_alias(ret, a, {fn, "returns"}, "advantages");
}

// The shared body of gae and gae_per_row_lambda. row_lambda: a [N] view of per-row advantage
// lambdas, or nullptr_t.
template <class Policy, class RowLambda, class TokenRewards, class Values, class Mask, class Advantages, class Returns>
moments_result gae_entry(const Policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
                         const RowLambda& row_lambda, Advantages&& advantages, Returns&& returns, const gae_options& options,
                         const char* fn) {
    check_gae_options(options, fn);
    return std::visit(
        [&](auto r, auto v, auto m, auto a) {
            check_gae_views(r, v, m, a, fn);
            const index_t rows = r.extent(0), T = r.extent(1);

            gae_plan plan;
            plan.masking = options.masking;
            plan.gamma = options.gamma;
            plan.gl = options.gamma * options.lambda;
            plan.glv = options.gamma * options.lambda_value.value_or(options.lambda);
            plan.mask_output = options.mask_output && !options.whiten;
            plan.chunk = options.time_chunk;
            plan.decoupled = options.lambda_value.has_value() && *options.lambda_value != options.lambda;

            // Per-row advantage lambdas (given, or length-adaptive) always get their own pass for the returns.
            std::vector<double> row_gl;
            constexpr bool given = !std::is_same_v<RowLambda, std::nullptr_t>;
            if (given || options.length_adaptive_alpha > 0) {
                row_gl.resize(static_cast<std::size_t>(rows));
                if constexpr (given) {
                    std::visit(
                        [&](auto l) {
                            check_extent(l.extent(0), rows, {fn, "lambdas"}, "length (one lambda per row)");
                            for (index_t i = 0; i < rows; ++i) {
                                const double x = double(l(i));
                                require(x >= 0.0 && x <= 1.0, {fn, "lambdas"},
                                        "expected values in [0, 1], found " + std::to_string(x) + " at index " + str(i));
                                row_gl[std::size_t(i)] = options.gamma * x;
                            }
                        },
                        posttrain::detail::floating_input<1>(row_lambda, {fn, "lambdas"}));
                } else {
                    for_each_row(policy, rows, T, [&](index_t i) {
                        const double len = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return mask_weight(m(i, t)); });
                        row_gl[std::size_t(i)] = options.gamma * length_adaptive_lambda(options.length_adaptive_alpha, len);
                    });
                }
                plan.row_gl = row_gl.data();
                plan.decoupled = true;
                plan.glv = options.gamma * options.lambda_value.value_or(options.lambda);
            }

            auto run = [&](auto* ret) {
                auto dispatch = [&](auto mode_tag, auto two_tag) {
                    return gae_run<decltype(mode_tag)::value, decltype(two_tag)::value>(policy, plan, r, v, m, a, ret);
                };
                auto by_mode = [&](auto two_tag) {
                    switch (plan.masking) {
                        case gae_masking::carry: return dispatch(std::integral_constant<gae_masking, gae_masking::carry>{}, two_tag);
                        case gae_masking::zero: return dispatch(std::integral_constant<gae_masking, gae_masking::zero>{}, two_tag);
                        default: return dispatch(std::integral_constant<gae_masking, gae_masking::none>{}, two_tag);
                    }
                };
                return plan.decoupled ? by_mode(std::true_type{}) : by_mode(std::false_type{});
            };
            bool finite = true;
            if constexpr (std::is_same_v<std::remove_cvref_t<Returns>, none_t>) {
                finite = run(static_cast<none_t*>(nullptr));
            } else {
                auto rv = posttrain::detail::floating_output<2>(returns, {fn, "returns"});
                finite = std::visit(
                    [&](auto ret) {
                        check_gae_returns(ret, r, v, m, a, fn);
                        return run(&ret);
                    },
                    rv);
            }
            // A non-finite input always reaches its own token's advantage, so a finite run proves
            // finite inputs; otherwise the inputs are searched for the first bad index (a run that
            // only overflowed passes).
            if (!finite && options.nonfinite_inputs == nonfinite::raise) {
                check_finite(r, {fn, "token_rewards"});
                check_finite(v, {fn, "values"});
            }
            if (!options.whiten) return moments_result{};
            using AT = typename decltype(a)::value_type;
            whiten_options w = options.whitening;
            w.mask_output = options.mask_output;
            return masked_whiten(policy, tensor_view<const AT, 2>(a), m, a, w);
        },
        posttrain::detail::floating_input<2>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::floating_input<2>(values, {fn, "values"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2>(advantages, {fn, "advantages"}));
}

}  // namespace detail

// advantages[N,T] (and returns[N,T], or posttrain::none): GAE of token_rewards and values under
// mask, then (options.whiten) the batch whitening of the advantages. returns = A + V as the
// recurrence saw V (OpenRLHF: V * mask), from the returns' lambda, before whitening, never masked.
// Returns the whitening statistics (zeros without whitening).
template <class Policy, class TokenRewards, class Values, class Mask, class Advantages, class Returns>
moments_result gae(const Policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
                   Advantages&& advantages, Returns&& returns, const gae_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::gae: host policy expected (include gae.cuh for exec::cuda)");
    return detail::gae_entry(policy, token_rewards, values, mask, nullptr, advantages, returns, options,
                             "posttrain::advantage::gae");
}

// As gae, with one advantage lambda per row (lambdas[N], float or double, each in [0, 1]; NeMo's
// per-sample lambda tensor). The returns use options.lambda_value, or options.lambda.
template <class Policy, class TokenRewards, class Values, class Mask, class Lambdas, class Advantages, class Returns>
moments_result gae_per_row_lambda(const Policy& policy, const TokenRewards& token_rewards, const Values& values,
                                  const Mask& mask, const Lambdas& lambdas, Advantages&& advantages, Returns&& returns,
                                  const gae_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::gae_per_row_lambda: host policy expected");
    return detail::gae_entry(policy, token_rewards, values, mask, lambdas, advantages, returns, options,
                             "posttrain::advantage::gae_per_row_lambda");
}

}  // namespace posttrain::advantage
