"""Shared test data."""

# A valid two-state, two-action CMP file (didactic/custom-v0).
TWO_STATE_CMP = """\
name: two-state
gamma: 0.9
transitions:
  - [[0.0, 1.0], [1.0, 0.0]]
  - [[0.0, 1.0], [0.5, 0.5]]
behaviour_policy: [[0.5, 0.5], [0.5, 0.5]]
rho: [0.5, 0.5]
"""
