// Built with -fno-exceptions: a bad argument reaches the handler set with set_error_handler, which
// here reports and ends the program (a handler that returns leads to std::abort).

#include <cstdio>
#include <cstdlib>
#include <vector>

#include <posttrain/posttrain.hpp>

namespace {
void report(posttrain::error_kind kind, const char* message) {
    std::printf("handler: %s: %s\n", kind == posttrain::error_kind::invalid_argument ? "invalid_argument" : "cuda_error",
                message);
    std::fflush(stdout);
    std::_Exit(0);
}
}  // namespace

int main() {
#if POSTTRAIN_EXCEPTIONS
    std::puts("built with exceptions: this test must be compiled with -fno-exceptions");
    return 1;
#else
    posttrain::set_error_handler(&report);
    const std::vector<float> rewards{1, 2, 3, 4};
    std::vector<float> advantages(3);  // one short
    (void)posttrain::advantage::grpo(posttrain::exec::seq, rewards, posttrain::uniform_groups{2}, advantages);
    std::puts("the error was not reported");
    return 1;
#endif
}
