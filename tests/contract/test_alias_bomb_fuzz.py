"""Generated alias bombs: always a Contract or a located ContractError, in a couple of seconds.

Each example stacks anchored nodes, every level naming the one below ``fan_out`` times,
in a sequence, a mapping, a merge key or a complex key, over a leaf that may be long text,
and puts the result somewhere in a valid contract. Expanded, they range from a few nodes
to far beyond any memory; the loader must answer every one of them quickly.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import Contract, ContractError
from tests.helpers import document, to_yaml

VALID = to_yaml(document())


@st.composite
def bombs(draw: st.DrawFn) -> str:
    levels = draw(st.integers(1, 14))
    fan_out = draw(st.integers(1, 40))
    leaf = draw(
        st.sampled_from(
            [
                "x",
                "[1, 2, 3]",
                "{k: v, l: [1]}",
                '"' + "y" * 1000 + '"',
                '"' + "z" * 200_000 + '"',
            ]
        )
    )
    shapes = draw(st.lists(st.sampled_from(["seq", "map", "merge", "key"]), min_size=levels))
    lines = [f"a0: &a0 {leaf}"]
    for i in range(1, levels):
        ref = f"*a{i - 1}"
        shape = shapes[i]
        if shape == "seq":
            body = "[" + ", ".join([ref] * fan_out) + "]"
        elif shape == "map":
            body = "{" + ", ".join(f"k{j}: {ref}" for j in range(fan_out)) + "}"
        elif shape == "merge" and leaf.startswith("{"):
            body = "{<<: [" + ", ".join([ref] * fan_out) + f"], v{i}: [{ref}, {ref}]}}"
        else:  # a complex key, or a merge of something that is not a mapping (an error)
            body = "{? [" + ", ".join([ref] * fan_out) + "] : 1}"
        lines.append(f"a{i}: &a{i} {body}")
    where = draw(st.sampled_from(["x-bomb", "description", "input", "own"]))
    top = f"*a{levels - 1}"
    if where == "own":  # the bomb is the whole file
        return "\n".join(lines) + "\n"
    defs = "x-defs:\n" + "".join(f"  {line}\n" for line in lines)
    used = {
        "x-bomb": VALID + f"x-bomb: {top}\n",
        "description": VALID.replace(
            "description: A small contract for tests.", f"description: {top}"
        ),
        "input": VALID.replace("input:\n  type: object\n", f"input: {top}\n"),
    }[where]
    assert used != VALID + "" or where == "x-bomb"
    return defs + used


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=bombs())
def test_alias_bombs_load_or_fail_located_and_fast(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.yaml"
        path.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        try:
            contract = Contract.load(path)
        except ContractError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.file == str(path)
                assert issue.line >= 1 and issue.column >= 1
                assert issue.message and issue.hint
                str(issue).encode("utf-8")
        else:
            assert contract.name == "shop"
        assert time.perf_counter() - started < 2, "a bomb took over 2 s to answer"
