"""tfcompress.export."""
