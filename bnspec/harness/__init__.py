"""Running the claim suite many times: in a subprocess for one run (runner), on every Keras release
(history), and against deliberately wrong BN layers (mutants)."""
