"""Leaves every other part may import: in-process collectives, key checks, file reading and writing, the command
line. They import nothing of this package."""
