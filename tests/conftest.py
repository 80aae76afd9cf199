"""Test-wide settings: one Hypothesis profile for CI, no timing-based deadlines."""

import os

from hypothesis import HealthCheck, settings

# Deadlines are timing assertions; speed is measured in benchmarks/ instead.
settings.register_profile("default", deadline=None, max_examples=200)
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
