#pragma once
// Per-token log-probs of the labels, and their backward, on the GPU: the exec::cuda overloads of
// preference::token_log_probs and token_log_probs_backward (logits.hpp), with the same arguments and
// options. They are the logits module's CUDA primitive (<posttrain/logits/token_log_probs.cuh>: one
// online pass per position, the backward recomputing the softmax statistics) under this module's
// names, so everything documented there holds: logits [B, T, V] may also be half or bfloat16 (then
// accumulated in float), outputs are float or double [B, T] device views, grad_logits has the
// logits' dtype, and what the host would raise (a label outside [0, V), a NaN/+inf logit at a scored
// position, a non-finite upstream gradient) sets a bit in the policy's status word instead.
//
//     pt::preference::token_log_probs(pt::exec::cuda.on(stream), d_logits, d_labels, d_logp);
//     pt::preference::token_log_probs_backward(pt::exec::cuda.on(stream), d_logits, d_labels, d_grad_logp,
//                                              d_grad_logits);
//
// Scratch: none for the forward; the backward keeps one record per position
// (token_log_probs_backward_workspace_bytes(B, T)).

#if !defined(__CUDACC__)
#error "<posttrain/preference/logits.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../logits/token_log_probs.cuh"
#include "logits.hpp"

namespace posttrain::preference {

inline std::size_t token_log_probs_backward_workspace_bytes(index_t batch, index_t time) {
    return logits::token_log_probs_backward_workspace_bytes(batch, time, 0, false);
}

template <class Logits, class Labels, class Out>
void token_log_probs(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels, Out&& out,
                     const token_log_probs_options& options = {}) {
    logits::detail::token_log_probs_cuda(policy, logits, labels, out, none, none, detail::primitive_options(options),
                                         "posttrain::preference::token_log_probs");
}

template <class Logits, class Labels, class GradLogp, class GradLogits>
void token_log_probs_backward(const exec::cuda_policy& policy, const Logits& logits, const Labels& labels,
                              const GradLogp& grad_logp, GradLogits&& grad_logits,
                              const token_log_probs_options& options = {}) {
    logits::detail::token_log_probs_backward_cuda(policy, logits, labels, grad_logp, none, grad_logits, none, none,
                                                  detail::primitive_options(options),
                                                  "posttrain::preference::token_log_probs_backward");
}

}  // namespace posttrain::preference
