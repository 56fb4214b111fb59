"""gunicorn settings: cowmem.watch.attach() once the app is loaded, before the first worker is forked."""

import cowmem.watch


def when_ready(server):
    cowmem.watch.attach()
