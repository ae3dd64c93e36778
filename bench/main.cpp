// main of posttrain_bench. Each bench/*.cpp registers its benchmarks from static initializers and
// records the byte counts it moves; the memcpy references for those counts are registered here,
// after every translation unit's initializers have run (their order across files is unspecified).

#include "common.hpp"

int main(int argc, char** argv) {
    posttrain_bench::register_memcpy_references();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
