#pragma once
// The fused policy-gradient loss on the GPU: the exec::cuda overloads of policy_loss::compute.
//
//     // asynchronous: the gradient, and the loss_result written into device memory
//     pt::policy_loss::compute(pt::exec::cuda.on(stream), d_logp, d_old, d_adv, d_mask, d_grad, opts,
//                              {.ref_log_probs = d_ref}, pt::device_view<pt::policy_loss::loss_result, 0>(d_result));
//     // or, when the host wants the numbers now: the same, then a sync of the stream
//     const pt::policy_loss::loss_result r = pt::policy_loss::compute(pt::exec::cuda.on(stream), d_logp, d_old,
//                                                                      d_adv, d_mask, d_grad, opts);
//
// Inputs are [B, T] device_view<const float|double|__half|__nv_bfloat16, 2> (any strides) or DLPack
// tensors on a CUDA device; log_probs, old_log_probs, advantages and the extras share one dtype, the
// mask may be bool or any arithmetic type, and grad_log_probs (or posttrain::none) has the dtype of
// log_probs. Every token is evaluated in double (half and bfloat16 are widened on load) and every
// sum is accumulated in double, as on the host; the gradient is rounded to the caller's dtype once.
//
// Semantics are those of the host compute() (policy_loss.hpp) restricted to what is token-local:
//   supported: objectives ppo_clip (dual clip, delta cap, log-ratio clamp), cispo (both bounds), sapo,
//     policy_gradient, dro, dppo_tv, dppo_kl, topr, at ratio_level::token; the KL term with every
//     estimator, its clamps, straight_through and kl_importance_weighted; extras.is_weights;
//     extras.entropies for the entropy bonus and metric (both entropy_aggregation modes); grad_scale;
//     every aggregation mode with its global normalizers, multiplier, row_mean and empty_rows variants.
//   not supported (invalid_argument naming the option): gmpo, clip_cov, kl_cov, vespo (options.loss),
//     sequence-level ratios (options.level), the mismatch corrections (options.mismatch; there is no
//     rollout_log_probs here), the off-policy sequence mask (options.off_policy_threshold) and the
//     top-entropy mask (options.top_entropy_quantile): each needs a batch-wide selection or a
//     second pass over the row before any token's loss.
// The loss_result is the host's field for field (aggregation, sums, ratio range, per-row clip
// fractions, sequences_clipped_*; phi_mean and sums.selected/rollout_minus_old are 0).
//
// The passes, all on the policy's stream, none synchronizing the host:
//   1. count: the [B, T] batch is cut into segments (a row, or a chunk of a long row), one team of
//      1..32 lanes of a warp per segment; the teams sum their mask weights (a xor butterfly) into the
//      per-row counts n_i, and each block leaves the sum of its rows' counts and non-empty rows.
//      Rows cut into several chunks are summed by a row kernel, chunks in order.
//   2. plan: one block folds those partials (block order) and resolves the aggregation on the device
//      (aggregate.hpp's resolve_plan: divisor, scale, row_factor), so no count goes back to the host.
//   3. loss: the same teams walk the same segments, evaluate every token (objective, KL, weights),
//      write grad = row_factor(n_i) * grad_scale * m * dL/dlp in the caller's dtype, and accumulate the
//      loss, KL and metric sums in double; each block leaves one partial (a fixed cub::BlockReduce
//      tree over its threads), and the per-row clip sums are folded per row (a row kernel in chunk
//      order when rows are chunked).
//   4. finalize: one block folds the block partials in block order into a loss_result in device
//      memory (only when one is asked for).
// Determinism: the segments, the teams and the grid depend only on B and T (the grid is capped at a
// fixed number of blocks, not the device's SM count), every reduction is a fixed tree or a fixed
// order and no floating-point atomics are used: the bits are the same run to run and GPU to GPU.
// They differ from the host oracle by summation order and by the device's fused multiply-adds
// (about 1e-15 relative per token).
//
// What only the device sees goes to the policy's status word (.with_status(d_status)): a NaN/inf
// log-prob, old log-prob or advantage at a valid position (where the host throws) sets
// status_nonfinite_input, the result being computed as the arithmetic propagates it. Masked positions
// may hold anything and get gradient 0.
//
// Scratch (compute_workspace_bytes(B, T)): per-row counts, per-chunk sums of chunked rows, the
// block partials, the plan and the result slot of the synchronous overload; from .with(workspace) or
// cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/policy_loss.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/block/block_reduce.cuh>

#include "../cuda/dtypes.cuh"
#include "../cuda/exec.cuh"
#include "kl.cuh"
#include "policy_loss.hpp"

namespace posttrain::policy_loss {
namespace detail {

// The dtype helpers of cuda/dtypes.cuh, named here as the loss code (and the CUDA tests and benches)
// use them.
using posttrain::detail::alternative;
using posttrain::detail::device_floats;
using posttrain::detail::from_double;
using posttrain::detail::is_half_type_v;
using posttrain::detail::to_double;

struct make_device_extra {
    template <class X>
    auto operator()(const X& x) const {
        return device_floats<true, 2>(x, {"posttrain::policy_loss::device_extras", "input"});
    }
};
}  // namespace detail

// An optional [B, T] device input with the dtype of log_probs (absent when default-constructed).
using optional_device_input =
    detail::optional_view<detail::make_device_extra, device_space, float, double, __half, __nv_bfloat16>;

// The optional inputs of the CUDA path (the host's extras less rollout_log_probs, whose corrections
// are not supported here).
struct device_extras {
    optional_device_input ref_log_probs;  // KL term (kl_coef > 0), and the kl metric whenever given
    optional_device_input is_weights;     // precomputed detached importance weights multiplying the objective
    optional_device_input entropies;      // entropy bonus (entropy_coef > 0) and metric; never differentiated
};

namespace detail {

// ---- launch shapes -------------------------------------------------------------------------------

inline constexpr int loss_threads = 256;
inline constexpr int loss_warps = loss_threads / 32;
// Resident blocks per SM the loss kernel is compiled for (128 registers per thread: the token math
// is in double).
inline constexpr int loss_min_blocks = 2;
// Tokens per lane summed per step of the count kernel, and tokens whose loads a lane of the loss
// kernel keeps in flight while it evaluates one. The evaluation is neither unrolled nor prefetched
// deeper: its double-precision temporaries fill the 128 registers (a second token in flight spills),
// and at one token ahead the loads already overlap the arithmetic, which is the bound (FP64).
inline constexpr int loss_unroll = 4;
inline constexpr int loss_prefetch = 1;
// Grid cap of the segment and row kernels: fixed, not the device's SM count, so that the block
// partials (and so the bits) are the same on every GPU; 132 SMs x 8 gives whole waves on an H100.
inline constexpr index_t loss_max_blocks = 132 * 8;
// Long rows are cut into chunks of seg_max tokens, halved (down to seg_min) while the batch has
// fewer than seg_target segments, so that a few long rows still spread over the device.
inline constexpr index_t seg_max = 4096;
inline constexpr index_t seg_min = 256;
inline constexpr index_t seg_target = 4096;

// How the [B, T] batch is cut into segments and teams.
struct seg_geometry {
    index_t rows = 0, cols = 0;
    int lanes = 32;      // threads per team: 32, or the power of two >= T for short rows
    index_t len = 0;     // tokens per segment (the last chunk of a row may be shorter)
    index_t chunks = 1;  // segments per row
    index_t count = 0;   // rows * chunks
    unsigned blocks = 0; // grid of the segment kernels (0: nothing to launch)
    unsigned row_blocks = 0;  // grid of the row kernels
};

constexpr index_t ceil_div(index_t a, index_t b) noexcept { return (a + b - 1) / b; }

inline seg_geometry make_geometry(index_t rows, index_t cols) {
    seg_geometry g;
    g.rows = rows;
    g.cols = cols;
    int lanes = 1;
    while (lanes < 32 && lanes < cols) lanes *= 2;
    g.lanes = lanes;
    g.len = cols;
    if (cols > seg_min) {
        index_t len = seg_max;
        while (len > seg_min && rows * ceil_div(cols, len) < seg_target) len /= 2;
        if (len < cols) {
            g.len = len;
            g.chunks = ceil_div(cols, len);
        }
    }
    g.count = rows * g.chunks;
    const index_t teams_per_block = loss_threads / g.lanes;
    const index_t want = ceil_div(g.count, teams_per_block);
    g.blocks = static_cast<unsigned>(want < loss_max_blocks ? want : loss_max_blocks);
    const index_t row_want = ceil_div(rows, loss_threads);
    g.row_blocks = static_cast<unsigned>(row_want < 1 ? 1 : (row_want < loss_max_blocks ? row_want : loss_max_blocks));
    return g;
}

// ---- partial sums (written once, shared by the kernels and the host-side checks) ---------------

// Valid tokens and non-empty rows of a block's rows.
struct count_acc {
    double tokens = 0, nonempty = 0;
    POSTTRAIN_HD void merge(const count_acc& o) noexcept {
        tokens += o.tokens;
        nonempty += o.nonempty;
    }
};

// The loss and metric sums of a set of tokens (loss_result's fields before the final combination).
struct loss_acc {
    double loss = 0, kl_w = 0, ent_w = 0;  // weighted by the aggregation (row_factor)
    double low = 0, high = 0, high_pos = 0, dual = 0;
    double nlr = 0, raw = 0, abs = 0, ratio = 0, kl = 0, entropy = 0;
    double rmin = INFINITY, rmax = -INFINITY;
    POSTTRAIN_HD void merge(const loss_acc& o) noexcept {
        loss += o.loss, kl_w += o.kl_w, ent_w += o.ent_w;
        low += o.low, high += o.high, high_pos += o.high_pos, dual += o.dual;
        nlr += o.nlr, raw += o.raw, abs += o.abs, ratio += o.ratio, kl += o.kl, entropy += o.entropy;
        rmin = o.rmin < rmin ? o.rmin : rmin;
        rmax = o.rmax > rmax ? o.rmax : rmax;
    }
};

// The per-row clip metrics (min/max of the rows' clip fractions, rows with a clipped token).
struct seq_acc {
    double low_min = INFINITY, high_max = -INFINITY, rows_low = 0, rows_high = 0;
    // A row with n valid tokens of which `low` / `high` (mask-weighted) are clipped (summarize()).
    POSTTRAIN_HD void add_row(double low, double high, double n) noexcept {
        if (n > 0) {
            const double fl = low / n, fh = high / n;
            low_min = fl < low_min ? fl : low_min;
            high_max = fh > high_max ? fh : high_max;
        }
        rows_low += low > 0 ? 1 : 0;
        rows_high += high > 0 ? 1 : 0;
    }
    POSTTRAIN_HD void merge(const seq_acc& o) noexcept {
        low_min = o.low_min < low_min ? o.low_min : low_min;
        high_max = o.high_max > high_max ? o.high_max : high_max;
        rows_low += o.rows_low;
        rows_high += o.rows_high;
    }
};

// The clipped sums of one chunk of a chunked row.
struct clip_pair {
    double low, high;
};

// ---- one token (policy_loss.hpp run(), pass 2, at ratio_level::token with keep = 1, rho = w_is) ----

struct token_eval {
    double value;   // the policy term of the token, before the mask and the aggregation weight
    double dlp;     // d value / d log_prob
    double kv;      // the KL estimate (times the ratio when importance weighted), before kl_coef
    double kl_dlp;  // d kv / d log_prob
    double ratio;   // the objective's ratio
    double w;       // the log-ratio as the objective uses it (clamped)
    bool low, high, dual;
};

POSTTRAIN_HD inline token_eval eval_token(double x, double y, double a, bool has_ref, double ref, bool has_isw,
                                          double isw, const options& o) noexcept {
    // The log-ratio and whether its clamp passes the gradient.
    const double c = o.log_ratio_clamp;
    const double lr = x - y;
    double pass = 1, w = lr;
    if (c > 0 && (lr > c || lr < -c)) {
        pass = 0;
        w = lr > c ? c : -c;
    }
    const objective_eval t = token_objective(o, x, y, a, w);
    // The detached multiplier: keep = 1 and rho = the importance weight here.
    const double f = has_isw ? isw : 1.0;
    token_eval e{t.value * f, (t.dlp + t.dw * pass) * f, 0, 0, t.ratio, w, t.low, t.high, t.dual};
    // KL to the reference (not multiplied by the importance weight).
    if (has_ref) {
        const kl_eval k = kl_term(o, x, ref, w);
        e.kv = k.value, e.kl_dlp = pass != 0 ? k.total : k.dlp;
    }
    return e;
}

// The gradient of a valid token: grad_scale * m * (wrow * d policy + wrow * kl_coef * d KL), as the
// host's general path writes it (the KL term aggregates like the policy term for these objectives).
POSTTRAIN_HD inline double token_grad(const token_eval& e, double m, double wrow, const options& o) noexcept {
    const double kl_scale = wrow * o.kl_coef;
    return o.grad_scale * m * (wrow * e.dlp + kl_scale * e.kl_dlp);
}

// One thread's sums over one segment: the row factor multiplies them once, as on the host.
struct seg_sums {
    double loss = 0, kl = 0, ent = 0, low = 0, high = 0;
};

// Adds a valid token (mask weight m; h its entropy, 0 without entropies) to the sums.
POSTTRAIN_HD inline void add_token(loss_acc& acc, seg_sums& seg, const token_eval& e, double m, double x, double y,
                                   double a, double h) noexcept {
    seg.loss += e.value * m;
    seg.kl += e.kv * m;
    seg.low += e.low ? m : 0.0;
    seg.high += e.high ? m : 0.0;
    seg.ent += h * m;
    acc.high_pos += e.high && a > 0 ? m : 0.0;
    acc.dual += e.dual ? m : 0.0;
    acc.nlr += -e.w * m;
    acc.raw += (y - x) * m;
    acc.abs += ::fabs(x - y) * m;
    acc.ratio += e.ratio * m;
    acc.rmin = e.ratio < acc.rmin ? e.ratio : acc.rmin;
    acc.rmax = e.ratio > acc.rmax ? e.ratio : acc.rmax;
}

// Adds a finished segment of a row whose tokens weigh wrow in the aggregation.
POSTTRAIN_HD inline void add_segment(loss_acc& acc, const seg_sums& seg, double wrow, bool entropy_token_mean) noexcept {
    acc.loss += seg.loss * wrow;
    acc.kl_w += seg.kl * wrow;
    acc.kl += seg.kl;
    acc.low += seg.low;
    acc.high += seg.high;
    acc.ent_w += seg.ent * (entropy_token_mean ? 1.0 : wrow);
    acc.entropy += seg.ent;
}

// The loss_result from the batch's sums, as detail::summarize() combines them.
POSTTRAIN_HD inline loss_result finish_result(const loss_acc& a, const seq_acc& q, const aggregation_plan& plan,
                                              const options& o, index_t rows, bool has_ent) noexcept {
    loss_result res;
    res.aggregation = plan.totals;
    res.policy_loss = a.loss;
    res.kl_loss = a.kl_w;
    metric_sums& s = res.sums;
    s.tokens = plan.totals.tokens;
    s.clipped_low = a.low;
    s.clipped_high = a.high;
    s.clipped_high_positive = a.high_pos;
    s.dual_clipped = a.dual;
    s.neg_log_ratio = a.nlr;
    s.neg_log_ratio_raw = a.raw;
    s.abs_log_ratio = a.abs;
    s.ratio = a.ratio;
    s.kl = a.kl;
    s.entropy = a.entropy;
    s.kept = s.tokens;  // keep = 1 on every valid token
    if (has_ent)
        res.entropy_loss = o.entropy_mode == entropy_aggregation::token_mean
                               ? (s.kept > 0 ? a.ent_w / s.kept * o.aggregation.multiplier : 0.0)
                               : a.ent_w;
    res.loss = res.policy_loss + o.kl_coef * res.kl_loss - o.entropy_coef * res.entropy_loss;
    res.ratio_min = rows > 0 && s.tokens > 0 ? a.rmin : 0.0;
    res.ratio_max = rows > 0 && s.tokens > 0 ? a.rmax : 0.0;
    res.seq_low_clip_min = q.low_min < INFINITY ? q.low_min : NAN;
    res.seq_high_clip_max = q.high_max > -INFINITY ? q.high_max : NAN;
    res.sequences_clipped_low = q.rows_low;
    res.sequences_clipped_high = q.rows_high;
    return res;
}

// ---- device helpers --------------------------------------------------------------------------------

struct merge_op {
    template <class A>
    __device__ A operator()(A x, const A& y) const {
        x.merge(y);
        return x;
    }
};

// A block-wide merge of every thread's partial (a fixed cub tree); the result is valid in thread 0.
// Each kernel merges a given type once, so the shared storage is not reused.
template <class Acc>
__device__ Acc block_merge(const Acc& x) {
    using reduce_t = cub::BlockReduce<Acc, loss_threads>;
    __shared__ typename reduce_t::TempStorage tmp;
    return reduce_t(tmp).Reduce(x, merge_op{});
}

// partials[0..count) merged in a fixed order (thread j folds j, j + 256, ..., then the block tree).
template <class Acc>
__device__ Acc fold_partials(const Acc* partials, index_t count) {
    Acc a;
    for (index_t j = threadIdx.x; j < count; j += loss_threads) a.merge(partials[j]);
    return block_merge(a);
}

// Sum over the team (lanes threads of one warp, aligned): a xor butterfly leaves the same sum in
// every lane. Every lane of the warp must call it (teams without a segment pass zeros).
__device__ inline double team_sum(double v, int lanes) {
    for (int k = lanes / 2; k >= 1; k /= 2) v += __shfl_xor_sync(0xffffffffu, v, k);
    return v;
}

// This thread's place among the teams: its team walks segments first, first + step, ... (the
// rounds are per warp, so that the lanes of a warp run the same number of them).
struct team_pos {
    int lanes, lane, team;
    index_t first, step;
};

__device__ inline team_pos team_of(const seg_geometry& g) {
    team_pos p;
    p.lanes = g.lanes;
    p.lane = static_cast<int>(threadIdx.x) & (g.lanes - 1);
    p.team = static_cast<int>(threadIdx.x % 32) / g.lanes;
    const index_t per_warp = 32 / g.lanes;
    const index_t warp = (index_t(blockIdx.x) * loss_threads + threadIdx.x) / 32;
    p.first = warp * per_warp;
    p.step = index_t(gridDim.x) * loss_warps * per_warp;
    return p;
}

// Row and token range of segment s (an empty range for a team without a segment).
struct seg_span {
    index_t row = 0, begin = 0, end = 0;
};

__device__ inline seg_span span_of(const seg_geometry& g, index_t s, bool has) {
    seg_span sp;
    if (!has) return sp;
    sp.row = s / g.chunks;
    sp.begin = (s - sp.row * g.chunks) * g.len;
    sp.end = sp.begin + g.len < g.cols ? sp.begin + g.len : g.cols;
    return sp;
}

// ---- pass 1: counts -----------------------------------------------------------------------------

// Rows in one segment: n[row] and the block's partial; chunked rows: the chunk sums.
template <class M>
__global__ void __launch_bounds__(loss_threads)
    count_kernel(const device_view<const M, 2> mask, const seg_geometry g, double* n, double* chunk_n, count_acc* partials) {
    const team_pos p = team_of(g);
    count_acc local;
    for (index_t base = p.first; base < g.count; base += p.step) {
        const index_t s = base + p.team;
        const bool has = s < g.count;
        const seg_span sp = span_of(g, s, has);
        const M* row = mask.data() + sp.row * mask.stride(0);
        const index_t ms = mask.stride(1);
        double sum = 0;
        for (index_t t0 = sp.begin + p.lane; t0 < sp.end; t0 += index_t(p.lanes) * loss_unroll) {
            double v[loss_unroll];
#pragma unroll
            for (int u = 0; u < loss_unroll; ++u) {
                const index_t t = t0 + index_t(u) * p.lanes;
                v[u] = t < sp.end ? mask_value(row[t * ms]) : 0.0;
            }
#pragma unroll
            for (int u = 0; u < loss_unroll; ++u) sum += v[u];
        }
        sum = team_sum(sum, p.lanes);
        if (has && p.lane == 0) {
            if (g.chunks == 1) {
                n[sp.row] = sum;
                local.tokens += sum;
                local.nonempty += sum != 0 ? 1.0 : 0.0;
            } else {
                chunk_n[s] = sum;
            }
        }
    }
    if (g.chunks != 1) return;  // uniform over the grid
    const count_acc total = block_merge(local);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Chunked rows: n[row] from its chunks in order, and the block's partial.
template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    row_count_kernel(const seg_geometry g, const double* chunk_n, double* n, count_acc* partials) {
    count_acc local;
    for (index_t i = index_t(blockIdx.x) * loss_threads + threadIdx.x; i < g.rows; i += index_t(gridDim.x) * loss_threads) {
        double sum = 0;
        for (index_t c = 0; c < g.chunks; ++c) sum += chunk_n[i * g.chunks + c];
        n[i] = sum;
        local.tokens += sum;
        local.nonempty += sum != 0 ? 1.0 : 0.0;
    }
    const count_acc total = block_merge(local);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// ---- pass 2: the aggregation plan ----------------------------------------------------------------

template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    plan_kernel(const count_acc* partials, index_t count, index_t rows, index_t cols, const aggregation_options o,
                aggregation_plan* plan) {
    const count_acc c = fold_partials(partials, count);
    if (threadIdx.x == 0) *plan = resolve_plan(c.tokens, c.nonempty, rows, cols, o);
}

// ---- pass 3: the token loop ---------------------------------------------------------------------

template <class T, class M>
struct loss_args {
    device_view<const T, 2> lp, old, adv, ref, isw, ent;  // ref, isw, ent: empty when absent
    device_view<const M, 2> mask;
    device_view<T, 2> grad;  // empty: not written
    bool has_ref = false, has_isw = false, has_ent = false;  // the extras given (an empty batch has no data)
    options o;
    seg_geometry g;
    const double* n = nullptr;
    const aggregation_plan* plan = nullptr;
    loss_acc* partials = nullptr;
    seq_acc* seq_partials = nullptr;  // written here when rows are not chunked
    clip_pair* chunk_clip = nullptr;  // chunked rows: per-chunk clipped sums
    std::uint32_t* status = nullptr;
};

// One token's inputs as loaded (zeros, and mask 0, beyond the segment).
template <class T, class M>
struct raw_token {
    T x, y, a, r, w, h;
    M m;
};

template <class T, class M>
__device__ inline raw_token<T, M> load_token(const loss_args<T, M>& a, index_t i, index_t t, index_t end) {
    raw_token<T, M> k{T{}, T{}, T{}, T{}, T{}, T{}, M{}};
    if (t < end) {
        k.m = a.mask(i, t);
        k.x = a.lp(i, t);
        k.y = a.old(i, t);
        k.a = a.adv(i, t);
        if (a.has_ref) k.r = a.ref(i, t);
        if (a.has_isw) k.w = a.isw(i, t);
        if (a.has_ent) k.h = a.ent(i, t);
    }
    return k;
}

template <class T, class M>
__global__ void __launch_bounds__(loss_threads, loss_min_blocks) loss_kernel(const loss_args<T, M> a) {
    const seg_geometry& g = a.g;
    const team_pos p = team_of(g);
    const aggregation_plan plan = *a.plan;
    const bool has_grad = a.grad.data() != nullptr;
    const bool ent_token_mean = a.o.entropy_mode == entropy_aggregation::token_mean;
    loss_acc acc;
    seq_acc rows;
    bool bad = false;
    for (index_t base = p.first; base < g.count; base += p.step) {
        const index_t s = base + p.team;
        const bool has = s < g.count;
        const seg_span sp = span_of(g, s, has);
        const index_t i = sp.row;
        const double n = has ? a.n[i] : 0.0;
        const double wrow = plan.row_factor(n);
        seg_sums seg;
        // The team's lanes step through the segment L tokens at a time; each lane keeps the loads of
        // its next loss_prefetch tokens in flight while it evaluates the current one.
        index_t t = sp.begin + p.lane;
        raw_token<T, M> q[loss_prefetch];
#pragma unroll
        for (int j = 0; j < loss_prefetch; ++j) q[j] = load_token(a, i, t + index_t(j) * p.lanes, sp.end);
#pragma unroll 1  // one evaluation per iteration (see loss_prefetch)
        for (; t < sp.end; t += p.lanes) {
            const raw_token<T, M> k = q[0];
#pragma unroll
            for (int j = 0; j + 1 < loss_prefetch; ++j) q[j] = q[j + 1];
            q[loss_prefetch - 1] = load_token(a, i, t + index_t(loss_prefetch) * p.lanes, sp.end);
            // A bool mask weighs valid tokens by exactly 1: the products by m fold away.
            const double m = std::is_same_v<M, bool> ? 1.0 : mask_value(k.m);
            double g_out = 0;
            if (mask_value(k.m) != 0) {
                const double x = to_double(k.x), y = to_double(k.y), av = to_double(k.a);
                bad |= !(numeric::is_finite(x) && numeric::is_finite(y) && numeric::is_finite(av));
                const token_eval e = eval_token(x, y, av, a.has_ref, to_double(k.r), a.has_isw, to_double(k.w), a.o);
                g_out = token_grad(e, m, wrow, a.o);
                add_token(acc, seg, e, m, x, y, av, to_double(k.h));
            }
            if (has_grad) a.grad(i, t) = from_double<T>(g_out);
        }
        add_segment(acc, seg, wrow, ent_token_mean);
        // The row's clip sums for the per-row metrics.
        const double low = team_sum(seg.low, p.lanes), high = team_sum(seg.high, p.lanes);
        if (has && p.lane == 0) {
            if (g.chunks == 1) rows.add_row(low, high, n);
            else a.chunk_clip[s] = clip_pair{low, high};
        }
    }
    const loss_acc total = block_merge(acc);
    if (threadIdx.x == 0) a.partials[blockIdx.x] = total;
    if (g.chunks == 1) {  // uniform over the grid
        const seq_acc seq = block_merge(rows);
        if (threadIdx.x == 0) a.seq_partials[blockIdx.x] = seq;
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) posttrain::detail::report_status(a.status, status_nonfinite_input);
}

// Chunked rows: each row's clip sums from its chunks in order, then the per-row metrics.
template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    row_clip_kernel(const seg_geometry g, const clip_pair* chunk_clip, const double* n, seq_acc* partials) {
    seq_acc local;
    for (index_t i = index_t(blockIdx.x) * loss_threads + threadIdx.x; i < g.rows; i += index_t(gridDim.x) * loss_threads) {
        double low = 0, high = 0;
        for (index_t c = 0; c < g.chunks; ++c) {
            low += chunk_clip[i * g.chunks + c].low;
            high += chunk_clip[i * g.chunks + c].high;
        }
        local.add_row(low, high, n[i]);
    }
    const seq_acc total = block_merge(local);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// ---- pass 4: the result ------------------------------------------------------------------------

template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    finalize_kernel(const loss_acc* partials, index_t count, const seq_acc* seq_partials, index_t seq_count,
                    const aggregation_plan* plan, const options o, index_t rows, bool has_ent, loss_result* out) {
    const loss_acc a = fold_partials(partials, count);
    const seq_acc q = fold_partials(seq_partials, seq_count);
    if (threadIdx.x == 0) *out = finish_result(a, q, *plan, o, rows, has_ent);
}

// ---- host side ---------------------------------------------------------------------------------

// Where each piece of scratch lives (byte offsets, 256-aligned).
struct loss_scratch_layout {
    std::size_t n = 0, chunk_n = 0, counts = 0, plan = 0, partials = 0, chunk_clip = 0, seq_partials = 0, result = 0;
    std::size_t total = 0;
};

inline loss_scratch_layout loss_scratch(const seg_geometry& g) {
    loss_scratch_layout l;
    posttrain::detail::scratch_cursor c;
    const bool chunked = g.chunks > 1;
    const std::size_t count_blocks = chunked ? g.row_blocks : g.blocks;
    const std::size_t seq_blocks = chunked ? g.row_blocks : g.blocks;
    l.n = c.take(sizeof(double) * static_cast<std::size_t>(g.rows));
    l.chunk_n = c.take(chunked ? sizeof(double) * static_cast<std::size_t>(g.count) : 0);
    l.counts = c.take(sizeof(count_acc) * count_blocks);
    l.plan = c.take(sizeof(aggregation_plan));
    l.partials = c.take(sizeof(loss_acc) * g.blocks);
    l.chunk_clip = c.take(chunked ? sizeof(clip_pair) * static_cast<std::size_t>(g.count) : 0);
    l.seq_partials = c.take(sizeof(seq_acc) * seq_blocks);
    l.result = c.take(sizeof(loss_result));
    l.total = c.end;
    return l;
}

inline const char* objective_name(objective o) {
    switch (o) {
        case objective::ppo_clip: return "ppo_clip";
        case objective::cispo: return "cispo";
        case objective::sapo: return "sapo";
        case objective::gmpo: return "gmpo";
        case objective::policy_gradient: return "policy_gradient";
        case objective::dro: return "dro";
        case objective::clip_cov: return "clip_cov";
        case objective::kl_cov: return "kl_cov";
        case objective::dppo_tv: return "dppo_tv";
        case objective::dppo_kl: return "dppo_kl";
        case objective::vespo: return "vespo";
        case objective::topr: return "topr";
    }
    return "unknown";
}

// What the CUDA path does not implement (after check_options has accepted the options).
inline void check_cuda_options(const options& o, const char* fn) {
    const bool token_local = o.loss == objective::ppo_clip || o.loss == objective::cispo || o.loss == objective::sapo ||
                             o.loss == objective::policy_gradient || o.loss == objective::dro ||
                             o.loss == objective::dppo_tv || o.loss == objective::dppo_kl || o.loss == objective::topr;
    require(token_local, {fn, "options.loss"},
            std::string("objective ") + objective_name(o.loss) +
                " is not supported on exec::cuda (supported: ppo_clip, cispo, sapo, policy_gradient, dro, dppo_tv, "
                "dppo_kl, topr); use a host policy");
    require(o.level == ratio_level::token, {fn, "options.level"},
            "sequence-level ratios are not supported on exec::cuda (ratio_level::token only); use a host policy");
    require(o.mismatch.mode == correction::none, {fn, "options.mismatch"},
            "mismatch corrections are not supported on exec::cuda (pass precomputed weights as extras.is_weights)");
    require(!(o.off_policy_threshold < INFINITY), {fn, "options.off_policy_threshold"},
            "the off-policy sequence mask is not supported on exec::cuda (off_policy_threshold must be inf)");
    require(o.top_entropy_quantile == 1, {fn, "options.top_entropy_quantile"},
            "the top-entropy mask is not supported on exec::cuda (top_entropy_quantile must be 1)");
}

// The device result (written by the last kernel) is an output too: apart from every input and output
// of the call, checked before anything is allocated or launched (over a gradient it would overwrite
// it; over an input, corrupt the caller's data and a captured graph's next replay). d_result null: none.
template <class Result, class V>
void check_result_apart(const Result* d_result, const V& v, const char* fn, const char* name) {
    require(d_result == nullptr ||
                !views_overlap(v, static_cast<const void*>(d_result), static_cast<const void*>(d_result + 1)),
            {fn, "result"}, std::string("the output overlaps '") + name + "'; pass a separate buffer");
}

// Runs the passes for one dtype T and mask type M. d_result: the loss_result in device memory (null:
// none wanted); h_result: also copy it to the host and synchronize the stream.
template <class T, class M>
void launch_loss(const exec::cuda_policy& pol, loss_args<T, M> a, loss_result* d_result, loss_result* h_result,
                 const char* fn) {
    const seg_geometry g = make_geometry(a.lp.extent(0), a.lp.extent(1));
    const loss_scratch_layout l = loss_scratch(g);
    posttrain::detail::cuda_scratch scratch(pol, l.total, {fn, "policy"});
    const bool chunked = g.chunks > 1;
    double* n = scratch.as<double>(l.n);
    double* chunk_n = scratch.as<double>(l.chunk_n);
    count_acc* counts = scratch.as<count_acc>(l.counts);
    aggregation_plan* plan = scratch.as<aggregation_plan>(l.plan);
    a.g = g;
    a.n = n;
    a.plan = plan;
    a.partials = scratch.as<loss_acc>(l.partials);
    a.chunk_clip = scratch.as<clip_pair>(l.chunk_clip);
    a.seq_partials = scratch.as<seq_acc>(l.seq_partials);
    a.status = pol.status;
    const cudaStream_t st = pol.stream;
    if (g.blocks > 0) {
        count_kernel<M><<<g.blocks, loss_threads, 0, st>>>(a.mask, g, n, chunk_n, counts);
        posttrain::detail::check_launch(fn);
        if (chunked) {
            row_count_kernel<<<g.row_blocks, loss_threads, 0, st>>>(g, chunk_n, n, counts);
            posttrain::detail::check_launch(fn);
        }
    }
    const index_t count_parts = g.blocks == 0 ? 0 : (chunked ? g.row_blocks : g.blocks);
    plan_kernel<<<1, loss_threads, 0, st>>>(counts, count_parts, g.rows, g.cols, a.o.aggregation, plan);
    posttrain::detail::check_launch(fn);
    if (g.blocks > 0) {
        loss_kernel<T, M><<<g.blocks, loss_threads, 0, st>>>(a);
        posttrain::detail::check_launch(fn);
        if (chunked) {
            row_clip_kernel<<<g.row_blocks, loss_threads, 0, st>>>(g, a.chunk_clip, n, a.seq_partials);
            posttrain::detail::check_launch(fn);
        }
    }
    if (d_result == nullptr && h_result == nullptr) return;
    loss_result* out = d_result != nullptr ? d_result : scratch.as<loss_result>(l.result);
    finalize_kernel<<<1, loss_threads, 0, st>>>(a.partials, g.blocks, a.seq_partials, count_parts, plan, a.o, g.rows,
                                                a.has_ent, out);
    posttrain::detail::check_launch(fn);
    if (h_result != nullptr) {
        POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_result, out, sizeof(loss_result), cudaMemcpyDeviceToHost, st));
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(st));
    }
}

// The public overloads' body: host-side checks, the dtype dispatch, the launch.
template <class LogProbs, class OldLogProbs, class Advantages, class Mask, class Grad>
void compute_cuda(const exec::cuda_policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs,
                  const Advantages& advantages, const Mask& mask, Grad&& grad_log_probs, const options& opts,
                  const device_extras& extra, loss_result* d_result, loss_result* h_result) {
    constexpr const char* fn = "posttrain::policy_loss::compute";
    check_options(opts, fn);
    check_cuda_options(opts, fn);
    std::visit(
        [&](auto lp, auto m) {
            using T = typename decltype(lp)::value_type;
            using M = typename decltype(m)::value_type;
            auto same = [&](const auto& x, const char* name) {
                auto v = device_floats<true, 2>(x, {fn, name});
                const auto* p = alternative<device_view<const T, 2>>(v);
                require(p != nullptr, {fn, name}, "must have the dtype of log_probs");
                check_same_shape(*p, lp, {fn, name}, "log_probs");
                return *p;
            };
            auto optional = [&](const optional_device_input& in, const char* name) {
                const auto v = in.as<T>({fn, name});
                if (v.data() != nullptr) check_same_shape(v, lp, {fn, name}, "log_probs");
                return v;
            };
            loss_args<T, M> a;
            a.lp = lp;
            a.old = same(old_log_probs, "old_log_probs");
            a.adv = same(advantages, "advantages");
            check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            a.mask = m;
            a.ref = optional(extra.ref_log_probs, "extras.ref_log_probs");
            a.isw = optional(extra.is_weights, "extras.is_weights");
            a.ent = optional(extra.entropies, "extras.entropies");
            a.has_ref = extra.ref_log_probs.present();
            a.has_isw = extra.is_weights.present();
            a.has_ent = extra.entropies.present();
            a.o = opts;
            require(opts.kl_coef == 0 || a.has_ref, {fn, "extras.ref_log_probs"}, "is required when kl_coef > 0");
            require(opts.entropy_coef == 0 || a.has_ent, {fn, "extras.entropies"}, "are required by entropy_coef > 0");
            if constexpr (!std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                auto gv = device_floats<false, 2>(grad_log_probs, {fn, "grad_log_probs"});
                auto* g = alternative<device_view<T, 2>>(gv);
                require(g != nullptr, {fn, "grad_log_probs"}, "must have the dtype of log_probs");
                check_same_shape(*g, lp, {fn, "grad_log_probs"}, "log_probs");
                check_no_alias(*g, lp, {fn, "grad_log_probs"}, "log_probs");
                check_no_alias(*g, a.old, {fn, "grad_log_probs"}, "old_log_probs");
                check_no_alias(*g, a.adv, {fn, "grad_log_probs"}, "advantages");
                check_no_alias(*g, m, {fn, "grad_log_probs"}, "mask");
                check_no_alias(*g, a.ref, {fn, "grad_log_probs"}, "extras.ref_log_probs");
                check_no_alias(*g, a.isw, {fn, "grad_log_probs"}, "extras.is_weights");
                check_no_alias(*g, a.ent, {fn, "grad_log_probs"}, "extras.entropies");
                a.grad = *g;
                check_result_apart(d_result, *g, fn, "grad_log_probs");
            }
            check_result_apart(d_result, lp, fn, "log_probs");
            check_result_apart(d_result, a.old, fn, "old_log_probs");
            check_result_apart(d_result, a.adv, fn, "advantages");
            check_result_apart(d_result, m, fn, "mask");
            check_result_apart(d_result, a.ref, fn, "extras.ref_log_probs");
            check_result_apart(d_result, a.isw, fn, "extras.is_weights");
            check_result_apart(d_result, a.ent, fn, "extras.entropies");
            posttrain::detail::check_policy_apart(
                policy, fn, std::pair{lp, "log_probs"}, std::pair{a.old, "old_log_probs"}, std::pair{a.adv, "advantages"},
                std::pair{m, "mask"}, std::pair{a.ref, "extras.ref_log_probs"}, std::pair{a.isw, "extras.is_weights"},
                std::pair{a.ent, "extras.entropies"}, std::pair{a.grad, "grad_log_probs"},
                std::pair{device_view<const loss_result, 1>(d_result, d_result != nullptr ? 1 : 0), "result"});
            launch_loss(policy, a, d_result, h_result, fn);
        },
        device_floats<true, 2>(log_probs, {fn, "log_probs"}), posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

}  // namespace detail

// Bytes of scratch compute needs on the CUDA path for a [rows, cols] batch (any options).
inline std::size_t compute_workspace_bytes(index_t rows, index_t cols, const options& /*options*/ = {}) {
    return detail::loss_scratch(detail::make_geometry(rows, cols)).total;
}

// The fused loss on the device, asynchronous: writes grad_log_probs (a [B, T] device view of the
// dtype of log_probs, or posttrain::none) and, when `result` is not empty, the loss_result into
// device memory (copy it back whenever convenient; it is complete when the stream reaches it).
template <class LogProbs, class OldLogProbs, class Advantages, class Mask, class Grad>
void compute(const exec::cuda_policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs,
             const Advantages& advantages, const Mask& mask, Grad&& grad_log_probs, const options& opts,
             const device_extras& extra, device_view<loss_result, 0> result) {
    detail::compute_cuda(policy, log_probs, old_log_probs, advantages, mask, grad_log_probs, opts, extra, result.data(),
                         nullptr);
}

// The same, returning the loss_result on the host: synchronizes the policy's stream.
template <class LogProbs, class OldLogProbs, class Advantages, class Mask, class Grad>
loss_result compute(const exec::cuda_policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs,
                    const Advantages& advantages, const Mask& mask, Grad&& grad_log_probs, const options& opts = {},
                    const device_extras& extra = {}) {
    loss_result r;
    detail::compute_cuda(policy, log_probs, old_log_probs, advantages, mask, grad_log_probs, opts, extra, nullptr, &r);
    return r;
}

}  // namespace posttrain::policy_loss
