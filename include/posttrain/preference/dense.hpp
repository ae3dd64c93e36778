#pragma once
// Small per-example inputs and outputs of the "beyond pairs" preference losses (MODPO margin rewards,
// RankDPO / TPO scores, CoPG rewards, DNO targets, P3O rewards, D3PO steps): [N] or [N, C] tensors of
// any adapted type read into doubles with their checks, written back, and the rows of every group of
// a layout.

#include <cmath>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/groups.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"

namespace posttrain::preference {

namespace detail {

using namespace posttrain::detail;

// The rank of an adapted argument (static views know it at compile time, DLPack tensors at run time).
template <class X>
int input_rank(const X& x) {
    using V = std::remove_cvref_t<X>;
    if constexpr (static_viewable<V>) return static_view_t<V>::rank;
    else return int(tensor_traits<V>::dlpack(x).ndim);
}

// A small dense block of doubles read from a [N] or [N, C] floating input (rank-1: C = 1).
struct dense_values {
    std::vector<double> v;
    index_t rows = 0, cols = 1;
    double operator()(index_t i, index_t k = 0) const noexcept { return v[std::size_t(i * cols + k)]; }
};

template <class View>
void copy_rows(View x, dense_values& out) {
    out.rows = x.extent(0);
    if constexpr (View::rank == 2) out.cols = x.extent(1);
    out.v.resize(std::size_t(out.rows * out.cols));
    for (index_t i = 0; i < out.rows; ++i)
        for (index_t k = 0; k < out.cols; ++k) {
            if constexpr (View::rank == 2) out.v[std::size_t(i * out.cols + k)] = double(x(i, k));
            else out.v[std::size_t(i)] = double(x(i));
        }
}

// Reads a [N] (or, with allow_matrix, [N, C]) input of floating or arithmetic element type into
// doubles. `rows` < 0 accepts any N. Non-finite entries raise naming the first (unless allow_nonfinite).
// AnyArithmetic: integer and bool element types are accepted too (labels, scores, masks).
template <bool AnyArithmetic = false, class X>
dense_values read_dense(const X& x, index_t rows, where w, bool allow_matrix = false, bool allow_nonfinite = false) {
    dense_values out;
    const int r = input_rank(x);
    require(r == 1 || (allow_matrix && r == 2), w,
            std::string("must be a ") + (allow_matrix ? "[N] or [N, C]" : "[N]") + " tensor, found rank " + str(index_t(r)));
    auto read = [&](auto variant) { std::visit([&](auto v) { copy_rows(v, out); }, variant); };
    if constexpr (static_viewable<std::remove_cvref_t<X>>) {
        constexpr int R = static_view_t<std::remove_cvref_t<X>>::rank;
        if constexpr (R == 1 || R == 2) {
            if constexpr (AnyArithmetic) read(posttrain::detail::mask_input<R>(x, w));
            else read(posttrain::detail::floating_input<R>(x, w));
        }
    } else {
        if constexpr (AnyArithmetic) {
            if (r == 2) read(posttrain::detail::mask_input<2>(x, w));
            else read(posttrain::detail::mask_input<1>(x, w));
        } else {
            if (r == 2) read(posttrain::detail::floating_input<2>(x, w));
            else read(posttrain::detail::floating_input<1>(x, w));
        }
    }
    if (rows >= 0)
        require(out.rows == rows, w, "must have one row per example: expected " + str(rows) + ", found " + str(out.rows));
    if (!allow_nonfinite)
        for (std::size_t j = 0; j < out.v.size(); ++j)
            if (!numeric::is_finite(out.v[j]))
                raise_invalid_argument(w.function, w.argument,
                                       "non-finite value at index " + str(index_t(j) / out.cols) +
                                           (out.cols > 1 ? ", " + str(index_t(j) % out.cols) : std::string()));
    return out;
}

// Writes values (rows x cols, row-major) into a [rows] (cols == 1) or [rows, cols] floating output.
template <class Out>
void write_dense(Out&& out, const std::vector<double>& values, index_t rows, index_t cols, where w) {
    const int r = input_rank(out);
    require(r == 1 || r == 2, w, "must be a [N] or [N, C] tensor, found rank " + str(index_t(r)));
    auto put = [&](auto variant) {
        std::visit(
            [&](auto o) {
                using V = decltype(o);
                using T = typename V::value_type;
                if constexpr (V::rank == 2) {
                    require(o.extent(0) == rows && o.extent(1) == cols, w,
                            "must have shape [" + str(rows) + ", " + str(cols) + "], found [" + str(o.extent(0)) + ", " +
                                str(o.extent(1)) + "]");
                    for (index_t i = 0; i < rows; ++i)
                        for (index_t k = 0; k < cols; ++k) o(i, k) = static_cast<T>(values[std::size_t(i * cols + k)]);
                } else {
                    require(cols == 1 && o.extent(0) == rows, w,
                            cols == 1 ? "must have " + str(rows) + " entries, found " + str(o.extent(0))
                                      : "must be a [" + str(rows) + ", " + str(cols) + "] view (the inputs have " +
                                            str(cols) + " columns)");
                    for (index_t i = 0; i < rows; ++i) o(i) = static_cast<T>(values[std::size_t(i)]);
                }
            },
            variant);
    };
    if constexpr (static_viewable<std::remove_cvref_t<Out>>) {
        constexpr int R = static_view_t<std::remove_cvref_t<Out>>::rank;
        if constexpr (R == 1 || R == 2) put(posttrain::detail::floating_output<R>(out, w));
    } else {
        if (r == 2) put(posttrain::detail::floating_output<2>(out, w));
        else put(posttrain::detail::floating_output<1>(out, w));
    }
}

// The rows of every group of a layout, as index lists (the lists are small: K responses per prompt).
// Groups of one row are rejected (a list of one has nothing to compare); empty groups are kept.
template <class Groups>
std::vector<std::vector<index_t>> group_rows(const Groups& groups, index_t n, where w, index_t min_size = 2) {
    const auto layout = posttrain::detail::make_layout(groups, n, w);
    std::vector<std::vector<index_t>> out(std::size_t(layout.num_groups()));
    for (index_t g = 0; g < layout.num_groups(); ++g) {
        const index_t k = layout.size(g);
        require(k == 0 || k >= min_size, w,
                "group " + str(g) + " has " + str(k) + " row(s); a list needs at least " + str(min_size) +
                    " responses (empty groups are allowed)");
        const auto rows = layout.rows(g);
        for (index_t j = 0; j < k; ++j) out[std::size_t(g)].push_back(rows(j));
    }
    return out;
}

}  // namespace detail
}  // namespace posttrain::preference
