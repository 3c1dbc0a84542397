"""`python -m rayrag.cli`: the same as the `rayrag` script."""

from rayrag.cli.main import main

main()
