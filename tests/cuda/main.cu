// Entry point of the CUDA test binary (see harness.hpp: exit 77 = skipped when no GPU).
#include "harness.hpp"

int main(int argc, char** argv) { return posttrain::test::run_all(argc, argv); }
