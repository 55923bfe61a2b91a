"""`python -m zooscope` is the `zooscope` command (handy where the console script is not installed)."""

from zooscope.cli import main

main()
