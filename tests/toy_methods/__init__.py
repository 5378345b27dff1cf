"""A folder of method files outside adedge, for tests/train/test_method_registry.py: the registry is
pointed at it to show that a new method is one new file."""
