"""`bnspec audit`: exit codes (0 clean, 1 findings at/above --fail-on, 2 usage errors), the JSON and
table outputs, --data, package.module:factory, and no TensorFlow for --help or a static .keras audit."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from bnspec.audit.cli import main
from tests.audit import gallery
from tests.helpers import BLOCK_TF, run_python

RUN_BLOCKED = BLOCK_TF + textwrap.dedent("""
    import sys
    from bnspec.audit.cli import main
    rc = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'torch', 'jax'))
    assert not loaded, loaded
    sys.exit(rc)
""")


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def trap_file(keras, rng, tmp_path):
    path = tmp_path / "trap.keras"
    gallery.hardcoded_training_true(keras, rng).model.save(path)
    return path


@pytest.fixture
def clean_file(keras, rng, tmp_path):
    path = tmp_path / "clean.keras"
    gallery.clean_functional(keras, rng).model.save(path)
    return path


def test_help_imports_no_tensorflow():
    proc = run_python(RUN_BLOCKED, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "MODEL" in proc.stdout and "--fail-on" in proc.stdout


def test_static_audit_of_a_keras_file_imports_no_tensorflow(trap_file, clean_file):
    proc = run_python(RUN_BLOCKED, str(trap_file), "--static-only", "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert [(f["id"], f["layer"], f["severity"]) for f in out["findings"]] == [("N05", "m/bn", "error")]
    assert out["findings"][0]["verdict_detail"].startswith("keras3") or out["context"]["flavour"] != "keras3"
    proc = run_python(RUN_BLOCKED, str(clean_file), "--static-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no findings" in proc.stdout


def test_exit_codes_follow_fail_on(keras, rng, tmp_path, capsys):
    path = tmp_path / "momentum.keras"
    gallery.torch_momentum(keras, rng).model.save(path)  # one warning (X01)
    assert main([str(path)]) == 1
    assert main([str(path), "--fail-on", "error"]) == 0
    assert main([str(path), "--fail-on", "info"]) == 1
    assert "X01" in capsys.readouterr().out


def test_dynamic_audit_of_a_file_with_data(keras, rng, tmp_path, capsys):
    case = gallery.stale_statistics(keras, rng)
    model, data = tmp_path / "stale.keras", tmp_path / "data.npz"
    case.model.save(model)
    np.savez(data, x=case.data)
    assert main([str(model), "--data", str(data), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [(f["id"], f["layer"]) for f in out["findings"]] == [("L03", "m/bn")]
    assert out["context"]["mode"] == "static + dynamic" and out["measured"]["examples"] == len(case.data)
    np.save(tmp_path / "data.npy", case.data[:, :2])  # wrong feature count: the model cannot run it
    assert main([str(model), "--data", str(tmp_path / "data.npy")]) == 2
    assert "cannot run on the data" in capsys.readouterr().err


def test_factory_for_subclassed_models(keras, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import numpy as np
        from bnspec import flavours
        from bnspec.run import Run
        keras = flavours.keras_module(Run.from_env())

        class Net(keras.Model):
            def __init__(self):
                super().__init__(name="net")
                self.dense = keras.layers.Dense(8, use_bias=False, name="dense")
                self.bn = keras.layers.BatchNormalization(name="bn")

            def call(self, x, training=None):
                return self.bn(self.dense(x), training=True)

        def build():
            model = Net()
            model(np.ones((4, 8), "float32"), training=True)
            return model
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["my_models:build", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [(f["id"], f["layer"]) for f in out["findings"]] == [("N05", "net/bn")]
    assert out["findings"][0]["confirmed"], "the forward passes confirm the static finding"


@pytest.mark.parametrize("argv", [
    ["missing.keras"],
    ["no_such_module_xyz:build"],
    ["--bogus-option", "x.keras"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2


def test_bad_files_exit_2(clean_file, tmp_path, capsys):
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    assert main([str(text)]) == 2
    assert main([str(clean_file), "--data", str(tmp_path / "nope.npy")]) == 2
    (tmp_path / "bad.npy").write_text("not numpy")
    assert main([str(clean_file), "--data", str(tmp_path / "bad.npy")]) == 2
    assert main([str(clean_file), "--static-only", "--data", str(tmp_path / "bad.npy")]) == 2
    assert "bnspec audit:" in capsys.readouterr().err
