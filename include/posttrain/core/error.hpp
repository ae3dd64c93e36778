#pragma once
// Errors: every misuse detectable on the host becomes posttrain::invalid_argument whose message names
// the function, the argument, and what was expected versus found.

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../config.hpp"

namespace posttrain {

// Thrown for bad input: shapes, dtypes, devices, ranks, aliasing, offsets, ids, non-finite values.
class invalid_argument : public std::invalid_argument {
public:
    invalid_argument(std::string_view function, std::string_view argument, std::string_view what)
        : std::invalid_argument(compose(function, argument, what)),
          function_(function), argument_(argument) {}

    const std::string& function() const noexcept { return function_; }
    const std::string& argument() const noexcept { return argument_; }

private:
    static std::string compose(std::string_view function, std::string_view argument, std::string_view what) {
        std::string m;
        m.reserve(function.size() + argument.size() + what.size() + 24);
        m.append(function).append(": argument '").append(argument).append("': ").append(what);
        return m;
    }
    std::string function_;
    std::string argument_;
};

// Thrown when a CUDA API call or kernel launch fails; carries the raw cudaError_t value.
class cuda_error : public std::runtime_error {
public:
    cuda_error(int code, std::string_view function, std::string_view what)
        : std::runtime_error(std::string(function) + ": CUDA error " + std::to_string(code) + ": " + std::string(what)),
          code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

// Bits a device kernel sets in an optional status word instead of trapping.
enum status_bits : std::uint32_t {
    status_ok = 0,
    status_nonfinite_input = 1u << 0,
    status_id_out_of_range = 1u << 1,
    status_empty_reduction = 1u << 2,
    status_invalid_groups = 1u << 3,   // ragged offsets that are not a valid CSR layout (those groups are skipped)
    status_singleton_group = 1u << 4,  // a singleton group under singleton::error
    status_invalid_value = 1u << 5,    // a value outside its domain that the host would reject (e.g. a negative length)
};

enum class error_kind { invalid_argument, cuda_error };

// Under POSTTRAIN_NO_EXCEPTIONS errors go to this handler; if it returns, the program aborts.
using error_handler = void (*)(error_kind, const char* message);

namespace detail {
inline error_handler& current_error_handler() noexcept {
    static error_handler handler = nullptr;
    return handler;
}
}  // namespace detail

inline error_handler set_error_handler(error_handler h) noexcept {
    error_handler old = detail::current_error_handler();
    detail::current_error_handler() = h;
    return old;
}

namespace detail {

[[noreturn]] inline void raise_invalid_argument(std::string_view function, std::string_view argument,
                                                std::string_view what) {
#if POSTTRAIN_EXCEPTIONS
    throw posttrain::invalid_argument(function, argument, what);
#else
    posttrain::invalid_argument e(function, argument, what);
    if (auto h = current_error_handler()) h(error_kind::invalid_argument, e.what());
    std::abort();
#endif
}

[[noreturn]] inline void raise_cuda_error(int code, std::string_view function, std::string_view what) {
#if POSTTRAIN_EXCEPTIONS
    throw posttrain::cuda_error(code, function, what);
#else
    posttrain::cuda_error e(code, function, what);
    if (auto h = current_error_handler()) h(error_kind::cuda_error, e.what());
    std::abort();
#endif
}

// Names the function and argument a check is about, so that every message carries both.
struct where {
    const char* function;
    const char* argument;
};

inline void require(bool ok, where w, std::string_view what) {
    if (!ok) raise_invalid_argument(w.function, w.argument, what);
}

inline std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace detail
}  // namespace posttrain
