"""Field traps: BN across replicas. What users of tf.distribute.MirroredStrategy and Keras 3's JAX
DataParallel report about batch statistics, moving statistics and empty batches with two replicas.

Tests: tests/claims/test_field_replicas.py. The multi-replica experiments run in child processes
(bnspec.subjects.replicas): two logical CPU devices for TensorFlow, two host devices for JAX, no GPU needed."""

from bnspec.claims._model import KD, Claim, Expect, HOLDS, REFUTED

ORDER = 220
TITLE = "Field traps: BN across replicas"

KERAS3_MIRRORED = (
    "Keras 3 creates the moving statistics with add_weight's default aggregation ('none' from 3.8; 'mean' "
    "before, but not passed to TensorFlow before 3.7), which TensorFlow turns into a MirroredVariable "
    "(ON_WRITE, aggregation NONE) whose assign inside a replica updates only that replica's copy: the "
    "copies drift apart and a read outside the replicas returns the first copy"
)
# Keras 3.7.0 only: keras#20541 passed the Keras aggregation to tf.Variable while add_weight's default was
# still 'mean'; keras#20703 (3.8) made the default 'none' (keras#20695: the 'mean' default was wrong)
KERAS37_MEAN = (
    "Keras 3.7 passed add_weight's default aggregation 'mean' to tf.Variable (keras#20541): the moving "
    "statistics became MirroredVariables with aggregation MEAN, whose assign inside a replica all-reduces the "
    "replicas' values, so every copy holds their average; 3.8 made the default 'none' again (keras#20703)"
)
KERAS37_CHANGE = "3.7: keras#20541; 3.8: keras#20703"
TFKERAS_ON_READ = (
    "tf_keras creates the moving statistics as SyncOnRead variables (aggregation MEAN): each replica keeps "
    "and uses its own copy, and only a read outside the replicas averages them"
)
SYNCED = ("synchronized=True all-reduces sum, sum of squares and count, so every replica normalises with and "
          "stores the global batch's statistics: the copies never differ")

CLAIMS = (
    Claim(
        "C04",
        "replica training saves and serves one average",
        "After training under tf.distribute.MirroredStrategy with 2 replicas that see different data, the "
        "moving statistics read outside the replicas (get_weights(), save() then load_model()) are the mean "
        "of the replicas' copies, and predict() under the strategy gives an example the output of the "
        "saved model (inference with those statistics) whichever replica serves it.",
        "tensorflow/tensorflow#46488 (saved model differs from the in-memory model, BN + MirroredStrategy); "
        "keras-team/keras#20378 (are per-replica BN statistics aggregated?); tf_keras BatchNormalization "
        "(moving statistics: synchronization=ON_READ, aggregation=MEAN); Keras 3 Layer.add_weight "
        "(aggregation='none') and the TensorFlow backend's variable (MirroredVariable); TensorFlow "
        "values._on_write_update_replica (aggregation NONE updates the local copy only); keras-team/keras#19891 "
        "(Keras 3 gives incorrect output from fit in a distributed context: gradients not aggregated), PRs "
        "#19969/#20051 (all-reduce the gradients in replica context, Keras 3.5)",
        expected=(
            Expect(REFUTED, flavour="keras3", versions="<3.5", case="read=served", mechanism="replica_local_trainables",
                   change="keras#20051",
                   why="before Keras 3.5 the TensorFlow optimizer all-reduced the gradients inside its merge_call, "
                       "in cross-replica context, where _all_reduce_sum_gradients returns them unreduced: each "
                       "replica applied its own gradient to its own copy of gamma and beta, so the replicas' "
                       "weights drift apart even with synchronized=True (keras#19891; fixed by #19969, reverted "
                       "in #20017, relanded in #20051)"),
            Expect(HOLDS, case="synchronized=True", why=SYNCED),
            Expect(HOLDS, flavour="keras3", versions=">=3.7,<3.8", change=KERAS37_CHANGE,
                   why=KERAS37_MEAN + ": what is saved and what every replica serves is that average"),
            Expect(HOLDS, flavour="tfkeras", case="read=saved", why=TFKERAS_ON_READ),
            Expect(REFUTED, flavour="keras3", case="read=saved", mechanism="primary_copy_saved",
                   why=KERAS3_MIRRORED + "; get_weights() and save() write replica 0's copy bitwise"),
            Expect(REFUTED, mechanism="replica_local_copies",  # read=served
                   why="predict() runs in the replicas, and each reads its own copy (Keras 3: the MirroredVariable's "
                       "local value; tf_keras: a SyncOnRead read inside a replica is local), so the same example "
                       "gets a different output on each replica"),
        ),
        note=("One fit() step of a global batch of 16 whose halves (replica 0: N(0,1), replica 1: N(10,2), 3 "
              "features) give the replicas very different statistics; momentum 0, so each copy is its replica's "
              "batch statistics. 'saved' compares get_weights() and a save()/load_model() round trip with the "
              "average of the copies read by strategy.experimental_local_results (float32 averaging bound); "
              "'served' predicts the same 8 queries on both replicas and compares each half with the "
              "inference formula of the saved statistics (reference.bn_bound). Believed (TRAPS.md): holds on "
              "tf_keras, refuted on Keras 3. Measured: tf_keras saves the average (5.10 for a replica mean of "
              "-0.08 and 10.29) but serves per replica too (halves differ by up to 20.0), so 'served' is "
              "refuted on both; Keras 3 saves replica 0's copy bitwise. With synchronized=True every copy is the "
              "global statistic and both hold. Before Keras 3.5 'served' is refuted even with synchronized=True: one "
              "step leaves the replicas' beta 0.013 apart (each replica applied its own gradient) and the "
              "served halves 0.014 apart, each within the bound of inference with its own replica's weights "
              "(measured on 3.3.3 and 3.4.1; on 3.0-3.2 predict() under the strategy returns a 0-d array, so "
              "'served' has no output to compare there). Keras 3.7.0 alone holds unsynchronized too: both copies "
              "are the average (5.10), so the saved model and both replicas agree (halves differ by 0)."),
        advice=("under MirroredStrategy use BatchNormalization(synchronized=True), or re-estimate the moving "
                "statistics on one device after training; in Keras 3 the saved model silently carries replica "
                "0's statistics, and in both Keras versions predict() under the training strategy gives "
                "replica-dependent outputs: serve from a model loaded outside the strategy. Keras 3 before 3.5 does not "
                "all-reduce the gradients under MirroredStrategy on TensorFlow at all: upgrade before training with it"),
    ),
    Claim(
        "C07",
        "an empty batch leaves the moving statistics finite",
        "A training-mode call on an empty batch (0 examples; rank 2 and rank 4) leaves the moving mean and "
        "variance finite and unchanged; under MirroredStrategy with 2 replicas, fit() on 17 examples with "
        "global batch 16 (the last global batch leaves replica 1 an empty shard) leaves every replica's copy "
        "of the moving statistics, gamma/beta and the served predictions finite, the empty replica's copy "
        "either kept or given the global batch's update.",
        "keras-team/keras#11858 (BatchNormalization produces NaN weights without NaN loss: dataset not a "
        "multiple of batch size x GPUs); tensorflow/tensorflow#52986, #41657; tf_keras BatchNormalization "
        "_support_zero_size_input and tf.where(input_batch_size > 0, ...) (only under a strategy with "
        "partial-batch handling); keras-team/keras PR #22564 (conv layers on batch 0, not BN)",
        expected=(
            Expect(HOLDS, case="synchronized=True",
                   why="count and sums are all-reduced (divide_no_nan), so the empty shard sees the global batch's "
                       "statistics; tf_keras' zero-size guard keeps the empty replica's copy"),
            Expect(HOLDS, flavour="tfkeras", case="synchronized=False",
                   why="under a strategy with partial-batch handling tf_keras zeroes the empty shard's statistics "
                       "and skips its moving-average update (input_batch_size > 0)"),
            Expect(REFUTED, flavour="keras3", versions=">=3.7,<3.8", case="synchronized=False",
                   mechanism="nan_averaged_into_every_copy", change=KERAS37_CHANGE,
                   why=KERAS37_MEAN + ": the empty replica's 0/0 = NaN moments are averaged into every replica's "
                       "copy, so get_weights() and the saved model carry NaN too"),
            Expect(REFUTED, flavour="keras3", case="synchronized=False", mechanism="nan_moving_statistics",
                   why="Keras 3 has no zero-size guard: the empty replica's moments are 0/0 = NaN and go into its "
                       "copy of the moving statistics, and the all-reduced gamma gradient (NaN x 0) poisons gamma "
                       "on every replica, while the loss and get_weights()' moving statistics (replica 0's copy) "
                       "stay finite"),
            Expect(REFUTED, flavour="tfkeras", mechanism="nan_moving_statistics",
                   why="without a strategy tf_keras has no guard: tf.nn.moments (rank 2) and the fused kernel "
                       "(rank 4) of an empty batch give NaN statistics, written into the moving statistics"),
            Expect(REFUTED, flavour="keras3", mechanism="nan_moving_statistics",
                   why="ops.moments over an empty axis is 0/0 = NaN on every backend, and the moving-average "
                       "update writes it (moving*momentum + NaN*(1-momentum))"),
        ),
        note=("Direct call: a built layer with finite, non-default moving statistics called on zeros of shape "
              "(0, 3) or (0, 2, 2, 3) with training=True; the test counts non-finite elements (a claim about "
              "NaN) and otherwise requires the statistics bitwise unchanged; a refusal of the call counts only "
              "as a ValueError that names the empty batch (any other exception is an error of the test). Shard: every replica's copy is "
              "recorded after each fit() batch; the first batch checks that replica r got rows 8r..8r+7. "
              "Believed (TRAPS.md): refuted on Keras 3; tf_keras refuted without a strategy (rank 4 to be "
              "measured), holds under MirroredStrategy. Measured: as believed, rank 4 included (tf_keras' fused "
              "path also writes NaN), on all three Keras 3 backends; and in Keras 3 the empty shard also turns "
              "gamma NaN on both replicas (all-reduced gradient) while the reported loss stays finite, so "
              "every served prediction is NaN though get_weights() shows finite moving statistics. On Keras 3.7.0 "
              "(averaged on write) the empty replica's NaN reaches every copy and get_weights() (6 of 6 each)."),
        advice=("never run a training step on an empty batch; with tf.distribute use drop_remainder=True (or a "
                "dataset size divisible by the global batch) or synchronized=True, and check every replica's "
                "copy (strategy.experimental_local_results), not get_weights(), which in Keras 3 reads replica "
                "0 only"),
    ),
    Claim(
        "C11",
        "two replicas normalise like one device",
        "With 2 replicas each holding half of a global batch, one training-mode BN step gives the same "
        "outputs and the same moving statistics (every replica's copy and the value read outside the "
        "replicas) as single-device BN on the whole batch: for TensorFlow's MirroredStrategy without and with "
        "synchronized=True, and for Keras 3 JAX keras.distribution.DataParallel, which has no synchronized "
        "option.",
        f"{KD} (synchronized: 'If False, each replica uses its own local batch statistics'); keras-team/keras "
        "PR #18671 (synchronized=True, TensorFlow only); keras-team/keras#20378; Keras distribution guide "
        "(DataParallel); Keras 3 JAX trainer (one global jax.jit over sharded data)",
        expected=(
            Expect(REFUTED, case="mode=tf_plain", mechanism="per_replica_statistics",
                   why="without synchronized=True each replica normalises its half with that half's own mean and "
                       "variance (the documented default), so the global batch is normalised twice, differently"),
            Expect(HOLDS, why="synchronized=True all-reduces the sums; JAX computes one global jitted function "
                              "over the sharded batch, so the statistics are global by construction"),
        ),
        note=("Halves N(0,1) and N(10,2) (8 x 3 each), default momentum 0.99 and epsilon; float64 reference "
              "bn_train on the 16 rows with reference.bn_bound (n_reduce=16, which also covers the one-pass "
              "E[x^2]-E[x]^2 of synchronized=True) and ema_bounds for the moving statistics; the test needs the "
              "per-replica alternative to differ from the global reference beyond the bound. TensorFlow: one "
              "strategy.run call with replica r holding half r. JAX: fit() of the global batch under "
              "DataParallel over 2 host devices, and a jitted training-mode stateless_call on the batch "
              "sharded 8+8 over both devices. Believed (TRAPS.md): holds for TF synchronized and JAX "
              "DataParallel, per-replica for plain TF. Measured: as believed on Keras 3 and tf_keras; with "
              "plain MirroredStrategy the value read outside the replicas is replica 0's moving mean on Keras "
              "3 and the copies' average on tf_keras, which for equal halves is the global moving mean but "
              "not the global moving variance."),
        advice=("under tf.distribute with small per-replica batches or replicas that see different data, set "
                "synchronized=True (TensorFlow backend and tf_keras); under Keras 3 JAX DataParallel the "
                "statistics are already global, and synchronized=True raises"),
    ),
)
