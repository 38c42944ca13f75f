"""The GitHub Actions workflow .github/workflows/history.yml, checked without running it.

Form: GitHub's workflow schema (SchemaStore's, as vendored by check-jsonschema; offline), every job has
a timeout, and what a schema cannot see: `needs` names existing jobs without a cycle, `needs.X.outputs.Y`,
`steps.X` and `inputs.X` name what exists, actions are pinned to a major version, expressions are closed.
Meaning, against bnspec itself: every `bnspec` command parses with bnspec's own parser; the plan job's
script, run here in bash, emits `bnspec history --list --json` (all jobs on the weekly run, the ends when
dispatched with `ends`) as the matrix; each release job measures its job and uploads the file
`bnspec history --release` writes, under a name the merge job downloads into the directory it was
written to; the merge job runs even when a release failed. Meta-tests: broken copies are caught.

Needs the package check-jsonschema (it brings jsonschema and ruamel.yaml); without it these tests fail.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bnspec import paths
from bnspec import releases
from bnspec.harness import history
from bnspec.cli import _parser
from tests.helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "history.yml"
SCHEMAS = ("vendor/github-workflows.json", "custom/github-workflows-require-timeout.json")
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)
OPERATORS = set("();<>|&")

# --------------------------------------------------------------------------- the validator


def _tools():
    """(jsonschema, a YAML loader); a missing package fails the test with its name, never skips it."""
    try:
        import check_jsonschema.builtin_schemas  # noqa: F401  (the vendored schemas)
        import jsonschema
        from ruamel.yaml import YAML
    except ImportError as exc:
        missing = str(exc)
    else:
        return jsonschema, YAML(typ="safe", pure=True)  # YAML 1.2: the key `on` stays a string
    pytest.fail(f"tests/unit/test_workflow.py needs the package check-jsonschema (it brings jsonschema and "
                f"ruamel.yaml): pip install check-jsonschema ({missing})", pytrace=False)


@functools.cache
def _validator(name: str):
    from importlib.resources import files

    jsonschema, _ = _tools()
    schema = json.loads((files("check_jsonschema.builtin_schemas") / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load(text: str) -> dict:
    return _tools()[1].load(text)


def _leaves(err):
    if not err.context:
        yield err
    for sub in err.context:
        yield from _leaves(sub)


def _strings(node):
    """Every string value under a YAML node (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _needs(job: dict) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _cross_references(doc: dict) -> list[str]:
    found = []
    jobs = doc["jobs"]
    on = doc.get("on")
    dispatch = on.get("workflow_dispatch") if isinstance(on, dict) else None
    inputs = (dispatch or {}).get("inputs") or {}
    for name, job in jobs.items():
        needs = _needs(job)
        found += [f"jobs.{name}.needs: no job {n!r}" for n in needs if n not in jobs]
        text = "\n".join(_strings(job))
        for job_id, output in re.findall(r"\bneeds\.([\w-]+)\.outputs\.([\w-]+)", text):
            if job_id not in needs:
                found.append(f"jobs.{name}: uses needs.{job_id} but does not need {job_id!r}")
            elif output not in (jobs.get(job_id, {}).get("outputs") or {}):
                found.append(f"jobs.{name}: job {job_id!r} has no output {output!r}")
        step_ids = {s.get("id") for s in job.get("steps", [])}
        found += [f"jobs.{name}: no step with id {s!r}"
                  for s in sorted(set(re.findall(r"\bsteps\.([\w-]+)\.", text))) if s not in step_ids]
        found += [f"jobs.{name}: no workflow_dispatch input {i!r}"
                  for i in sorted(set(re.findall(r"\binputs\.([\w-]+)", text))) if i not in inputs]
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./") and not re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+", uses):
                found.append(f"jobs.{name}: {uses!r} is not pinned to a major version (owner/action@vN)")
    for s in _strings(doc):
        if "${{" in EXPR.sub("", s):
            found.append(f"an expression is not closed with }}}}: {s.strip()[:120]!r}")

    def cycle(name, seen):
        return name in seen or any(cycle(n, seen | {name}) for n in _needs(jobs.get(name, {})))
    found += [f"jobs.{name}: its needs form a cycle" for name in jobs if cycle(name, frozenset())]
    return found


def problems(text: str) -> list[str]:
    """Why a workflow text is not a valid GitHub workflow by the schema and the cross-references; [] if none."""
    try:
        doc = load(text)
    except Exception as exc:  # ruamel.yaml's errors (syntax, duplicate keys) share no public base class
        return [f"not YAML: {exc}"]
    found = []
    for name in SCHEMAS:
        for err in _validator(name).iter_errors(doc):
            leaves = dict.fromkeys(f"{e.json_path}: {e.message[:200]}" for e in _leaves(err))
            found.append(f"{name}: " + " | ".join(leaves))
    return found or _cross_references(doc)  # the cross-references assume the schema's shape


# --------------------------------------------------------------------------- bnspec commands in run: scripts

def expand(text: str, values: dict[str, str]) -> str:
    """`text` with each ${{ expression }} replaced by values[expression]."""
    def one(m):
        expr = m.group(1).strip()
        assert expr in values, f"no value for the expression ${{{{ {expr} }}}} in {text!r}"
        return values[expr]
    return EXPR.sub(one, text)


def alternatives(expr: str, job_id: str) -> list[str]:
    """What an expression in a command line may expand to: its string literals (`c && '--x' || ''`),
    or for matrix.* the job id."""
    literals = re.findall(r"'((?:[^']|'')*)'", expr)
    if literals:
        return [lit.replace("''", "'") for lit in literals]
    assert expr.startswith("matrix."), f"cannot tell what ${{{{ {expr} }}}} expands to in a command line"
    return [job_id]


def commands(script: str) -> list[list[str]]:
    """The arguments of every `bnspec` command of an expanded shell script, e.g. [["report"]]."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words = list(lex)
        for i, word in enumerate(words):
            if word == "bnspec" and (i == 0 or set(words[i - 1]) <= OPERATORS):
                found.append(list(itertools.takewhile(lambda w: not set(w) <= OPERATORS, words[i + 1:])))
    return found


def parse(args: list[str]):
    """bnspec's own parser on a command's arguments (strict: `bnspec` passes extras only to `run`)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return _parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"`bnspec {shlex.join(args)}` does not parse: {err.getvalue().strip()}") from None


def run_steps(job: dict) -> list[dict]:
    return [s for s in job["steps"] if "run" in s]


def step_commands(step: dict, values: dict[str, str]) -> list:
    return [parse(args) for args in commands(expand(step["run"], values))]


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def condition(step_or_job: dict) -> str:
    cond = str(step_or_job.get("if", "")).strip()
    return cond[3:-2].strip() if cond.startswith("${{") and cond.endswith("}}") else cond


# --------------------------------------------------------------------------- the checks of meaning

JOB_ID = releases.catalogue()[0].id


def check_commands(doc: dict) -> set[str]:
    """Every bnspec command parses, for every way its expressions expand; returns the commands' names."""
    names = set()
    for job in doc["jobs"].values():
        for step in run_steps(job):
            exprs = sorted({e.strip() for e in EXPR.findall(step["run"])})
            for combo in itertools.product(*(alternatives(e, JOB_ID) for e in exprs)):
                names |= {args.command for args in step_commands(step, dict(zip(exprs, combo)))}
    return names


def _history_json(args) -> list[dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert history.main(args) == 0
    return json.loads(out.getvalue())


def check_plan(doc: dict, tmp_path: Path) -> dict[str, list[dict]]:
    """The plan job's output is `bnspec history --list --json`: its script run in bash (bnspec as this
    checkout's CLI), on the weekly run (no inputs) and dispatched with ends=true. Returns event -> jobs."""
    plan = doc["jobs"]["plan"]
    m = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", plan["outputs"]["jobs"])
    assert m, "plan's output `jobs` is a step's output"
    step = next(s for s in plan["steps"] if s.get("id") == m[1])
    exprs = {e.strip() for e in EXPR.findall(step["run"])}
    assert exprs <= {"inputs.ends && '--ends' || ''"}, f"plan's script expands only the input `ends`: {exprs}"
    events = {"schedule": "", "workflow_dispatch ends=true": "--ends"}
    found = {}
    for event, flag in events.items():
        script = expand(step["run"], {"inputs.ends && '--ends' || ''": flag})
        [args] = step_commands(step, {"inputs.ends && '--ends' || ''": flag})
        assert (args.command, args.list, args.json) == ("history", True, True), "plan runs history --list --json"
        out = tmp_path / f"{len(found)}.out"
        env = {**os.environ, "GITHUB_OUTPUT": str(out), "BNSPEC_HOME": str(tmp_path / "home"),
               "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               f'bnspec() {{ "{sys.executable}" -m bnspec "$@"; }}\n{script}'],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"plan's script failed ({event}): {proc.stderr[-500:]}"
        outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
        jobs = json.loads(outputs[m[2]])
        assert jobs == _history_json(args), f"plan's output is not what `bnspec history --list --json` prints ({event})"
        assert isinstance(jobs, list) and jobs and all(isinstance(j, dict) and "job" in j for j in jobs)
        found[event] = jobs
    assert [j["job"] for j in found["schedule"]] == [j.id for j in releases.catalogue()], "the weekly run sweeps all"
    assert ([j["job"] for j in found["workflow_dispatch ends=true"]]
            == [j.id for j in releases.ends(releases.catalogue())]), "ends=true sweeps the oldest and newest"
    return found


def _measure(release: dict, item: dict):
    values = {f"matrix.{k}": str(v) for k, v in item.items()}
    parsed = [(s, a) for s in run_steps(release) for a in step_commands(s, values)]
    assert len(parsed) == 1, "the release job runs one bnspec command"
    return values, parsed[0][1]


def check_release(doc: dict, matrix: list[dict]) -> None:
    """For each matrix item, the release job measures exactly that job and uploads the file it writes."""
    jobs = doc["jobs"]
    release, merge = jobs["release"], jobs["merge"]
    assert "plan" in _needs(release)
    assert release["strategy"]["matrix"] == {"include": "${{ fromJSON(needs.plan.outputs.jobs) }}"}, \
        "the matrix is the plan job's output, as it is"
    assert release["strategy"]["fail-fast"] is False, "one failed release must not cancel the others"
    keys = set(re.findall(r"\bmatrix\.([\w-]+)", "\n".join(_strings(release))))
    assert keys <= set(matrix[0]), f"the release job uses matrix keys the list lacks: {keys - set(matrix[0])}"
    [download] = uses(merge, "actions/download-artifact")
    for item in matrix:
        values, args = _measure(release, item)
        assert args.command == "history" and not args.list
        names = [n for part in args.release for n in part.split(",") if n]  # as history.main reads them
        job = history.select(names, "tensorflow", args.ends, args.family)
        assert [j.id for j in job] == [item["job"]], f"{item['job']}: the release job measures {job}"
        written = history.out_path(args.out, job[0])
        uploads = [s for s in uses(release, "actions/upload-artifact")
                   if Path(expand(s["with"]["path"], values)) == written]
        assert len(uploads) == 1, f"{item['job']}: no upload of {written}, the file `bnspec history` writes"
        up = uploads[0]
        assert up["with"].get("if-no-files-found") == "error"
        assert condition(up) in ("always()", "!cancelled()"), "a failed measurement's document is uploaded too"
        name = expand(up["with"]["name"], values)
        assert fnmatch.fnmatchcase(name, download["with"]["pattern"]), f"merge does not download {name}"
        others = [expand(s["with"]["name"], values) for s in uses(release, "actions/upload-artifact") if s is not up]
        assert not [o for o in others if fnmatch.fnmatchcase(o, download["with"]["pattern"])], \
            "merge downloads only the results"
        assert Path(download["with"]["path"]) == args.out, "merge puts the results where the history writes them"
    assert download["with"].get("merge-multiple") is True, "one directory of <job>.json, not one folder per artifact"


def check_cache(doc: dict, monkeypatch, tmp_path: Path) -> None:
    """The release job caches bnspec's cache directory (as bnspec finds it on a runner), keyed by the job and
    by history.py + pyproject.toml; the virtualenvs only under the exact Python (a venv links to it)."""
    release = doc["jobs"]["release"]
    for var in ("BNSPEC_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    def tilde(p: Path) -> str:
        return "~/" + p.relative_to(tmp_path).as_posix()
    caches = uses(release, "actions/cache")
    assert caches, "the release job caches bnspec's environments"
    paths_cached = {p.strip() for s in caches for p in s["with"]["path"].splitlines() if p.strip()}
    assert tilde(paths.home()) in paths_cached, f"bnspec's cache {tilde(paths.home())} is not cached"
    for s in caches:
        key = s["with"]["key"]
        assert "${{ matrix.job }}" in key
        assert re.search(r"hashFiles\('bnspec/releases\.py', 'bnspec/harness/history\.py', 'pyproject\.toml'\)", key)
    setup = {s.get("id") for s in uses(release, "actions/setup-python")}
    venv_dir = tilde(history.root() / "venvs")

    def covers(step) -> bool:  # a cache path at or above the venvs, not excluded by a !path at or above them
        lines = [p.strip() for p in step["with"]["path"].splitlines() if p.strip()]
        above = [p.lstrip("!").rstrip("/") for p in lines]
        hit = [venv_dir == a or venv_dir.startswith(a + "/") for a in above]
        return (any(h for h, p in zip(hit, lines) if not p.startswith("!"))
                and not any(h for h, p in zip(hit, lines) if p.startswith("!")))
    venvs = [s for s in caches if covers(s)]
    assert venvs, f"the virtualenvs ({venv_dir}) are not cached"
    for s in venvs:
        assert "restore-keys" not in s["with"], "history.venv() reuses a complete venv as it is: no near matches"
        assert any(f"steps.{i}.outputs.python-version" in s["with"]["key"] for i in setup if i), \
            "a venv links to its exact Python: the key holds setup-python's python-version output"
    logs = [s for s in uses(release, "actions/upload-artifact") if s["with"]["path"].endswith(".log")]
    for s in logs:  # bnspec.harness.history.run_job's log
        assert expand(s["with"]["path"], {"matrix.job": JOB_ID}) == tilde(history.root() / "logs" / f"{JOB_ID}.log")


def check_merge(doc: dict) -> None:
    merge = doc["jobs"]["merge"]
    assert "release" in _needs(merge)
    assert condition(merge) in ("always()", "!cancelled()"), "merge runs even when a release failed"
    cmds = [(i, a) for i, s in enumerate(merge["steps"]) if "run" in s for a in step_commands(s, {})]
    assert [a.command for _, a in cmds] == ["report"], "merge runs `bnspec report`"
    [download] = uses(merge, "actions/download-artifact")
    assert merge["steps"].index(download) < cmds[0][0], "the report is made after the download"
    # the report's timeline reads <report --out>/history/*.json (bnspec.report.timeline.load)
    assert Path(download["with"]["path"]) == Path(cmds[0][1].out) / "history", "the report reads what merge downloads"
    ups = [s for s in uses(merge, "actions/upload-artifact") if s["with"]["name"] == "report"]
    assert len(ups) == 1, "merge uploads one artifact named `report`"
    assert Path(ups[0]["with"]["path"]) == Path(cmds[0][1].out), "the artifact `report` is what `bnspec report` writes"


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def text() -> str:
    return WORKFLOW.read_text()


@pytest.fixture(scope="module")
def doc(text) -> dict:
    return load(text)


def test_the_workflow_is_valid(text):
    assert problems(text) == []


def test_triggers_and_permissions(doc):
    assert set(doc["on"]) == {"workflow_dispatch", "schedule"}
    assert doc["on"]["workflow_dispatch"]["inputs"]["ends"]["type"] == "boolean"
    assert doc["permissions"] == {"contents": "read"}


def test_every_bnspec_command_parses_with_bnspecs_parser(doc):
    assert check_commands(doc) == {"history", "report"}


def test_the_plan_job_emits_the_history_list_as_the_matrix(doc, tmp_path):
    check_plan(doc, tmp_path)


def test_each_release_job_uploads_the_file_bnspec_history_writes(doc):
    check_release(doc, [j.as_dict() for j in releases.catalogue()])


def test_the_cache_is_bnspecs_keyed_by_job_and_code(doc, monkeypatch, tmp_path):
    check_cache(doc, monkeypatch, tmp_path)


def test_merge_collects_every_release_even_after_a_failure(doc):
    check_merge(doc)


# --------------------------------------------------------------------------- meta-tests: broken copies are caught

def mutate(text: str, old: str, new: str) -> str:
    """`text` with the first `old` outside a comment line replaced by `new`."""
    lines = text.splitlines(keepends=True)
    i = next((i for i, line in enumerate(lines) if old in line and not line.lstrip().startswith("#")), None)
    assert i is not None, f"{old!r} is not in the workflow any more: update this meta-test"
    lines[i] = lines[i].replace(old, new, 1)
    return "".join(lines)


@pytest.mark.parametrize("old, new, says", [
    ("runs-on: ubuntu-latest", "runs-onn: ubuntu-latest", "'runs-onn' was unexpected"),
    ("needs: release", "needs: relaese", "no job 'relaese'"),
    ("needs: plan", "needs: [plan, merge]", "cycle"),
    ("fromJSON(needs.plan.outputs.jobs)", "fromJSON(needs.plan.outputs.job)", "no output 'job'"),
    ("steps.list.outputs.jobs", "steps.lsit.outputs.jobs", "no step with id 'lsit'"),
    ("inputs.ends &&", "inputs.end &&", "no workflow_dispatch input 'end'"),
    ("actions/checkout@v4", "actions/checkout@main", "not pinned"),
    ("timeout-minutes: 60", "", "'timeout-minutes' is a required property"),
    ("reports/history/${{ matrix.job }}.json", "reports/history/${{ matrix.job }.json", "not closed"),
    ("timeout-minutes: 60", "timeout-minutes: sixty", "'sixty' is not of type 'number'"),
    ("contents: read", "contents: readonly", "'readonly' is not one of ['read', 'write', 'none']"),
    ("  schedule:", "  scheduled:", "'scheduled' was unexpected"),
])
def test_the_validator_catches_a_broken_workflow(text, old, new, says):
    found = problems(mutate(text, old, new))
    assert any(says in p for p in found), found


@pytest.mark.parametrize("old, new, check, says", [
    ("--release ${{ matrix.job }}", "--relase ${{ matrix.job }}", "commands", "unrecognized arguments: --relase"),
    ("--list --json", "--list --jsn", "commands", "unrecognized arguments: --jsn"),
    ("bnspec report", "bnspec reprot", "commands", "invalid choice: 'reprot'"),
    ("--release ${{ matrix.job }}", "--release ${{ matrix.job }} --out elsewhere", "release", "no upload of elsewhere"),
    ("path: reports/history/${{ matrix.job }}.json", "path: reports/${{ matrix.job }}.json", "release", "no upload"),
    ("pattern: history-*", "pattern: '*'", "release", "merge downloads only the results"),
    ("merge-multiple: true", "merge-multiple: false", "release", "one directory"),
    ("fail-fast: false", "fail-fast: true", "release", "must not cancel"),
    ("if: always()", "if: success()", "merge", "even when a release failed"),
    ("          bnspec report", "          bnspec report --out elsewhere", "merge", "the report reads what merge"),
    ("          name: report", "          name: reports", "merge", "one artifact named `report`"),
    ("          path: reports/\n", "          path: reports/history\n", "merge", "what `bnspec report` writes"),
    ("          path: ~/.cache/bnspec/history/venvs", "          path: ~/.cache/bnspec/history/overlays", "cache",
     "are not cached"),
    ("            !~/.cache/bnspec/history/venvs", "            ~/.cache/bnspec/history/logs", "cache",
     "no near matches"),
    ("key: bnspec-venv-${{ runner.os }}-py${{ steps.python.outputs.python-version }}-",
     "key: bnspec-venv-${{ runner.os }}-", "cache", "python-version"),
    ("--json ${{ inputs.ends && '--ends' || '' }}", "--json --ends", "plan", "the weekly run sweeps all"),
    ('echo "jobs=$(cat jobs.json)"', 'echo "jobs=[]"', "plan", "not what `bnspec history --list --json` prints"),
])
def test_the_checks_of_meaning_catch_a_broken_workflow(text, tmp_path, monkeypatch, old, new, check, says):
    broken = load(mutate(text, old, new))
    run = {"commands": check_commands, "merge": check_merge, "plan": lambda d: check_plan(d, tmp_path),
           "release": lambda d: check_release(d, [j.as_dict() for j in releases.catalogue()]),
           "cache": lambda d: check_cache(d, monkeypatch, tmp_path)}[check]
    with pytest.raises(AssertionError, match=re.escape(says)):
        run(broken)
