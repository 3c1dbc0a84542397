"""The `rayrag` command line: one module per command group (`main` assembles them).

`python -m rayrag.cli` runs it like the `rayrag` script.
"""
