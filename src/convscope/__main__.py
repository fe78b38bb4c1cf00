"""`python -m convscope` = the `convscope` command."""

from convscope.cli import main

main()
