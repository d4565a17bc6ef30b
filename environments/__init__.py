"""Built-in environment plugins (installed as ``marlbench.environments``)."""
