"""asv benchmarks of srigl-bench: speed and accuracy history across commits.

asv imports this folder (from the working tree) as a top-level package named ``benchmarks`` in
its own virtualenv, into which it has installed the commit being measured (``asv.conf.json``).
So the benchmarks import the project by its installed, public API only (``srigl``,
``backends``, ``suite``) and never put a checkout on ``sys.path``: the code measured is the
commit's, whatever the working tree holds.
"""
