// (being written) mappings registered by register_token_baseline.

#include "conformance.hpp"

namespace conformance {
void register_token_baseline(registry&) {}
}  // namespace conformance
