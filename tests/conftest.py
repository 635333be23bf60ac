"""The suite's shared set-up: Hypothesis profiles, and the pytester fixture for the plugin's tests.

Profiles: "fast" (the default here) runs each property a quarter of its full example count;
`--hypothesis-profile=full` (or SEQSPEC_HYPOTHESIS_PROFILE=full) runs them all. A property takes
its count from `helpers.examples(full)`, read when its module is imported, after the profile is
loaded. Frameworks are imported once per process (each xdist worker is one): a test that needs
many models builds them in a module- or session-scoped fixture.
"""

import os

# torch on one thread unless told otherwise, set before anything imports it: the suite's models
# are tiny, and a second OpenMP thread per op (two per xdist worker on two cores) made a GRU over
# 500 steps 12 to 40 times slower under load (0.015 s a call on one thread, 0.18 to 1.7 s on two).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

pytest_plugins = ["pytester"]

FULL_EXAMPLES = 100  # Hypothesis's own default: `examples(n)` gives n under this profile

settings.register_profile("full", max_examples=FULL_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fast", parent=settings.get_profile("full"), max_examples=FULL_EXAMPLES // 4)
settings.load_profile(os.environ.get("SEQSPEC_HYPOTHESIS_PROFILE", "fast"))
