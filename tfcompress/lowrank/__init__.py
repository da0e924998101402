"""tfcompress.lowrank."""
