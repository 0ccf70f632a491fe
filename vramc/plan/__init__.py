"""Plan: each deployment's settings resolved against its engine, its memory estimated, and `auto` fitted."""
