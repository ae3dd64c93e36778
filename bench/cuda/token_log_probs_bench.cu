// logits::token_log_probs and token_log_probs_backward on exec::cuda: logits [B, T, V] in device
// memory (filled on the device: normal-ish logits of scale 3), int64 labels with 1 in 16 positions
// ignored (-100), float outputs, the gradient in the logits' dtype. Shapes ([B, T, V], dtype):
//     [2, 4096, 128256] bf16 and fp32    (Llama 3's vocabulary; the issue's reference shape)
//     [2, 4096, 128256] fp16
//     [4, 2048, 151936] bf16             (Qwen's vocabulary)
//     [8, 2048, 32000]  bf16             (Llama 2's)
//     [256, 1024, 1024] bf16             (a small vocabulary: the warp-per-position kernels)
// Ops (one JSON line each; op = <name>_<dtype>_<B>x<T>x<V>, size = B * T * V logits):
//     tlp_fwd            log-probs only
//     tlp_fwd_entropy    log-probs, entropy and lse
//     tlp_bwd_saved      the backward from saved lse and entropy (both upstream gradients)
//     tlp_bwd_recompute  the backward recomputing the statistics (scratch from the workspace)
//     tlp_train          tlp_fwd_entropy then tlp_bwd_saved (a training step's forward and backward)
// Each line has timing.cuh's fields plus "bytes" (what the op must move: the forward reads the
// logits once, the saved backward reads them and writes the gradient, the recomputing one reads them
// twice), "memcpy_ms" (a device-to-device cudaMemcpy of half those bytes, which reads and writes as
// many; measured in this program, scaled linearly past the largest buffer) and "extra_bytes" (device
// memory the op needs beyond its inputs and the gradient: outputs + workspace). The rows with a PyTorch
// peer name it ("peer_layout", "peers": bench/peers/logits_peer.py, timed by bench/compare_gpu.py on
// the same shapes: log_softmax + gather; + entropy; autograd's forward + backward). Before the backward is
// timed, the forward's first four positions are checked against a double log_softmax on the host, and
// after all runs the status word must be 0; otherwise the bench says so on stderr and exits 1.
// Usage: posttrain_cuda_token_log_probs_bench [max_log2_positions (default 24) | quick]
//   (scripts/gpu-check passes its MAX_LOG2_N: shapes with B * T above 2^max_log2_positions are left
//   out, so the default runs them all; quick: the two smallest shapes only)

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <posttrain/logits/token_log_probs.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace lg = posttrain::logits;
using pt::index_t;
using pt::bench::time_ms;

namespace {

// A counter-based hash: the logits depend only on their index, so every dtype sees the same values.
__device__ inline std::uint32_t mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return static_cast<std::uint32_t>(x);
}

template <class T>
__global__ void fill_logits(T* z, index_t n) {
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
        // The sum of two uniforms on (-1, 1) is triangular (close enough to normal for the bench), times 3.
        const float u = mix(2 * std::uint64_t(i)) * 2.3283064e-10f, v = mix(2 * std::uint64_t(i) + 1) * 2.3283064e-10f;
        z[i] = pt::detail::from_double<T>(3.0 * (u + v - 1.0));
    }
}

std::string dtype_name(const float*) { return "f32"; }
std::string dtype_name(const __half*) { return "f16"; }
std::string dtype_name(const __nv_bfloat16*) { return "bf16"; }

// peer: the PyTorch peer (bench/peers/logits_peer.py) that computes the same, on the layout
// "tlp_<shape>" (compare_gpu.py reads peer_layout and peers from the row); empty: none.
void line(const std::string& op, const std::string& shape, index_t n, const std::string& device, double ms,
          double memcpy_ms, double bytes, double extra_bytes, const char* peer = "") {
    std::printf("{\"op\":\"%s_%s\",\"size\":%lld,\"threads\":0,\"device\":\"%s\",\"posttrain_ms\":%.6f,"
                "\"memcpy_ms\":%.6f,\"memcpy_fraction\":%.4f,\"bytes\":%.0f,\"gbps\":%.1f,\"extra_bytes\":%.0f",
                op.c_str(), shape.c_str(), static_cast<long long>(n), device.c_str(), ms, memcpy_ms, memcpy_ms / ms,
                bytes, bytes / (ms * 1e6), extra_bytes);
    if (*peer != '\0') std::printf(",\"peer_layout\":\"tlp_%s\",\"peers\":[\"%s\"]", shape.c_str(), peer);
    std::printf("}\n");
    std::fflush(stdout);
}

// A plain two-pass double log_softmax of the first positions, against the device's outputs: the timed
// kernels must be right before their times mean anything. Returns false (and says so) otherwise.
template <class T>
bool spot_check(const T* z, const std::int64_t* hy, const float* lp, const float* h, index_t V, const std::string& shape) {
    const index_t n = 4;
    std::vector<T> rows(static_cast<std::size_t>(n * V));
    std::vector<float> got_lp(n), got_h(n);
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(rows.data(), z, sizeof(T) * rows.size(), cudaMemcpyDeviceToHost));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(got_lp.data(), lp, sizeof(float) * n, cudaMemcpyDeviceToHost));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(got_h.data(), h, sizeof(float) * n, cudaMemcpyDeviceToHost));
    bool ok = true;
    for (index_t p = 0; p < n; ++p) {
        const T* r = rows.data() + p * V;
        double m = -INFINITY, s = 0, a = 0;
        for (index_t v = 0; v < V; ++v) m = std::fmax(m, pt::detail::to_double(r[v]));
        for (index_t v = 0; v < V; ++v) {
            const double d = pt::detail::to_double(r[v]) - m, e = std::exp(d);
            s += e, a += e * d;
        }
        const double lse = m + std::log(s), ent = std::log(s) - a / s;
        const double want_lp = hy[p] < 0 ? 0.0 : pt::detail::to_double(r[hy[p]]) - lse;
        const double want_h = ent;
        if (!(std::fabs(got_lp[p] - want_lp) <= 1e-4 * (1 + std::fabs(want_lp)) &&
              std::fabs(got_h[p] - want_h) <= 1e-4 * (1 + want_h))) {
            std::fprintf(stderr, "token_log_probs bench %s: position %lld: log_prob %.9g (want %.9g), entropy %.9g (want %.9g)\n",
                         shape.c_str(), static_cast<long long>(p), got_lp[p], want_lp, got_h[p], want_h);
            ok = false;
        }
    }
    return ok;
}

template <class T>
bool run_shape(index_t B, index_t Tn, index_t V, const std::string& device) {
    const index_t P = B * Tn, n = P * V;
    const std::size_t zbytes = sizeof(T) * static_cast<std::size_t>(n);
    T *z = nullptr, *g = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&z, zbytes));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&g, zbytes));
    fill_logits<<<4096, 256>>>(z, n);
    POSTTRAIN_CUDA_CHECK(cudaGetLastError());
    std::vector<std::int64_t> hy(static_cast<std::size_t>(P));
    for (index_t p = 0; p < P; ++p) hy[std::size_t(p)] = p % 16 == 15 ? -100 : (p * 7919) % V;
    std::int64_t* y = nullptr;
    float *lp = nullptr, *h = nullptr, *lse = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&y, sizeof(std::int64_t) * P));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(y, hy.data(), sizeof(std::int64_t) * P, cudaMemcpyHostToDevice));
    for (float** p : {&lp, &h, &lse}) {
        POSTTRAIN_CUDA_CHECK(cudaMalloc(p, sizeof(float) * P));
        POSTTRAIN_CUDA_CHECK(cudaMemset(*p, 0, sizeof(float) * P));
    }
    const std::size_t ws_bytes = lg::token_log_probs_backward_workspace_bytes(B, Tn, V, false);
    void* ws = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&ws, ws_bytes ? ws_bytes : 1));
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());

    const auto zv = pt::device_view<const T, 3>(z, B, Tn, V);
    const auto gv = pt::device_view<T, 3>(g, B, Tn, V);
    const auto yv = pt::device_view<const std::int64_t, 2>(y, B, Tn);
    const auto out = [&](float* p) { return pt::device_view<float, 2>(p, B, Tn); };
    const auto in = [&](float* p) { return pt::device_view<const float, 2>(p, B, Tn); };
    // The copy baseline: z -> g (both zbytes long), scaled linearly past them.
    auto copy_ms = [&](double bytes_moved) {
        const double half = bytes_moved / 2;
        const std::size_t c = half < double(zbytes) ? static_cast<std::size_t>(half) : zbytes;
        const double ms = time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(g, z, c, cudaMemcpyDeviceToDevice)); });
        return ms * half / double(c);
    };
    const std::string shape = dtype_name(static_cast<const T*>(nullptr)) + "_" + std::to_string(B) + "x" +
                              std::to_string(Tn) + "x" + std::to_string(V);
    const double out_bytes = double(sizeof(float)) * double(P);
    const double read = double(zbytes);

    std::uint32_t* status = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&status, sizeof(std::uint32_t)));
    POSTTRAIN_CUDA_CHECK(cudaMemset(status, 0, sizeof(std::uint32_t)));
    const auto cuda = pt::exec::cuda.with_status(status);
    line("tlp_fwd", shape, n, device, time_ms([&] { lg::token_log_probs(cuda, zv, yv, out(lp)); }), copy_ms(read),
         read, out_bytes, "log_softmax_gather");
    line("tlp_fwd_entropy", shape, n, device,
         time_ms([&] { lg::token_log_probs(cuda, zv, yv, out(lp), out(h), out(lse)); }), copy_ms(read), read,
         3 * out_bytes, "log_softmax_gather_entropy");
    // The saved statistics of the backward: the forward's, computed once; the upstream gradients are
    // the log-probs and entropies themselves (any finite [B, T] values do).
    lg::token_log_probs(cuda, zv, yv, out(lp), out(h), out(lse));
    const bool right = spot_check(z, hy.data(), lp, h, V, shape);
    line("tlp_bwd_saved", shape, n, device,
         time_ms([&] { lg::token_log_probs_backward(cuda, zv, yv, in(lp), in(h), gv, in(lse), in(h)); }),
         copy_ms(2 * read), 2 * read, 0);
    line("tlp_bwd_recompute", shape, n, device,
         time_ms([&] { lg::token_log_probs_backward(cuda.with(ws, ws_bytes), zv, yv, in(lp), in(h), gv); }),
         copy_ms(3 * read), 3 * read, double(ws_bytes));
    // A training step's pair, against autograd's forward + backward: the forward with lse and entropy,
    // then the backward from them (the gradient buffer is the caller's, as autograd's is its own).
    line("tlp_train", shape, n, device, time_ms([&] {
             lg::token_log_probs(cuda, zv, yv, out(lp), out(h), out(lse));
             lg::token_log_probs_backward(cuda, zv, yv, in(lp), in(h), gv, in(lse), in(h));
         }),
         copy_ms(3 * read), 3 * read, 3 * out_bytes, "logprobs_entropy_autograd");
    std::uint32_t st = 0;
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(&st, status, sizeof st, cudaMemcpyDeviceToHost));
    if (st != 0) std::fprintf(stderr, "token_log_probs bench %s: status word %u (expected 0)\n", shape.c_str(), st);
    for (void* p : {static_cast<void*>(z), static_cast<void*>(g), static_cast<void*>(y), static_cast<void*>(lp),
                    static_cast<void*>(h), static_cast<void*>(lse), ws,
                    static_cast<void*>(status)})
        cudaFree(p);
    return right && st == 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA token_log_probs bench: no CUDA device present, skipped\n");
        return 77;
    }
    const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
    const int max_log2 = argc > 1 && !quick ? std::atoi(argv[1]) : 24;
    const auto want = [&](index_t B, index_t T) { return max_log2 >= 62 || B * T <= (index_t{1} << max_log2); };
    // The reference shapes first, so that a stage that runs out of time still has them.
    bool ok = true;
    if (!quick) {
        if (want(2, 4096)) {
            ok &= run_shape<__nv_bfloat16>(2, 4096, 128256, device);
            ok &= run_shape<float>(2, 4096, 128256, device);
            ok &= run_shape<__half>(2, 4096, 128256, device);
        }
        if (want(4, 2048)) ok &= run_shape<__nv_bfloat16>(4, 2048, 151936, device);
    }
    if (want(8, 2048)) ok &= run_shape<__nv_bfloat16>(8, 2048, 32000, device);
    if (want(256, 1024)) ok &= run_shape<__nv_bfloat16>(256, 1024, 1024, device);
    return ok ? 0 : 1;
}
