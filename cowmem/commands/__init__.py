"""One module per ``cowmem`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""
