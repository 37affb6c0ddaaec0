"""Names and colours of the segments the panels create (pure Python, used by both modules)."""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from ..core.errors import PromptError

#: Colours (r, g, b in 0..1) of the scribble helper segments: green adds, red removes.
FG_COLOR = (0.20, 0.85, 0.25)
BG_COLOR = (0.90, 0.20, 0.20)
HELPER_SUFFIXES = ("_fg", "_bg")


def scribble_segment_names(segment_name: str) -> Tuple[str, str]:
    """The foreground and background scribble helper segments of a segment: `<name>_fg`, `<name>_bg`."""
    name = (segment_name or "").strip()
    if not name:
        raise PromptError("the segment needs a name before scribbles can be drawn for it")
    if is_helper_name(name):
        raise PromptError(f"{name!r} is a scribble helper segment; select the segment being refined")
    return name + HELPER_SUFFIXES[0], name + HELPER_SUFFIXES[1]


def is_helper_name(name: str) -> bool:
    return any(name.endswith(s) and len(name) > len(s) for s in HELPER_SUFFIXES)


def unique_name(base: str, existing: Iterable[str]) -> str:
    """`base`, or `base 2`, `base 3`, ... whichever is not taken."""
    taken = set(existing)
    if base not in taken:
        return base
    n = 2
    while f"{base} {n}" in taken:
        n += 1
    return f"{base} {n}"


def output_segment_names(support_names: Sequence[str], existing: Iterable[str], replace: bool = True) -> List[str]:
    """Names of the result segments, one per support segment: the support's own name; with
    `replace` False a name already in the output segmentation gets a number instead of being reused."""
    names: List[str] = []
    taken = set(existing)
    for name in support_names:
        if not name or not name.strip():
            raise PromptError("a support segment has no name")
        new = name if replace else unique_name(name, taken | set(names))
        if new in names:
            raise PromptError(f"two support segments are both named {name!r}; rename one")
        names.append(new)
    return names
