#pragma once
// tensor_view: a non-owning, trivially copyable view of caller memory (pointer, extents, element
// strides), usable on host and device. The memory space is part of the type, so a host view handed
// to a device algorithm is a compile error rather than a crash.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../config.hpp"

namespace posttrain {

using index_t = std::int64_t;

struct host_space {};
struct device_space {};

template <class T, int Rank, class Space = host_space>
class tensor_view {
    static_assert(Rank >= 0 && Rank <= 3, "posttrain::tensor_view supports ranks 0 to 3");
    static_assert(std::is_same_v<Space, host_space> || std::is_same_v<Space, device_space>,
                  "posttrain::tensor_view: Space must be host_space or device_space");
    static constexpr int storage_rank = Rank > 0 ? Rank : 1;

public:
    using element_type = T;
    using value_type = std::remove_cv_t<T>;
    using space = Space;
    static constexpr int rank = Rank;

    POSTTRAIN_HD constexpr tensor_view() noexcept : data_(nullptr), extents_{}, strides_{} {}

    // Row-major contiguous view.
    template <class... Extents, class = std::enable_if_t<sizeof...(Extents) == Rank &&
                                                         (std::is_integral_v<Extents> && ...)>>
    POSTTRAIN_HD constexpr explicit tensor_view(T* data, Extents... extents) noexcept
        : data_(data), extents_{}, strides_{} {
        index_t e[storage_rank] = {static_cast<index_t>(extents)...};
        index_t stride = 1;
        for (int r = Rank - 1; r >= 0; --r) {
            extents_[r] = e[r];
            strides_[r] = stride;
            stride *= e[r];
        }
    }

    // Arbitrary element strides (may be 0 for broadcast, must not be negative).
    POSTTRAIN_HD constexpr tensor_view(T* data, const index_t (&extents)[storage_rank],
                                       const index_t (&strides)[storage_rank]) noexcept
        : data_(data), extents_{}, strides_{} {
        for (int r = 0; r < Rank; ++r) {
            extents_[r] = extents[r];
            strides_[r] = strides[r];
        }
    }

    // Only T -> const T converts implicitly.
    template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
    POSTTRAIN_HD constexpr tensor_view(const tensor_view<U, Rank, Space>& other) noexcept
        : data_(other.data()), extents_{}, strides_{} {
        for (int r = 0; r < Rank; ++r) {
            extents_[r] = other.extent(r);
            strides_[r] = other.stride(r);
        }
    }

    POSTTRAIN_HD constexpr T* data() const noexcept { return data_; }
    POSTTRAIN_HD constexpr index_t extent(int r) const noexcept { return extents_[r]; }
    POSTTRAIN_HD constexpr index_t stride(int r) const noexcept { return strides_[r]; }

    POSTTRAIN_HD constexpr index_t size() const noexcept {
        index_t n = 1;
        for (int r = 0; r < Rank; ++r) n *= extents_[r];
        return n;
    }
    POSTTRAIN_HD constexpr bool empty() const noexcept { return size() == 0; }

    // True when the elements are laid out row-major without gaps (extent-1 dims may have any stride).
    POSTTRAIN_HD constexpr bool is_contiguous() const noexcept {
        index_t expected = 1;
        for (int r = Rank - 1; r >= 0; --r) {
            if (extents_[r] != 1 && strides_[r] != expected) return false;
            expected *= extents_[r];
        }
        return true;
    }

    template <class... I, class = std::enable_if_t<sizeof...(I) == Rank>>
    POSTTRAIN_HD constexpr T& operator()(I... idx) const noexcept {
        return data_[offset_of(static_cast<index_t>(idx)...)];
    }

    // Row r of a rank-2 view as a rank-1 view.
    template <int R = Rank, class = std::enable_if_t<R == 2>>
    POSTTRAIN_HD constexpr tensor_view<T, 1, Space> row(index_t r) const noexcept {
        index_t e[1] = {extents_[1]};
        index_t s[1] = {strides_[1]};
        return tensor_view<T, 1, Space>(data_ + r * strides_[0], e, s);
    }

private:
    template <class... I>
    POSTTRAIN_HD constexpr index_t offset_of(I... idx) const noexcept {
        index_t off = 0;
        int r = 0;
        ((off += idx * strides_[r++]), ...);
        return off;
    }

    T* data_;
    index_t extents_[storage_rank];
    index_t strides_[storage_rank];
};

template <class T, int Rank>
using host_view = tensor_view<T, Rank, host_space>;
template <class T, int Rank>
using device_view = tensor_view<T, Rank, device_space>;

template <class T>
struct is_tensor_view : std::false_type {};
template <class T, int R, class S>
struct is_tensor_view<tensor_view<T, R, S>> : std::true_type {};

// A 1-D view over contiguous host memory.
template <class T>
constexpr tensor_view<T, 1> make_view(T* data, index_t n) noexcept {
    return tensor_view<T, 1>(data, n);
}

// The bytes [begin, end) a view touches (strides are non-negative by construction); both null for an
// empty view.
struct byte_span {
    const unsigned char* begin = nullptr;
    const unsigned char* end = nullptr;
};
template <class T, int R, class S>
constexpr byte_span view_bytes(const tensor_view<T, R, S>& v) noexcept {
    if (v.size() == 0) return {};
    index_t last = 0;
    for (int r = 0; r < R; ++r) last += (v.extent(r) - 1) * v.stride(r);
    return {reinterpret_cast<const unsigned char*>(v.data()), reinterpret_cast<const unsigned char*>(v.data() + last + 1)};
}

// Whether a view shares a byte with [b_begin, b_end), or with another view, for aliasing checks.
template <class T, int R, class S>
constexpr bool views_overlap(const tensor_view<T, R, S>& a, const void* b_begin, const void* b_end) noexcept {
    if (a.size() == 0) return false;
    const byte_span s = view_bytes(a);
    return s.begin < static_cast<const unsigned char*>(b_end) && static_cast<const unsigned char*>(b_begin) < s.end;
}

template <class T, int R, class S, class U, int Q>
constexpr bool views_overlap(const tensor_view<T, R, S>& a, const tensor_view<U, Q, S>& b) noexcept {
    if (b.size() == 0) return false;
    const byte_span s = view_bytes(b);
    return views_overlap(a, s.begin, s.end);
}

}  // namespace posttrain

namespace posttrain {
// Passed in place of an optional output to skip computing it.
struct none_t {
    explicit constexpr none_t(int) noexcept {}
};
inline constexpr none_t none{0};
}  // namespace posttrain
