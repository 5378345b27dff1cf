"""adedge.train: torch training of the methods (one file each in ``methods/``)."""
