"""The run: what a measurement is *of* (`Run`, its identity) and what *measured* it (`Environment`).

This is the one module that reads a run's identity from the process environment. Every entry point
(the pytest plugin, `bnspec run`, the audit, the release history, the mutation harness, a replicas
child) makes a `Run` once and passes it down; nothing below them reads `BNSPEC_FLAVOUR`,
`TF_USE_LEGACY_KERAS`, `KERAS_BACKEND` or `BNSPEC_MUTANT`. A child process gets its run through
`Run.child_env()` (the environment variables, for the libraries that read them at import) and
`Run.pytest_args()` (the options, for a child pytest).

    run = Run.from_env()                        # flavour and backend as this process would test them
    run = Run("keras3", "jax", device="gpu")    # or spelled out
    run.key                                      # "keras3-jax-gpu": the results file and report column
    env = Environment.capture(run)               # versions, interpreter, CPU/GPU: no backend imported

Identity:
  flavour   keras3 | tfkeras | keras-nightly (bnspec.flavours)
  backend   tensorflow | jax | torch (tf_keras is TensorFlow only)
  device    None: every device the backend sees (the CPU always, the GPU when visible); "cpu" or "gpu":
            that device's cases only. A run on the GPU alone is a report column of its own.
  mutant    None, except in `bnspec mutants`: the name of the deliberately wrong BN layer patched in. A
            mutant is part of the key, so its results can never land in a real run's file.

Nothing here imports TensorFlow, JAX or PyTorch: versions come from package metadata, the GPU's model,
driver and CUDA version from `nvidia-smi` when it exists.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bnspec import DEVICES, BnspecError
from bnspec.flavours import BACKENDS, FAMILY, FLAVOURS, distribution_version

# The environment variables that carry a run's identity into a process (written by child_env).
FLAVOUR_VAR, LEGACY_VAR, BACKEND_VAR, MUTANT_VAR = "BNSPEC_FLAVOUR", "TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "BNSPEC_MUTANT"
# The interpreter that writes tf_keras artefacts (C12's .h5, C25's SavedModel) for a Keras 3 run.
TFKERAS_PYTHON_VAR = "BNSPEC_TFKERAS_PYTHON"
_TRUE = ("1", "true", "yes")


def key_of(flavour: str, backend: str | None = "tensorflow", device: str | None = None, mutant: str | None = None) -> str:
    """The one spelling of a run key: the flavour, the backend unless TensorFlow, "gpu" for a GPU-only run,
    "+mutant-<name>" for a mutation-harness run. Results files and report columns are named by it."""
    parts = [flavour] + ([backend] if backend and backend != "tensorflow" else []) + (["gpu"] if device == "gpu" else [])
    return "-".join(parts) + (f"+mutant-{mutant}" if mutant else "")


def _keras_home_backend(environ) -> str:
    """Keras 3's own default when KERAS_BACKEND is unset: $KERAS_HOME/keras.json (default ~/.keras), else tensorflow."""
    home = Path(environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return json.loads((home / "keras.json").read_text()).get("backend") or "tensorflow"
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


@dataclass(frozen=True)
class Run:
    flavour: str
    backend: str = "tensorflow"
    device: str | None = None
    mutant: str | None = None

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise BnspecError(f"unknown flavour {self.flavour!r}; choose one of {', '.join(FLAVOURS)}")
        if self.backend not in BACKENDS:
            raise BnspecError(f"unknown backend {self.backend!r} in {BACKEND_VAR}; choose one of {', '.join(BACKENDS)}")
        if FAMILY[self.flavour] == "tfkeras" and self.backend != "tensorflow":
            raise BnspecError(f"flavour tfkeras runs on TensorFlow only, not on {self.backend}")
        if self.device not in (None, *DEVICES):
            raise BnspecError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")

    # ------------------------------------------------------------------ making one
    @classmethod
    def from_env(cls, environ=None, *, device: str | None = None, mutant: str | None = None) -> Run:
        """The run this process tests, as the environment says: BNSPEC_FLAVOUR if set, else tfkeras when
        TF_USE_LEGACY_KERAS is truthy, else keras-nightly when only that distribution is installed, else keras3;
        the backend from KERAS_BACKEND (else Keras' keras.json, else tensorflow; always tensorflow for
        tfkeras). `device` and `mutant` are options, never read from the environment here (see `mutant_in`)."""
        environ = os.environ if environ is None else environ
        name = environ.get(FLAVOUR_VAR) or ""
        legacy = environ.get(LEGACY_VAR, "").lower() in _TRUE
        if name and name not in FLAVOURS:
            raise BnspecError(f"unknown flavour {name!r} in {FLAVOUR_VAR}; choose one of {', '.join(FLAVOURS)}")
        if not name:
            if legacy:
                name = "tfkeras"
            else:
                nightly_only = distribution_version("keras-nightly") and not distribution_version("keras3")
                name = "keras-nightly" if nightly_only else "keras3"
        if FAMILY[name] == "tfkeras":
            backend = "tensorflow"
        else:
            backend = environ.get(BACKEND_VAR) or _keras_home_backend(environ)
            if backend not in BACKENDS:
                raise BnspecError(f"unknown backend {backend!r} in {BACKEND_VAR}; choose one of {', '.join(BACKENDS)}")
        return cls(name, backend, device, mutant)

    @staticmethod
    def mutant_in(environ=None) -> str | None:
        """The mutant a parent process asked for through the environment (a replicas or tf_keras child of a
        mutation-harness run), or None. The pytest plugin refuses it unless the run names the same mutant."""
        environ = os.environ if environ is None else environ
        return environ.get(MUTANT_VAR) or None

    @staticmethod
    def flavour_conflict(flavour: str, environ=None) -> str | None:
        """Why asking for `flavour` contradicts the environment (None when it does not)."""
        environ = os.environ if environ is None else environ
        current = environ.get(FLAVOUR_VAR)
        legacy = environ.get(LEGACY_VAR, "").lower() in _TRUE
        if (current and current != flavour) or (legacy and flavour != "tfkeras"):
            return (f"--flavour {flavour} conflicts with the environment ({FLAVOUR_VAR}={current or ''}, "
                    f"{LEGACY_VAR}={environ.get(LEGACY_VAR, '')})")
        return None

    # ------------------------------------------------------------------ what it is
    @property
    def family(self) -> str:
        return FAMILY[self.flavour]

    @property
    def key(self) -> str:
        return key_of(self.flavour, self.backend, self.device, self.mutant)

    def describe(self) -> str:
        return (f"{self.flavour} on {self.backend}" + (f", {self.device} only" if self.device else "")
                + (f", mutant {self.mutant}" if self.mutant else ""))

    def as_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ handing it to a child
    def child_env(self, base=None) -> dict:
        """A child process's environment: `base` (default: this process's) with this run's identity written
        over it, and the identity variables that do not apply removed."""
        env = dict(os.environ if base is None else base)
        env[FLAVOUR_VAR] = self.flavour
        env[BACKEND_VAR] = self.backend
        if self.family == "tfkeras":
            env[LEGACY_VAR] = "1"
        else:
            env.pop(LEGACY_VAR, None)
        if self.mutant:
            env[MUTANT_VAR] = self.mutant
        else:
            env.pop(MUTANT_VAR, None)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return env

    def pytest_args(self) -> list[str]:
        """The options that make a child pytest measure this run (with `child_env()`)."""
        return ([f"--bnspec-device={self.device}"] if self.device else []) + \
            ([f"--bnspec-mutant={self.mutant}"] if self.mutant else [])


def tfkeras_python(environ=None) -> str | None:
    """The interpreter named to write tf_keras artefacts for a Keras 3 run (BNSPEC_TFKERAS_PYTHON), if any."""
    environ = os.environ if environ is None else environ
    return environ.get(TFKERAS_PYTHON_VAR) or None


# --------------------------------------------------------------------------- the environment


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi() -> dict:
    """{gpu, driver, cuda} from nvidia-smi (empty when there is none or it fails): names the GPU without
    importing a framework."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        query = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20, check=True).stdout
        header = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [[c.strip() for c in line.split(",")] for line in query.strip().splitlines() if line.strip()]
    if not rows:
        return {}
    names = sorted({r[0] for r in rows})
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {"gpu": f"{len(rows)} x {names[0]}" if len(names) == 1 else ", ".join(names),
            "driver": rows[0][1] if len(rows[0]) > 1 else None, "cuda": cuda.group(1) if cuda else None}


@dataclass(frozen=True)
class Environment:
    """What measured a run: the libraries, the interpreter, the machine. `identity()` is what makes two runs
    of the same key comparable: a case measured under another identity is never counted as this run's."""

    keras: str | None  # the version of the flavour's distribution (keras, tf-keras or keras-nightly)
    backend: str
    tensorflow: str | None = None
    jax: str | None = None
    torch: str | None = None
    python: str = ""
    platform: str = ""
    cpu: str = ""
    cpu_count: int | None = None
    gpu: str | None = None  # "1 x NVIDIA H200" for a run with GPU cases, else None (CPU only)
    driver: str | None = None
    cuda: str | None = None
    workers: str = "0"
    flavour: str = ""  # kept for the readers of older files

    @classmethod
    def capture(cls, run: Run, workers: str = "0", gpu: bool | None = None) -> Environment:
        """This process's environment for `run`, without importing a framework. The GPU is looked up when
        the run may measure on one (`gpu`, default: unless the run is CPU-only)."""
        smi = nvidia_smi() if (gpu if gpu is not None else run.device != "cpu") else {}
        from bnspec.flavours import DISTRIBUTION

        return cls(
            keras=_version(*DISTRIBUTION[run.flavour]), backend=run.backend,
            tensorflow=_version("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"),
            jax=_version("jax"), torch=_version("torch"), python=platform.python_version(),
            platform=platform.platform(), cpu=_cpu_model(), cpu_count=os.cpu_count(),
            gpu=smi.get("gpu"), driver=smi.get("driver"), cuda=smi.get("cuda"), workers=str(workers),
            flavour=run.flavour)

    @classmethod
    def from_dict(cls, d: dict) -> Environment:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (d or {}).items() if k in known}
        values.setdefault("keras", None)
        values.setdefault("backend", "tensorflow")
        return cls(**values)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    @property
    def backend_version(self) -> str | None:
        return {"tensorflow": self.tensorflow, "jax": self.jax, "torch": self.torch}.get(self.backend)

    def device_label(self, device: str | None = None) -> str:
        """"CPU", "GPU 1 x NVIDIA H200", or, for a GPU run whose code did not record the model, "GPU (model not recorded)"."""
        if self.gpu:
            return f"GPU {self.gpu}"
        return "GPU (model not recorded)" if device == "gpu" else "CPU"

    def identity(self) -> tuple:
        """Keras, the backend library, the Python minor version and the accelerator: two cases measured
        under different identities are different measurements, not one run's."""
        py = ".".join(self.python.split(".")[:2])
        return (self.keras, self.backend, self.backend_version, py, self.gpu)

    def label(self, device: str | None = None) -> str:
        """One line for people: 'Keras 3.15.1, jax 0.11.2, Python 3.12.3, GPU 1 x NVIDIA H200 (driver 580, CUDA 13.0)'
        (`device`: the run's device, when it says more than the environment recorded)."""
        lib = {"tensorflow": "TensorFlow", "jax": "jax", "torch": "torch"}[self.backend]
        extra = ([f"driver {self.driver}"] if self.driver else []) + ([f"CUDA {self.cuda}"] if self.cuda else [])
        dev = self.device_label(device) + (f" ({', '.join(extra)})" if extra else "")
        return (f"Keras {self.keras or '(version not recorded)'}, {lib} {self.backend_version or '(version not recorded)'}, "
                f"Python {self.python or '(not recorded)'}, {dev}")
