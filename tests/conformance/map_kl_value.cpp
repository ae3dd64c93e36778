// (being written) mappings registered by register_kl_value.

#include "conformance.hpp"

namespace conformance {
void register_kl_value(registry&) {}
}  // namespace conformance
