"""The fuzz targets (tests/fuzz/) in the default test run: every input a fuzzer ever crashed is replayed,
and each target gets a short seeded random run. The long coverage-guided runs are `make fuzz`."""

import json
import random
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
FUZZ = Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ))

from fuzz import random_fuzz  # noqa: E402
from targets import TARGETS  # noqa: E402

SMOKE_INPUTS = 1500
REGRESSIONS = sorted((FUZZ / "regressions").glob("*/*"))


@pytest.fixture(scope="module")
def targets():
    made = {}

    def get(name):
        if name not in made:
            made[name] = TARGETS[name]()
        return made[name]

    return get


@pytest.mark.parametrize("found", REGRESSIONS, ids=[f"{p.parent.name}/{p.name}" for p in REGRESSIONS])
def test_every_past_finding_is_handled(targets, found):
    targets(found.parent.name)(found.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_smoke(targets, name):
    outcomes = random_fuzz(targets(name), SMOKE_INPUTS, seed=20, report=lambda _: None)
    # No finding (it would have raised), and the inputs reached both sides of the checks: a target that
    # refused everything at the first byte, or accepted everything, would not be fuzzing its reader.
    assert outcomes["accepted"] + outcomes["refused"] == SMOKE_INPUTS
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes


def test_the_tree_mutator_reaches_deep_and_odd_shapes():
    """The structure-aware targets only find what the mutator can make: check it makes the hard cases."""
    from targets import Bytes, mutate_tree

    rng = random.Random(0)
    seen = set()
    for _ in range(3000):
        tree = mutate_tree({"a": {"b": [1, 2, {"c": "x"}]}, "d": "e"}, Bytes(rng.randbytes(64)))
        stack, depth = [(tree, 0)], 0
        while stack:
            node, level = stack.pop()
            depth = max(depth, level)
            seen.add(type(node).__name__)
            children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
            stack.extend((child, level + 1) for child in children)
        seen.add("deep" if depth > 500 else "")
    assert {"dict", "list", "str", "int", "float", "bytes", "bool", "NoneType", "deep"} <= seen


def test_reliability_states_the_executions_the_raw_results_hold():
    """RELIABILITY.md's headline is the sum of what `benchmarks/results/fuzz.json` records."""
    raw = json.loads((REPO / "benchmarks" / "results" / "fuzz.json").read_text())
    recorded = sum((run or {}).get("executions") or 0 for target in raw.values() for run in target.values())
    stated = re.search(r"([\d,]+) executions recorded in `benchmarks/results/fuzz.json`",
                       (REPO / "RELIABILITY.md").read_text())
    assert stated and int(stated.group(1).replace(",", "")) == recorded
