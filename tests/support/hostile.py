"""Hypothesis strategies for hostile documents (issue 21): a valid document with values replaced at its
own keys, so generated cases reach the validation of every field and not only the top level."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["1h", "inf", "-1s", "1e400", "9" * 40, "1GiB", "0", "", "../../etc", "\x00", "é" * 40])
)
any_value = st.recursive(
    leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def key_paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value in ``document`` (mapping keys and list indexes), parents before children."""
    if isinstance(document, dict):
        items: Any = document.items()
    elif isinstance(document, list):
        items = enumerate(document)
    else:
        return
    for key, value in items:
        yield (*prefix, key)
        yield from key_paths(value, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with a few of its values replaced by any JSON value, and maybe an unknown key added."""
    result = copy.deepcopy(document)
    paths = list(key_paths(result))
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4)):
        parent = result
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(any_value)
        except (KeyError, IndexError, TypeError):  # an earlier replacement removed this path
            continue
    if isinstance(result, dict) and draw(st.booleans()):
        result[draw(st.text(max_size=12))] = draw(any_value)
    return result
