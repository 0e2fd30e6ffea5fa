"""Size of the code at a git revision (issue 18's line counts): non-test Python lines, the tagging
CLI's lines, and every file over 600 lines and function over 100.

    python -m experiments.code_stats HEAD c8c5cf9
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def code_stats(rev: str, max_file: int = 600, max_function: int = 100) -> dict:
    files = [f for f in git("ls-tree", "-r", "--name-only", rev).split()
             if f.endswith(".py") and not f.startswith("tests/")]
    total = tag_cli = 0
    big_files, big_functions = {}, {}
    for f in files:
        src = git("show", f"{rev}:{f}")
        n = len(src.splitlines())
        total += n
        tag_cli += n if f.startswith("prompts/tag") else 0
        if n > max_file:
            big_files[f] = n
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    big_functions[f"{f}:{node.name}"] = length
    return {"rev": rev, "non_test_lines": total, "tag_cli_lines": tag_cli,
            f"files_over_{max_file}": big_files, f"functions_over_{max_function}": big_functions}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help="git revisions, e.g. HEAD")
    out = [code_stats(r) for r in ap.parse_args(argv).revs]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
