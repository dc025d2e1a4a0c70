"""Code answers compared by meaning, without running them.

Two solutions that differ only in names, comments, docstrings, formatting or the demo code
printed after the function are the same program: we parse both with `ast`, drop docstrings,
demo/test code at module level and `if __name__ == "__main__"` blocks, rename every local
identifier to a canonical name by order of first appearance (keeping the names the prompt
asks for, builtins and attributes), and compare the dumps. Unequal programs get a graded
similarity over their node-type sequences, so "same algorithm, one extra line" sits between
"identical" and "unrelated".
"""

from __future__ import annotations

import ast
import builtins
import difflib
import re
from dataclasses import dataclass, field

from classifier.answer_extract import clip, fenced_blocks

_BUILTINS = frozenset(dir(builtins))
_CODE_LANGS = {"", "python", "py", "python3", "code"}
# `assert f(...) == ...` / `>>> f(...)` / `def f(` in the prompt name the function the
# answer must define.
_ASSERT_CALL = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\(?\s*([A-Za-z_]\w*)\s*\(")
_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.M)
_DOCTEST = re.compile(r">>>\s*([A-Za-z_]\w*)\s*\(")


@dataclass
class CodeInfo:
    found: bool                        # the answer contains something that looks like code
    parses: bool = False
    canon: str = ""                    # canonical dump of the normalised tree
    shape: list[str] = field(default_factory=list)   # node-type sequence for graded similarity
    defined: dict[str, int] = field(default_factory=dict)   # top-level function -> arity


def required_functions(prompt: str) -> set[str]:
    p = clip(prompt)
    names = set(_ASSERT_CALL.findall(p)) | set(_DOCTEST.findall(p)) | set(_DEF.findall(p))
    return {n for n in names if n not in _BUILTINS and n not in {"isclose", "math"}}


def probes(prompt: str, limit: int = 12) -> list[dict[str, str]]:
    """Calls to run an answer on, derived from the prompt: `assert f(x) == y` lines give the
    call and the test; doctest `>>> f(x)` lines give the call and the expected repr."""
    out: list[dict[str, str]] = []
    lines = clip(prompt).splitlines()
    for i, line in enumerate(lines):
        t = line.strip()
        if t.startswith("assert "):
            try:
                node = ast.parse(t).body[0]
            except (SyntaxError, ValueError, IndexError, RecursionError):
                continue
            if not isinstance(node, ast.Assert):
                continue
            calls = [n for n in ast.walk(node.test) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                     and n.func.id not in _BUILTINS]
            if calls:
                out.append({"call": ast.unparse(calls[0]), "test": ast.unparse(node.test)})
        elif t.startswith(">>> ") and _DOCTEST.match(t):
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            probe = {"call": t[4:].strip()}
            if nxt and not nxt.startswith(">>>"):
                probe["expect_repr"] = nxt
            out.append(probe)
        if len(out) >= limit:
            break
    return out


def looks_like_code_request(prompt: str) -> bool:
    p = clip(prompt).lower()
    return bool(
        required_functions(prompt)
        or re.search(r"\b(write|implement|complete|create|fix)\b.{0,60}\b(function|program|script|class|method|code)\b", p)
        or "```python" in p or re.search(r"\bin python\b|\bpython (function|code|script)\b", p)
    )


_BEGIN_DONE = re.compile(r"\[BEGIN\]\s*(.*?)\s*(?:\[DONE\]|$)", re.S)


def extract_code(answer: str, prompt: str = "") -> str | None:
    m = _BEGIN_DONE.search(clip(answer))      # MBPP few-shot format: [BEGIN] 'code' [DONE]
    if m:
        body = m.group(1)
        if "\n" not in body:      # the code was stored as an escaped string literal
            body = body.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\\t", "\t")
        body = body.strip()
        if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
            body = body[1:-1]
        return body
    blocks = fenced_blocks(answer)
    py = [b for lang, b in blocks if lang in _CODE_LANGS]
    if py:
        with_def = [b for b in py if re.search(r"^\s*(def|class)\s", b, re.M)]
        return "\n\n".join(with_def or py[:1])
    a = clip(answer)
    if re.search(r"^\s*(def|class|import|from)\s", a, re.M):
        # Unfenced: keep from the first code-looking line; prose after it stops the parse,
        # so trim trailing lines until the tail parses.
        lines = a.splitlines()
        start = next(i for i, ln in enumerate(lines) if re.match(r"\s*(def|class|import|from)\s", ln))
        body = lines[start:]
        for end in range(len(body), 0, -1):
            chunk = "\n".join(body[:end])
            try:
                ast.parse(chunk)
                return chunk
            except (SyntaxError, ValueError):
                if len(body) - end > 40:
                    break
        return "\n".join(body)
    return None


class _Canon(ast.NodeTransformer):
    def __init__(self, keep: set[str]):
        self.keep = keep
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        if name in self.keep or name in _BUILTINS:
            return name
        if name not in self.names:
            self.names[name] = f"v{len(self.names)}"
        return self.names[name]

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._rename(node.arg)
        node.annotation = None
        return node

    def _strip_doc(self, node: ast.AST) -> None:
        body = getattr(node, "body", None)
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._strip_doc(node)
        node.name = self._rename(node.name)
        node.returns = None
        node.decorator_list = []
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._strip_doc(node)
        node.name = self._rename(node.name)
        self.generic_visit(node)
        return node


def _is_demo(stmt: ast.stmt) -> bool:
    """Module-level code that only exercises the solution (prints, asserts, main guards)."""
    if isinstance(stmt, ast.Assert):
        return True
    if isinstance(stmt, ast.If) and "__name__" in ast.dump(stmt.test):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Call, ast.Constant)):
        return True
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call) and \
            isinstance(stmt.value.func, ast.Name) and stmt.value.func.id not in _BUILTINS:
        return True   # `result = solve(...)` demo lines
    return False


def _completion(prompt: str, answer: str) -> str | None:
    """HumanEval-style answers continue the prompt's `def` with an indented body."""
    if not re.match(r"[ \t]+\S", answer) or not _DEF.search(prompt):
        return None
    p = clip(prompt)
    blocks = fenced_blocks(p)
    head = blocks[-1][1] if blocks else p
    return head.rstrip() + "\n" + answer


def runnable_code(answer: str, prompt: str = "") -> tuple[str | None, ast.Module | None]:
    """(the answer's code, its tree or None when it does not parse); HumanEval-style bodies are
    joined to the prompt's `def`."""
    code = extract_code(answer)
    if code is None:
        code = _completion(prompt, clip(answer))
        if code is None:
            return None, None
    tree, code = _parse_source(code)
    if tree is None and prompt:
        comp = _completion(prompt, code)
        if comp:
            tree, comp = _parse_source(comp)
            if tree is not None:
                code = comp
    return code, tree


def definitions_only(tree: ast.Module) -> str:
    """The module without its demo code (prints, asserts, main guards), ready to import and probe."""
    body = [st for st in tree.body if not _is_demo(st)]
    try:
        return ast.unparse(ast.Module(body=body, type_ignores=[]))
    except (ValueError, RecursionError):
        return ""


def analyse_code(answer: str, keep: set[str], prompt: str = "") -> CodeInfo:
    code, tree = runnable_code(answer, prompt)
    if code is None:
        return CodeInfo(found=False)
    if tree is None:
        return CodeInfo(found=True, parses=False)
    defined = {n.name: len(n.args.args) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    tree.body = [s for s in tree.body if not _is_demo(s)] or tree.body
    tree = _Canon(keep | {"self", "cls"}).visit(tree)
    try:
        canon = ast.dump(tree, annotate_fields=False)
    except RecursionError:
        canon = ""
    shape = [type(n).__name__ for n in ast.walk(tree)][:4000]
    return CodeInfo(found=True, parses=True, canon=canon, shape=shape, defined=defined)


def _parse_source(code: str) -> tuple[ast.Module | None, str]:
    """(tree, the source that parsed): the code as given, else dedented."""
    import textwrap
    for c in (code, textwrap.dedent(code)):
        try:
            return ast.parse(c), c
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None, code


def _parse(code: str) -> ast.Module | None:
    return _parse_source(code)[0]


def code_similarity(x: CodeInfo, y: CodeInfo) -> float:
    if not (x.parses and y.parses):
        return 0.0
    if x.canon == y.canon:
        return 1.0
    sm = difflib.SequenceMatcher(None, x.shape, y.shape, autojunk=False)
    return sm.ratio() * 0.9    # never as good as the same program
