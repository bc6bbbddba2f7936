"""The notebook runner: notebooks taken apart and run cell by cell.

It sits on top of the kernel session and never the reverse: these modules
import `nublado_sync._session` (for types) and use a session they are
given, while the session and the hub client know nothing about notebooks
beyond handing one over.

- ``_format``: reading and checking nbformat 4 notebooks.
- ``_runner``: running the code cells of a notebook in a session.
- ``_batch``: running many notebooks, each in a fresh session, a few at a
  time.
- ``_junit``: the JUnit XML report of a batch.

Nothing is imported here, so that a module of the package loads only what
it needs.
"""
