#pragma once
// The KL estimators on the GPU: the exec::cuda overload of policy_loss::kl_penalty.
//
//     pt::policy_loss::kl_penalty(pt::exec::cuda.on(stream), d_logp, d_ref_logp, d_kl, d_grad,
//                                 pt::policy_loss::kl_options::verl(pt::policy_loss::kl_estimator::k3));
//
// log_probs and ref_log_probs are [B, T] device_view<const float|double, 2> (any strides) or DLPack
// tensors on a CUDA device; kl and grad_log_probs are writable device views of the same shape, or
// posttrain::none. One elementwise kernel, asynchronous on the policy's stream; the arithmetic is
// detail::kl_token (kl.hpp) in double for float input too, so results equal the host's up to the
// rounding of the multiply-adds nvcc contracts into FMAs (each token is computed on its own: no
// reduction order is involved).
//
// Non-finite log-probs under nonfinite::raise (the default) are computed as under propagate and set
// status_nonfinite_input in the policy's status word (.with_status(d_status)): device kernels never trap.

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/kl.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/exec.cuh"
#include "../cuda/tuning.cuh"
#include "kl.hpp"

namespace posttrain::policy_loss {
namespace detail {

template <class A, class B, class K, class G>
struct kl_kernel_args {
    const A* lp = nullptr;
    index_t lp_s0 = 0, lp_s1 = 0;
    const B* ref = nullptr;
    index_t ref_s0 = 0, ref_s1 = 0;
    K* kl = nullptr;  // null: not written
    index_t kl_s0 = 0, kl_s1 = 0;
    G* grad = nullptr;  // null: not written
    index_t grad_s0 = 0, grad_s1 = 0;
    index_t T = 0, n = 0;
    kl_options options;
    double grad_scale = 1;
    std::uint32_t* status = nullptr;
    bool report_nonfinite = false;
};

template <class A, class B, class K, class G>
__global__ void __launch_bounds__(cuda_tuning::block_threads) kl_penalty_kernel(const kl_kernel_args<A, B, K, G> a) {
    bool nonfinite = false;
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t j = index_t(blockIdx.x) * blockDim.x + threadIdx.x; j < a.n; j += step) {
        const index_t i = j / a.T, t = j - i * a.T;
        const double lp = double(a.lp[i * a.lp_s0 + t * a.lp_s1]);
        const double ref = double(a.ref[i * a.ref_s0 + t * a.ref_s1]);
        nonfinite |= !(numeric::is_finite(lp) && numeric::is_finite(ref));
        const value_grad r = kl_token(lp, ref, a.options);
        if (a.kl != nullptr) a.kl[i * a.kl_s0 + t * a.kl_s1] = static_cast<K>(r.value);
        if (a.grad != nullptr) a.grad[i * a.grad_s0 + t * a.grad_s1] = static_cast<G>(r.grad * a.grad_scale);
    }
    if (a.report_nonfinite && nonfinite) posttrain::detail::report_status(a.status, status_nonfinite_input);
}

// The device view of an optional output (an empty double view, which overlaps nothing, for none).
template <class Out, class L>
auto optional_device_output(Out&& out, const char* fn, const char* name, device_view<const L, 2> lp) {
    if constexpr (is_none<Out>) {
        return device_view<double, 2>();
    } else {
        auto v = std::visit([](auto x) { return x; }, posttrain::detail::floating_output<2, device_space>(out, {fn, name}));
        check_same_shape(v, lp, {fn, name}, "log_probs");
        return v;
    }
}

}  // namespace detail

template <class LogProbs, class RefLogProbs, class Kl, class Grad>
void kl_penalty(const exec::cuda_policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs, Kl&& kl,
                Grad&& grad_log_probs, const kl_options& options = {}, double grad_scale = 1.0) {
    constexpr const char* fn = "posttrain::policy_loss::kl_penalty";
    detail::check_kl_options(options, fn);
    std::visit(
        [&](auto lp, auto ref) {
            detail::check_same_shape(ref, lp, {fn, "ref_log_probs"}, "log_probs");
            auto k = detail::optional_device_output(kl, fn, "kl", lp);
            auto g = detail::optional_device_output(grad_log_probs, fn, "grad_log_probs", lp);
            detail::check_no_alias(k, lp, {fn, "kl"}, "log_probs");
            detail::check_no_alias(k, ref, {fn, "kl"}, "ref_log_probs");
            detail::check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            detail::check_no_alias(g, ref, {fn, "grad_log_probs"}, "ref_log_probs");
            detail::check_no_alias(g, k, {fn, "grad_log_probs"}, "kl");
            posttrain::detail::check_policy_apart(policy, fn, std::pair{lp, "log_probs"}, std::pair{ref, "ref_log_probs"},
                                                  std::pair{k, "kl"}, std::pair{g, "grad_log_probs"});
            using A = typename decltype(lp)::value_type;
            using B = typename decltype(ref)::value_type;
            using K = typename decltype(k)::value_type;
            using G = typename decltype(g)::value_type;
            detail::kl_kernel_args<A, B, K, G> a;
            a.lp = lp.data(), a.lp_s0 = lp.stride(0), a.lp_s1 = lp.stride(1);
            a.ref = ref.data(), a.ref_s0 = ref.stride(0), a.ref_s1 = ref.stride(1);
            if constexpr (!detail::is_none<Kl>) a.kl = k.data(), a.kl_s0 = k.stride(0), a.kl_s1 = k.stride(1);
            if constexpr (!detail::is_none<Grad>) a.grad = g.data(), a.grad_s0 = g.stride(0), a.grad_s1 = g.stride(1);
            a.T = lp.extent(1);
            a.n = lp.extent(0) * lp.extent(1);
            a.options = options;
            a.grad_scale = grad_scale;
            a.status = policy.status;
            a.report_nonfinite = options.nonfinite_inputs == advantage::nonfinite::raise;
            if (a.n == 0 || (a.kl == nullptr && a.grad == nullptr && a.status == nullptr)) return;
            constexpr index_t threads = cuda_tuning::block_threads;
            constexpr index_t max_blocks = index_t(1) << 20;  // then a grid-stride loop
            const index_t blocks = (a.n + threads - 1) / threads < max_blocks ? (a.n + threads - 1) / threads : max_blocks;
            detail::kl_penalty_kernel<<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0, policy.stream>>>(a);
            posttrain::detail::check_launch(fn);
        },
        posttrain::detail::floating_input<2, device_space>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2, device_space>(ref_log_probs, {fn, "ref_log_probs"}));
}

}  // namespace posttrain::policy_loss
