"""What the server that starts worker processes imports once, before its first worker.

Workers are forked from multiprocessing's ``forkserver``, a process that has imported
the trial loop (TensorFlow and Keras: seconds) but never started TensorFlow's runtime
or a GPU, so that each worker starts in milliseconds. Its name is given to
``set_forkserver_preload``; TensorFlow's start-up lines are hidden, as the tuning
process hides them.
"""

import importlib

from autodl._imports import native_stderr_hidden
from autodl.workers import WORK

with native_stderr_hidden():
    importlib.import_module(WORK.split(":")[0])
