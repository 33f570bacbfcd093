"""Reference policies that learn nothing, shown beside every zero-shot table."""
