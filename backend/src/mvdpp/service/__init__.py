"""The backend service: input-image handling (``images``), the generate job shared by
``mvdpp generate`` and ``mvdpp serve`` (``job``), and the JSON-lines server (``server``).

Importing this package is cheap; torch is imported only by ``job`` and ``images``' callers.
"""
