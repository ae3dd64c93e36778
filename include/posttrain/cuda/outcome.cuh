#pragma once
// The CUDA engine of the outcome-advantage family (GRPO, RLOO, Dr. GRPO, leave-one-out GRPO): one
// launcher, the per-group bodies (team_group, team_loop_group) and the kernels that run them. The
// arithmetic is advantage/grpo_math.hpp, shared with the other backends.
//
// Per group, a team of threads computes the count, the sum (double accumulation, also for float
// input) and whether the group is constant, then the squared deviations from the mean (only when
// the group std is needed), and writes every row through the group's transform. Shapes (values in
// tuning.cuh):
//   - uniform tile kernel (groups of up to 32 * tile_values rows): blocks walk tiles of 256/lanes
//     consecutive groups, double-buffered: the rows of the next tile are copied into shared
//     memory (cp.async, coalesced) while the current one is computed, then written back with
//     coalesced stores. A team of `lanes` = 1..32 threads, sized to the group, holds its rows in
//     registers and reduces over log2(lanes) shuffle levels only; a single thread takes
//     tile_values / k consecutive groups of k <= 4 rows, one after the other, so that tiles stay full.
//   - ragged tile kernel (mean group size up to ~128): the same pipeline over tiles of a fixed
//     number of groups (whose offsets are prefetched a tile ahead), with teams that loop over
//     their group's rows in shared memory, so that no group size is too large for its team. A tile
//     with invalid offsets or too many rows is left for after the pipelined loop, where teams loop
//     over global memory and the whole block takes large groups.
//   - block kernel (larger groups): a block per group, up to block_values rows per thread in
//     registers; beyond that the block loops over global memory.
// Rows are never read from global memory more than once except in the looping fallbacks.
// A permuted layout (device_permuted_groups, e.g. from grouping::from_ids) runs the ragged shapes over
// positions: its layout reader maps position j to row permutation[j], so tiles are gathered into
// shared memory and scattered back (random 4- or 8-byte accesses), and a group count held on the
// device bounds the groups each kernel walks (layout.live_groups).
//
// Determinism: run to run on the same GPU (the shape depends only on N, G, the group size and the
// SM count, and no result depends on which block takes a tile; fixed reduction trees: xor
// butterflies give every lane the same sums because IEEE addition commutes; no atomics in the
// arithmetic). Differences from the host oracle come only from summation order.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/outcome.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/block/block_reduce.cuh>
#include <cuda_pipeline_primitives.h>

#include "../advantage/grpo_math.hpp"
#include "exec.cuh"
#include "groups.cuh"
#include "tuning.cuh"

namespace posttrain::advantage::detail {

// Optional device counters, in group_stats_result's order: groups, empty, singleton, zero-variance,
// ignored rows. Accumulated with atomics (counts are integers, so the order does not matter).
inline constexpr int outcome_counter_slots = 5;

template <class In, class Out>
struct outcome_args {
    const In* x = nullptr;
    index_t x_stride = 1;
    Out* y = nullptr;
    index_t y_stride = 1;
    outcome_params params;
    const double* batch_sigma = nullptr;        // device scalar under scale::batch
    const double* gain = nullptr;               // device scalar replacing params.gain (GPG's alpha from the batch)
    std::uint32_t* status = nullptr;
    unsigned long long* counters = nullptr;     // outcome_counter_slots entries, or null
    bool report_nonfinite = false;              // nonfinite::raise: the host would have thrown
};

// Status bits and counters of one finished group (called by one thread of its team). `counters` is
// the kernel's device counters or a block's shared copy of them, or null.
template <class In, class Out>
__device__ void report_group(const outcome_args<In, Out>& a, const outcome_transform& t, unsigned flags, index_t rows,
                             index_t count, unsigned long long* counters) {
    std::uint32_t bits = 0;
    if (a.report_nonfinite && (flags & 2u)) bits |= status_nonfinite_input;
    if (t.singleton_error) bits |= status_singleton_group;
    posttrain::detail::report_status(a.status, bits);
    if (counters != nullptr) {
        atomicAdd(counters + 0, 1ull);
        if (t.kind != group_regular) atomicAdd(counters + t.kind, 1ull);
        const unsigned long long ignored = static_cast<unsigned long long>(rows - count);
        if (t.skip_nan && ignored != 0) atomicAdd(counters + 4, ignored);
    }
}

// The options with what the device holds filled in: the batch std (scale::batch) and the gain (GPG).
template <class In, class Out>
__device__ outcome_params device_params(const outcome_args<In, Out>& a) {
    outcome_params p = a.params;
    if (a.batch_sigma != nullptr) p.batch_sigma = *a.batch_sigma;
    if (a.gain != nullptr) p.gain = *a.gain;
    return p;
}

// The transform of a group with these moments (the batch std, under scale::batch, is read from the
// device; the other options stay in the kernel's parameter space rather than in registers).
template <class In, class Out>
__device__ outcome_transform group_transform(const outcome_args<In, Out>& a, const outcome_moments& m) {
    return make_outcome_transform(device_params(a), m);
}

// ---- Teams: lanes = 1..32 threads of a warp, or the whole block ----------------------------------

inline constexpr int warps_per_block = cuda_tuning::block_threads / 32;

// Where a block-wide team leaves its per-warp partials (one slot per warp, folded in warp order).
template <class In>
struct block_exchange {
    double sum[warps_per_block];
    double m2[warps_per_block];
    In lo[warps_per_block];
    In hi[warps_per_block];
    long long count_flags[warps_per_block];
    In ref;
};

// Team-wide collectives for a team of L threads (1..32 lanes of one warp, or the whole block).
// Every thread of the warp (of the block, for L > 32) must call them, with a group or not (full-mask
// shuffles). The xor butterfly leaves the same sum in every lane (lane a adds a + b where lane b
// adds b + a); the block folds its warps' slots in warp order.
template <int L>
__device__ double team_sum(double v, double* slots) {
    constexpr int width = L < 32 ? L : 32;
#pragma unroll
    for (int k = width / 2; k >= 1; k /= 2) v += __shfl_xor_sync(0xffffffffu, v, k);
    if constexpr (L > 32) {
        static_assert(L == cuda_tuning::block_threads, "a team is at most a warp, or the whole block");
        if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
        __syncthreads();
        v = slots[0];
#pragma unroll
        for (int w = 1; w < warps_per_block; ++w) v += slots[w];
    }
    return v;
}

template <int L>
__device__ bool team_any(bool pred) {
    if constexpr (L > 32) {
        return __syncthreads_or(pred) != 0;
    } else {
        const unsigned votes = __ballot_sync(0xffffffffu, pred);
        if constexpr (L == 32) {
            return votes != 0;
        } else {
            const int first = static_cast<int>(threadIdx.x % 32) & ~(L - 1);
            return ((votes >> first) & ((1u << L) - 1)) != 0;
        }
    }
}

// The value of lane 0 of the team.
template <int L, class In>
__device__ In team_first(In v, block_exchange<In>* ex) {
    if constexpr (L == 1) {
        return v;
    } else if constexpr (L <= 32) {
        return __shfl_sync(0xffffffffu, v, static_cast<int>(threadIdx.x % 32) & ~(L - 1));
    } else {
        if (threadIdx.x == 0) ex->ref = v;
        __syncthreads();
        return ex->ref;
    }
}

// One thread's share of a group's first-pass statistics under nonfinite::ignore (outcome_partial,
// with min/max and the finiteness test in the input type, where they are exact, and count and
// flags packed as count << 2 | flags so that one shuffle moves both). Count is int in register teams
// (at most 256 * block_values rows) and long long in the block loop.
template <class In, class Count>
struct lane_moments {
    double sum = 0;
    In lo = static_cast<In>(__builtin_huge_val());
    In hi = -static_cast<In>(__builtin_huge_val());
    Count count_flags = 0;

    __device__ void add(In x, double v, bool skip_nan) {
        const bool nan = x != x;
        if (!(x - x == x - x)) count_flags |= 2;
        if (nan && skip_nan) return;
        if (nan) count_flags |= 1;
        sum += v;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        count_flags += 4;
    }
    __device__ void merge(double s, In l, In h, Count cf) {
        sum += s;
        lo = l < lo ? l : lo;
        hi = h > hi ? h : hi;
        count_flags = (((count_flags >> 2) + (cf >> 2)) << 2) | ((count_flags | cf) & 3);
    }
    __device__ outcome_partial partial() const {
        outcome_partial s;
        s.sum = sum;
        s.lo = static_cast<double>(lo);
        s.hi = static_cast<double>(hi);
        s.count = static_cast<long long>(count_flags >> 2);
        s.flags = static_cast<unsigned>(count_flags & 3);
        return s;
    }
};

template <int L, class In, class Count>
__device__ void team_reduce(lane_moments<In, Count>& m, block_exchange<In>* ex) {
    constexpr int width = L < 32 ? L : 32;
#pragma unroll
    for (int k = width / 2; k >= 1; k /= 2)
        m.merge(__shfl_xor_sync(0xffffffffu, m.sum, k), __shfl_xor_sync(0xffffffffu, m.lo, k),
                __shfl_xor_sync(0xffffffffu, m.hi, k), __shfl_xor_sync(0xffffffffu, m.count_flags, k));
    if constexpr (L > 32) {
        const int warp = static_cast<int>(threadIdx.x) / 32;
        if (threadIdx.x % 32 == 0) {
            ex->sum[warp] = m.sum;
            ex->lo[warp] = m.lo;
            ex->hi[warp] = m.hi;
            ex->count_flags[warp] = m.count_flags;
        }
        __syncthreads();
        m.sum = ex->sum[0];
        m.lo = ex->lo[0];
        m.hi = ex->hi[0];
        m.count_flags = static_cast<Count>(ex->count_flags[0]);
#pragma unroll
        for (int w = 1; w < warps_per_block; ++w)
            m.merge(ex->sum[w], ex->lo[w], ex->hi[w], static_cast<Count>(ex->count_flags[w]));
    }
}

// Row i (0..V-1) of a thread in a team: blocked (each thread V consecutive rows) for uniform groups,
// whose starts at multiples of the group size then spread over the shared-memory banks; interleaved
// (the team reads L consecutive rows at a time) otherwise, which keeps global reads coalesced and
// scatters ragged starts over the banks.
template <int L, int V, bool Blocked>
__device__ constexpr int team_row(int lane, int i) {
    return Blocked ? lane * V + i : lane + i * L;
}

// Shared slot of tile row i. Uniform tiles pad one slot per 8 rows, which spreads groups starting
// at multiples of 8, 16 or 32 rows over the banks; ragged groups start anywhere, and unpadded
// slots let the address of every row of a team be an immediate offset.
template <bool Padded>
__device__ constexpr int tile_slot(int i) {
    return Padded ? i + (i >> 3) : i;
}

// The rows of one group: staged in a shared tile (at slots tile_slot(first + j)), or in global memory.
template <class T, bool Padded>
struct staged_rows {
    T* tile;
    int first;
    __device__ std::remove_const_t<T> load(int j) const { return tile[tile_slot<Padded>(first + j)]; }
    __device__ void store(int j, T v) const { tile[tile_slot<Padded>(first + j)] = v; }
};

// Rows of a staged tile: uniform tiles hold what their register teams hold; ragged ones a fixed
// number of bytes, so that tiles of ~16-row groups carry ~2048 rows with room to spare.
template <class In, class Out, bool Uniform>
__host__ __device__ constexpr int tile_capacity() {
    constexpr int widest = sizeof(In) > sizeof(Out) ? static_cast<int>(sizeof(In)) : static_cast<int>(sizeof(Out));
    return Uniform ? cuda_tuning::block_threads * cuda_tuning::tile_values : cuda_tuning::ragged_tile_bytes / widest;
}

// One group of `rows` rows (rows <= L * V when `has`) handled by a team of L threads from
// registers. Every thread of the team's warp (of the block, for L > 32) must call it; threads whose
// team has no group pass has = false and only join the collectives. A team reads all its rows
// before its first collective and writes after, so dst may alias src.
//
// Without nonfinite::ignore every row counts, so the count is the group size and the first pass
// needs only the sum and whether any row differs from the group's first one (a NaN differs from
// everything: "constant" as in outcome_partial). Non-finite rows are looked for only when the
// group sum is not finite (a finite sum has none). Every per-row step is branch-free.
template <int L, int V, bool Blocked, class In, class Out, class Src, class Dst>
__device__ void team_group_counted(const outcome_args<In, Out>& a, int lane, bool has,
                                   int rows, const Src& src, const Dst& dst, block_exchange<In>* ex,
                                   unsigned long long* counters) {
    In x[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {  // all loads first: V independent requests in flight per thread
        const int j = team_row<L, V, Blocked>(lane, i);
        x[i] = In(0);
        if (has && j < rows) x[i] = src.load(j);
    }
    const In ref = team_first<L>(x[0], ex);
    double v[V];
    double sum = 0;
    bool differs = false;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        v[i] = static_cast<double>(x[i]);  // 0 outside the group
        sum += v[i];
        differs |= has && team_row<L, V, Blocked>(lane, i) < rows && x[i] != ref;
    }
    sum = team_sum<L>(sum, ex != nullptr ? ex->sum : nullptr);
    differs = team_any<L>(differs);

    outcome_moments mo;
    mo.count = has ? rows : 0;
    mo.mean = mo.count > 0 ? sum / static_cast<double>(mo.count) : 0.0;  // outcome_mean
    mo.constant = mo.count > 0 && !differs;
    if (a.params.std_scale == scale::group) {  // the same for every team: the collectives stay convergent
        double local = 0;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const double d = v[i] - mo.mean;
            if (has && team_row<L, V, Blocked>(lane, i) < rows) local += d * d;
        }
        mo.m2 = team_sum<L>(local, ex != nullptr ? ex->m2 : nullptr);  // unused when count <= 1
    }
    bool nonfinite = false;
    if (a.report_nonfinite) {
        bool mine = false;
        if (!(sum - sum == sum - sum)) {
#pragma unroll
            for (int i = 0; i < V; ++i)
                mine |= has && team_row<L, V, Blocked>(lane, i) < rows && !(v[i] - v[i] == v[i] - v[i]);
        }
        nonfinite = team_any<L>(mine);
    }
    const outcome_transform t = group_transform(a, mo);
    if (!t.fill && t.div == 1.0 && t.gain == 1.0) {  // a regular group: the transform without its special cases
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int j = team_row<L, V, Blocked>(lane, i);
            const Out y = static_cast<Out>((v[i] - t.shift) * t.factor);
            if (has && j < rows) dst.store(j, y);
        }
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int j = team_row<L, V, Blocked>(lane, i);
            if (has && j < rows) dst.store(j, t.template output<Out>(t(v[i])));
        }
    }
    if (has && lane == 0) report_group(a, t, nonfinite ? 2u : 0u, rows, mo.count, counters);
}

// The same under nonfinite::ignore, where NaN rows drop out of the count: the general reduction
// of count/sum/min/max/flags. Out of line (arguments by value), so that the common case does not
// pay for its registers.
template <int L, int V, bool Blocked, class In, class Out, class Src, class Dst>
__device__ __noinline__ void team_group_ignoring(outcome_args<In, Out> a, int lane, bool has, int rows, Src src,
                                                 Dst dst, block_exchange<In>* ex, unsigned long long* counters) {
    In x[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int j = team_row<L, V, Blocked>(lane, i);
        x[i] = In(0);
        if (has && j < rows) x[i] = src.load(j);
    }
    double v[V];
    lane_moments<In, int> m;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        v[i] = static_cast<double>(x[i]);
        if (has && team_row<L, V, Blocked>(lane, i) < rows) m.add(x[i], v[i], true);
    }
    team_reduce<L>(m, ex);
    const outcome_partial s = m.partial();
    double m2 = 0;
    if (a.params.std_scale == scale::group) {
        const double mean = outcome_mean(s);
        double local = 0;
#pragma unroll
        for (int i = 0; i < V; ++i)
            if (has && team_row<L, V, Blocked>(lane, i) < rows) local += outcome_sq_dev(v[i], mean, true);
        m2 = team_sum<L>(local, ex != nullptr ? ex->m2 : nullptr);
    }
    const outcome_transform t = group_transform(a, finish_moments(s, m2));
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int j = team_row<L, V, Blocked>(lane, i);
        if (has && j < rows) dst.store(j, t.template output<Out>(t(v[i])));
    }
    if (has && lane == 0) report_group(a, t, s.flags, rows, s.count, counters);
}

template <int L, int V, bool Blocked, class In, class Out, class Src, class Dst>
__device__ void team_group(const outcome_args<In, Out>& a, int lane, bool has, int rows,
                           const Src& src, const Dst& dst, block_exchange<In>* ex, unsigned long long* counters) {
    if (a.params.skip_nan) team_group_ignoring<L, V, Blocked>(a, lane, has, rows, src, dst, ex, counters);
    else team_group_counted<L, V, Blocked>(a, lane, has, rows, src, dst, ex, counters);
}

// One group of `rows` rows handled by a team of L threads that loop over them, three passes
// reading `src` (a shared tile, or global memory, whose second and third pass then come from L2):
// ragged tiles, whose group sizes vary, and groups too large for a block's registers. Same
// contract as team_group (every thread of the warp or block calls it; dst may alias src: each
// lane writes only rows it has read, after every collective of the first two passes).
template <int L, class I, class In, class Out, class Src, class Dst>
__device__ void team_loop_group(const outcome_args<In, Out>& a, int lane, bool has, I rows, const Src& src,
                                const Dst& dst, block_exchange<In>* ex, unsigned long long* counters) {
    if (!has) rows = 0;
    if (a.params.skip_nan) {
        lane_moments<In, long long> m;
        for (I j = lane; j < rows; j += L) {
            const In x = src.load(j);
            m.add(x, static_cast<double>(x), true);
        }
        team_reduce<L>(m, ex);
        const outcome_partial s = m.partial();
        double m2 = 0;
        if (a.params.std_scale == scale::group) {
            const double mean = outcome_mean(s);
            double local = 0;
            for (I j = lane; j < rows; j += L) local += outcome_sq_dev(static_cast<double>(src.load(j)), mean, true);
            m2 = team_sum<L>(local, ex != nullptr ? ex->m2 : nullptr);
        }
        const outcome_transform t = group_transform(a, finish_moments(s, m2));
        for (I j = lane; j < rows; j += L) dst.store(j, t.template output<Out>(t(static_cast<double>(src.load(j)))));
        if (has && lane == 0) report_group(a, t, s.flags, rows, s.count, counters);
        return;
    }
    // As team_group_counted: the count is the group size, the first pass the sum and whether any
    // row differs from the first one.
    const In ref = rows > 0 ? src.load(0) : In(0);
    double sum = 0;
    bool differs = false;
#pragma unroll(cuda_tuning::loop_unroll)
    for (I j = lane; j < rows; j += L) {
        const In x = src.load(j);
        sum += static_cast<double>(x);
        differs |= x != ref;
    }
    sum = team_sum<L>(sum, ex != nullptr ? ex->sum : nullptr);
    differs = team_any<L>(differs);
    outcome_moments mo;
    mo.count = rows;
    mo.mean = rows > 0 ? sum / static_cast<double>(rows) : 0.0;  // outcome_mean
    mo.constant = rows > 0 && !differs;
    if (a.params.std_scale == scale::group) {
        double local = 0;
#pragma unroll(cuda_tuning::loop_unroll)
        for (I j = lane; j < rows; j += L) {
            const double d = static_cast<double>(src.load(j)) - mo.mean;
            local += d * d;
        }
        mo.m2 = team_sum<L>(local, ex != nullptr ? ex->m2 : nullptr);
    }
    bool nonfinite = false;
    if (a.report_nonfinite) {
        bool mine = false;
        if (!(sum - sum == sum - sum))
            for (I j = lane; j < rows; j += L) {
                const In x = src.load(j);
                mine |= !(x - x == x - x);
            }
        nonfinite = team_any<L>(mine);
    }
    const outcome_transform t = group_transform(a, mo);
    if (!t.fill && t.div == 1.0 && t.gain == 1.0) {
#pragma unroll(cuda_tuning::loop_unroll)
        for (I j = lane; j < rows; j += L)
            dst.store(j, static_cast<Out>((static_cast<double>(src.load(j)) - t.shift) * t.factor));
    } else {
        for (I j = lane; j < rows; j += L) dst.store(j, t.template output<Out>(t(static_cast<double>(src.load(j)))));
    }
    if (has && lane == 0) report_group(a, t, nonfinite ? 2u : 0u, rows, mo.count, counters);
}

// A group too large for a block's registers: the whole block loops over it. Every thread calls it.
// Out of line (arguments by value): the kernels that hold groups in registers need theirs.
template <class In, class Out, class Layout>
__device__ __noinline__ void block_loop_group(outcome_args<In, Out> a, Layout layout, index_t begin, index_t end,
                                              block_exchange<In>* ex, unsigned long long* counters) {
    constexpr int threads = cuda_tuning::block_threads;
    team_loop_group<threads>(a, static_cast<int>(threadIdx.x), true, end - begin,
                             layout.rows_at(a.x, a.x_stride, begin), layout.rows_at(a.y, a.y_stride, begin), ex,
                             counters);
    __syncthreads();  // the exchange slots are reused by the next group
}

// ---- Kernels -------------------------------------------------------------------------------------

// What one thread knows of a tile. `staged`: every group of the tile is valid and the tile's rows
// fit in its buffer (always so for uniform layouts, whose group size the host matched to the team),
// so that the rows [r0, r0 + rows) are staged in shared memory, the team's group at [first, first + size).
// A team's groups are consecutive: [first + p * size, first + (p + 1) * size) for p < groups.
struct tile_plan {
    index_t r0 = 0;
    int first = 0, size = 0, rows = 0;
    int groups = 0;  // this team's groups in the tile (0 or 1, except for uniform single-lane teams)
    bool has = false, staged = true;
};

// Groups per team in a tile: one, except that single-lane teams of a uniform layout take as many
// groups as their tile_values registers hold (k <= tile_values there), so that a tile of groups of
// 1..4 rows still carries ~block_threads * tile_values rows: a block keeps as many bytes in flight
// as with groups of 8 (with one group per thread, groups of 4 left the tiles half empty).
template <int L, class Layout>
__host__ __device__ int groups_per_team(const Layout& layout) {
    if constexpr (Layout::uniform && L == 1) return cuda_tuning::tile_values / static_cast<int>(layout.k);
    else return 1;
}

// Ragged tiles read their offsets from shared memory (s_off[0..teams] = offsets of the tile's
// groups g0 .. g0 + teams, prefetched), uniform ones compute them. Every thread calls it.
template <int L, int Capacity, class Layout>
__device__ tile_plan plan_tile(const Layout& layout, index_t tile, index_t groups, const index_t* s_off) {
    constexpr int teams = cuda_tuning::block_threads / L;
    tile_plan t;
    const int team = static_cast<int>(threadIdx.x) / L;
    if constexpr (Layout::uniform) {
        const int per = groups_per_team<L>(layout);
        const index_t g0 = tile * teams * per;
        const int count = static_cast<int>(g0 + teams * per < groups ? teams * per : groups - g0);
        const int k = static_cast<int>(layout.k);  // k <= 32 * tile_values here
        const int mine = count - team * per;
        t.groups = mine < 0 ? 0 : mine < per ? mine : per;
        t.has = t.groups > 0;
        t.r0 = g0 * layout.k;
        t.first = team * per * k;
        t.size = k;
        t.rows = count * k;
    } else {
        const index_t g0 = tile * teams;
        const int count = static_cast<int>(g0 + teams < groups ? teams : groups - g0);
        t.has = team < count;
        t.groups = t.has ? 1 : 0;
        bool ok = true;
        index_t begin = 0, end = 0;
        if (t.has) {
            begin = s_off[team];
            end = s_off[team + 1];
            ok = layout.valid(g0 + team, begin, end, groups);
        }
        t.r0 = s_off[0];
        const index_t r1 = s_off[count];
        // Valid CSR groups are contiguous, so then the tile's rows are [r0, r1).
        t.staged = __syncthreads_and(ok) && r1 - t.r0 <= Capacity;
        if (t.staged) {
            t.first = static_cast<int>(begin - t.r0);
            t.size = static_cast<int>(end - begin);
            t.rows = static_cast<int>(r1 - t.r0);
        }
    }
    return t;
}

// Loads (plain loads: they land while the current tile is computed) the offsets of a ragged tile:
// thread i < count + 1 takes entry g0 + i.
template <int L, class Layout>
__device__ index_t fetch_offset(const Layout& layout, index_t tile, index_t groups) {
    constexpr int teams = cuda_tuning::block_threads / L;
    const index_t g = tile * teams + static_cast<index_t>(threadIdx.x);
    if constexpr (Layout::uniform) return 0;
    else return threadIdx.x <= teams && g <= groups ? layout.begin_of(g) : 0;
}

// Starts the asynchronous copy of a staged tile's rows into shared memory (cp.async: no registers
// held, so the copy of the next tile overlaps the arithmetic of this one). A permuted layout
// gathers its positions' rows instead; a position with no valid row stores 0 in its slot, as the
// global-memory readers read it (so a malformed layout gives the same, deterministic result on
// every path: the slot would otherwise hold whatever the buffer held before).
template <bool Padded, int Capacity, class In, class Layout>
__device__ void stage_tile(In* tile, const In* x, index_t stride, const tile_plan& t, const Layout& layout) {
    constexpr int threads = cuda_tuning::block_threads;
    constexpr int V = Capacity / threads;
    if (!t.staged) return;
    const int tid = static_cast<int>(threadIdx.x);
    In* to = tile + tile_slot<Padded>(tid);
    if constexpr (Layout::permuted) {
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;
            if (u * threads + tid < t.rows) {
                const index_t row = layout.row(t.r0 + u * threads + tid);
                if (row >= 0) __pipeline_memcpy_async(to + u * tile_slot<Padded>(threads), x + row * stride, sizeof(In));
                else to[u * tile_slot<Padded>(threads)] = In(0);  // a buffer nobody reads until the next barrier
            }
        }
        return;
    }
    if (stride == 1) {
        const In* from = x + t.r0 + tid;
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;  // ragged tiles are rarely full
            if (u * threads + tid < t.rows)
                __pipeline_memcpy_async(to + u * tile_slot<Padded>(threads), from + u * threads, sizeof(In));
        }
    } else {
        const In* from = x + (t.r0 + tid) * stride;
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;  // ragged tiles are rarely full
            if (u * threads + tid < t.rows)
                __pipeline_memcpy_async(to + u * tile_slot<Padded>(threads), from + u * threads * stride, sizeof(In));
        }
    }
}

// Writes a computed tile back with coalesced stores (a permuted layout scatters to its rows).
template <bool Padded, int Capacity, class Out, class Layout>
__device__ void unstage_tile(const Out* tile, Out* y, index_t stride, const tile_plan& t, const Layout& layout) {
    constexpr int threads = cuda_tuning::block_threads;
    constexpr int V = Capacity / threads;
    const int tid = static_cast<int>(threadIdx.x);
    const Out* from = tile + tile_slot<Padded>(tid);
    if constexpr (Layout::permuted) {
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;
            if (u * threads + tid < t.rows) {
                const index_t row = layout.row(t.r0 + u * threads + tid);
                if (row >= 0) y[row * stride] = from[u * tile_slot<Padded>(threads)];
            }
        }
        return;
    }
    if (stride == 1) {
        Out* to = y + t.r0 + tid;
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;  // ragged tiles are rarely full
            if (u * threads + tid < t.rows) to[u * threads] = from[u * tile_slot<Padded>(threads)];
        }
    } else {
        Out* to = y + (t.r0 + tid) * stride;
#pragma unroll
        for (int u = 0; u < V; ++u) {
            if (!Padded && u * threads >= t.rows) break;  // ragged tiles are rarely full
            if (u * threads + tid < t.rows) to[u * threads * stride] = from[u * tile_slot<Padded>(threads)];
        }
    }
}

// The ragged tile kernel's way out, for a tile with invalid offsets or more rows than its buffer:
// teams loop over their groups in global memory, and the block takes each large group in turn.
// Out of line, with its arguments by value, and called after the pipelined loop, so that the
// staged path keeps its registers.
template <int L, class In, class Out, class Layout>
__device__ __noinline__ void tile_fallback(outcome_args<In, Out> a, Layout layout, index_t tile, index_t groups,
                                           block_exchange<In>* ex, index_t* s_big, unsigned long long* counters) {
    constexpr int teams = cuda_tuning::block_threads / L;
    const int tid = static_cast<int>(threadIdx.x);
    const int lane = tid % L;
    const index_t g = tile * teams + tid / L;
    index_t begin = 0, end = 0;
    const bool has = g < groups;
    const bool ok = has && layout.bounds(g, begin, end, groups);
    const bool small = ok && end - begin <= index_t{32} * L;
    if (has && !ok && lane == 0) posttrain::detail::report_status(a.status, status_invalid_groups);
    team_loop_group<L>(a, lane, small, small ? end - begin : 0, layout.rows_at(a.x, a.x_stride, small ? begin : 0),
                       layout.rows_at(a.y, a.y_stride, small ? begin : 0), static_cast<block_exchange<In>*>(nullptr),
                       counters);
    if (lane == 0) s_big[tid / L] = ok && !small ? g : -1;
    __syncthreads();
    for (int t = 0; t < teams; ++t) {
        if (s_big[t] < 0) continue;
        index_t b, e;
        layout.bounds(s_big[t], b, e, groups);
        block_loop_group(a, layout, b, e, ex, counters);
    }
    __syncthreads();  // s_big is rewritten by the next deferred tile
}

// Tile kernel: tile t is groups [t * teams * per, (t + 1) * teams * per), per consecutive groups per
// team of L threads (per = groups_per_team: 1 except for single-lane uniform teams). Blocks walk
// the tiles with a grid stride, double-buffered: the rows of the next tile (and, for ragged
// layouts, the offsets of the one after) are in flight while the current one is computed. Results
// go back to the tile (in place when In and Out have the same size) and out with coalesced
// stores. Counters are summed per block in shared memory first.
template <int L, class In, class Out, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads,
                                  Layout::uniform ? cuda_tuning::tile_min_blocks : cuda_tuning::ragged_min_blocks)
    outcome_tile_kernel(outcome_args<In, Out> a, Layout layout, index_t groups) {
    constexpr int threads = cuda_tuning::block_threads;
    constexpr int V = cuda_tuning::tile_values;
    constexpr int teams = threads / L;
    constexpr bool ragged = !Layout::uniform;
    constexpr int capacity = tile_capacity<In, Out, !ragged>();
    constexpr int slots = tile_slot<!ragged>(capacity);
    constexpr bool in_place = sizeof(In) == sizeof(Out);
    constexpr int in_bytes = (slots * static_cast<int>(sizeof(In)) + 15) / 16 * 16;
    constexpr int out_bytes = in_place ? 0 : slots * static_cast<int>(sizeof(Out));
    __shared__ alignas(16) unsigned char s_tiles[2 * in_bytes + out_bytes];
    __shared__ unsigned long long s_counters[outcome_counter_slots];
    __shared__ block_exchange<In> s_exchange;
    __shared__ index_t s_off[2][ragged ? teams + 1 : 1];
    __shared__ index_t s_big[ragged ? teams : 1];
    __shared__ unsigned s_deferred[ragged ? cuda_tuning::tile_deferral_words : 1];

    const int tid = static_cast<int>(threadIdx.x);
    const int lane = tid % L;
    unsigned long long* counters = a.counters != nullptr ? s_counters : nullptr;
    if (counters != nullptr && tid < outcome_counter_slots) s_counters[tid] = 0;
    if constexpr (ragged)
        if (tid < cuda_tuning::tile_deferral_words) s_deferred[tid] = 0;

    groups = layout.live_groups(groups);  // a device-held count may leave fewer than launched for
    const int per = groups_per_team<L>(layout);
    const index_t tiles = (groups + teams * per - 1) / (teams * per);
    if (static_cast<index_t>(blockIdx.x) >= tiles) return;  // the whole block: no tile to plan
    const index_t step = gridDim.x;
    index_t tile = blockIdx.x;
    // Prologue: offsets of the first tile (now) and the second (in flight); rows of the first.
    if constexpr (ragged)
        if (tid <= teams) s_off[0][tid] = fetch_offset<L>(layout, tile, groups);
    index_t pending = fetch_offset<L>(layout, tile + step, groups);
    __syncthreads();
    tile_plan cur = plan_tile<L, capacity>(layout, tile, groups, s_off[0]);
    stage_tile<!ragged, capacity>(reinterpret_cast<In*>(s_tiles), a.x, a.x_stride, cur, layout);
    __pipeline_commit();
    for (int buf = 0, round = 0; tile < tiles; tile += step, buf ^= 1, ++round) {
        const index_t next = tile + step;
        tile_plan nxt;
        if (next < tiles) {
            if constexpr (ragged) {
                if (tid <= teams) s_off[buf ^ 1][tid] = pending;
                pending = fetch_offset<L>(layout, next + step, groups);
                __syncthreads();
            }
            nxt = plan_tile<L, capacity>(layout, next, groups, s_off[buf ^ 1]);
            stage_tile<!ragged, capacity>(reinterpret_cast<In*>(s_tiles + (buf ^ 1) * in_bytes), a.x, a.x_stride, nxt,
                                          layout);
        }
        __pipeline_commit();
        __pipeline_wait_prior(1);  // this tile's copy (all but the group just committed)
        __syncthreads();

        if (cur.staged) {
            const In* in_tile = reinterpret_cast<const In*>(s_tiles + buf * in_bytes);
            Out* out_tile = reinterpret_cast<Out*>(in_place ? s_tiles + buf * in_bytes : s_tiles + 2 * in_bytes);
            if constexpr (ragged)
                team_loop_group<L>(a, lane, cur.has, cur.size, staged_rows<const In, false>{in_tile, cur.first},
                                   staged_rows<Out, false>{out_tile, cur.first},
                                   static_cast<block_exchange<In>*>(nullptr), counters);
            else
                for (int p = 0; p < per; ++p)  // the same count in every thread: the collectives stay convergent
                    team_group<L, V, true>(a, lane, p < cur.groups, cur.size,
                                           staged_rows<const In, true>{in_tile, cur.first + p * cur.size},
                                           staged_rows<Out, true>{out_tile, cur.first + p * cur.size},
                                           static_cast<block_exchange<In>*>(nullptr), counters);
            __syncthreads();
            unstage_tile<!ragged, capacity>(out_tile, a.y, a.y_stride, cur, layout);
        } else if constexpr (ragged) {
            // Left for after the loop, where the pipeline's registers are free.
            if (tid == 0) s_deferred[round / 32] |= 1u << (round % 32);
        }
        __syncthreads();  // this tile's buffers take the copies issued by the next iteration
        cur = nxt;
    }
    __pipeline_wait_prior(0);
    if constexpr (ragged) {
        __syncthreads();
        for (int w = 0; w < cuda_tuning::tile_deferral_words; ++w)
            for (unsigned bits = s_deferred[w]; bits != 0; bits &= bits - 1) {
                const index_t round = w * 32 + __ffs(static_cast<int>(bits)) - 1;
                tile_fallback<L>(a, layout, blockIdx.x + round * step, groups, &s_exchange, s_big, counters);
            }
    }
    if (counters != nullptr) {
        __syncthreads();
        if (tid < outcome_counter_slots && s_counters[tid] != 0) atomicAdd(a.counters + tid, s_counters[tid]);
    }
}

// Block kernel: a block per group (grid stride). Groups of up to threads * block_values rows live in
// registers; larger ones are looped over.
template <class In, class Out, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads, cuda_tuning::block_min_blocks)
    outcome_block_kernel(outcome_args<In, Out> a, Layout layout, index_t groups) {
    constexpr int threads = cuda_tuning::block_threads;
    constexpr int V = cuda_tuning::block_values;
    __shared__ block_exchange<In> ex;
    groups = layout.live_groups(groups);
    for (index_t g = blockIdx.x; g < groups; g += gridDim.x) {
        index_t begin, end;
        if (!layout.bounds(g, begin, end, groups)) {
            if (threadIdx.x == 0) posttrain::detail::report_status(a.status, status_invalid_groups);
            continue;
        }
        if (end - begin <= index_t{threads} * V) {
            team_group<threads, V, false>(a, static_cast<int>(threadIdx.x), true, static_cast<int>(end - begin),
                                          layout.rows_at(a.x, a.x_stride, begin), layout.rows_at(a.y, a.y_stride, begin),
                                          &ex, a.counters);
            __syncthreads();  // the exchange slots are reused by the next group
        } else {
            block_loop_group(a, layout, begin, end, &ex, a.counters);
        }
    }
}

// Row j of a group, as a double (the reader float32_one_pass_transform takes).
template <class Rows>
struct rows_as_double {
    Rows rows;
    __device__ double operator()(index_t j) const { return static_cast<double>(rows.load(j)); }
};

// statistics::float32_one_pass (verl's vectorized group_mean_std, for parity): a thread per group
// runs float32_one_pass_transform over the group's rows in group order, the host's one function in
// the host's order, so every advantage equals the host's bit for bit. A parity mode, not a fast
// one: a group's rows are read four times by one thread (L1/L2 serve the repeats).
template <class In, class Out, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    outcome_float32_kernel(outcome_args<In, Out> a, Layout layout, index_t groups) {
    groups = layout.live_groups(groups);  // every thread calls it (it may hold a barrier)
    const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
    for (index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += step) {
        index_t begin, end;
        if (!layout.bounds(g, begin, end, groups)) {
            posttrain::detail::report_status(a.status, status_invalid_groups);
            continue;
        }
        const auto src = layout.rows_at(a.x, a.x_stride, begin);
        const auto dst = layout.rows_at(a.y, a.y_stride, begin);
        const index_t n = end - begin;
        outcome_transform t;
        if (n > 1) {
            t = float32_one_pass_transform(device_params(a), n, rows_as_double<decltype(src)>{src});
        } else {
            outcome_moments m;  // empty or singleton: the float64 path's handling (their mean is not used)
            m.count = n;
            t = group_transform(a, m);
        }
        unsigned flags = 0;
        for (index_t j = 0; j < n; ++j) {
            const double v = static_cast<double>(src.load(j));
            if (!(v - v == v - v)) flags = 2u;
            dst.store(j, t.template output<Out>(t(v)));
        }
        report_group(a, t, flags, n, n, a.counters);
    }
}

// Batch std (scale::batch) in three deterministic steps over a fixed number of partials:
// partial count/sum per block, then partial squared deviations, then one block finishes.
template <class In>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_sum_kernel(const In* x, index_t xs, index_t n, bool skip, outcome_partial* partials) {
    using reduce_t = cub::BlockReduce<outcome_partial, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    outcome_partial part;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        part.add(static_cast<double>(x[i * xs]), skip);
    part = reduce_t(temp).Reduce(part, outcome_partial_combine{});
    if (threadIdx.x == 0) partials[blockIdx.x] = part;
}

// Every block folds the partials in the same order, so all agree on the mean.
__device__ inline outcome_partial fold_partials(const outcome_partial* partials, int count) {
    using reduce_t = cub::BlockReduce<outcome_partial, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    __shared__ outcome_partial result;
    outcome_partial part;
    for (int i = static_cast<int>(threadIdx.x); i < count; i += cuda_tuning::block_threads)
        part = outcome_partial_combine{}(part, partials[i]);
    part = reduce_t(temp).Reduce(part, outcome_partial_combine{});
    if (threadIdx.x == 0) result = part;
    __syncthreads();
    return result;
}

template <class In>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_m2_kernel(const In* x, index_t xs, index_t n, bool skip, const outcome_partial* partials, double* m2_partials) {
    using reduce_t = cub::BlockReduce<double, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    const double mean = outcome_mean(fold_partials(partials, static_cast<int>(gridDim.x)));
    double local = 0;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        local += outcome_sq_dev(static_cast<double>(x[i * xs]), mean, skip);
    local = reduce_t(temp).Sum(local);
    if (threadIdx.x == 0) m2_partials[blockIdx.x] = local;
}

// Folds the partials of batch_sum_kernel and batch_m2_kernel (the same in every run): the batch's
// first-pass statistics and its sum of squared deviations. Every thread calls it.
__device__ inline void fold_batch(const outcome_partial* partials, const double* m2_partials, int count,
                                  outcome_partial& all, double& m2) {
    using reduce_t = cub::BlockReduce<double, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    all = fold_partials(partials, count);
    double local = 0;
    for (int i = static_cast<int>(threadIdx.x); i < count; i += cuda_tuning::block_threads) local += m2_partials[i];
    m2 = reduce_t(temp).Sum(local);  // valid in thread 0
}

// A template (never instantiated twice differently) so that translation units including this header
// do not each define it: a kernel cannot be inline.
template <int Unused = 0>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_finish_kernel(const outcome_partial* partials, const double* m2_partials, int count, outcome_params params,
                        double* sigma) {
    outcome_partial all;
    double m2;
    fold_batch(partials, m2_partials, count, all, m2);
    if (threadIdx.x == 0) *sigma = batch_sigma_of(params, all, m2);
}

// The whole batch as one group (single_group): its transform from the batch moments, with the
// group's status bits and counters.
template <class In, class Out>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    single_group_finish_kernel(outcome_args<In, Out> a, const outcome_partial* partials, const double* m2_partials,
                               int count, index_t rows, outcome_transform* transform) {
    outcome_partial all;
    double m2;
    fold_batch(partials, m2_partials, count, all, m2);
    if (threadIdx.x == 0) {
        const outcome_transform t = group_transform(a, finish_moments(all, m2));
        *transform = t;
        report_group(a, t, all.flags, rows, all.count, a.counters);
    }
}

template <class In, class Out>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    apply_transform_kernel(outcome_args<In, Out> a, const outcome_transform* transform, index_t n) {
    const outcome_transform t = *transform;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        a.y[i * a.y_stride] = t.template output<Out>(t(static_cast<double>(a.x[i * a.x_stride])));
}

// Scratch of the batch-wide reductions (scale::batch, single_group): the partials, then one result
// slot (the batch std, or a group's transform).
inline std::size_t batch_scratch_bytes() noexcept {
    using posttrain::detail::scratch_align;
    static_assert(sizeof(outcome_transform) <= posttrain::detail::scratch_alignment, "one result slot");
    return scratch_align(sizeof(outcome_partial) * cuda_tuning::batch_partials) +
           scratch_align(sizeof(double) * cuda_tuning::batch_partials) + scratch_align(sizeof(outcome_transform));
}

// Scratch of an outcome call: only scale::batch needs any.
inline std::size_t outcome_workspace_bytes(scale s) noexcept { return s == scale::batch ? batch_scratch_bytes() : 0; }

// Enqueues the batch-wide first and second passes over x[0..n) into `scratch` (batch_scratch_bytes)
// and returns the result slot, which `Finish` (batch_finish_kernel or single_group_finish_kernel)
// fills from them.
struct batch_scratch {
    outcome_partial* partials;
    double* m2;
    unsigned char* result;
};
template <class In>
batch_scratch launch_batch_moments(const exec::cuda_policy& pol, const In* x, index_t xs, index_t n, bool skip,
                                   unsigned char* scratch, const char* fn) {
    using posttrain::detail::scratch_align;
    constexpr int parts = cuda_tuning::batch_partials;
    batch_scratch b;
    b.partials = reinterpret_cast<outcome_partial*>(scratch);
    b.m2 = reinterpret_cast<double*>(scratch + scratch_align(sizeof(outcome_partial) * parts));
    b.result = scratch + scratch_align(sizeof(outcome_partial) * parts) + scratch_align(sizeof(double) * parts);
    batch_sum_kernel<<<parts, cuda_tuning::block_threads, 0, pol.stream>>>(x, xs, n, skip, b.partials);
    posttrain::detail::check_launch(fn);
    batch_m2_kernel<<<parts, cuda_tuning::block_threads, 0, pol.stream>>>(x, xs, n, skip, b.partials, b.m2);
    posttrain::detail::check_launch(fn);
    return b;
}

// The n rows of a.x as one group (what uniform_groups{n} means), with every pass spread over the
// GPU: batch moments, one transform, an elementwise apply. Scratch: batch_scratch_bytes().
template <class In, class Out>
void launch_single_group(const exec::cuda_policy& pol, const outcome_args<In, Out>& a, index_t n, unsigned char* scratch,
                         const char* fn) {
    if (n == 0) return;
    const batch_scratch b = launch_batch_moments(pol, a.x, a.x_stride, n, a.params.skip_nan, scratch, fn);
    auto* transform = reinterpret_cast<outcome_transform*>(b.result);
    single_group_finish_kernel<<<1, cuda_tuning::block_threads, 0, pol.stream>>>(a, b.partials, b.m2,
                                                                                 cuda_tuning::batch_partials, n, transform);
    posttrain::detail::check_launch(fn);
    apply_transform_kernel<<<cuda_tuning::elementwise_blocks(n), cuda_tuning::block_threads, 0, pol.stream>>>(a, transform, n);
    posttrain::detail::check_launch(fn);
}

template <int L, class In, class Out, class Layout>
void launch_tile(const exec::cuda_policy& pol, const outcome_args<In, Out>& a, const Layout& layout, index_t groups,
                 const char* fn) {
    const index_t per_tile = index_t{cuda_tuning::block_threads / L} * groups_per_team<L>(layout);
    // As many blocks as are resident at once (each walks its tiles double-buffered) ...
    int device = 0, sms = 0;
    POSTTRAIN_CUDA_CHECK(cudaGetDevice(&device));
    POSTTRAIN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const index_t tiles = (groups + per_tile - 1) / per_tile;
    index_t blocks = index_t{sms} * (Layout::uniform ? cuda_tuning::tile_min_blocks : cuda_tuning::ragged_min_blocks);
    // ... and enough that no block walks more tiles than it can defer.
    const index_t rounds = index_t{32} * cuda_tuning::tile_deferral_words;
    if (blocks < (tiles + rounds - 1) / rounds) blocks = (tiles + rounds - 1) / rounds;
    if (blocks > tiles) blocks = tiles;
    outcome_tile_kernel<L><<<static_cast<unsigned>(blocks), cuda_tuning::block_threads, 0, pol.stream>>>(a, layout,
                                                                                                        groups);
    posttrain::detail::check_launch(fn);
}

// Picks the kernel shape for a layout and launches it on the policy's stream.
// `scratch`: outcome_workspace_bytes(params.std_scale) bytes, 256-byte aligned (null when that is 0);
// `gain`: a device scalar that replaces params.gain, or null.
template <class In, class Out, class DeviceLayout>
void launch_outcome(const exec::cuda_policy& pol, device_view<const In, 1> r, device_view<Out, 1> adv,
                    const posttrain::detail::device_layout_info<DeviceLayout>& info, const outcome_params& params,
                    bool report_nonfinite, unsigned long long* counters, unsigned char* scratch, const double* gain,
                    posttrain::detail::where w) {
    const index_t n = r.extent(0);
    const index_t groups = info.groups;
    if (groups == 0) return;
    outcome_args<In, Out> a;
    a.x = r.data();
    a.x_stride = r.stride(0);
    a.y = adv.data();
    a.y_stride = adv.stride(0);
    a.params = params;
    a.status = pol.status;
    a.counters = counters;
    a.report_nonfinite = report_nonfinite;
    a.gain = gain;

    if (params.std_scale == scale::batch) {
        const batch_scratch b = launch_batch_moments(pol, a.x, a.x_stride, n, params.skip_nan, scratch, w.function);
        auto* sigma = reinterpret_cast<double*>(b.result);
        batch_finish_kernel<<<1, cuda_tuning::block_threads, 0, pol.stream>>>(b.partials, b.m2,
                                                                              cuda_tuning::batch_partials, params, sigma);
        posttrain::detail::check_launch(w.function);
        a.batch_sigma = sigma;
    }

    if (params.float32_one_pass) {
        outcome_float32_kernel<<<cuda_tuning::elementwise_blocks(groups), cuda_tuning::block_threads, 0, pol.stream>>>(
            a, info.layout, groups);
        posttrain::detail::check_launch(w.function);
        return;
    }

    // Uniform groups of up to 32 * tile_values rows: register teams sized to the group. Ragged
    // layouts know only the mean size: looping teams, as few lanes as leave every tile room for
    // twice its mean rows (a tile that still overflows is handled after the others).
    int lanes = 0;
    if (info.exact_size >= 0) {
        if (info.exact_size <= index_t{cuda_tuning::tile_max_lanes} * cuda_tuning::tile_values)
            lanes = cuda_tuning::lanes_for(info.exact_size);
    } else {
        constexpr index_t capacity = tile_capacity<In, Out, false>();
        // A stated mean above the capacity fits no lane count either way; clamping it keeps the
        // product below from overflowing (expected_group_size is only checked to be >= 0).
        const index_t stated = info.typical_size > 0 ? info.typical_size : n / groups;
        const index_t mean = stated < capacity ? stated : capacity;
        const index_t room = cuda_tuning::ragged_room * mean * cuda_tuning::block_threads;  // rows a tile of single-lane teams may need
        for (int l = 1; l <= cuda_tuning::tile_max_lanes && lanes == 0; l *= 2)
            if (room / l <= capacity) lanes = l;
    }
    switch (lanes) {
        case 1: launch_tile<1>(pol, a, info.layout, groups, w.function); return;
        case 2: launch_tile<2>(pol, a, info.layout, groups, w.function); return;
        case 4: launch_tile<4>(pol, a, info.layout, groups, w.function); return;
        case 8: launch_tile<8>(pol, a, info.layout, groups, w.function); return;
        case 16: launch_tile<16>(pol, a, info.layout, groups, w.function); return;
        case 32: launch_tile<32>(pol, a, info.layout, groups, w.function); return;
        default: break;
    }
    const index_t blocks = groups < cuda_tuning::max_grid_blocks ? groups : cuda_tuning::max_grid_blocks;
    outcome_block_kernel<<<static_cast<unsigned>(blocks), cuda_tuning::block_threads, 0, pol.stream>>>(a, info.layout,
                                                                                                       groups);
    posttrain::detail::check_launch(w.function);
}

}  // namespace posttrain::advantage::detail

namespace posttrain::advantage::detail {

// Host checks shared by the entries of the group kernels (outcome, pass@k, OPO, GDPO).
inline void check_counters(device_view<index_t, 1> stats, const char* fn) {
    using posttrain::detail::require;
    require(stats.size() == 0 || stats.extent(0) == outcome_counter_slots, {fn, "stats"},
            "expected " + posttrain::detail::str(outcome_counter_slots) +
                " device counters (groups, empty, singleton, zero-variance, ignored rows), found " +
                posttrain::detail::str(stats.extent(0)));
    require(stats.size() == 0 || stats.stride(0) == 1, {fn, "stats"}, "the counters must be contiguous");
}

// advantages[N] beside rewards[N], apart from them.
template <class R, class A>
void check_row_output(const R& r, const A& a, const char* fn) {
    posttrain::detail::require(a.extent(0) == r.extent(0), {fn, "advantages"},
                               "expected length (one advantage per reward) " + posttrain::detail::str(r.extent(0)) +
                                   ", found " + posttrain::detail::str(a.extent(0)));
    posttrain::detail::require(!views_overlap(a, r), {fn, "advantages"},
                               "the output overlaps the input 'rewards'; pass a separate buffer");
}

// Nothing a kernel writes may share bytes with the layout it reads (see layout_buffer_overlapping):
// outputs, the counters (the policy's workspace and status word: check_policy_apart_from_layout).
using posttrain::detail::check_apart_from_layout;

// The host checks every rewards -> advantages entry makes (shapes, aliasing, outputs apart from the
// layout, the counters apart from the rewards, advantages and `extras` (OPO's lengths, GDPO's
// combined: views the call also reads or writes), the policy's workspace and status word apart from
// all of them and the layout, singleton::error with groups of one row), then the device layout. The
// counters, like the status word, are written with atomics while other blocks still read and write
// the views.
template <class Groups, class R, class A, class... X>
auto checked_device_layout(const exec::cuda_policy& policy, const Groups& groups, const R& r, const A& a,
                           device_view<index_t, 1> stats, singleton singletons, const char* fn,
                           const std::pair<X, const char*>&... extras) {
    check_row_output(r, a, fn);
    check_apart_from_layout(groups, a, fn, "advantages");
    check_apart_from_layout(groups, stats, fn, "stats");
    check_no_alias(stats, r, {fn, "stats"}, "rewards");
    check_no_alias(stats, a, {fn, "stats"}, "advantages");
    (check_no_alias(stats, extras.first, {fn, "stats"}, extras.second), ...);
    posttrain::detail::check_policy_apart(policy, fn, std::pair{r, "rewards"}, std::pair{a, "advantages"},
                                          std::pair{stats, "stats"}, extras...);
    posttrain::detail::check_policy_apart_from_layout(policy, groups, fn);
    auto info = posttrain::detail::make_device_layout(policy, groups, r.extent(0), {fn, "groups"});
    if (singletons == singleton::error && info.exact_size == 1 && r.extent(0) > 0)
        posttrain::detail::raise_invalid_argument(fn, "groups", "every group has a single row (singleton::error)");
    return info;
}

// The gain of plain GRPO/RLOO: params.gain, known on the host; no scratch.
struct host_gain {
    std::size_t scratch_bytes() const noexcept { return 0; }
    template <class R>
    const double* operator()(const exec::cuda_policy&, R, unsigned char*, const char*) const {
        return nullptr;
    }
};

// The public entry shared by grpo.cuh, rloo.cuh and gpg.cuh: checks what the host can check,
// converts the arguments to device views (device_view, or DLPack tensors on a CUDA device) and
// launches. `stats`, when not empty, receives outcome_counter_slots int64 counters (added to, not
// overwritten). `gain` may enqueue work that leaves a device scalar replacing params.gain (GPG's
// alpha from the batch): it gets the rewards and gain.scratch_bytes() of scratch.
template <class Rewards, class Groups, class Advantages, class Gain = host_gain>
void run_outcome_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups,
                      Advantages&& advantages, const outcome_params& params, nonfinite nonfinite_rewards,
                      device_view<index_t, 1> stats, const char* fn, const Gain& gain = {}) {
    auto rv = posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1, device_space>(advantages, {fn, "advantages"});
    check_counters(stats, fn);
    std::visit(
        [&](auto r, auto a) {
            const auto info = checked_device_layout(policy, groups, r, a, stats, params.singleton_groups, fn);
            posttrain::detail::scratch_cursor layout;
            const std::size_t engine_at = layout.take(outcome_workspace_bytes(params.std_scale));
            const std::size_t gain_at = layout.take(gain.scratch_bytes());
            posttrain::detail::cuda_scratch scratch(policy, layout.end, {fn, "policy"});
            const double* device_gain = gain(policy, r, scratch.template as<unsigned char>(gain_at), fn);
            launch_outcome(policy, r, a, info, params, nonfinite_rewards == nonfinite::raise,
                           reinterpret_cast<unsigned long long*>(stats.data()),
                           scratch.template as<unsigned char>(engine_at), device_gain, {fn, "policy"});
        },
        rv, av);
}

}  // namespace posttrain::advantage::detail
