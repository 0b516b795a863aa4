"""The ``himari`` command line. Each layer has its own module here exposing ``register(cli)``."""
