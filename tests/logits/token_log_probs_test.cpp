// Placeholder: the logits module's tests (filled in by its implementation).
#include <doctest/doctest.h>
