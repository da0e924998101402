"""tfcompress.psg."""
