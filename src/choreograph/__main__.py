"""`python -m choreograph`: the command line."""

from .cli._main import main

main()
