#pragma once
// Masked statistics on the GPU: the exec::cuda overloads of advantage::masked_whiten, masked_mean,
// masked_var, masked_row_mean and masked_normalize.
//
//     pt::advantage::masked_whiten(pt::exec::cuda.on(stream), d_values, d_mask, d_out, pt::advantage::whiten_options::verl());
//     pt::advantage::masked_whiten(policy, d_values, d_mask, d_out, options, d_stats);   // {mean, variance, count}
//     pt::advantage::masked_mean(policy, d_values, d_mask, pt::device_view<double, 0>(d_mean));  // asynchronous
//     double var = pt::advantage::masked_var(policy, d_values, d_mask);                        // synchronizes
//     pt::advantage::masked_normalize(policy, d_values, d_mask, d_out);                        // per row
//
// masked_mean and masked_var are the whitening's moments pass and finalize (below), writing the
// statistic into a device scalar, or returning it on the host (those overloads synchronize the
// stream, and then apply the host's rules: masked_var with too few tokens throws under
// degenerate::raise; the device-result form sets status_empty_reduction and writes 0).
// masked_row_mean and masked_normalize run a warp per row (lanes strided over the row, a fixed xor
// butterfly: deterministic on every GPU; no scratch); masked_normalize's out may be values itself.
//
// values [N, T] device_view<const float|double, 2> (or DLPack on a CUDA device), mask bool or any
// arithmetic type, out device_view<float|double, 2>; any strides. out may be values itself (in-place
// whitening, as on the host: the statistics are complete before the first write); any other overlap
// of out with values or mask is rejected. Asynchronous on the policy's stream; double arithmetic on
// the device for float tensors too. The host overload returns the statistics; this one has none to
// return synchronously, and writes them to the device through the `stats` overload.
//
// Three launches: per-tile (weight, mean, M2) of the masked values (tiles of the scan layout of
// gae.cuh, two-pass within a tile), gae.cuh's whiten_finalize_kernel (one block folds the tiles in a
// fixed order, Chan et al.) and whiten_apply_kernel. No atomics in the arithmetic: the bits depend
// only on N and T, run to run. Too few valid tokens under degenerate::raise (where the host throws)
// set status_empty_reduction and write zeros, as under degenerate::zeros. The host has no
// non-finite check here (NaN propagates into the statistics), and neither has the device.
//
// Scratch (masked_whiten_workspace_bytes, masked_mean_workspace_bytes, masked_var_workspace_bytes):
// the per-tile moments and the transform (and the statistics), from .with(workspace) or
// cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/whiten.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/tuning.cuh"
#include "gae.cuh"
#include "whiten.hpp"

namespace posttrain::advantage {
namespace detail {

// Every tile's (weight, mean, M2) of the values a source yields. A source has
//     bool staged;  // every view dense (gae.cuh's staged tiles): items_staged, otherwise item
//     __device__ void item(index_t i, index_t t, double& x, double& w) const;
//     __device__ void items_staged(tile_stage&, const scan_tiles&, const tile_span&, index_t e0, int count,
//                                  double (&xs)[scan_items], double (&ws)[scan_items]) const;
// (value and weight of token (i, t), or of the thread's items; it may write an output there too;
// items_staged is called by every thread of the block). Tiles are those of the scan
// (make_scan_tiles), so whiten_finalize_kernel folds them as it folds the scan's.
template <class Source>
__global__ void __launch_bounds__(scan_threads) moments_tiles_kernel(Source src, scan_tiles s, tile_moments* moments) {
    using block_sum = cub::BlockReduce<double, scan_threads>;
    __shared__ union {
        typename block_sum::TempStorage sum;
        tile_stage stage;  // staged sources only (src.staged is uniform per launch)
    } tmp;
    __shared__ double tile_mean;
    const index_t k = blockIdx.x;
    const tile_span sp = span_of(s, k);
    const index_t e0 = index_t(threadIdx.x) * scan_items;
    const int count = e0 < sp.n ? int(sp.n - e0 < scan_items ? sp.n - e0 : scan_items) : 0;
    double xs[scan_items] = {}, ws[scan_items] = {};  // zero past the tile's end: block_tile_moments reads all
    if (src.staged) src.items_staged(tmp.stage, s, sp, e0, count, xs, ws);
    else for_each_item(s, sp, e0, count, [&](int j, index_t i, index_t t, bool) { src.item(i, t, xs[j], ws[j]); });
    double w_sum = 0, wx_sum = 0;
#pragma unroll
    for (int j = 0; j < scan_items; ++j) {
        if (j < count) {
            w_sum += ws[j];
            wx_sum += ws[j] * xs[j];
        }
    }
    // The stage -> tmp.sum: block_tile_moments syncs first.
    const tile_moments tm = block_tile_moments<block_sum>(tmp.sum, tile_mean, xs, [&](int j) { return ws[j]; }, w_sum, wx_sum);
    if (threadIdx.x == 0) moments[k] = tm;
}

// masked_whiten's source: the values under the mask.
template <class X, class M>
struct masked_values {
    device_view<const X, 2> x;
    device_view<const M, 2> m;
    bool staged = false;
    __device__ void item(index_t i, index_t t, double& v, double& w) const {
        v = double(x(i, t));
        w = double(m(i, t));
    }
    __device__ void items_staged(tile_stage& st, const scan_tiles& s, const tile_span& sp, index_t e0, int count,
                                 double (&xs)[scan_items], double (&ws)[scan_items]) const {
        stage_in(st.out[0], x.data(), tile_base(s, sp), sp.n, e0, count, xs);
        stage_in(st.out[1], m.data(), tile_base(s, sp), sp.n, e0, count, ws);
    }
};

// A source of views x and m, staged when both are dense.
template <class X, class M>
masked_values<X, M> masked_source(device_view<const X, 2> x, device_view<const M, 2> m) {
    masked_values<X, M> src{x, m};
    src.staged = all_dense(x, m);
    return src;
}

// The scratch of a whitening not fed by the scan: `before` bytes of the caller's own first (e.g.
// reinforce_pp_baseline's centred rewards), then the per-tile moments and the transform.
struct whiten_scratch_layout {
    std::size_t moments = 0, transform = 0, total = 0;
};
inline whiten_scratch_layout whiten_scratch(index_t rows, index_t cols, posttrain::detail::scratch_cursor c = {}) {
    whiten_scratch_layout l;
    l.moments = c.take(static_cast<std::size_t>(make_scan_tiles(rows, cols).tiles) * sizeof(tile_moments));
    l.transform = c.take(sizeof(whiten_transform));
    l.total = c.end;
    return l;
}

// Every tile's moments of `src` over the batch cut as s.
template <class Source>
void launch_moments(const exec::cuda_policy& policy, const Source& src, const scan_tiles& s, tile_moments* moments, const char* fn) {
    if (s.tiles == 0) return;
    moments_tiles_kernel<<<static_cast<unsigned>(s.tiles), scan_threads, 0, policy.stream>>>(src, s, moments);
    posttrain::detail::check_launch(fn);
}

// The moments pass over `src`, then finalize and apply (x -> a; x may be a).
template <class Source, class X, class A, class M>
void whiten_cuda(const exec::cuda_policy& policy, const Source& src, const posttrain::detail::cuda_scratch& scratch,
                 const whiten_scratch_layout& l, const whiten_params& w, double* stats, device_view<const X, 2> x,
                 device_view<A, 2> a, device_view<const M, 2> m, const char* fn) {
    const scan_tiles s = make_scan_tiles(a.extent(0), a.extent(1));
    auto* moments = scratch.as<tile_moments>(l.moments);
    launch_moments(policy, src, s, moments, fn);
    launch_whiten(policy, moments, s.tiles, w, scratch.as<whiten_transform>(l.transform), stats, x, a, m, fn);
}

template <class Values, class Mask, class Out>
void masked_whiten_cuda(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                        const whiten_options& options, device_view<double, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::masked_whiten";
    std::visit(
        [&](auto x, auto m, auto o) {
            check_elementwise_views(x, m, o, fn);
            check_whitening_apart(policy, stats, fn, std::pair{x, "values"}, std::pair{m, "mask"}, std::pair{o, "out"});
            const whiten_scratch_layout l = whiten_scratch(x.extent(0), x.extent(1));
            posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
            whiten_cuda(policy, masked_source(x, m), scratch, l, make_whiten_params(options, options.mask_output), stats.data(), x, o, m,
                        fn);
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2, device_space>(out, {fn, "out"}));
}

// ---- masked_mean / masked_var: the whitening's moments and finalize, without the apply -------------

// The whitening's scratch, then the statistics {mean, variance, count}.
struct stats_scratch_layout {
    whiten_scratch_layout whiten;
    std::size_t stats = 0, total = 0;
};
inline stats_scratch_layout stats_scratch(index_t rows, index_t cols) {
    stats_scratch_layout l;
    l.whiten = whiten_scratch(rows, cols);
    posttrain::detail::scratch_cursor c{l.whiten.total};
    l.stats = c.take(3 * sizeof(double));
    l.total = c.end;
    return l;
}

// The statistic a device-result call asked for: the mean, or the variance (0 with too few tokens,
// as the host returns it). A template (never instantiated twice differently) so that translation
// units including this header do not each define it.
template <int Unused = 0>
__global__ void pick_statistic_kernel(const double* stats, const whiten_transform* tr, bool variance, double* result) {
    *result = variance ? (tr->valid ? stats[1] : 0.0) : stats[0];
}

// masked_mean (variance = false) or masked_var of values under mask: into the device scalar
// d_result (asynchronous; too few tokens under degenerate::raise set status_empty_reduction), or
// {mean, variance, count} into h_stats (synchronizes; the caller applies the host's rules).
template <class Values, class Mask>
void masked_stat_cuda(const exec::cuda_policy& policy, const Values& values, const Mask& mask, const masked_stats_options& options,
                      bool variance, double* d_result, double* h_stats, const char* fn) {
    std::visit(
        [&](auto x, auto m) {
            check_same_shape(m, x, {fn, "mask"}, "values");
            posttrain::detail::check_policy_apart(policy, fn, std::pair{x, "values"}, std::pair{m, "mask"},
                                                  std::pair{device_view<const double, 1>(d_result, d_result != nullptr ? 1 : 0),
                                                            "result"});
            const index_t rows = x.extent(0), cols = x.extent(1);
            const stats_scratch_layout l = stats_scratch(rows, cols);
            posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
            const scan_tiles s = make_scan_tiles(rows, cols);
            auto* moments = scratch.as<tile_moments>(l.whiten.moments);
            auto* tr = scratch.as<whiten_transform>(l.whiten.transform);
            auto* stats = scratch.as<double>(l.stats);
            launch_moments(policy, masked_source(x, m), s, moments, fn);
            whiten_params w;
            w.ddof = static_cast<int>(options.ddof);
            w.count_epsilon = options.count_epsilon;
            w.raise_on_degenerate = variance && d_result != nullptr && options.on_degenerate == degenerate::raise;
            launch_finalize(policy, moments, s.tiles, w, tr, stats, fn);
            if (d_result != nullptr) {
                pick_statistic_kernel<<<1, 1, 0, policy.stream>>>(stats, tr, variance, d_result);
                posttrain::detail::check_launch(fn);
            } else {
                POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_stats, stats, 3 * sizeof(double), cudaMemcpyDeviceToHost, policy.stream));
                POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(policy.stream));
            }
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

// ---- masked_row_mean / masked_normalize: a warp per row ---------------------------------------------

// Lane l takes a row's tokens l, l + 32, ... in order; a fixed xor butterfly then gives every lane
// the same sum (IEEE addition commutes): the bits depend only on T, on every GPU.
__device__ inline double warp_row_sum(double v) {
    for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
    return v;
}

// Row i's weighted sum s = sum x m and weight c = sum m, in every lane of the warp.
template <class X, class M>
__device__ void warp_row_moments(device_view<const X, 2> x, device_view<const M, 2> m, index_t i, int lane, double& s, double& c) {
    s = 0;
    c = 0;
    for (index_t t = lane; t < x.extent(1); t += 32) {
        const double w = double(m(i, t));
        c += w;
        s += double(x(i, t)) * w;
    }
    s = warp_row_sum(s);
    c = warp_row_sum(c);
}

template <class X, class M, class O>
__global__ void masked_row_mean_kernel(device_view<const X, 2> x, device_view<const M, 2> m, device_view<O, 1> out, double count_eps) {
    const index_t warps = index_t(gridDim.x) * (blockDim.x / 32);
    const int lane = threadIdx.x % 32;
    for (index_t i = index_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; i < x.extent(0); i += warps) {
        double s, c;
        warp_row_moments(x, m, i, lane, s, c);
        if (lane == 0) out(i) = static_cast<O>(c + count_eps != 0 ? s / (c + count_eps) : 0.0);
    }
}

// OpenRLHF's per-row normalisation: biased moments over the row's valid tokens (two passes), then
// out = (x - mean) * rsqrt(max(var, epsilon)) * m; each lane reads a token before writing it, so out
// may be x itself.
template <class X, class M, class O>
__global__ void masked_normalize_kernel(device_view<const X, 2> x, device_view<const M, 2> m, device_view<O, 2> out, double epsilon) {
    const index_t warps = index_t(gridDim.x) * (blockDim.x / 32);
    const int lane = threadIdx.x % 32;
    const index_t T = x.extent(1);
    for (index_t i = index_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; i < x.extent(0); i += warps) {
        double s, c;
        warp_row_moments(x, m, i, lane, s, c);
        const double mean = c > 0 ? s / c : 0.0;
        double m2 = 0;
        for (index_t t = lane; t < T; t += 32) {
            const double d = double(x(i, t)) - mean;
            m2 += d * d * double(m(i, t));
        }
        m2 = warp_row_sum(m2);
        const double var = c > 0 ? m2 / c : 0.0;
        const double rstd = 1.0 / sqrt(var > epsilon ? var : epsilon);
        for (index_t t = lane; t < T; t += 32) out(i, t) = static_cast<O>((double(x(i, t)) - mean) * rstd * double(m(i, t)));
    }
}

// Blocks of a warp-per-row kernel over `rows` rows.
inline unsigned row_warp_blocks(index_t rows) { return cuda_tuning::elementwise_blocks(rows * 32); }

}  // namespace detail

// Bytes of scratch masked_whiten needs on the CUDA path for an [rows, cols] batch.
inline std::size_t masked_whiten_workspace_bytes(index_t rows, index_t cols) { return detail::whiten_scratch(rows, cols).total; }

// Bytes of scratch masked_mean and masked_var need on the CUDA path for an [rows, cols] batch.
inline std::size_t masked_mean_workspace_bytes(index_t rows, index_t cols) { return detail::stats_scratch(rows, cols).total; }
inline std::size_t masked_var_workspace_bytes(index_t rows, index_t cols) { return detail::stats_scratch(rows, cols).total; }

// The masked mean into a device scalar (asynchronous).
template <class Values, class Mask>
void masked_mean(const exec::cuda_policy& policy, const Values& values, const Mask& mask, device_view<double, 0> result,
                 const masked_stats_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::masked_mean";
    posttrain::detail::require(result.data() != nullptr, {fn, "result"}, "expected a device scalar, found a null view");
    detail::masked_stat_cuda(policy, values, mask, options, false, result.data(), nullptr, fn);
}

// The masked mean returned on the host: synchronizes the policy's stream.
template <class Values, class Mask>
[[nodiscard]] double masked_mean(const exec::cuda_policy& policy, const Values& values, const Mask& mask,
                                 const masked_stats_options& options = {}) {
    double stats[3] = {};
    detail::masked_stat_cuda(policy, values, mask, options, false, nullptr, stats, "posttrain::advantage::masked_mean");
    return stats[0];
}

// The masked variance into a device scalar (asynchronous): 0 with too few valid tokens, which under
// degenerate::raise (where the host throws) also sets status_empty_reduction.
template <class Values, class Mask>
void masked_var(const exec::cuda_policy& policy, const Values& values, const Mask& mask, device_view<double, 0> result,
                const masked_stats_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::masked_var";
    posttrain::detail::require(result.data() != nullptr, {fn, "result"}, "expected a device scalar, found a null view");
    detail::masked_stat_cuda(policy, values, mask, options, true, result.data(), nullptr, fn);
}

// The masked variance returned on the host: synchronizes the policy's stream, and then follows the
// host's rules (too few valid tokens: 0, or invalid_argument under degenerate::raise).
template <class Values, class Mask>
[[nodiscard]] double masked_var(const exec::cuda_policy& policy, const Values& values, const Mask& mask,
                                const masked_stats_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::masked_var";
    double stats[3] = {};
    detail::masked_stat_cuda(policy, values, mask, options, true, nullptr, stats, fn);
    const double count = stats[2];
    if (!(count > double(static_cast<int>(options.ddof)) && count > 0)) {
        detail::on_degenerate(options.on_degenerate, count, fn);
        return 0.0;
    }
    return stats[1];
}

// Per-row masked means into out[N] (asynchronous; no scratch).
template <class Values, class Mask, class Out>
void masked_row_mean(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                     const masked_stats_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::masked_row_mean";
    std::visit(
        [&](auto x, auto m, auto o) {
            detail::check_row_mean_views(x, m, o, fn);
            posttrain::detail::check_policy_apart(policy, fn, std::pair{x, "values"}, std::pair{m, "mask"}, std::pair{o, "out"});
            if (x.extent(0) == 0) return;
            detail::masked_row_mean_kernel<<<detail::row_warp_blocks(x.extent(0)), cuda_tuning::block_threads, 0, policy.stream>>>(
                x, m, o, options.count_epsilon);
            posttrain::detail::check_launch(fn);
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<1, device_space>(out, {fn, "out"}));
}

// Per-row masked normalisation into out[N, T] (asynchronous; no scratch; out may be values itself).
template <class Values, class Mask, class Out>
void masked_normalize(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                      const normalize_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::masked_normalize";
    std::visit(
        [&](auto x, auto m, auto o) {
            detail::check_elementwise_views(x, m, o, fn);
            posttrain::detail::check_policy_apart(policy, fn, std::pair{x, "values"}, std::pair{m, "mask"}, std::pair{o, "out"});
            if (x.extent(0) == 0 || x.extent(1) == 0) return;
            detail::masked_normalize_kernel<<<detail::row_warp_blocks(x.extent(0)), cuda_tuning::block_threads, 0, policy.stream>>>(
                x, m, o, options.epsilon);
            posttrain::detail::check_launch(fn);
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2, device_space>(out, {fn, "out"}));
}

template <class Values, class Mask, class Out>
void masked_whiten(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                   const whiten_options& options = {}) {
    detail::masked_whiten_cuda(policy, values, mask, out, options, {});
}

// As above, and writes the statistics {mean, variance, count} (the host's moments_result) into
// stats[3] on the device.
template <class Values, class Mask, class Out>
void masked_whiten(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out, const whiten_options& options,
                   device_view<double, 1> stats) {
    detail::check_whiten_stats(stats, "posttrain::advantage::masked_whiten");
    detail::masked_whiten_cuda(policy, values, mask, out, options, stats);
}

}  // namespace posttrain::advantage
