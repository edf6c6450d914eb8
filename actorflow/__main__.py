"""``python -m actorflow``: the command line (same as the ``actorflow`` command)."""

from actorflow.cli import main

main(prog_name="actorflow")
