"""The former name of :mod:`actorflow.error_strategies`, kept so old imports still work.

``from actorflow.error_handling import ErrorStrategy`` goes on working and warns with a
:class:`DeprecationWarning`; new code imports from :mod:`actorflow.error_strategies` (or
``from actorflow import ErrorStrategy``).
"""

from __future__ import annotations

import warnings

from actorflow.error_strategies import ErrorStrategy, as_error_strategy

__all__ = ["ErrorStrategy", "as_error_strategy"]

warnings.warn(
    "actorflow.error_handling is now actorflow.error_strategies; import from there",
    DeprecationWarning,
    stacklevel=2,
)
