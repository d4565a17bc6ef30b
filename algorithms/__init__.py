"""Built-in algorithm plugins (installed as ``marlbench.algorithms``).

Each module is a self-contained plugin registered through the ``marlbench`` entry-point group;
no algorithm imports another. Shared layers live in ``marlbench.nn``.
"""
