"""The repository stands alone: nothing tracked refers to the folder beside it that developers
and CI have (the real LooGLE sample, notes) and users do not, except the extra checks marked
`real_sample` and the conftest fixture that finds that sample for them; and no product code
imports the test suite's modules."""

import ast
import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The folder beside the repo, by name or built as a path (`root.parent / "shared"`), and the
# real sample's folder name.
OUTSIDE = re.compile(r"\.\./shared|shared/notes|shared/data|/\s*[\"']shared[\"']|loogle-sample")
TEST_MODULES = {"tests", "conftest", "helpers", "loogle_fixture"}


def tracked_files():
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [REPO_ROOT / name for name in done.stdout.split("\0") if name]


def real_sample_lines(path):
    """Line numbers of the tests marked @pytest.mark.real_sample in a test module."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            marks = [ast.unparse(d) for d in node.decorator_list]
            if "pytest.mark.real_sample" in marks:
                lines.update(range(min(d.lineno for d in node.decorator_list), node.end_lineno + 1))
    return lines


def conftest_fixture_lines(path):
    """The conftest lines that locate the sample: its path constants and the `loogle_sample` fixture."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = set()
    for node in tree.body:
        names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if isinstance(node, ast.Assign) and set(names) & {"SHARED_DIR", "LOOGLE_SAMPLE"}:
            lines.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.FunctionDef) and node.name == "loogle_sample":
            lines.update(range(node.lineno - len(node.decorator_list), node.end_lineno + 1))
    return lines


def test_nothing_outside_the_marked_extras_refers_to_the_folder_beside_the_repo():
    files = tracked_files()
    assert REPO_ROOT / "tests" / "test_repository.py" in files  # a real checkout was listed
    offenders = []
    for path in files:
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        allowed = set()
        if path.parent.name == "tests" and path.suffix == ".py":
            allowed = real_sample_lines(path) | (conftest_fixture_lines(path) if path.name == "conftest.py" else set())
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and number not in allowed:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "refer to files inside the repo (demo/, data/loogle/, the docs) instead:\n" + "\n".join(offenders)


def test_no_product_code_imports_the_test_suite():
    offenders = []
    for path in tracked_files():
        if path.suffix != ".py" or "tests" in path.relative_to(REPO_ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in TEST_MODULES]
    assert not offenders, "\n".join(offenders)
