"""What the ``fuzz_*.py`` harnesses share: atheris (libFuzzer) when installed, else hypothesis.

Each harness is a script: ``one_input(data: bytes)`` raises on a bug and returns otherwise.
With atheris (``pip install atheris``), the code under test is instrumented for coverage and
libFuzzer drives it; every argument that is not ours is passed on to libFuzzer
(``-max_total_time=``, ``-timeout=``, ``-jobs=``, a corpus directory, a crash file to
replay). Without atheris, or with ``--engine hypothesis``, hypothesis feeds the same function
seeds, mutated seeds and random bytes until ``--seconds`` have passed.

``--seconds N`` works with either engine (it becomes ``-max_total_time=N`` for libFuzzer);
``--instrument a,b`` chooses what atheris instruments for coverage (``--instrument=``: nothing).
Exit status: 0 when nothing was found, non-zero (77 under libFuzzer) with the failing input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests` and `charter` importable
    sys.path.insert(0, str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(1, str(ROOT / "src"))

#: what atheris instruments for coverage feedback
INSTRUMENTED = ["charter", "ruamel", "jsonschema", "json"]


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def engine_from_argv(argv: Sequence[str]) -> str:
    """The engine ``argv`` asks for (``--engine``), defaulting to atheris when installed."""
    return _option(argv, "--engine") or ("atheris" if have_atheris() else "hypothesis")


@contextlib.contextmanager
def instrumented(argv: Sequence[str]) -> Iterator[None]:
    """Import the code under test inside this block, so atheris can instrument it.

    ``--instrument a,b`` names the packages to instrument (default: :data:`INSTRUMENTED`);
    ``--instrument=`` none, for a quick check that the harness runs (instrumenting takes
    seconds at start-up, and coverage is what guides a long run).
    """
    chosen = _option(argv, "--instrument")
    include = INSTRUMENTED if chosen is None else [m for m in chosen.split(",") if m]
    if engine_from_argv(argv) == "atheris" and include:
        import atheris

        with atheris.instrument_imports(include=include):
            yield
    else:
        yield


def main(
    one_input: Callable[[bytes], None],
    seeds: Sequence[bytes],
    *,
    description: str,
    libfuzzer_defaults: Sequence[str] = (),
) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--instrument", default=None, help="packages atheris instruments")
    ours, rest = parser.parse_known_args()
    engine = ours.engine or ("atheris" if have_atheris() else "hypothesis")
    print(f"fuzzing with {engine}", file=sys.stderr, flush=True)
    if engine == "atheris":
        _atheris(one_input, seeds, ours.seconds, rest, libfuzzer_defaults)
    else:
        _hypothesis(one_input, seeds, 60.0 if ours.seconds is None else ours.seconds)


def _atheris(
    one_input: Callable[[bytes], None],
    seeds: Sequence[bytes],
    seconds: float | None,
    rest: list[str],
    defaults: Sequence[str],
) -> None:
    import atheris

    given = {arg.split("=", 1)[0] for arg in rest if arg.startswith("-")}
    args = [arg for arg in defaults if arg.split("=", 1)[0] not in given]
    if seconds is not None:
        args.append(f"-max_total_time={max(1, round(seconds))}")
    if not [arg for arg in rest if not arg.startswith("-")]:  # no corpus or crash file given
        corpus = Path(tempfile.mkdtemp(prefix="charter-fuzz-"))
        for i, seed in enumerate(seeds):
            (corpus / f"seed-{i}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup([sys.argv[0], *rest, *args], one_input)
    atheris.Fuzz()


def _hypothesis(one_input: Callable[[bytes], None], seeds: Sequence[bytes], seconds: float) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 8), st.binary(max_size=8)))

    def mutate(seed: bytes, changes: list[tuple[int, int, bytes]]) -> bytes:
        data = bytearray(seed)
        for at, cut, new in changes:
            at %= len(data) + 1
            data[at : at + cut] = new
        return bytes(data)

    inputs = st.one_of(
        st.sampled_from(list(seeds)),
        st.builds(mutate, st.sampled_from(list(seeds)), edits),
        st.binary(max_size=4096),
    )

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(inputs)
    def run(data: bytes) -> None:
        one_input(data)

    stop = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < stop:
        run()  # raises (after shrinking) on the first failing input
        rounds += 1
    print(f"done: {rounds} rounds of up to 100 inputs, nothing found", file=sys.stderr)
