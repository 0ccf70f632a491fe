"""Load: profile YAML read with positions, validated against the schema, and edited in place."""
