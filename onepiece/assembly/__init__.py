"""Context assembly: pure functions over Arrow tables that turn raw search logs into the
model's context rows (IH, PA, SD, CIS and side features), plus the Beam transforms and
job drivers that wire them (``transforms``, ``jobs``).

The pure modules (``config``, ``sql``, ``requests``, ``history``, ``anchors``, ``labels``,
``side``, ``contexts``) import neither Beam nor Feast, so they are unit-tested alone and
also serve as the single-process reference implementation.
"""

from onepiece.assembly.config import AssemblyConfig

__all__ = ["AssemblyConfig"]
