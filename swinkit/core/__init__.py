"""What every layer of swinkit needs and nothing of swinkit's own: errors, atomic writes, distributed primitives.

The leaf of the import graph: modules here import only the standard library, torch and numpy.
"""
