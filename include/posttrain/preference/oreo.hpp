#pragma once
// OREO (Wang et al. 2024, "Offline Reinforcement Learning for LLM Multi-Step Reasoning"): a soft-Bellman
// (path-consistency) value loss for the critic and a policy loss for the actor, both squared residuals
// on the state positions of a trajectory with a sparse terminal reward.
//
// Layout. All [B, T] inputs are aligned on the log-prob positions of a causal model: log_probs[b, t] is
// log pi(token t+1 | prefix) (OREO's logps = log_softmax(logits[:, :-1]).gather(ids[:, 1:])), values[b, t]
// is the critic's value of the state ending at token t, action_mask[b, t] says whether token t+1 is an
// action (OREO's action_masks[:, 1:]) and state_mask[b, t] whether position t is a state (OREO's
// state_masks[:, :-1]). Token level: every response position is a state; step level: only the step
// boundaries are. Left padding (OREO's released setting) and right padding are both fine.
//
// With l_i = log_probs - ref_log_probs, the masked tail sums ("accumulated log-probs")
//   A_t = sum_{i >= t} [a_i] log_probs_i,   A'_t = the same for the reference,   D_t = A_t - A'_t,
// and R' = reward_scale * R + reward_shift (OREO's dataset transform rew_mul * R + rew_add):
//
//   value loss (Eq. 8, PCLTrainer.loss)       e_t = beta clip(D_t) + V_t - R'
//   policy loss (Eq. 9, PCLTrainer.dro_loss)  token: e_t = beta (l_t + sg[D_{t+1}]) + V_t - R'   (V detached)
//                                             step:  e_t = beta (D_t - D_n + sg[D_n]) + V_t - R',  n = next state
//   single-step (PCLTrainer.single_step_loss) e_t = V_t - r_t - V_next + beta l_t  (step: beta (D_t - D_n)),
//                                             r_t = R' at the last state, V_next = 0 after the last state
//   trajectory (Eq. 10, PCLTrainer.traj_loss) e = beta D_{t0} + V_{t0} - R' at the first state t0 only,
//                                             + hinge_coef * max(A'_{t0} - A_{t0}, 0) on rows with R' == 1
//
// and the loss is mean_b[ w_b sum_{t state} e_t^2 / n_b ] (n_b = the row's state count, w_b an optional
// importance weight), or with oreo_reduction::pooled sum_b w_b sum_t e_t^2 / sum_b n_b (OREO's
// importance_sampling_2). sg[] is stop-gradient: in the policy loss only the current token's (step's)
// log-ratio carries gradient, dL/dlog_probs_t = 2 beta f_b e_t at a token-level state.
//
// The actor losses optionally add kl_coef * mean_b( token-mean over the action tokens of a per-token KL
// estimate ) (OREO fit(): k3 by default); OREO's released config uses the full-vocabulary KL instead,
// which needs the logits: oreo_vocab_kl. Gradients are of the reduced loss times options.grad_scale; the
// reference log-probs, rewards and weights get none. Host policies; rows are independent and every sum
// has a fixed order, so exec::par gives the bits of exec::seq.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../policy_loss/entropy.hpp"
#include "../policy_loss/kl.hpp"
#include "common.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

// How the squared residuals of a batch become the loss.
enum class oreo_reduction {
    sequence_mean,  // mean over sequences of each sequence's mean over its states (OREO default)
    pooled,         // sum over all states / number of states in the batch (OREO importance_sampling_2)
};

struct oreo_options {
    double beta = 0.03;  // KL coefficient of the soft Bellman equation (paper: 0.03)
    // Step-level MDP: an action is the whole step between two state positions (its tokens' log-ratios
    // summed). Token level (false): every token is an action. The value loss does not depend on it.
    bool step_level = false;
    double reward_scale = 1.0;  // R' = reward_scale * R + reward_shift (OREO rew_mul, rew_add)
    double reward_shift = 0.0;
    oreo_reduction reduction = oreo_reduction::sequence_mean;
    // Value loss only: D_t is clipped to [-clip_log, clip_log] before beta (infinity: no clip).
    double clip_log = std::numeric_limits<double>::infinity();
    // clip_ratio over every [B, T] position, padding included (OREO's torch.mean over the whole tensor),
    // instead of over the state positions.
    bool clip_ratio_all_positions = false;
    // Actor losses: kl_coef * (token-mean KL per sequence, mean over sequences) is added, with the
    // per-token estimator `kl` (k3 = exp(q - p) - (q - p) - 1 here; its log-ratio is clamped to +-20 so
    // that no input overflows; OREO has no clamp). kl_coef = 0: no regulariser.
    double kl_coef = 0.01;
    policy_loss::kl_options kl = [] {
        policy_loss::kl_options o;
        o.estimator = policy_loss::kl_estimator::k3;
        o.log_ratio_clamp = 20;
        return o;
    }();
    // The regulariser is the full-vocabulary KL (oreo_vocab_kl, from logits): the actor losses then add
    // no per-token estimate. forward_kl: KL(pi_ref || pi) instead of KL(pi || pi_ref).
    bool unbiased_kl = false;
    bool forward_kl = false;
    // Trajectory loss only: hinge_coef * max(A'_{t0} - A_{t0}, 0) averaged over the rows with R' == 1.
    double hinge_coef = 0;
    // Global counts across data-parallel ranks (> 0 replaces this batch's): sequences for the means over
    // sequences (and the KL's), states for oreo_reduction::pooled.
    double sequences = 0;
    double states = 0;
    double grad_scale = 1.0;

    // jwhj/OREO examples/scripts/train_oreo.sh (6f7403b): --beta 0.03 --dro_actor_loss --rew_mul 1
    // --rew_add 0 --kl_reg 0.01 --unbiased_kl; OREO's unclamped k3 and its all-position clip_ratio.
    static oreo_options official() {
        oreo_options o;
        o.beta = 0.03;
        o.kl_coef = 0.01;
        o.unbiased_kl = true;
        o.kl.log_ratio_clamp = 0;
        o.clip_ratio_all_positions = true;
        return o;
    }
    // PCLTrainer as train_pcl.py builds it with no flags: beta 0.01, rew_mul 2, rew_add -1, no KL
    // regulariser. The other switches map one to one: step_level (--step_level), clip_log (--clip_log),
    // reduction pooled (--importance_sampling_2), kl_coef (--kl_reg), unbiased_kl / forward_kl,
    // hinge_coef (--hinge_coeff).
    static oreo_options pcl_trainer() {
        oreo_options o;
        o.beta = 0.01;
        o.reward_scale = 2;
        o.reward_shift = -1;
        o.kl_coef = 0;
        o.kl.log_ratio_clamp = 0;
        o.clip_ratio_all_positions = true;
        return o;
    }
};

struct [[nodiscard]] oreo_value_result {
    double loss = 0;
    double clip_ratio = 0;  // positions with |D_t| > clip_log (0 without a clip), see clip_ratio_all_positions
    double value_min = 0;   // min / max of the values at state positions (OREO logs both)
    double value_max = 0;
    double states = 0;      // state positions in the batch
};

struct [[nodiscard]] oreo_actor_result {
    double loss = 0;        // actor_loss + kl_coef * kl (what OREO passes to backward)
    double actor_loss = 0;  // the squared-residual part (+ the hinge of the trajectory loss)
    double kl = 0;          // the regulariser's estimate (0 when it is off or unbiased_kl is set)
    double states = 0;
};

struct [[nodiscard]] oreo_trajectory_result : oreo_actor_result {
    double hinge = 0;           // the hinge term inside actor_loss
    double initial_value_min = 0;  // min / max of V_{t0} (OREO's vs0_min / vs0_max)
    double initial_value_max = 0;
};

struct [[nodiscard]] oreo_kl_result {
    double loss = 0;  // kl_coef * kl
    double kl = 0;    // mean over sequences of each sequence's mean KL over its action tokens
};

namespace detail {

using values2 = values_of<void, 2>;
using values1 = values_of<void, 1>;
using outputs2 = outputs_of<void, 2>;

template <class X>
constexpr bool is_none_arg = std::is_same_v<std::remove_cvref_t<X>, none_t>;

// The argument as a type-erased view (monostate for posttrain::none). Everything below works on these,
// loading a row at a time into doubles: one implementation serves every element-type combination.
template <int R, class X>
values_of<void, R> real_input(const X& x, where w) {
    if constexpr (is_none_arg<X>) return {};
    else return widen<values_of<void, R>>(floating_input<R>(x, w));
}
template <class X>
mask_of mask_arg(const X& x, where w) {
    if constexpr (is_none_arg<X>) return {};
    else return widen<mask_of>(mask_input<2>(x, w));
}
template <int R, class X>
outputs_of<void, R> real_output(X&& x, where w) {
    if constexpr (is_none_arg<X>) return {};
    else return widen<outputs_of<void, R>>(floating_output<R>(x, w));
}

template <class V>
constexpr bool is_monostate = std::is_same_v<V, std::monostate>;

// Extent r of a type-erased view (-1 when absent).
template <class Variant>
index_t extent_of(const Variant& v, int r) {
    return std::visit(
        [r](auto x) -> index_t {
            if constexpr (is_monostate<decltype(x)>) return -1;
            else return x.extent(r);
        },
        v);
}
template <class Variant>
bool present(const Variant& v) {
    return v.index() != 0;
}

// Shape [B, T] (or [B]) required of a present argument.
template <class Variant>
void require_shape(const Variant& v, index_t B, index_t T, where w, const char* like) {
    if (!present(v)) return;
    const index_t b = extent_of(v, 0);
    require(b == B, w, std::string("must have one row per sequence of '") + like + "': found " + str(b) + ", expected " + str(B));
    if (T >= 0) {
        const index_t t = extent_of(v, 1);
        require(t == T, w, std::string("shape must match '") + like + "': dimension 1 is " + str(t) + ", expected " + str(T));
    }
}

template <class Out, class In>
void require_no_alias(const Out& out, const In& in, where w, const char* in_name) {
    std::visit(
        [&](auto o, auto i) {
            if constexpr (!is_monostate<decltype(o)> && !is_monostate<decltype(i)>)
                posttrain::advantage::detail::check_no_alias(o, i, w, in_name);
        },
        out, in);
}

inline void load_row(const values2& v, index_t i, double* out) {
    std::visit(
        [&](auto x) {
            if constexpr (!is_monostate<decltype(x)>)
                for (index_t t = 0; t < x.extent(1); ++t) out[t] = double(x(i, t));
        },
        v);
}
// 1 where the mask selects, 0 elsewhere (a nonzero entry of any value counts once).
inline void load_mask_row(const mask_of& m, index_t i, double* out) {
    std::visit(
        [&](auto x) {
            if constexpr (!is_monostate<decltype(x)>)
                for (index_t t = 0; t < x.extent(1); ++t) out[t] = is_valid(x(i, t)) ? 1.0 : 0.0;
        },
        m);
}
inline double load_at(const values1& v, index_t i, double fallback) {
    return std::visit(
        [&](auto x) -> double {
            if constexpr (is_monostate<decltype(x)>) return fallback;
            else return double(x(i));
        },
        v);
}
inline void store_row(const outputs2& g, index_t i, const double* in) {
    std::visit(
        [&](auto x) {
            if constexpr (!is_monostate<decltype(x)>) {
                using G = typename decltype(x)::value_type;
                for (index_t t = 0; t < x.extent(1); ++t) x(i, t) = static_cast<G>(in[t]);
            }
        },
        g);
}

[[noreturn]] inline void raise_nonfinite_at(where w, index_t i, index_t t, double v) {
    raise_invalid_argument(w.function, w.argument,
                           "non-finite value " + std::to_string(v) + " at a position the loss reads [" + str(i) +
                               (t >= 0 ? ", " + str(t) : std::string()) + "]");
}

// Per-token log-probs (and reference log-probs, when present) must be finite on the action tokens, the
// only ones read; returns each row's action-token count. In row order, so the first bad index is reported.
inline std::vector<double> check_action_rows(const values2& lp, const values2& rp, const mask_of& m, index_t B, index_t T,
                                             const char* fn) {
    std::vector<double> count(static_cast<std::size_t>(B), 0.0), p(static_cast<std::size_t>(T)), q(static_cast<std::size_t>(T)),
        a(static_cast<std::size_t>(T));
    for (index_t i = 0; i < B; ++i) {
        load_row(lp, i, p.data());
        load_row(rp, i, q.data());
        load_mask_row(m, i, a.data());
        for (index_t t = 0; t < T; ++t) {
            const std::size_t k = std::size_t(t);
            if (a[k] == 0) continue;
            count[std::size_t(i)] += 1;
            if (!numeric::is_finite(p[k])) raise_nonfinite_at({fn, "log_probs"}, i, t, p[k]);
            if (present(rp) && !numeric::is_finite(q[k])) raise_nonfinite_at({fn, "ref_log_probs"}, i, t, q[k]);
        }
    }
    return count;
}

inline void check_oreo_options(const oreo_options& o, const char* fn) {
    const where w{fn, "options"};
    require(numeric::is_finite(o.beta) && o.beta > 0, w, "beta must be finite and > 0, found " + std::to_string(o.beta));
    require(numeric::is_finite(o.reward_scale) && numeric::is_finite(o.reward_shift), w,
            "reward_scale and reward_shift must be finite");
    const int r = static_cast<int>(o.reduction);
    require(r == 0 || r == 1, w, "unknown reduction " + str(r));
    require(o.clip_log > 0, w, "clip_log must be > 0 (infinity: no clip), found " + std::to_string(o.clip_log));
    require(numeric::is_finite(o.kl_coef) && o.kl_coef >= 0, w, "kl_coef must be finite and >= 0, found " + std::to_string(o.kl_coef));
    require(numeric::is_finite(o.hinge_coef) && o.hinge_coef >= 0, w,
            "hinge_coef must be finite and >= 0, found " + std::to_string(o.hinge_coef));
    require(numeric::is_finite(o.sequences) && o.sequences >= 0, w, "sequences must be finite and >= 0 (0: this batch's)");
    require(numeric::is_finite(o.states) && o.states >= 0, w, "states must be finite and >= 0 (0: this batch's)");
    require(numeric::is_finite(o.grad_scale), w, "grad_scale must be finite, found " + std::to_string(o.grad_scale));
    policy_loss::detail::check_kl_options(o.kl, fn);
}

enum class oreo_kind { value, policy, single_step, trajectory };

// The arguments of every OREO loss, type-erased; absent ones are monostate.
struct oreo_args {
    values2 log_probs, ref_log_probs;  // per-token forms (actor losses)
    values2 tails, ref_tails;          // accumulated forms (value loss)
    mask_of action_mask;
    values2 values;
    mask_of state_mask;
    values1 rewards, weights;
    outputs2 grad_log_probs, grad_values, grad_tails;
    batch_output initial_values;
};

struct oreo_raw {
    double loss = 0, kl = 0, hinge = 0;
    double clipped = 0, clip_positions = 0;
    double vmin = 0, vmax = 0, states = 0;
};

// Per-row facts from the validation pass.
struct oreo_row_info {
    double states = 0, actions = 0;
    index_t first = -1, last = -1;
    double reward = 0, weight = 1;
};

// The tail sums A_t = sum_{i >= t} [a_i] x_i, accumulated from the end (torch's flip-cumsum-flip order),
// with A_T = 0 at out[T].
inline void tail_sums_row(const double* x, const double* a, index_t T, double* out) {
    out[T] = 0;
    double acc = 0;
    for (index_t t = T - 1; t >= 0; --t) {
        acc = t == T - 1 ? (a[t] != 0 ? x[t] : 0.0) : acc + (a[t] != 0 ? x[t] : 0.0);
        out[t] = acc;
    }
}

// The per-token KL regulariser of one row: sum of the estimates over the action tokens (returned), and
// coef * d estimate / d p_t added into g on those tokens.
inline double kl_row(const double* p, const double* q, const double* a, index_t T, const policy_loss::kl_options& o,
                     double coef, double* g) {
    return fixed_order_sum(T, [&](index_t t) {
        if (a[t] == 0) return 0.0;
        const auto r = policy_loss::detail::kl_token(p[t], q[t], o);
        if (g) g[t] += coef * r.grad;
        return r.value;
    });
}

template <class Policy>
oreo_raw oreo_run(const Policy& policy, oreo_kind kind, const oreo_args& x, const oreo_options& o, const char* fn) {
    check_oreo_options(o, fn);
    const bool per_token = kind != oreo_kind::value;
    const bool token_level = !o.step_level;
    // Shapes: everything [B, T] like 'values', rewards and weights [B].
    require(present(x.values), {fn, "values"}, "is required");
    const index_t B = extent_of(x.values, 0), T = extent_of(x.values, 1);
    require_shape(x.state_mask, B, T, {fn, "state_mask"}, "values");
    require_shape(x.rewards, B, -1, {fn, "rewards"}, "values");
    require_shape(x.weights, B, -1, {fn, "weights"}, "values");
    if (per_token) {
        require_shape(x.log_probs, B, T, {fn, "log_probs"}, "values");
        require_shape(x.ref_log_probs, B, T, {fn, "ref_log_probs"}, "values");
        require_shape(x.action_mask, B, T, {fn, "action_mask"}, "values");
    } else {
        require_shape(x.tails, B, T, {fn, "tails"}, "values");
        require_shape(x.ref_tails, B, T, {fn, "ref_tails"}, "values");
    }
    for (const auto* g : {&x.grad_log_probs, &x.grad_values, &x.grad_tails}) {
        const char* name = g == &x.grad_log_probs ? "grad_log_probs" : (g == &x.grad_values ? "grad_values" : "grad_tails");
        require_shape(*g, B, T, {fn, name}, "values");
        require_no_alias(*g, x.values, {fn, name}, "values");
        require_no_alias(*g, x.state_mask, {fn, name}, "state_mask");
        require_no_alias(*g, x.log_probs, {fn, name}, "log_probs");
        require_no_alias(*g, x.ref_log_probs, {fn, name}, "ref_log_probs");
        require_no_alias(*g, x.action_mask, {fn, name}, "action_mask");
        require_no_alias(*g, x.tails, {fn, name}, "tails");
        require_no_alias(*g, x.ref_tails, {fn, name}, "ref_tails");
        require_no_alias(*g, x.rewards, {fn, name}, "rewards");
        require_no_alias(*g, x.weights, {fn, name}, "weights");
    }
    require_no_alias(x.grad_log_probs, x.grad_values, {fn, "grad_log_probs"}, "grad_values");
    require_no_alias(x.grad_values, x.grad_tails, {fn, "grad_values"}, "grad_tails");
    // grad_log_probs and grad_tails never meet: grad_tails is oreo_value_loss's only, which takes no grad_log_probs.
    if (x.initial_values.present())
        require(x.initial_values.size() == B, {fn, "initial_values"},
                "must have one entry per sequence: found " + str(x.initial_values.size()) + ", expected " + str(B));
    check_outputs_before_writes(fn, B, {{x.initial_values, "initial_values"}},
                                {{x.grad_log_probs, "grad_log_probs"}, {x.grad_values, "grad_values"}, {x.grad_tails, "grad_tails"}});
    const bool kl_on = per_token && o.kl_coef > 0 && !o.unbiased_kl;

    // Pass 1 (in order, so that the first bad index is the one reported): finiteness of everything the
    // loss reads, and the per-row counts.
    std::vector<oreo_row_info> info(static_cast<std::size_t>(B));
    {
        std::vector<double> s(static_cast<std::size_t>(T)), a(static_cast<std::size_t>(T)), p(static_cast<std::size_t>(T)), q(static_cast<std::size_t>(T)), v(static_cast<std::size_t>(T));
        for (index_t i = 0; i < B; ++i) {
            auto& r = info[std::size_t(i)];
            const double R = load_at(x.rewards, i, 0.0);
            if (!numeric::is_finite(R)) raise_nonfinite_at({fn, "rewards"}, i, -1, R);
            r.reward = o.reward_scale * R + o.reward_shift;
            r.weight = load_at(x.weights, i, 1.0);
            require(numeric::is_finite(r.weight) && r.weight >= 0, {fn, "weights"},
                    "must be finite and >= 0, found " + std::to_string(r.weight) + " at [" + str(i) + "]");
            load_mask_row(x.state_mask, i, s.data());
            load_row(x.values, i, v.data());
            if (per_token) {
                load_mask_row(x.action_mask, i, a.data());
                load_row(x.log_probs, i, p.data());
                load_row(x.ref_log_probs, i, q.data());
            } else {
                load_row(x.tails, i, p.data());
                load_row(x.ref_tails, i, q.data());
            }
            for (index_t t = 0; t < T; ++t) {
                const bool st = s[std::size_t(t)] != 0, act = per_token && a[std::size_t(t)] != 0;
                if (st) {
                    if (r.first < 0) r.first = t;
                    r.last = t;
                    r.states += 1;
                    if (!numeric::is_finite(v[std::size_t(t)])) raise_nonfinite_at({fn, "values"}, i, t, v[std::size_t(t)]);
                }
                r.actions += act ? 1.0 : 0.0;
                // Log-probs are read on action tokens (tail sums, KL) and, at token level, at the states
                // (the current token's own log-ratio); tails at the states.
                const bool read = per_token ? (act || (st && token_level)) : st;
                if (!read) continue;
                const char* pn = per_token ? "log_probs" : "tails";
                const char* qn = per_token ? "ref_log_probs" : "ref_tails";
                if (!numeric::is_finite(p[std::size_t(t)])) raise_nonfinite_at({fn, pn}, i, t, p[std::size_t(t)]);
                if (!numeric::is_finite(q[std::size_t(t)])) raise_nonfinite_at({fn, qn}, i, t, q[std::size_t(t)]);
            }
            const bool pooled = o.reduction == oreo_reduction::pooled && kind != oreo_kind::trajectory;
            if (r.states == 0 && !pooled)
                raise_invalid_argument(fn, "state_mask",
                                       "row " + str(i) + " has no state position (its mean over states is undefined)");
            if (kl_on && r.actions == 0)
                raise_invalid_argument(fn, "action_mask",
                                       "row " + str(i) + " has no action token (the KL regulariser's token mean is undefined)");
        }
    }
    oreo_raw out;
    out.states = fixed_order_sum(B, [&](index_t i) { return info[std::size_t(i)].states; });
    if (B == 0) return out;
    const double seqs = o.sequences > 0 ? o.sequences : double(B);
    const bool pooled = o.reduction == oreo_reduction::pooled && kind != oreo_kind::trajectory;
    const double states = o.states > 0 ? o.states : out.states;
    require(!pooled || states > 0, {fn, "state_mask"}, "the batch has no state position");
    double npos = 0;  // trajectory hinge: rows with R' == 1
    if (kind == oreo_kind::trajectory && o.hinge_coef > 0)
        npos = fixed_order_sum(B, [&](index_t i) { return info[std::size_t(i)].reward == 1.0 ? 1.0 : 0.0; });
    const double gs = o.grad_scale, beta = o.beta, c = o.clip_log;
    const bool want_glp = present(x.grad_log_probs), want_gv = present(x.grad_values), want_gt = present(x.grad_tails);

    std::vector<double> row_loss(static_cast<std::size_t>(B)), row_kl(static_cast<std::size_t>(B)), row_hinge(static_cast<std::size_t>(B)),
        row_clipped(static_cast<std::size_t>(B)), row_vmin(static_cast<std::size_t>(B)), row_vmax(static_cast<std::size_t>(B)), row_v0(static_cast<std::size_t>(B));
    for_each_row(policy, B, T, [&](index_t i) {
        const auto& r = info[std::size_t(i)];
        const std::size_t n = std::size_t(T);
        std::vector<double> s(n), a(n), p(n), q(n), v(n), A(n + 1), Ar(n + 1), e(n, 0.0), cf(n, 0.0), g(n, 0.0), gv(n, 0.0);
        std::vector<index_t> nx(n, -1);
        load_mask_row(x.state_mask, i, s.data());
        load_row(x.values, i, v.data());
        if (per_token) {
            load_mask_row(x.action_mask, i, a.data());
            load_row(x.log_probs, i, p.data());
            load_row(x.ref_log_probs, i, q.data());
            tail_sums_row(p.data(), a.data(), T, A.data());
            tail_sums_row(q.data(), a.data(), T, Ar.data());
        } else {
            load_row(x.tails, i, A.data());
            load_row(x.ref_tails, i, Ar.data());
            A[n] = Ar[n] = 0;
        }
        // D_t = A_t - A'_t where the loss reads it (states, next states, t0): other positions may hold padding.
        auto D = [&](index_t t) { return A[std::size_t(t)] - Ar[std::size_t(t)]; };
        for (index_t t = T - 2, next = -1; t >= 0; --t) {  // the next state after t (OREO's next_value_indices)
            if (s[std::size_t(t + 1)] != 0) next = t + 1;
            nx[std::size_t(t)] = next;
        }
        const double Rp = r.reward;
        // Residuals at the state positions.
        double clipped = 0, vmin = INFINITY, vmax = -INFINITY;
        std::vector<double> pass(n, 1.0);
        for (index_t t = 0; t < T; ++t) {
            const std::size_t k = std::size_t(t);
            if (kind == oreo_kind::value && o.clip_ratio_all_positions) {
                const double d = D(t);  // every position counts here, padding included, as OREO's mean does
                clipped += (d < 0 ? -d : d) > c ? 1.0 : 0.0;
            }
            if (s[k] == 0) continue;
            if (kind == oreo_kind::trajectory && t != r.first) continue;
            vmin = std::min(vmin, v[k]);
            vmax = std::max(vmax, v[k]);
            const index_t m = nx[k];
            switch (kind) {
                case oreo_kind::value: {
                    double d = D(t);
                    if (!o.clip_ratio_all_positions) clipped += (d < 0 ? -d : d) > c ? 1.0 : 0.0;
                    pass[k] = d >= -c && d <= c ? 1.0 : 0.0;  // torch.clamp passes the gradient on [-c, c]
                    d = d > c ? c : (d < -c ? -c : d);
                    e[k] = (beta * d + v[k]) - Rp;
                    break;
                }
                case oreo_kind::policy:
                    if (token_level) {
                        e[k] = (beta * ((D(t + 1) + p[k]) - q[k]) + v[k]) - Rp;
                    } else {
                        // (D_t - D_n) + D_n as OREO writes it (the second D_n detached): not D_t, to the bit.
                        const double tail = m >= 0 ? D(m) : 0.0;
                        e[k] = (beta * ((D(t) - tail) + tail) + v[k]) - Rp;
                    }
                    break;
                case oreo_kind::single_step: {
                    const double rt = t == r.last ? Rp : 0.0;
                    if (token_level) {
                        // The next token's value if it is a state, else 0 (the trajectory ended): with OREO's
                        // left padding this is its V_{t+1}, and padding is never read.
                        const double vn = t + 1 < T && s[k + 1] != 0 ? v[k + 1] : 0.0;
                        e[k] = ((v[k] - rt) - vn) + beta * (p[k] - q[k]);
                    } else {
                        const double vn = m >= 0 ? v[std::size_t(m)] : 0.0, tail = m >= 0 ? D(m) : 0.0;
                        e[k] = ((v[k] - rt) - vn) + beta * (D(t) - tail);
                    }
                    break;
                }
                case oreo_kind::trajectory:
                    e[k] = (beta * D(t) + v[k]) - Rp;
                    break;
            }
        }
        const double sq = fixed_order_sum(T, [&](index_t t) { return s[std::size_t(t)] != 0 ? e[std::size_t(t)] * e[std::size_t(t)] : 0.0; });
        // The row's share of the loss and the factor f of its residuals (dL/de_t = 2 f e_t).
        double f = 0;
        if (kind == oreo_kind::trajectory) {
            row_loss[std::size_t(i)] = sq;
            f = 1.0 / seqs;
        } else if (pooled) {
            row_loss[std::size_t(i)] = sq * r.weight;
            f = r.weight / states;
        } else {
            row_loss[std::size_t(i)] = sq / r.states * r.weight;
            f = r.weight / r.states / seqs;
        }
        for (index_t t = 0; t < T; ++t)
            if (s[std::size_t(t)] != 0) cf[std::size_t(t)] = 2 * e[std::size_t(t)] * f * gs;
        row_clipped[std::size_t(i)] = clipped;
        row_vmin[std::size_t(i)] = vmin;
        row_vmax[std::size_t(i)] = vmax;
        // Hinge (trajectory): hinge_coef * max(A'_{t0} - A_{t0}, 0) on rows with R' == 1, mean over them.
        double hinge_grad = 0;  // d / d A_{t0}
        if (kind == oreo_kind::trajectory) {
            row_v0[std::size_t(i)] = v[std::size_t(r.first)];
            if (o.hinge_coef > 0 && Rp == 1.0) {
                const double h = Ar[std::size_t(r.first)] - A[std::size_t(r.first)];
                row_hinge[std::size_t(i)] = o.hinge_coef * (h > 0 ? h : 0.0);
                hinge_grad = h >= 0 ? -o.hinge_coef / npos * gs : 0.0;  // torch.clamp(min=0) passes at 0
            }
        }
        // Gradients.
        if (kind == oreo_kind::value) {
            if (want_gv) store_row(x.grad_values, i, cf.data());
            if (want_gt) {
                for (std::size_t k = 0; k < n; ++k) g[k] = beta * pass[k] * cf[k];
                store_row(x.grad_tails, i, g.data());
            }
            return;
        }
        const bool window = !token_level && kind != oreo_kind::trajectory;  // step level: the step's tokens
        if (kind == oreo_kind::trajectory) {
            const double up = beta * cf[std::size_t(r.first)] + hinge_grad;
            for (index_t t = r.first; t < T; ++t) g[std::size_t(t)] = a[std::size_t(t)] != 0 ? up : 0.0;
        } else if (window) {
            // Only D_t - D_n carries gradient: token j gets the residual of the last state at or before it.
            double owner = 0;
            for (index_t t = 0; t < T; ++t) {
                if (s[std::size_t(t)] != 0) owner = cf[std::size_t(t)];
                g[std::size_t(t)] = a[std::size_t(t)] != 0 ? beta * owner : 0.0;
            }
        } else {
            for (std::size_t k = 0; k < n; ++k) g[k] = beta * cf[k];
        }
        if (kl_on)
            row_kl[std::size_t(i)] =
                kl_row(p.data(), q.data(), a.data(), T, o.kl, o.kl_coef * gs / r.actions / seqs, want_glp ? g.data() : nullptr) /
                r.actions;
        if (want_glp) store_row(x.grad_log_probs, i, g.data());
        if (want_gv) {
            if (kind == oreo_kind::single_step) {
                for (index_t t = 0; t < T; ++t) {
                    const std::size_t k = std::size_t(t);
                    if (s[k] == 0) continue;
                    gv[k] += cf[k];
                    const index_t m = token_level ? (t + 1 < T && s[k + 1] != 0 ? t + 1 : -1) : nx[k];
                    if (m >= 0) gv[std::size_t(m)] -= cf[k];
                }
            } else if (kind == oreo_kind::trajectory) {
                gv[std::size_t(r.first)] = cf[std::size_t(r.first)];
            }
            store_row(x.grad_values, i, gv.data());
        }
    });
    const double sum = fixed_order_sum(B, [&](index_t i) { return row_loss[std::size_t(i)]; });
    out.loss = pooled ? sum / states : sum / seqs;
    if (kind == oreo_kind::trajectory && npos > 0) {
        out.hinge = fixed_order_sum(B, [&](index_t i) { return row_hinge[std::size_t(i)]; }) / npos;
        out.loss += out.hinge;
    }
    if (kl_on) out.kl = fixed_order_sum(B, [&](index_t i) { return row_kl[std::size_t(i)]; }) / seqs;
    out.clipped = fixed_order_sum(B, [&](index_t i) { return row_clipped[std::size_t(i)]; });
    out.clip_positions = o.clip_ratio_all_positions ? double(B) * double(T) : out.states;
    const auto& src = kind == oreo_kind::trajectory ? row_v0 : row_vmin;
    out.vmin = INFINITY, out.vmax = -INFINITY;
    for (index_t i = 0; i < B; ++i) {
        if (info[std::size_t(i)].states == 0) continue;
        out.vmin = std::min(out.vmin, src[std::size_t(i)]);
        out.vmax = std::max(out.vmax, kind == oreo_kind::trajectory ? row_v0[std::size_t(i)] : row_vmax[std::size_t(i)]);
    }
    if (out.states == 0) out.vmin = out.vmax = 0;
    if (kind == oreo_kind::trajectory) x.initial_values.write(row_v0, {fn, "initial_values"});
    return out;
}

inline oreo_actor_result actor_result(const oreo_raw& r, const oreo_options& o) {
    oreo_actor_result a;
    a.actor_loss = r.loss;
    a.kl = r.kl;
    a.loss = r.loss + o.kl_coef * r.kl;
    a.states = r.states;
    return a;
}

}  // namespace detail

// ---- tail sums ----

// tails[b, t] = sum_{i >= t} [action_mask[b, i] != 0] log_probs[b, i] (OREO's accumulated_logps), summed
// from the end of the row. Masked positions are not read.
template <class Policy, class LogProbs, class ActionMask, class Tails>
void oreo_tail_sums(const Policy& policy, const LogProbs& log_probs, const ActionMask& action_mask, Tails&& tails) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_tail_sums: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_tail_sums";
    const auto lp = detail::real_input<2>(log_probs, {fn, "log_probs"});
    const auto m = detail::mask_arg(action_mask, {fn, "action_mask"});
    const auto out = detail::real_output<2>(tails, {fn, "tails"});
    const index_t B = detail::extent_of(lp, 0), T = detail::extent_of(lp, 1);
    detail::require_shape(m, B, T, {fn, "action_mask"}, "log_probs");
    detail::require_shape(out, B, T, {fn, "tails"}, "log_probs");
    detail::require_no_alias(out, lp, {fn, "tails"}, "log_probs");
    detail::require_no_alias(out, m, {fn, "tails"}, "action_mask");
    (void)detail::check_action_rows(lp, {}, m, B, T, fn);
    detail::for_each_row(policy, B, T, [&](index_t i) {
        std::vector<double> x(static_cast<std::size_t>(T)), k(static_cast<std::size_t>(T)), s(static_cast<std::size_t>(T) + 1);
        detail::load_row(lp, i, x.data());
        detail::load_mask_row(m, i, k.data());
        detail::tail_sums_row(x.data(), k.data(), T, s.data());
        detail::store_row(out, i, s.data());
    });
}

// The backward of oreo_tail_sums: grad_log_probs[b, j] = [action_mask[b, j] != 0] sum_{t <= j} grad_tails[b, t].
// With oreo_value_loss's grad_tails it turns the value loss into OREO's plain PCL actor loss.
template <class Policy, class GradTails, class ActionMask, class GradLogProbs>
void oreo_tail_sums_backward(const Policy& policy, const GradTails& grad_tails, const ActionMask& action_mask,
                             GradLogProbs&& grad_log_probs) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_tail_sums_backward: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_tail_sums_backward";
    const auto gt = detail::real_input<2>(grad_tails, {fn, "grad_tails"});
    const auto m = detail::mask_arg(action_mask, {fn, "action_mask"});
    const auto out = detail::real_output<2>(grad_log_probs, {fn, "grad_log_probs"});
    const index_t B = detail::extent_of(gt, 0), T = detail::extent_of(gt, 1);
    detail::require_shape(m, B, T, {fn, "action_mask"}, "grad_tails");
    detail::require_shape(out, B, T, {fn, "grad_log_probs"}, "grad_tails");
    detail::require_no_alias(out, gt, {fn, "grad_log_probs"}, "grad_tails");
    detail::require_no_alias(out, m, {fn, "grad_log_probs"}, "action_mask");
    std::vector<double> x(static_cast<std::size_t>(T));
    for (index_t i = 0; i < B; ++i) {
        detail::load_row(gt, i, x.data());
        for (index_t t = 0; t < T; ++t)
            if (!numeric::is_finite(x[std::size_t(t)])) detail::raise_nonfinite_at({fn, "grad_tails"}, i, t, x[std::size_t(t)]);
    }
    detail::for_each_row(policy, B, T, [&](index_t i) {
        std::vector<double> u(static_cast<std::size_t>(T)), k(static_cast<std::size_t>(T)), g(static_cast<std::size_t>(T));
        detail::load_row(gt, i, u.data());
        detail::load_mask_row(m, i, k.data());
        double acc = 0;
        for (index_t t = 0; t < T; ++t) {
            acc += u[std::size_t(t)];
            g[std::size_t(t)] = k[std::size_t(t)] != 0 ? acc : 0.0;
        }
        detail::store_row(out, i, g.data());
    });
}

// OREO's importance weights (PCLTrainer.weights): log_weights[b] = sum_t [a_t] (log_probs - ref_log_probs),
// weights[b] = exp(min(log_weights[b], 1)). Either output may be posttrain::none.
template <class Policy, class LogProbs, class RefLogProbs, class ActionMask, class Weights, class LogWeights = none_t>
void oreo_importance_weights(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                             const ActionMask& action_mask, Weights&& weights, LogWeights&& log_weights = LogWeights{0}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_importance_weights: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_importance_weights";
    const auto lp = detail::real_input<2>(log_probs, {fn, "log_probs"});
    const auto rp = detail::real_input<2>(ref_log_probs, {fn, "ref_log_probs"});
    const auto m = detail::mask_arg(action_mask, {fn, "action_mask"});
    const index_t B = detail::extent_of(lp, 0), T = detail::extent_of(lp, 1);
    detail::require_shape(rp, B, T, {fn, "ref_log_probs"}, "log_probs");
    detail::require_shape(m, B, T, {fn, "action_mask"}, "log_probs");
    (void)detail::check_action_rows(lp, rp, m, B, T, fn);
    std::vector<double> lw(static_cast<std::size_t>(B)), w(static_cast<std::size_t>(B));
    std::vector<double> p(static_cast<std::size_t>(T)), q(static_cast<std::size_t>(T)), a(static_cast<std::size_t>(T));
    for (index_t i = 0; i < B; ++i) {
        detail::load_row(lp, i, p.data());
        detail::load_row(rp, i, q.data());
        detail::load_mask_row(m, i, a.data());
        lw[std::size_t(i)] = detail::fixed_order_sum(T, [&](index_t t) {
            return a[std::size_t(t)] != 0 ? p[std::size_t(t)] - q[std::size_t(t)] : 0.0;
        });
        w[std::size_t(i)] = std::exp(std::min(lw[std::size_t(i)], 1.0));
    }
    (void)policy;  // O(B T) with nothing to split worth a thread
    const batch_output out_w(std::forward<Weights>(weights)), out_lw(std::forward<LogWeights>(log_weights));
    detail::check_outputs_before_writes(fn, B, {{out_w, "weights"}, {out_lw, "log_weights"}});
    out_w.write(w, {fn, "weights"});
    out_lw.write(lw, {fn, "log_weights"});
}

// ---- losses ----

// The critic loss (paper Eq. 8, OREO PCLTrainer.loss) from the tail sums of the (frozen) policy and the
// reference (oreo_tail_sums), values [B, T], state_mask [B, T], rewards [B] and optional importance
// weights [B] (posttrain::none: all 1). Writes grad_scale * dL/dvalues and grad_scale * dL/dtails
// (either may be posttrain::none; dL/dref_tails is the negative of the latter).
template <class Policy, class Tails, class RefTails, class Values, class StateMask, class Rewards, class Weights,
          class GradValues, class GradTails = none_t>
oreo_value_result oreo_value_loss(const Policy& policy, const Tails& tails, const RefTails& ref_tails, const Values& values,
                                  const StateMask& state_mask, const Rewards& rewards, const Weights& weights,
                                  GradValues&& grad_values, GradTails&& grad_tails = GradTails{0},
                                  const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_value_loss: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_value_loss";
    detail::oreo_args x;
    x.tails = detail::real_input<2>(tails, {fn, "tails"});
    x.ref_tails = detail::real_input<2>(ref_tails, {fn, "ref_tails"});
    x.values = detail::real_input<2>(values, {fn, "values"});
    x.state_mask = detail::mask_arg(state_mask, {fn, "state_mask"});
    x.rewards = detail::real_input<1>(rewards, {fn, "rewards"});
    x.weights = detail::real_input<1>(weights, {fn, "weights"});
    x.grad_values = detail::real_output<2>(grad_values, {fn, "grad_values"});
    x.grad_tails = detail::real_output<2>(grad_tails, {fn, "grad_tails"});
    detail::require(detail::present(x.tails) && detail::present(x.ref_tails), {fn, "tails"}, "tails and ref_tails are required");
    detail::require(detail::present(x.state_mask), {fn, "state_mask"}, "is required");
    detail::require(detail::present(x.rewards), {fn, "rewards"}, "is required");
    const auto r = detail::oreo_run(policy, detail::oreo_kind::value, x, options, fn);
    oreo_value_result v;
    v.loss = r.loss;
    v.clip_ratio = r.clip_positions > 0 ? r.clipped / r.clip_positions : 0.0;
    v.value_min = r.vmin;
    v.value_max = r.vmax;
    v.states = r.states;
    return v;
}

namespace detail {
template <class LogProbs, class RefLogProbs, class ActionMask, class Values, class StateMask, class Rewards>
oreo_args actor_args(const LogProbs& log_probs, const RefLogProbs& ref_log_probs, const ActionMask& action_mask,
                     const Values& values, const StateMask& state_mask, const Rewards& rewards, const char* fn) {
    oreo_args x;
    x.log_probs = real_input<2>(log_probs, {fn, "log_probs"});
    x.ref_log_probs = real_input<2>(ref_log_probs, {fn, "ref_log_probs"});
    x.action_mask = mask_arg(action_mask, {fn, "action_mask"});
    x.values = real_input<2>(values, {fn, "values"});
    x.state_mask = mask_arg(state_mask, {fn, "state_mask"});
    x.rewards = real_input<1>(rewards, {fn, "rewards"});
    require(present(x.log_probs), {fn, "log_probs"}, "is required");
    require(present(x.ref_log_probs), {fn, "ref_log_probs"}, "is required");
    require(present(x.action_mask), {fn, "action_mask"}, "is required");
    require(present(x.state_mask), {fn, "state_mask"}, "is required");
    require(present(x.rewards), {fn, "rewards"}, "is required");
    return x;
}
}  // namespace detail

// The actor loss (paper Eq. 9, OREO PCLTrainer.dro_loss + fit()'s KL term) from per-token policy and
// reference log-probs [B, T], the detached values [B, T], masks, rewards [B] and optional importance
// weights [B]. Token level: e_t = beta (l_t + sg[D_{t+1}]) + V_t - R'; step level: the step's tokens carry
// the gradient. Writes grad_scale * dL/dlog_probs (posttrain::none skips it).
template <class Policy, class LogProbs, class RefLogProbs, class ActionMask, class Values, class StateMask, class Rewards,
          class Weights, class GradLogProbs>
oreo_actor_result oreo_policy_loss(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                                   const ActionMask& action_mask, const Values& values, const StateMask& state_mask,
                                   const Rewards& rewards, const Weights& weights, GradLogProbs&& grad_log_probs,
                                   const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_policy_loss: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_policy_loss";
    auto x = detail::actor_args(log_probs, ref_log_probs, action_mask, values, state_mask, rewards, fn);
    x.weights = detail::real_input<1>(weights, {fn, "weights"});
    x.grad_log_probs = detail::real_output<2>(grad_log_probs, {fn, "grad_log_probs"});
    return detail::actor_result(detail::oreo_run(policy, detail::oreo_kind::policy, x, options, fn), options);
}

// The one-step soft Bellman residual (OREO PCLTrainer.single_step_loss): e_t = V_t - r_t - V_next +
// beta l_t (step level: beta (D_t - D_next)), the reward on the last state, V_next = 0 after it. Both the
// values and the log-probs carry gradient; either output may be posttrain::none.
template <class Policy, class LogProbs, class RefLogProbs, class ActionMask, class Values, class StateMask, class Rewards,
          class GradLogProbs, class GradValues>
oreo_actor_result oreo_single_step_loss(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                                        const ActionMask& action_mask, const Values& values, const StateMask& state_mask,
                                        const Rewards& rewards, GradLogProbs&& grad_log_probs, GradValues&& grad_values,
                                        const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_single_step_loss: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_single_step_loss";
    auto x = detail::actor_args(log_probs, ref_log_probs, action_mask, values, state_mask, rewards, fn);
    x.grad_log_probs = detail::real_output<2>(grad_log_probs, {fn, "grad_log_probs"});
    x.grad_values = detail::real_output<2>(grad_values, {fn, "grad_values"});
    return detail::actor_result(detail::oreo_run(policy, detail::oreo_kind::single_step, x, options, fn), options);
}

// The response-level residual (paper Eq. 10, OREO PCLTrainer.traj_loss) at each row's first state t0:
// mean_b (beta D_{t0} + V_{t0} - R')^2 (+ the hinge on rows with R' == 1). initial_values [B] receives
// V_{t0} (OREO's vs0). Every output may be posttrain::none.
template <class Policy, class LogProbs, class RefLogProbs, class ActionMask, class Values, class StateMask, class Rewards,
          class GradLogProbs, class GradValues>
oreo_trajectory_result oreo_trajectory_loss(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                                            const ActionMask& action_mask, const Values& values, const StateMask& state_mask,
                                            const Rewards& rewards, GradLogProbs&& grad_log_probs, GradValues&& grad_values,
                                            batch_output initial_values, const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_trajectory_loss: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_trajectory_loss";
    auto x = detail::actor_args(log_probs, ref_log_probs, action_mask, values, state_mask, rewards, fn);
    x.grad_log_probs = detail::real_output<2>(grad_log_probs, {fn, "grad_log_probs"});
    x.grad_values = detail::real_output<2>(grad_values, {fn, "grad_values"});
    x.initial_values = initial_values;
    const auto r = detail::oreo_run(policy, detail::oreo_kind::trajectory, x, options, fn);
    oreo_trajectory_result t;
    static_cast<oreo_actor_result&>(t) = detail::actor_result(r, options);
    t.hinge = r.hinge;
    t.initial_value_min = r.vmin;
    t.initial_value_max = r.vmax;
    return t;
}

// The per-token KL regulariser alone: kl = mean_b( sum_t [a_t] k(p_t, q_t) / sum_t [a_t] ) with options.kl's
// estimator (OREO fit() with unbiased_kl off: k3), loss = kl_coef * kl, grad_scale * dloss/dlog_probs into
// grad_log_probs (posttrain::none skips it). For actor losses that a caller combines by hand (e.g. the
// value loss used as the actor loss through oreo_tail_sums_backward).
template <class Policy, class LogProbs, class RefLogProbs, class ActionMask, class GradLogProbs>
oreo_kl_result oreo_kl_regularizer(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs,
                                   const ActionMask& action_mask, GradLogProbs&& grad_log_probs,
                                   const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_kl_regularizer: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_kl_regularizer";
    detail::check_oreo_options(options, fn);
    const auto lp = detail::real_input<2>(log_probs, {fn, "log_probs"});
    const auto rp = detail::real_input<2>(ref_log_probs, {fn, "ref_log_probs"});
    const auto m = detail::mask_arg(action_mask, {fn, "action_mask"});
    const auto out = detail::real_output<2>(grad_log_probs, {fn, "grad_log_probs"});
    const index_t B = detail::extent_of(lp, 0), T = detail::extent_of(lp, 1);
    detail::require_shape(rp, B, T, {fn, "ref_log_probs"}, "log_probs");
    detail::require_shape(m, B, T, {fn, "action_mask"}, "log_probs");
    detail::require_shape(out, B, T, {fn, "grad_log_probs"}, "log_probs");
    detail::require_no_alias(out, lp, {fn, "grad_log_probs"}, "log_probs");
    detail::require_no_alias(out, rp, {fn, "grad_log_probs"}, "ref_log_probs");
    detail::require_no_alias(out, m, {fn, "grad_log_probs"}, "action_mask");
    const auto n = detail::check_action_rows(lp, rp, m, B, T, fn);
    for (index_t i = 0; i < B; ++i)
        if (n[std::size_t(i)] == 0) detail::raise_invalid_argument(fn, "action_mask", "row " + detail::str(i) + " has no action token");
    oreo_kl_result res;
    if (B == 0) return res;
    const double seqs = options.sequences > 0 ? options.sequences : double(B);
    std::vector<double> row(static_cast<std::size_t>(B));
    detail::for_each_row(policy, B, T, [&](index_t i) {
        std::vector<double> p(static_cast<std::size_t>(T)), q(static_cast<std::size_t>(T)), a(static_cast<std::size_t>(T)), g(std::size_t(T), 0.0);
        detail::load_row(lp, i, p.data());
        detail::load_row(rp, i, q.data());
        detail::load_mask_row(m, i, a.data());
        const double k = n[std::size_t(i)];
        row[std::size_t(i)] = detail::kl_row(p.data(), q.data(), a.data(), T, options.kl,
                                             options.kl_coef * options.grad_scale / k / seqs, g.data()) / k;
        detail::store_row(out, i, g.data());
    });
    res.kl = detail::fixed_order_sum(B, [&](index_t i) { return row[std::size_t(i)]; }) / seqs;
    res.loss = options.kl_coef * res.kl;
    return res;
}

// The full-vocabulary KL regulariser (OREO --unbiased_kl): per token, from policy and reference logits
// [B, T, V] (aligned with the log-probs: pass logits[:, :-1]),
//   reverse (default)        KL(pi || pi_ref) = sum_v pi_v (log pi_v - log pi_ref_v)
//   options.forward_kl       KL(pi_ref || pi) = sum_v pi_ref_v (log pi_ref_v - log pi_v)
// averaged over each row's action tokens, then over rows; loss = kl_coef * kl. Writes grad_scale *
// dloss/dpolicy_logits (positions without an action token get 0; their logits are not read). Gradients
// per token: reverse pi_v ((log pi_v - log pi_ref_v) - KL), forward pi_v - pi_ref_v. Logits must be
// finite at action positions.
template <class Policy, class Logits, class RefLogits, class ActionMask, class GradLogits>
oreo_kl_result oreo_vocab_kl(const Policy& policy, const Logits& policy_logits, const RefLogits& ref_logits,
                             const ActionMask& action_mask, GradLogits&& grad_policy_logits, const oreo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::oreo_vocab_kl: host policy expected");
    constexpr const char* fn = "posttrain::preference::oreo_vocab_kl";
    detail::check_oreo_options(options, fn);
    constexpr bool has_grad = !detail::is_none_arg<GradLogits>;
    auto grad_variant = [&] {
        if constexpr (has_grad) return posttrain::detail::floating_output<3>(grad_policy_logits, {fn, "grad_policy_logits"});
        else return std::variant<tensor_view<double, 3>>(tensor_view<double, 3>());
    }();
    return std::visit(
        [&](auto z, auto zr, auto m, auto g) {
            (void)g;  // a placeholder without a gradient output
            const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
            for (int r = 0; r < 3; ++r)
                detail::require(zr.extent(r) == z.extent(r), {fn, "ref_logits"},
                                "shape must match 'policy_logits': dimension " + detail::str(r) + " is " + detail::str(zr.extent(r)) +
                                    ", expected " + detail::str(z.extent(r)));
            for (int r = 0; r < 2; ++r)
                detail::require(m.extent(r) == z.extent(r), {fn, "action_mask"},
                                "shape must match the first two dimensions of 'policy_logits': dimension " + detail::str(r) +
                                    " is " + detail::str(m.extent(r)) + ", expected " + detail::str(z.extent(r)));
            if constexpr (has_grad) {
                posttrain::advantage::detail::check_same_shape(g, z, {fn, "grad_policy_logits"}, "policy_logits");
                posttrain::advantage::detail::check_no_alias(g, z, {fn, "grad_policy_logits"}, "policy_logits");
                posttrain::advantage::detail::check_no_alias(g, zr, {fn, "grad_policy_logits"}, "ref_logits");
                posttrain::advantage::detail::check_no_alias(g, m, {fn, "grad_policy_logits"}, "action_mask");
            }
            std::vector<double> n(std::size_t(B), 0.0);
            for (index_t i = 0; i < B; ++i) {
                for (index_t t = 0; t < T; ++t) {
                    if (!detail::is_valid(m(i, t))) continue;
                    n[std::size_t(i)] += 1;
                    for (index_t v = 0; v < V; ++v) {
                        const double a = double(z(i, t, v)), b = double(zr(i, t, v));
                        if (!numeric::is_finite(a))
                            detail::raise_invalid_argument(fn, "policy_logits",
                                                           "non-finite value " + std::to_string(a) + " at an action position [" +
                                                               detail::str(i) + ", " + detail::str(t) + ", " + detail::str(v) + "]");
                        if (!numeric::is_finite(b))
                            detail::raise_invalid_argument(fn, "ref_logits",
                                                           "non-finite value " + std::to_string(b) + " at an action position [" +
                                                               detail::str(i) + ", " + detail::str(t) + ", " + detail::str(v) + "]");
                    }
                }
                if (n[std::size_t(i)] == 0)
                    detail::raise_invalid_argument(fn, "action_mask", "row " + detail::str(i) + " has no action token");
            }
            oreo_kl_result res;
            if (B == 0) return res;
            detail::require(V > 0, {fn, "policy_logits"}, "the vocabulary is empty");
            const double seqs = options.sequences > 0 ? options.sequences : double(B);
            using G = typename decltype(g)::value_type;
            std::vector<double> row(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T * V, [&](index_t i) {
                std::vector<double> e(static_cast<std::size_t>(V)), er(static_cast<std::size_t>(V)), lp(static_cast<std::size_t>(V)), lr(static_cast<std::size_t>(V));
                const double up = options.kl_coef * options.grad_scale / n[std::size_t(i)] / seqs;
                double acc = 0;  // the row's sum of per-token KLs, in token order
                for (index_t t = 0; t < T; ++t) {
                    if (!detail::is_valid(m(i, t))) {
                        if constexpr (has_grad)
                            for (index_t v = 0; v < V; ++v) g(i, t, v) = G(0);
                        continue;
                    }
                    // exp(z - max) and its sum, shared with the entropy (no exp of a positive number).
                    const auto zn = policy_loss::detail::entropy_of([&](index_t v) { return z(i, t, v); }, V, e.data());
                    const auto rn = policy_loss::detail::entropy_of([&](index_t v) { return zr(i, t, v); }, V, er.data());
                    const double ls = std::log(zn.s), lrs = std::log(rn.s);
                    for (index_t v = 0; v < V; ++v) {
                        lp[std::size_t(v)] = (double(z(i, t, v)) - zn.m) - ls;
                        lr[std::size_t(v)] = (double(zr(i, t, v)) - rn.m) - lrs;
                    }
                    double kl = 0;
                    if (!options.forward_kl) {
                        kl = detail::fixed_order_sum(V, [&](index_t v) {
                            const double pv = e[std::size_t(v)] / zn.s;
                            return pv != 0 ? pv * (lp[std::size_t(v)] - lr[std::size_t(v)]) : 0.0;
                        });
                    } else {
                        kl = detail::fixed_order_sum(V, [&](index_t v) {
                            const double rv = er[std::size_t(v)] / rn.s;
                            return rv != 0 ? rv * (lr[std::size_t(v)] - lp[std::size_t(v)]) : 0.0;
                        });
                    }
                    acc += kl;
                    if constexpr (has_grad) {
                        const double rsum = options.forward_kl
                                                ? detail::fixed_order_sum(V, [&](index_t v) { return er[std::size_t(v)] / rn.s; })
                                                : 0.0;
                        for (index_t v = 0; v < V; ++v) {
                            const double pv = e[std::size_t(v)] / zn.s;
                            const double d = options.forward_kl ? pv * rsum - er[std::size_t(v)] / rn.s
                                                                : (pv != 0 ? pv * ((lp[std::size_t(v)] - lr[std::size_t(v)]) - kl) : 0.0);
                            g(i, t, v) = static_cast<G>(up * d);
                        }
                    }
                }
                row[std::size_t(i)] = acc / n[std::size_t(i)];
            });
            res.kl = detail::fixed_order_sum(B, [&](index_t i) { return row[std::size_t(i)]; }) / seqs;
            res.loss = options.kl_coef * res.kl;
            return res;
        },
        posttrain::detail::floating_input<3>(policy_logits, {fn, "policy_logits"}),
        posttrain::detail::floating_input<3>(ref_logits, {fn, "ref_logits"}),
        posttrain::detail::mask_input<2>(action_mask, {fn, "action_mask"}), grad_variant);
}

}  // namespace posttrain::preference
