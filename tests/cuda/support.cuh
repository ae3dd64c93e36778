#pragma once
// Device buffers and host-vs-device comparison for the CUDA tests.

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

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

}  // namespace posttrain::test
