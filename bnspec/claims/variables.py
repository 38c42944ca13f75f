"""Variables: Reading and sharing BN variables.

Tests: tests/claims/test_variables.py."""

from bnspec.claims._model import Claim, Expect, NB, REFUTED

ORDER = 60
TITLE = 'Variables'

CLAIMS = (
    Claim(
        "N01",
        "list.copy() aliases, .numpy() snapshots",
        "A list copy of layer.weights (list.copy()) still aliases the variables, while [w.numpy() for w in "
        "layer.weights] is an independent snapshot.",
        f"{NB} note after cell 259",
    ),
    Claim(
        "N08",
        "a BN object can be used only once (notebook)",
        "A BN layer object can be used only once: every position in the network needs a new layer.",
        f"{NB} cell 51 (comment above the bn_layer helper)",
        expected=(Expect(REFUTED, mechanism="shared_variables", why="a layer object can be called on several tensors; the calls then "
                         "share one set of gamma/beta/moving statistics"),),
        note="The claim holds only if the second call is refused with a ValueError that names the layer and its "
        "reuse; any other exception (a ValueError about an incompatible input included) is an error of the test, "
        "not a refusal.",
        advice="calling one BN layer twice is legal but shares its statistics between the two places; "
        "create one layer per position",
    ),
)
