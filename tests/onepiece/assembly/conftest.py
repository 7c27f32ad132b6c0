import sys
from pathlib import Path

# The builders module sits beside the tests (no package __init__ in tests/); the repo
# root goes first so that ``onepiece`` is the package, not the namespace tests/onepiece
# that pytest's rootdir insertion of tests/ would otherwise shadow it with.
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[3])]
