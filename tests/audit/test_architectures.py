"""Real architectures with many BN layers (keras.applications, weights=None): the audit reports no
trap on them, and the static part reads a saved ResNet50 without Keras in under 2 s."""

from __future__ import annotations

import json
import resource
import sys
import time

import pytest

from bnspec.audit import check, check_file
from tests.helpers import BLOCK_TF, run_python

SHAPE = (32, 32, 3)  # the smallest input these architectures accept: same layers, same BN count
# What the audit may say about an untrained keras.applications model, none of it a trap:
#   M02 (info)  every BN layer still holds its initial statistics (weights=None: untrained)
#   C18 (info)  ResNet50's convolutions keep a bias in front of BN (Keras' own definition)
ALLOWED_INFO = {"M02", "C18"}


@pytest.fixture(scope="module")
def apps(keras):
    built = {
        "ResNet50": keras.applications.ResNet50(weights=None, input_shape=SHAPE),
        "MobileNetV2": keras.applications.MobileNetV2(weights=None, input_shape=SHAPE),
        "EfficientNetB0": keras.applications.EfficientNetB0(weights=None, input_shape=SHAPE),
    }
    return built


@pytest.fixture(scope="module")
def resnet_file(apps, tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet") / "resnet50.keras"
    apps["ResNet50"].save(path)
    return path


@pytest.mark.parametrize("name, bn_layers", [("ResNet50", 53), ("MobileNetV2", 52), ("EfficientNetB0", 49)])
def test_no_trap_in_real_architectures(apps, name, bn_layers):
    result = check(apps[name])
    assert result.context["bn_layers"] == bn_layers
    assert result.at_least("warning") == [], result.table()
    assert {f.id for f in result} <= ALLOWED_INFO, result.table()
    # the measurements ran and were conclusive (not skipped, not NaN)
    assert result.measured["errors"] == {}
    assert all(result.measured["outputs_finite"].values())
    assert all(c["bitwise_equal"] for c in result.measured["batch_dependence"].values())
    assert result.measured["call_vs_training_false"]["bitwise_equal"]
    assert not any(result.measured["variables_changed_by"].values())
    # weights=None: the untrained-model note is a measurement that must see it
    assert [f.layer for f in result if f.id == "M02"] == [apps[name].name]


def test_resnet_bias_before_bn_is_reported_as_info_only(apps):
    result = check(apps["ResNet50"], dynamic=False)
    c18 = [f for f in result if f.id == "C18"]
    assert len(c18) == 53 and {f.severity for f in c18} == {"info"}  # every conv before a BN has a bias


def test_saved_file_and_live_model_give_the_same_static_findings(apps, resnet_file):
    assert check_file(resnet_file).ids() == check(apps["ResNet50"], dynamic=False).ids()


def test_static_audit_of_resnet50_file_needs_no_keras_and_takes_under_2s(resnet_file):
    """A child process in which tensorflow/keras/tf_keras/torch cannot be imported audits the .keras
    archive from its config.json. Time: the child's CPU seconds (user+sys, robust on a shared
    machine) must stay under 2 s; its wall time is printed."""
    code = BLOCK_TF + (
        "import sys\n"
        "from bnspec.audit.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'jax', 'torch') for m in sys.modules)\n"
        "sys.exit(rc)\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = run_python(code, str(resnet_file), "--static-only", "--json", "--fail-on", "error")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["context"]["bn_layers"] == 53 and out["context"]["mode"] == "static"
    assert out["summary"]["warning"] == 0 and out["summary"]["error"] == 0
    print(f"static audit of ResNet50 (.keras, {resnet_file.stat().st_size / 1e6:.0f} MB): child CPU {cpu:.2f} s, "
          f"wall {wall:.2f} s, parse+checks {out['context']['static_seconds']:.3f} s", file=sys.stderr)
    assert cpu < 2.0
    assert out["context"]["static_seconds"] < 2.0
