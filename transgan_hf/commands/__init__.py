"""Sub-commands of the `transgan` console script (see `transgan_hf.cli`)."""
