"""C++ kernels of the ``fused`` CPU backend: build/loader (:mod:`.build`), the
``srigl::fused_linear`` operator (:mod:`.ops`) and the autotuner (:mod:`.tuner`)."""
