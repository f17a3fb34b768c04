"""The test tree itself: pytest imports test modules by basename (rootdir
"prepend" mode, which the integration tests rely on to import each other), so
two test files with the same name in different folders break collection."""

import collections
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_test_module_basenames_are_unique():
    seen = collections.defaultdict(list)
    for root, _dirs, files in os.walk(TESTS):
        for f in files:
            if f.startswith("test_") and f.endswith(".py"):
                seen[f].append(os.path.relpath(os.path.join(root, f), TESTS))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
