"""`python -m aura.cli`: the `aura` console script, for `accelerate launch -m aura.cli` and source checkouts."""

from aura.cli import main

main()
