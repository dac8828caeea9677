"""The labelling algorithms are pure: they import no Django, so they run (and are tested) anywhere."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import PROJECT_ROOT

PURE = ["rules", "agreement", "consensus", "stepwise"]


def test_the_pure_labelling_modules_import_no_django():
    imports = "; ".join(f"import rollouts.labelling.{name}" for name in PURE)
    check = (
        f"{imports}; import sys; assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
