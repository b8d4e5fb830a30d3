"""`rewardlab compare`: every metric of two or more versions of an experiment, side by side.

A *source* is one version of an experiment's results:

- ``workspace``: the files on disk now;
- a git revision (``HEAD``, ``HEAD~1``, a tag, a commit) or a DVC experiment (its name as ``dvc exp show``
  prints it, or its ``refs/exps/…`` ref): the ``metrics.json`` and ``history.csv`` files of that version, read
  through DVC's file system in a DVC project (``results/<name>/`` is a cached DVC out there, so the files come
  from DVC's cache as the revision's ``dvc.lock`` names them) and from git's tree otherwise;
- ``results/<name>`` (or just ``<name>`` when that folder exists): another experiment in the workspace,
  so two configs (``default`` and ``loss-study``, say) compare file by file.

Rows are ``<stage folder>/<metric>`` relative to the experiment's folder; a metric a source lacks is
*missing* (blank in CSV, ``—`` in Markdown), never zero. Differences are against the first source.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

WORKSPACE = "workspace"


class CompareError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class Source:
    """Where one column's files come from: a folder on disk, or a git tree (revision) and its folder."""

    label: str
    folder: str  # relative to the repository root
    revision: str | None = None  # None: the workspace

    def files(self, root: Path, name: str) -> list[str]:
        """Paths (relative to ``folder``) of every file called ``name`` below it."""
        if self.revision is None:
            base = root / self.folder
            return sorted(str(p.relative_to(base)) for p in base.rglob(name)) if base.is_dir() else []
        prefix = self.folder.rstrip("/") + "/"
        fs = _dvc_fs(root, self.revision)
        if fs is not None:
            listing = fs.find("/" + prefix) if fs.isdir("/" + prefix) else []
            listing = [p.lstrip("/") for p in listing]
        else:
            listing = _git(root, "ls-tree", "-r", "--name-only", self.revision, "--", self.folder).splitlines()
        return sorted(p[len(prefix):] for p in listing if p.startswith(prefix) and p.endswith("/" + name))

    def read(self, root: Path, relative: str) -> str | None:
        path = f"{self.folder.rstrip('/')}/{relative}"
        if self.revision is None:
            file = root / path
            return file.read_text() if file.is_file() else None
        fs = _dvc_fs(root, self.revision)
        if fs is not None:
            try:
                return fs.read_text("/" + path)
            except (FileNotFoundError, OSError):
                return None
        proc = subprocess.run(["git", "show", f"{self.revision}:{path}"], cwd=root, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else None


_DVC_FS: dict[tuple[str, str], object] = {}


def _dvc_fs(root: Path, revision: str):
    """DVC's file system at ``revision`` (git files and cached DVC outs alike), or None outside a DVC project."""
    if not (root / ".dvc").is_dir():
        return None
    key = (str(root), revision)
    if key not in _DVC_FS:
        from dvc.fs import DVCFileSystem  # here: importing DVC costs ~1 s, and only revisions need it

        _DVC_FS[key] = DVCFileSystem(repo=str(root), rev=revision)
    return _DVC_FS[key]


def dvc_experiment_refs(root: Path) -> dict[str, str]:
    """DVC experiment name -> its git ref (DVC 3 keeps experiments under refs/exps/)."""
    try:
        refs = _git(root, "for-each-ref", "--format=%(refname)", "refs/exps")
    except CompareError:
        return {}
    return {ref.rsplit("/", 1)[-1]: ref for ref in refs.split() if ref.count("/") >= 4}


def resolve(spec: str, root: Path, experiment: str) -> Source:
    """A source from what the user typed (see the module docstring for the forms)."""
    folder = f"results/{experiment}"
    if spec == WORKSPACE:
        return Source(spec, folder)
    named = spec[len("results/"):] if spec.startswith("results/") else spec
    if (root / "results" / named).is_dir() and "/" not in named:
        return Source(named, f"results/{named}")
    refs = dvc_experiment_refs(root)
    revision = refs.get(spec, spec)
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"{spec!r} is not 'workspace', an experiment folder under results/, a DVC experiment "
                           f"or a git revision")
    return Source(spec, folder, revision)


def collect_metrics(source: Source, root: Path) -> dict[str, float | None]:
    """``{<stage folder>/<metric>: value}`` from every metrics.json of the source."""
    values: dict[str, float | None] = {}
    for relative in source.files(root, "metrics.json"):
        text = source.read(root, relative)
        if text is None:
            continue
        try:
            metrics = json.loads(text)
        except json.JSONDecodeError as err:
            raise CompareError(f"{source.label}: {source.folder}/{relative} is not valid JSON ({err.msg})") from err
        stage = str(Path(relative).parent)
        for name, value in metrics.items():
            if isinstance(value, (int, float)) or value is None:
                values[f"{stage}/{name}" if stage != "." else name] = value
    return values


def comparison_table(columns: dict[str, dict[str, float | None]]) -> pd.DataFrame:
    """One row per metric, one column per source, then ``Δ <source>`` against the first (NaN where missing)."""
    labels = list(columns)
    rows = sorted(set().union(*[set(c) for c in columns.values()]))
    frame = pd.DataFrame({label: [columns[label].get(r) for r in rows] for label in labels}, index=rows,
                         dtype="float64")
    frame.index.name = "metric"
    for label in labels[1:]:
        frame[f"Δ {label}"] = frame[label] - frame[labels[0]]
    return frame


def to_markdown(frame: pd.DataFrame, only_changed: bool = False) -> str:
    """A Markdown table; missing values as ``—``."""
    if only_changed:
        delta = [c for c in frame.columns if c.startswith("Δ ")]
        values = frame[[c for c in frame.columns if c not in delta]]
        changed = values.nunique(axis=1, dropna=False) > 1
        frame = frame[changed]

    def cell(value: float) -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"

    header = ["metric", *frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric, row in frame.iterrows():
        lines.append("| " + " | ".join([str(metric), *[cell(v) for v in row]]) + " |")
    return "\n".join(lines) + "\n"


def read_curves(sources: Sequence[Source], root: Path, curve: str) -> dict[str, pd.DataFrame]:
    """``curve`` is ``<file below the experiment folder>:<column>``,
    e.g. ``policy/ppo-sparse-bt-eps0.0-s0/history.csv:reward_gold``."""
    path, _, column = curve.rpartition(":")
    if not path or not column:
        raise CompareError(f"--curve {curve!r}: expected <history.csv path>:<column>")
    curves = {}
    for source in sources:
        text = source.read(root, path)
        if text is None:
            continue
        frame = pd.read_csv(io.StringIO(text))
        if column in frame.columns:
            x = "step" if "step" in frame.columns else frame.columns[0]
            curves[source.label] = frame[[x, column]].dropna()
    return curves


def plot_curves(curves_by_name: dict[str, dict[str, pd.DataFrame]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves_by_name), figsize=(5 * len(curves_by_name), 3.6), squeeze=False)
    for ax, (name, curves) in zip(axes[0], curves_by_name.items()):
        for label, frame in curves.items():
            ax.plot(frame.iloc[:, 0], frame.iloc[:, 1], label=label)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(curves and next(iter(curves.values())).columns[0] or "step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def compare(specs: Sequence[str], root: Path, experiment: str, curves: Sequence[str] = (),
            out: Path | None = None, only_changed: bool = False) -> tuple[pd.DataFrame, str]:
    """Resolve the sources, build the table, write compare.{md,csv,png} under ``out`` when given."""
    if len(specs) < 2:
        raise CompareError("give at least two sources (default: workspace HEAD)")
    sources = [resolve(s, root, experiment) for s in specs]
    columns: dict[str, dict[str, float | None]] = {}
    for source in sources:
        label = source.label if source.label not in columns else f"{source.label}#{len(columns)}"
        columns[label] = collect_metrics(source, root)
    empty = [label for label, values in columns.items() if not values]
    if len(empty) == len(columns):
        raise CompareError(f"no metrics.json under {sources[0].folder} in any of {', '.join(specs)}")
    frame = comparison_table(columns)
    markdown = to_markdown(frame, only_changed)
    if empty:
        markdown += f"\nNo metrics found in: {', '.join(empty)}\n"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(markdown)
        frame.to_csv(out / "compare.csv", float_format="%.6g")
        if curves:
            plot_curves({c: read_curves(sources, root, c) for c in curves}, out / "compare.png")
    return frame, markdown
