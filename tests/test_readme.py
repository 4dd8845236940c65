"""The code of README.md and PORTING.md runs, and the shell commands of README.md / BUILD.md
name files that exist."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "BUILD.md")
# A command argument is a repository path when it starts with one of these ...
REPO_DIRS = ("experiments/", "notebooks/", "scion_jax/", "tests/", ".ci/")
# ... or is one of the repository's top-level files.
REPO_FILES = re.compile(r"^(Makefile|[\w-]+\.(md|cfg|toml))$")


def code_blocks(path: str, languages: tuple[str, ...]) -> list[str]:
    """The fenced code blocks of a markdown file whose language is one of `languages`."""
    with open(path) as f:
        text = f.read()
    pattern = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [m.group(2) for m in pattern.finditer(text) if m.group(1) in languages]


def shell_commands(block: str) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        line = line.rstrip()
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line.lstrip() if current else line
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def repo_paths(command: str) -> list[str]:
    """Repository paths named by a command (`--flag=path`, `--config=file.py:arg`, `-m mod`)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote spanning lines: split on whitespace
        words = command.split()
    paths = []
    for i, word in enumerate(words):
        for part in re.split(r"[=\s'\"]", word):
            if i > 0 and words[i - 1] == "-m" and re.fullmatch(r"scion_jax(\.\w+)+", part):
                paths.append(part.replace(".", "/") + ".py")
                continue
            part = part.split(":")[0].rstrip(";&|")
            if part.startswith(REPO_DIRS) or REPO_FILES.match(part):
                paths.append(part)
    return paths


def exists(path: str) -> bool:
    full = os.path.join(ROOT, path)
    if any(c in path for c in "*?["):
        return bool(glob.glob(full))
    if "{" in path:  # a brace list: experiments/configs/{a,b}.py
        head, rest = path.split("{", 1)
        names, tail = rest.split("}", 1)
        return all(exists(head + n + tail) for n in names.split(","))
    return os.path.exists(full)


def test_readme_python_snippet_runs():
    blocks = code_blocks(os.path.join(ROOT, "README.md"), ("python",))
    snippets = [b for b in blocks if "import jax, jax.numpy as jnp, optax, scion_jax" in b]
    assert len(snippets) == 1, "README.md must have one Scion-in-your-project python snippet"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippets[0], "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    # The last line prints the output norm after one step: a finite positive number.
    value = float(out.getvalue().strip().splitlines()[-1])
    assert 0.0 < value < 10.0


def test_porting_python_snippet_runs():
    """PORTING.md's Equinox and Haiku example runs; it prints the head's output norm at init."""
    blocks = code_blocks(os.path.join(ROOT, "PORTING.md"), ("python",))
    assert len(blocks) == 1 and "equinox as eqx, haiku as hk" in blocks[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "PORTING.md", "exec"), {"__name__": "porting"})  # noqa: S102
    assert float(out.getvalue().strip().splitlines()[-1]) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("doc", DOCS)
def test_shell_commands_name_existing_files(doc):
    blocks = code_blocks(os.path.join(ROOT, doc), ("bash", "sh", ""))
    commands = [c for b in blocks for c in shell_commands(b)]
    named = [p for c in commands for p in repo_paths(c)]
    assert named, f"{doc}: no shell command names a repository file (extraction broke?)"
    missing = sorted({p for p in named if not exists(p)})
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_inline_paths_in_readme_exist():
    """Backticked repo paths in README prose (configs, notebooks) exist, brace lists included."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    named = [p for span in re.findall(r"`([^`\n]+)`", text) for p in repo_paths(span)]
    assert any(p.startswith("experiments/configs/") for p in named)
    assert not sorted({p for p in named if not exists(p)})


def test_path_extraction():
    cmd = (
        "python experiments/run.py --config=experiments/configs/quickstart.py:/data "
        "--workdir=workdirs/x && python -m scion_jax.data.prepare --input='data/*.jsonl'"
    )
    assert repo_paths(cmd) == [
        "experiments/run.py",
        "experiments/configs/quickstart.py",
        "scion_jax/data/prepare.py",
    ]
    assert shell_commands("a \\\n  b  # c\n# only a comment\n\nmake test\n") == [
        "a b  # c",
        "make test",
    ]
    assert not exists("experiments/configs/no_such_config.py")
    assert exists("experiments/configs/{quickstart,proxy_69m}.py")
    assert not exists("experiments/configs/{quickstart,nope}.py")
