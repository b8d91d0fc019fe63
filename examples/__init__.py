"""Example domains that Charter's demo and tests drive (not part of the ``charter`` package)."""
