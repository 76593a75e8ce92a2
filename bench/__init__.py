"""smallfleet's benchmarks, the probes that decided a design, and the tools that build shipped artifacts.

bench/README.md lists every one with its command and results file. Run them from the repository root as
``python bench/NAME.py`` or ``python -m bench.NAME`` (``bench.probes.NAME``, ``bench.tools.NAME``).
Importing the package registers bench/_common.py as ``_common`` too, the name every script imports it by
(see its docstring).
"""

import sys

from bench import _common

sys.modules.setdefault("_common", _common)
