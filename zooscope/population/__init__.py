"""The population engine: K models of one architecture run in one call (forward.py), the
convolution plans it picks per layer (convolution.py) and the optional compiled C kernels
(compiled_kernels.py, kernels/*.c), plus blocks of models and inputs (batching.py)."""
