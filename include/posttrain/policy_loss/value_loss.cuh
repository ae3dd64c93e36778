#pragma once
// The clipped value loss on the GPU: the exec::cuda overloads of policy_loss::value_loss
// (value_loss.hpp), one fused pass per token over values, old values, returns and the mask.
//
//     const auto r = pt::policy_loss::value_loss(pt::exec::cuda.on(stream), d_values, d_old_values, d_returns,
//                                                d_mask, d_grad_values, pt::policy_loss::value_loss_options::verl(0.5));
//
// values, old_values and returns are [B, T] float or double device views (one dtype for the three;
// any strides) or DLPack tensors on a CUDA device; the mask is bool or any arithmetic type (its values
// weigh the tokens; masked positions are selected out and may hold anything); grad_values has the
// dtype of values, or is posttrain::none. The passes are aggregate.cuh's (the fused policy loss's
// count and plan kernels, then one pass that evaluates each valid token with the host's
// value_loss_token, sums w * L and w * [clipped] per segment and writes the gradient
// row_factor(n_i) * grad_scale * w * dL/dv / 2, then one block that folds the rows into the
// value_loss_result). The bits are the same run to run and GPU to GPU; they differ from the host's by
// summation order (and the order of the gradient's products) only.
//
// A NaN/inf value, old value or return at a valid position under nonfinite::raise sets
// status_nonfinite_input in the policy's status word (the host also refuses them at masked
// positions); the result is computed as the arithmetic propagates it.
//
// Scratch: value_loss_workspace_bytes(B, T), from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/value_loss.cuh> needs nvcc: include it only from .cu files"
#endif

#include "aggregate.cuh"
#include "value_loss.hpp"

namespace posttrain::policy_loss {

namespace detail {

// One valid token of the value loss: L = max((v - R)^2, (v_clip - R)^2), dL/dv / 2 (the loss is half
// the aggregate) and whether the clipped branch is strictly larger.
template <class T>
struct value_entry {
    static constexpr bool zero_masked_grad = true;  // the host writes 0 at masked positions
    device_view<const T, 2> v, vo, ret;
    double clip;
    bool report;
    std::uint32_t* status;
    __device__ token_terms operator()(index_t i, index_t t) const {
        const double x = static_cast<double>(v.data()[i * v.stride(0) + t * v.stride(1)]);
        const double xo = static_cast<double>(vo.data()[i * vo.stride(0) + t * vo.stride(1)]);
        const double r = static_cast<double>(ret.data()[i * ret.stride(0) + t * ret.stride(1)]);
        if (report && !((x - x) + (xo - xo) + (r - r) == 0)) posttrain::detail::report_status(status, status_nonfinite_input);
        const value_token k = value_loss_token(x, xo, r, clip);
        return {k.loss, 0.5 * k.grad, k.clipped ? 1.0 : 0.0};
    }
};

// The value_loss_result from the batch's totals (the aggregate of L, the clipped tokens).
struct value_finish {
    row_mean clipfrac_denominator;
    __device__ value_loss_result operator()(const aggregation_plan& pl, const batch_sums& b) const {
        value_loss_result r;
        r.aggregation = pl.totals;
        r.aggregation.loss = b.loss;
        r.loss = 0.5 * b.loss;
        r.clipfrac = clip_fraction(b.extra, pl.totals.tokens, clipfrac_denominator);
        return r;
    }
};

template <class Values, class OldValues, class Returns, class Mask, class Grad>
void value_loss_cuda(const exec::cuda_policy& policy, const Values& values, const OldValues& old_values,
                     const Returns& returns, const Mask& mask, Grad&& grad_values, const value_loss_options& options,
                     double grad_scale, value_loss_result* d_result, value_loss_result* h_result) {
    constexpr const char* fn = "posttrain::policy_loss::value_loss";
    check_value_loss_options(options, fn);
    std::visit(
        [&](auto v, auto m) {
            using T = typename decltype(v)::value_type;
            auto same = [&](const auto& x, const char* name) {
                auto var = posttrain::detail::floating_input<2, device_space>(x, {fn, name});
                const auto* p = posttrain::detail::alternative<device_view<const T, 2>>(var);
                require(p != nullptr, {fn, name}, "must have the dtype of values");
                check_same_shape(*p, v, {fn, name}, "values");
                return *p;
            };
            const value_entry<T> token{v, same(old_values, "old_values"), same(returns, "returns"), options.clip,
                                       options.nonfinite_inputs == advantage::nonfinite::raise, policy.status};
            check_same_shape(m, v, {fn, "mask"}, "values");
            check_result_apart(d_result, v, fn, "values");
            check_result_apart(d_result, token.vo, fn, "old_values");
            check_result_apart(d_result, token.ret, fn, "returns");
            check_result_apart(d_result, m, fn, "mask");
            const value_finish finish{options.clipfrac_denominator};
            auto policy_apart = [&](const device_view<T, 2>& g) {
                posttrain::detail::check_policy_apart(
                    policy, fn, std::pair{v, "values"}, std::pair{token.vo, "old_values"}, std::pair{token.ret, "returns"},
                    std::pair{m, "mask"}, std::pair{g, "grad_values"},
                    std::pair{device_view<const value_loss_result, 1>(d_result, d_result != nullptr ? 1 : 0), "result"});
            };
            if constexpr (std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                policy_apart({});
                launch_aggregation(policy, token, m, static_cast<T*>(nullptr), 0, 0, options.aggregation, grad_scale, finish,
                                   d_result, h_result, fn);
            } else {
                auto gvar = posttrain::detail::floating_output<2, device_space>(grad_values, {fn, "grad_values"});
                auto* g = posttrain::detail::alternative<device_view<T, 2>>(gvar);
                require(g != nullptr, {fn, "grad_values"}, "must have the dtype of values");
                check_same_shape(*g, v, {fn, "grad_values"}, "values");
                check_no_alias(*g, v, {fn, "grad_values"}, "values");
                check_no_alias(*g, token.vo, {fn, "grad_values"}, "old_values");
                check_no_alias(*g, token.ret, {fn, "grad_values"}, "returns");
                check_no_alias(*g, m, {fn, "grad_values"}, "mask");
                check_result_apart(d_result, *g, fn, "grad_values");
                policy_apart(*g);
                launch_aggregation(policy, token, m, g->data(), g->stride(0), g->stride(1), options.aggregation, grad_scale,
                                   finish, d_result, h_result, fn);
            }
        },
        posttrain::detail::floating_input<2, device_space>(values, {fn, "values"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

}  // namespace detail

// Bytes of scratch value_loss needs on the CUDA path for a [rows, cols] batch.
inline std::size_t value_loss_workspace_bytes(index_t rows, index_t cols) { return aggregate_workspace_bytes(rows, cols); }

// Asynchronous: writes grad_values (or posttrain::none) and, when `result` is not empty, the
// value_loss_result into device memory.
template <class Values, class OldValues, class Returns, class Mask, class Grad>
void value_loss(const exec::cuda_policy& policy, const Values& values, const OldValues& old_values, const Returns& returns,
                const Mask& mask, Grad&& grad_values, const value_loss_options& options, double grad_scale,
                device_view<value_loss_result, 0> result) {
    detail::value_loss_cuda(policy, values, old_values, returns, mask, grad_values, options, grad_scale, result.data(),
                            nullptr);
}

// The same, returning the value_loss_result on the host: synchronizes the policy's stream.
template <class Values, class OldValues, class Returns, class Mask, class Grad>
value_loss_result value_loss(const exec::cuda_policy& policy, const Values& values, const OldValues& old_values,
                             const Returns& returns, const Mask& mask, Grad&& grad_values,
                             const value_loss_options& options = {}, double grad_scale = 1.0) {
    value_loss_result r;
    detail::value_loss_cuda(policy, values, old_values, returns, mask, grad_values, options, grad_scale, nullptr, &r);
    return r;
}

}  // namespace posttrain::policy_loss
