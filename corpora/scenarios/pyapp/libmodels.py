"""Classes of the py_libs scenario (stdlib only; the ORM class is in ormmodels.py).

Census keys are "pyapp.libmodels.<qualname>".  Member counts of the enums are
distinctive on purpose (23, 11, ...), so a miscount shows.
"""

import dataclasses
import enum
import sys

# IntEnum with 23 members, values 0..22: instances of an int subclass (the
# member with value 0 is a zero-digit int on 3.12+, the others are not).
Color = enum.IntEnum("Color", [("C%02d" % i, i) for i in range(23)],
                     module=__name__, qualname="Color")


class Perm(enum.IntFlag):
    """IntFlag: 3 canonical members; the scenario also makes combinations."""

    X = 1
    W = 2
    R = 4


class Shape(enum.Enum):
    """A plain Enum with 11 members (tuple values)."""

    S00 = (0, "point")
    S01 = (1, "line")
    S02 = (2, "triangle")
    S03 = (3, "square")
    S04 = (4, "pentagon")
    S05 = (5, "hexagon")
    S06 = (6, "heptagon")
    S07 = (7, "octagon")
    S08 = (8, "nonagon")
    S09 = (9, "decagon")
    S10 = (10, "hendecagon")


@dataclasses.dataclass
class Rec(object):
    """A plain dataclass (instance __dict__ / inline values)."""

    ident: int
    name: str
    tags: list


@dataclasses.dataclass(frozen=True)
class FrozenRec(object):
    ident: int
    weight: float


_SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}


@dataclasses.dataclass(**_SLOTS)
class SlotRec(object):
    """dataclass(slots=True) on 3.10+, the same class with explicit __slots__ before."""

    if not _SLOTS:
        __slots__ = ("x", "y", "tag")
    x: int
    y: float
    tag: str


class Node(object):
    """Weak-referenced by the weakref containers."""

    def __init__(self, ident):
        self.ident = ident
