// Conformance mappings: verl-agent's GiGPO (gigpo/core_gigpo.py) — placeholder; the mappings land
// with the credit module.

#include "conformance.hpp"

namespace conformance {

void register_verl_agent(registry&) {}

}  // namespace conformance
