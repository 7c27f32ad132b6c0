"""Triton Python-backend entry point of one model version (onepiece_ranker or
onepiece_user_tower): a thin adapter.

The model is built and run by the installed ``onepiece`` package
(onepiece/serving/triton_model.py); this file only makes it importable. In NVIDIA's
server container the package is pip-installed and ONEPIECE_PYTHONPATH is absent. The
embedded launcher (onepiece/serving/server.py) sets it because the backend stub ignores
PYTHONPATH.
"""

import os
import site
import sys

_before = list(sys.path)
for _path in filter(None, os.environ.get("ONEPIECE_PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_path)  # also runs .pth files (editable installs)
# The project's paths go first, ahead of any system dist-packages.
sys.path[:] = [p for p in sys.path if p not in _before] + _before

from onepiece.serving.triton_model import TritonPythonModel  # noqa: E402,F401
