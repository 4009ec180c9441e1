"""The layer checks of ``make lint``, here so ``make test`` catches a violation too.

The import-linter contracts (pyproject.toml) and tests/layers.py run on this tree, then on
a copy of its sources with one deliberate violation each, to show that every check fails
when its rule is broken (and names the offending import).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import layers

ROOT = layers.ROOT
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = (
    "online-no-training",
    "online-no-training-libraries",
    "request-path-no-pandas",
    "feature-store-standalone",
    "recsvc-layers",
)


def lint_imports(tree: Path) -> tuple[int, str]:
    """(exit status, output) of ``lint-imports`` on the tree at ``tree`` with its pyproject."""
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tree / "pyproject.toml")],
        cwd=tree, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400", "NO_COLOR": "1"},
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def broken_contracts(output: str) -> list[str]:
    names = re.findall(r"^(.+) BROKEN$", output, flags=re.MULTILINE)
    return sorted(name_to_id()[n] for n in names)


def name_to_id() -> dict[str, str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c["id"] for c in config["contracts"]}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the Python sources of recsvc, training and feature_store, and pyproject.toml."""

    def not_python(directory: str, names: list[str]) -> list[str]:
        return [
            n for n in names
            if n == "__pycache__" or (Path(directory, n).is_file() and not n.endswith(".py"))
        ]  # fmt: skip

    for package in layers.PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=not_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def add(tree: Path, module_path: str, code: str) -> None:
    """Append ``code`` to a module of ``tree`` (a new module if it does not exist)."""
    path = tree / module_path
    path.write_text((path.read_text() if path.exists() else "") + "\n" + code + "\n")


def test_this_tree_keeps_every_contract() -> None:
    status, output = lint_imports(ROOT)
    assert set(name_to_id().values()) == set(CONTRACTS)
    assert status == 0 and broken_contracts(output) == [], output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output


def test_this_tree_has_no_import_cycles_and_loads_training_lazily() -> None:
    found = layers.problems()
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("module_path", "code", "contract", "shown"),
    [
        # (training.errors: a module that leads to no other contract's forbidden packages)
        ("recsvc/pipeline/filters.py", "import training.errors", "online-no-training",
         "recsvc.pipeline.filters -> training.errors"),
        # A lazy import counts too: it would still load training into the server.
        ("recsvc/serving/auth.py", "def _f():\n    from training import errors",
         "online-no-training", "recsvc.serving.auth -> training.errors"),
        ("recsvc/bandit/thompson.py", "import lightfm", "online-no-training-libraries",
         "recsvc.bandit.thompson -> lightfm"),
        ("recsvc/pipeline/order.py", "import pandas", "request-path-no-pandas",
         "recsvc.pipeline.order -> pandas"),
        ("feature_store/codec.py", "from recsvc.errors import RecsvcError",
         "feature-store-standalone", "feature_store.codec -> recsvc.errors"),
        ("recsvc/bundle/files.py", "import recsvc.pipeline.order", "recsvc-layers",
         "recsvc.bundle.files -> recsvc.pipeline.order"),
        ("recsvc/errors.py", "from recsvc.bundle import BundleError", "recsvc-layers",
         "recsvc.errors -> recsvc.bundle"),
        # A new recsvc module must be given a layer in the contract.
        ("recsvc/newthing.py", "X = 1", "recsvc-layers", "recsvc.newthing"),
    ],
    ids=["training", "training-lazily", "lightfm", "pandas", "store-to-recsvc", "bundle-up",
         "errors-up", "unlayered-module"],
)  # fmt: skip
def test_each_contract_fails_on_a_violation(
    tree: Path, module_path: str, code: str, contract: str, shown: str
) -> None:
    add(tree, module_path, code)
    status, output = lint_imports(tree)
    assert status == 1 and broken_contracts(output) == [contract], output
    assert shown in output


def test_imports_only_for_type_checking_break_no_contract(tree: Path) -> None:
    add(
        tree,
        "recsvc/pipeline/filters.py",
        "import typing\nif typing.TYPE_CHECKING:\n    import training.data",
    )
    status, output = lint_imports(tree)
    assert status == 0, output


def new_problems(tree: Path, module_path: str, code: str) -> list[str]:
    before = set(layers.problems(tree))
    add(tree, module_path, code)
    return [p for p in layers.problems(tree) if p not in before]


def test_a_module_level_cycle_is_reported(tree: Path) -> None:
    # recsvc.bundle.read imports recsvc.bundle.files at module level
    found = new_problems(tree, "recsvc/bundle/files.py", "import recsvc.bundle.read")
    assert len(found) == 1
    assert found[0].startswith(
        "import cycle: recsvc.bundle.files -> recsvc.bundle.read -> recsvc.bundle.files "
        "(recsvc/bundle/files.py:"
    ), found


def test_a_cycle_closed_inside_a_function_is_reported(tree: Path) -> None:
    found = new_problems(tree, "recsvc/bundle/files.py", "def _f():\n    from . import read")
    assert len(found) == 1 and "recsvc.bundle.files -> recsvc.bundle.read" in found[0]
    assert re.search(r"recsvc/bundle/files\.py:\d+ in a function", found[0]), found


def test_a_cycle_through_a_package_init_is_reported(tree: Path) -> None:
    # recsvc.bundle (its __init__) imports recsvc.bundle.write, which would import it back
    found = new_problems(tree, "recsvc/bundle/write.py", "from recsvc.bundle import Bundle")
    assert len(found) == 1 and "recsvc.bundle -> recsvc.bundle.write -> recsvc.bundle" in found[0]


def test_type_checking_imports_make_no_cycle(tree: Path) -> None:
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recsvc.bundle import read"
    assert new_problems(tree, "recsvc/bundle/files.py", code) == []


def test_recsvc_imports_training_only_inside_functions(tree: Path) -> None:
    found = new_problems(
        tree, "recsvc/commands/evaluate.py", "from training.data import load_dataset"
    )
    assert len(found) == 1
    assert re.fullmatch(
        r"recsvc/commands/evaluate\.py:\d+: recsvc\.commands\.evaluate imports training\.data "
        r"at module level \(recsvc may import training only inside a function\)",
        found[0],
    ), found
    # the same import inside a function is how commands load training
    assert (
        new_problems(tree, "recsvc/commands/train.py", "def _f():\n    import training.data") == []
    )


def test_the_checker_prints_each_problem_and_fails(tree: Path) -> None:
    add(tree, "recsvc/bundle/files.py", "import recsvc.bundle.read")
    done = subprocess.run(
        [sys.executable, "-m", "tests.layers", str(tree)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "import cycle: recsvc.bundle.files -> recsvc.bundle.read" in done.stdout
    assert done.stdout.count("\n") == len(layers.problems(tree))


def test_a_file_that_does_not_parse_is_one_problem(tree: Path) -> None:
    found = new_problems(tree, "recsvc/bundle/files.py", "def broken(:")
    assert len(found) == 1
    assert re.fullmatch(r"recsvc/bundle/files\.py:\d+: cannot parse: .+", found[0]), found
