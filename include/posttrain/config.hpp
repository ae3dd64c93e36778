#pragma once
// Compiler and feature configuration shared by every posttrain header.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define POSTTRAIN_HD __host__ __device__
#define POSTTRAIN_DEVICE_COMPILER 1
#else
#define POSTTRAIN_HD
#define POSTTRAIN_DEVICE_COMPILER 0
#endif

#if defined(_OPENMP)
#define POSTTRAIN_HAS_OPENMP 1
#else
#define POSTTRAIN_HAS_OPENMP 0
#endif

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#if !defined(POSTTRAIN_NO_EXCEPTIONS)
#define POSTTRAIN_EXCEPTIONS 1
#endif
#endif
#if !defined(POSTTRAIN_EXCEPTIONS)
#define POSTTRAIN_EXCEPTIONS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define POSTTRAIN_RESTRICT __restrict__
#else
#define POSTTRAIN_RESTRICT
#endif

// Host loops that evaluate token losses branch-free rely on if-conversion, which GCC refuses for
// floating-point operations that could trap unless -fno-trapping-math. posttrain never inspects the
// floating-point exception flags, so the loss kernels are compiled without trapping math (GCC only;
// clang and nvcc if-convert these loops as they are).
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && !defined(__INTEL_LLVM_COMPILER)
#define POSTTRAIN_NO_TRAPPING_MATH_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"no-trapping-math\")")
#define POSTTRAIN_NO_TRAPPING_MATH_END _Pragma("GCC pop_options")
#else
#define POSTTRAIN_NO_TRAPPING_MATH_BEGIN
#define POSTTRAIN_NO_TRAPPING_MATH_END
#endif
