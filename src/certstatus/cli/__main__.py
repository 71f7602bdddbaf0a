"""`python -m certstatus.cli`, as the tests run the command."""

from certstatus.cli import main

main()
