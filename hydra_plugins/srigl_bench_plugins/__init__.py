"""Hydra plugins of srigl-bench: the ``pool`` launcher and the ``grids`` sweeper.

Hydra finds plugins only in the ``hydra_plugins`` namespace package (no ``__init__.py`` one
level up, so the plugins of other distributions, e.g. hydra-submitit-launcher, sit beside these).
"""
