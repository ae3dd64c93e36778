#pragma once
// The DPO family on the GPU: the exec::cuda overloads of preference::dpo (and simpo).
//
//     namespace pp = pt::preference;
//     const auto chosen = pp::device_sequence_input::tokens(d_logp_w, d_mask_w);    // [B, T] device views
//     const auto rejected = pp::device_sequence_input::tokens(d_logp_l, d_mask_l);
//     const auto ref_w = pp::device_sequence_input::sums(d_ref_sums_w);              // or [B] cached sums
//     const auto ref_l = pp::device_sequence_input::sums(d_ref_sums_l);
//     // asynchronous: gradients, and the result left in device memory
//     pp::dpo(pt::exec::cuda.on(stream), chosen, rejected, ref_w, ref_l, d_grad_w, d_grad_l,
//             pp::dpo_options::trl(), {}, {}, pt::device_view<pp::device_dpo_result, 0>(d_result));
//     // or the host dpo_result now (synchronizes the stream)
//     const pp::dpo_result r = pp::dpo(pt::exec::cuda, chosen, rejected, ref_w, ref_l, d_grad_w, d_grad_l, opts);
//
// Semantics are the host dpo()'s (dpo.hpp, the same dpo_options and presets): every pair_loss but the
// batch-coupled aot and aot_unpaired (they sort the batch), sft, the weighted multi-loss combination,
// every score_transform, label smoothing (smooth_sigmoid), gamma, reference_free, average_log_prob,
// IPO on sums or lengths, BCO's shifts (the batch means included), sft as token mean or per pair
// (SLiC), extras.weights / margins, reduction, normalizer, grad_scale, the per-pair outputs and
// TRL's reward metrics. Not supported (invalid_argument naming
// the option, before anything is launched): aot / aot_unpaired, ld_alpha != 1 (LD-DPO's token
// weights need each pair's shared length before the reduction), more than max_device_terms terms.
//
// Inputs: each of chosen, rejected, ref_chosen, ref_rejected is a device_sequence_input, per token
// ([B, T] float / double / __half / __nv_bfloat16 with a mask of any type) or as [B] sums (float or
// double, lengths optional); the per-token sides share one dtype and one mask dtype (T may differ
// between sides). Gradients: a [B, T] device view with the dtype of the per-token log-probs (masked
// tokens get 0) for a side given per token, a [B] float or double device view for one given as sums,
// or none. extras.weights / margins and the outputs are [B] float or double device views.
//
// The kernels, all on the policy's stream, none synchronizing the host:
//   1. reduce: one kernel for all per-token sides (blockIdx.y = side; sequence.cuh): per-row sums and
//      counts in double into scratch (a row kernel folds the chunks of long rows, in order);
//   2. stats: only for sft (token mean) or BCO's batch-mean shifts, one block folds the batch
//      constants they need (sums of chosen lengths, raw chosen log-probs and weights, the mean
//      reward) before any pair is evaluated;
//   3. pairs: pair_term / score_of / smoothed_logistic (pair_math.hpp, the host's own code) per pair,
//      the weighted terms, the per-pair gradient coefficients d loss / d S (into scratch, or straight
//      into a [B] gradient), the optional outputs, and one partial per block of the loss, the term
//      losses and the reward metrics (a fixed cub::BlockReduce tree);
//   4. finalize: one block folds the partials in block order into a device_dpo_result;
//   5. broadcast: one kernel writes both [B, T] gradients (coefficient on valid tokens, 0 elsewhere).
// Determinism: every sum has an order fixed by (B, T) alone (sequence.cuh; the pair partials by the
// grid, itself a function of B), no floating-point atomics: the bits are the same run to run and GPU
// to GPU. They differ from the host oracle by summation order and the device's fused multiply-adds.
//
// What only the device sees goes to the status word (.with_status(d_status)), where the host throws:
// a non-finite log-prob at a valid position or a row sum that overflows, a non-finite sum, a
// negative or non-finite weight, a non-finite margin, a negative or non-finite length given with
// sums, a score that overflows (options.divergence): status_nonfinite_input; the values are then
// computed as the arithmetic propagates them.
//
// Scratch (dpo_workspace_bytes(B, T)): per-side row sums and counts, chunk sums of long rows, the
// batch constants, the block partials, the gradient coefficients and the result slot of the
// synchronous overload; from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/preference/dpo.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cmath>
#include <string>
#include <vector>

#include "dpo.hpp"
#include "dpo_pair.hpp"
#include "sequence.cuh"

namespace posttrain::preference {

// The most loss terms (dpo_options::losses) the CUDA path combines in one call.
inline constexpr int max_device_terms = max_pair_terms;

// dpo_result in device memory (the term losses in a fixed array).
struct device_dpo_result {
    double loss = 0;
    reward_metrics metrics;
    index_t pairs = 0;
    double bco_batch_reward_mean = 0;
    int terms = 0;                                // entries of term_losses in use
    double term_losses[max_device_terms] = {};   // mean per-pair loss of each term

    dpo_result to_host() const {
        dpo_result r;
        r.loss = loss;
        r.metrics = metrics;
        r.pairs = pairs;
        r.term_losses.assign(term_losses, term_losses + terms);
        r.bco_batch_reward_mean = bco_batch_reward_mean;
        return r;
    }
};

// An optional [B] float or double device vector: an input (extras) or an output.
class device_batch_input {
public:
    device_batch_input() = default;
    device_batch_input(none_t) {}  // NOLINT: implicit
    template <class X>
        requires(!std::is_same_v<std::remove_cvref_t<X>, device_batch_input> && !std::is_same_v<std::remove_cvref_t<X>, none_t>)
    device_batch_input(const X& x)  // NOLINT: implicit, so that designated initializers read naturally
        : view_(detail::widen<detail::device_sums_of>(
              posttrain::detail::floating_input<1, device_space>(x, {"posttrain::preference::device_batch_input", "input"}))) {}
    bool present() const noexcept { return view_.index() != 0; }
    index_t size() const noexcept { return detail::extent_of(view_, 0); }
    const detail::device_sums_of& view() const noexcept { return view_; }

private:
    detail::device_sums_of view_;
};

class device_batch_output {
public:
    device_batch_output() = default;
    device_batch_output(none_t) {}  // NOLINT: implicit
    template <class X>
        requires(!std::is_same_v<std::remove_cvref_t<X>, device_batch_output> && !std::is_same_v<std::remove_cvref_t<X>, none_t>)
    device_batch_output(X&& x)  // NOLINT: implicit
        : view_(detail::widen<detail::device_grad_sums_of>(posttrain::detail::floating_output<1, device_space>(
              std::forward<X>(x), {"posttrain::preference::device_batch_output", "output"}))) {}
    bool present() const noexcept { return view_.index() != 0; }
    index_t size() const noexcept { return detail::extent_of(view_, 0); }
    const detail::device_grad_sums_of& view() const noexcept { return view_; }

private:
    detail::device_grad_sums_of view_;
};

// pair_extras on the device: [B] weights (detached, multiply each pair's loss) and margins (added to gamma).
struct device_pair_extras {
    device_batch_input weights;
    device_batch_input margins;
};

// pair_outputs on the device, [B] each.
struct device_pair_outputs {
    device_batch_output losses;            // per-pair loss (the weighted sum over terms, before the reduction)
    device_batch_output chosen_rewards;    // beta * l_w (AlphaPO: beta * s_w)
    device_batch_output rejected_rewards;
    device_batch_output chosen_logps;      // the policy's S(y_w) as the loss used it (length-averaged if asked)
    device_batch_output rejected_logps;
};

namespace detail {

// The sums the result is made of (a block's pairs, then the batch).
struct pair_acc {
    double loss = 0, rew_w = 0, rew_l = 0, margin = 0, accuracy = 0, tie = 0, logps_w = 0, logps_l = 0, reward = 0;
    double terms[max_device_terms] = {};
    POSTTRAIN_HD void add(const pair_eval& e) noexcept {
        loss += e.total;
        rew_w += e.rew_w;
        rew_l += e.rew_l;
        margin += e.rew_w - e.rew_l;
        accuracy += e.rew_w > e.rew_l ? 1.0 : 0.0;
        tie += ::fabs(e.rew_w - e.rew_l) < 1e-12 ? 1.0 : 0.0;
        logps_w += e.logps_w;
        logps_l += e.logps_l;
        reward += e.reward;
        for (int k = 0; k < max_device_terms; ++k) terms[k] += e.terms[k];
    }
    POSTTRAIN_HD void merge(const pair_acc& o) noexcept {
        loss += o.loss, rew_w += o.rew_w, rew_l += o.rew_l, margin += o.margin, accuracy += o.accuracy, tie += o.tie;
        logps_w += o.logps_w, logps_l += o.logps_l, reward += o.reward;
        for (int k = 0; k < max_device_terms; ++k) terms[k] += o.terms[k];
    }
};

// The result from the batch's sums, as the host's dpo() and pair_reward_metrics() combine them.
POSTTRAIN_HD inline device_dpo_result finish_dpo(const pair_acc& a, const pair_config& c) noexcept {
    device_dpo_result r;
    const double n = double(c.pairs);
    r.loss = a.loss * c.factor;
    r.pairs = c.pairs;
    if (c.pairs > 0) {
        r.metrics.chosen = a.rew_w / n;
        r.metrics.rejected = a.rew_l / n;
        r.metrics.margin = a.margin / n;
        r.metrics.accuracy = a.accuracy / n;
        r.metrics.tie_fraction = a.tie / n;
        r.metrics.logps_chosen = a.logps_w / n;
        r.metrics.logps_rejected = a.logps_l / n;
        r.bco_batch_reward_mean = a.reward / (2 * n);
    }
    r.terms = c.nterms;
    for (int k = 0; k < c.nterms; ++k) r.term_losses[k] = c.pairs > 0 ? a.terms[k] / n : 0.0;
    return r;
}

// ---- kernels ---------------------------------------------------------------------------------------

// A side's per-pair values: its sums and (optional) lengths.
struct side_in {
    vec_in sum, len;
};

enum side_index : int { side_chosen = 0, side_rejected = 1, side_ref_chosen = 2, side_ref_rejected = 3 };

__device__ inline pair_sums load_pair(const side_in (&side)[max_token_sides], bool has_ref, index_t i, bool& bad) {
    pair_sums s;
    auto length = [&](const side_in& sd) {
        if (!sd.len.present()) return static_cast<double>(NAN);
        const double n = sd.len(i);
        bad |= !(numeric::is_finite(n) && n >= 0);
        return n;
    };
    s.pw = side[side_chosen].sum(i);
    s.pl = side[side_rejected].sum(i);
    s.nw = length(side[side_chosen]);
    s.nl = length(side[side_rejected]);
    bad |= !(numeric::is_finite(s.pw) && numeric::is_finite(s.pl));
    if (has_ref) {
        s.rw = side[side_ref_chosen].sum(i);
        s.rl = side[side_ref_rejected].sum(i);
        bad |= !(numeric::is_finite(s.rw) && numeric::is_finite(s.rl));
    }
    return s;
}

struct pair_args {
    side_in side[max_token_sides];  // chosen, rejected, ref_chosen, ref_rejected
    vec_in weights, margins;
    vec_out losses, rew_w, rew_l, logps_w, logps_l;  // optional [B] outputs
    vec_out grad_w, grad_l;         // the gradient of a side given as sums (its coefficient itself)
    double* coef_w = nullptr;       // the coefficients of a side given per token (broadcast later), or null
    double* coef_l = nullptr;
    pair_config c;
    const batch_stats* stats = nullptr;  // null: no batch constants needed
    pair_acc* partials = nullptr;
    std::uint32_t* status = nullptr;
};

template <int Unused = 0>
__global__ void __launch_bounds__(seq_threads) dpo_stats_kernel(const pair_args a, batch_stats* out) {
    batch_stats local;
    bool bad = false;
    for (index_t i = threadIdx.x; i < a.c.pairs; i += seq_threads) {
        const pair_sums s = load_pair(a.side, a.c.has_ref, i, bad);
        const pair_ratios r = ratios_of(a.c, s);
        local.sum_nw += s.nw;
        local.sum_pw += s.pw;
        local.reward += a.c.beta * r.lw + a.c.beta * r.ll;
        local.sum_w += a.c.has_weights ? a.weights(i) : 0.0;
    }
    (void)bad;  // the pair kernel reports the same values
    const batch_stats total = pld::block_merge(local);
    if (threadIdx.x == 0) *out = total;
}

template <int Unused = 0>
__global__ void __launch_bounds__(seq_threads) dpo_pair_kernel(const pair_args a) {
    const batch_stats st = a.stats != nullptr ? *a.stats : batch_stats{};
    pair_acc acc;
    bool bad = false;
    for (index_t i = index_t(blockIdx.x) * seq_threads + threadIdx.x; i < a.c.pairs; i += index_t(gridDim.x) * seq_threads) {
        const pair_sums s = load_pair(a.side, a.c.has_ref, i, bad);
        const double w = a.c.has_weights ? a.weights(i) : 1.0;
        const double m = a.c.has_margins ? a.margins(i) : 0.0;
        bad |= !(numeric::is_finite(w) && w >= 0 && numeric::is_finite(m));
        const pair_eval e = evaluate_pair(a.c, s, w, m, st);
        bad |= e.bad;
        acc.add(e);
        a.losses.set(i, e.total);
        a.rew_w.set(i, e.rew_w);
        a.rew_l.set(i, e.rew_l);
        a.logps_w.set(i, e.logps_w);
        a.logps_l.set(i, e.logps_l);
        a.grad_w.set(i, e.cw);
        a.grad_l.set(i, e.cl);
        if (a.coef_w != nullptr) a.coef_w[i] = e.cw;
        if (a.coef_l != nullptr) a.coef_l[i] = e.cl;
    }
    const pair_acc total = pld::block_merge(acc);
    if (threadIdx.x == 0) a.partials[blockIdx.x] = total;
    if (__syncthreads_or(bad) && threadIdx.x == 0) posttrain::detail::report_status(a.status, status_nonfinite_input);
}

template <int Unused = 0>
__global__ void __launch_bounds__(seq_threads)
    dpo_finalize_kernel(const pair_acc* partials, index_t count, const pair_config c, device_dpo_result* out) {
    const pair_acc a = pld::fold_partials(partials, count);
    if (threadIdx.x == 0) *out = finish_dpo(a, c);
}

// ---- host side ---------------------------------------------------------------------------------------

// The vec_out of whichever [n] view a variant holds (absent for none).
inline vec_out vec_out_of(const device_grad_sums_of& v) {
    if (const auto* f = std::get_if<device_view<float, 1>>(&v)) return make_vec_out(*f);
    if (const auto* d = std::get_if<device_view<double, 1>>(&v)) return make_vec_out(*d);
    return {};
}

inline unsigned pair_blocks(index_t pairs) {
    const index_t want = pld::ceil_div(pairs, seq_threads);
    return static_cast<unsigned>(want < 1 ? 1 : (want < pld::loss_max_blocks ? want : pld::loss_max_blocks));
}

// Where each piece of scratch lives (byte offsets, 256-aligned). tokens: the longest T of the
// per-token sides (the chunk buffers are sized for it).
struct dpo_scratch_layout {
    std::size_t sums = 0, lens = 0, chunks = 0, stats = 0, partials = 0, coef = 0, result = 0, total = 0;
    index_t chunk_entries = 0;  // per side, for each of chunk_sum and chunk_len
};

inline dpo_scratch_layout dpo_scratch(index_t pairs, index_t tokens) {
    dpo_scratch_layout l;
    posttrain::detail::scratch_cursor c;
    const std::size_t B = std::size_t(pairs);
    l.chunk_entries = chunk_bound(pairs, tokens);
    l.sums = c.take(sizeof(double) * max_token_sides * B);
    l.lens = c.take(sizeof(double) * max_token_sides * B);
    l.chunks = c.take(sizeof(double) * 2 * max_token_sides * std::size_t(l.chunk_entries));
    l.stats = c.take(sizeof(batch_stats));
    l.partials = c.take(sizeof(pair_acc) * pair_blocks(pairs));
    l.coef = c.take(sizeof(double) * 2 * B);
    l.result = c.take(sizeof(device_dpo_result));
    l.total = c.end;
    return l;
}

// What the CUDA path does not implement (after check_dpo_options has accepted the options).
inline void check_cuda_dpo_options(const dpo_options& o, const char* fn) {
    const auto terms = terms_of(o);
    const char* arg = o.losses.empty() ? "options.loss" : "options.losses";
    for (const loss_term& t : terms)
        require(t.loss != pair_loss::aot && t.loss != pair_loss::aot_unpaired, {fn, arg},
                std::string("loss '") + pair_loss_name(t.loss) +
                    "' is not supported on exec::cuda: aot and aot_unpaired sort the whole batch; use a host policy");
    require(terms.size() <= std::size_t(max_device_terms), {fn, "options.losses"},
            "at most " + str(max_device_terms) + " loss terms on exec::cuda, found " + str(index_t(terms.size())));
    require(o.ld_alpha == 1.0, {fn, "options.ld_alpha"},
            "LD-DPO (ld_alpha != 1) is not supported on exec::cuda (its token weights need each pair's shared "
            "length before the reduction); use a host policy");
}

inline const char* side_name(int k) {
    static constexpr const char* names[max_token_sides] = {"chosen", "rejected", "ref_chosen", "ref_rejected"};
    return names[k];
}

// Everything dpo() resolved on the host before the typed launch.
struct dpo_plan {
    const device_sequence_input* side[max_token_sides] = {};
    int nsides = 2;                 // 4 with a reference
    int token_side[max_token_sides] = {};  // the per-token sides, in side order
    int ntoken = 0;
    index_t tokens = 0;             // the longest T of the per-token sides
    const device_sequence_grad* grad[2] = {};
    pair_args args;
    bool need_stats = false;
};

// The typed part: T and M are the per-token sides' dtypes (any pair when there is none).
template <class T, class M>
void dpo_launch(const exec::cuda_policy& pol, dpo_plan& plan, device_dpo_result* d_result, device_dpo_result* h_result,
                const char* fn) {
    const index_t B = plan.args.c.pairs;
    pair_args& a = plan.args;

    // Typed views of the per-token sides (the first fixes T and M) and of the [B, T] gradients, all
    // checked before any device work.
    reduce_args<T, M> red;
    red.status = pol.status;
    const int k0 = plan.ntoken > 0 ? plan.token_side[0] : 0;
    for (int j = 0; j < plan.ntoken; ++j) {
        const int k = plan.token_side[j];
        const device_sequence_input& in = *plan.side[k];
        const auto* lp = std::get_if<device_view<const T, 2>>(&in.token_view());
        require(lp != nullptr, {fn, side_name(k)}, std::string("must have the dtype of '") + side_name(k0) + "'");
        const auto* m = std::get_if<device_view<const M, 2>>(&in.mask_view());
        require(m != nullptr, {fn, side_name(k)},
                std::string("its mask must have the dtype of the mask of '") + side_name(k0) + "'");
        red.side[j].lp = *lp;
        red.side[j].mask = *m;
    }
    auto token_side_of = [&](int k) -> token_side<T, M>& {
        int j = 0;
        while (plan.token_side[j] != k) ++j;
        return red.side[j];
    };
    broadcast_args<T, M> bc;
    int bc_side[2] = {};
    int nbc = 0;
    for (int s = 0; s < 2; ++s) {
        const device_sequence_grad* g = plan.grad[s];
        if (!g->present() || !g->per_token()) continue;
        const char* gname = s == 0 ? "grad_chosen" : "grad_rejected";
        const auto* gv = std::get_if<device_view<T, 2>>(&g->token_view());
        require(gv != nullptr, {fn, gname}, std::string("must have the dtype of the log-probs of '") + side_name(s) + "'");
        const token_side<T, M>& sd = token_side_of(s);
        for (int r = 0; r < 2; ++r)
            require(gv->extent(r) == sd.lp.extent(r), {fn, gname},
                    "shape must match its log-probs: dimension " + str(r) + " is " + str(gv->extent(r)) + ", expected " +
                        str(sd.lp.extent(r)));
        advantage::detail::check_no_alias(*gv, sd.lp, {fn, gname}, "log_probs");
        advantage::detail::check_no_alias(*gv, sd.mask, {fn, gname}, "mask");
        if (nbc == 1) advantage::detail::check_no_alias(*gv, bc.side[0].g, {fn, gname}, "grad_chosen");
        bc.side[nbc].g = *gv;
        bc.side[nbc].mask = sd.mask;
        bc_side[nbc++] = s;
    }

    // The scratch, and where each kernel reads and writes.
    const dpo_scratch_layout l = dpo_scratch(B, plan.tokens);
    posttrain::detail::cuda_scratch scratch(pol, l.total, {fn, "policy"});
    for (int j = 0; j < plan.ntoken; ++j) {
        const int k = plan.token_side[j];
        double* sums = scratch.as<double>(l.sums) + std::size_t(k) * std::size_t(B);
        double* lens = scratch.as<double>(l.lens) + std::size_t(k) * std::size_t(B);
        token_side<T, M>& sd = red.side[j];
        sd.sum = make_vec_out(sums);
        sd.len = make_vec_out(lens);
        place_side(sd, scratch.as<double>(l.chunks) + std::size_t(j) * 2 * std::size_t(l.chunk_entries));
        a.side[k] = side_in{make_vec_in(sums), make_vec_in(lens)};
    }
    for (int j = 0; j < nbc; ++j) {
        double* cs = scratch.as<double>(l.coef) + std::size_t(bc_side[j]) * std::size_t(B);
        (bc_side[j] == 0 ? a.coef_w : a.coef_l) = cs;
        bc.side[j].coef = make_vec_in(cs);
    }
    a.partials = scratch.as<pair_acc>(l.partials);
    a.status = pol.status;
    const cudaStream_t st = pol.stream;

    // 1. the per-token sides' sums and counts
    launch_reduce(pol, red, plan.ntoken, fn);
    // 2. the batch constants
    if (plan.need_stats) {
        batch_stats* stats = scratch.as<batch_stats>(l.stats);
        dpo_stats_kernel<<<1, seq_threads, 0, st>>>(a, stats);
        posttrain::detail::check_launch(fn);
        a.stats = stats;
    }
    // 3. the pairs
    const unsigned blocks = pair_blocks(B);
    dpo_pair_kernel<<<blocks, seq_threads, 0, st>>>(a);
    posttrain::detail::check_launch(fn);
    // 4. the result
    device_dpo_result* out = d_result != nullptr ? d_result : scratch.as<device_dpo_result>(l.result);
    if (d_result != nullptr || h_result != nullptr) {
        dpo_finalize_kernel<<<1, seq_threads, 0, st>>>(a.partials, index_t(blocks), a.c, out);
        posttrain::detail::check_launch(fn);
    }
    // 5. the per-token gradients
    launch_broadcast(pol, bc, nbc, fn);
    if (h_result != nullptr) {
        POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_result, out, sizeof(device_dpo_result), cudaMemcpyDeviceToHost, st));
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(st));
    }
}

// The bytes a view (or an absent one: empty) spans (view_bytes), named, for dpo()'s aliasing checks.
struct dpo_span {
    const unsigned char* begin = nullptr;
    const unsigned char* end = nullptr;
    const char* arg = nullptr;   // the argument's name
    const char* part = nullptr;  // which of its views, or null
    bool overlaps(const dpo_span& o) const noexcept { return begin != end && o.begin != o.end && begin < o.end && o.begin < end; }
};
template <class Variant>
dpo_span span_of(const Variant& var, const char* arg, const char* part = nullptr) {
    dpo_span s{nullptr, nullptr, arg, part};
    std::visit(
        [&](const auto& v) {
            if constexpr (!is_monostate_v<std::remove_cvref_t<decltype(v)>>) {
                const byte_span b = view_bytes(v);
                s.begin = b.begin;
                s.end = b.end;
            }
        },
        var);
    return s;
}

// Every output dpo() writes (the gradients, the per-pair outputs, the device result) apart from every
// input and from every other output, before anything is allocated or launched: the kernels write
// them while other blocks still read the inputs (the pair kernel reads the sums, lengths and extras
// while writing the per-pair outputs and [B] gradients; the broadcast writes both [B, T] gradients
// while reading both masks), and a later pass would overwrite an earlier one's output. The policy's
// workspace and status word apart from all of them (posttrain::detail::check_policy_apart).
inline void check_dpo_spans(const exec::cuda_policy& pol, const dpo_plan& plan, const device_sequence_grad* const grads[2], const device_pair_outputs& outputs,
                            const device_pair_extras& extras, const device_dpo_result* d_result, const char* fn) {
    std::vector<dpo_span> in, out;
    for (int k = 0; k < max_token_sides; ++k) {
        const device_sequence_input& x = *plan.side[k];
        if (!x.present()) continue;
        in.push_back(span_of(x.token_view(), side_name(k), "log_probs"));
        in.push_back(span_of(x.mask_view(), side_name(k), "mask"));
        in.push_back(span_of(x.sums_view(), side_name(k), "sums"));
        in.push_back(span_of(x.lengths_view(), side_name(k), "lengths"));
    }
    in.push_back(span_of(extras.weights.view(), "extras.weights"));
    in.push_back(span_of(extras.margins.view(), "extras.margins"));
    for (int s = 0; s < 2; ++s) {
        const char* gname = s == 0 ? "grad_chosen" : "grad_rejected";
        out.push_back(span_of(grads[s]->token_view(), gname));
        out.push_back(span_of(grads[s]->sums_view(), gname));
    }
    out.push_back(span_of(outputs.losses.view(), "outputs.losses"));
    out.push_back(span_of(outputs.chosen_rewards.view(), "outputs.chosen_rewards"));
    out.push_back(span_of(outputs.rejected_rewards.view(), "outputs.rejected_rewards"));
    out.push_back(span_of(outputs.chosen_logps.view(), "outputs.chosen_logps"));
    out.push_back(span_of(outputs.rejected_logps.view(), "outputs.rejected_logps"));
    if (d_result != nullptr)
        out.push_back({reinterpret_cast<const unsigned char*>(d_result), reinterpret_cast<const unsigned char*>(d_result + 1),
                       "result", nullptr});
    for (std::size_t i = 0; i < out.size(); ++i) {
        for (const dpo_span& x : in)
            require(!out[i].overlaps(x), {fn, out[i].arg},
                    std::string("the output overlaps the input '") + x.arg + "'" +
                        (x.part != nullptr ? std::string(" (its ") + x.part + ")" : std::string()) + "; pass a separate buffer");
        for (std::size_t j = 0; j < i; ++j)
            require(!out[i].overlaps(out[j]), {fn, out[i].arg},
                    std::string("the output overlaps '") + out[j].arg + "'; pass a separate buffer");
    }
    for (const std::vector<dpo_span>* list : {&in, &out})
        for (const dpo_span& x : *list)
            posttrain::detail::check_policy_apart(
                pol, fn, std::pair{device_view<const unsigned char, 1>(x.begin, static_cast<index_t>(x.end - x.begin)), x.arg});
}

// The public overloads' body: the host-side checks, the plan, the dtype dispatch.
inline void dpo_cuda(const exec::cuda_policy& pol, const device_sequence_input& chosen,
                     const device_sequence_input& rejected, const device_sequence_input& ref_chosen,
                     const device_sequence_input& ref_rejected, const device_sequence_grad& grad_chosen,
                     const device_sequence_grad& grad_rejected, const dpo_options& o, const device_pair_outputs& outputs,
                     const device_pair_extras& extras, device_dpo_result* d_result, device_dpo_result* h_result) {
    constexpr const char* fn = "posttrain::preference::dpo";
    check_dpo_options(o, fn);
    check_cuda_dpo_options(o, fn);
    require(chosen.present(), {fn, "chosen"}, "is required");
    const index_t B = chosen.batch();
    require(B > 0, {fn, "chosen"}, "must hold at least one pair");
    const bool has_ref = ref_chosen.present() || ref_rejected.present();
    require(o.reference_free || has_ref, {fn, "ref_chosen"}, "is required unless options.reference_free");

    dpo_plan plan;
    plan.side[side_chosen] = &chosen;
    plan.side[side_rejected] = &rejected;
    plan.side[side_ref_chosen] = &ref_chosen;
    plan.side[side_ref_rejected] = &ref_rejected;
    plan.nsides = has_ref ? 4 : 2;
    pair_args& a = plan.args;
    for (int k = 0; k < plan.nsides; ++k) {
        const device_sequence_input& in = *plan.side[k];
        require(in.present(), {fn, side_name(k)}, "is required");
        require(in.batch() == B, {fn, side_name(k)},
                "must hold one sequence per pair: batch is " + str(in.batch()) + ", expected " + str(B));
        if (in.per_token()) {
            plan.token_side[plan.ntoken++] = k;
            plan.tokens = in.tokens_per_row() > plan.tokens ? in.tokens_per_row() : plan.tokens;
        } else {
            a.side[k] = side_in{vec_in_of(in.sums_view()), vec_in_of(in.lengths_view())};
        }
    }
    a.c = make_pair_config(o, terms_of(o), B, has_ref);

    // Lengths are needed by length averaging, length-normalised IPO, sigmoid_norm and sft.
    bool need_len = o.average_log_prob;
    for (int k = 0; k < a.c.nterms; ++k) {
        const pair_loss t = a.c.terms[k].loss;
        const bool sft_mean = t == pair_loss::sft && o.sft_token_mean;  // the batch's token mean
        need_len = need_len || t == pair_loss::sigmoid_norm || sft_mean || (t == pair_loss::ipo && o.ipo_length_normalized);
        plan.need_stats = plan.need_stats || sft_mean ||
                          (t == pair_loss::bco_pair && (o.bco == bco_shift::batch_mean || o.bco == bco_shift::batch_mean_float32));
    }
    if (need_len) {
        require(chosen.has_lengths(), {fn, "chosen"}, "needs lengths for this loss (device_sequence_input::sums(sums, lengths))");
        require(rejected.has_lengths(), {fn, "rejected"}, "needs lengths for this loss (device_sequence_input::sums(sums, lengths))");
    }

    auto batch_in = [&](const device_batch_input& x, const char* name) {
        if (!x.present()) return vec_in{};
        require(x.size() == B, {fn, name}, "must have one entry per pair: found " + str(x.size()) + ", expected " + str(B));
        return vec_in_of(x.view());
    };
    a.weights = batch_in(extras.weights, "extras.weights");
    a.margins = batch_in(extras.margins, "extras.margins");
    a.c.has_weights = a.weights.present();
    a.c.has_margins = a.margins.present();
    for (int k = 0; k < a.c.nterms && a.c.has_margins; ++k)
        require(takes_margin(a.c.terms[k].loss), {fn, "extras.margins"},
                std::string("margins apply to sigmoid, sigmoid_norm, hinge, robust and exo_pair, not to '") +
                    pair_loss_name(a.c.terms[k].loss) + "'");
    auto batch_out = [&](const device_batch_output& x, const char* name) {
        if (!x.present()) return vec_out{};
        require(x.size() == B, {fn, name}, "must have " + str(B) + " entries, found " + str(x.size()));
        return vec_out_of(x.view());
    };
    a.losses = batch_out(outputs.losses, "outputs.losses");
    a.rew_w = batch_out(outputs.chosen_rewards, "outputs.chosen_rewards");
    a.rew_l = batch_out(outputs.rejected_rewards, "outputs.rejected_rewards");
    a.logps_w = batch_out(outputs.chosen_logps, "outputs.chosen_logps");
    a.logps_l = batch_out(outputs.rejected_logps, "outputs.rejected_logps");

    // Gradients: the form of their side, [B] ones checked here, [B, T] ones in the typed launch.
    plan.grad[0] = &grad_chosen;
    plan.grad[1] = &grad_rejected;
    for (int s = 0; s < 2; ++s) {
        const device_sequence_grad& g = *plan.grad[s];
        if (!g.present()) continue;
        const char* gname = s == 0 ? "grad_chosen" : "grad_rejected";
        const bool tokens = plan.side[s]->per_token();
        require(g.per_token() == tokens, {fn, gname},
                tokens ? "must be a [B, T] view (its log-probs were given per token)"
                       : "must be a [B] view (its log-probs were given as sums)");
        if (tokens) continue;  // checked with the typed views
        std::visit(
            [&](auto v, auto in) {
                if constexpr (!is_monostate_v<decltype(v)> && !is_monostate_v<decltype(in)>) {
                    require(v.extent(0) == B, {fn, gname}, "must have one entry per sequence");
                    require(!views_overlap(v, in), {fn, gname}, "the output overlaps the input 'sums'; pass a separate buffer");
                    (s == 0 ? a.grad_w : a.grad_l) = make_vec_out(v);
                }
            },
            g.sums_view(), plan.side[s]->sums_view());
    }
    if (grad_chosen.present() && grad_rejected.present() && !grad_chosen.per_token() && !grad_rejected.per_token())
        std::visit(
            [&](auto gw, auto gl) {
                if constexpr (!is_monostate_v<decltype(gw)> && !is_monostate_v<decltype(gl)>)
                    require(!views_overlap(gl, gw), {fn, "grad_rejected"}, "the output overlaps 'grad_chosen'; pass a separate buffer");
            },
            grad_chosen.sums_view(), grad_rejected.sums_view());

    check_dpo_spans(pol, plan, plan.grad, outputs, extras, d_result, fn);

    if (plan.ntoken == 0) {
        dpo_launch<float, bool>(pol, plan, d_result, h_result, fn);
        return;
    }
    const device_sequence_input& first = *plan.side[plan.token_side[0]];
    std::visit(
        [&](auto lp, auto m) {
            if constexpr (!is_monostate_v<decltype(lp)> && !is_monostate_v<decltype(m)>)
                dpo_launch<typename decltype(lp)::value_type, typename decltype(m)::value_type>(pol, plan, d_result, h_result, fn);
        },
        first.token_view(), first.mask_view());
}

}  // namespace detail

// Bytes of scratch dpo needs on the CUDA path for `pairs` pairs whose per-token sides have at most
// tokens_per_row tokens per row (0: every side given as sums). Any options.
inline std::size_t dpo_workspace_bytes(index_t pairs, index_t tokens_per_row = 0, const dpo_options& /*options*/ = {}) {
    return detail::dpo_scratch(pairs, tokens_per_row).total;
}

// The fused DPO-family loss on the device, asynchronous: writes the gradients and, when `result` is
// not empty, the device_dpo_result into device memory (complete when the stream reaches it).
inline void dpo(const exec::cuda_policy& policy, const device_sequence_input& chosen, const device_sequence_input& rejected,
                const device_sequence_input& ref_chosen, const device_sequence_input& ref_rejected,
                const device_sequence_grad& grad_chosen, const device_sequence_grad& grad_rejected, const dpo_options& o,
                const device_pair_outputs& outputs, const device_pair_extras& extras,
                device_view<device_dpo_result, 0> result) {
    detail::dpo_cuda(policy, chosen, rejected, ref_chosen, ref_rejected, grad_chosen, grad_rejected, o, outputs, extras,
                     result.data(), nullptr);
}

// The same, returning the dpo_result on the host: synchronizes the policy's stream.
inline dpo_result dpo(const exec::cuda_policy& policy, const device_sequence_input& chosen,
                      const device_sequence_input& rejected, const device_sequence_input& ref_chosen,
                      const device_sequence_input& ref_rejected, const device_sequence_grad& grad_chosen,
                      const device_sequence_grad& grad_rejected, const dpo_options& o = {},
                      const device_pair_outputs& outputs = {}, const device_pair_extras& extras = {}) {
    device_dpo_result r;
    detail::dpo_cuda(policy, chosen, rejected, ref_chosen, ref_rejected, grad_chosen, grad_rejected, o, outputs, extras,
                     nullptr, &r);
    return r.to_host();
}

// SimPO on the device: dpo() with dpo_options::simpo(...) and no reference (synchronous).
inline dpo_result simpo(const exec::cuda_policy& policy, const device_sequence_input& chosen,
                        const device_sequence_input& rejected, const device_sequence_grad& grad_chosen,
                        const device_sequence_grad& grad_rejected, const dpo_options& o = dpo_options::simpo(),
                        const device_pair_outputs& outputs = {}) {
    return dpo(policy, chosen, rejected, device_sequence_input{}, device_sequence_input{}, grad_chosen, grad_rejected, o,
               outputs);
}

}  // namespace posttrain::preference
