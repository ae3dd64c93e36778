#pragma once
// GAE and discounted returns on the GPU: the exec::cuda overloads of advantage::gae and
// advantage::discounted_returns.
//
//     pt::advantage::gae(pt::exec::cuda.on(stream), d_rewards, d_values, d_mask, d_advantages, d_returns,
//                        pt::advantage::gae_options::verl(0.99, 0.95));
//     pt::advantage::discounted_returns(pt::exec::cuda.on(stream), d_rewards, d_mask, d_returns, {0.99});
//
// Inputs are [N, T] device_view<const float|double, 2> (masks: bool or any arithmetic type) or
// DLPack tensors on a CUDA device, any strides; outputs device_view<float|double, 2> (returns may
// be posttrain::none). Asynchronous on the policy's stream. Semantics are those of the host
// functions (gae.hpp, returns.hpp), with double arithmetic on the device for float tensors too.
//
// The scan. Each token is an affine map of the state after the next token (gae.hpp's scan_map),
// so a row is a reverse scan under map composition. The [N, T] batch is cut into tiles of
// scan_tile (2048) tokens: whole rows packed together when T <= 2048, otherwise fixed chunks of
// one row. A block scans a tile: each thread composes its 8 consecutive tokens (in reverse time),
// a cub::BlockScan over the threads' maps (segmented: a row's last token restarts the state) gives
// each thread its incoming state, and the thread replays its tokens writing the outputs. Rows
// longer than a tile take two more launches first: every chunk's composed map, then per row (a
// block) an exclusive scan over its chunks, in a fixed order, giving each chunk its incoming state.
// When every view is dense row-major, a tile is one contiguous range of memory and moves through
// shared memory (coalesced loads and stores; a thread's 8 consecutive tokens would otherwise have a
// warp touch 32 sectors per instruction); the arithmetic is the same either way.
// No inter-block communication inside a kernel and no atomics in the arithmetic: the bits depend
// only on N and T (run to run and GPU to GPU). They differ from the host recurrence by rounding
// only (maps are composed where the host steps), except that an infinite input can make earlier
// tokens of its row NaN where the host gives +-inf (inf * 0 inside a composition; H100 run).
//
// Whitening: the tile kernel also leaves each tile's (weight, mean, M2) of the advantages it wrote;
// one block combines them in a fixed order (Chan et al.) and a last kernel applies the transform.
// What the host throws for and only the device sees goes to the policy's status word: a NaN/inf
// input under nonfinite::raise sets status_nonfinite_input (the result is computed as under
// propagate); too few valid tokens for the variance under degenerate::raise sets
// status_empty_reduction (the advantages are written as zeros, as under degenerate::zeros).
// options.time_chunk concerns the host only. gae_per_row_lambda takes the per-row advantage lambdas
// as a device [N] float or double view; one outside [0, 1] (or NaN), where the host throws, sets
// status_invalid_value and is used as given.
//
// Scratch (gae_workspace_bytes / discounted_returns_workspace_bytes): per-tile maps, incoming
// states and moments, per-row lambdas; from .with(workspace) or cudaMallocAsync on the stream.
//
// The scan (returns_problem: optional returns copy and per-row baseline), the tile moments
// (block_tile_moments) and the whitening's finalize and apply (launch_whiten) are also the pieces of
// masked_whiten (whiten.cuh), reinforce_pp and reinforce_pp_baseline (reinforce_pp.cuh) and remax
// (remax.cuh).

#if !defined(__CUDACC__)
#error "<posttrain/advantage/gae.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <utility>

#include "../cuda/exec.cuh"
#include "../cuda/tuning.cuh"
#include "gae.hpp"

namespace posttrain::advantage {
namespace detail {

inline constexpr int scan_threads = 256;
inline constexpr int scan_items = 8;
inline constexpr index_t scan_tile = index_t{scan_threads} * scan_items;

// How the [N, T] batch is cut into tiles: `per_tile` whole rows (packed, T <= scan_tile), or
// `chunks` chunks of scan_tile tokens per row (chunked).
struct scan_tiles {
    index_t rows = 0, cols = 0;
    bool packed = true;
    index_t per_tile = 1;  // rows per tile (packed)
    index_t chunks = 1;    // tiles per row (chunked)
    index_t tiles = 0;
};

inline scan_tiles make_scan_tiles(index_t rows, index_t cols) {
    scan_tiles s;
    s.rows = rows;
    s.cols = cols;
    if (rows == 0 || cols == 0) return s;
    s.packed = cols <= scan_tile;
    if (s.packed) {
        s.per_tile = scan_tile / cols;
        s.tiles = (rows + s.per_tile - 1) / s.per_tile;
    } else {
        s.chunks = (cols + scan_tile - 1) / scan_tile;
        s.tiles = rows * s.chunks;
    }
    return s;
}

// The tokens of tile k, in scan order (reverse time): element e is token (i, t).
struct tile_span {
    index_t first_row = 0;  // packed: rows [first_row, first_row + n / cols); chunked: the row
    index_t lo = 0, hi = 0; // chunked: tokens [lo, hi)
    index_t n = 0;          // elements
};

__device__ inline tile_span span_of(const scan_tiles& s, index_t k) {
    tile_span sp;
    if (s.packed) {
        sp.first_row = k * s.per_tile;
        const index_t last = sp.first_row + s.per_tile < s.rows ? sp.first_row + s.per_tile : s.rows;
        sp.n = (last - sp.first_row) * s.cols;
    } else {
        sp.first_row = k / s.chunks;
        const index_t c = k % s.chunks;
        sp.lo = c * scan_tile;
        sp.hi = sp.lo + scan_tile < s.cols ? sp.lo + scan_tile : s.cols;
        sp.n = sp.hi - sp.lo;
    }
    return sp;
}

// Token of element e, and whether the state restarts there (a row's last token when packed; the
// chunk's first element in scan order when chunked, where the chunk's incoming state is used).
__device__ inline void token_of(const scan_tiles& s, const tile_span& sp, index_t e, index_t& i, index_t& t, bool& restart) {
    if (s.packed) {
        const index_t f = sp.n - 1 - e;
        i = sp.first_row + f / s.cols;
        t = f % s.cols;
        restart = t == s.cols - 1;
    } else {
        i = sp.first_row;
        t = sp.hi - 1 - e;
        restart = e == 0;
    }
}

// The next token in scan order (one step back in time; packed tiles wrap to the previous row's end).
__device__ inline void step_back(const scan_tiles& s, index_t& i, index_t& t, bool& restart) {
    if (t == 0) {
        --i;
        t = s.cols - 1;
    } else {
        --t;
    }
    restart = s.packed && t == s.cols - 1;
}

// f(j, i, t, restart) for the thread's items j < count in scan order: element e0 + j is token (i, t),
// restart as token_of says.
template <class F>
__device__ __forceinline__ void for_each_item(const scan_tiles& s, const tile_span& sp, index_t e0, int count, F&& f) {
    if (count <= 0) return;
    index_t i, t;
    bool restart;
    token_of(s, sp, e0, i, t, restart);
#pragma unroll
    for (int j = 0; j < scan_items; ++j) {
        if (j < count) {
            f(j, i, t, restart);
            step_back(s, i, t, restart);
        }
    }
}

// A map with a restart flag: the segmented-scan element (a restart discards what came before).
struct seg_map {
    int restart;
    scan_map f;
};
struct seg_then {
    __device__ seg_map operator()(const seg_map& x, const seg_map& y) const {
        return {x.restart | y.restart, y.restart ? y.f : scan_then(x.f, y.f)};
    }
};
struct map_then {
    __device__ scan_map operator()(const scan_map& x, const scan_map& y) const { return scan_then(x, y); }
};

// ---- Staged tiles: dense views move through shared memory ---------------------------------------
//
// A thread's items are 8 consecutive tokens, so direct loads and stores have a warp touch 32
// sectors per instruction: every 4-byte store is its own L2 write. When every view of a launch is
// dense row-major (stride(1) == 1, stride(0) == cols), a tile is one contiguous range of memory,
// [base, base + n) (element e in scan order at offset n - 1 - e), and the block copies it through
// shared memory instead: coalesced in and out, with each thread reading or writing its 8 slots there.

// Slot of offset f, swizzled so that 8-byte accesses are free of bank conflicts both ways: a
// half-warp's 16 threads take 16 offsets 8 apart (their items; any tile length), which land in
// distinct slots mod 16, or 16 consecutive ones from a multiple of 16 (the copy), which the swizzle
// only permutes.
__device__ inline int stage_slot(index_t f) {
    const int k = static_cast<int>(f);  // 0 <= f < scan_tile
    return k ^ ((k >> 4) & 7);
}
inline constexpr int stage_slots = static_cast<int>(scan_tile);

// Slot of a tile's element e (scan order) among n.
__device__ inline int item_slot(index_t n, index_t e) { return stage_slot(n - 1 - e); }

// Whether every view's elements (i, t) are data()[i * cols + t] (the stride of an extent of 0 or 1
// does not matter).
template <class... V>
bool all_dense(const V&... v) {
    return (((v.extent(0) <= 1 || v.stride(0) == v.extent(1)) && (v.extent(1) <= 1 || v.stride(1) == 1)) && ...);
}

// First offset of tile sp's range in a dense view (see above).
__device__ inline index_t tile_base(const scan_tiles& s, const tile_span& sp) {
    return s.packed ? sp.first_row * s.cols : sp.first_row * s.cols + sp.lo;
}

// The block copies data[base, base + n) into `stage` (coalesced); each thread then takes its items
// e0 + j (j < count) as doubles. Every thread of the block calls it (barriers).
template <class T>
__device__ void stage_in(double* stage, const T* data, index_t base, index_t n, index_t e0, int count, double (&out)[scan_items]) {
    __syncthreads();  // the stage's previous readers are done
    for (index_t f = threadIdx.x; f < n; f += scan_threads) stage[stage_slot(f)] = double(data[base + f]);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < scan_items; ++j)
        if (j < count) out[j] = stage[item_slot(n, e0 + j)];
}

// stage_in into one field of the thread's tokens (the staged form of a problem's load): field(k)
// is a reference to the member of token k the array fills. Zero past the thread's items.
template <class T, class Token, class Field>
__device__ void stage_field(double* stage, const T* data, index_t base, index_t n, index_t e0, int count, Token (&tok)[scan_items],
                            Field field) {
    double x[scan_items] = {};
    stage_in(stage, data, base, n, e0, count, x);
#pragma unroll
    for (int j = 0; j < scan_items; ++j) field(tok[j]) = static_cast<T>(x[j]);
}

// The block copies `stage` (filled by the threads' items, values already rounded to T) into
// data[base, base + n) (coalesced). Every thread of the block calls it.
template <class T>
__device__ void stage_out(const double* stage, T* data, index_t base, index_t n) {
    __syncthreads();  // every item is in the stage
    for (index_t f = threadIdx.x; f < n; f += scan_threads) data[base + f] = static_cast<T>(stage[stage_slot(f)]);
}

// Where a staged launch's tile lives: two outputs at most, the first buffer also serves the loads.
struct tile_stage {
    double out[2][stage_slots];
};

// Per-tile moments of the written advantages (weights = mask), for the whitening.
struct tile_moments {
    double weight, mean, m2;
};

// ---- Problems: what a token reads, its map, and what it writes --------------------------------

template <class R, class V, class M, class A, class Ret>
struct gae_problem {
    device_view<const R, 2> r;
    device_view<const V, 2> v;
    device_view<const M, 2> m;
    device_view<A, 2> a;
    device_view<Ret, 2> ret;
    gae_masking mode = gae_masking::carry;
    double gamma = 1, gl = 1;
    const double* row_gl = nullptr;  // per-row gamma * lambda, or null
    bool write_adv = true, write_ret = true, mask_output = false;
    std::uint32_t* status = nullptr;
    bool report_nonfinite = false;
    bool staged = false;  // every view dense: tiles move through shared memory

    struct token {
        R r;
        V v;
        M m;
    };
    __device__ void check(const token& k) const {
        if (report_nonfinite && !(numeric::is_finite(double(k.r)) && numeric::is_finite(double(k.v))))
            posttrain::detail::report_status(status, status_nonfinite_input);
    }
    __device__ token load(index_t i, index_t t) const {
        const token k{r(i, t), v(i, t), m(i, t)};
        check(k);
        return k;
    }
    // The staged form of load for the thread's items (every thread of the block calls it).
    __device__ void load_staged(tile_stage& st, index_t base, index_t n, index_t e0, int count, token (&tok)[scan_items]) const {
        stage_field(st.out[0], r.data(), base, n, e0, count, tok, [](token& k) -> R& { return k.r; });
        stage_field(st.out[1], v.data(), base, n, e0, count, tok, [](token& k) -> V& { return k.v; });
        stage_field(st.out[0], m.data(), base, n, e0, count, tok, [](token& k) -> M& { return k.m; });
#pragma unroll
        for (int j = 0; j < scan_items; ++j)
            if (j < count) check(tok[j]);
    }
    __device__ scan_map map(const token& k, index_t i) const {
        return gae_token_map(mode, double(k.r), double(k.v), double(k.m), gamma, row_gl ? row_gl[i] : gl);
    }
    __device__ double weight(const token& k) const { return double(k.m); }
    // The outputs of the state after this token, as stored: the advantage and the return.
    __device__ void outputs(const token& k, double adv, double& out, double& rt) const {
        const double w = double(k.m);
        out = double(static_cast<A>(mask_output ? adv * w : adv));
        rt = double(static_cast<Ret>(adv + (mode == gae_masking::zero ? w * double(k.v) : double(k.v))));
    }
    // Writes them (into the stage's slot when staged); returns the advantage as stored.
    __device__ double write(tile_stage& st, int slot, index_t i, index_t t, const token& k, double /*next*/, double adv) const {
        double out, rt;
        outputs(k, adv, out, rt);
        if (staged) {
            st.out[0][slot] = out;
            st.out[1][slot] = rt;
        } else {
            if (write_ret) ret(i, t) = static_cast<Ret>(rt);
            if (write_adv) a(i, t) = static_cast<A>(out);
        }
        return out;
    }
    // The staged tile's stores (every thread of the block calls it).
    __device__ void flush(const tile_stage& st, index_t base, index_t n) const {
        if (write_adv) stage_out(st.out[0], a.data(), base, n);
        if (write_ret) stage_out(st.out[1], ret.data(), base, n);
    }
};

// out = G. Options of the estimators built on the returns: ret receives a copy of G as stored in out
// (reinforce_pp's and remax's `returns`: the host copies it from the advantages' buffer), and with
// subtract_baseline out = G - b_i * m (remax; ret keeps G). The stored value is what write returns:
// the per-tile moments are those of the values the host whitens.
template <class R, class M, class O, class Ret = O, class B = double>
struct returns_problem {
    device_view<const R, 2> r;
    device_view<const M, 2> m;
    device_view<O, 2> out;
    masked_tokens mode = masked_tokens::reset;
    double gamma = 1;
    device_view<Ret, 2> ret{};
    bool write_ret = false;
    device_view<const B, 1> base{};
    bool subtract_baseline = false;

    bool staged = false;  // every view dense: tiles move through shared memory

    struct token {
        R r;
        M m;
    };
    __device__ token load(index_t i, index_t t) const { return {r(i, t), m(i, t)}; }
    __device__ void load_staged(tile_stage& st, index_t first, index_t n, index_t e0, int count, token (&tok)[scan_items]) const {
        stage_field(st.out[0], r.data(), first, n, e0, count, tok, [](token& k) -> R& { return k.r; });
        stage_field(st.out[1], m.data(), first, n, e0, count, tok, [](token& k) -> M& { return k.m; });
    }
    __device__ scan_map map(const token& k, index_t) const { return returns_token_map(mode, double(k.r), double(k.m), gamma); }
    __device__ double weight(const token& k) const { return double(k.m); }
    __device__ double write(tile_stage& st, int slot, index_t i, index_t t, const token& k, double, double g) const {
        O stored = static_cast<O>(g);
        const Ret copy = static_cast<Ret>(stored);
        if (subtract_baseline) stored = static_cast<O>(double(stored) - double(base(i)) * double(k.m));
        if (staged) {
            st.out[0][slot] = double(stored);
            st.out[1][slot] = double(copy);
        } else {
            if (write_ret) ret(i, t) = copy;
            out(i, t) = stored;
        }
        return double(stored);
    }
    __device__ void flush(const tile_stage& st, index_t first, index_t n) const {
        stage_out(st.out[0], out.data(), first, n);
        if (write_ret) stage_out(st.out[1], ret.data(), first, n);
    }
};

// ---- Kernels -------------------------------------------------------------------------------------

// Chunked rows, step 1: the composed map of every chunk (restarts ignored: the chunk is applied to
// its incoming state later).
template <class P>
__global__ void __launch_bounds__(scan_threads) scan_chunk_maps_kernel(P p, scan_tiles s, scan_map* maps) {
    using block_scan = cub::BlockScan<seg_map, scan_threads>;
    __shared__ union {
        typename block_scan::TempStorage scan;
        tile_stage stage;  // staged launches only
    } tmp;
    const index_t k = blockIdx.x;
    const tile_span sp = span_of(s, k);
    const index_t e0 = index_t(threadIdx.x) * scan_items;
    const int count = e0 < sp.n ? int(sp.n - e0 < scan_items ? sp.n - e0 : scan_items) : 0;
    typename P::token tok[scan_items];
    if (p.staged) p.load_staged(tmp.stage, tile_base(s, sp), sp.n, e0, count, tok);
    seg_map agg{0, scan_identity()};
    for_each_item(s, sp, e0, count, [&](int j, index_t i, index_t t, bool) {
        if (!p.staged) tok[j] = p.load(i, t);
        agg.f = scan_then(agg.f, p.map(tok[j], i));
    });
    seg_map total, ignored;
    if (p.staged) __syncthreads();  // the loads' last reads of the stage are done: the scan reuses it
    block_scan(tmp.scan).ExclusiveScan(agg, ignored, seg_map{0, scan_identity()}, seg_then{}, total);
    if (threadIdx.x == 0) maps[k] = total.f;
}

// Chunked rows, step 2: a block per row scans its chunks in scan order (last chunk first), in
// batches of scan_threads, and leaves each chunk its incoming state (next, value) in carry[2k..].
// A template (never instantiated twice differently) so that translation units including this header
// do not each define it: a kernel cannot be inline.
template <int Unused = 0>
__global__ void __launch_bounds__(scan_threads) scan_chunk_carry_kernel(scan_tiles s, const scan_map* maps, double* carry) {
    using block_scan = cub::BlockScan<scan_map, scan_threads>;
    __shared__ typename block_scan::TempStorage tmp;
    const index_t row = blockIdx.x, C = s.chunks;
    scan_map running = scan_identity();
    for (index_t base = 0; base < C; base += scan_threads) {
        const index_t j = base + threadIdx.x;  // scan position: chunk C - 1 - j
        const index_t k = row * C + (C - 1 - j);
        const scan_map x = j < C ? maps[k] : scan_identity();
        scan_map before, batch;
        block_scan(tmp).ExclusiveScan(x, before, scan_identity(), map_then{}, batch);
        if (j < C) {
            double n = 0, a = 0;
            scan_apply(scan_then(running, before), n, a);
            carry[2 * k] = n;
            carry[2 * k + 1] = a;
        }
        running = scan_then(running, batch);
        __syncthreads();  // tmp is reused by the next batch
    }
}

// A tile's (weight, mean, M2), two-pass: each thread's w_sum = sum w and wx_sum = sum w x over its
// items xs (zero past the tile's end, as are their weights weight(j)); the tile's mean goes through
// shared memory, then the squared deviations are summed. Every thread of the block calls it (it has
// barriers, the first one guarding `tmp` against its previous use); thread 0 gets the result.
// Shared by the scan (its written values) and whiten.cuh's moments pass.
template <class BlockSum, class Weight>
__device__ __forceinline__ tile_moments block_tile_moments(typename BlockSum::TempStorage& tmp, double& shared_mean,
                                                           const double (&xs)[scan_items], Weight weight, double w_sum,
                                                           double wx_sum) {
    __syncthreads();
    const double W = BlockSum(tmp).Sum(w_sum);
    __syncthreads();
    const double S = BlockSum(tmp).Sum(wx_sum);
    // A tile without weight has mean 0, or NaN when a value under a zero weight is not finite (the
    // host's sums take 0 * NaN = NaN too).
    if (threadIdx.x == 0) shared_mean = W > 0 ? S / W : S - S;
    __syncthreads();
    const double mean = shared_mean;
    double m2 = 0;
#pragma unroll
    for (int j = 0; j < scan_items; ++j) {
        const double w = weight(j);
        m2 += w * (xs[j] - mean) * (xs[j] - mean);
    }
    const double M2 = BlockSum(tmp).Sum(m2);
    return {W, mean, M2};
}

// The tile scan: every token's state, written through the problem; optionally each tile's moments
// of the written values. carry: chunked tiles' incoming states (null when packed).
// Two blocks per SM: at one (132 registers a thread) the kernel was latency bound (H100, ncu: 12.5%
// occupancy, DRAM 17% busy, 575 us for 2^24 tokens).
template <class P>
__global__ void __launch_bounds__(scan_threads, 2) scan_tiles_kernel(P p, scan_tiles s, const double* carry, tile_moments* moments) {
    using block_scan = cub::BlockScan<seg_map, scan_threads>;
    using block_sum = cub::BlockReduce<double, scan_threads>;
    __shared__ union {
        typename block_scan::TempStorage scan;
        typename block_sum::TempStorage sum;
        tile_stage stage;  // staged launches only (p.staged is uniform per launch)
    } tmp;
    __shared__ double tile_mean;
    const index_t k = blockIdx.x;
    const tile_span sp = span_of(s, k);
    const index_t e0 = index_t(threadIdx.x) * scan_items;
    const int count = e0 < sp.n ? int(sp.n - e0 < scan_items ? sp.n - e0 : scan_items) : 0;
    const index_t base = tile_base(s, sp);

    typename P::token tok[scan_items];
    if (p.staged) p.load_staged(tmp.stage, base, sp.n, e0, count, tok);
    seg_map agg{0, scan_identity()};
    for_each_item(s, sp, e0, count, [&](int j, index_t i, index_t t, bool restart) {
        if (!p.staged) tok[j] = p.load(i, t);
        agg = seg_then{}(agg, seg_map{restart, p.map(tok[j], i)});
    });
    seg_map before;
    if (p.staged) __syncthreads();  // the loads' last reads of the stage are done: the scan reuses it
    block_scan(tmp.scan).ExclusiveScan(agg, before, seg_map{0, scan_identity()}, seg_then{});
    if (p.staged) __syncthreads();  // and the scan's: the writes below fill the stage

    const double seed_n = carry ? carry[2 * k] : 0.0, seed_a = carry ? carry[2 * k + 1] : 0.0;
    double n = seed_n, a = seed_a;
    scan_apply(before.f, n, a);  // element 0 restarts, so `before` always starts from the seed
    // Zero for the items past the tile's end (and for every item of a thread with none), which the
    // moments below read too; their weights are read again from tok (not kept: registers).
    double xs[scan_items] = {};
    double w_sum = 0, wx_sum = 0;
    for_each_item(s, sp, e0, count, [&](int j, index_t i, index_t t, bool restart) {
        if (restart) {
            n = seed_n;
            a = seed_a;
        }
        scan_apply(p.map(tok[j], i), n, a);
        xs[j] = p.write(tmp.stage, item_slot(sp.n, e0 + j), i, t, tok[j], n, a);
        const double w = p.weight(tok[j]);
        w_sum += w;
        wx_sum += w * xs[j];
    });
    if (p.staged) p.flush(tmp.stage, base, sp.n);
    if (moments == nullptr) return;  // uniform per launch: no block diverges at the barriers below
    // tmp.scan (or the stage) -> tmp.sum: block_tile_moments syncs first.
    const tile_moments tm = block_tile_moments<block_sum>(
        tmp.sum, tile_mean, xs, [&](int j) { return j < count ? p.weight(tok[j]) : 0.0; }, w_sum, wx_sum);
    if (threadIdx.x == 0) moments[k] = tm;
}

// Chan et al.'s pairwise combination of (weight, mean, M2). Weightless parts have mean and M2 0,
// or NaN (see block_tile_moments), which the sums keep.
__device__ inline tile_moments combine_moments(const tile_moments& x, const tile_moments& y) {
    const double w = x.weight + y.weight;
    if (w == 0) return {0, x.mean + y.mean, x.m2 + y.m2};
    const double d = y.mean - x.mean;
    return {w, x.mean + d * (y.weight / w), x.m2 + y.m2 + d * d * (x.weight * y.weight / w)};
}

// The whitening options as the device needs them.
struct whiten_params {
    bool shift_mean = true, scale = true, mask_output = false, raise_on_degenerate = false, add_guard = true;
    int ddof = 1;
    double count_epsilon = 0, epsilon = 1e-8;
};

inline whiten_params make_whiten_params(const whiten_options& o, bool mask_output) {
    return {o.shift_mean, o.scale, mask_output, o.on_degenerate == degenerate::raise, o.guard == variance_guard::add,
            static_cast<int>(o.ddof), o.count_epsilon, o.epsilon};
}

// What the whitening transform applies: x -> valid ? (x - mean) * rstd + shift : 0.
struct whiten_transform {
    double mean, rstd, shift;
    int valid;
};

// One block combines the tiles' moments in a fixed order: thread j folds tiles j, j + 1024, ...,
// then a fixed tree. Leaves the transform, and (optionally) {mean, variance, count} in stats.
// A template (never instantiated twice differently) so that translation units including this header
// do not each define it: a kernel cannot be inline.
inline constexpr int finalize_threads = 1024;  // one block; 4x fewer dependent folds than 256 threads

template <int Unused = 0>
__global__ void __launch_bounds__(finalize_threads) whiten_finalize_kernel(const tile_moments* moments, index_t tiles, whiten_params w,
                                                                           whiten_transform* out, double* stats, std::uint32_t* status) {
    __shared__ tile_moments part[finalize_threads];
    tile_moments acc{0, 0, 0};
    for (index_t k = threadIdx.x; k < tiles; k += finalize_threads) acc = combine_moments(acc, moments[k]);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int half = finalize_threads / 2; half > 0; half /= 2) {
        if (int(threadIdx.x) < half) part[threadIdx.x] = combine_moments(part[threadIdx.x], part[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    const tile_moments all = part[0];
    // masked_whiten's conventions: mean = sum / (count + count_epsilon); variance about that mean.
    const double count = all.weight, denom = count + w.count_epsilon;
    const double mean = denom != 0 ? all.mean * count / denom : 0.0;
    const double m2 = all.m2 + count * (all.mean - mean) * (all.mean - mean);
    const double biased = denom != 0 ? m2 / denom : 0.0;
    const int valid = count > double(w.ddof) && count > 0;
    const double variance = w.ddof == 0 ? biased : biased * (count / (count - 1.0));
    const double guarded = w.add_guard ? variance + w.epsilon : (variance > w.epsilon ? variance : w.epsilon);
    const double rstd = w.scale ? 1.0 / sqrt(guarded) : 1.0;
    if (!valid && w.raise_on_degenerate) posttrain::detail::report_status(status, status_empty_reduction);
    *out = {mean, rstd, w.shift_mean ? 0.0 : mean, valid};
    if (stats) {
        stats[0] = mean;
        stats[1] = variance;
        stats[2] = count;
    }
}

// a = valid ? (v - mean) * rstd + shift : 0 (times the mask when mask_output), v read from src: a
// itself (in place: gae, reinforce_pp) or another view (masked_whiten). Each element is read before
// it is written, by the same thread, so src may be a. `dense`: src, a and m are all row-major
// without padding, so that one flat index addresses them (the 64-bit division of the general path
// made the kernel compute bound: 82% SM, 28% DRAM on an H100).
template <class X, class A, class M>
__global__ void whiten_apply_kernel(device_view<const X, 2> src, device_view<A, 2> a, device_view<const M, 2> m,
                                    const whiten_transform* tr, bool mask_output, bool dense) {
    const whiten_transform x = *tr;
    const index_t cols = a.extent(1), total = a.extent(0) * cols;
    auto apply = [&](const X& in, A& out, const M* weight) {
        double y = x.valid ? (double(in) - x.mean) * x.rstd + x.shift : 0.0;
        if (mask_output) y *= double(*weight);
        out = static_cast<A>(y);
    };
    const index_t step = index_t(gridDim.x) * blockDim.x;
    if (dense) {
        for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step)
            apply(src.data()[e], a.data()[e], m.data() + e);
    } else {
        for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
            const index_t i = e / cols, t = e % cols;
            apply(src(i, t), a(i, t), &m(i, t));
        }
    }
}

// One warp per row: gamma * VAPO lambda from the row's mask sum (a fixed shuffle tree).
template <class M>
__global__ void length_adaptive_kernel(device_view<const M, 2> m, double alpha, double gamma, double* row_gl) {
    const index_t warps = index_t(gridDim.x) * (blockDim.x / 32);
    const int lane = threadIdx.x % 32;
    for (index_t i = index_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; i < m.extent(0); i += warps) {
        double s = 0;
        for (index_t t = lane; t < m.extent(1); t += 32) s += double(m(i, t));
        for (int d = 16; d > 0; d /= 2) s += __shfl_xor_sync(0xffffffffu, s, d);
        if (lane == 0) row_gl[i] = gamma * length_adaptive_lambda(alpha, s);
    }
}

// gae_per_row_lambda's given lambdas: row_gl[i] = gamma * lambdas[i] (the host's product). A lambda
// outside [0, 1] (NaN included) is reported and used as given.
template <class L>
__global__ void given_lambda_kernel(device_view<const L, 1> lambdas, double gamma, double* row_gl, std::uint32_t* status) {
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < lambdas.extent(0); i += step) {
        const double x = double(lambdas(i));
        if (!(x >= 0.0 && x <= 1.0)) posttrain::detail::report_status(status, status_invalid_value);
        row_gl[i] = gamma * x;
    }
}

// ---- Host side -------------------------------------------------------------------------------

struct scan_scratch_layout {
    std::size_t maps = 0, carry = 0, moments = 0, transform = 0, row_gl = 0, total = 0;
};

inline scan_scratch_layout scan_scratch(index_t rows, index_t cols, bool whiten, bool row_lambda) {
    const scan_tiles s = make_scan_tiles(rows, cols);
    scan_scratch_layout l;
    posttrain::detail::scratch_cursor c;
    const std::size_t tiles = static_cast<std::size_t>(s.tiles);
    l.maps = c.take(s.packed ? 0 : tiles * sizeof(scan_map));
    l.carry = c.take(s.packed ? 0 : tiles * 2 * sizeof(double));
    l.moments = c.take(whiten ? tiles * sizeof(tile_moments) : 0);
    l.transform = c.take(whiten ? sizeof(whiten_transform) : 0);
    l.row_gl = c.take(row_lambda ? static_cast<std::size_t>(rows) * sizeof(double) : 0);
    l.total = c.end;
    return l;
}

// Runs problem p over the batch: the chunk passes when rows are longer than a tile, then the tile
// scan (leaving per-tile moments when `moments` is given).
template <class P>
void launch_scan(const exec::cuda_policy& policy, const P& p, const scan_tiles& s, const posttrain::detail::cuda_scratch& scratch,
                 const scan_scratch_layout& l, tile_moments* moments, const char* fn) {
    if (s.tiles == 0) return;
    double* carry = nullptr;
    if (!s.packed) {
        auto* maps = scratch.as<scan_map>(l.maps);
        carry = scratch.as<double>(l.carry);
        scan_chunk_maps_kernel<<<static_cast<unsigned>(s.tiles), scan_threads, 0, policy.stream>>>(p, s, maps);
        posttrain::detail::check_launch(fn);
        scan_chunk_carry_kernel<<<static_cast<unsigned>(s.rows), scan_threads, 0, policy.stream>>>(s, maps, carry);
        posttrain::detail::check_launch(fn);
    }
    scan_tiles_kernel<<<static_cast<unsigned>(s.tiles), scan_threads, 0, policy.stream>>>(p, s, carry, moments);
    posttrain::detail::check_launch(fn);
}

// After the tiles' moments: one block folds them into the transform (and stats, and the status bit).
// Launched for an empty batch too (no tiles): the statistics and the degenerate status are still due.
inline void launch_finalize(const exec::cuda_policy& policy, const tile_moments* moments, index_t tiles, const whiten_params& w,
                            whiten_transform* tr, double* stats, const char* fn) {
    whiten_finalize_kernel<<<1, finalize_threads, 0, policy.stream>>>(moments, tiles, w, tr, stats, policy.status);
    posttrain::detail::check_launch(fn);
}

// The whitening's last two launches, after the tiles' moments: the finalize, then a = transform(src)
// (src may be a: in place).
template <class X, class A, class M>
void launch_whiten(const exec::cuda_policy& policy, const tile_moments* moments, index_t tiles, const whiten_params& w,
                   whiten_transform* tr, double* stats, device_view<const X, 2> src, device_view<A, 2> a,
                   device_view<const M, 2> m, const char* fn) {
    launch_finalize(policy, moments, tiles, w, tr, stats, fn);
    const index_t rows = a.extent(0), cols = a.extent(1);
    if (rows * cols == 0) return;
    const index_t blocks = (rows * cols + 255) / 256;
    const bool dense = all_dense(a, src, m);
    whiten_apply_kernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0, policy.stream>>>(src, a, m, tr, w.mask_output,
                                                                                                          dense);
    posttrain::detail::check_launch(fn);
}

// The whitening's `stats` output (empty when not asked for) apart from each (view, name) the call
// reads or writes (the finalize writes the statistics before the apply reads the advantages), and
// the policy's workspace and status word apart from those views and the statistics.
template <class... V>
void check_whitening_apart(const exec::cuda_policy& policy, device_view<double, 1> stats, const char* fn,
                           const std::pair<V, const char*>&... views) {
    (check_no_alias(stats, views.first, {fn, "stats"}, views.second), ...);
    posttrain::detail::check_policy_apart(policy, fn, views..., std::pair{stats, "stats"});
}

// The `stats` output of the CUDA whitening overloads: {mean, variance, count}.
inline void check_whiten_stats(device_view<double, 1> stats, const char* fn) {
    posttrain::detail::require(stats.extent(0) == 3 && stats.stride(0) == 1, {fn, "stats"},
                               "expected 3 contiguous doubles (mean, variance, count), found " +
                                   posttrain::detail::str(stats.extent(0)));
}

// The optional `returns` output of gae, reinforce_pp and remax: run(ret, true) with the view after
// check(ret) (its shape and overlaps), or run(an empty view of A, false) for posttrain::none.
template <class A, class Returns, class Check, class Run>
void visit_returns(const Returns& returns, const char* fn, Check&& check, Run&& run) {
    if constexpr (std::is_same_v<std::remove_cvref_t<Returns>, none_t>) {
        run(device_view<A, 2>(), false);
    } else {
        std::visit(
            [&](auto ret) {
                check(ret);
                run(ret, true);
            },
            posttrain::detail::floating_output<2, device_space>(returns, {fn, "returns"}));
    }
}

// Calls f with the device view of gae_per_row_lambda's lambdas, or with nullptr (gae: none given).
template <class RowLambda, class F>
void visit_row_lambda(const RowLambda& lambdas, const char* fn, F&& f) {
    if constexpr (std::is_same_v<RowLambda, std::nullptr_t>) {
        f(nullptr);
    } else {
        std::visit(f, posttrain::detail::floating_input<1, device_space>(lambdas, {fn, "lambdas"}));
    }
}

// The shared body of gae and gae_per_row_lambda (row_lambda: the lambdas, or nullptr).
template <class RowLambda, class TokenRewards, class Values, class Mask, class Advantages, class Returns>
void gae_cuda(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
              const RowLambda& row_lambda, Advantages&& advantages, Returns&& returns, const gae_options& options,
              device_view<double, 1> stats, const char* fn) {
    check_gae_options(options, fn);
    using posttrain::detail::floating_input;
    using posttrain::detail::floating_output;
    visit_row_lambda(row_lambda, fn, [&](auto lambdas) {
        std::visit(
            [&](auto r, auto v, auto m, auto a) {
                check_gae_views(r, v, m, a, fn);
                const index_t rows = r.extent(0), cols = r.extent(1);
                using A = typename decltype(a)::value_type;
                constexpr bool given = !std::is_same_v<decltype(lambdas), std::nullptr_t>;
                if constexpr (given) check_extent(lambdas.extent(0), rows, {fn, "lambdas"}, "length (one lambda per row)");
                // Per-row advantage lambdas (given, or length-adaptive) always get their own pass for
                // the returns, as on the host.
                const bool per_row = given || options.length_adaptive_alpha > 0;
                const bool decoupled = per_row || (options.lambda_value && *options.lambda_value != options.lambda);
                // The returns are checked (visit_returns) before anything is allocated or launched.
                visit_returns<A>(
                    returns, fn,
                    [&](auto ret) { check_gae_returns(ret, r, v, m, a, fn); },
                    [&](auto ret, bool has_returns) {
                        check_whitening_apart(policy, stats, fn, std::pair{r, "token_rewards"}, std::pair{v, "values"},
                                              std::pair{m, "mask"}, std::pair{a, "advantages"}, std::pair{ret, "returns"});
                        posttrain::detail::check_policy_apart(policy, fn, std::pair{lambdas, "lambdas"});
                        const scan_tiles s = make_scan_tiles(rows, cols);
                        const scan_scratch_layout l = scan_scratch(rows, cols, options.whiten, per_row);
                        posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
                        double* row_gl = nullptr;
                        if (per_row && rows > 0) {
                            row_gl = scratch.as<double>(l.row_gl);
                            if constexpr (given) {
                                given_lambda_kernel<<<cuda_tuning::elementwise_blocks(rows), cuda_tuning::block_threads, 0,
                                                      policy.stream>>>(lambdas, options.gamma, row_gl, policy.status);
                            } else {
                                const unsigned blocks = static_cast<unsigned>((rows + 7) / 8 < 4096 ? (rows + 7) / 8 : 4096);
                                length_adaptive_kernel<<<blocks, 256, 0, policy.stream>>>(m, options.length_adaptive_alpha,
                                                                                         options.gamma, row_gl);
                            }
                            posttrain::detail::check_launch(fn);
                        }
                        tile_moments* moments = options.whiten ? scratch.as<tile_moments>(l.moments) : nullptr;

                        using Ret = typename decltype(ret)::value_type;
                        gae_problem<typename decltype(r)::value_type, typename decltype(v)::value_type,
                                    typename decltype(m)::value_type, A, Ret>
                            p{r, v, m, a, ret};
                        p.mode = options.masking;
                        p.gamma = options.gamma;
                        p.mask_output = options.mask_output && !options.whiten;
                        p.status = policy.status;
                        p.report_nonfinite = options.nonfinite_inputs == nonfinite::raise;
                        p.staged = all_dense(r, v, m, a, ret);
                        if (decoupled && has_returns) {  // the returns' pass first, with the returns' lambda
                            auto q = p;
                            q.gl = options.gamma * options.lambda_value.value_or(options.lambda);
                            q.write_adv = false;
                            launch_scan(policy, q, s, scratch, l, nullptr, fn);
                            p.report_nonfinite = false;  // reported once
                        }
                        p.gl = options.gamma * options.lambda;
                        p.row_gl = row_gl;
                        p.write_ret = has_returns && !decoupled;
                        launch_scan(policy, p, s, scratch, l, moments, fn);
                        if (!options.whiten) return;
                        launch_whiten(policy, moments, s.tiles, make_whiten_params(options.whitening, options.mask_output),
                                      scratch.as<whiten_transform>(l.transform), stats.data(), device_view<const A, 2>(a), a, m,
                                      fn);
                    });
            },
            floating_input<2, device_space>(token_rewards, {fn, "token_rewards"}),
            floating_input<2, device_space>(values, {fn, "values"}),
            posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
            floating_output<2, device_space>(advantages, {fn, "advantages"}));
    });
}

}  // namespace detail

// Bytes of scratch gae needs on the CUDA path for an [rows, cols] batch and these options.
inline std::size_t gae_workspace_bytes(index_t rows, index_t cols, const gae_options& options = {}) {
    return detail::scan_scratch(rows, cols, options.whiten, options.length_adaptive_alpha > 0).total;
}

// Bytes of scratch gae_per_row_lambda needs on the CUDA path (the per-row lambdas always take some).
inline std::size_t gae_per_row_lambda_workspace_bytes(index_t rows, index_t cols, const gae_options& options = {}) {
    return detail::scan_scratch(rows, cols, options.whiten, true).total;
}

// Bytes of scratch discounted_returns needs on the CUDA path (0 when rows fit a tile).
inline std::size_t discounted_returns_workspace_bytes(index_t rows, index_t cols) {
    return detail::scan_scratch(rows, cols, false, false).total;
}

template <class TokenRewards, class Values, class Mask, class Advantages, class Returns>
void gae(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
         Advantages&& advantages, Returns&& returns, const gae_options& options = {}) {
    detail::gae_cuda(policy, token_rewards, values, mask, nullptr, advantages, returns, options, {}, "posttrain::advantage::gae");
}

// As above, and writes the whitening statistics {mean, variance, count} into stats[3] on the device.
template <class TokenRewards, class Values, class Mask, class Advantages, class Returns>
void gae(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
         Advantages&& advantages, Returns&& returns, const gae_options& options, device_view<double, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::gae";
    detail::check_whiten_stats(stats, fn);
    posttrain::detail::require(options.whiten, {fn, "stats"}, "statistics exist only with options.whiten");
    detail::gae_cuda(policy, token_rewards, values, mask, nullptr, advantages, returns, options, stats, fn);
}

// gae with one advantage lambda per row (lambdas: a device [N] float or double view; the returns use
// options.lambda_value, or options.lambda), as the host's gae_per_row_lambda.
template <class TokenRewards, class Values, class Mask, class Lambdas, class Advantages, class Returns>
void gae_per_row_lambda(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
                        const Lambdas& lambdas, Advantages&& advantages, Returns&& returns, const gae_options& options = {}) {
    detail::gae_cuda(policy, token_rewards, values, mask, lambdas, advantages, returns, options, {},
                     "posttrain::advantage::gae_per_row_lambda");
}

// As above, and writes the whitening statistics {mean, variance, count} into stats[3] on the device.
template <class TokenRewards, class Values, class Mask, class Lambdas, class Advantages, class Returns>
void gae_per_row_lambda(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Values& values, const Mask& mask,
                        const Lambdas& lambdas, Advantages&& advantages, Returns&& returns, const gae_options& options,
                        device_view<double, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::gae_per_row_lambda";
    detail::check_whiten_stats(stats, fn);
    posttrain::detail::require(options.whiten, {fn, "stats"}, "statistics exist only with options.whiten");
    detail::gae_cuda(policy, token_rewards, values, mask, lambdas, advantages, returns, options, stats, fn);
}

// The discounted returns of returns.hpp on the device (the reward-to-go of REINFORCE and REINFORCE++).
template <class TokenRewards, class Mask, class Returns>
void discounted_returns(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Mask& mask, Returns&& returns,
                        const returns_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::discounted_returns";
    std::visit(
        [&](auto r, auto m, auto o) {
            detail::check_discounted_returns_views(r, m, o, fn);
            posttrain::detail::check_policy_apart(policy, fn, std::pair{r, "token_rewards"}, std::pair{m, "mask"},
                                                  std::pair{o, "returns"});
            const detail::scan_tiles s = detail::make_scan_tiles(r.extent(0), r.extent(1));
            const detail::scan_scratch_layout l = detail::scan_scratch(r.extent(0), r.extent(1), false, false);
            posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
            detail::returns_problem<typename decltype(r)::value_type, typename decltype(m)::value_type,
                                    typename decltype(o)::value_type>
                p{r, m, o, options.masking, options.gamma};
            p.staged = detail::all_dense(r, m, o);
            detail::launch_scan(policy, p, s, scratch, l, nullptr, fn);
        },
        posttrain::detail::floating_input<2, device_space>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2, device_space>(returns, {fn, "returns"}));
}

}  // namespace posttrain::advantage
