"""Every command the README shows exists, and every relative link in it (and in the docs it
sends a newcomer to) resolves.

What is checked, read from the README's code blocks and inline code spans:

* ``make TARGET [VAR=value]``: the target is a rule of the Makefile, the variable one it defines
  or reads (``$(VAR)``);
* ``sglang-ascend-fia VERB [flags]`` and ``python -m sglang_ascend_fia.cli VERB [flags]``: the
  console script is the one ``pyproject.toml`` ``[project.scripts]`` declares, the verb one of
  ``cli.main``'s sub-commands and each flag one the verb's parser takes (the parsers are taken
  from ``cli.main`` and ``verify.main`` themselves, not from ``--help`` text);
* ``python -m MODULE``: the module exists (found without importing it); flags given to
  ``sglang.launch_server`` are options of sglang's own server parser;
* every ``--flag`` the README names on its own (``--page-size``) is an option of sglang's server
  or of the plugin's command line;
* every environment variable in the Configuration table is read somewhere in
  ``sglang_ascend_fia/`` or in the installed sglang (its name appears in their source);
* every relative link ``[text](path#anchor)`` points at an existing file and, with an anchor, at a
  heading of that file (GitHub's anchor rules).

``pip install ...`` lines are not checked (they name distributions, not this repository's
commands). The negative cases at the bottom run the same checks on a made-up README.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import sglang_ascend_fia

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The docs the README sends a newcomer to, whose links are checked with the README's.
LINKED_DOCS = [
    ROOT / "docs" / name
    for name in (
        "npu-owner-guide.md",
        "serving.md",
        "upstream-comparison.md",
        "benchmarks.md",
        "development.md",
    )
]
PACKAGE_DIR = Path(sglang_ascend_fia.__file__).resolve().parent
_spec = importlib.util.find_spec("sglang")
assert _spec is not None and _spec.origin is not None
SGLANG_DIR = Path(_spec.origin).resolve().parent


# --- what the README shows -------------------------------------------------------------------


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """Every command line the text shows, as shell words: the lines of its code blocks (with
    ``\\`` continuations joined and comments dropped) and the inline code spans that start with a
    command."""
    lines: list[str] = []
    for block in code_blocks(text):
        lines += block.replace("\\\n", " ").splitlines()
    spans = re.findall(r"`([^`\n]+)`", _without_code_blocks(text).replace("``", ""))
    # A span that starts with a command (a log line such as "sglang-ascend-fia: ..." does not).
    command = re.compile(r"(make|python -m|\.venv/bin/python -m|sglang-ascend[\w-]*)( |$)")
    lines += [s for s in spans if command.match(s) or re.match(r"[A-Z_]+=\S* \S", s)]
    words = []
    for line in lines:
        try:
            split = shlex.split(line, comments=True)
        except ValueError:
            split = line.split()
        if split:
            words.append(split)
    return words


def _strip_env(words: list[str]) -> list[str]:
    """The command after ``export`` / ``NAME=value`` assignments."""
    if words[:1] == ["export"]:
        return []
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        words = words[1:]
    return words


def standalone_flags(text: str) -> set[str]:
    """``--flag`` spans outside commands: ``--page-size``, ``--dtype bfloat16``."""
    spans = re.findall(r"`([^`\n]+)`", _without_code_blocks(text))
    return {s.split()[0].split("=")[0] for s in spans if re.match(r"--[a-z][\w-]*(\s|=|$)", s)}


def configuration_env_vars(text: str) -> list[str]:
    section = re.search(r"^## Configuration\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "the README has no Configuration section"
    rows = [line for line in section[1].splitlines() if line.startswith("|")]
    names = []
    for row in rows:
        first = row.split("|")[1]
        names += re.findall(r"`([A-Z][A-Z0-9_]+)`", first)
    return names


def configuration_flags(text: str) -> list[str]:
    section = re.search(r"^## Configuration\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section
    rows = [line for line in section[1].splitlines() if line.startswith("|")]
    return [f for row in rows for f in re.findall(r"`(--[a-z][\w-]*)`", row.split("|")[1])]


# --- what exists -----------------------------------------------------------------------------


@functools.cache
def make_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[:?+]?=", text, flags=re.M))
    variables |= set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", text))
    return targets, variables


@functools.cache
def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser_of(main: Callable[[list[str]], int]) -> argparse.ArgumentParser:
    """The parser ``main`` builds, taken at its first parse (nothing after it runs)."""

    def grab(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parser(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = grab  # type: ignore[assignment,method-assign]
    try:
        main([])
    except _Parser as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise AssertionError(f"{main} parsed no arguments")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


@functools.cache
def cli_verbs() -> dict[str, set[str]]:
    """Each sub-command of the console script and the flags it takes."""
    from sglang_ascend_fia import cli, verify

    top = _parser_of(cli.main)
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    verbs = {name: _options(parser) | _options(top) for name, parser in sub.choices.items()}
    # cli.main hands verify-ops' arguments to verify.main, which parses them itself.
    source = Path(cli.__file__).read_text()
    assert "return verify.main(rest)" in source, "cli no longer delegates verify-ops to verify"
    verbs["verify-ops"] |= _options(_parser_of(verify.main))
    return verbs


@functools.cache
def sglang_server_flags() -> set[str]:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return _options(parser)


def module_exists(name: str) -> bool:
    """Whether ``python -m name`` finds a module, without importing it or its packages."""
    top, *rest = name.split(".")
    if (ROOT / top / "__init__.py").is_file():  # the repository's own packages (demo, bench)
        base = ROOT / top
    else:
        spec = importlib.util.find_spec(top)
        if spec is None:
            return False
        if not rest:
            return True
        if not spec.submodule_search_locations:
            return False
        base = Path(next(iter(spec.submodule_search_locations)))
    path = base.joinpath(*rest) if rest else base
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


@functools.cache
def _source_words() -> tuple[str, ...]:
    texts = [p.read_text(errors="replace") for p in PACKAGE_DIR.rglob("*.py")]
    texts += [p.read_text(errors="replace") for p in SGLANG_DIR.rglob("*.py")]
    return tuple(texts)


def env_var_is_read(name: str) -> bool:
    word = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
    return any(word.search(text) for text in _source_words())


# --- the checks ------------------------------------------------------------------------------


def command_problems(words: list[str]) -> list[str]:
    shown = " ".join(words)
    words = _strip_env(words)
    if not words:
        return []
    if words[0] in ("python", "python3", ".venv/bin/python") and words[1:2] == ["-m"]:
        if len(words) < 3:
            return [f"{shown!r}: python -m without a module"]
        module, args = words[2], words[3:]
        if module == "sglang_ascend_fia.cli":
            return _cli_problems(shown, args)
        if not module_exists(module):
            return [f"{shown!r}: no module {module!r}"]
        if module == "sglang.launch_server":
            flags = {a.split("=")[0] for a in args if a.startswith("--")}
            return [
                f"{shown!r}: {f} is not an option of sglang's server"
                for f in sorted(flags - sglang_server_flags())
            ]
        return []
    if words[0] == "make":
        targets, variables = make_targets_and_variables()
        problems = []
        for word in words[1:]:
            if "=" in word:
                name = word.split("=")[0]
                if name not in variables:
                    problems.append(f"{shown!r}: the Makefile has no variable {name}")
            elif not word.startswith("-") and word not in targets:
                problems.append(f"{shown!r}: the Makefile has no target {word!r}")
        return problems
    if words[0] in console_scripts():
        return _cli_problems(shown, words[1:])
    if words[0].startswith("sglang-ascend"):
        return [f"{shown!r}: {words[0]} is not a console script of pyproject.toml"]
    return []


def _cli_problems(shown: str, args: list[str]) -> list[str]:
    args = [a.strip("[]") for a in args]
    verb = next((a for a in args if not a.startswith("-")), None)
    if verb is None:
        return [] if set(args) <= {"-h", "--help"} else [f"{shown!r}: no sub-command"]
    if verb not in cli_verbs():
        return [f"{shown!r}: {verb!r} is not a sub-command ({sorted(cli_verbs())})"]
    flags = {a.split("=")[0] for a in args if a.startswith("-")}
    return [f"{shown!r}: {verb} takes no {flag}" for flag in sorted(flags - cli_verbs()[verb])]


def readme_problems(text: str) -> list[str]:
    problems = [p for words in commands(text) for p in command_problems(words)]
    known = sglang_server_flags() | set().union(*cli_verbs().values())
    for flag in sorted(standalone_flags(text) | set(configuration_flags(text))):
        if flag not in known:
            problems.append(f"{flag}: neither an sglang server option nor a plugin flag")
    for name in configuration_env_vars(text):
        if not env_var_is_read(name):
            problems.append(f"{name}: named in Configuration, read nowhere in the plugin or sglang")
    return problems


def github_anchors(markdown: str) -> set[str]:
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _without_code_blocks(markdown), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def link_problems(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text() if text is None else text
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code_blocks(text)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: ({target}) -> no {linked.relative_to(ROOT)}")
        elif anchor and linked.suffix == ".md" and anchor not in github_anchors(linked.read_text()):
            problems.append(f"{path.name}: ({target}) -> no heading #{anchor}")
    return problems


# --- the real README -------------------------------------------------------------------------


def test_the_readme_shows_the_commands_it_is_read_for() -> None:
    """The parse is not vacuous: the two commands, the console script and the toggle are seen."""
    text = README.read_text()
    shown = {" ".join(_strip_env(w)[:2]) for w in commands(text)}
    assert {"make test", "make demo", "sglang-ascend-fia doctor"} <= shown, shown
    assert "ASCEND_USE_FIA" in configuration_env_vars(text)
    assert "--page-size" in configuration_flags(text)


def test_every_command_flag_and_variable_the_readme_shows_exists() -> None:
    problems = readme_problems(README.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [README, *LINKED_DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(path: Path) -> None:
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


# --- made-up commands fail -------------------------------------------------------------------

CONFIG = "## Configuration\n\n| setting | values |\n|---|---|\n{row}\n\n## Next\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```bash\nmake frobnicate\n```", "no target 'frobnicate'"),
        ("run `make test FROBS=1` first", "no variable FROBS"),
        ("`sglang-ascend-fia frob`", "'frob' is not a sub-command"),
        ("```bash\nsglang-ascend-fia doctor --yaml\n```", "doctor takes no --yaml"),
        ("`sglang-ascend-fia verify-ops --fast`", "verify-ops takes no --fast"),
        ("`python -m sglang_ascend_fia.cli quantize-w8a8 A B --int4`", "takes no --int4"),
        ("`sglang-ascendfia doctor`", "not a console script"),
        ("`python -m sglang_ascend_fia.nowhere`", "no module 'sglang_ascend_fia.nowhere'"),
        ("`python -m bench.nowhere`", "no module 'bench.nowhere'"),
        (
            "```bash\npython -m sglang.launch_server --model-path x --page-sise 16\n```",
            "--page-sise is not an option of sglang's server",
        ),
        ("set `--page-sise` to 128", "--page-sise: neither"),
        (CONFIG.format(row="| `ASCEND_MADE_UP_TOGGLE` | 1 |"), "ASCEND_MADE_UP_TOGGLE: named"),
        (CONFIG.format(row="| `--page-sise` | 128 |"), "--page-sise: neither"),
    ],
)
def test_a_made_up_command_fails(text: str, problem: str) -> None:
    if "## Configuration" not in text:
        text += "\n" + CONFIG.format(row="| `ASCEND_USE_FIA` | 1 |")
    problems = readme_problems(text)
    assert any(problem in p for p in problems), problems


def test_the_real_commands_pass_in_a_made_up_readme() -> None:
    """The negative cases fail for their made-up part only."""
    text = (
        "```bash\nmake test PYTEST_ARGS=-q TEST_WORKERS=0\nsglang-ascend-fia doctor --json\n"
        "python -m sglang.launch_server --model-path m --page-size 128\n```\n"
        "`sglang-ascend-fia verify-ops -k fia --list`, `python -m bench.report`, `--dtype`\n"
        + CONFIG.format(row="| `ASCEND_USE_FIA` | 1 |\n| `SGLANG_PLUGINS` | x |")
    )
    assert readme_problems(text) == []


@pytest.mark.parametrize(
    ("link", "problem"),
    [("docs/nowhere.md", "no docs/nowhere.md"), ("docs/serving.md#nowhere", "no heading")],
)
def test_a_broken_link_fails(link: str, problem: str) -> None:
    problems = link_problems(README, f"see [this]({link})\n")
    assert any(problem in p for p in problems), problems
