"""Building blocks shared by the methods, so that models differ only where papers differ."""
