"""Mutation testing: do the tests notice when a safety check is changed?

For each target file this script makes small, plausible mistakes ("mutants") one at a
time -- ``index <= last`` becomes ``index < last``, a guard's body becomes ``pass``, a
``raise`` disappears -- and runs that file's tests against each. A mutant the tests
fail on is *killed*; one they pass is a *survivor*: either a test is missing, or the
change does not alter behaviour (an *equivalent* mutant) and the reason is written
down (docs/RELIABILITY.md, "Mutation testing").

Why our own script and not mutmut 3: we need a per-file test subset (the consensus tests
include a 100 s randomized run that must not run once per mutant), a fixed, reviewable
set of operators, and nothing written into the source tree. The mutants are made from
the AST and spliced into the original text (so comments and line numbers are kept) and
each spliced file is re-parsed and compared with the mutated AST before it is used.

Safety: every job works in its own temporary copy of the repository; the source tree is
only read. At the end ``git diff --exit-code`` on the target files proves it unchanged.

Examples::

    python scripts/mutate.py                       # the default targets and their tests
    python scripts/mutate.py --files consensus/certs.py --list   # show mutants, run nothing
    python scripts/mutate.py --files ledger/verify.py --tests tests/ledger/test_bundle.py
    python scripts/mutate.py --files consensus/quorum.py --jobs 2 --only 12,15

The last line of output is one JSON object, e.g.
``{"mutants": 240, "killed": 238, "survived": 2, "timeout": 0, "wall_s": 812.4}``.
Exit status: 0 if every mutant was killed, 1 if some survived, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CONSENSUS_TESTS = [
    # fastest and most direct first: pytest -x stops at the first failure
    "tests/consensus/test_consensus_quorum.py",
    "tests/consensus/test_consensus_certs.py",
    "tests/consensus/test_consensus_messages.py",
    "tests/consensus/test_consensus_replica.py",
    "tests/consensus/test_consensus_broken.py",
    "tests/consensus/test_consensus_sim.py",
    "tests/consensus/test_consensus_random.py",
    # ~100 s of random schedules: run by the suite, too slow to run once per mutant
    "--deselect=tests/consensus/test_consensus_random.py::test_randomized_schedules_n4_n7_total_views",
]
_VERIFY_TESTS = [
    "tests/ledger/test_verify.py",
    "tests/ledger/test_bundle.py",
    "tests/ledger/test_vectors_ledger.py",
    "tests/ledger/test_proofs_doc_independent.py",
]
# target file -> the tests that exercise it (paths that do not exist are skipped)
DEFAULT_TARGETS: dict[str, list[str]] = {
    "consensus/certs.py": _CONSENSUS_TESTS,
    "consensus/quorum.py": _CONSENSUS_TESTS,
    "ledger/verify.py": _VERIFY_TESTS,
}

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_MINMAX = {"min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    """One mutation of ``path``: ``source`` is the whole mutated file."""

    number: int
    path: str
    line: int
    operator: str
    before: str
    after: str
    source: str

    def describe(self) -> str:
        return f"{self.path}:{self.line} [{self.operator}] {self.before}  ->  {self.after}"


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    outcome: str  # killed | survived | timeout
    seconds: float
    detail: str


# -- making mutants ---------------------------------------------------------------------


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes in type annotations and decorators: not mutated (see the callers)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        roots: list[ast.AST | None] = []
        if isinstance(node, ast.arg | ast.AnnAssign):
            roots.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            # decorator arguments (``frozen=True``) are declarations, not checks
            roots.extend(node.decorator_list)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            roots.append(node.returns)
        for r in roots:
            if r is not None:
                out.update(id(n) for n in ast.walk(r))
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                out.add(id(body[0]))
    return out


def _swap_compare(n: ast.AST, i: int) -> None:
    assert isinstance(n, ast.Compare)
    n.ops[i] = _CMP_SWAP[type(n.ops[i])]()


def _swap_boolop(n: ast.AST) -> None:
    assert isinstance(n, ast.BoolOp)
    n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()


def _swap_plus_minus(n: ast.AST) -> None:
    assert isinstance(n, ast.BinOp | ast.AugAssign)
    n.op = ast.Sub() if isinstance(n.op, ast.Add) else ast.Add()


def _flip_bool(n: ast.AST) -> None:
    assert isinstance(n, ast.Constant) and isinstance(n.value, bool)
    n.value = not n.value


def _add_to_int(n: ast.AST, delta: int) -> None:
    assert isinstance(n, ast.Constant) and isinstance(n.value, int)
    n.value = n.value + delta


def _swap_minmax(n: ast.AST) -> None:
    assert isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    n.func.id = _MINMAX[n.func.id]


def _edits(node: ast.AST) -> Iterator[tuple[str, Callable[[ast.AST], None]]]:
    """(operator name, function applying the mutation in place to a copy of ``node``)."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                yield "compare", functools.partial(_swap_compare, i=i)
    elif isinstance(node, ast.BoolOp):
        yield "and/or", _swap_boolop
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        yield "+/-", _swap_plus_minus
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add | ast.Sub):
        yield "+=/-=", _swap_plus_minus
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield "true/false", _flip_bool
    elif isinstance(node, ast.Constant) and isinstance(node.value, int):
        for delta in (1, -1):
            yield "int", functools.partial(_add_to_int, delta=delta)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in _MINMAX:
            yield "min/max", _swap_minmax


def _replacement(node: ast.AST) -> Iterator[tuple[str, Callable[[], ast.AST]]]:
    """Mutations that replace ``node`` (a statement or ``not x``) by another node."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not x -> x", lambda: copy.deepcopy(node.operand)  # type: ignore[attr-defined]
    elif isinstance(node, ast.Return) and node.value is not None:
        # return True/False is covered by true/false; False -> None would be equivalent
        value = node.value.value if isinstance(node.value, ast.Constant) else ...
        if not any(value is c for c in (None, True, False)):
            yield "return None", lambda: ast.Return(value=ast.Constant(value=None))
    elif isinstance(node, ast.Raise):
        yield "raise -> pass", ast.Pass


def _splice(lines: list[bytes], node: ast.AST, text: str) -> str:
    """The file with ``node``'s span replaced by ``text`` (offsets are UTF-8 bytes)."""
    sl, sc = node.lineno - 1, node.col_offset  # type: ignore[attr-defined]
    el, ec = node.end_lineno - 1, node.end_col_offset  # type: ignore[attr-defined]
    new = lines[:sl] + [lines[sl][:sc] + text.encode() + lines[el][ec:]] + lines[el + 1 :]
    return b"".join(new).decode()


def _splice_body(lines: list[bytes], body: list[ast.stmt], text: str) -> str:
    first, last = body[0], body[-1]
    sl, sc = first.lineno - 1, first.col_offset
    el, ec = last.end_lineno - 1, last.end_col_offset  # type: ignore[operator]
    new = lines[:sl] + [lines[sl][:sc] + text.encode() + lines[el][ec:]] + lines[el + 1 :]
    return b"".join(new).decode()


def _one_line(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_mutants(rel: str, source: str, first_number: int = 1) -> list[Mutant]:
    """Every mutant of ``source``, each checked to parse to exactly the intended tree."""
    tree = ast.parse(source)
    lines = source.encode().splitlines(keepends=True)
    skip = _annotation_nodes(tree) | _docstrings(tree)
    original_dump = ast.dump(tree)
    nodes = [n for n in ast.walk(tree) if id(n) not in skip]
    seen: set[str] = {original_dump}
    out: list[Mutant] = []

    def add(node: ast.AST, operator: str, new_source: str, expected: ast.AST, after: str) -> None:
        got = ast.dump(ast.parse(new_source))
        # (the round trip writes Constant(-1) as -1, which parses as USub(1): same program)
        if got != ast.dump(ast.parse(ast.unparse(expected))):
            raise AssertionError(f"{rel}:{node.lineno}: splice for {operator} is wrong")  # type: ignore[attr-defined]
        if got in seen:
            return  # same program as the original or as an earlier mutant
        seen.add(got)
        before = ast.get_source_segment(source, node) or ast.unparse(node)
        out.append(
            Mutant(
                first_number + len(out),
                rel,
                node.lineno,  # type: ignore[attr-defined]
                operator,
                _one_line(before),
                _one_line(after),
                new_source,
            )
        )

    # ast.walk visits a deep copy in the same order: a node is found in a copy by position
    all_nodes = list(ast.walk(tree))

    def twin_of(node: ast.AST) -> tuple[ast.Module, ast.AST]:
        twin = copy.deepcopy(tree)
        return twin, list(ast.walk(twin))[all_nodes.index(node)]

    for node in nodes:
        for operator, fn in _edits(node):
            twin, new_node = twin_of(node)
            fn(new_node)
            text = ast.unparse(new_node)
            if isinstance(node, ast.stmt):
                new_source = _splice(lines, node, text)
            else:
                new_source = _splice(lines, node, f"({text})")
            add(node, operator, new_source, twin, text)
        for operator, make in _replacement(node):
            replacement = make()
            twin, old = twin_of(node)
            _replace_in_parent(twin, old, replacement)
            text = ast.unparse(replacement)
            spliced = text if isinstance(replacement, ast.stmt) else f"({text})"
            add(node, operator, _splice(lines, node, spliced), twin, text)
        if isinstance(node, ast.If) and not (
            len(node.body) == 1 and isinstance(node.body[0], ast.Pass | ast.Raise)
        ):
            # a guard's body -> pass (a lone raise is already covered by "raise -> pass")
            twin, twin_if = twin_of(node)
            assert isinstance(twin_if, ast.If)
            twin_if.body = [ast.Pass()]
            add(node, "if body -> pass", _splice_body(lines, node.body, "pass"), twin, "pass")
    out.sort(key=lambda m: (m.line, m.number))
    return [dataclasses.replace(m, number=first_number + i) for i, m in enumerate(out)]


def _replace_in_parent(tree: ast.AST, target: ast.AST, replacement: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, replacement)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is target:
                        value[i] = replacement
                        return
    raise AssertionError("node not found in its tree")


# -- running them ---------------------------------------------------------------------


def _copy_repo(dest: Path) -> None:
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info"
        ),
        symlinks=True,
    )


# pytest processes running now (so a stopped run can end them) and the stop flag
_ACTIVE: set[subprocess.Popen[str]] = set()
_STOPPING = threading.Event()


def _pytest(workdir: Path, tests: list[str], timeout_s: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last lines of output)."""
    env = dict(os.environ)
    # A mutant can have the same size as the original and be written in the same second:
    # a cached .pyc would then be taken for it. Never write bytecode in the copies.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    # its own process group, so a timeout (or our own exit) also ends what the tests started
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _ACTIVE.add(proc)
    if _STOPPING.is_set():  # started just as the run was stopped
        _kill_group(proc)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return "timeout", time.monotonic() - start, ""
    finally:
        if proc.poll() is None:  # interrupted: end it with what it started
            _kill_group(proc)
        _ACTIVE.discard(proc)
    tail = "\n".join(out.strip().splitlines()[-3:])
    return ("pass" if proc.returncode == 0 else "fail"), time.monotonic() - start, tail


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Worker:
    """A private copy of the repository in which mutants are written one at a time."""

    def __init__(self, base: Path, n: int) -> None:
        self.dir = base / f"repo{n}"
        _copy_repo(self.dir)

    def run(self, mutant: Mutant, original: str, tests: list[str], timeout_s: float) -> Result:
        target = self.dir / mutant.path
        target.write_text(mutant.source)
        try:
            status, seconds, tail = _pytest(self.dir, tests, timeout_s)
        finally:
            target.write_text(original)
        outcome = {"pass": "survived", "fail": "killed", "timeout": "timeout"}[status]
        return Result(mutant, outcome, seconds, tail)


def _existing(tests: list[str]) -> list[str]:
    return [t for t in tests if t.startswith("-") or (ROOT / t.split("::")[0]).exists()]


def _git_diff_clean(paths: list[str]) -> bool | None:
    """``git diff --exit-code`` on ``paths``: True/False, None outside a git checkout."""
    try:
        proc = subprocess.run(
            ["git", "diff", "--exit-code", "--quiet", "--", *paths],
            cwd=ROOT,
            check=False,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    return {0: True, 1: False}.get(proc.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " Generates AST mutants of each target file and runs its tests on each.",
        epilog=(
            "Operators: compare (< <=, > >=, == !=, in / not in, is / is not), and/or, "
            "not x -> x, int (+1, -1), +/- (also += -=), true/false, return None, "
            "raise -> pass, if body -> pass, min/max. "
            "Default targets and tests: "
            + "; ".join(f"{k}: {len(_existing(v))} test args" for k, v in DEFAULT_TARGETS.items())
            + ". A survivor is either a missing test or an equivalent mutant; write the test "
            "or record why in docs/RELIABILITY.md (Mutation testing)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--files",
        nargs="+",
        metavar="PATH",
        default=list(DEFAULT_TARGETS),
        help="files to mutate, relative to the repository (default: %(default)s)",
    )
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="ARG",
        help="pytest arguments (paths, node ids, --deselect=...) to run for EVERY file; "
        "default: each file's own list in DEFAULT_TARGETS (required for other files)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="mutants tested in parallel, each in its own copy of the repo (default: 1; "
        "the machine's cores are shared)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds per mutant before it counts as killed by timeout "
        "(default: 5 x the unmutated run + 30)",
    )
    parser.add_argument(
        "--only", metavar="N,N", help="run only these mutant numbers (as shown by --list)"
    )
    parser.add_argument("--list", action="store_true", help="print the mutants; run nothing")
    parser.add_argument(
        "--verbose", action="store_true", help="print every mutant's outcome, not just survivors"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    # SIGTERM unwinds like Ctrl-C: the running pytest is killed and the copies removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    plan: list[tuple[str, list[str]]] = []
    for rel in args.files:
        rel = os.path.relpath(ROOT / rel, ROOT) if not Path(rel).is_absolute() else rel
        if not (ROOT / rel).is_file():
            parser.error(f"--files: {rel} is not a file in {ROOT}")
        tests = args.tests or DEFAULT_TARGETS.get(rel)
        if tests is None:
            parser.error(f"--files: no default tests for {rel}; name them with --tests")
        plan.append((rel, _existing(tests)))

    mutants: dict[str, list[Mutant]] = {}
    originals: dict[str, str] = {}
    number = 1
    for rel, _ in plan:
        originals[rel] = (ROOT / rel).read_text()
        mutants[rel] = make_mutants(rel, originals[rel], number)
        number += len(mutants[rel])
    if args.only:
        wanted = {int(x) for x in args.only.split(",") if x.strip()}
        mutants = {k: [m for m in v if m.number in wanted] for k, v in mutants.items()}
    if args.list:
        for ms in mutants.values():
            for m in ms:
                print(f"#{m.number} {m.describe()}")
        print(json.dumps({"mutants": sum(len(v) for v in mutants.values())}))
        return 0

    clean_before = _git_diff_clean(list(originals))
    start = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dvp-mutate-") as tmp:
        workers = [Worker(Path(tmp), i) for i in range(args.jobs)]
        baseline: dict[tuple[str, ...], float] = {}  # files sharing tests run them once
        for rel, tests in plan:
            if tuple(tests) not in baseline:
                status, base_s, tail = _pytest(workers[0].dir, tests, 1800)
                if status != "pass":
                    print(f"the unmutated tests for {rel} fail:\n{tail}", file=sys.stderr)
                    return 2
                baseline[tuple(tests)] = base_s
            base_s = baseline[tuple(tests)]
            timeout_s = args.timeout or 5 * base_s + 30
            print(
                f"{rel}: {len(mutants[rel])} mutants; unmutated tests {base_s:.1f} s; "
                f"timeout {timeout_s:.0f} s; tests: {' '.join(tests)}",
                flush=True,
            )
            free = list(workers)

            def job(
                m: Mutant,
                rel: str = rel,
                tests: list[str] = tests,
                t: float = timeout_s,
                free: list[Worker] = free,
            ) -> Result:
                w = free.pop()
                try:
                    return w.run(m, originals[rel], tests, t)
                finally:
                    free.append(w)

            pool = ThreadPoolExecutor(max_workers=args.jobs)
            try:
                for r in pool.map(job, mutants[rel]):
                    results.append(r)
                    if r.outcome != "killed" or args.verbose:
                        print(
                            f"  {r.outcome.upper():8} #{r.mutant.number} {r.mutant.describe()}"
                            f"  ({r.seconds:.1f} s)",
                            flush=True,
                        )
            except BaseException:
                # stopped (Ctrl-C, SIGTERM): run nothing more, end the running tests
                _STOPPING.set()
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in list(_ACTIVE):
                    _kill_group(proc)
                pool.shutdown(wait=True)
                raise
            pool.shutdown(wait=True)
    wall = time.monotonic() - start

    # belt and braces: the source tree was only read (mutants live in the temporary copies)
    changed = [rel for rel, text in originals.items() if (ROOT / rel).read_text() != text]
    if clean_before and _git_diff_clean(list(originals)) is False:
        changed.append("(git diff --exit-code fails)")
    if changed:
        print(f"BUG: the source tree changed during the run: {changed}", file=sys.stderr)
        return 2

    print("\nper file (mutants / killed / survived / timeout):")
    for rel in originals:
        rs = [r for r in results if r.mutant.path == rel]
        counts = [sum(r.outcome == o for r in rs) for o in ("killed", "survived", "timeout")]
        print(f"  {rel}: {len(rs)} / {counts[0]} / {counts[1]} / {counts[2]}")
    survivors = [r for r in results if r.outcome == "survived"]
    if survivors:
        print("survivors:")
        for r in survivors:
            print(f"  #{r.mutant.number} {r.mutant.describe()}")
    timeouts = [r for r in results if r.outcome == "timeout"]
    if timeouts:
        print("timeouts (counted as killed: the tests hung or ran 5x longer):")
        for r in timeouts:
            print(f"  #{r.mutant.number} {r.mutant.describe()}")
    summary = {
        "mutants": len(results),
        "killed": sum(r.outcome == "killed" for r in results),
        "survived": len(survivors),
        "timeout": sum(r.outcome == "timeout" for r in results),
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
    }
    print(json.dumps(summary))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
