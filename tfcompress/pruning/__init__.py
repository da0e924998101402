"""tfcompress.pruning."""
