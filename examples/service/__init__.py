"""An order service built with FastAPI that embeds an actorflow runtime (see README.md)."""
