#!/usr/bin/env python3
"""Count the tests that sleep: test_* functions in tests/test_*.py whose body, or a helper
defined in the same file that they call, calls something named `sleep` (time.sleep,
asyncio.sleep...). Issue 10 asked for fewer of them; this is how they were counted.

    python3 tools/count_sleeping_tests.py [tests]
"""
import ast
import pathlib
import sys


def sleeping_tests(folder: pathlib.Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

        def sleeps(fn, seen=()) -> bool:
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                    if name == "sleep":
                        return True
                    if name in funcs and name not in seen and name != fn.name and sleeps(funcs[name], (*seen, fn.name)):
                        return True
            return False

        names += [f"{path.name}::{n}" for n, fn in funcs.items() if n.startswith("test_") and sleeps(fn)]
    return names


if __name__ == "__main__":
    found = sleeping_tests(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests"))
    print(len(found))
    print("\n".join(found))
