"""The release catalogue: every Keras release the release history measures (bnspec.harness.history runs it,
the report's timeline reads it). Data only: no TensorFlow, no bnspec module beyond the run.

The latest patch of every Keras 3 minor release from 3.0 to 3.15 and one pinned keras-nightly (the `keras3`
family, over TensorFlow 2.21), and tf_keras 2.15 to 2.21, each over the TensorFlow of the same minor version
(the `tfkeras` family). A `Job` is one release on one backend; its `run` is what its claim suite measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnspec import BnspecError
from bnspec.run import Run

# Keras 3: the latest patch of each minor release (PyPI, 2026-11), oldest first.
KERAS3 = ("3.0.5", "3.1.1", "3.2.1", "3.3.3", "3.4.1", "3.5.0", "3.6.0", "3.7.0", "3.8.0", "3.9.2",
          "3.10.0", "3.11.3", "3.12.4", "3.13.2", "3.14.1", "3.15.1")
NIGHTLY = "3.16.0.dev2026102704"  # the keras-nightly the committed reports were measured on
# tf_keras release -> the TensorFlow it is built for (same minor version; its latest patch).
TFKERAS = {"2.15.1": "2.15.1", "2.16.0": "2.16.2", "2.17.0": "2.17.1", "2.18.0": "2.18.1", "2.19.0": "2.19.1",
           "2.20.1": "2.20.0", "2.21.0": "2.21.0"}
KERAS3_TENSORFLOW = "2.21.0"  # the TensorFlow every Keras 3 release runs over (the newest; tf_keras 2.21's venv)
TORCH = "torch==2.13.0"  # the CPU build on the machines' disk (see pyproject's `torch` extra)
FAMILIES = ("keras3", "tfkeras")


@dataclass(frozen=True)
class Job:
    flavour: str  # keras3 | keras-nightly | tfkeras
    release: str  # the flavour's Keras version
    backend: str = "tensorflow"

    @property
    def family(self) -> str:
        return "tfkeras" if self.flavour == "tfkeras" else "keras3"

    @property
    def id(self) -> str:
        return f"{self.flavour}-{self.release}" + ("" if self.backend == "tensorflow" else f"-{self.backend}")

    @property
    def run(self) -> Run:
        return Run(self.flavour, self.backend)

    @property
    def tensorflow(self) -> str:
        return TFKERAS[self.release] if self.flavour == "tfkeras" else KERAS3_TENSORFLOW

    @property
    def venv_name(self) -> str:
        return "tf-" + ".".join(self.tensorflow.split(".")[:2])

    @property
    def label(self) -> str:
        return {"keras3": "keras", "keras-nightly": "keras-nightly", "tfkeras": "tf_keras"}[self.flavour] + " " + self.release

    def as_dict(self) -> dict:
        return {"job": self.id, "flavour": self.flavour, "release": self.release, "backend": self.backend,
                "tensorflow": self.tensorflow}


def catalogue(backend: str = "tensorflow") -> list[Job]:
    """Every job, oldest first within each family (keras3 releases, keras-nightly, tf_keras)."""
    jobs = [Job("keras3", v, backend) for v in KERAS3] + [Job("keras-nightly", NIGHTLY, backend)]
    if backend == "tensorflow":
        jobs += [Job("tfkeras", v) for v in TFKERAS]
    return jobs


def ends(jobs: list[Job]) -> list[Job]:
    """The oldest and the newest release of each family (what CI sweeps)."""
    out = []
    for fam in FAMILIES:
        members = [j for j in jobs if j.family == fam]
        for j in (members[:1] + members[-1:]) if members else []:
            if j not in out:
                out.append(j)
    return out


def select(names: list[str], backend: str = "tensorflow", only_ends: bool = False, family: str | None = None) -> list[Job]:
    jobs = catalogue(backend)
    if family:
        jobs = [j for j in jobs if j.family == family]
    if only_ends:
        jobs = ends(jobs)
    if names:
        by_id = {j.id: j for j in jobs}
        unknown = [n for n in names if n not in by_id]
        if unknown:
            raise BnspecError(f"unknown release job {', '.join(unknown)}; `bnspec history --list` shows the "
                              f"{len(by_id)} jobs")
        jobs = [by_id[n] for n in names]
    return jobs
