"""The applier's pure decisions: does the live object already hold what we want, and which
fields must a merge patch remove. No I/O.

The API server rewrites some values it stores: resource quantities come back in canonical form
(``"0.5"`` -> ``"500m"``, ``"1024Mi"`` -> ``"1Gi"``). Those are compared by value, so a reconcile
of an unchanged world sends no PATCH.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

# Keys whose values are maps of resource quantities (container and PVC resources), and keys that
# are a quantity themselves (emptyDir's sizeLimit).
QUANTITY_MAPS = frozenset({"requests", "limits"})
QUANTITY_KEYS = frozenset({"sizeLimit"})

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity's value (``"500m"`` -> 0.5), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        return Decimal(number + (exponent or "")) * _SUFFIXES[suffix or ""]
    except InvalidOperation:
        return None


def same_quantity(desired: Any, actual: Any) -> bool:
    a, b = parse_quantity(desired), parse_quantity(actual)
    return a is not None and a == b


def contains(desired: Any, actual: Any, key: str = "", in_quantities: bool = False) -> bool:
    """Whether every field of ``desired`` has that value in ``actual`` (fields the server adds are
    ignored; quantities compare by value)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            contains(v, actual.get(k), k, key in QUANTITY_MAPS) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(map(contains, desired, actual))
    if desired == actual:
        return True
    return (in_quantities or key in QUANTITY_KEYS) and same_quantity(desired, actual)


def removal_patch(previous: Any, desired: Any) -> Any:
    """``desired`` plus ``None`` for every dict key set in ``previous`` and gone from ``desired``."""
    if not (isinstance(previous, dict) and isinstance(desired, dict)):
        return desired
    patch = {k: removal_patch(previous.get(k), v) for k, v in desired.items()}
    patch.update({k: None for k in previous if k not in desired})
    return patch
