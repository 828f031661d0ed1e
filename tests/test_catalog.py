"""The README's supported-function table is the registry's, and the everyday NumPy functions
still without a rule are listed here (a new rule must take its function off this list)."""
import os

import pytest

from knetc.rules import catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# np.linalg.eig and eigvals return complex eigenvalues (and vectors) in general, and knetc has no
# complex gradients: they are left without a rule (a differentiated call raises NoRuleError).
STILL_WITHOUT_A_RULE = """
np.linalg.eig np.linalg.eigvals
""".split()


def test_readme_table_matches_the_registry():
    pytest.importorskip("scipy")        # the README lists the scipy.special rules too
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert catalog.rewrite(text) == text, "run: python -m knetc.rules.catalog --write README.md"


def test_everyday_numpy_functions_without_a_rule():
    assert catalog.missing() == STILL_WITHOUT_A_RULE


def test_every_builtin_rule_has_a_public_name_or_serves_another_rule():
    cat = catalog.catalog()
    names = [n for groups in cat.values() for v in groups.values() for n in v]
    assert "np.tanh" in names and "+" in names and "knetc.relu" in names
    assert len(names) == len(set(names))
