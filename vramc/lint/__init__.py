"""Lint: the rule registry, the rules, the check pipeline that runs them, and diagnostic reports."""
