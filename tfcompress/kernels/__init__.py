"""tfcompress.kernels."""
