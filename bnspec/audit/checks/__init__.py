"""The static checks, one module per claim family. Each check is a plain function
`check(root: Layer, target: Target, resolver=None) -> list[Finding]` over the model's tree
(bnspec.audit.tree); `resolver` answers questions only a live layer can (bnspec.audit.live.resolver).
No Keras, no TensorFlow.

  training_mode  which mode BN runs in: hard-coded training arguments (N05, C01), training=True defaults
                 upstream (C02), frozen BN (K04)
  sharing        one BN object normalising several positions: shared BN (N08), TimeDistributed(BN) (C29)
  arguments      BN's constructor arguments: Keras-2-only (C12), 16-bit statistics (C06), PyTorch's
                 momentum (X01), epsilon below the fused clamp (C09)
  bias           a bias in front of BN (C18)
  gates          whether a trap is live on the Keras under audit (catalogue verdict, else believed range)
"""

from __future__ import annotations

from bnspec.audit.checks.arguments import check_dtype, check_hyperparameters, check_keras2_args
from bnspec.audit.checks.bias import check_bias_before_bn
from bnspec.audit.checks.sharing import check_shared_bn, check_time_distributed_bn
from bnspec.audit.checks.training_mode import check_frozen_bn, check_hardcoded_training, check_training_default_upstream

CHECKS = (check_hardcoded_training, check_training_default_upstream, check_shared_bn, check_time_distributed_bn,
          check_frozen_bn, check_keras2_args, check_dtype, check_hyperparameters, check_bias_before_bn)


def run_all(root, target, resolver=None) -> list:
    """Every static check on the tree, in CHECKS order."""
    findings = []
    for check in CHECKS:
        findings += check(root, target, resolver)
    return findings
