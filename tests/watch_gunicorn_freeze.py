"""gunicorn settings: gc.freeze() in the parent just before each worker is forked."""

import gc


def pre_fork(server, worker):
    gc.freeze()
