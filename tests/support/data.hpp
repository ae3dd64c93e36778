#pragma once
// Deterministic test data: rewards, ragged offsets, masks.

#include <cstdint>
#include <random>
#include <vector>

#include <posttrain/core/view.hpp>

namespace posttrain::test {

inline std::vector<double> random_rewards(std::size_t n, std::uint64_t seed, bool binary = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::bernoulli_distribution coin(0.4);
    std::vector<double> r(n);
    for (auto& x : r) x = binary ? (coin(rng) ? 1.0 : 0.0) : normal(rng);
    return r;
}

// Offsets of groups with sizes drawn from [0, max_size] (empty groups included), summing to the total.
inline std::vector<std::int64_t> random_offsets(std::size_t groups, std::int64_t max_size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int64_t> size(0, max_size);
    std::vector<std::int64_t> off{0};
    for (std::size_t g = 0; g < groups; ++g) off.push_back(off.back() + size(rng));
    return off;
}

inline std::vector<double> random_mask(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution keep(0.7);
    std::vector<double> m(rows * cols);
    for (auto& x : m) x = keep(rng) ? 1.0 : 0.0;
    return m;
}

template <class T>
tensor_view<const T, 2> matrix(const std::vector<T>& v, index_t rows, index_t cols) {
    return tensor_view<const T, 2>(v.data(), rows, cols);
}
template <class T>
tensor_view<T, 2> matrix(std::vector<T>& v, index_t rows, index_t cols) {
    return tensor_view<T, 2>(v.data(), rows, cols);
}

}  // namespace posttrain::test
