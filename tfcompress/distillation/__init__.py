"""tfcompress.distillation."""
