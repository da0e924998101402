"""tfcompress.recipes."""
