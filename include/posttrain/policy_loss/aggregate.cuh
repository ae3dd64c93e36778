#pragma once
// Loss aggregation on the GPU: the exec::cuda overloads of policy_loss::aggregate and count_tokens
// (aggregate.hpp), for a loss computed elsewhere (a value loss, an entropy term, a custom objective):
//
//     // asynchronous: the gradient, and the aggregate_result into device memory
//     pt::policy_loss::aggregate(pt::exec::cuda.on(stream), d_loss_mat, d_mask, d_grad, opts.aggregation, 1.0,
//                                pt::device_view<pt::policy_loss::aggregate_result, 0>(d_result));
//     // or, when the host wants the number now: the same, then a sync of the stream
//     const auto r = pt::policy_loss::aggregate(pt::exec::cuda.on(stream), d_loss_mat, d_mask, pt::none);
//
// loss_mat is a [B, T] float or double device view (any strides) or DLPack tensor on a CUDA device,
// the mask bool or any arithmetic type (its values are the token weights; masked positions are
// selected out, never multiplied: they may hold anything), grad_loss_mat a float or double [B, T]
// device view or posttrain::none. Semantics, options and global normalizers are the host's.
//
// The passes are the fused policy loss's (policy_loss.cuh), in the same segments and teams:
//   1. count and plan: the row token counts n_i and, on the device, the aggregation's divisor.
//   2. sum: each team sums w * L over its segment in double (a fixed xor butterfly), and, given a
//      gradient, writes grad = row_factor(n_i) * grad_scale * w in the same pass; chunked rows are
//      folded chunk by chunk by a row kernel.
//   3. finish: one block folds row_factor(n_i) * s_i over the rows into the aggregate_result.
// Determinism: the segments, teams and grid depend only on (B, T): the bits are the same run to run
// and GPU to GPU; they differ from the host's eight-lane order by rounding only.
//
// Scratch: aggregate_workspace_bytes(B, T) (counts, plan, row sums, the result slot);
// count_tokens_workspace_bytes(B, T). From .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/aggregate.cuh> needs nvcc: include it only from .cu files"
#endif

#include "aggregate.hpp"
#include "policy_loss.cuh"  // the segment geometry, teams, count and plan kernels

namespace posttrain::policy_loss {

namespace detail {

// A valid token's terms: its value (summed with the mask weight), d value / d input (the gradient
// written is row_factor(n_i) * grad_scale * w * dvalue) and an extra quantity summed alongside
// (value_loss's clipped tokens).
struct token_terms {
    double value, dvalue, extra;
};

// aggregate's token: the loss matrix's entry. A masked token's gradient is f * w (= +-0), as the
// host's aggregate writes it; a token functor with zero_masked_grad writes an exact 0 there instead.
template <class T>
struct loss_entry {
    static constexpr bool zero_masked_grad = false;
    device_view<const T, 2> loss;
    __device__ token_terms operator()(index_t i, index_t t) const {
        return {static_cast<double>(loss.data()[i * loss.stride(0) + t * loss.stride(1)]), 1.0, 0.0};
    }
};

// The weighted sums of one row (or one chunk of a row): sum w * value and sum w * extra.
struct row_sums {
    double s = 0, e = 0;
};

// Pass 2: each segment's selected, weighted sums (rows: sums[row]; chunked rows: chunk_sums[segment])
// and, when grad is given, the gradient of every token of the segment (masked: f * 0).
template <class M, class G, class Token>
__global__ void __launch_bounds__(loss_threads)
    aggregate_sum_kernel(const Token token, const device_view<const M, 2> mask, const seg_geometry g, const double* n,
                         const aggregation_plan* plan, double grad_scale, G* grad, index_t gs0, index_t gs1,
                         row_sums* sums, row_sums* chunk_sums) {
    const team_pos p = team_of(g);
    const aggregation_plan pl = *plan;
    for (index_t base = p.first; base < g.count; base += p.step) {
        const index_t seg = base + p.team;
        const bool has = seg < g.count;
        const seg_span sp = span_of(g, seg, has);
        const M* mrow = mask.data() + sp.row * mask.stride(0);
        const double f = has ? pl.row_factor(n[sp.row]) * grad_scale : 0.0;
        double s = 0, e = 0;
        for (index_t t = sp.begin + p.lane; t < sp.end; t += p.lanes) {
            const double w = mask_value(mrow[t * mask.stride(1)]);
            double gv = Token::zero_masked_grad ? 0.0 : f * w;
            if (w != 0) {  // select, never multiply by 0: masked positions may hold anything
                const token_terms k = token(sp.row, t);
                s += k.value * w;
                e += k.extra * w;
                gv = f * w * k.dvalue;
            }
            if (grad != nullptr) grad[sp.row * gs0 + t * gs1] = static_cast<G>(gv);
        }
        s = team_sum(s, p.lanes);
        e = team_sum(e, p.lanes);
        if (has && p.lane == 0) (g.chunks == 1 ? sums[sp.row] : chunk_sums[seg]) = row_sums{s, e};
    }
}

// Chunked rows: sums[row] from its chunks, in order.
template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    aggregate_row_sum_kernel(const seg_geometry g, const row_sums* chunk_sums, row_sums* sums) {
    for (index_t i = index_t(blockIdx.x) * loss_threads + threadIdx.x; i < g.rows; i += index_t(gridDim.x) * loss_threads) {
        row_sums r;
        for (index_t c = 0; c < g.chunks; ++c) {
            r.s += chunk_sums[i * g.chunks + c].s;
            r.e += chunk_sums[i * g.chunks + c].e;
        }
        sums[i] = r;
    }
}

// The batch's totals: sum_i row_factor(n_i) * s_i (the aggregated loss) and sum_i e_i.
struct batch_sums {
    double loss = 0, extra = 0;
    POSTTRAIN_HD void merge(const batch_sums& o) noexcept {
        loss += o.loss;
        extra += o.extra;
    }
};

// aggregate's result from the totals.
struct aggregate_finish {
    __device__ aggregate_result operator()(const aggregation_plan& pl, const batch_sums& b) const {
        aggregate_result r = pl.totals;
        r.loss = b.loss;
        return r;
    }
};

// Pass 3: one block folds the rows in a fixed order; `finish` makes the result from the totals.
template <class Finish, class Result>
__global__ void __launch_bounds__(loss_threads)
    aggregate_finish_kernel(index_t rows, const double* n, const row_sums* sums, const aggregation_plan* plan,
                            const Finish finish, Result* out) {
    const aggregation_plan pl = *plan;
    batch_sums local;
    for (index_t i = threadIdx.x; i < rows; i += loss_threads) {
        local.loss += sums[i].s * pl.row_factor(n[i]);
        local.extra += sums[i].e;
    }
    const batch_sums total = block_merge(local);
    if (threadIdx.x == 0) *out = finish(pl, total);
}

// count_tokens' result from the count partials.
template <int Unused = 0>
__global__ void __launch_bounds__(loss_threads)
    token_counts_kernel(const count_acc* partials, index_t count, index_t rows, token_counts* out) {
    const count_acc c = fold_partials(partials, count);
    if (threadIdx.x == 0) {
        token_counts r;
        r.tokens = c.tokens;
        r.sequences = c.nonempty;
        r.rows = static_cast<double>(rows);
        *out = r;
    }
}

// Where the scratch of aggregate / count_tokens lives (byte offsets, 256-aligned).
struct aggregate_scratch_layout {
    std::size_t n = 0, chunk_n = 0, counts = 0, plan = 0, sums = 0, chunk_sums = 0, result = 0, total = 0;
    aggregate_scratch_layout(const seg_geometry& g, bool with_sums) {
        posttrain::detail::scratch_cursor c;
        const bool chunked = g.chunks > 1;
        n = c.take(sizeof(double) * static_cast<std::size_t>(g.rows));
        chunk_n = c.take(chunked ? sizeof(double) * static_cast<std::size_t>(g.count) : 0);
        counts = c.take(sizeof(count_acc) * (chunked ? g.row_blocks : g.blocks));
        plan = c.take(sizeof(aggregation_plan));
        sums = c.take(with_sums ? sizeof(row_sums) * static_cast<std::size_t>(g.rows) : 0);
        chunk_sums = c.take(with_sums && chunked ? sizeof(row_sums) * static_cast<std::size_t>(g.count) : 0);
        result = c.take(posttrain::detail::scratch_alignment);  // one result struct (aggregate, value loss, counts)
        total = c.end;
    }
};

// Pass 1 (the fused loss's count kernels) for a mask: n[0..B) and the count partials; returns how
// many partials there are.
template <class M>
index_t launch_counts(const exec::cuda_policy& pol, device_view<const M, 2> m, const seg_geometry& g, double* n,
                      double* chunk_n, count_acc* counts, const char* fn) {
    if (g.blocks == 0) return 0;
    count_kernel<M><<<g.blocks, loss_threads, 0, pol.stream>>>(m, g, n, chunk_n, counts);
    posttrain::detail::check_launch(fn);
    if (g.chunks > 1) {
        row_count_kernel<<<g.row_blocks, loss_threads, 0, pol.stream>>>(g, chunk_n, n, counts);
        posttrain::detail::check_launch(fn);
        return g.row_blocks;
    }
    return g.blocks;
}

// The passes of a masked aggregation of the tokens `token` gives (aggregate, value_loss): counts and
// plan, the sums with the gradient (grad may be null), then `finish` makes the Result from the totals
// into d_result, or into scratch and on to the host (h_result: synchronizes the stream).
template <class M, class Token, class G, class Finish, class Result>
void launch_aggregation(const exec::cuda_policy& policy, const Token& token, device_view<const M, 2> m, G* grad, index_t gs0,
                        index_t gs1, const aggregation_options& options, double grad_scale, const Finish& finish,
                        Result* d_result, Result* h_result, const char* fn) {
    static_assert(sizeof(Result) <= posttrain::detail::scratch_alignment, "one result slot");
    const seg_geometry g = make_geometry(m.extent(0), m.extent(1));
    const aggregate_scratch_layout at(g, true);
    posttrain::detail::cuda_scratch scratch(policy, at.total, {fn, "policy"});
    const cudaStream_t st = policy.stream;
    double* n = scratch.template as<double>(at.n);
    auto* plan = scratch.template as<aggregation_plan>(at.plan);
    auto* sums = scratch.template as<row_sums>(at.sums);
    auto* counts = scratch.template as<count_acc>(at.counts);
    const index_t parts = launch_counts(policy, m, g, n, scratch.template as<double>(at.chunk_n), counts, fn);
    plan_kernel<<<1, loss_threads, 0, st>>>(counts, parts, g.rows, g.cols, options, plan);
    posttrain::detail::check_launch(fn);
    if (g.blocks > 0) {
        auto* chunk_sums = scratch.template as<row_sums>(at.chunk_sums);
        aggregate_sum_kernel<<<g.blocks, loss_threads, 0, st>>>(token, m, g, n, plan, grad_scale, grad, gs0, gs1, sums,
                                                                chunk_sums);
        posttrain::detail::check_launch(fn);
        if (g.chunks > 1) {
            aggregate_row_sum_kernel<<<g.row_blocks, loss_threads, 0, st>>>(g, chunk_sums, sums);
            posttrain::detail::check_launch(fn);
        }
    }
    if (d_result == nullptr && h_result == nullptr) return;
    Result* out = d_result != nullptr ? d_result : scratch.template as<Result>(at.result);
    aggregate_finish_kernel<<<1, loss_threads, 0, st>>>(g.blocks > 0 ? g.rows : 0, n, sums, plan, finish, out);
    posttrain::detail::check_launch(fn);
    if (h_result != nullptr) {
        POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_result, out, sizeof(Result), cudaMemcpyDeviceToHost, st));
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(st));
    }
}

template <class LossMat, class Mask, class Grad>
void aggregate_cuda(const exec::cuda_policy& policy, const LossMat& loss_mat, const Mask& mask, Grad&& grad_loss_mat,
                    const aggregation_options& options, double grad_scale, aggregate_result* d_result,
                    aggregate_result* h_result) {
    constexpr const char* fn = "posttrain::policy_loss::aggregate";
    check_aggregation_options(options, fn);
    std::visit(
        [&](auto L, auto m) {
            check_same_shape(m, L, {fn, "mask"}, "loss_mat");
            check_result_apart(d_result, L, fn, "loss_mat");
            check_result_apart(d_result, m, fn, "mask");
            const loss_entry<typename decltype(L)::value_type> token{L};
            const device_view<const aggregate_result, 1> result(d_result, d_result != nullptr ? 1 : 0);
            if constexpr (std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                posttrain::detail::check_policy_apart(policy, fn, std::pair{L, "loss_mat"}, std::pair{m, "mask"},
                                                      std::pair{result, "result"});
                launch_aggregation(policy, token, m, static_cast<double*>(nullptr), 0, 0, options, grad_scale,
                                   aggregate_finish{}, d_result, h_result, fn);
            } else {
                std::visit(
                    [&](auto gv) {
                        check_same_shape(gv, L, {fn, "grad_loss_mat"}, "loss_mat");
                        check_no_alias(gv, L, {fn, "grad_loss_mat"}, "loss_mat");
                        check_no_alias(gv, m, {fn, "grad_loss_mat"}, "mask");
                        check_result_apart(d_result, gv, fn, "grad_loss_mat");
                        posttrain::detail::check_policy_apart(policy, fn, std::pair{L, "loss_mat"}, std::pair{m, "mask"},
                                                              std::pair{gv, "grad_loss_mat"}, std::pair{result, "result"});
                        launch_aggregation(policy, token, m, gv.data(), gv.stride(0), gv.stride(1), options, grad_scale,
                                           aggregate_finish{}, d_result, h_result, fn);
                    },
                    posttrain::detail::floating_output<2, device_space>(grad_loss_mat, {fn, "grad_loss_mat"}));
            }
        },
        posttrain::detail::floating_input<2, device_space>(loss_mat, {fn, "loss_mat"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

template <class Mask>
void count_tokens_cuda(const exec::cuda_policy& policy, const Mask& mask, token_counts* d_result, token_counts* h_result) {
    constexpr const char* fn = "posttrain::policy_loss::count_tokens";
    std::visit(
        [&](auto m) {
            check_result_apart(d_result, m, fn, "mask");
            posttrain::detail::check_policy_apart(
                policy, fn, std::pair{m, "mask"},
                std::pair{device_view<const token_counts, 1>(d_result, d_result != nullptr ? 1 : 0), "result"});
            const seg_geometry g = make_geometry(m.extent(0), m.extent(1));
            const aggregate_scratch_layout at(g, false);
            posttrain::detail::cuda_scratch scratch(policy, at.total, {fn, "policy"});
            auto* counts = scratch.template as<count_acc>(at.counts);
            const index_t parts = launch_counts(policy, m, g, scratch.template as<double>(at.n),
                                                scratch.template as<double>(at.chunk_n), counts, fn);
            token_counts* out = d_result != nullptr ? d_result : scratch.template as<token_counts>(at.result);
            token_counts_kernel<<<1, loss_threads, 0, policy.stream>>>(counts, parts, g.rows, out);
            posttrain::detail::check_launch(fn);
            if (h_result != nullptr) {
                POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_result, out, sizeof(token_counts), cudaMemcpyDeviceToHost, policy.stream));
                POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(policy.stream));
            }
        },
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

}  // namespace detail

// Bytes of scratch aggregate / count_tokens need on the CUDA path for a [rows, cols] batch.
inline std::size_t aggregate_workspace_bytes(index_t rows, index_t cols) {
    return detail::aggregate_scratch_layout(detail::make_geometry(rows, cols), true).total;
}
inline std::size_t count_tokens_workspace_bytes(index_t rows, index_t cols) {
    return detail::aggregate_scratch_layout(detail::make_geometry(rows, cols), false).total;
}

// Asynchronous: writes grad_loss_mat (or posttrain::none) and, when `result` is not empty, the
// aggregate_result into device memory.
template <class LossMat, class Mask, class Grad>
void aggregate(const exec::cuda_policy& policy, const LossMat& loss_mat, const Mask& mask, Grad&& grad_loss_mat,
               const aggregation_options& options, double grad_scale, device_view<aggregate_result, 0> result) {
    detail::aggregate_cuda(policy, loss_mat, mask, grad_loss_mat, options, grad_scale, result.data(), nullptr);
}

// The same, returning the aggregate_result on the host: synchronizes the policy's stream.
template <class LossMat, class Mask, class Grad>
aggregate_result aggregate(const exec::cuda_policy& policy, const LossMat& loss_mat, const Mask& mask, Grad&& grad_loss_mat,
                           const aggregation_options& options = {}, double grad_scale = 1.0) {
    aggregate_result r;
    detail::aggregate_cuda(policy, loss_mat, mask, grad_loss_mat, options, grad_scale, nullptr, &r);
    return r;
}

// This batch's counts into device memory (asynchronous), e.g. to all-reduce them with NCCL.
template <class Mask>
void count_tokens(const exec::cuda_policy& policy, const Mask& mask, device_view<token_counts, 0> result) {
    detail::count_tokens_cuda(policy, mask, result.data(), nullptr);
}

// The same on the host: synchronizes the policy's stream.
template <class Mask>
token_counts count_tokens(const exec::cuda_policy& policy, const Mask& mask) {
    token_counts r;
    detail::count_tokens_cuda(policy, mask, nullptr, &r);
    return r;
}

}  // namespace posttrain::policy_loss
