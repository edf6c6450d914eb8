"""The documentation is executable: every ```python block of docs/**/*.md (and README.md) runs.

Rules, for anyone writing a page:

* each ```python block runs as its own script, in a fresh temporary directory, with
  ``ACTORFLOW_STRICT=1`` and the repository root on ``PYTHONPATH``; it must exit with 0;
* if the block is immediately followed (blank lines aside) by an ```output block, the script's
  stdout must equal it, after stripping trailing whitespace from each line and at the end;
* a block whose info string is ``python no-run`` is shown, not run (for fragments only);
* a block that mentions ``ACTORFLOW_REDIS_URL`` gets that variable, pointing at a Redis server
  started for the test run; it is skipped, with the reason, when ``redis-server`` is not
  installed.

Failures are named by page and block number (``docs/jobs.md:block3``) and give the line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TIMEOUT = 60
REDIS_VARIABLE = "ACTORFLOW_REDIS_URL"
NO_REDIS = (
    f"the block uses {REDIS_VARIABLE} and redis-server is not on PATH "
    "(./scripts/test installs it where it can)"
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    info: str  # the info string, e.g. "python", "python no-run", "output"
    code: str
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""

    @property
    def flags(self) -> set[str]:
        return set(self.info.split()[1:])


@dataclass(frozen=True)
class Example:
    """A python block to run, with the output it must print (None: not checked)."""

    page: str  # path relative to the repository root
    index: int  # position among the page's python blocks, from 0
    code: str
    line: int
    expected: str | None
    run: bool

    @property
    def name(self) -> str:
        return f"{self.page}:block{self.index}"


def parse_blocks(text: str) -> list[Block]:
    """Fenced code blocks (``` or ~~~, optionally indented) in page order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(info, "\n".join(body) + "\n", i + 1, j + 1))
        i = j + 1
    return blocks


def examples_of(page: str, text: str) -> list[Example]:
    """The python blocks of a page, each paired with the output block right after it."""
    blocks = parse_blocks(text)
    lines = text.splitlines()
    found: list[Example] = []
    for position, block in enumerate(blocks):
        if block.language != "python":
            continue
        expected = None
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        if following is not None and following.language == "output":
            between = lines[block.end : following.line - 1]
            if all(not line.strip() for line in between):
                expected = following.code
        found.append(
            Example(
                page=page,
                index=len(found),
                code=block.code,
                line=block.line,
                expected=expected,
                run="no-run" not in block.flags,
            )
        )
    return found


def normalize(text: str) -> str:
    """Trailing whitespace removed from every line and from the end."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()


def pages() -> list[Path]:
    found = sorted(DOCS.glob("**/*.md")) if DOCS.is_dir() else []
    readme = ROOT / "README.md"
    return ([readme] if readme.exists() else []) + found


def collect() -> list[Example]:
    collected: list[Example] = []
    for path in pages():
        page = path.relative_to(ROOT).as_posix()
        collected.extend(examples_of(page, path.read_text(encoding="utf-8")))
    return collected


EXAMPLES = collect()


# -- the tests -------------------------------------------------------------------------------
def test_docs_exist() -> None:
    assert DOCS.is_dir() and any(DOCS.glob("**/*.md")), "docs/ has no pages"


@pytest.mark.timeout(TIMEOUT + 10)
@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_doc_block(example: Example, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    where = f"{example.page} line {example.line}"
    if not example.run:
        pytest.skip(f"{where}: marked 'python no-run'")
    env = dict(os.environ)
    env["ACTORFLOW_STRICT"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    if REDIS_VARIABLE in example.code:
        if shutil.which("redis-server") is None:
            pytest.skip(f"{where}: {NO_REDIS}")
        env[REDIS_VARIABLE] = request.getfixturevalue("redis_url")
    script = tmp_path / "block.py"
    script.write_text(example.code, encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: the block did not finish within {TIMEOUT} s")
    assert result.returncode == 0, (
        f"{where}: the block exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    if example.expected is not None:
        assert normalize(result.stdout) == normalize(example.expected), (
            f"{where}: stdout differs from the ```output block that follows it"
        )


# -- the parser itself -----------------------------------------------------------------------
PAGE = """\
# Title

```python
print("a")
```

```output
a
```

Text.

```python no-run
fragment(
```

```python
print("b")
```
Text between, so the next block is not its output.
```output
b
```

- a list item:

  ```python
  print("c")
  ```
  ```output
  c
  ```
"""


def test_parser_pairs_blocks_with_the_output_right_after_them() -> None:
    found = examples_of("page.md", PAGE)
    assert [(e.index, e.run, e.expected) for e in found] == [
        (0, True, "a\n"),
        (1, False, None),
        (2, True, None),
        (3, True, "c\n"),
    ]
    assert found[3].code == 'print("c")\n'
    assert [e.line for e in found] == [3, 13, 17, 27]
    assert found[0].name == "page.md:block0"


def test_normalize_ignores_trailing_whitespace_only() -> None:
    assert normalize("a  \nb\t\n\n\n") == normalize("a\nb")
    assert normalize(" a") != normalize("a")
    assert normalize("a\n\nb") != normalize("a\nb")
