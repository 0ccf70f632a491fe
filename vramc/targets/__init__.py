"""Launch artifacts, one module per engine target. Each builds plain data (argument lists,
environment maps, config dicts) from a Plan; templates only lay that data out."""
