"""Dense xUnit Networks (DxNet) in JAX/Flax.

Importing the package turns on JAX's persistent compilation cache (`compilation_cache`), so a
second start of any command or script loads its compiled programs instead of compiling them.
"""

from dxnet_jax import compilation_cache as _compilation_cache

_compilation_cache.enable()
