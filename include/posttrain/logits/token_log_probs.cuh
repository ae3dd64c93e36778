#pragma once
// The fused token-log-prob primitive on the GPU: the exec::cuda overloads of token_log_probs and
// token_log_probs_backward (token_log_probs.hpp), with the same arguments, options and semantics.
//
//     pt::logits::token_log_probs(pt::exec::cuda.on(stream).with_status(d_status), d_logits /* [B, T, V] */,
//                                 d_labels /* [B, T] */, d_log_probs, d_entropy, d_lse);
//     pt::logits::token_log_probs_backward(pt::exec::cuda.on(stream), d_logits, d_labels, d_grad_log_probs,
//                                          d_grad_entropy, d_grad_logits, d_lse, d_entropy);
//
// Inputs: logits [B, T, V] as device_view<const float|double|__half|__nv_bfloat16, 3> (any strides;
// fastest with a contiguous vocabulary) or a DLPack tensor on a CUDA device; labels [B, T] of any
// integer type (or posttrain::none: entropy and lse only); outputs and upstream gradients [B, T] float
// or double device views (or posttrain::none), each of its own dtype; grad_logits [B, T, V] with the
// dtype of the logits. Accumulation is in float for float/half/bfloat16 logits, in double for double.
//
// The kernels (one team of threads per position, see detail::tlp_* for the shapes):
//   forward: the team streams the position's logits once. Each thread takes 16-byte packs of the
//     vocabulary (8 bf16/half, 4 float, 2 double; the misaligned head and tail of the row element by
//     element), tlp_unroll packs per step as one chunk: the chunk's maximum, the running maximum m,
//     then sum exp(z - m) and sum exp(z - m) (z - m), folded into the thread's softmax_state
//     (softmax_math.hpp: the label's entry is left out of the sums and merged alone at the end). The
//     team merges its threads' states in a fixed tree (a warp xor butterfly, then the warps in order
//     through shared memory) and its first thread finishes: log p_y, H, lse.
//   backward: the same team walks the same row once more, p_v = exp((z_v - hi) - lo) with
//     lse = hi + lo kept unrounded (stat_record), and writes
//     dL/dz_v (grad_other / grad_label) in the logits' dtype, one read and one write per logit. The
//     statistics come from saved_lse/saved_entropy, or (none given) from a first forward pass that
//     leaves them in the workspace (two reads of the logits, no softmax stored).
//   A warp is the team when V <= tlp_warp_max_vocab (several positions per block), a whole block
//   otherwise: both keep 16-byte loads in flight from every thread, which is what a pass that reads
//   each logit once is bound by (memory bandwidth). A position is never split across blocks, so a
//   call with fewer large-vocabulary positions than resident blocks (~400 on an H100) leaves SMs
//   idle; training batches have thousands.
//
// Determinism: which thread reads which logit, the chunks and the merge tree depend only on V, the
// strides and the row's address modulo 16 bytes (the misaligned head), never on the grid: the bits
// are the same run to run (for the same placement of the logits) and on every GPU of one
// architecture running one binary; across architectures (or a JIT from PTX) __expf and nvcc's
// contraction choices are not specified bit for bit. --use_fast_math / -ffast-math may remove the
// -inf and NaN guards (status bits then not guaranteed). They differ from the host
// (double, its own chunking) by float rounding and the device's fast exp (__expf, relative error
// ~1e-6 for z - m down to -20); double logits use exp in double.
//
// What only the device sees goes to the policy's status word (.with_status(d_status)):
//   status_id_out_of_range  a label outside [0, V) that is not options.ignore_index (the host raises):
//                           that position's outputs, and its gradient row, are NaN; its logits are not read.
//   status_nonfinite_input  under nonfinite_logits = raise, a NaN/+inf logit at a scored position, or one
//                           whose logits are all -inf (the host raises); the position's outputs (and
//                           gradient row) are NaN, as under propagate. Under either option, in the
//                           backward, a non-finite upstream gradient at a scored position (the host
//                           raises whatever the option; the row is NaN, its logits not read) and,
//                           under raise, non-finite saved statistics.
// Ignored positions (label == options.ignore_index) get 0 in every output and a zero gradient row;
// their logits and upstream gradients are not read. options.chunk is validated (as on the host) but the
// device's chunking is its own.
//
// Scratch: none for the forward (token_log_probs_workspace_bytes = 0); the backward without saved
// statistics keeps one record of five accumulators per position
// (token_log_probs_backward_workspace_bytes), from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/logits/token_log_probs.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>

#include "../cuda/dtypes.cuh"
#include "../cuda/exec.cuh"
#include "softmax_math.hpp"
#include "token_log_probs.hpp"  // token_log_probs_options, check_options

namespace posttrain::logits {
namespace detail {

// ---- launch shapes (this kernel's own: cuda/tuning.cuh holds the group kernels') ------------------

// Threads per block: one team of 256, or eight warp teams.
inline constexpr int tlp_block_threads = 256;
// Largest vocabulary a warp team takes (2048 bf16 = 8 packs per lane): above it a block per position
// keeps enough loads in flight per position; below it a block team would idle most of its threads.
inline constexpr index_t tlp_warp_max_vocab = 2048;
// 16-byte packs each thread loads before using any (4 x 16 B in flight per thread: with 2048 threads
// per SM that is 128 KiB per SM, several times the bytes an H100 needs in flight to reach its
// bandwidth). The forward folds them as one chunk (one running-maximum update per 32 bf16 logits).
inline constexpr int tlp_unroll = 4;
// Resident blocks per SM the kernels are compiled for (__launch_bounds__). The forward: 3 x 256 threads
// (at most 85 registers; the 16-bit kernels use 72) keeps 48 KiB of loads in flight per SM; the double
// kernels need more registers (2). The backward: 2 (at most 128 registers): the bf16 kernel spills at
// 3, and 2 x 256 threads still keep 32 KiB of loads in flight per SM besides the stores.
template <class T>
inline constexpr int tlp_forward_min_blocks = sizeof(T) == 8 ? 2 : 3;
inline constexpr int tlp_backward_min_blocks = 2;
// Grid cap (positions beyond it are walked grid-stride); does not affect the bits.
inline constexpr index_t tlp_max_blocks = index_t{1} << 20;
// Largest vocabulary (element indices are 32-bit inside the kernels).
inline constexpr index_t tlp_max_vocab = index_t{1} << 30;

// ---- dtypes ----------------------------------------------------------------------------------------

template <class T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Elements widen to Acc and results round back to T once (cuda/dtypes.cuh).
using posttrain::detail::from_acc;
using posttrain::detail::to_acc;

template <class Acc>
__device__ inline Acc exp_fast(Acc x) {
    if constexpr (std::is_same_v<Acc, float>) return __expf(x);  // ex2.approx: exp(-inf) = 0, NaN stays NaN
    else return ::exp(x);
}

template <class Acc>
__device__ inline Acc acc_max(Acc x, Acc y) {  // the non-NaN one when one is NaN
    if constexpr (std::is_same_v<Acc, float>) return fmaxf(x, y);
    else return ::fmax(x, y);
}

template <class Acc>
__device__ inline Acc acc_fma(Acc x, Acc y, Acc z) {
    if constexpr (std::is_same_v<Acc, float>) return fmaf(x, y, z);
    else return ::fma(x, y, z);
}

template <class Acc>
__device__ inline Acc acc_expm1(Acc x) {
    if constexpr (std::is_same_v<Acc, float>) return expm1f(x);
    else return ::expm1(x);
}

template <class Acc>
__device__ inline Acc acc_lowest() {
    if constexpr (std::is_same_v<Acc, float>) return -FLT_MAX;
    else return -DBL_MAX;
}

// Elements per 16-byte pack (the vectorised path) or 1 (a strided vocabulary).
template <class T>
inline constexpr int pack_width = 16 / static_cast<int>(sizeof(T));

// What a thread holds of one step of the walk: a raw 16-byte pack (W > 1) or one element (W == 1).
// Packs stay raw in registers (16 per step for any dtype) and are widened element by element where
// they are used, so that the unrolled step costs 16 registers, not 32 floats.
template <class T, int W>
using raw_pack = std::conditional_t<W == 1, T, uint4>;

// The 16-byte pack at p (16-byte aligned); a streaming load (each logit is read once per pass: keep
// them from evicting the rest of L2).
__device__ inline uint4 load_raw(const void* p) { return __ldcs(static_cast<const uint4*>(p)); }

// Element i of a raw pack, widened (i is a compile-time constant after unrolling: no indexing).
template <class Acc, class T, int W>
__device__ inline Acc element(const raw_pack<T, W>& r, int i) {
    if constexpr (W == 1) {
        return to_acc<Acc>(r);
    } else {
        if constexpr (std::is_same_v<T, double>) {
            return i == 0 ? __hiloint2double(static_cast<int>(r.y), static_cast<int>(r.x))
                          : __hiloint2double(static_cast<int>(r.w), static_cast<int>(r.z));
        } else {
            const unsigned w = i < W / 4 ? r.x : i < 2 * W / 4 ? r.y : i < 3 * W / 4 ? r.z : r.w;
            if constexpr (std::is_same_v<T, float>) return __uint_as_float(w);
            else if constexpr (std::is_same_v<T, __nv_bfloat16>)
                return __uint_as_float(i % 2 ? (w & 0xffff0000u) : (w << 16));  // bf16 is the high half of a float
            else return __half2float(__ushort_as_half(static_cast<unsigned short>(i % 2 ? w >> 16 : w & 0xffffu)));
        }
    }
}

// A pack (or element) of -inf: what a thread holds past the end of the row.
template <class T, int W>
__device__ inline raw_pack<T, W> neg_inf_pack() {
    if constexpr (W == 1) {
        return from_acc<T>(-acc_inf<acc_of<T>>());
    } else {
        unsigned w;
        if constexpr (std::is_same_v<T, float>) w = 0xff800000u;
        else if constexpr (std::is_same_v<T, __nv_bfloat16>) w = 0xff80ff80u;
        else if constexpr (std::is_same_v<T, __half>) w = 0xfc00fc00u;
        if constexpr (std::is_same_v<T, double>) return make_uint4(0u, 0xfff00000u, 0u, 0xfff00000u);
        else return make_uint4(w, w, w, w);
    }
}

// Element `off` (a run-time index < W) of a raw pack set to -inf: the label's entry, left out of the sums.
template <class T, int W>
__device__ inline void set_neg_inf(raw_pack<T, W>& r, int off) {
    if constexpr (W == 1) {
        r = neg_inf_pack<T, 1>();
    } else {
        const raw_pack<T, W> n = neg_inf_pack<T, W>();
        if constexpr (sizeof(T) == 8) {  // two words
            if (off == 0) r.x = n.x, r.y = n.y;
            else r.z = n.z, r.w = n.w;
        } else {
            const int word = off / (W / 4);
            unsigned mask = 0xffffffffu;  // the bits of element off within its word
            if constexpr (sizeof(T) == 2) mask = off % 2 ? 0xffff0000u : 0x0000ffffu;
            if (word == 0) r.x = (r.x & ~mask) | (n.x & mask);
            if (word == 1) r.y = (r.y & ~mask) | (n.y & mask);
            if (word == 2) r.z = (r.z & ~mask) | (n.z & mask);
            if (word == 3) r.w = (r.w & ~mask) | (n.w & mask);
        }
    }
}

template <class T, class Acc, int W>
__device__ inline void store_pack(T* p, const Acc (&g)[W]) {
    static_assert(W * sizeof(T) == 16);
    unsigned w[4];
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int i = 0; i < 4; ++i) w[i] = __float_as_uint(g[i]);
    } else if constexpr (std::is_same_v<T, double>) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const long long b = __double_as_longlong(g[i]);
            w[2 * i] = static_cast<unsigned>(b);
            w[2 * i + 1] = static_cast<unsigned>(b >> 32);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if constexpr (std::is_same_v<T, __half>) {
                const __half2 h = __floats2half2_rn(g[2 * i], g[2 * i + 1]);
                __builtin_memcpy(&w[i], &h, 4);
            } else {
                const __nv_bfloat162 h = __floats2bfloat162_rn(g[2 * i], g[2 * i + 1]);
                __builtin_memcpy(&w[i], &h, 4);
            }
        }
    }
    __stcs(reinterpret_cast<uint4*>(p), make_uint4(w[0], w[1], w[2], w[3]));
}

// ---- [B, T] operands of any dtype, read or written one per position ---------------------------------
// Type-erased (a dtype tag instead of a template parameter) so that the kernels are instantiated once
// per logits dtype, not once per combination of label and output dtypes.

struct label_value {
    std::int64_t v = 0;
    bool huge = false;  // an unsigned label above INT64_MAX: out of range, never the ignore index
};

struct label_ref {
    const void* p = nullptr;  // null: no labels
    index_t s0 = 0, s1 = 0;
    int code = 0;  // 0 int64, 1 int32, 2 int16, 3 int8, 4 uint64, 5 uint32, 6 uint16, 7 uint8
    __device__ label_value load(index_t b, index_t t) const {
        const index_t k = b * s0 + t * s1;
        label_value r;
        switch (code) {
            case 0: r.v = static_cast<const std::int64_t*>(p)[k]; break;
            case 1: r.v = static_cast<const std::int32_t*>(p)[k]; break;
            case 2: r.v = static_cast<const std::int16_t*>(p)[k]; break;
            case 3: r.v = static_cast<const std::int8_t*>(p)[k]; break;
            case 4: {
                const std::uint64_t u = static_cast<const std::uint64_t*>(p)[k];
                r.huge = u > static_cast<std::uint64_t>(INT64_MAX);
                r.v = r.huge ? 0 : static_cast<std::int64_t>(u);
                break;
            }
            case 5: r.v = static_cast<const std::uint32_t*>(p)[k]; break;
            case 6: r.v = static_cast<const std::uint16_t*>(p)[k]; break;
            default: r.v = static_cast<const std::uint8_t*>(p)[k]; break;
        }
        return r;
    }
};

struct value_ref {  // a float or double [B, T] operand (p null: absent)
    void* p = nullptr;
    index_t s0 = 0, s1 = 0;
    bool dbl = false;
    __device__ double load(index_t b, index_t t) const {
        const index_t k = b * s0 + t * s1;
        return dbl ? static_cast<const double*>(p)[k] : static_cast<double>(static_cast<const float*>(p)[k]);
    }
    __device__ void store(index_t b, index_t t, double v) const {
        const index_t k = b * s0 + t * s1;
        if (dbl) static_cast<double*>(p)[k] = v;
        else static_cast<float*>(p)[k] = static_cast<float>(v);
    }
};

// What a position's label says: scored with label y (-1: no labels), ignored, or out of range.
struct position_label {
    int y = -1;
    bool ignored = false, bad = false;
};

__device__ inline position_label label_of(const label_ref& l, index_t b, index_t t, index_t V, std::int64_t ignore) {
    position_label r;
    if (l.p == nullptr) return r;
    const label_value x = l.load(b, t);
    // Compared by value: -100 is never the ignore index of an unsigned label (as on the host).
    r.ignored = !x.huge && x.v == ignore;
    r.bad = !r.ignored && (x.huge || x.v < 0 || x.v >= V);
    if (!r.ignored && !r.bad) r.y = static_cast<int>(x.v);
    return r;
}

// ---- the row walk shared by both passes -------------------------------------------------------------
// A row's logits z[v * vs], v in [0, V). W > 1 (vs == 1): the aligned body is walked in 16-byte packs,
// the head before it and the tail after it (< W elements each) element by element; W == 1: every
// element on its own (any stride).
struct row_geom {
    int head = 0, packs = 0, tail = 0;
};

template <int W, class T>
__device__ inline row_geom geom_of(const T* row, int V) {
    row_geom g;
    if constexpr (W == 1) {
        g.packs = V;
    } else {
        const int mis = static_cast<int>((reinterpret_cast<std::uintptr_t>(row) % 16) / sizeof(T));
        g.head = mis == 0 ? 0 : (W - mis < V ? W - mis : V);
        g.packs = (V - g.head) / W;
        g.tail = V - g.head - g.packs * W;
    }
    return g;
}

// Calls vis.edge(z, v, ok) for thread j's element of the head and of the tail (W > 1 only; z widened,
// -inf where ok is false), then vis.body(r, first, ok) for each step of tlp_unroll raw packs: pack u
// starts at element first[u], ok[u] says whether it exists (a missing one holds -inf). Every load of
// a step is issued before any is used. The assignment of elements to threads depends only on the
// geometry, which is what makes the passes deterministic.
template <class T, class Acc, int TT, int W, class Visitor>
__device__ inline void walk_row(const T* row, index_t vs, int V, int j, Visitor& vis) {
    const row_geom g = geom_of<W>(row, V);
    if constexpr (W > 1) {
        Acc z[2];
        const int v[2] = {j, g.head + g.packs * W + j};
        const bool ok[2] = {j < g.head, j < g.tail};
#pragma unroll
        for (int i = 0; i < 2; ++i) z[i] = ok[i] ? to_acc<Acc>(row[v[i]]) : -acc_inf<Acc>();
        vis.edge(z, v, ok);
    }
    for (int k0 = j; k0 < g.packs; k0 += TT * tlp_unroll) {
        raw_pack<T, W> r[tlp_unroll];
        int first[tlp_unroll];
        bool ok[tlp_unroll];
#pragma unroll
        for (int u = 0; u < tlp_unroll; ++u) {
            const int k = k0 + u * TT;
            ok[u] = k < g.packs;
            first[u] = g.head + k * W;
            if constexpr (W > 1) r[u] = ok[u] ? load_raw(row + first[u]) : neg_inf_pack<T, W>();
            else r[u] = ok[u] ? row[static_cast<index_t>(first[u]) * vs] : neg_inf_pack<T, 1>();
        }
        vis.body(r, first, ok);
    }
}

// ---- team reductions -------------------------------------------------------------------------------

template <class Acc>
__device__ inline softmax_state<Acc> shfl_state(const softmax_state<Acc>& s, int k) {
    softmax_state<Acc> o;
    o.m = __shfl_xor_sync(0xffffffffu, s.m, k);
    o.e_y = __shfl_xor_sync(0xffffffffu, s.e_y, k);
    o.rest = __shfl_xor_sync(0xffffffffu, s.rest, k);
    o.a = __shfl_xor_sync(0xffffffffu, s.a, k);
    return o;
}

// The merge of the states of `width` aligned lanes (a xor butterfly: a fixed tree).
template <class Acc>
__device__ inline softmax_state<Acc> warp_merge(softmax_state<Acc> s, int width) {
    for (int k = width / 2; k >= 1; k /= 2) s = merge(s, shfl_state(s, k));
    return s;
}

// Shared memory of a block team: one state per warp, as separate arrays (a __shared__ object may not
// have softmax_state's default member initializers).
template <class Acc>
struct team_smem {
    Acc m[tlp_block_threads / 32], e_y[tlp_block_threads / 32], rest[tlp_block_threads / 32], a[tlp_block_threads / 32];
};

// The team's merged state (valid in the team's thread 0) and the OR of `flag` over the team. Every
// thread of the team calls it; a block team also leaves with the block synchronised.
template <int TT, class Acc>
__device__ inline softmax_state<Acc> team_merge(softmax_state<Acc> s, bool& flag, team_smem<Acc>& sm) {
    s = warp_merge(s, 32);
    if constexpr (TT == 32) {
        flag = __any_sync(0xffffffffu, flag);
        return s;
    } else {
        constexpr int warps = TT / 32;
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        if (lane == 0) {
            sm.m[warp] = s.m;
            sm.e_y[warp] = s.e_y;
            sm.rest[warp] = s.rest;
            sm.a[warp] = s.a;
        }
        flag = __syncthreads_or(flag) != 0;
        if (warp == 0) {
            softmax_state<Acc> w;
            if (lane < warps) {
                w.m = sm.m[lane];
                w.e_y = sm.e_y[lane];
                w.rest = sm.rest[lane];
                w.a = sm.a[lane];
            }
            s = warp_merge(w, warps);
        }
        __syncthreads();  // the next position's writes wait for warp 0's reads
        return s;
    }
}

// The OR of flag over the team; also orders the team's earlier global writes before its later ones
// (the NaN refill of a bad row overwrites what other threads of the team wrote).
template <int TT>
__device__ inline bool team_any(bool flag) {
    if constexpr (TT == 32) {
        const bool r = __any_sync(0xffffffffu, flag);
        __syncwarp();
        return r;
    } else {
        return __syncthreads_or(flag) != 0;
    }
}

// ---- the forward ------------------------------------------------------------------------------------

// One position's statistics as the backward needs them (the workspace record). lse is kept as the
// pair hi + lo = m + log s, never rounded to one Acc: the backward forms log p_v = (z_v - hi) - lo, in
// which z_v - hi is exact near the maximum (Sterbenz) and lo is small, so log p_v has an absolute
// error of ~ulp(log p_v) at any logit offset; z_v - lse with lse rounded to float would carry
// up to half its ulp into every log p_v (relative gradient errors up to 3e-5 at logits ~1e3, 5e-4 at
// ~1e4).
template <class Acc>
struct stat_record {
    Acc hi, lo, entropy, log_p, one_minus_p;
};

template <class T>
struct forward_args {
    device_view<const T, 3> logits;
    label_ref labels;
    value_ref log_probs, entropy, lse;  // p null: not written
    stat_record<acc_of<T>>* stats = nullptr;  // the backward's records (null: none)
    std::int64_t ignore_index = -100;
    bool raise = true;  // nonfinite_logits == raise: report bad positions
    std::uint32_t* status = nullptr;
};

// Sources of a chunk for forward_visitor::chunk: n values read by index (a compile-time constant
// after unrolling).
template <class Acc>
struct edge_source {
    static constexpr int n = 2;
    const Acc* z;
    __device__ Acc operator[](int k) const { return z[k]; }
};
template <class T, class Acc, int U, int W>
struct pack_source {
    static constexpr int n = U * W;
    const raw_pack<T, W>* r;
    __device__ Acc operator[](int k) const { return element<Acc, T, W>(r[k / W], k % W); }
};

// One thread's part of the forward: its softmax state over the chunks it read, label left out.
template <class T, class Acc, int W>
struct forward_visitor {
    softmax_state<Acc> st;
    int y = -1;
    bool nan_seen = false;  // a NaN in a chunk whose other logits are all -inf (the sums do not see it)

    // Folds n logits into the state: their maximum, the running maximum m, then the two sums
    // relative to m (>= every logit here, so the old state rescales only when m grows). The values are
    // widened twice from the raw packs (cheaper than holding them widened).
    template <class Src>
    __device__ void chunk(const Src& z) {
        const Acc ninf = -acc_inf<Acc>();
        Acc cm = ninf;
#pragma unroll
        for (int k = 0; k < Src::n; ++k) cm = acc_max(cm, z[k]);  // drops NaN: the sums carry it
        const Acc m = acc_max(st.m, cm);
        if (m == ninf) {  // nothing but -inf (and NaN) so far: no state yet, exp(-inf - -inf) would be NaN
#pragma unroll
            for (int k = 0; k < Src::n; ++k) nan_seen |= z[k] != z[k];
            return;
        }
        const Acc lowest = acc_lowest<Acc>();
        Acc rest = 0, a = 0;
#pragma unroll
        for (int k = 0; k < Src::n; ++k) {
            const Acc d = z[k] - m;
            const Acc e = exp_fast(d);  // NaN for a NaN or +inf logit: rest carries it
            rest += e;
            a = acc_fma(e, acc_max(d, lowest), a);  // a -inf logit: 0 * lowest = 0, never 0 * -inf
        }
        st = merge(st, chunk_state(m, rest, a));
    }
    __device__ void edge(Acc (&z)[2], const int (&v)[2], const bool (&)[2]) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
            if (v[i] == y) z[i] = -acc_inf<Acc>();
        chunk(edge_source<Acc>{z});
    }
    template <int U>
    __device__ void body(raw_pack<T, W> (&r)[U], const int (&first)[U], const bool (&)[U]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int off = y - first[u];
            if (static_cast<unsigned>(off) < static_cast<unsigned>(W)) set_neg_inf<T, W>(r[u], off);  // rare
        }
        chunk(pack_source<T, Acc, U, W>{r});
    }
};

// One position's outputs and its backward record.
template <class T>
__device__ inline void write_forward(const forward_args<T>& a, index_t p, index_t b, index_t t,
                                     const softmax_outputs<acc_of<T>>& o) {
    if (a.log_probs.p != nullptr) a.log_probs.store(b, t, o.log_p);
    if (a.entropy.p != nullptr) a.entropy.store(b, t, o.entropy);
    // lse summed in double (once per position): a double lse output keeps m + log s unrounded, which
    // is what a backward from saved statistics needs at large logits (stat_record).
    if (a.lse.p != nullptr) a.lse.store(b, t, static_cast<double>(o.m) + static_cast<double>(o.log_s));
    if (a.stats != nullptr) a.stats[p] = stat_record<acc_of<T>>{o.m, o.log_s, o.entropy, o.log_p, o.one_minus_p};
}

// The outputs of a position that has none (NaN: bad label or bad logits; 0: ignored).
template <class Acc>
__device__ inline softmax_outputs<Acc> filled_outputs(Acc x) {
    softmax_outputs<Acc> o;
    o.log_p = o.lse = o.m = o.log_s = o.entropy = o.one_minus_p = x;
    return o;
}

template <class T, int TT, int W>
__global__ void __launch_bounds__(tlp_block_threads, tlp_forward_min_blocks<T>) forward_kernel(const forward_args<T> a) {
    using Acc = acc_of<T>;
    constexpr int teams = tlp_block_threads / TT;
    __shared__ team_smem<Acc> sm;
    const index_t B = a.logits.extent(0), T_ = a.logits.extent(1), P = B * T_;
    const int V = static_cast<int>(a.logits.extent(2));
    const index_t vs = a.logits.stride(2);
    const int j = static_cast<int>(threadIdx.x) % TT;
    std::uint32_t bits = 0;
    // Team-uniform loop: every thread of a team sees the same p, label and geometry.
    for (index_t p = index_t(blockIdx.x) * teams + threadIdx.x / TT; p < P; p += index_t(gridDim.x) * teams) {
        const index_t b = p / T_, t = p - b * T_;
        const position_label l = label_of(a.labels, b, t, V, a.ignore_index);
        if (l.ignored || l.bad) {
            if (j == 0) {
                const Acc x = l.bad ? Acc(NAN) : Acc(0);
                write_forward(a, p, b, t, filled_outputs<Acc>(x));
                if (l.bad) bits |= status_id_out_of_range;
            }
            continue;
        }
        const T* row = a.logits.data() + b * a.logits.stride(0) + t * a.logits.stride(1);
        // The label's logit, read once by the thread that finishes (issued before the walk, so that its
        // latency hides behind it); the walk leaves the label's entry out.
        const Acc zy = j == 0 && l.y >= 0 ? to_acc<Acc>(row[static_cast<index_t>(l.y) * vs]) : Acc(0);
        forward_visitor<T, Acc, W> vis;
        vis.y = l.y;
        walk_row<T, Acc, TT, W>(row, vs, V, j, vis);
        bool bad = vis.nan_seen;
        softmax_state<Acc> st = team_merge<TT>(vis.st, bad, sm);
        if (j == 0) {
            // A -inf label is an entry of probability 0 (not merged).
            if (l.y >= 0) {
                if (!(zy < acc_inf<Acc>())) bad = true;
                else if (zy > -acc_inf<Acc>()) st = merge(st, label_state(zy));
            }
            // NaN or +inf anywhere (the sums are NaN, or m is +inf), or nothing but -inf: no softmax.
            bad = bad || st.rest != st.rest || st.a != st.a || st.m == acc_inf<Acc>() || st.m == -acc_inf<Acc>();
            if (bad) write_forward(a, p, b, t, filled_outputs<Acc>(Acc(NAN)));
            else write_forward(a, p, b, t, finish(st, zy, l.y >= 0));
            if (bad && a.raise) bits |= status_nonfinite_input;
        }
    }
    posttrain::detail::report_status(a.status, bits);
}

// ---- the backward -----------------------------------------------------------------------------------

template <class T>
struct backward_args {
    device_view<const T, 3> logits;
    device_view<T, 3> grad;
    label_ref labels;
    value_ref grad_log_probs, grad_entropy;    // p null: 0
    value_ref saved_lse, saved_entropy;        // p null: the records below
    const stat_record<acc_of<T>>* stats = nullptr;
    std::int64_t ignore_index = -100;
    bool raise = true;
    std::uint32_t* status = nullptr;
};

// One thread's part of the backward: the gradient of each logit it reads, written where it was read.
template <class T, class Acc, int W>
struct backward_visitor {
    T* out = nullptr;
    index_t gs = 1;            // the gradient's vocabulary stride (W > 1: 1)
    Acc hi = 0, lo = 0;        // lse = hi + lo (stat_record): log p_v = (z_v - hi) - lo
    Acc entropy = 0, gl = 0, gh = 0;
    Acc log_p = 0, one_minus_p = 1;  // of the label (recomputed statistics)
    bool saved = false;        // the label's log p and 1 - p from (z_y - hi) - lo instead
    int y = -1;
    bool bad = false;          // a NaN or +inf logit
    bool any_finite = false;   // a logit > -inf (else the position has no softmax)

    __device__ Acc other(Acc z) {
        bad |= !(z < acc_inf<Acc>());
        any_finite |= z > -acc_inf<Acc>();
        return grad_other((z - hi) - lo, entropy, gl, gh);
    }
    __device__ Acc label(Acc z) const {
        const Acc lp = saved ? (z - hi) - lo : log_p;
        const Acc omp = saved ? -acc_expm1(lp) : one_minus_p;
        return grad_label(lp, omp, entropy, gl, gh);
    }
    __device__ void edge(Acc (&z)[2], const int (&v)[2], const bool (&ok)[2]) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
            if (ok[i]) {
                Acc g = other(z[i]);
                if (v[i] == y) g = label(z[i]);
                out[v[i]] = from_acc<T>(g);
            }
    }
    template <int U>
    __device__ void body(raw_pack<T, W> (&r)[U], const int (&first)[U], const bool (&ok)[U]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (!ok[u]) continue;
            Acc g[W];
#pragma unroll
            for (int i = 0; i < W; ++i) g[i] = other(element<Acc, T, W>(r[u], i));
            const int off = y - first[u];
            if (static_cast<unsigned>(off) < static_cast<unsigned>(W)) {  // rare
#pragma unroll
                for (int i = 0; i < W; ++i)
                    if (i == off) g[i] = label(element<Acc, T, W>(r[u], i));
            }
            if constexpr (W > 1) store_pack<T, Acc, W>(out + first[u], g);
            else out[static_cast<index_t>(first[u]) * gs] = from_acc<T>(g[0]);
        }
    }
};

// Thread j's share of a gradient row filled with x (ignored positions: 0; bad ones: NaN).
template <class T, int TT>
__device__ inline void fill_row(T* out, index_t gs, int V, int j, T x) {
    for (int v = j; v < V; v += TT) out[static_cast<index_t>(v) * gs] = x;
}

template <class T, int TT, int W>
__global__ void __launch_bounds__(tlp_block_threads, tlp_backward_min_blocks) backward_kernel(const backward_args<T> a) {
    using Acc = acc_of<T>;
    constexpr int teams = tlp_block_threads / TT;
    const index_t B = a.logits.extent(0), T_ = a.logits.extent(1), P = B * T_;
    const int V = static_cast<int>(a.logits.extent(2));
    const index_t vs = a.logits.stride(2), gs = a.grad.stride(2);
    const int j = static_cast<int>(threadIdx.x) % TT;
    const T nan = from_acc<T>(Acc(NAN));
    std::uint32_t bits = 0;
    for (index_t p = index_t(blockIdx.x) * teams + threadIdx.x / TT; p < P; p += index_t(gridDim.x) * teams) {
        const index_t b = p / T_, t = p - b * T_;
        T* out = a.grad.data() + b * a.grad.stride(0) + t * a.grad.stride(1);
        const position_label l = label_of(a.labels, b, t, V, a.ignore_index);
        if (l.ignored || l.bad) {
            fill_row<T, TT>(out, gs, V, j, l.bad ? nan : from_acc<T>(Acc(0)));
            if (l.bad && j == 0) bits |= status_id_out_of_range;
            continue;
        }
        const T* row = a.logits.data() + b * a.logits.stride(0) + t * a.logits.stride(1);
        backward_visitor<T, Acc, W> vis;
        vis.out = out;
        vis.gs = gs;
        vis.y = l.y;
        // Every thread reads the position's scalars itself (one broadcast load per warp).
        const double gl = a.grad_log_probs.p != nullptr ? a.grad_log_probs.load(b, t) : 0.0;
        const double gh = a.grad_entropy.p != nullptr ? a.grad_entropy.load(b, t) : 0.0;
        // A non-finite upstream (the host raises): the whole row is NaN whatever the logits, as for bad
        // logits, not a row of NaN and exact zeros (p_v == 0). Team-uniform: every thread read the same.
        if (!(::isfinite(gl) && ::isfinite(gh))) {
            fill_row<T, TT>(out, gs, V, j, nan);
            if (j == 0) bits |= status_nonfinite_input;
            continue;
        }
        bool stats_bad = false;
        vis.gl = static_cast<Acc>(gl);
        vis.gh = static_cast<Acc>(gh);
        if (a.stats != nullptr) {
            const stat_record<Acc> r = a.stats[p];
            vis.hi = r.hi;
            vis.lo = r.lo;
            vis.entropy = r.entropy;
            vis.log_p = r.log_p;
            vis.one_minus_p = r.one_minus_p;
            stats_bad = r.hi != r.hi;  // the forward pass found no softmax (and reported it)
        } else {
            vis.saved = true;
            // A double saved lse split into hi + lo (lo: what rounding it to Acc drops), so that it
            // enters at full precision; a float saved lse has lo = 0 and its rounding (|lse| * 6e-8 in
            // every log p_v) is in the caller's data.
            const double lse = a.saved_lse.load(b, t);
            vis.hi = static_cast<Acc>(lse);
            vis.lo = static_cast<Acc>(lse - static_cast<double>(vis.hi));
            stats_bad = !::isfinite(lse);
            if (a.grad_entropy.p != nullptr) {
                const double h = a.saved_entropy.load(b, t);
                vis.entropy = static_cast<Acc>(h);
                stats_bad |= !::isfinite(h);
            }
        }
        // Without an entropy upstream H does not enter (a NaN saved entropy must not make 0 * NaN).
        if (a.grad_entropy.p == nullptr) vis.entropy = 0;
        walk_row<T, Acc, TT, W>(row, vs, V, j, vis);
        // A position with a NaN/+inf logit or none above -inf has no softmax: its whole row is NaN (as on
        // the host), rewritten after the pass that found it (rare).
        const bool any_bad = team_any<TT>(vis.bad || (a.stats != nullptr && stats_bad));
        const bool any_finite = team_any<TT>(vis.any_finite);
        const bool row_bad = any_bad || !any_finite;
        if (row_bad) fill_row<T, TT>(out, gs, V, j, nan);
        if (j == 0) {
            if (row_bad && a.raise) bits |= status_nonfinite_input;
            if (a.stats == nullptr && stats_bad && a.raise) bits |= status_nonfinite_input;
        }
    }
    posttrain::detail::report_status(a.status, bits);
}

// ---- host side --------------------------------------------------------------------------------------

// The host path's shape and aliasing checks, on device views (the messages are the host's).
using posttrain::advantage::detail::check_no_alias;
using posttrain::advantage::detail::check_same_shape;

// A checked [B, T] operand: its byte range (for the aliasing checks) and its type-erased reference.
struct operand2 {
    const char* name = nullptr;
    device_view<const unsigned char, 1> bytes;  // empty: absent
    value_ref ref;
};

template <class E>
device_view<const unsigned char, 1> byte_range(device_view<E, 2> v) {
    if (v.size() == 0) return {};
    const index_t last = (v.extent(0) - 1) * v.stride(0) + (v.extent(1) - 1) * v.stride(1);
    return device_view<const unsigned char, 1>(reinterpret_cast<const unsigned char*>(v.data()),
                                               (last + 1) * static_cast<index_t>(sizeof(E)));
}

inline void check_leading(index_t e0, index_t e1, index_t B, index_t T, where w) {
    require(e0 == B && e1 == T, w,
            "shape must match the first two dimensions of 'logits': found [" + str(e0) + ", " + str(e1) + "], expected [" +
                str(B) + ", " + str(T) + "]");
}

// An optional float/double [B, T] device operand (Const: read; else written).
template <bool Const, class X>
operand2 device_operand(const X& x, index_t B, index_t T, const char* fn, const char* name) {
    operand2 o;
    o.name = name;
    if constexpr (!is_none_v<X>) {
        using ro = std::variant<device_view<const float, 2>, device_view<const double, 2>>;
        const auto as_ro = [](auto v) { return ro(v); };
        ro var;
        if constexpr (Const) var = std::visit(as_ro, posttrain::detail::floating_input<2, device_space>(x, {fn, name}));
        else var = std::visit(as_ro, posttrain::detail::floating_output<2, device_space>(x, {fn, name}));
        std::visit(
            [&](auto v) {
                using E = typename decltype(v)::value_type;
                check_leading(v.extent(0), v.extent(1), B, T, {fn, name});
                o.bytes = byte_range(v);
                o.ref.p = const_cast<E*>(v.data());
                o.ref.s0 = v.stride(0);
                o.ref.s1 = v.stride(1);
                o.ref.dbl = std::is_same_v<E, double>;
            },
            var);
    }
    return o;
}

// The labels (any integer type) or none.
template <class Labels>
std::pair<label_ref, device_view<const unsigned char, 1>> device_labels(const Labels& labels, index_t B, index_t T,
                                                                        const char* fn) {
    label_ref r;
    device_view<const unsigned char, 1> bytes;
    if constexpr (!is_none_v<Labels>) {
        using list = posttrain::detail::elem_list<std::int64_t, std::int32_t, std::int16_t, std::int8_t, std::uint64_t,
                                                  std::uint32_t, std::uint16_t, std::uint8_t>;
        std::visit(
            [&](auto v) {
                using E = typename decltype(v)::value_type;
                check_leading(v.extent(0), v.extent(1), B, T, {fn, "labels"});
                bytes = byte_range(v);
                r.p = v.data();
                r.s0 = v.stride(0);
                r.s1 = v.stride(1);
                constexpr int code = std::is_same_v<E, std::int64_t>    ? 0
                                     : std::is_same_v<E, std::int32_t>  ? 1
                                     : std::is_same_v<E, std::int16_t>  ? 2
                                     : std::is_same_v<E, std::int8_t>   ? 3
                                     : std::is_same_v<E, std::uint64_t> ? 4
                                     : std::is_same_v<E, std::uint32_t> ? 5
                                     : std::is_same_v<E, std::uint16_t> ? 6
                                                                        : 7;
                r.code = code;
            },
            posttrain::detail::dispatch_view<true, 2, device_space, list>::make(labels, {fn, "labels"}));
    }
    return {r, bytes};
}

inline void check_vocab(index_t V, const char* fn) {
    require(V <= tlp_max_vocab, {fn, "logits"},
            "a vocabulary of at most 2^30 entries is supported on exec::cuda, found " + str(V));
}

// Blocks for P positions in teams of TT threads.
inline unsigned team_blocks(index_t P, int TT) {
    const index_t teams = tlp_block_threads / TT;
    const index_t want = (P + teams - 1) / teams;
    return static_cast<unsigned>(want < tlp_max_blocks ? want : tlp_max_blocks);
}

// Whether the 16-byte pack path applies to every row of z (and of g, which must then share z's
// alignment phase, so that a pack of logits and its gradient are both aligned).
template <class T, class G>
bool packs_apply(device_view<const T, 3> z, const G* g_data, const index_t* g_strides) {
    if (z.stride(2) != 1 && z.extent(2) > 1) return false;
    if (g_data == nullptr) return true;
    if (g_strides[2] != 1 && z.extent(2) > 1) return false;
    const auto phase = [](std::uintptr_t x) { return x % 16; };
    if (phase(reinterpret_cast<std::uintptr_t>(z.data())) != phase(reinterpret_cast<std::uintptr_t>(g_data))) return false;
    for (int r = 0; r < 2; ++r)
        if (z.extent(r) > 1 && (z.stride(r) - g_strides[r]) * static_cast<index_t>(sizeof(T)) % 16 != 0) return false;
    return true;
}

template <class T>
void launch_forward(const exec::cuda_policy& pol, const forward_args<T>& a, const char* fn) {
    const index_t P = a.logits.extent(0) * a.logits.extent(1);
    if (P == 0) return;
    constexpr int W = pack_width<T>;
    const bool warp = a.logits.extent(2) <= tlp_warp_max_vocab;
    const bool packs = packs_apply<T, T>(a.logits, nullptr, nullptr);
    const unsigned blocks = team_blocks(P, warp ? 32 : tlp_block_threads);
    if (warp && packs) forward_kernel<T, 32, W><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else if (warp) forward_kernel<T, 32, 1><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else if (packs) forward_kernel<T, tlp_block_threads, W><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else forward_kernel<T, tlp_block_threads, 1><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    posttrain::detail::check_launch(fn);
}

template <class T>
void launch_backward(const exec::cuda_policy& pol, const backward_args<T>& a, const char* fn) {
    const index_t P = a.logits.extent(0) * a.logits.extent(1);
    if (P == 0) return;
    constexpr int W = pack_width<T>;
    const bool warp = a.logits.extent(2) <= tlp_warp_max_vocab;
    const index_t gst[3] = {a.grad.stride(0), a.grad.stride(1), a.grad.stride(2)};
    const bool packs = packs_apply<T, T>(a.logits, a.grad.data(), gst);
    const unsigned blocks = team_blocks(P, warp ? 32 : tlp_block_threads);
    if (warp && packs) backward_kernel<T, 32, W><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else if (warp) backward_kernel<T, 32, 1><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else if (packs) backward_kernel<T, tlp_block_threads, W><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    else backward_kernel<T, tlp_block_threads, 1><<<blocks, tlp_block_threads, 0, pol.stream>>>(a);
    posttrain::detail::check_launch(fn);
}

inline std::size_t backward_scratch_bytes(index_t B, index_t T, bool saved) {
    if (saved) return 0;
    return posttrain::detail::scratch_align(sizeof(stat_record<double>) * static_cast<std::size_t>(B * T));
}

}  // namespace detail

// Bytes of scratch token_log_probs needs on exec::cuda: none.
inline std::size_t token_log_probs_workspace_bytes(index_t /*batch*/, index_t /*time*/, index_t /*vocab*/) { return 0; }

// Bytes of scratch token_log_probs_backward needs on exec::cuda: none with saved statistics, one record
// per position (32 bytes) when they are recomputed.
inline std::size_t token_log_probs_backward_workspace_bytes(index_t batch, index_t time, index_t /*vocab*/,
                                                            bool saved_stats) {
    return detail::backward_scratch_bytes(batch, time, saved_stats);
}

// The forward on the device, asynchronous on the policy's stream (arguments as on the host). The
// outputs are float or double [B, T] device views, each of its own dtype, or posttrain::none.
namespace detail {
// The forward's entry under any public name (fn: the name its errors carry).
template <class Logits, class Labels, class LogProbs, class Entropy, class Lse>
void token_log_probs_cuda(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels, LogProbs&& log_probs,
                          Entropy&& entropy, Lse&& lse, const token_log_probs_options& options, const char* fn) {
    static_assert(!detail::is_none_v<Labels> || detail::is_none_v<LogProbs>,
                  "posttrain::logits::token_log_probs: log_probs must be posttrain::none when labels is posttrain::none");
    detail::check_options(options, fn);
    std::visit(
        [&](auto z) {
            using T = typename decltype(z)::value_type;
            const index_t B = z.extent(0), Tn = z.extent(1);
            detail::check_vocab(z.extent(2), fn);
            const auto [lab, lab_bytes] = detail::device_labels(labels, B, Tn, fn);
            const detail::operand2 lp = detail::device_operand<false>(log_probs, B, Tn, fn, "log_probs");
            const detail::operand2 h = detail::device_operand<false>(entropy, B, Tn, fn, "entropy");
            const detail::operand2 ls = detail::device_operand<false>(lse, B, Tn, fn, "lse");
            for (const detail::operand2* o : {&lp, &h, &ls}) {
                detail::check_no_alias(o->bytes, z, {fn, o->name}, "logits");
                detail::check_no_alias(o->bytes, lab_bytes, {fn, o->name}, "labels");
            }
            detail::check_no_alias(h.bytes, lp.bytes, {fn, "entropy"}, "log_probs");
            detail::check_no_alias(ls.bytes, lp.bytes, {fn, "lse"}, "log_probs");
            detail::check_no_alias(ls.bytes, h.bytes, {fn, "lse"}, "entropy");
            posttrain::detail::check_policy_apart(policy, fn, std::pair{z, "logits"}, std::pair{lab_bytes, "labels"},
                                                  std::pair{lp.bytes, "log_probs"}, std::pair{h.bytes, "entropy"},
                                                  std::pair{ls.bytes, "lse"});
            detail::forward_args<T> a;
            a.logits = z;
            a.labels = lab;
            a.log_probs = lp.ref;
            a.entropy = h.ref;
            a.lse = ls.ref;
            a.ignore_index = options.ignore_index;
            a.raise = options.nonfinite_logits == advantage::nonfinite::raise;
            a.status = policy.status;
            detail::launch_forward(policy, a, fn);
        },
        posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
}
}  // namespace detail

template <class Logits, class Labels, class LogProbs, class Entropy = const none_t&, class Lse = const none_t&>
void token_log_probs(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels, LogProbs&& log_probs,
                     Entropy&& entropy = none, Lse&& lse = none, const token_log_probs_options& options = {}) {
    detail::token_log_probs_cuda(policy, logits, labels, log_probs, entropy, lse, options, "posttrain::logits::token_log_probs");
}

// The backward on the device, asynchronous on the policy's stream (arguments as on the host):
// grad_logits [B, T, V] with the logits' dtype; grad_log_probs, grad_entropy, saved_lse, saved_entropy
// float or double [B, T] device views or posttrain::none (saved statistics: both or neither).
namespace detail {
// The backward's entry under any public name (fn: the name its errors carry).
template <class Logits, class Labels, class GradLogProbs, class GradEntropy, class GradLogits, class SavedLse,
          class SavedEntropy>
void token_log_probs_backward_cuda(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels,
                                   const GradLogProbs& grad_log_probs, const GradEntropy& grad_entropy,
                                   GradLogits&& grad_logits, const SavedLse& saved_lse, const SavedEntropy& saved_entropy,
                                   const token_log_probs_options& options, const char* fn) {
    static_assert(!detail::is_none_v<Labels> || detail::is_none_v<GradLogProbs>,
                  "posttrain::logits::token_log_probs_backward: grad_log_probs must be posttrain::none when labels is "
                  "posttrain::none");
    constexpr bool has_lse = !detail::is_none_v<SavedLse>, has_h = !detail::is_none_v<SavedEntropy>;
    posttrain::detail::require(has_lse == has_h, {fn, has_lse ? "saved_entropy" : "saved_lse"},
                               "saved_lse and saved_entropy are given together (or both posttrain::none)");
    detail::check_options(options, fn);
    std::visit(
        [&](auto z) {
            using T = typename decltype(z)::value_type;
            const index_t B = z.extent(0), Tn = z.extent(1), V = z.extent(2);
            detail::check_vocab(V, fn);
            auto gvar = posttrain::detail::device_floats<false, 3>(grad_logits, {fn, "grad_logits"});
            auto* g = posttrain::detail::alternative<device_view<T, 3>>(gvar);
            posttrain::detail::require(g != nullptr, {fn, "grad_logits"}, "must have the dtype of logits");
            detail::check_same_shape(*g, z, {fn, "grad_logits"}, "logits");
            const auto [lab, lab_bytes] = detail::device_labels(labels, B, Tn, fn);
            const detail::operand2 ul = detail::device_operand<true>(grad_log_probs, B, Tn, fn, "grad_log_probs");
            const detail::operand2 uh = detail::device_operand<true>(grad_entropy, B, Tn, fn, "grad_entropy");
            const detail::operand2 sl = detail::device_operand<true>(saved_lse, B, Tn, fn, "saved_lse");
            const detail::operand2 sh = detail::device_operand<true>(saved_entropy, B, Tn, fn, "saved_entropy");
            detail::check_no_alias(*g, z, {fn, "grad_logits"}, "logits");
            detail::check_no_alias(*g, lab_bytes, {fn, "grad_logits"}, "labels");
            for (const detail::operand2* o : {&ul, &uh, &sl, &sh}) detail::check_no_alias(*g, o->bytes, {fn, "grad_logits"}, o->name);
            posttrain::detail::check_policy_apart(policy, fn, std::pair{z, "logits"}, std::pair{lab_bytes, "labels"},
                                                  std::pair{ul.bytes, "grad_log_probs"}, std::pair{uh.bytes, "grad_entropy"},
                                                  std::pair{*g, "grad_logits"}, std::pair{sl.bytes, "saved_lse"},
                                                  std::pair{sh.bytes, "saved_entropy"});
            detail::backward_args<T> a;
            a.logits = z;
            a.grad = *g;
            a.labels = lab;
            a.grad_log_probs = ul.ref;
            a.grad_entropy = uh.ref;
            a.saved_lse = sl.ref;
            a.saved_entropy = sh.ref;
            a.ignore_index = options.ignore_index;
            a.raise = options.nonfinite_logits == advantage::nonfinite::raise;
            a.status = policy.status;
            if (B * Tn == 0) return;
            const std::size_t bytes = detail::backward_scratch_bytes(B, Tn, has_lse);
            posttrain::detail::cuda_scratch scratch(policy, bytes, {fn, "policy"});
            if (!has_lse) {
                // The statistics first: the forward pass, writing only the records.
                using Acc = detail::acc_of<T>;
                detail::forward_args<T> f;
                f.logits = z;
                f.labels = lab;
                f.stats = scratch.as<detail::stat_record<Acc>>();
                f.ignore_index = options.ignore_index;
                f.raise = a.raise;
                f.status = policy.status;
                detail::launch_forward(policy, f, fn);
                a.stats = f.stats;
            }
            detail::launch_backward(policy, a, fn);
        },
        posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
}
}  // namespace detail

template <class Logits, class Labels, class GradLogProbs, class GradEntropy, class GradLogits, class SavedLse = none_t,
          class SavedEntropy = none_t>
void token_log_probs_backward(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels,
                              const GradLogProbs& grad_log_probs, const GradEntropy& grad_entropy, GradLogits&& grad_logits,
                              const SavedLse& saved_lse = none, const SavedEntropy& saved_entropy = none,
                              const token_log_probs_options& options = {}) {
    detail::token_log_probs_backward_cuda(policy, logits, labels, grad_log_probs, grad_entropy, grad_logits, saved_lse,
                                          saved_entropy, options, "posttrain::logits::token_log_probs_backward");
}

}  // namespace posttrain::logits
