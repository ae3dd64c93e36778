#pragma once
// Device buffers and host-vs-device comparison for the CUDA tests.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <posttrain/cuda/dtypes.cuh>
#include <posttrain/cuda/exec.cuh>

#include "harness.hpp"

namespace posttrain::test {

// An owning device copy of a host vector (test-only convenience).
template <class T>
class device_vec {
public:
    explicit device_vec(const std::vector<T>& host) : n_(host.size()) {
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&p_, (n_ ? n_ : 1) * sizeof(T)));
        if (n_) POSTTRAIN_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    }
    explicit device_vec(std::size_t n, T fill = T{}) : device_vec(std::vector<T>(n, fill)) {}
    device_vec(const device_vec&) = delete;
    device_vec& operator=(const device_vec&) = delete;
    ~device_vec() { cudaFree(p_); }
    T* data() const { return p_; }
    std::size_t size() const { return n_; }
    device_view<T, 1> view() const { return device_view<T, 1>(p_, static_cast<index_t>(n_)); }
    device_view<const T, 1> cview() const { return device_view<const T, 1>(p_, static_cast<index_t>(n_)); }
    std::vector<T> host() const {
        std::vector<T> h(n_);
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        if (n_) POSTTRAIN_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
        return h;
    }

private:
    T* p_ = nullptr;
    std::size_t n_;
};

// [n, t] row-major views of a device buffer: read-only (dview) and writable (dout).
template <class T>
device_view<const T, 2> dview(const device_vec<T>& d, index_t n, index_t t) {
    return device_view<const T, 2>(d.data(), n, t);
}
template <class T>
device_view<T, 2> dout(device_vec<T>& d, index_t n, index_t t) {
    return device_view<T, 2>(d.data(), n, t);
}

// A column-major [n, t] device copy of a row-major host matrix (strides {1, n}: neither index is
// contiguous along a row, so kernels take their strided paths), in a buffer with one spare element.
template <class T>
struct column_major {
    index_t n, t;
    device_vec<T> buf;
    column_major(const std::vector<T>& rowmajor, index_t n_, index_t t_) : n(n_), t(t_), buf(transpose(rowmajor, n_, t_)) {}
    static std::vector<T> transpose(const std::vector<T>& v, index_t n, index_t t) {
        std::vector<T> c(static_cast<std::size_t>(n * t) + 1, T(7));
        for (index_t i = 0; i < n; ++i)
            for (index_t j = 0; j < t; ++j) c[static_cast<std::size_t>(j * n + i)] = v[static_cast<std::size_t>(i * t + j)];
        return c;
    }
    device_view<T, 2> view() const { return device_view<T, 2>(buf.data(), {n, t}, {1, n}); }
    device_view<const T, 2> cview() const { return view(); }
    std::vector<T> host_rowmajor() const {
        const auto c = buf.host();
        std::vector<T> v(static_cast<std::size_t>(n * t));
        for (index_t i = 0; i < n; ++i)
            for (index_t j = 0; j < t; ++j) v[static_cast<std::size_t>(i * t + j)] = c[static_cast<std::size_t>(j * n + i)];
        return v;
    }
};

// A 0/1 token mask [n, t] as the token-level tests use it: each token kept with probability 0.8
// (interior zeros), row 1 fully masked and row 2 right-padded from t / 3 on.
inline std::vector<double> token_mask(index_t n, index_t t, std::mt19937_64& rng) {
    std::bernoulli_distribution keep(0.8);
    std::vector<double> m(std::size_t(n * t));
    for (auto& x : m) x = keep(rng) ? 1.0 : 0.0;
    if (n > 1)
        for (index_t j = 0; j < t; ++j) m[std::size_t(1 * t + j)] = 0;
    if (n > 2)
        for (index_t j = t / 3; j < t; ++j) m[std::size_t(2 * t + j)] = 0;
    return m;
}

// Whether `f` throws invalid_argument naming the argument "policy" with `what` ("workspace", "status
// word") and `arg` (the argument it overlaps) in its message: a policy's workspace or status word over
// an input or an output of the call, refused before anything is allocated or launched.
inline bool refuses_policy(const std::function<void()>& f, const std::string& what, const std::string& arg) {
    try {
        f();
    } catch (const invalid_argument& e) {
        const std::string m = e.what();
        const bool ok = e.argument() == "policy" && m.find(what) != std::string::npos &&
                        m.find("'" + arg + "'") != std::string::npos;
        if (!ok) test::report_failure(__FILE__, __LINE__, "expected policy / " + what + " over '" + arg + "', got: " + m);
        return ok;
    } catch (const std::exception& e) {
        test::report_failure(__FILE__, __LINE__, std::string("expected invalid_argument, got: ") + e.what());
        return false;
    }
    test::report_failure(__FILE__, __LINE__, "expected invalid_argument: " + what + " over '" + arg + "'");
    return false;
}

// `full`, or `small` when the environment asks for quick runs (harness.hpp quick(): sanitizers).
inline index_t quick_size(index_t full, index_t small) { return quick() && small < full ? small : full; }

// Host copies in another element type (float, double, __half, __nv_bfloat16), rounded as the device
// rounds: to build a T input from double data, and to read a T output back as double.
template <class T>
std::vector<T> as_type(const std::vector<double>& v) {
    std::vector<T> out(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) out[k] = detail::from_double<T>(v[k]);
    return out;
}
template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
    std::vector<double> out(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) out[k] = detail::to_double(v[k]);
    return out;
}

// Element-wise |got - want| <= tol * max(1, |want|) + slack[i] (slack optional); NaN must match NaN.
// Reports the first mismatches.
template <class T>
bool close_to(const std::vector<T>& got, const std::vector<T>& want, double tol, const std::string& what,
              const std::vector<double>& slack = {}) {
    if (got.size() != want.size()) {
        report_failure(__FILE__, __LINE__, what + ": size mismatch");
        return false;
    }
    int bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        const bool ok = (std::isnan(w) && std::isnan(g)) ||
                        (!std::isnan(g) && std::fabs(g - w) <= tol * std::fmax(1.0, std::fabs(w)) + (slack.empty() ? 0.0 : slack[i])) ||
                        (g == w);
        if (!ok && bad++ < 5) {
            char buf[256];
            std::snprintf(buf, sizeof buf, "%s: index %zu: got %.17g, want %.17g", what.c_str(), i, g, w);
            report_failure(__FILE__, __LINE__, buf);
        }
    }
    ++state().checks;
    return bad == 0;
}

// ---- CUDA-graph capture and replay (graph_test.cu; any test may add cases) -------------------------
//
//     graph_case c;
//     c.name = "grpo batch std";
//     c.workspace = advantage::grpo_workspace_bytes(n, o);     // exactly what the call asks for
//     c.outputs = {out_of(d_adv)};                             // compared bitwise
//     c.load = [&](int k) { rewards.load(k); };                // input_sets: two host sets per buffer
//     c.call = [&](const exec::cuda_policy& p) { advantage::grpo(p, rewards.dev.cview(), groups, d_adv.view(), o); };
//     graph_replay_both(c);
//
// graph_replay runs the call eagerly on input sets 0 and 1 (set 0 twice: run-to-run determinism),
// captures it into a CUDA graph in cudaStreamCaptureModeGlobal on a blocking stream (a hidden
// synchronization, an allocation off the stream or a launch on the legacy stream fails the capture),
// replays it on set 1 and then set 0, and checks outputs and status word bitwise against the eager
// runs. The policy carries a workspace of exactly c.workspace bytes (a call needing more throws) or,
// with with_workspace = false, none (cudaMallocAsync then becomes a graph memory node).

// A device region a call writes: compared bitwise. `fill` is what it holds before each run (0xff:
// NaN for floats, so that an unwritten element is seen; results that are structs start at 0 so that
// their padding, which no kernel writes, compares equal).
struct region {
    void* p;
    std::size_t bytes;
    unsigned char fill = 0xff;
};

struct graph_case {
    std::string name;
    std::size_t workspace = 0;                            // <algo>_workspace_bytes(...)
    std::vector<region> outputs;
    std::function<void(int)> load;                        // uploads input set 0 or 1 (synchronous, outside capture)
    std::function<void(const exec::cuda_policy&)> call;      // enqueues the algorithm on the policy's stream
};

// Two host input sets of one device buffer; load(k) copies set k into it.
template <class T>
struct input_sets {
    std::vector<T> set[2];
    device_vec<T> dev;
    explicit input_sets(std::vector<T> a, std::vector<T> b) : set{std::move(a), std::move(b)}, dev(set[0]) {}
    void load(int k) const {
        if (!set[k].empty())
            POSTTRAIN_CUDA_CHECK(cudaMemcpy(dev.data(), set[k].data(), sizeof(T) * set[k].size(), cudaMemcpyHostToDevice));
    }
};

template <class T>
region out_of(const device_vec<T>& v, unsigned char fill = 0xff) {
    return {v.data(), sizeof(T) * v.size(), fill};
}

namespace graph_detail {

using bytes = std::vector<unsigned char>;

struct snapshot {
    std::vector<bytes> outputs;
    std::uint32_t status = 0;
};

inline snapshot take(cudaStream_t s, const std::vector<region>& outs, const std::uint32_t* d_status) {
    POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(s));
    snapshot r;
    for (const region& o : outs) {
        r.outputs.emplace_back(o.bytes);
        if (o.bytes) POSTTRAIN_CUDA_CHECK(cudaMemcpy(r.outputs.back().data(), o.p, o.bytes, cudaMemcpyDeviceToHost));
    }
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(&r.status, d_status, sizeof(std::uint32_t), cudaMemcpyDeviceToHost));
    return r;
}

inline void clear(const std::vector<region>& outs, std::uint32_t* d_status) {
    for (const region& o : outs)
        if (o.bytes) POSTTRAIN_CUDA_CHECK(cudaMemset(o.p, o.fill, o.bytes));
    POSTTRAIN_CUDA_CHECK(cudaMemset(d_status, 0, sizeof(std::uint32_t)));
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
}

// Bitwise equality, naming the first differing byte of the first differing region.
inline bool same(const snapshot& got, const snapshot& want, const std::string& what) {
    bool ok = got.status == want.status;
    if (!ok)
        report_failure(__FILE__, __LINE__,
                       what + ": status word " + std::to_string(got.status) + ", eager " + std::to_string(want.status));
    for (std::size_t r = 0; r < want.outputs.size(); ++r) {
        const bytes& g = got.outputs[r];
        const bytes& w = want.outputs[r];
        if (g == w) continue;
        std::size_t at = 0;
        while (at < g.size() && g[at] == w[at]) ++at;
        report_failure(__FILE__, __LINE__,
                       what + ": output " + std::to_string(r) + " differs from byte " + std::to_string(at) + " of " +
                           std::to_string(w.size()));
        ok = false;
    }
    ++state().checks;
    return ok;
}

// Captures c.call on stream s under `policy`; null (and a failure naming the cause) when the call
// cannot be captured.
inline cudaGraphExec_t capture(const graph_case& c, const exec::cuda_policy& policy, cudaStream_t s, const std::string& what) {
    cudaGraph_t graph = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    std::string thrown;
    try {
        c.call(policy);
    } catch (const std::exception& e) {
        thrown = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(s, &graph);
    (void)cudaGetLastError();  // a failed capture leaves its error here; it is reported below
    if (!thrown.empty() || end != cudaSuccess || graph == nullptr) {
        report_failure(__FILE__, __LINE__,
                       what + ": capture failed (" + (thrown.empty() ? "" : "the call threw: " + thrown + "; ") +
                           "cudaStreamEndCapture: " + cudaGetErrorString(end) +
                           ") -- a hidden synchronization, an allocation off the stream, or a launch on another stream");
        if (graph) cudaGraphDestroy(graph);
        return nullptr;
    }
    std::size_t nodes = 0;
    POSTTRAIN_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    PT_CHECK_MSG(nodes > 0, what + ": the captured graph is empty");
    cudaGraphExec_t instance = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&instance, graph, 0);
    cudaGraphDestroy(graph);
    if (inst != cudaSuccess) {
        (void)cudaGetLastError();
        report_failure(__FILE__, __LINE__, what + ": cudaGraphInstantiate: " + cudaGetErrorString(inst));
        return nullptr;
    }
    return instance;
}

}  // namespace graph_detail

// Eager runs on input sets 0 and 1 (set 0 twice: run-to-run determinism), then the graph captured
// with set 0 loaded and replayed on set 1, then on set 0 again; every replay bitwise equal to the
// eager run on the same inputs. with_workspace = false: scratch from cudaMallocAsync (in the graph).
inline void graph_replay(const graph_case& c, bool with_workspace = true) {
    const std::string what =
        c.name + (with_workspace ? " [workspace " + std::to_string(c.workspace) + " B]" : " [cudaMallocAsync]");
    cudaStream_t s = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaStreamCreate(&s));  // blocking: a launch on the legacy stream during capture is an error
    void* ws = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&ws, c.workspace ? c.workspace : 1));
    device_vec<std::uint32_t> status(1, 0u);
    exec::cuda_policy policy = exec::cuda.on(s).with_status(status.data());
    // Exactly the advertised bytes: a call that needs more throws instead of allocating.
    if (with_workspace) policy = policy.with(ws, c.workspace);

    graph_detail::snapshot eager[2];
    try {
        for (int k : {0, 1}) {
            c.load(k);
            graph_detail::clear(c.outputs, status.data());
            c.call(policy);
            eager[k] = graph_detail::take(s, c.outputs, status.data());
        }
        c.load(0);
        graph_detail::clear(c.outputs, status.data());
        c.call(policy);
        graph_detail::same(graph_detail::take(s, c.outputs, status.data()), eager[0], what + ": eager rerun");
    } catch (const std::exception& e) {
        report_failure(__FILE__, __LINE__, what + ": eager run threw: " + e.what());
        cudaFree(ws);
        cudaStreamDestroy(s);
        return;
    }
    bool differ = false;
    for (std::size_t r = 0; r < eager[0].outputs.size(); ++r) differ = differ || eager[0].outputs[r] != eager[1].outputs[r];
    PT_CHECK_MSG(differ, what + ": the two input sets give the same outputs (the replay test would prove nothing)");

    c.load(0);
    graph_detail::clear(c.outputs, status.data());
    if (const cudaGraphExec_t instance = graph_detail::capture(c, policy, s, what)) {
        for (int k : {1, 0}) {
            c.load(k);
            graph_detail::clear(c.outputs, status.data());
            POSTTRAIN_CUDA_CHECK(cudaGraphLaunch(instance, s));
            graph_detail::same(graph_detail::take(s, c.outputs, status.data()), eager[k],
                               what + ": replay on input set " + std::to_string(k));
        }
        cudaGraphExecDestroy(instance);
    }
    POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(s));
    cudaFree(ws);
    cudaStreamDestroy(s);
}

// Both scratch sources when the call needs scratch; the workspace only otherwise.
inline void graph_replay_both(const graph_case& c) {
    graph_replay(c, true);
    if (c.workspace > 0) graph_replay(c, false);
}

}  // namespace posttrain::test
