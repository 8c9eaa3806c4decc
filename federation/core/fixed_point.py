"""The fixed point every summed vector is carried in, for sums plain and secure alike.

Each value a site sums is clipped to ``[-CLIP, CLIP]`` (wider only where differential
privacy's noise needs it: :func:`federation.core.engine.rounds.value_range`) and
quantised to ``LEVELS`` levels; sums are taken modulo ``2**MODULUS_BITS``. The step,
``2**-36`` (about 1.5e-11), keeps one entry of a sum of ``n`` sites within ``n * STEP / 2``
of the real sum, for up to ``2**24`` sites.
"""

from __future__ import annotations

CLIP = 8.0
LEVELS = 2**40
MODULUS_BITS = 64
STEP = 2 * CLIP / LEVELS
