#pragma once
// Umbrella header: the whole host API and the standard-library adapters.

#include "config.hpp"
#include "version.hpp"

#include "core/dlpack.hpp"
#include "core/error.hpp"
#include "core/exec.hpp"
#include "core/groups.hpp"
#include "core/numeric.hpp"
#include "core/random.hpp"
#include "core/result.hpp"
#include "core/traits.hpp"
#include "core/view.hpp"

#include "adapt/std.hpp"

#include "advantage/filters.hpp"
#include "advantage/gae.hpp"
#include "advantage/gdpo.hpp"
#include "advantage/gpg.hpp"
#include "advantage/grpo.hpp"
#include "advantage/opo.hpp"
#include "advantage/passk.hpp"
#include "advantage/reinforce_pp.hpp"
#include "advantage/remax.hpp"
#include "advantage/returns.hpp"
#include "advantage/rloo.hpp"
#include "advantage/shaping.hpp"
#include "advantage/token_baseline.hpp"
#include "advantage/tokens.hpp"
#include "advantage/whiten.hpp"

#include "policy_loss/aggregate.hpp"
#include "policy_loss/entropy.hpp"
#include "policy_loss/kl.hpp"
#include "policy_loss/policy_loss.hpp"
#include "policy_loss/value_loss.hpp"

#include "preference/common.hpp"
#include "preference/dpo.hpp"
#include "preference/pair_math.hpp"
#include "preference/sequence.hpp"
