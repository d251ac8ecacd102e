"""Dev tooling: the process supervisor behind `make run` and a private local Redis."""
