"""Every sglang file:line a manifest entry cites must still say what the entry says it says.

An entry's ``why`` (and ``remove_when``) cites sglang's source as ``path.py:N`` or
``path.py:N-M``. This test parses every citation, resolves it in the installed sglang, and
checks the cited lines against the sentence that cites them, so a citation goes stale loudly
(sglang moved the code, or the entry's text was edited) instead of quietly.

The citation grammar, as the manifest uses it:

* **Paths** are relative to ``sglang/srt/`` (``layers/moe/topk.py``), else to the ``sglang``
  package (``kernels/fused_op.py``); a leading ``sglang/`` is allowed. A shorter path or a bare
  file name (``ascend_backend.py``, ``token_dispatcher/ascend_tp.py``) resolves if exactly one
  file in the installed package ends with it. When several do (``ascend_backend.py`` is also
  ``srt/lora/backend/ascend_backend.py``) it resolves to the entry's own ``module`` file, else
  to the one of them the entry cited earlier with a longer path; otherwise it is ambiguous and
  fails: write more of the path.
* **Continuations bind to the file cited last before them, in the same text:** a list after a
  citation (``ascend_backend.py:1925-1966, 1929, 3240``, ``memory_pool_npu.py:17, :109``,
  ``x.py:3 and 9``), a bare ``:N`` / ``:N-M`` (``(:175-189)``) and a bare range ``N-M``
  (``(2252-2256)``). A single bare number outside such a list is prose (``MXFP8 (3)``), never a
  citation; a bare range or ``:N`` with no file cited before it in the text fails as unbound.

What the cited lines must hold. A citation (with its list continuations) is named by the text
of its sentence between the previous citation and it (``AscendAttnBackend.__init__ reads
ASCEND_USE_FIA (ascend_backend.py:383)``); where that part names nothing checkable, by the text
after it up to the next citation (``topk.py:831-858: without a platform kernel TopK runs
select_experts``). Citations listed one after another, only commas or semicolons between them
(``(moe_methods.py:616-711, ascend_tp.py:76-87)``), share the text before and after the list,
and each may hold a name from either side. The checkable names are the code-like words:
anything in backticks, dotted names (``TopK.forward_npu``, each part), call names
(``MoeRunner(``), snake_case and CONSTANT words (``select_experts``, ``ASCEND_USE_FIA``) and
CamelCase words (``AscendAttnBackend``), plus the last part of the entry's ``target``; a few
words common to every file (``torch``, ``self``, ``__init__``...) and prose CamelCase (``MoE``,
``DeepSeek``) do not count. Every cited line or range must:

* exist (``N <= M <=`` the file's length) and begin and end on a non-blank line (a range that
  starts or stops on a blank line has usually drifted from the code it meant);
* hold at least one of those names, as a whole word in its lines or as the name of the
  function the range begins in, when the text names anything checkable; where it names
  nothing checkable, the checks above are all there is.

Plugin paths without a line number (``registry/sglang_mode.py``) are not sglang citations.
The negative cases at the bottom run the same check on a synthetic entry with a wrong line.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

from sglang_ascend_fia.manifest import PatchEntry, load_manifest

ENTRIES = load_manifest()

_spec = importlib.util.find_spec("sglang")  # locates the package without importing it
assert _spec is not None and _spec.origin is not None, "sglang is not installed"
SGLANG_ROOT = Path(_spec.origin).resolve().parent

_RANGE = r"\d+(?:-\d+)?"
# A citation with a path: `dir/file.py:N` or `file.py:N-M`.
_FULL = re.compile(rf"(?<![\w/.-])(?P<path>(?:[A-Za-z_][\w.-]*/)*[A-Za-z_]\w*\.py):(?P<r>{_RANGE})")
# A list continuation right after a citation: `, N`, `, N-M`, `, :N`, `and N`.
_CONTINUATION = re.compile(rf"(?:\s*,\s*|\s+and\s+):?(?P<r>{_RANGE})(?![\w-]|\.\d)")
# A continuation standing on its own: `:N`, `:N-M`, or a bare range `N-M`.
_STANDALONE = re.compile(
    rf"(?<![\w.)\]]):(?P<colon>{_RANGE})(?![\w-]|\.\d)|(?<![\w.:=/+-])(?P<bare>\d+-\d+)(?![\w-]|\.\d)"
)
# Any `*.py` path, with or without a line: removed from a window before names are read from it.
_ANY_PATH = re.compile(r"(?<![\w/.-])(?:[A-Za-z_][\w.-]*/)*[A-Za-z_]\w*\.py(?::[\d,:\s-]*\d)?")
# Words with a slash are paths or alternatives (sglang_ascend_fia/mla, softmax/sigmoid), not names.
_SLASHED = re.compile(r"[\w.()-]*(?:/[\w.()-]+)+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"`])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?P<call>\()?")
# Words too common in sglang's source to show that a range is the one a sentence means, and
# CamelCase words of prose (they turn up in docstrings and comments).
_STOP = {"torch", "ops", "npu", "self", "cpu", "tolist", "__init__", "sglang", "srt"} | {
    "MoE",
    "DeepSeek",
    "SwiGLU",
    "PyTorch",
    "DeepEP",
    "GGUF",
    "NPUs",
    "GPUs",
}


@dataclasses.dataclass(frozen=True)
class Citation:
    """One cited line or range, as written, with the file it binds to and the text around it."""

    text: str  # how it was written, for messages
    path: str  # the path it binds to, as written
    first: int
    last: int
    before: str  # its sentence from the previous citation up to it
    after: str  # its sentence from it up to the next citation
    listed: bool  # one of several citations listed together: "(a.py:1, b.py:2)"

    @property
    def names(self) -> set[str]:
        """What the text says the lines hold: the names before it, else those after it; for a
        listed citation, the names on both sides of the list."""
        if self.listed:
            return checkable_names(self.before) | checkable_names(self.after)
        return checkable_names(self.before) or checkable_names(self.after)


@dataclasses.dataclass(frozen=True)
class _Group:
    start: int
    end: int
    path: str | None  # None: a standalone continuation, bound to the file cited last
    ranges: tuple[str, ...]


def _parse_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def _groups(text: str) -> list[_Group]:
    """Citation groups in text order: a full citation with its list, or a standalone one."""
    groups: list[_Group] = []
    taken: list[tuple[int, int]] = []
    for match in _FULL.finditer(text):
        ranges, end = [match["r"]], match.end()
        while cont := _CONTINUATION.match(text, end):
            ranges.append(cont["r"])
            end = cont.end()
        groups.append(_Group(match.start(), end, match["path"], tuple(ranges)))
        taken.append((match.start(), end))
    for match in _STANDALONE.finditer(text):
        if any(a <= match.start() < b for a, b in taken):
            continue
        groups.append(_Group(match.start(), match.end(), None, (match["colon"] or match["bare"],)))
    return sorted(groups, key=lambda g: g.start)


def _sentence_bounds(text: str, pos: int) -> tuple[int, int]:
    start, end = 0, len(text)
    for match in _SENTENCE_END.finditer(text):
        if match.end() <= pos:
            start = match.end()
        elif match.start() >= pos:
            end = match.start()
            break
    return start, end


def parse_citations(text: str) -> tuple[list[Citation], list[str]]:
    """The citations in ``text`` and the problems found while binding them (unbound ones)."""
    groups = _groups(text)
    # Citations listed one after another ("(a.py:1, b.py:2)") share the text around the list.
    clusters: list[list[_Group]] = []
    for group in groups:
        if clusters and re.fullmatch(r"[\s,;]*", text[clusters[-1][-1].end : group.start]):
            clusters[-1].append(group)
        else:
            clusters.append([group])
    citations: list[Citation] = []
    problems: list[str] = []
    last_path: str | None = None
    for i, cluster in enumerate(clusters):
        start, end = cluster[0].start, cluster[-1].end
        lo = max(_sentence_bounds(text, start)[0], clusters[i - 1][-1].end if i else 0)
        hi = min(
            _sentence_bounds(text, end)[1],
            clusters[i + 1][0].start if i + 1 < len(clusters) else len(text),
        )
        for group in cluster:
            written = text[group.start : group.end].strip()
            path = group.path or last_path
            if path is None:
                problems.append(f"{written!r}: a line reference with no file cited before it")
                continue
            last_path = path
            for r in group.ranges:
                first, last = _parse_range(r)
                citations.append(
                    Citation(
                        written, path, first, last, text[lo:start], text[end:hi], len(cluster) > 1
                    )
                )
    return citations, problems


def checkable_names(window: str) -> set[str]:
    """The code-like words a window names (see the module docstring)."""
    window = _SLASHED.sub(" ", _ANY_PATH.sub(" ", window))
    names: set[str] = set()
    for quoted in re.findall(r"`([^`]+)`", window):
        names |= set(re.findall(r"[A-Za-z_]\w*", quoted))
    for match in _WORD.finditer(window.replace("`", " ")):
        word = match.group(0).rstrip("(")
        parts = word.split(".")
        if len(parts) > 1 or match["call"]:
            names |= {p for p in parts if len(p) > 1}
        elif "_" in word.strip("_") or (
            re.search(r"[a-z]", word) and re.search(r"[A-Z]", word[1:])
        ):
            names.add(word)
    return names - _STOP


@cache
def _package_files() -> tuple[str, ...]:
    return tuple(
        p.relative_to(SGLANG_ROOT).as_posix()
        for p in SGLANG_ROOT.rglob("*.py")
        if "__pycache__" not in p.parts
    )


def _module_file(module: str) -> str:
    parts = module.split(".")[1:]
    for rel in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if (SGLANG_ROOT / rel).is_file():
            return rel
    return ""


def resolve(path: str, module: str = "", cited: tuple[str, ...] = ()) -> str:
    """The cited path as a file relative to the sglang package; ValueError if it names none
    or several. ``cited``: files the entry resolved before, most recent last."""
    path = path.removeprefix("sglang/")
    for rel in (f"srt/{path}", path):
        if (SGLANG_ROOT / rel).is_file():
            return rel
    candidates = [f for f in _package_files() if f.endswith("/" + path)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{path}: no such file in the installed sglang ({SGLANG_ROOT})")
    if _module_file(module) in candidates:
        return _module_file(module)
    for earlier in reversed(cited):
        if earlier in candidates:
            return earlier
    raise ValueError(f"{path} is ambiguous in the installed sglang: {sorted(candidates)}")


@cache
def _lines(rel: str) -> tuple[str, ...]:
    return tuple((SGLANG_ROOT / rel).read_text().splitlines())


@cache
def _functions(rel: str) -> tuple[tuple[int, int, str], ...]:
    tree = ast.parse((SGLANG_ROOT / rel).read_text())
    return tuple(
        (node.lineno, node.end_lineno or node.lineno, node.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _enclosing_function(rel: str, line: int) -> str | None:
    spans = [(a, b, n) for a, b, n in _functions(rel) if a <= line <= b]
    return min(spans, key=lambda s: s[1] - s[0])[2] if spans else None


def check_entry(entry: PatchEntry) -> tuple[int, list[str]]:
    """How many citations the entry's texts hold, and every problem with them."""
    names_from_target = {entry.attr_path[-1]} - _STOP
    problems: list[str] = []
    cited: list[str] = []
    count = 0
    for key in ("why", "remove_when"):
        citations, unbound = parse_citations(getattr(entry, key))
        problems += [f"{key}: {p}" for p in unbound]
        for c in citations:
            count += 1
            where = f"{key}: {c.text!r} ({c.path}:{c.first}-{c.last})"
            try:
                rel = resolve(c.path, entry.module, tuple(cited))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            cited.append(rel)
            lines = _lines(rel)
            if not 1 <= c.first <= c.last <= len(lines):
                problems.append(f"{where}: {rel} has {len(lines)} lines")
                continue
            body = lines[c.first - 1 : c.last]
            if not body[0].strip() or not body[-1].strip():
                problems.append(f"{where}: the range begins or ends on a blank line of {rel}")
                continue
            names = c.names | names_from_target
            if not names:
                continue  # the text names nothing checkable: existing, non-blank lines it is
            text = "\n".join(body)
            held = {n for n in names if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text)}
            if not held and _enclosing_function(rel, c.first) not in names:
                problems.append(
                    f"{where}: {rel}:{c.first}-{c.last} holds none of {sorted(names)}, "
                    f"the names around the citation; it reads: {body[0].strip()!r}"
                )
    return count, problems


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_citation_resolves_and_holds_what_the_entry_names(entry: PatchEntry) -> None:
    count, problems = check_entry(entry)
    assert count, f"{entry.name}: 'why' must cite the sglang code it patches as path.py:N"
    assert not problems, "\n".join([f"{entry.source} {entry.name}:", *problems])


# --- the grammar and the check themselves, on synthetic entries -------------------------------


def test_continuations_bind_to_the_file_cited_last() -> None:
    text = (
        "A.run loops (hardware_backend/npu/attention/ascend_backend.py:1925-1966, 1929, 3240), "
        "reads it (memory_pool_npu.py:17, :109) and lays out by it (:175-189), in Python "
        "(2252-2256), x.py:3 and 9. MXFP8 (3) and 8 heads are prose."
    )
    citations, problems = parse_citations(text)
    assert not problems
    assert [(c.path, c.first, c.last) for c in citations] == [
        ("hardware_backend/npu/attention/ascend_backend.py", 1925, 1966),
        ("hardware_backend/npu/attention/ascend_backend.py", 1929, 1929),
        ("hardware_backend/npu/attention/ascend_backend.py", 3240, 3240),
        ("memory_pool_npu.py", 17, 17),
        ("memory_pool_npu.py", 109, 109),
        ("memory_pool_npu.py", 175, 189),
        ("memory_pool_npu.py", 2252, 2256),
        ("x.py", 3, 3),
        ("x.py", 9, 9),
    ]


def test_names_are_read_from_the_window_around_the_citation() -> None:
    citations, _ = parse_citations(
        "AscendAttnBackend.__init__ reads ASCEND_USE_FIA (ascend_backend.py:383) and the "
        "module imports torch_npu at top level (ascend_backend.py:7-11). DeepSeek runs `x_y`."
    )
    assert citations[0].names == {"AscendAttnBackend", "ASCEND_USE_FIA"}
    assert citations[1].names == {"torch_npu"}
    # nothing checkable before it: the names after it count
    (citation,), _ = parse_citations("layers/moe/topk.py:831-858: TopK runs select_experts.")
    assert citation.names == {"TopK", "select_experts"}


def test_bare_file_names_resolve_when_unique_or_by_the_entry() -> None:
    assert resolve("matmul.py") == "srt/hardware_backend/npu/moe/matmul.py"
    assert resolve("kernels/fused_op.py") == "kernels/fused_op.py"
    module = "sglang.srt.hardware_backend.npu.attention.ascend_backend"
    assert resolve("ascend_backend.py", module) == module.replace(".", "/")[7:] + ".py"
    lora = "srt/lora/backend/ascend_backend.py"
    assert resolve("ascend_backend.py", "sglang.srt.models.x", (lora,)) == lora
    with pytest.raises(ValueError, match="ambiguous"):
        resolve("ascend_backend.py", "sglang.srt.models.x")


REGISTRY = next(e for e in ENTRIES if e.name == "ascend-fia-backend")
GOOD_WHY = (
    "The registry maps ascend to AscendAttnBackend (layers/attention/attention_registry.py:141-147)"
    ", whose module imports torch_npu at top level (hardware_backend/npu/attention/"
    "ascend_backend.py:7)."
)


def _synthetic(why: str) -> PatchEntry:
    # target "ascend" holds nowhere, so only the sentence's names can make a citation hold.
    return dataclasses.replace(
        REGISTRY, name="synthetic", why=why, remove_when="never", target="NOWHERE_NAMED"
    )


def test_the_synthetic_entry_passes_with_the_right_lines() -> None:
    assert check_entry(_synthetic(GOOD_WHY)) == (2, [])


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        # the right file, the wrong lines: nothing the sentence names is there
        ("attention_registry.py:141-147", "attention_registry.py:41-47", "holds none of"),
        # one line off: the import of torch_npu is line 7
        ("ascend_backend.py:7)", "ascend_backend.py:6)", "holds none of"),
        # a wrong number in a continuation list
        ("attention_registry.py:141-147", "attention_registry.py:141-147, 20", "holds none of"),
        ("attention_registry.py:141-147", "attention_registry.py:141-147 and 20", "holds none"),
        ("attention_registry.py:141-147", "attention_registry.py:141-99999", r"has \d+ lines"),
        ("attention_registry.py:141-147", "attention_registry.py:140-147", "blank line"),
        ("layers/attention/attention_registry.py", "layers/attention/nowhere.py", "no such file"),
        ("hardware_backend/npu/attention/ascend_backend.py", "lora/x/ascend_backend.py", "no such"),
        ("at top level", "at top level (:99999)", r"has \d+ lines"),
    ],
)
def test_a_wrong_citation_fails(old: str, new: str, problem: str) -> None:
    assert old in GOOD_WHY
    _, problems = check_entry(_synthetic(GOOD_WHY.replace(old, new, 1)))
    assert any(re.search(problem, p) for p in problems), problems


def test_an_ambiguous_or_unbound_citation_fails() -> None:
    _, problems = check_entry(
        _synthetic("sglang's CPU path (lines 12-20) and NPUSwigluQuant (moe/activation.py:31-38).")
    )
    assert any("no file cited before it" in p for p in problems), problems
    assert any("ambiguous" in p for p in problems), problems
