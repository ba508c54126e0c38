"""Where policies and the catalog come from: the edge that reads files, so the core need not.

- ``files``: policy files and directories -> (file name, text) sources -> a ``Snapshot``;
- ``store``: the snapshot in force, reloaded from the files (watched for changes) plus the
  policies pushed through the admin API, swapped in whole or not at all;
- ``catalog``: the model catalog, the operator's file or the packaged default.

The core (``policy``, ``detect``, ``llm``) parses text it is given and reads no file, no
environment variable, no clock and starts no thread (``tests/unit/test_pure_core.py``).
"""
