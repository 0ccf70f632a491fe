"""Build: plans rendered through each target's templates into launch artifacts under out/."""
