#pragma once
// Masked whitening on the GPU: the exec::cuda overload of advantage::masked_whiten.
//
//     pt::advantage::masked_whiten(pt::exec::cuda.on(stream), d_values, d_mask, d_out, pt::advantage::whiten_options::verl());
//     pt::advantage::masked_whiten(policy, d_values, d_mask, d_out, options, d_stats);   // {mean, variance, count}
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
// Scratch (masked_whiten_workspace_bytes): the per-tile moments and the transform, from
// .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/whiten.cuh> needs nvcc: include it only from .cu files"
#endif

#include "gae.cuh"
#include "whiten.hpp"

namespace posttrain::advantage {
namespace detail {

// Every tile's (weight, mean, M2) of the values a source yields. A source has
//     __device__ void item(index_t i, index_t t, double& x, double& w) const;
// (value and weight of token (i, t); it may write an output there too). Tiles are those of the scan
// (make_scan_tiles), so whiten_finalize_kernel folds them as it folds the scan's.
template <class Source>
__global__ void __launch_bounds__(scan_threads) moments_tiles_kernel(Source src, scan_tiles s, tile_moments* moments) {
    using block_sum = cub::BlockReduce<double, scan_threads>;
    __shared__ typename block_sum::TempStorage tmp;
    __shared__ double tile_mean;
    const index_t k = blockIdx.x;
    const tile_span sp = span_of(s, k);
    const index_t e0 = index_t(threadIdx.x) * scan_items;
    const int count = e0 < sp.n ? int(sp.n - e0 < scan_items ? sp.n - e0 : scan_items) : 0;
    double xs[scan_items] = {}, ws[scan_items] = {};  // zero past the tile's end: block_tile_moments reads all
    double w_sum = 0, wx_sum = 0;
    if (count > 0) {
        index_t i, t;
        bool restart;
        token_of(s, sp, e0, i, t, restart);
#pragma unroll
        for (int j = 0; j < scan_items; ++j) {
            if (j < count) {
                src.item(i, t, xs[j], ws[j]);
                w_sum += ws[j];
                wx_sum += ws[j] * xs[j];
                step_back(s, i, t, restart);
            }
        }
    }
    const tile_moments tm = block_tile_moments<block_sum>(tmp, tile_mean, xs, [&](int j) { return ws[j]; }, w_sum, wx_sum);
    if (threadIdx.x == 0) moments[k] = tm;
}

// masked_whiten's source: the values under the mask.
template <class X, class M>
struct masked_values {
    device_view<const X, 2> x;
    device_view<const M, 2> m;
    __device__ void item(index_t i, index_t t, double& v, double& w) const {
        v = double(x(i, t));
        w = double(m(i, t));
    }
};

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

// The moments pass over `src`, then finalize and apply (x -> a; x may be a).
template <class Source, class X, class A, class M>
void whiten_cuda(const exec::cuda_policy& policy, const Source& src, const posttrain::detail::cuda_scratch& scratch,
                 const whiten_scratch_layout& l, const whiten_params& w, double* stats, device_view<const X, 2> x,
                 device_view<A, 2> a, device_view<const M, 2> m, const char* fn) {
    const scan_tiles s = make_scan_tiles(a.extent(0), a.extent(1));
    auto* moments = scratch.as<tile_moments>(l.moments);
    if (s.tiles > 0) {
        moments_tiles_kernel<<<static_cast<unsigned>(s.tiles), scan_threads, 0, policy.stream>>>(src, s, moments);
        posttrain::detail::check_launch(fn);
    }
    launch_whiten(policy, moments, s.tiles, w, scratch.as<whiten_transform>(l.transform), stats, x, a, m, fn);
}

template <class Values, class Mask, class Out>
void masked_whiten_cuda(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                        const whiten_options& options, double* stats) {
    constexpr const char* fn = "posttrain::advantage::masked_whiten";
    std::visit(
        [&](auto x, auto m, auto o) {
            check_same_shape(m, x, {fn, "mask"}, "values");
            check_same_shape(o, x, {fn, "out"}, "values");
            check_same_or_disjoint(o, x, {fn, "out"}, "values");
            check_no_alias(o, m, {fn, "out"}, "mask");
            const whiten_scratch_layout l = whiten_scratch(x.extent(0), x.extent(1));
            posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
            whiten_cuda(policy, masked_values<typename decltype(x)::value_type, typename decltype(m)::value_type>{x, m}, scratch, l,
                        make_whiten_params(options, options.mask_output), stats, x, o, m, fn);
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2, device_space>(out, {fn, "out"}));
}

}  // namespace detail

// Bytes of scratch masked_whiten needs on the CUDA path for an [rows, cols] batch.
inline std::size_t masked_whiten_workspace_bytes(index_t rows, index_t cols) { return detail::whiten_scratch(rows, cols).total; }

template <class Values, class Mask, class Out>
void masked_whiten(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out,
                   const whiten_options& options = {}) {
    detail::masked_whiten_cuda(policy, values, mask, out, options, nullptr);
}

// As above, and writes the statistics {mean, variance, count} (the host's moments_result) into
// stats[3] on the device.
template <class Values, class Mask, class Out>
void masked_whiten(const exec::cuda_policy& policy, const Values& values, const Mask& mask, Out&& out, const whiten_options& options,
                   device_view<double, 1> stats) {
    detail::check_whiten_stats(stats, "posttrain::advantage::masked_whiten");
    detail::masked_whiten_cuda(policy, values, mask, out, options, stats.data());
}

}  // namespace posttrain::advantage
