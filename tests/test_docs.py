"""The documentation (README.md, docs/*.md, deploy/**/README.md) checked as a reader meets it
(issue 21; the rules are in /work/team/DOCS-CONVENTION.md and docs/testing.md, Documentation):

- every relative link resolves: the file exists, and a `#anchor` names a heading of the target page
  (GitHub's slugs) or an explicit `<a id>` / `<a name>` in it;
- every shell block (```sh, ```bash, ```shell, ```console) either carries `<!-- doc-test: run -->`
  on the line before its fence, and is run here from the repository root and must exit 0, or
  carries `<!-- not runnable here: WHY -->` with a reason; an unmarked block fails;
- README.md is the front door: at most 300 lines and 30 KB, the two commands first, and a map that
  links every page of docs/.

The configuration reference's drift test (docs/configuration.md against config::KNOWN_KEYS) is a
Rust unit test in src/config/reference_tests.rs, run by `cargo test`.
"""
from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"


def doc_files() -> list[Path]:
    """README.md, docs/*.md, and the README of every folder under deploy/."""
    files = [README, *sorted(DOCS.glob("*.md")), *sorted((REPO / "deploy").rglob("README.md"))]
    return [f for f in files if f.is_file()]


def rel(p: Path) -> str:
    return str(p.relative_to(REPO))


# ---- Markdown structure --------------------------------------------------------------------------

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)")


@dataclass
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: str | None  # the HTML comment on the line right before the fence, if any


def split_fences(text: str) -> tuple[list[str], list[tuple[int, str, list[str], str]]]:
    """The lines outside fenced blocks (fenced lines blanked, so line numbers stay), and the blocks
    as (opening line index, info string, body lines, the line before the fence)."""
    lines = text.split("\n")
    outside = list(lines)
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        j = i + 1
        body = []
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and close.strip(fence[0]) == "":
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        before = lines[i - 1].strip() if i > 0 else ""
        blocks.append((i, info.lower(), body, before))
        for k in range(i, min(j + 1, len(lines))):
            outside[k] = ""
        i = j + 1
    return outside, blocks


def strip_inline_code(line: str) -> str:
    """The line with `code spans` blanked, so links and anchors inside them are not read."""
    return re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup and punctuation dropped (letters, digits,
    `-`, `_` and spaces kept), lowercased, spaces to `-`."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = text.lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_ " or cat[0] in ("L", "N") or cat == "Mn":
            out.append(ch)
    return "".join(out).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link can name in `path`: heading slugs (repeats get -1, -2, ...) and ids."""
    outside, _ = split_fences(path.read_text())
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in outside:
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
        for a in re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line):
            found.add(a)
    return found


LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)")


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link, image and reference definition outside code."""
    outside, _ = split_fences(path.read_text())
    found = []
    for n, line in enumerate(outside, 1):
        line = strip_inline_code(line)
        found += [(n, t) for t in LINK.findall(line)]
        found += [(n, t) for t in re.findall(r"!\[[^\]]*\]\(\s*([^)\s]+)", line)]
        m = REF_DEF.match(line)
        if m:
            found.append((n, m.group(1)))
        found += [(n, t) for t in re.findall(r"<a\s+href=\"([^\"]+)\"", line)]
    return found


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I))


def broken_links(path: Path) -> list[str]:
    problems = []
    for n, target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{rel(path)}:{n}: {target}"
        try:
            dest.relative_to(REPO)
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(REPO)}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    return problems


# ---- Shell blocks --------------------------------------------------------------------------------

SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh"}
RUN = re.compile(r"^<!--\s*doc-test:\s*run(|\s*;.*?)\s*-->$")
RUN_OPTIONS = {"files", "exit", "output"}
NOT_RUNNABLE = re.compile(r"^<!--\s*not runnable here:\s*(.*?)\s*-->$")

# Fixture files a runnable block may ask for (`<!-- doc-test: run; files: plugin.json -->`): written
# into the repository root for the block, removed after it.
FIXTURES = {
    "plugin.json": '{"login_cluster": "login_api", "public_paths": ["/login", "/healthz"]}\n',
}


def shell_blocks() -> list[Block]:
    found = []
    for f in doc_files():
        _, blocks = split_fences(f.read_text())
        for i, lang, body, before in blocks:
            if lang in SHELL_LANGS:
                marker = before if before.startswith("<!--") else None
                found.append(Block(f, i + 1, lang, "\n".join(body), marker))
    return found


def block_id(b: Block) -> str:
    return f"{rel(b.file)}:{b.line}"


def commands_of(b: Block) -> str:
    if b.lang != "console":
        return b.body
    return "\n".join(l[2:] for l in b.body.split("\n") if l.startswith("$ "))


def run_options(marker: str) -> dict[str, str]:
    """The options of a `<!-- doc-test: run; files: a.json; exit: 1; output: text -->` marker:
    files (fixture files to write first), exit (the expected status, default 0), output (text that
    must appear in the block's stdout or stderr; it comes last and runs to the end of the marker,
    so it may hold `;`)."""
    m = RUN.match(marker)
    assert m, marker
    rest, found, output = m.group(1).partition("output:")
    options = {"output": output.strip()} if found else {}
    for part in filter(None, (p.strip() for p in rest.split(";"))):
        key, _, value = part.partition(":")
        options[key.strip()] = value.strip()
    return options


def runnable_blocks() -> list[Block]:
    return [b for b in shell_blocks() if b.marker and RUN.match(b.marker)]


def test_the_docs_are_there():
    """The pages of the docs map exist, and the checks below see blocks of each kind."""
    names = {p.name for p in DOCS.glob("*.md")}
    for page in ("deploy-envoy.md", "deploy-istio.md", "configuration.md", "sessions.md", "operations.md",
                 "migration.md", "security.md", "performance.md", "architecture.md", "testing.md",
                 "troubleshooting.md", "workers-and-replicas.md"):
        assert page in names, f"docs/{page} is missing"
    blocks = shell_blocks()
    assert len(runnable_blocks()) >= 3, "expected runnable shell blocks in the docs"
    assert len([b for b in blocks if b.marker and NOT_RUNNABLE.match(b.marker)]) >= 5


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_every_relative_link_resolves(path: Path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_shell_block_is_run_or_says_why_not():
    problems = []
    for b in shell_blocks():
        if b.marker is None:
            problems.append(f"{block_id(b)}: ```{b.lang} block without a marker on the line before it "
                            "(<!-- doc-test: run --> or <!-- not runnable here: WHY -->)")
            continue
        run, no = RUN.match(b.marker), NOT_RUNNABLE.match(b.marker)
        if no and len(no.group(1)) < 8:
            problems.append(f"{block_id(b)}: 'not runnable here' must say why: {b.marker}")
        elif run:
            options = run_options(b.marker)
            if set(options) - RUN_OPTIONS:
                problems.append(f"{block_id(b)}: unknown option {sorted(set(options) - RUN_OPTIONS)} in {b.marker}")
            if not re.fullmatch(r"\d+", options.get("exit", "0")):
                problems.append(f"{block_id(b)}: exit must be a number: {b.marker}")
            for name in options.get("files", "").replace(",", " ").split():
                if name not in FIXTURES:
                    problems.append(f"{block_id(b)}: unknown fixture file {name} (known: {sorted(FIXTURES)})")
            if not commands_of(b).strip():
                problems.append(f"{block_id(b)}: a runnable block with no command")
        elif not no:
            problems.append(f"{block_id(b)}: unknown marker {b.marker}")
    assert not problems, "\n".join(problems)


def test_the_marker_parser_catches_unmarked_and_unexplained_blocks(tmp_path: Path):
    """The checks above can fail: an unmarked block, a reason-less marker and a doc-test marker are
    each read as such."""
    text = "x\n```sh\nls\n```\n<!-- not runnable here: -->\n```bash\nls\n```\n<!-- doc-test: run; files: plugin.json -->\n```console\n$ echo hi\nhi\n```\n"
    _, blocks = split_fences(text)
    assert [(i, lang, before) for i, lang, _, before in blocks] == [
        (1, "sh", "x"), (5, "bash", "<!-- not runnable here: -->"),
        (9, "console", "<!-- doc-test: run; files: plugin.json -->")]
    assert NOT_RUNNABLE.match(blocks[1][3]).group(1) == ""
    assert run_options(blocks[2][3]) == {"files": "plugin.json"}
    assert run_options("<!-- doc-test: run; exit: 1; output: did you mean `x` -->") == {
        "exit": "1", "output": "did you mean `x`"}
    assert run_options("<!-- doc-test: run -->") == {}
    assert run_options("<!-- doc-test: run; output: a; b -->") == {"output": "a; b"}
    assert RUN.match("<!-- doc-test: running -->") is None
    assert commands_of(Block(tmp_path, 10, "console", "\n".join(blocks[2][2]), None)) == "echo hi"


def test_github_slugs_and_a_broken_anchor_is_reported(tmp_path: Path, monkeypatch):
    assert github_slug("Upstream session (`login_refresh_path`)") == "upstream-session-login_refresh_path"
    assert github_slug("`allow_on_headers_stop_iteration`") == "allow_on_headers_stop_iteration"
    assert github_slug("`.wasm` size") == "wasm-size"
    assert github_slug("Hardening: no panic, faults, load") == "hardening-no-panic-faults-load"
    assert github_slug("WasmPlugin or EnvoyFilter") == "wasmplugin-or-envoyfilter"
    monkeypatch.setattr(sys_modules_self(), "REPO", tmp_path)
    page = tmp_path / "a.md"
    page.write_text("# A\n## Same\n## Same\n[ok](#same-1) [ok](b.md) [bad](#nope) [bad](c.md) `[no](#code)`\n"
                    "```md\n[no](#fenced)\n```\n")
    (tmp_path / "b.md").write_text("# B\n")
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "#nope" in problems[0] and "c.md" in problems[1]


def sys_modules_self():
    import sys
    return sys.modules[__name__]


@pytest.mark.parametrize("block", runnable_blocks(), ids=block_id)
def test_runnable_shell_block(block: Block):
    """Runs the block as a user would, from the repository root, after scripts/test.sh's builds
    (the release .wasm, Envoy in .venv). Fixture files it names are written for it and removed."""
    options = run_options(block.marker or "")
    names = options.get("files", "").replace(",", " ").split()
    made = []
    try:
        for name in names:
            dest = REPO / name
            assert not dest.exists(), f"{dest} exists already: the block would use it, not the fixture"
            dest.write_text(FIXTURES[name])
            made.append(dest)
        env = dict(os.environ)
        env["PATH"] = f"{REPO / '.venv' / 'bin'}:{REPO / 'target' / 'release'}:{env.get('PATH', '')}"
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands_of(block)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        for dest in made:
            dest.unlink(missing_ok=True)
    said = f"--- block\n{block.body}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    want = int(options.get("exit", "0"))
    assert proc.returncode == want, f"{block_id(block)} exited {proc.returncode}, not {want}\n{said}"
    if "output" in options:
        assert options["output"] in proc.stdout + proc.stderr, f"{block_id(block)}: no {options['output']!r}\n{said}"


# ---- The front door ------------------------------------------------------------------------------

def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.split("\n")) <= 301 and text.count("\n") <= 300, f"README.md has {text.count(chr(10))} lines"
    assert len(text.encode()) <= 30_000, f"README.md is {len(text.encode())} bytes"
    # The two commands, first thing after the title, exactly as .ci/run and the demo expect them.
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert first_block and text.index(first_block.group(0)) < 200
    lines = first_block.group(1).strip().split("\n")
    assert lines[0].startswith("scripts/demo.sh ") and lines[1].startswith("scripts/test.sh ")
    assert "exec scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    linked = {Path(t.partition("#")[0]).name for _, t in links(README) if t.startswith("docs/")}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"
    assert len(pages) >= 6
    assert "Apache-2.0" in text and 'license = "Apache-2.0"' in (REPO / "Cargo.toml").read_text()
    sections = readme_sections()
    for wanted in ("demo", "documentation", "supported envoy and istio versions", "license"):
        assert wanted in sections, f"README.md has no '## {wanted}' section: {sections}"


# ---- What the docs name exists, and what names the docs exists -----------------------------------

# Backticked repository paths in the docs: `src/core/session.rs`, `deploy/istio/*.yaml`, `envoy.yaml`.
REPO_PATH = re.compile(r"`((?:src|tests|deploy|scripts|demo|bench|benches|fuzz|examples|docs|\.ci)/[^`\s]*"
                       r"|envoy\.yaml|docker-compose\.yml|Cargo\.toml)`")
# Made by runs, not in git.
GENERATED = ("tests/out/", "bench/out/", "target/")


def named_paths(path: Path) -> list[tuple[int, str]]:
    outside, _ = split_fences(path.read_text())
    found = []
    for n, line in enumerate(outside, 1):
        for p in REPO_PATH.findall(line):
            p = p.split("::")[0].rstrip(".,:;)")
            if not p.startswith(GENERATED):
                found.append((n, p))
    return found


def path_exists(p: str) -> bool:
    if any(ch in p for ch in "*?["):
        return any(REPO.glob(p))
    # `examples/valid_path`: a cargo example by its name.
    return (REPO / p).exists() or (REPO / f"{p}.rs").exists()


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_every_repository_path_the_docs_name_exists(path: Path):
    """A file the docs name in backticks (`tests/e2e/test_rollout.py`, `deploy/istio/*.yaml`) is
    there: a rename or a removal updates the docs too."""
    missing = [f"{rel(path)}:{n}: `{p}`" for n, p in named_paths(path) if not path_exists(p)]
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)


def test_every_page_has_one_title_first():
    for page in sorted(DOCS.glob("*.md")):
        outside, _ = split_fences(page.read_text())
        titles = [l for l in outside if re.match(r"^# \S", l)]
        assert outside[0].startswith("# ") and len(titles) == 1, f"{rel(page)}: want one '# ' title, on line 1"


def module_map_rows() -> list[str]:
    text = (DOCS / "architecture.md").read_text()
    start = text.index("## Module map")
    rows = re.findall(r"^\| `(src/[^`]+)` \|", text[start:], flags=re.M)
    return rows


def files_when_the_map_was_last_edited() -> set[str] | None:
    """The files of src/ at the last commit that changed docs/architecture.md (None outside git)."""
    def git(*args):
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return r.stdout if r.returncode == 0 else None
    commit = (git("log", "-1", "--format=%H", "--", "docs/architecture.md") or "").strip()
    listed = git("ls-tree", "-r", "--name-only", commit, "--", "src") if commit else None
    return None if listed is None else {l for l in listed.split("\n") if l.endswith(".rs")}


def test_the_module_map_lists_every_source_file():
    """docs/architecture.md's module map has one row per file of src/ and none for a file that is
    gone. A file that landed after the page's last edit may wait for the next edit of the page
    (teammates add modules while the page is being written); whoever edits the page brings the
    map up to date."""
    rows = module_map_rows()
    files = {str(p.relative_to(REPO)) for p in (REPO / "src").rglob("*.rs")}
    assert len(rows) == len(set(rows)), f"a file has two rows: {rows}"
    assert not set(rows) - files, (
        f"docs/architecture.md, Module map: rows for files that do not exist {sorted(set(rows) - files)}")
    known = files_when_the_map_was_last_edited()
    due = files if known is None else files & known
    assert not due - set(rows), f"docs/architecture.md, Module map: add a row for {sorted(due - set(rows))}"
    new = sorted(files - set(rows) - due)
    if new:
        print(f"docs/architecture.md, Module map: not yet listed (landed after its last edit): {new}")


# Where the code, the configs and the tests point readers to the docs.
POINTERS = ["src/**/*.rs", "tests/**/*.py", "tests/**/*.rs", "scripts/*.sh", "deploy/**/*.yaml",
            "deploy/**/Dockerfile", "envoy.yaml", "docker-compose.yml", "Cargo.toml", "bench/*", ".ci/*"]


def pointer_files() -> list[Path]:
    files = set()
    for pattern in POINTERS:
        files |= {p for p in REPO.glob(pattern) if p.is_file() and "node_modules" not in p.parts
                  and "out" not in p.relative_to(REPO).parts}
    files.discard(Path(__file__).resolve())
    return sorted(files)


def readme_sections() -> list[str]:
    outside, _ = split_fences(README.read_text())
    return [m.group(1).strip().lower() for l in outside if (m := re.match(r"^#{2,6}\s+(.*)", l))]


def pointer_problems(files: list[Path], sections: list[str], repo: Path) -> list[str]:
    problems = []
    for f in files:
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        name_of_f = str(f.relative_to(repo))
        for m in re.finditer(r"\bdocs/([\w-]+\.md)", text):
            if not (repo / "docs" / m.group(1)).is_file():
                problems.append(f"{name_of_f}: docs/{m.group(1)} does not exist")
        for m in re.finditer(r"([\w./-]*/)?README(\.md)?([^\n]{0,40})", text):
            folder, after = m.group(1), m.group(3)
            if folder:  # deploy/ecds/README.md: a file
                if not (repo / f"{folder}README.md").is_file():
                    problems.append(f"{name_of_f}: {folder}README.md does not exist")
                continue
            if re.match(r"^'s (test command|demo|two commands)", after):
                continue
            section = re.match(r"""^(?:,\s*|\s+)["“]?([A-Z][\w`' -]*)""", after)
            name = section.group(1).strip().lower() if section else ""
            if not name or not any(s.startswith(name) or name.startswith(s) for s in sections):
                problems.append(f"{name_of_f}: README{m.group(2) or ''}{after.rstrip()} : not a section of README.md "
                                "(point to the docs/ page instead)")
    return problems


def test_code_and_configs_point_to_pages_and_sections_that_exist():
    """`docs/sessions.md` in a comment or docstring is a page that exists; `README, Demo` names a
    section the README still has (the README is the front door: the rest moved to docs/)."""
    problems = pointer_problems(pointer_files(), readme_sections(), REPO)
    assert not problems, "\n".join(problems)


def test_stale_pointers_are_caught(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sessions.md").write_text("# Sessions\n")
    (tmp_path / "deploy" / "ecds").mkdir(parents=True)
    (tmp_path / "deploy" / "ecds" / "README.md").write_text("# ECDS\n")
    good = tmp_path / "good.py"
    good.write_text('"""(docs/sessions.md, Upstream session); README, Demo; deploy/ecds/README.md;\n'
                    "the README's test command\n\"\"\"\n")
    bad = tmp_path / "bad.rs"
    bad.write_text('// see README "Operations"\n// (README, Choices)\n// docs/gone.md\n// deploy/x/README.md\n')
    assert pointer_problems([good], ["demo"], tmp_path) == []
    problems = pointer_problems([bad], ["demo"], tmp_path)
    assert len(problems) == 4, problems
    for needle in ("gone.md", '"Operations"', "Choices", "deploy/x/README.md"):
        assert any(needle in p for p in problems), (needle, problems)


def test_path_and_module_map_checks_can_fail(tmp_path: Path):
    page = tmp_path / "p.md"
    page.write_text("`src/core/nope.rs`, `tests/out/x.png`, `deploy/istio/*.yaml`, `examples/valid_path`\n"
                    "```\n`src/in_a_fence.rs`\n```\n")
    named = [p for _, p in named_paths(page)]
    assert named == ["src/core/nope.rs", "deploy/istio/*.yaml", "examples/valid_path"]
    assert [path_exists(p) for p in named] == [False, True, True]
    assert "src/lib.rs" in module_map_rows() and "src/core/mod.rs" in module_map_rows()


def troubleshooting_log_lines() -> list[str]:
    """The filter's log lines the troubleshooting table explains: the code spans of each row's first
    cell, except rows of Envoy's own lines (marked `(Envoy)`)."""
    text = (DOCS / "troubleshooting.md").read_text()
    start = text.index("| log line |")
    found = []
    for row in re.findall(r"^\| (.*?) \| .* \|$", text[start:], flags=re.M)[1:]:
        if "(Envoy)" in row:
            continue
        found += [s for s in re.findall(r"`([^`]+)`", row.replace("\\|", "|")) if len(s) > 12]
    return found


def words_found_in(line: str, source: str, run: int = 3) -> bool:
    """True when some `run` consecutive words of `line` (outside `...`) appear in `source`."""
    for fragment in line.split("..."):
        words = fragment.split()
        for i in range(len(words) - run + 1):
            if " ".join(words[i:i + run]) in source:
                return True
    return False


def test_the_troubleshooting_table_explains_lines_the_filter_prints():
    """Each filter log line of docs/troubleshooting.md still exists in src/ (three words of it in a
    row, values aside): a reworded or removed message updates its row."""
    source = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.rs"))
    lines = troubleshooting_log_lines()
    assert len(lines) >= 10, lines
    stale = [l for l in lines if not words_found_in(l, source)]
    assert not stale, f"docs/troubleshooting.md explains log lines no longer in src/: {stale}"
    assert not words_found_in("etls-auth: the filter sings a song", source)


CODE_REF = re.compile(r"`((?:[\w./-]+/)?[\w-]+\.(?:rs|py))::(\w+)(\.\.\.)?")


def code_refs(path: Path) -> list[tuple[int, str, str]]:
    """(line, file, name) of every `file.rs::name` / `file.py::name` the page names (outside
    fences; a name cut with `...` is not checked)."""
    outside, _ = split_fences(path.read_text())
    return [(n, m.group(1), m.group(2)) for n, line in enumerate(outside, 1)
            for m in CODE_REF.finditer(line) if not m.group(3)]


def defines(file: str, name: str) -> bool:
    """Some file of the repository whose path ends with `file` defines `name` (fn, def, struct,
    enum, trait, const, static, type, mod, class)."""
    candidates = [p for p in REPO.glob(f"**/{Path(file).name}")
                  if str(p.relative_to(REPO)).endswith(file) and not p.relative_to(REPO).parts[0] in ("target", ".venv")
                  and "node_modules" not in p.parts]
    pattern = re.compile(rf"\b(fn|def|struct|enum|trait|const|static|type|mod|class)\s+{re.escape(name)}\b")
    return any(pattern.search(p.read_text()) for p in candidates)


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_every_test_and_function_the_docs_name_exists(path: Path):
    """`session.rs::protected_decision_table` or `test_login.py::test_login_ok_...`: the security
    table, the walk and the test lists name tests and functions that exist (a renamed or moved test
    updates the docs)."""
    missing = [f"{rel(path)}:{n}: `{f}::{name}`" for n, f, name in code_refs(path) if not defines(f, name)]
    assert not missing, "the docs name tests or functions that do not exist:\n" + "\n".join(missing)


def test_code_refs_can_fail(tmp_path: Path):
    page = tmp_path / "p.md"
    page.write_text("`tokens.rs::verify` `session.rs::no_such_fn` `test_login.py::test_x...`\n")
    refs = code_refs(page)
    assert [(f, n) for _, f, n in refs] == [("tokens.rs", "verify"), ("session.rs", "no_such_fn")]
    assert defines("tokens.rs", "verify") and not defines("session.rs", "no_such_fn")


def import_graph() -> dict[str, set[str]]:
    """Which file of src/ uses which, outside tests: `use crate::core::x`, `crate::config::...`,
    `super::x` (names as in docs/architecture.md: `config`, `core/session`, `filter/apply`)."""
    graph = {}
    for f in sorted((REPO / "src").rglob("*.rs")):
        name = re.sub(r"/mod$", "", str(f.relative_to(REPO / "src"))[:-3])
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", f.read_text())[0]
        text = re.sub(r"#\[cfg\(test\)\]\s*(pub(\(crate\))? )?mod \w+;", "", text)
        deps = {m.replace("::", "/") for m in re.findall(r"crate::((?:core::)?\w+)", text)}
        for group in re.findall(r"use crate::core::\{([^}]*)\}", text):
            deps |= {"core/" + p.strip().split("::")[0] for p in group.split(",") if p.strip() not in ("", "self")}
        base = name.rsplit("/", 1)[0] if "/" in name else ""
        deps |= {f"{base}/{m}" if base else m for m in re.findall(r"\bsuper::(\w+)", text)}
        graph[name] = deps
    return {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of files that reach each other (strongly connected, more than one file)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_src_has_no_import_cycle_as_the_architecture_page_says():
    assert "no import cycle" in (DOCS / "architecture.md").read_text()
    graph = import_graph()
    assert {"config", "core", "core/session", "filter/apply"} <= set(graph)
    assert "config" in graph["core/session"]
    assert cycles(graph) == [], f"src/ has import cycles: {cycles(graph)}"
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
