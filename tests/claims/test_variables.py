"""Reading BN variables: references versus snapshots."""

import numpy as np
import pytest

from bnspec import probes


@pytest.mark.claim("N01")
def test_list_copy_aliases_numpy_snapshots(verdict, keras, rng):
    layer = probes.make_bn(keras, 100, rng)
    copied = layer.weights.copy()  # a new list, the same variable objects
    snapshot = [w.numpy() for w in layer.weights]
    layer((rng.normal(0, 1, (60, 100)) + 3).astype(np.float32), training=True)  # moves the moving statistics

    aliased = all(a is b for a, b in zip(copied, layer.weights))
    copy_followed = float(np.abs(copied[2].numpy() - layer.moving_mean.numpy()).max())
    snapshot_kept = float(np.abs(snapshot[2] - layer.moving_mean.numpy()).max())
    verdict.record(same_objects=aliased, copy_vs_variable=copy_followed, snapshot_vs_variable=snapshot_kept)
    verdict.conclude(aliased and copy_followed == 0.0 and snapshot_kept > 0,
                     f"list.copy() holds the same variables ({aliased}); the .numpy() snapshot differs from "
                     f"the updated moving mean by {snapshot_kept:.2e}")
