"""Deprecated: import `PostgreSQLChannelLayer` from `channels_layer_postgres`.

The layer lives in the private module `_layer` now, as in every layer
package; this module keeps ``channels_layer_postgres.layer`` importable for
one release.
"""

from __future__ import annotations

import warnings

from ._layer import PostgreSQLChannelLayer

__all__ = ["PostgreSQLChannelLayer"]

warnings.warn(
    "channels_layer_postgres.layer is deprecated: import PostgreSQLChannelLayer "
    "from channels_layer_postgres",
    DeprecationWarning,
    stacklevel=2,
)
