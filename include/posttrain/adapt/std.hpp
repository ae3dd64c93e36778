#pragma once
// Adapters for the standard library: std::vector, std::array, std::span (rank 1, host memory).

#include <array>
#include <span>
#include <type_traits>
#include <vector>

#include "../core/traits.hpp"

namespace posttrain {

template <class T, class Alloc>
struct tensor_traits<std::vector<T, Alloc>> {
    static_assert(!std::is_same_v<T, bool>,
                  "posttrain: std::vector<bool> is bit-packed and cannot be viewed; use std::vector<std::uint8_t>");
    static tensor_view<T, 1> view(std::vector<T, Alloc>& v) noexcept {
        return tensor_view<T, 1>(v.data(), static_cast<index_t>(v.size()));
    }
    static tensor_view<const T, 1> view(const std::vector<T, Alloc>& v) noexcept {
        return tensor_view<const T, 1>(v.data(), static_cast<index_t>(v.size()));
    }
};

template <class T, std::size_t N>
struct tensor_traits<std::array<T, N>> {
    static tensor_view<T, 1> view(std::array<T, N>& v) noexcept { return tensor_view<T, 1>(v.data(), index_t(N)); }
    static tensor_view<const T, 1> view(const std::array<T, N>& v) noexcept {
        return tensor_view<const T, 1>(v.data(), index_t(N));
    }
};

// A span views its elements with the span's own constness, whatever the constness of the span.
template <class T, std::size_t Extent>
struct tensor_traits<std::span<T, Extent>> {
    static tensor_view<T, 1> view(const std::span<T, Extent>& s) noexcept {
        return tensor_view<T, 1>(s.data(), static_cast<index_t>(s.size()));
    }
};

}  // namespace posttrain
